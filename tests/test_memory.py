"""Memory bounded by a setting (optbench.memory): sizes parse or fail with one sentence, sweeps whose recorded rows
would not fit are cut into slices of runs whose tables equal the unsliced ones bitwise, every slice's buffers stay
within the budget, and a run that cannot fit is refused before any compute."""

from __future__ import annotations

import pandas as pd
import pytest

from optbench.errors import UsageError
from optbench.optimizers import get_optimizer
from optbench.problems import get_problem
from optbench.results import load_results, load_summary
from optbench.runner import run_sweep
from optbench.sweep import memory
from optbench.sweep.plan import plan_groups
from optbench.sweep.spec import Sweep

# clocks and memory readings (optbench.cost): measurements of the process, not values of the runs
MEASURED = ("wall_time_s", "train_time_s", "step_time_s", "train_step_time_s", "peak_memory_bytes", "peak_rss_bytes",
            "examples_per_s", "seconds_to_result")


@pytest.mark.parametrize("text, size", [("1GiB", 2**30), ("512MiB", 2**29), ("2GB", 2 * 10**9), ("2e9", 2 * 10**9),
                                        ("1.5 GiB", 3 * 2**29), ("3000000000", 3 * 10**9), ("1gib", 2**30)])
def test_sizes_parse(text, size):
    assert memory.parse_size(text) == size


@pytest.mark.parametrize("text, words", [("lots", "is not a size"), ("1 GiBs", "is not a size"),
                                         ("-1GiB", "is not a size"), ("", "is not a size"),
                                         ("100MiB", "less than the 464 MiB")])
def test_bad_sizes_name_the_value_and_what_to_give(text, words):
    with pytest.raises(UsageError, match=words) as info:
        memory.parse_size(text)
    assert repr(text) in str(info.value)


def test_the_environment_sets_the_limit(monkeypatch):
    monkeypatch.delenv(memory.ENV, raising=False)
    assert memory.memory_limit_bytes() == memory.DEFAULT_LIMIT == 2**30
    monkeypatch.setenv(memory.ENV, "2GiB")
    assert memory.memory_limit_bytes() == 2 * 2**30
    monkeypatch.setenv(memory.ENV, "huge")
    with pytest.raises(UsageError, match="OPTBENCH_MEMORY_LIMIT 'huge' is not a size"):
        memory.memory_limit_bytes()


