"""The Python API (optbench.api): one call per command, spec strings or objects in, result objects out, optbench
errors (never SystemExit) for mistakes, nothing printed. The CLI calls these same functions."""

from __future__ import annotations

import json

import pytest

import optbench
from optbench.errors import OptbenchError, SpecError, UsageError


def test_top_level_names_are_the_api():
    import importlib

    api = importlib.import_module("optbench.api")
    assert optbench.run is api.run and optbench.tune is api.tune and optbench.baseline is api.baseline
    # optbench.report and optbench.check are also packages (a submodule import binds the name to the package):
    # calling them calls the API
    importlib.import_module("optbench.check.compare")
    importlib.import_module("optbench.report.data")
    assert callable(optbench.check) and callable(optbench.report)
    assert callable(optbench.check.compare.compare) and callable(optbench.report.build_report)


@pytest.mark.parametrize("problems,optimizers", [
    (["rosenbrock"], ["adam"]),
    ("rosenbrock", "adam"),
    ("rosenbrock,saddle", "adam(lr=0.01),sgd"),
    (["rosenbrock", "saddle"], ["adam(lr=0.01)", "sgd"]),
])
def test_sweep_takes_spec_strings(problems, optimizers):
    from optbench.optimizers import get_optimizer
    from optbench.problems import get_problem
    from optbench.sweep.spec import Sweep

    sweep = Sweep(problems, optimizers, steps=5)
    names = problems if isinstance(problems, list) else problems.split(",")
    opts = optimizers if isinstance(optimizers, list) else optimizers.split(",")
    objects = Sweep([get_problem(p) for p in names], [get_optimizer(o) for o in opts], steps=5)
    assert [r.run_id for r in sweep.expand()] == [r.run_id for r in objects.expand()]  # the same runs


@pytest.mark.parametrize("problems,optimizers,needle", [
    ([3], ["adam"], "problems[0] = 3"),
    (["rosenbrock"], [None], "optimizers[0] = None"),
    (["rosenbrock"], [{"name": "adam"}], "optimizers[0]"),
    (["rosenbrock"], 42, "got int 42"),
    (["rosenbrok"], ["adam"], "Did you mean 'rosenbrock'"),
    (["rosenbrock"], ["adam,adam"], "listed twice"),
])
def test_sweep_rejects_what_is_not_a_spec_with_a_spec_error(problems, optimizers, needle):
    from optbench.sweep.spec import Sweep

    with pytest.raises(SpecError) as exc:
        Sweep(problems, optimizers)
    assert needle in str(exc.value)


def test_run_returns_an_outcome_and_prints_nothing(tmp_path, capsys):
    outcome = optbench.run("rosenbrock,saddle", ["adam", "sgd-momentum"], lrs=[1e-3, 1e-2], seeds=2, steps=30,
                           out=tmp_path / "r")
    assert capsys.readouterr() == ("", "")
    assert outcome.out_dir == tmp_path / "r" and outcome.runs_total == 16 and outcome.runs_done == 16
    assert len(outcome.run_ids) == 16 == len(set(outcome.run_ids))
    runs = outcome.runs
    assert sorted(runs["run_id"]) == sorted(outcome.run_ids) and set(runs["status"]) <= {"done", "escaped", "diverged"}
    table = outcome.summary  # the best lr per (problem, optimizer): what 'optbench run' prints
    assert len(table) == 4 and set(table["optimizer_label"]) == {"adam", "sgd-momentum"}
    assert len(outcome.table(all_lrs=True)) == 8
    manifest = json.loads((tmp_path / "r" / "manifest.json").read_text())
    assert manifest["sweeps"][0]["command"] == "optbench.run() (Python API)"
    again = optbench.run("rosenbrock,saddle", ["adam", "sgd-momentum"], lrs="1e-3,1e-2", seeds=[0, 1], steps=30,
                         out=tmp_path / "r")
    assert again.runs_skipped == 16 and again.runs_done == 0 and again.run_ids == outcome.run_ids


def test_run_matches_an_explicit_sweep_bitwise(tmp_path):
    from optbench.results import load_results
    from optbench.runner import run_sweep
    from optbench.sweep.spec import Sweep

    optbench.run("beale", "adam(lr=0.01)", steps=20, out=tmp_path / "api", engine="loop")
    run_sweep(Sweep(["beale"], ["adam(lr=0.01)"], steps=20, engine="loop"), tmp_path / "sweep")
    a, b = load_results(tmp_path / "api"), load_results(tmp_path / "sweep")
    assert list(a["run_id"].unique()) == list(b["run_id"].unique())
    assert a["loss"].tolist() == b["loss"].tolist()


