"""User problems (``file.py:factory``, ``pkg.mod:factory``) of both shapes: the problem contract, spec validation,
source hash in the run identity, errors reported as the user's; and time to result of network runs."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from optbench.errors import SpecError, UserCodeError
from optbench.optimizers import get_optimizer
from optbench.problems import get_problem, list_problems
from optbench.problems.base import AnalyticProtocol, Problem, TrainingProtocol, protocol_members
from optbench.results import load_results, load_summary
from optbench.runner import run_sweep
from optbench.sweep.spec import Run, Sweep

ROOT = Path(__file__).resolve().parents[1]

TASKS = '''
import torch
from optbench import AnalyticTask, TrainingTask


def bowl(scale: float = 1.0, shift: float = 0.5):
    """f(x, y) = scale·((x − shift)² + 4y²)."""
    def loss(p):
        return scale * ((p[..., 0] - shift) ** 2 + 4 * p[..., 1] ** 2)

    def grad(p):
        return torch.stack([2 * scale * (p[..., 0] - shift), 8 * scale * p[..., 1]], -1)

    return AnalyticTask(loss=loss, grad=grad, dim=2, bounds=((-2, 2), (-2, 2)), start=(1.5, 1.0),
                        minima=((shift, 0.0),), target=1e-4)


def blobs(width: int = 8, n: int = 96, broken: str = ""):
    """Two Gaussian blobs, an MLP, accuracy."""
    g = torch.Generator().manual_seed(0)
    y = torch.arange(n) % 2
    x = torch.randn(n, 2, generator=g) * 0.5 + (2.0 * y - 1.0)[:, None]

    def model():
        if broken == "model":
            raise RuntimeError("model boom")
        return torch.nn.Sequential(torch.nn.Linear(2, width), torch.nn.Tanh(), torch.nn.Linear(width, 2))

    def accuracy(out, t):
        if broken == "metric":
            raise ValueError("metric boom")
        return (out.argmax(-1) == t).float().mean()

    return TrainingTask(model=model, train=(x, y), test=(x[:40], y[:40]), metrics={"acc": accuracy},
                        batch_size=20, result_target="test_acc>=0.9")


def broken_loss():
    def loss(p):
        raise ZeroDivisionError("loss boom")
    return AnalyticTask(loss=loss, dim=1, bounds=((-1, 1),))


def no_default(width):
    return None


def shadows(noise: float = 0.1):
    return AnalyticTask(loss=lambda p: (p ** 2).sum(-1), dim=1, bounds=((-1, 1),))


def wrong_shape():
    return AnalyticTask(loss=lambda p: p.sum(), dim=2, bounds=((-1, 1), (-1, 1)))
'''

pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py


@pytest.fixture
def tasks(tmp_path, monkeypatch):
    (tmp_path / "tasks.py").write_text(TASKS)
    monkeypatch.chdir(tmp_path)
    return tmp_path / "tasks.py"


@pytest.fixture
def data_dir(tmp_path, monkeypatch):
    from optbench.data import store
    from optbench.data.synthetic import write_dataset

    for name in ("mnist", "fashion-mnist"):
        write_dataset(name, tmp_path / "data" / name, n_train=60, n_test=20)
    corpus = tmp_path / "data" / "tiny-shakespeare"  # text-lm's default corpus: any real text serves here
    corpus.mkdir(parents=True)
    (corpus / "input.txt").write_bytes(Path("/usr/share/common-licenses/GPL-3").read_bytes()[:20000])
    monkeypatch.setenv(store.DATA_ENV, str(tmp_path / "data"))


def _check_contract(problem) -> None:
    # the protocols of optbench.problems.base list every attribute runner, engines, results and report read
    protocol = AnalyticProtocol if problem.kind == "analytic" else TrainingProtocol
    for attribute in protocol_members(protocol):
        assert hasattr(problem, attribute), f"{problem.label} lacks {attribute}"
    assert isinstance(problem, Problem) and isinstance(problem, protocol)
    json.dumps(problem.config, default=repr)
    assert str(problem.spec) == problem.label
    again = get_problem(problem.label, **({"batch_size": problem.batch_size} if problem.has_batch_size else {}))
    assert again.config == problem.config  # the label rebuilds the problem (workers, reports)
    assert isinstance(problem.dim, int) and problem.dim >= 1


def test_every_registered_and_user_problem_meets_the_contract(tasks, data_dir):
    specs = [e.name for e in list_problems() if "cifar" not in e.name]  # cifar: same class as the MNIST nets
    specs += ["tasks.py:bowl", "tasks.py:bowl(scale=2.0)", "tasks.py:blobs(width=4)"]
    for spec in specs:
        _check_contract(get_problem(spec))


def test_analytic_task_is_an_analytic_problem(tasks):
    p = get_problem("tasks.py:bowl(scale=2.0, noise=0.1)")
    assert p.kind == "analytic" and p.name == "tasks.py:bowl" and p.dim == 2 and p.f_min == 0.0
    assert p.config == {"scale": 2.0, "shift": 0.5, "start": None, "noise": 0.1} and p.is_noisy
    torch.testing.assert_close(p.minima, torch.tensor([[0.5, 0.0]], dtype=torch.float64))
    x = torch.randn(3, 4, 2, dtype=torch.float64)
    assert p.loss(x).shape == (3, 4)
    xg = x.clone().requires_grad_(True)
    (auto,) = torch.autograd.grad(p.loss(xg).sum(), xg)
    torch.testing.assert_close(p.grad(x), auto)
    assert "start" in p.describe() and p.formula.startswith("f(x, y)")


def test_analytic_task_runs_on_both_engines_alike(tasks, tmp_path):
    p = get_problem("tasks.py:bowl")
    sweep = dict(lrs=[0.05], seeds=[0, 1], steps=60)
    loop = run_sweep(Sweep([p], [get_optimizer("adam")], engine="loop", **sweep), tmp_path / "loop")
    batched = run_sweep(Sweep([p], [get_optimizer("adam")], engine="batched", **sweep), tmp_path / "batched")
    assert loop.engines == {"loop": 2} and batched.engines == {"batched": 2}
    a, b = (load_results(tmp_path / d).sort_values(["seed", "step"]) for d in ("loop", "batched"))
    np.testing.assert_allclose(a.loss.to_numpy(), b.loss.to_numpy(), rtol=1e-10)
    assert {"x0", "x1"} <= set(a.columns)  # two dimensions: contour races in reports
    assert load_summary(tmp_path / "loop").steps_to_target.notna().all()


@pytest.mark.parametrize("spec, message", [
    ("tasks.py:bowl(scael=2.0)", "Did you mean 'scale'"),
    ("tasks.py:bowl(batch_size=4)", "batch_size"),
    ("tasks.py:bowl(scale='big')", "scale"),
    ("tasks.py:blobs(widht=4)", "Did you mean 'width'"),
    ("tasks.py:blobs(start=(1, 2))", "Unknown key 'start'"),
    ("tasks.py:bowll", "Did you mean 'bowl'"),
    ("tasks.py:no_default", "has no default"),
    ("tasks.py:wrong_shape", "batched loss"),
    ("tasks.py:shadows", "'noise' is also an option"),
    ("missing.py:bowl", "does not exist"),
])
def test_bad_user_problem_specs_are_spec_errors(tasks, spec, message):
    with pytest.raises(SpecError, match=message):
        get_problem(spec)


@pytest.mark.parametrize("spec, where, text", [
    ("tasks.py:broken_loss", "loss()", "loss boom"),
    ("tasks.py:blobs(broken='model')", "model()", "model boom"),
])
def test_a_failure_in_user_code_is_the_users_error_with_their_traceback(tasks, spec, where, text):
    with pytest.raises(UserCodeError, match=rf"tasks\.py.*{where.replace('(', '[(]').replace(')', '[)]')}") as info:
        p = get_problem(spec)
        p.init_params(0)
    assert text in info.value.user_traceback and "tasks.py" in info.value.user_traceback
    assert "optbench/" not in info.value.user_traceback.replace(str(tasks.parent), "")


def test_a_failing_metric_is_the_users_error(tasks, tmp_path):
    p = get_problem("tasks.py:blobs(broken='metric')")
    with pytest.raises(UserCodeError, match="metric 'acc'") as info:
        run_sweep(Sweep([p], [get_optimizer("sgd")], steps=3, device="cpu"), tmp_path / "out")
    assert "metric boom" in info.value.user_traceback


def test_a_class_in_an_installed_module_is_a_factory(tmp_path, monkeypatch):
    pkg = tmp_path / "mypkg"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "tasks.py").write_text(textwrap.dedent('''
        from optbench import AnalyticTask

        class Parabola(AnalyticTask):
            """f(x) = a·x²."""
            def __init__(self, a: float = 1.0):
                super().__init__(loss=lambda p: a * (p ** 2).sum(-1), dim=1, bounds=((-1.0, 1.0),), start=(0.8,),
                                 minima=((0.0,),))
    '''))
    monkeypatch.syspath_prepend(str(tmp_path))
    p = get_problem("mypkg.tasks:Parabola(a=3.0)")
    assert p.kind == "analytic" and p.config["a"] == 3.0 and p.f_min == 0.0 and p.source_sha
    assert Run(p, get_optimizer("adam"), 0, 10, 1).identity["problem_source"] == p.source_sha
    with pytest.raises(SpecError, match="not installed"):
        get_problem("mypkg.nothere:Parabola")


def test_editing_the_file_changes_the_run_ids_and_only_theirs(tasks):
    def ids(spec):
        return {r.run_id for r in Sweep([get_problem(spec)], [get_optimizer("adam")], seeds=[0, 1]).expand()}

    before, again = ids("tasks.py:bowl"), ids("tasks.py:bowl")
    builtin = ids("rosenbrock")
    tasks.write_text(TASKS + "\n# an edit\n")
    assert before == again and ids("tasks.py:bowl").isdisjoint(before)
    assert ids("rosenbrock") == builtin
    run = Run(get_problem("rosenbrock"), get_optimizer("adam"), 0, 10, 1)
    assert "problem_source" not in run.identity  # built-in run ids are unchanged


def test_training_task_records_its_metrics_and_time_to_result(tasks, tmp_path):
    p = get_problem("tasks.py:blobs")
    assert p.kind == "network" and p.batch_size == 20 and p.steps_per_epoch() == 5 and p.eval_every == 5
    outcome = run_sweep(Sweep([p], [get_optimizer("adam(lr=0.05)")], seeds=[0, 1], epochs=4, device="auto"),
                        tmp_path / "out")
    assert outcome.engines == {"loop": 2}  # its own loss and metrics: the loop engine, even where auto batches
    steps, summary = load_results(tmp_path / "out"), load_summary(tmp_path / "out")
    assert {"test_loss", "test_acc", "examples", "train_time_s"} <= set(steps.columns)
    for _, run in summary.iterrows():
        rows = steps[steps.run_id == run.run_id].sort_values("step")
        hit = rows[rows.test_acc >= 0.9].iloc[0]  # the first evaluation that met the task's result target
        assert run.result_target == "test_acc>=0.9"
        assert run.steps_to_result == hit.step and run.examples_to_result == hit.examples
        assert run.seconds_to_result == hit.train_time_s
        # 96 examples: epochs of 5 batches, 20 + 20 + 20 + 20 + 16
        np.testing.assert_array_equal(rows.examples, rows.step // 5 * 96 + rows.step % 5 * 20)
        assert run.examples_per_s > 0 and run.peak_rss_bytes >= 0


def test_a_run_that_diverges_between_recorded_steps_counts_its_examples_to_its_last_step(data_dir, tmp_path):
    from optbench.time_to_result import examples_seen

    p = get_problem("mnist-mlp(width=32, depth=2, batch_size=16, eval_every=40)")
    run_sweep(Sweep([p], [get_optimizer("sgd(lr=1e3)")], steps=40, record_every=7, device="cpu"), tmp_path / "out")
    rows, run = load_results(tmp_path / "out").sort_values("step"), load_summary(tmp_path / "out").iloc[0]
    assert run.status == "diverged" and run.final_step % 7 and rows.step.iloc[-1] == run.final_step
    np.testing.assert_array_equal(rows.examples, examples_seen(rows.step, 60, 16))
    assert pd.isna(run.steps_to_result)


def test_examples_seen_counts_the_smaller_last_batch():
    from optbench.time_to_result import examples_seen

    # n = 10, batch 4: epochs are batches of 4, 4, 2
    np.testing.assert_array_equal(examples_seen([0, 1, 2, 3, 4, 6, 7], 10, 4), [0, 4, 8, 10, 14, 20, 24])


def test_evaluation_time_is_kept_out_of_the_training_clock(tasks, tmp_path, monkeypatch):
    """A fake clock: every reading advances 1 s, and each evaluation of the metric 1000 s."""
    import optbench.engines.recorder as recorder  # the training clock (RecorderBase.exclude_time)

    clock = {"t": 0.0}

    class FakeTime:
        @staticmethod
        def perf_counter():
            clock["t"] += 1.0
            return clock["t"]

    monkeypatch.setattr(recorder, "time", FakeTime)
    p = get_problem("tasks.py:blobs")
    slow = p.metric_fns["test_acc"]

    def metric(out, y):
        clock["t"] += 1000.0
        return slow(out, y)

    monkeypatch.setitem(p.metric_fns, "test_acc", metric)
    run_sweep(Sweep([p], [get_optimizer("sgd")], steps=10, device="cpu"), tmp_path / "out")
    steps = load_results(tmp_path / "out")
    assert steps.test_acc.notna().sum() == 3  # steps 0, 5, 10: 3000 s of evaluation
    assert steps.train_time_s.max() < 100 and steps.wall_time_s.max() < 100


def test_batched_network_runs_share_their_clock(data_dir, tmp_path):
    p = get_problem("mnist-mlp(width=8, depth=1, batch_size=16)")
    run_sweep(Sweep([p], [get_optimizer("sgd")], lrs=[0.01, 0.1], seeds=[0], steps=8, engine="batched",
                    device="cpu"), tmp_path / "out")
    steps, summary = load_results(tmp_path / "out"), load_summary(tmp_path / "out")
    np.testing.assert_allclose(steps.train_time_s, steps.wall_time_s / 2)  # K = 2 runs on one clock
    assert (summary.result_target == "loss<=0.1").all()  # a built-in network: its training-loss target
    assert summary.examples_per_s.notna().all() and summary.peak_rss_bytes.notna().all()
    np.testing.assert_array_equal(summary.steps_to_result.isna(), summary.steps_to_target.isna())


def _runs(values: dict[str, list]) -> pd.DataFrame:
    rows = []
    for label, seconds in values.items():
        for seed, s in enumerate(seconds):
            rows.append({"run_id": f"{label}{seed}", "problem": "p", "problem_name": "p", "optimizer": label,
                         "optimizer_label": label, "lr": 0.1, "batch_size": 8, "seed": seed, "steps": 100,
                         "final_step": 100, "final_loss": 0.1 if label == "slow" else 0.5, "best_loss": 0.1,
                         "best_step": 100, "dist_to_min": np.nan, "steps_to_target": pd.NA, "f_min": 0.0,
                         "target": 0.1, "status": "done", "engine": "loop", "wall_time_s": 1.0, "hparams": "{}",
                         "dim": 3, "result_target": "test_acc>=0.9",
                         "steps_to_result": pd.NA if s is None else int(s * 10),
                         "examples_to_result": pd.NA if s is None else int(s * 80),
                         "seconds_to_result": np.nan if s is None else s})
    return pd.DataFrame(rows)


def test_ranking_by_time_to_result_censors_runs_that_never_reach_it():
    from optbench.analysis.summary import aggregate

    runs = _runs({"lucky": [1.0, None, None], "slow": [5.0, 6.0, 7.0]})
    table = aggregate(runs, metric="seconds_to_result")
    assert list(table.optimizer_label) == ["slow", "lucky"]  # (1, never, never) has a censored median of ∞
    assert table.set_index("optimizer_label").loc["slow", "seconds_to_result"] == 6.0
    assert table.set_index("optimizer_label").loc["lucky", "result_reached"] == 1
    assert list(aggregate(runs).optimizer_label) == ["slow", "lucky"]  # by final loss, as before
    with pytest.raises(Exception, match="Did you mean 'seconds_to_result'"):
        aggregate(runs, metric="second_to_result")


def test_profiles_and_grids_read_time_to_result_censored():
    from optbench.analysis.grids import seed_medians
    from optbench.report.profiles import performance_ratios

    runs = _runs({"a": [1.0, None, 3.0], "b": [2.0, 2.0, None]}).assign(family="p")
    ratios = performance_ratios(runs, "seconds_to_result")
    np.testing.assert_array_equal(ratios["a"].to_numpy(), [1.0, np.inf, 1.0])  # never = ∞, not dropped
    np.testing.assert_array_equal(ratios["b"].to_numpy(), [2.0, 1.0, np.inf])
    runs = runs.assign(batch_size=runs.seed % 2 + 8)
    values, reached, seeds = seed_medians(runs, ["batch_size", "lr"], "seconds_to_result", "lr")
    assert reached is not None and int(reached.to_numpy().sum()) == 4


def test_summaries_without_time_to_result_still_load(tmp_path):
    from optbench.analysis.summary import aggregate

    old = _runs({"a": [1.0]}).drop(columns=["result_target", "steps_to_result", "examples_to_result",
                                             "seconds_to_result"])
    table = aggregate(old)
    assert table.steps_to_result.isna().all() and (table.result_target == "").all()
    assert aggregate(old, metric="seconds_to_result").optimizer_label.tolist() == ["a"]


def test_result_targets_recount_from_the_recorded_rows(tasks, tmp_path):
    from optbench.time_to_result import parse_result_target, with_result_target

    p = get_problem("tasks.py:blobs")
    run_sweep(Sweep([p], [get_optimizer("adam(lr=0.05)")], seeds=[0], epochs=3, device="cpu"), tmp_path / "out")
    steps, summary = load_results(tmp_path / "out"), load_summary(tmp_path / "out")
    same = with_result_target(steps, summary, parse_result_target("test_acc>=0.9"))
    assert same.steps_to_result.tolist() == summary.steps_to_result.tolist()
    assert same.seconds_to_result.tolist() == summary.seconds_to_result.tolist()
    never = with_result_target(steps, summary, parse_result_target("test_loss<=-1"))
    assert never.steps_to_result.isna().all() and (never.result_target == "test_loss<=-1").all()
    with pytest.raises(Exception, match="METRIC>=VALUE"):
        parse_result_target("test_acc=0.9")


def test_tune_and_check_take_a_user_problem(tasks, tmp_path):
    from optbench.check.compare import compare, regressions
    from optbench.suite import load_suite
    from optbench.tuning.protocols import get_protocol
    from optbench.tuning.spaces import parse_space
    from optbench.tuning.study import tune_one

    result = tune_one(get_problem("tasks.py:bowl"), get_optimizer("adam"), protocol=get_protocol("random"),
                      trials=4, dims=parse_space(""), steps=20, out_dir=tmp_path / "tune")
    assert result is not None
    suite = tmp_path / "suite.toml"
    suite.write_text(textwrap.dedent('''
        name = "mine"
        [[sweep]]
        problems = ["tasks.py:bowl", "tasks.py:blobs"]
        optimizers = ["adam", "sgd"]
        steps = 10
        seeds = [0, 1]
    '''))
    for out in ("base", "new"):
        for sweep in load_suite(suite).sweeps:
            sweep.device = "cpu"
            run_sweep(sweep, tmp_path / out, force=True)
    table = compare(load_summary(tmp_path / "new"), load_summary(tmp_path / "base"))
    assert len(table) and not len(regressions(table))


def test_cli_run_and_report_with_the_example_file(tmp_path, monkeypatch):
    """The shipped example through `run` and `report` (in-process); a broken task exits 2 with the user's
    traceback."""
    from cli_invoke import invoke

    monkeypatch.chdir(tmp_path)
    example = str(ROOT / "examples" / "my_problem.py")
    out = tmp_path / "res"
    run = invoke("run", "-p", f"{example}:tilted_bowl,{example}:two_moons(n_train=128)",
                 "-o", "adam(lr=0.05),sgd-momentum(lr=0.05)", "--steps", "40", "--out", out, env={"COLUMNS": "160"})
    assert run.exit_code == 0, run.stderr
    assert "result: test_acc>=0.95" in run.stdout and "s→result" in run.stdout
    report = invoke("report", out, "--format", "png", "--figures", "trajectories,curves", "--metric",
                    "seconds_to_result")
    assert report.exit_code == 0, report.stderr
    figures = {p.name for p in (out / "report" / "figures").glob("*.png")}
    assert any(f.startswith("trajectories_") and f.endswith("my_problem_py_tilted_bowl.png") for f in figures)
    assert len([f for f in figures if f.startswith("curves_")]) == 2  # one per problem of the file
    assert "test_acc>=0.95" in (out / "report" / "report.md").read_text()


def test_cli_reports_a_failing_factory_as_the_users_error_exit_2(tmp_path, monkeypatch, capsys):
    from optbench.cli.app import app

    (tmp_path / "bad.py").write_text("from optbench import AnalyticTask\n\ndef f():\n    return 1 / 0\n")
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as exit_info:
        app(["run", "-p", "bad.py:f", "-o", "adam", "--steps", "2", "--out", str(tmp_path / "out")])
    err = capsys.readouterr().err
    assert exit_info.value.code == 2 and "Error in your code" in err and "Internal error" not in err
    assert "bad.py:f" in err and "1 / 0" in err and "ZeroDivisionError" in err


def test_a_built_in_workload_s_stated_evaluation_target_is_its_result_target():
    from types import SimpleNamespace

    from optbench.problems.nets import EvalTarget
    from optbench.time_to_result import ResultTarget, run_target

    resnet = SimpleNamespace(eval_target=EvalTarget("test_acc", 0.94, "airbench94"))
    lm = SimpleNamespace(eval_target=EvalTarget("test_loss", 1.47, "nanoGPT"))
    assert run_target(resnet, 1e-4) == ResultTarget("test_acc", ">=", 0.94)
    assert run_target(lm, 1e-4) == ResultTarget("test_loss", "<=", 1.47)
    assert run_target(SimpleNamespace(eval_target=None), 0.5) == ResultTarget("loss", "<=", 0.5)


def test_a_factory_is_inspected_once_per_source_version():
    """The factory cache is keyed by (reference, source hash): a factory with hyperparameters was stored under
    its last parameter's name (a loop variable shadowed the key), so every lookup inspected it again."""
    from optbench.problems import user

    ref = str(Path(__file__).resolve().parents[1] / "examples" / "my_problem.py") + ":tilted_bowl"
    first = user._factory(ref)
    keys = [k for k in user._FACTORIES if k[0] == ref]
    assert len(keys) == 1 and isinstance(keys[0], tuple) and len(keys[0]) == 2
    assert user._factory(ref) is first  # the cached entry, not a re-inspection
