"""The target steps to target were counted at is stored with the runs, and every reader uses it (or recounts
from the recorded steps when asked for another one)."""

import json

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest

from optbench.errors import UsageError
from optbench.optimizers import get_optimizer
from optbench.problems import get_problem
from optbench.results import SUMMARY_DIR, load_results, load_summary
from optbench.runner import run_sweep
from optbench.sweep.spec import Sweep

RECORD_EVERY = 5


def sweep(target=None, problems=("rosenbrock", "saddle")):
    return Sweep([get_problem(p) for p in problems], [get_optimizer("adam"), get_optimizer("sgd")],
                 lrs=[1e-2, 1e-1], seeds=[0, 1], steps=60, record_every=RECORD_EVERY, target=target)


def first_recorded_step_within(steps, summary, target):
    """Independent reference: per run, the first recorded step with loss − f* ≤ target (pandas, float64)."""
    f_min = summary.set_index("run_id")["f_min"].fillna(0.0)
    df = steps.assign(run_id=steps["run_id"].astype(str))
    hit = df[df["loss"] - df["run_id"].map(f_min) <= target].groupby("run_id")["step"].min()
    return summary["run_id"].astype(str).map(hit)


def same_steps_to_target(a, b):
    a = a.set_index(a["run_id"].astype(str))["steps_to_target"].astype("Float64").fillna(-1)
    b = b.set_index(b["run_id"].astype(str))["steps_to_target"].astype("Float64").fillna(-1)
    return a.sort_index().equals(b.sort_index())


def test_the_target_is_stored_with_the_runs_and_not_in_their_identity(tmp_path):
    plain, targeted = sweep(), sweep(target=0.5)
    assert [r.run_id for r in plain.expand()] == [r.run_id for r in targeted.expand()]
    run_sweep(targeted, tmp_path / "t")
    summary = load_summary(tmp_path / "t")
    assert len(summary) == 16 and (summary["target"] == 0.5).all()
    expected = first_recorded_step_within(load_results(tmp_path / "t"), summary, 0.5)
    assert summary["steps_to_target"].notna().any() and summary["steps_to_target"].isna().any()
    assert (summary["steps_to_target"].astype("Float64").fillna(-1) == expected.astype("Float64").fillna(-1)).all()
    assert (summary["steps_to_target"].dropna() % RECORD_EVERY == 0).all()  # a recorded step
    (record,) = json.loads((tmp_path / "t" / "manifest.json").read_text())["sweeps"]
    assert record["target"] == 0.5
    run_sweep(plain, tmp_path / "p")
    own = load_summary(tmp_path / "p")
    assert set(zip(own["problem"], own["target"])) == {("rosenbrock", 1e-4), ("saddle", -1.0)}


def test_a_rerun_at_another_target_recounts_complete_runs(tmp_path):
    out = tmp_path / "out"
    run_sweep(sweep(), out)
    before = {p.name: p.stat().st_mtime_ns for p in (out / "steps").glob("*.parquet")}
    outcome = run_sweep(sweep(target=0.5), out)
    assert outcome.runs_skipped == 16 and outcome.runs_done == 0
    recounted = load_summary(out)
    assert (recounted["target"] == 0.5).all()
    run_sweep(sweep(target=0.5), tmp_path / "fresh")
    fresh = load_summary(tmp_path / "fresh")
    assert same_steps_to_target(recounted, fresh)
    assert {p.name: p.stat().st_mtime_ns for p in (out / "steps").glob("*.parquet")} == before  # steps untouched
    assert json.loads((out / "manifest.json").read_text())["sweeps"][-1]["retargeted"] == 16
    run_sweep(sweep(), out)  # back to each problem's own target
    back = load_summary(out)
    run_sweep(sweep(), tmp_path / "own")
    assert same_steps_to_target(back, load_summary(tmp_path / "own"))
    assert set(back["target"]) == {1e-4, -1.0}