def test_slices_cover_every_run_in_aligned_slices():
    for count in (1, 7, 100, 4096, 4097):
        for most in (1, 3, 63, 64, 100, 204, 4096):
            parts = memory.slices(count, most)
            sizes = [p.stop - p.start for p in parts]
            assert sum(sizes) == count and parts[0].start == 0 and parts[-1].stop == count
            assert all(a.stop == b.start for a, b in zip(parts, parts[1:]))
            assert max(sizes) <= most
            if most >= memory.ALIGN_RUNS:
                assert all(size % memory.ALIGN_RUNS == 0 for size in sizes[:-1])
            assert len(parts) <= -(-count // (most - most % 64 if most >= 64 else most)) + 1


def _sweep(problem: str, seeds: int = 80, steps: int = 40):
    return Sweep([get_problem(problem)], [get_optimizer("adam"), get_optimizer("sgd-momentum")], lrs=[1e-3, 3e-2],
                 seeds=list(range(seeds)), steps=steps, record_every=1, device="cpu")


def _small_limit(monkeypatch, rows_budget: int):
    """A limit leaving ``rows_budget`` bytes to the recorded rows (the libraries' share set to 0)."""
    monkeypatch.setattr(memory, "RESIDENT_BYTES", 0)
    monkeypatch.setattr(memory, "MIN_ROWS_BYTES", 1)
    monkeypatch.setenv(memory.ENV, str(rows_budget))


def _tidy(frame: pd.DataFrame) -> pd.DataFrame:
    frame = frame.drop(columns=[c for c in MEASURED if c in frame.columns])
    keys = ["run_id", "step"] if "step" in frame.columns else ["run_id"]
    frame = frame.sort_values(keys).reset_index(drop=True)
    return frame.astype({c: str for c in frame.columns if isinstance(frame[c].dtype, pd.CategoricalDtype)})


@pytest.mark.parametrize("problem", ["rosenbrock", "saddle", "noisy-quadratic(dim=10)", "rastrigin(dim=3)"])
def test_a_small_limit_slices_the_sweep_and_changes_no_value(problem, tmp_path, monkeypatch):
    """Sliced (many chunks) and unsliced (one chunk per group) sweeps write the same steps and summary tables,
    bitwise but for the clocks and memory readings; each slice is a chunk of its own, written whole."""
    monkeypatch.delenv(memory.ENV, raising=False)
    run_sweep(_sweep(problem), tmp_path / "whole")
    whole_chunks = len(list((tmp_path / "whole" / "steps").glob("*.parquet")))
    sweep = _sweep(problem)
    per_run = memory.bytes_per_run(sweep.steps, 1, get_problem(problem).dim)
    _small_limit(monkeypatch, 2 * (100 * per_run + 16 * sweep.steps))  # slices of 64 runs (of 160 per group)
    items = plan_groups(sweep.expand(), sweep.engine)
    assert sorted({len(group) for _, group in items}) == [32, 64]
    run_sweep(sweep, tmp_path / "sliced")
    sliced_chunks = len(list((tmp_path / "sliced" / "steps").glob("*.parquet")))
    assert sliced_chunks == len(items) > whole_chunks
    for load in (load_results, load_summary):
        pd.testing.assert_frame_equal(_tidy(load(tmp_path / "sliced")), _tidy(load(tmp_path / "whole")),
                                      check_exact=True)


def test_every_work_item_keeps_its_buffers_within_the_budget(tmp_path, monkeypatch):
    """The recorder's buffers and their numpy copies, then the copies and the tables built from them, measured
    in bytes for each work item of a sliced sweep, stay within what the limit leaves one work item (half the
    rows budget: the writer holds the previous chunk meanwhile)."""
    import optbench.sweep.writer as writer
    from optbench.engines import batched_numpy, recorder

    # the torch path's recorder is what is measured here (the numpy path keeps the same rows in numpy buffers)
    monkeypatch.setattr(batched_numpy, "supports", lambda *args, **kwargs: False)

    sweep = _sweep("rosenbrock", seeds=20, steps=300)
    budget = 2 * (7 * memory.bytes_per_run(sweep.steps, 1, 2) + 16 * sweep.steps)
    _small_limit(monkeypatch, budget)
    measured = []
    recorders = []
    original_init, original_tables = recorder.Recorder.__init__, writer.trace_tables

    def init(self, *args, **kwargs):
        original_init(self, *args, **kwargs)
        recorders.append(self)

    def tables(runs, trace, engine):
        steps_table, summary_table = original_tables(runs, trace, engine)
        rec = recorders.pop()
        held = sum(t.element_size() * t.nelement() for t in (rec.loss, rec.grad_norm, rec.coords))
        copies = sum(a.nbytes for a in (trace.loss, trace.grad_norm, trace.wall_time_s, trace.coords))
        # the recorder's tensors live until the engine returns its copies; the tables are built from the copies
        measured.append((len(runs), max(held + copies, copies + steps_table.nbytes + summary_table.nbytes)))
        return steps_table, summary_table

    monkeypatch.setattr(recorder.Recorder, "__init__", init)
    monkeypatch.setattr(writer, "trace_tables", tables)
    run_sweep(sweep, tmp_path / "out")
    assert len(measured) == len(plan_groups(sweep.expand(), sweep.engine)) > 1
    assert all(runs <= 7 for runs, _ in measured)
    assert max(size for _, size in measured) <= budget // 2, (measured, budget)


def test_a_run_that_cannot_fit_is_refused_before_any_compute(tmp_path, monkeypatch):
    _small_limit(monkeypatch, 10_000)
    with pytest.raises(UsageError, match="--memory-limit") as info:
        run_sweep(_sweep("rosenbrock", seeds=2, steps=1000), tmp_path / "out")
    assert "--steps 1000 (recording every 1" in str(info.value) and "larger --record-every" in str(info.value)
    assert not (tmp_path / "out" / "steps").exists() or not list((tmp_path / "out" / "steps").iterdir())


def test_cli_memory_limit(tmp_path):
    import os
    import subprocess

    env = {k: v for k, v in os.environ.items() if k != memory.ENV}
    bad = subprocess.run(["optbench", "run", "-p", "saddle", "-o", "adam", "--steps", "5", "--memory-limit", "lots",
                          "--out", str(tmp_path / "a")], capture_output=True, text=True, env=env)
    assert bad.returncode == 2 and "--memory-limit 'lots' is not a size" in bad.stderr
    assert "Traceback" not in bad.stderr
    huge = subprocess.run(["optbench", "run", "-p", "saddle", "-o", "adam", "--steps", str(10**9), "--record-every",
                           "1", "--memory-limit", "1GiB", "--out", str(tmp_path / "b")], capture_output=True,
                          text=True, env=env)
    assert huge.returncode == 2 and "larger --memory-limit" in huge.stderr and "Traceback" not in huge.stderr
