"""The results store: schema, atomic chunks, resume, merging several directories."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

import optbench
from optbench.errors import UsageError
from optbench.results import STEP_COLUMNS, SUMMARY_COLUMNS
from optbench.runner import run_sweep
from optbench.sweep.spec import Sweep


def _sweep(**kw):
    """Adam (batched engine) and L-BFGS with its line search (the loop engine, a closure optimizer; its batched
    rule refuses the line search; two inner iterations per step instead of 20: the store's behaviour does not
    depend on them, and 20 cost seconds per sweep)."""
    base = dict(problems=[optbench.get_problem("rosenbrock")],
                optimizers=[optbench.get_optimizer("adam"),
                            optbench.get_optimizer("lbfgs(max_iter=2, line_search_fn='strong_wolfe')")],
                lrs=[1e-3, 1e-2], seeds=[0, 1], steps=30)
    base.update(kw)
    return Sweep(**base)


def test_schema_and_one_row_per_recorded_step(tmp_path):
    outcome = run_sweep(_sweep(), tmp_path)
    assert outcome.runs_total == 8 and outcome.engines == {"batched": 4, "loop": 4}
    df = optbench.load_results(tmp_path)
    assert set(STEP_COLUMNS) <= set(df.columns) and {"x0", "x1"} <= set(df.columns)
    assert not df.duplicated(["run_id", "step"]).any()
    per_run = df.groupby("run_id", observed=True)["step"].agg(["min", "max", "count"])
    assert (per_run["min"] == 0).all() and (per_run["max"] == 30).all() and (per_run["count"] == 31).all()
    summary = optbench.load_summary(tmp_path)
    assert list(summary.columns)[: len(SUMMARY_COLUMNS)] == list(SUMMARY_COLUMNS)
    assert len(summary) == 8
    # the summary agrees with the step table
    last = df.sort_values("step").groupby("run_id", observed=True)["loss"].last()
    merged = summary.set_index("run_id")["final_loss"]
    np.testing.assert_allclose(merged.loc[last.index.astype(str)].to_numpy(), last.to_numpy())


def test_no_temporary_files_left_and_resume_skips(tmp_path):
    run_sweep(_sweep(), tmp_path)
    assert not list(tmp_path.rglob("*.tmp"))
    before = optbench.load_results(tmp_path)
    outcome = run_sweep(_sweep(), tmp_path)
    assert outcome.runs_skipped == 8 and outcome.runs_done == 0
    pd.testing.assert_frame_equal(optbench.load_results(tmp_path), before)


def test_reproducible_numbers(tmp_path):
    run_sweep(_sweep(problems=[optbench.get_problem("rosenbrock(noise=0.3)")]), tmp_path / "a")
    run_sweep(_sweep(problems=[optbench.get_problem("rosenbrock(noise=0.3)")]), tmp_path / "b")
    a, b = optbench.load_results(tmp_path / "a"), optbench.load_results(tmp_path / "b")
    np.testing.assert_array_equal(a["loss"].to_numpy(), b["loss"].to_numpy())


def test_divergence_ends_the_run_not_the_sweep(tmp_path):
    run_sweep(_sweep(optimizers=[optbench.get_optimizer("sgd")], lrs=[1e-3, 1.0]), tmp_path)
    summary = optbench.load_summary(tmp_path)
    assert set(summary["status"]) == {"done", "diverged"}
    diverged = summary[summary["status"] == "diverged"]
    assert (diverged["final_step"] < 30).all()
    df = optbench.load_results(tmp_path)
    for run_id, final_step in zip(diverged["run_id"], diverged["final_step"]):
        assert df[df["run_id"] == run_id]["step"].max() == final_step


def test_record_every_keeps_the_end_step(tmp_path):
    run_sweep(_sweep(optimizers=[optbench.get_optimizer("sgd")], lrs=[1e-3, 1.0], record_every=7), tmp_path)
    df = optbench.load_results(tmp_path)
    summary = optbench.load_summary(tmp_path).set_index("run_id")
    for run_id, g in df.groupby("run_id", observed=True):
        steps = g["step"].tolist()
        assert steps[-1] == summary.loc[run_id, "final_step"]
        assert all(s % 7 == 0 for s in steps[:-1])


def test_merge_directories_and_bad_directory(tmp_path):
    run_sweep(_sweep(lrs=[1e-3]), tmp_path / "a")
    run_sweep(_sweep(lrs=[1e-2]), tmp_path / "b")
    both = optbench.load_summary(tmp_path / "a", tmp_path / "b")
    assert sorted(both["lr"].unique()) == [1e-3, 1e-2]
    with pytest.raises(UsageError):
        optbench.load_results(tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(UsageError, match="not an optbench results directory"):
        optbench.load_results(tmp_path / "empty")


def test_git_revision_without_a_subprocess(tmp_path):
    """The manifest's git revision is read from .git (loose ref, packed ref, detached HEAD) and agrees with
    `git rev-parse HEAD`; worktrees fall back to git itself; outside a repository there is none."""
    import shutil
    import subprocess

    from optbench.sweep.manifest import git_revision

    if shutil.which("git") is None:
        pytest.skip("git is not installed")

    def git(*args, cwd=tmp_path / "repo"):
        return subprocess.run(["git", *args], cwd=cwd, check=True, capture_output=True, text=True).stdout.strip()

    (tmp_path / "repo" / "sub").mkdir(parents=True)
    git("init", "-q", "-b", "main")
    (tmp_path / "repo" / "a.txt").write_text("a")
    git("add", "a.txt")
    git("-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "a")
    head = git("rev-parse", "HEAD")
    assert git_revision(tmp_path / "repo" / "sub") == head  # loose ref, from a subdirectory
    git("pack-refs", "--all")
    assert not (tmp_path / "repo" / ".git" / "refs" / "heads" / "main").exists()
    assert git_revision(tmp_path / "repo") == head  # packed ref
    git("checkout", "-q", "--detach")
    assert git_revision(tmp_path / "repo") == head  # detached HEAD
    git("worktree", "add", "-q", str(tmp_path / "wt"))
    assert git_revision(tmp_path / "wt") == head  # .git is a file: git answers
    (tmp_path / "plain").mkdir()  # outside the repository: whatever git itself says (None when no repo)
    outside = subprocess.run(["git", "rev-parse", "HEAD"], cwd=tmp_path / "plain", capture_output=True, text=True)
    assert git_revision(tmp_path / "plain") == (outside.stdout.strip() if outside.returncode == 0 else None)


@pytest.mark.parametrize("sweep", [
    dict(problems=["rosenbrock", "saddle"], optimizers=["adam", "sgd(momentum=0.9)"], lrs=[1e-3, 0.1],
         seeds=[0, 1, -3, 2**40], schedules=["constant", "warmup-cosine(warmup=5)"], clip_norm=1.0),
    dict(problems=["noisy-quadratic"], optimizers=["sgd"], batch_sizes=[8, 64], seeds=[0, 1], recipe_name="goyal"),
    dict(problems=["rosenbrock"], optimizers=["lbfgs", "spsa", "adafactor"], seeds=[3], dtype="float32"),
])
def test_bulk_run_ids_equal_the_per_run_hash(sweep):
    """expand() fills run ids from one JSON template per configuration; they equal Run.identity's hash."""
    import dataclasses

    from optbench.sweep.spec import Sweep

    problems = [optbench.get_problem(p) for p in sweep.pop("problems")]
    optimizers = [optbench.get_optimizer(o) for o in sweep.pop("optimizers")]
    runs = Sweep.build(problems, optimizers, steps=20, **sweep).expand()
    assert all("run_id" in r.__dict__ for r in runs)
    fresh = [dataclasses.replace(r) for r in runs]  # a new object: run_id computed from its identity
    assert [r.run_id for r in runs] == [f.run_id for f in fresh]
    assert len({r.run_id for r in runs}) == len(runs)