@pytest.mark.parametrize("kwargs,error,needle", [
    ({"problems": None, "optimizers": "adam"}, UsageError, "Give --problem and --opt"),
    ({"steps": 0}, UsageError, "--steps 0"),
    ({"lrs": [-1.0]}, UsageError, "learning rates must be > 0"),
    ({"lrs": ["fast"]}, UsageError, "'fast' is not a number"),
    ({"seeds": 0}, UsageError, "seeds=0"),
    ({"engine": "fast"}, UsageError, "valid engines"),
    ({"stepz": 3}, UsageError, "Did you mean 'steps'"),
    ({"batch_sizes": "32"}, UsageError, "--batch-size does not apply"),
    ({"schedules": "cosin"}, UsageError, "cosine"),
    ({"optimizers": "adam(lr=-1)"}, SpecError, "lr=-1"),
    ({"suite": "x.toml"}, UsageError, "not both"),
])
def test_run_mistakes_raise_optbench_errors_before_any_work(kwargs, error, needle, tmp_path):
    args = {"problems": "saddle", "optimizers": "adam", "out": tmp_path / "never", **kwargs}
    with pytest.raises(error) as exc:
        optbench.run(args.pop("problems"), args.pop("optimizers"), **args)
    assert needle in str(exc.value)
    assert not (tmp_path / "never").exists()


def test_run_suite_with_overrides(tmp_path):
    suite = tmp_path / "s.toml"
    suite.write_text('name = "s"\n[[sweep]]\nproblems = ["rosenbrock"]\noptimizers = ["adam", "sgd"]\nsteps = 9\n'
                     '[[sweep]]\nproblems = ["saddle"]\noptimizers = ["nag"]\nsteps = 7\n')
    outcome = optbench.run(suite=suite, seeds=2, out=tmp_path / "o")
    assert outcome.runs_total == 6 and len(outcome.run_ids) == 6
    assert sorted(outcome.runs["steps"]) == [7, 7, 9, 9, 9, 9]  # the file's steps, the overriding seeds
    manifest = json.loads((tmp_path / "o" / "manifest.json").read_text())
    assert manifest["suites"][0]["overrides"] == {"seeds": [0, 1]}


def test_report_returns_what_it_wrote(tmp_path):
    optbench.run("rosenbrock", "adam,sgd", steps=20, out=tmp_path / "r")
    written = optbench.report(tmp_path / "r", formats="png", figures="trajectories,curves", title="api")
    assert written.index == tmp_path / "r" / "report" / "index.html" and written.index.exists()
    assert written.markdown.exists() and "api" in written.markdown.read_text()
    assert written.figures and all(p.suffix == ".png" and p.exists() for p in written.figures)
    with pytest.raises(UsageError, match="not a report option"):
        optbench.report(tmp_path / "r", colour="red")
    with pytest.raises(UsageError, match="Unknown figure"):
        optbench.report(tmp_path / "r", figures="racez")


def test_tune_records_the_tuning_and_reruns_the_best(tmp_path, capsys):
    outcome = optbench.tune("rosenbrock", "sgd,adam", trials=4, batch=4, steps=20, seeds=2, out=tmp_path / "t")
    assert capsys.readouterr() == ("", "")
    assert [(r.problem, r.optimizer) for r in outcome.results] == [("rosenbrock", "sgd"), ("rosenbrock", "adam")]
    assert outcome.budgets == {"sgd": 4, "adam": 4} and outcome.budget_text == "4 trials each"
    assert all(r.trials_used == 4 and r.best_params for r in outcome.results)
    assert set(outcome.best) == {("rosenbrock", "sgd"), ("rosenbrock", "adam")}
    assert outcome.seeds == [0, 1] and len(outcome.reruns) == 1 and outcome.reruns[0].runs_total == 4
    assert len(outcome.summary) == 2
    manifest = json.loads((tmp_path / "t" / "manifest.json").read_text())
    record = manifest["tuning"][0]
    assert record == outcome.record and record["protocol"] == "tpe" and record["budget"] == 4
    assert record["rerun_seeds"] == [0, 1] and len(record["studies"]) == 2
    assert record["command"] == "optbench.tune() (Python API)"


@pytest.mark.parametrize("kwargs,needle", [
    ({"protocol": "tpz"}, "tpz"),
    ({"trials": "4,lion=3"}, "'lion' is not one of the optimizers"),
    ({"engine": "fast"}, "valid engines"),
    ({"schedule": "cosine,linear"}, "one schedule"),
    ({"seeds": []}, "at least one seed"),
    ({"clip_norm": -1.0}, "--clip-norm -1.0"),
])
def test_tune_mistakes_raise_before_any_trial(kwargs, needle, tmp_path):
    with pytest.raises(OptbenchError) as exc:
        optbench.tune("rosenbrock", "sgd", **{"trials": 3, "steps": 5, "out": tmp_path / "never", **kwargs})
    assert needle in str(exc.value)
    assert not (tmp_path / "never").exists()


