"""Nothing lost: a sweep killed with SIGKILL mid-way and re-run ends with the table of an uninterrupted run."""

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

ARGS = ["run", "-p", "rosenbrock,saddle", "-o", "adam,sgd,rmsprop", "--lr", "1e-3,1e-2", "--seeds", "2",
        "--steps", "400", "--engine", "loop", "-q"]


def _optbench(*args, **kw):
    return subprocess.run([shutil.which("optbench"), *args], capture_output=True, text=True, timeout=300, **kw)


def _table(out: Path):
    from optbench.analysis.summary import aggregate
    from optbench.results import load_summary

    s = load_summary(out)
    assert not s["run_id"].duplicated().any()
    table = aggregate(s, best_lr_only=False)
    keep = ["problem", "optimizer_label", "lr", "batch_size", "seeds", "final_loss", "best_loss", "dist_to_min",
            "steps_to_target", "reached", "diverged", "status", "rank"]  # everything but timings
    return table[keep].sort_values(["problem", "optimizer_label", "lr"]).reset_index(drop=True)


@pytest.mark.slow
@pytest.mark.skipif(sys.platform == "win32", reason="SIGKILL")
def test_sigkill_then_rerun_equals_uninterrupted(tmp_path):
    killed, clean = tmp_path / "killed", tmp_path / "clean"
    proc = subprocess.Popen([shutil.which("optbench"), *ARGS, "--out", str(killed)], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while time.time() < deadline:  # wait for a few chunks, then kill hard mid-sweep
        if len(list((killed / "steps").glob("*.parquet"))) >= 3 if (killed / "steps").is_dir() else False:
            break
        time.sleep(0.05)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    partial = len(list((killed / "steps").glob("*.parquet")))
    assert 0 < partial < 24, "the kill should land mid-sweep"
    r = _optbench(*ARGS, "--out", str(killed), "--json")
    assert r.returncode == 0, r.stderr
    import json

    assert json.loads(r.stdout)["skipped"] == partial * 1  # loop engine: one run per chunk
    assert _optbench(*ARGS, "--out", str(clean)).returncode == 0
    a, b = _table(killed), _table(clean)
    assert len(a) == len(b) == 12
    import pandas as pd

    pd.testing.assert_frame_equal(a, b)


def test_rerun_skips_complete_and_force_reruns(tmp_path):
    args = ["run", "-p", "rosenbrock", "-o", "adam,sgd", "--steps", "30", "--out", str(tmp_path), "--json"]
    import json

    first = json.loads(_optbench(*args).stdout)
    second = json.loads(_optbench(*args).stdout)
    forced = json.loads(_optbench(*args, "--force").stdout)
    assert first["skipped"] == 0 and second["skipped"] == 2 and forced["skipped"] == 0


def _four_groups():
    """A batched sweep of four groups (one per optimizer) of two runs each."""
    import optbench
    from optbench.sweep.spec import Sweep

    return Sweep([optbench.get_problem("rosenbrock")],
                 [optbench.get_optimizer(o) for o in ("adam", "sgd", "rmsprop", "adagrad")],
                 seeds=[0, 1], steps=30, engine="batched")


def _ctrl_c_in_group(n: int, execute):
    """``execute`` that raises KeyboardInterrupt when asked for the n-th group."""
    calls = []

    def interrupted(engine, group, progress=None):
        calls.append(group)
        if len(calls) == n:
            raise KeyboardInterrupt
        return execute(engine, group, progress)

    return interrupted


def _last_sweep_record(out):
    import json

    return json.loads((out / "manifest.json").read_text())["sweeps"][-1]


def test_ctrl_c_in_a_group_keeps_the_groups_before_it(tmp_path, monkeypatch):
    """Chunks are written in a background thread while the next group computes: a Ctrl-C during group 3
    still leaves groups 1 and 2 on disk, counted in the manifest, and a re-run does only the rest."""
    import optbench
    import optbench.runner as runner
    import optbench.sweep.plan as plan

    sweep, plain = _four_groups(), plan.execute
    monkeypatch.setattr(plan, "execute", _ctrl_c_in_group(3, plain))
    with pytest.raises(KeyboardInterrupt):
        runner.run_sweep(sweep, tmp_path)
    record = _last_sweep_record(tmp_path)
    assert record["interrupted"] and record["completed"] == 4
    assert len(optbench.load_summary(tmp_path)) == 4
    assert not list(tmp_path.rglob("*.tmp"))
    monkeypatch.setattr(plan, "execute", plain)
    outcome = runner.run_sweep(sweep, tmp_path)
    assert (outcome.runs_skipped, outcome.runs_done) == (4, 4)
    assert len(optbench.load_summary(tmp_path)) == 8


def test_a_failed_background_write_does_not_hide_the_ctrl_c(tmp_path, monkeypatch):
    """Group 2's chunk fails to write (disk full) while group 3 computes, then a Ctrl-C: the Ctrl-C is
    what propagates, group 1 stays counted, and the manifest still records the interruption."""
    import optbench
    import optbench.results as results
    import optbench.runner as runner
    import optbench.sweep.plan as plan

    plain_write, writes = results.write_chunk, []

    def write_chunk(*args):
        writes.append(1)
        if len(writes) == 2:
            raise OSError(28, "No space left on device")
        return plain_write(*args)

    monkeypatch.setattr(plan, "execute", _ctrl_c_in_group(3, plan.execute))
    monkeypatch.setattr(results, "write_chunk", write_chunk)
    with pytest.raises(KeyboardInterrupt):
        runner.run_sweep(_four_groups(), tmp_path)
    record = _last_sweep_record(tmp_path)
    assert record["interrupted"] and record["completed"] == 2
    assert len(optbench.load_summary(tmp_path)) == 2


def test_a_ctrl_c_while_waiting_for_a_chunk_still_counts_it(tmp_path):
    from concurrent.futures import Future

    from optbench.sweep.writer import ChunkWriter

    class InterruptedOnce(Future):
        def __init__(self):
            super().__init__()
            self.set_result(None)
            self.interrupted = False

        def result(self, timeout=None):
            if not self.interrupted:
                self.interrupted = True
                raise KeyboardInterrupt
            return super().result(timeout)

    writer = ChunkWriter(tmp_path)
    writer.pending = (InterruptedOnce(), "batched", ["done", "done"])
    with pytest.raises(KeyboardInterrupt):
        list(writer._finish())
    assert list(writer.close()) == [("batched", ["done", "done"])]