def test_show_and_report_recount_at_a_target_from_the_recorded_steps(tmp_path):
    from optbench.report.data import load
    from optbench.targets import with_target

    run_sweep(sweep(), tmp_path / "own")
    run_sweep(sweep(target=0.5), tmp_path / "stored")
    stored = load_summary(tmp_path / "stored")
    recounted = with_target(load_results(tmp_path / "own"), load_summary(tmp_path / "own"), 0.5)
    assert same_steps_to_target(recounted, stored) and (recounted["target"] == 0.5).all()
    data = load([tmp_path / "own"], target=0.5)
    assert same_steps_to_target(data.summary, stored) and (data.table_all["target"] == 0.5).all()
    assert set(load([tmp_path / "own"]).table_all["target"]) == {1e-4, -1.0}


def test_float32_runs_recount_exactly_as_they_counted():
    """The recount compares in the dtype of the recorded losses, as the run did."""
    from optbench.targets import first_steps_within

    loss = np.array([1.0, 1e-7, 5e-8], dtype=np.float32)  # float32(1e-7) > 1e-7
    run_idx, step = np.zeros(3, np.int64), np.array([0, 5, 10])
    assert first_steps_within(run_idx, step, loss, [0.0], [1e-7], 1) == [5]  # float32(1e-7) ≤ float32(1e-7)
    assert first_steps_within(run_idx, step, loss.astype(np.float64), [0.0], [1e-7], 1) == [10]


def test_old_summaries_without_the_target_column_get_the_problem_target(tmp_path):
    run_sweep(sweep(), tmp_path / "old")
    for chunk in (tmp_path / "old" / SUMMARY_DIR).glob("*.parquet"):
        table = pq.read_table(chunk)
        pq.write_table(table.drop(["target"]), chunk)
    summary = load_summary(tmp_path / "old")
    assert set(zip(summary["problem"], summary["target"])) == {("rosenbrock", 1e-4), ("saddle", -1.0)}


def test_check_refuses_a_baseline_counted_at_another_target(tmp_path):
    from optbench.check.compare import Tolerances, compare

    run_sweep(sweep(problems=("rosenbrock",)), tmp_path / "base")
    run_sweep(sweep(target=0.5, problems=("rosenbrock",)), tmp_path / "new")
    base, new = load_summary(tmp_path / "base"), load_summary(tmp_path / "new")
    assert compare(base, base.copy()).passed.all()
    with pytest.raises(UsageError, match=r"baseline counts steps to target at target 0.0001 and the new "
                                         r"results at 0.5"):
        compare(new, base)
    off = Tolerances(metrics={"steps_to_target": {"enabled": False}})
    assert compare(new, base, off).passed.all()  # the same trajectories; steps to target not compared


def test_mixed_targets_are_flagged():
    from optbench.targets import mixed_targets_warning

    summary = pd.DataFrame({"problem": ["a", "a", "b"], "target": [0.1, 0.5, 1.0]})
    assert "a: 0.1, 0.5" in mixed_targets_warning(summary)
    assert mixed_targets_warning(summary[summary["problem"] == "b"]) is None


def test_bad_targets_are_usage_errors():
    for bad in (float("nan"), float("inf")):
        with pytest.raises(UsageError, match="finite"):
            sweep(target=bad).expand()


def test_run_target_is_what_show_and_the_stored_summary_say(tmp_path):
    """End to end: `run --target` stores it, `show` prints the stored counts, `show --target` recounts."""
    from cli_invoke import invoke

    def cli(*args):
        r = invoke(*args)
        assert r.exit_code == 0, r.stderr
        return json.loads(r.stdout)

    out = str(tmp_path / "out")
    common = ["-p", "rosenbrock", "-o", "adam", "--lr", "1e-2", "--steps", "200", "--record-every", "10"]
    ran = cli("run", *common, "--target", "5", "--out", out, "--json")
    shown = cli("show", out, "--json")
    (row,) = shown
    assert row["target"] == 5 and row["steps_to_target"] == ran["summary"][0]["steps_to_target"]
    assert row["steps_to_target"] is not None and row["steps_to_target"] % 10 == 0
    (own,) = cli("show", out, "--json", "--target", "1e-4")
    assert own["target"] == 1e-4 and own["steps_to_target"] is None