def test_tune_takes_the_suite_tune_table_and_given_values_win(tmp_path):
    suite = tmp_path / "s.toml"
    suite.write_text('[tune]\nproblems = ["rosenbrock"]\noptimizers = ["sgd"]\ntrials = 3\nsteps = 9\nbatch = 3\n'
                     'seeds = [4]\n')
    outcome = optbench.tune(suite=suite, steps=6, out=tmp_path / "t")
    assert outcome.budgets == {"sgd": 3} and outcome.seeds == [4]
    assert outcome.record["steps"] == 6 and outcome.record["batch"] == 3  # given wins; the table fills the rest


SUITE = '''name = "tiny"
[[sweep]]
problems = ["rosenbrock"]
optimizers = ["adam(lr=0.01)", "sgd-momentum(lr=0.001)"]
seeds = 2
steps = 40
[check]
branches = false
'''


def test_baseline_and_check_round_trip(tmp_path):
    suite = tmp_path / "tiny.toml"
    suite.write_text(SUITE)
    recorded = optbench.baseline(suite, tmp_path / "bl")
    assert recorded.out_dir == tmp_path / "bl" and recorded.runs == 4 and recorded.suite_name == "tiny"
    assert recorded.size_bytes > 0 and recorded.branch_variants == {}
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".bl.")]  # the temporary folder is gone
    result = optbench.check(suite=suite, baseline=tmp_path / "bl", out=tmp_path / "new",
                            junit=tmp_path / "ok.xml")
    assert result.passed and not len(result.failed) and len(result.table) > 0
    assert result.tolerances.mode == "exact" and result.configurations == 2 and result.suite_name == "tiny"
    assert result.junit.exists() and result.warnings == []
    again = optbench.check(suite, tmp_path / "bl", out=tmp_path / "new2")  # a .toml as `new`: the suite
    assert again.passed
    two_dirs = optbench.check(tmp_path / "new", tmp_path / "bl", tolerances={"mode": "statistical"})
    assert two_dirs.passed and two_dirs.tolerances.mode == "statistical"


SGD = """
import torch


class MySGD(torch.optim.Optimizer):
    def __init__(self, params, lr=1e-3):
        super().__init__(params, dict(lr=lr))

    @torch.no_grad()
    def step(self, closure=None):
        for group in self.param_groups:
            for p in group["params"]:
                p.add_(p.grad, alpha=-group["lr"] * SCALE)
"""


def test_check_finds_a_changed_user_optimizer(tmp_path, monkeypatch):
    import optbench.optimizers.user as user
    from optbench.check.compare import Tolerances

    monkeypatch.chdir(tmp_path)
    suite = tmp_path / "tiny.toml"
    suite.write_text(SUITE)
    (tmp_path / "sgd.py").write_text(SGD.replace("SCALE", "1"))
    optbench.baseline(suite, tmp_path / "bl", opt="sgd.py:MySGD(lr=0.001)")
    changed = tmp_path / "changed.toml"
    changed.write_text(SUITE.replace("steps = 40", "steps = 41"))
    with pytest.raises(UsageError, match="do not cover the same configurations"):  # before any work
        optbench.check(suite=changed, baseline=tmp_path / "bl", opt="sgd.py:MySGD(lr=0.001)", out=tmp_path / "x")
    assert not (tmp_path / "x").exists()
    optbench.run("rosenbrock", "./sgd.py:MySGD(lr=0.001)", seeds=2, steps=40, deterministic=True, out=tmp_path / "same")
    same = optbench.check(tmp_path / "same", tmp_path / "bl")  # the same runs, from optbench.run
    assert same.passed and any("name the same file" in w for w in same.warnings)
    (tmp_path / "sgd.py").write_text(SGD.replace("SCALE", "1.5"))
    monkeypatch.setattr(user, "_CACHE", {})
    failed = optbench.check(suite=suite, baseline=tmp_path / "bl", opt="sgd.py:MySGD(lr=0.001)", out=tmp_path / "new",
                            tolerances=Tolerances(mode="exact"), markdown=tmp_path / "md" / "check.md")
    assert not failed.passed and set(failed.failed["optimizer_label"]) == {"sgd.py:MySGD"}  # lr goes in its column
    assert failed.markdown.read_text().startswith("## ❌")
