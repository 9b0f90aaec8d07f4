"""Schedules in tuning: per-configuration schedules in the batched engine, schedule parameters as searched
dimensions (key naming, the warm-up mapping), and `optbench tune --schedule` end to end."""

from __future__ import annotations

import json
import shutil
import subprocess

import numpy as np
import pytest
from typer.testing import CliRunner

from optbench.engines.batched import run_batched
from optbench.engines.recipe import Recipe
from optbench.errors import SpecError, UsageError
from optbench.optimizers import get_optimizer
from optbench.problems import get_problem
from optbench.results import load_summary
from optbench.schedules import get_schedule, lr_sequence
from optbench.sweep.plan import execute
from optbench.sweep.spec import Run
from optbench.tuning import get_protocol, parse_space, tune_one
from optbench.tuning.spaces import check_schedule, check_space, resolve_space, schedule_for, suggest
from optbench.tuning.study import study_name

ROWS = [  # (lr, schedule): equal lrs under different warm-ups, equal warm-ups under different lrs
    (0.002, "warmup-cosine(warmup=0)"),
    (0.002, "warmup-cosine(warmup=5)"),
    (0.002, "warmup-cosine(warmup=0.3, min_lr=1e-4)"),
    (0.002, "constant"),
    (0.001, "warmup-cosine(warmup=5)"),
    (0.001, "warmup-linear(warmup=12)"),
]


@pytest.mark.parametrize("opt", ["adam", "sgd-momentum"])
def test_batched_per_config_schedules_equal_the_loop_engine(opt):
    problem, steps = get_problem("rosenbrock(noise=0.1)"), 40
    configs = [get_optimizer(opt).with_hyperparams(lr=lr) for lr, _ in ROWS]
    schedules = [s for _, s in ROWS]
    seeds = list(range(len(ROWS)))
    group = run_batched(problem, configs, seeds, steps, 1, schedules=schedules, measure_cost=False)
    for k, (config, schedule, seed) in enumerate(zip(configs, schedules, seeds)):
        ref = execute("loop", [Run(problem, config, seed, steps, 1, recipe=Recipe(schedule))])
        np.testing.assert_allclose(group.end_x[k], ref.end_x[0], rtol=1e-8, atol=1e-12)
        np.testing.assert_allclose(group.loss[:, k], ref.loss[:, 0], rtol=1e-8, atol=1e-12)
    # the rows really differ: same lr and seed, different warm-ups give different trajectories
    same_seed = run_batched(problem, configs[:4], [0] * 4, steps, 1, schedules=schedules[:4], measure_cost=False)
    assert len({round(float(v), 12) for v in same_seed.end_loss}) == 4
    with pytest.raises(ValueError, match="2 schedules for 6"):
        run_batched(problem, configs, seeds, steps, 1, schedules=schedules[:2], measure_cost=False)


def test_warmup_range_maps_to_a_fraction_or_to_steps():
    frac = resolve_space(parse_space("warmup=0:0.3"), "warmup-cosine")["schedule.warmup"]
    assert (frac.low, frac.high, frac.integer) == (0.0, 0.3, False)
    steps = resolve_space(parse_space("warmup=0:20"), "warmup-cosine")["schedule.warmup"]
    assert steps.integer and str(steps) == "schedule.warmup=0:20"
    assert resolve_space({"schedule.warmup": steps}, "warmup-cosine") == {"schedule.warmup": steps}  # idempotent
    for bad, match in (("warmup=0.5:20", "whole steps"), ("warmup=-0.1:0.2", "cannot be negative")):
        with pytest.raises(SpecError, match=match):
            resolve_space(parse_space(bad), "warmup-cosine")
    base = get_schedule("warmup-cosine")
    # a sampled fraction 0 is no warm-up (the int 0: a float warm-up must lie in (0, 1))
    none = schedule_for(base, {"schedule.warmup": 0.0, "lr": 0.1})
    assert none.given == {"warmup": 0} and lr_sequence(none, 40, 0.1)[0] == 0.1
    quarter = schedule_for(base, {"schedule.warmup": 0.25})  # a fraction of the budget: 10 of 40 steps
    seq = lr_sequence(quarter, 40, 0.1)
    assert quarter.label == "warmup-cosine(warmup=0.25)"
    assert schedule_for(base, {"schedule.warmup": 0.21892724029154262}).label == "warmup-cosine(warmup=0.2189)"
    assert schedule_for(base, {"schedule.warmup": 0.99996}).given == {"warmup": 0.99996}  # rounding would leave (0, 1)
    assert seq[9] == pytest.approx(0.1 * 10 / 11) and seq[10] == pytest.approx(0.1)
    seven = schedule_for(base, {"schedule.warmup": 7})  # a step count stays an integer
    assert seven.label == "warmup-cosine(warmup=7)" and lr_sequence(seven, 40, 0.1)[7] == pytest.approx(0.1)


def test_integer_dimensions_suggest_ints_and_tpe_local_steps_stay_on_the_grid(tmp_path):
    import optuna
    from optuna.distributions import FloatDistribution, IntDistribution

    from optbench.tuning.protocols import batch_tpe_sampler

    dims = resolve_space(parse_space("warmup=0:20"), "warmup-cosine")
    value = suggest(optuna.create_study().ask(), dims["schedule.warmup"])
    assert isinstance(value, int) and 0 <= value <= 20
    # BatchTPESampler's Gaussian steps around the best trials land on the integer grid: Optuna would
    # otherwise discard the relative value (a trial's value must be contained in its distribution)
    space = {"lr": FloatDistribution(1e-5, 10.0, log=True), "schedule.warmup": IntDistribution(0, 20)}
    best = [optuna.trial.create_trial(params={"lr": 0.01 * (i + 1), "schedule.warmup": 3 + i}, distributions=space,
                                      value=float(i)) for i in range(3)]
    steps = batch_tpe_sampler(0)._local(best, space, 200)
    warmups = [p["schedule.warmup"] for p in steps]
    assert all(isinstance(w, int) and space["schedule.warmup"]._contains(w) for w in warmups)
    assert len(set(warmups)) > 3  # they do move
    res = tune_one(get_problem("rosenbrock"), get_optimizer("adam"), protocol=get_protocol("tpe"), trials=42,
                   dims=parse_space("warmup=0:20"), steps=30, out_dir=tmp_path, batch=16,
                   recipe=Recipe("warmup-cosine"))
    assert sum(res.states.values()) == 42 and isinstance(res.best_params["schedule.warmup"], int)
    assert res.best_schedule == f"warmup-cosine(warmup={res.best_params['schedule.warmup']})"


def test_space_key_naming():
    adam, spsa = get_optimizer("adam"), get_optimizer("spsa")
    # a plain key names the schedule's parameter when no optimizer has it; schedule.KEY always does
    assert list(check_space([adam], parse_space("lr=1e-3:1:log,warmup=0:0.3"), "warmup-cosine")) == [
        "lr", "schedule.warmup"]
    assert list(check_space([spsa], parse_space("schedule.gamma=0.1:1"), "step")) == ["schedule.gamma"]
    # both spellings are one dimension, hence one study
    assert resolve_space(parse_space("warmup=0:0.3"), "warmup-cosine") == resolve_space(
        parse_space("schedule.warmup=0:0.3"), "warmup-cosine")
    with pytest.raises(SpecError, match="'gamma' is ambiguous.*'schedule.gamma'"):
        check_space([adam, spsa], parse_space("gamma=0.1:1"), "step")
    # with the schedule's gamma fixed (or given as schedule.gamma), plain gamma is spsa's
    assert list(check_space([spsa], parse_space("gamma=0:1"), "step(gamma=0.5)")) == ["gamma"]
    assert list(check_space([spsa], parse_space("gamma=0:1,schedule.gamma=0.1:1"), "step")) == [
        "gamma", "schedule.gamma"]
    with pytest.raises(SpecError, match=r"not a hyperparameter of adam nor a parameter of schedule "
                                        r"'warmup-cosine'; valid keys: lr, beta1, beta2, eps, weight_decay, "
                                        r"warmup, min_lr\."):
        check_space([adam], parse_space("foo=0:1"), "warmup-cosine")
    with pytest.raises(SpecError, match="a schedule parameter needs --schedule"):
        check_space([adam], parse_space("warmup=0:0.3"), None)
    with pytest.raises(SpecError, match="fixes warmup"):
        check_space([adam], parse_space("warmup=0:0.3"), "warmup-cosine(warmup=0.1)")
    with pytest.raises(SpecError, match="not a number"):
        check_space([adam], parse_space("milestones=0:1"), "step")
    with pytest.raises(SpecError, match="gamma=0.0 is out of range"):
        check_space([adam], parse_space("gamma=0:1"), "step")


NO_LR = '''
import torch


class NoLr(torch.optim.Optimizer):
    def __init__(self, params, eps=1e-3):
        super().__init__(params, {"eps": eps})

    def step(self, closure=None):
        pass
'''


def test_schedule_checked_against_the_study_before_any_trial(tmp_path):
    (tmp_path / "nolr.py").write_text(NO_LR)
    no_lr = get_optimizer(f"{tmp_path / 'nolr.py'}:NoLr")
    with pytest.raises(UsageError, match=r"^--schedule needs a learning rate; .*nolr.py:NoLr has none\.$"):
        check_schedule([no_lr], "cosine", check_space([no_lr], parse_space("eps=1e-4:1e-2"), "cosine"), 50)
    check_schedule([no_lr], "constant", {}, 50)  # no schedule: nothing to check
    adam = get_optimizer("adam")
    with pytest.raises(UsageError, match="exceeds the learning rate 1e-05"):
        check_schedule([adam], "cosine(min_lr=1e-3)", resolve_space({}, "cosine"), 50)
    check_schedule([adam], "cosine(min_lr=1e-3)", resolve_space(parse_space("lr=1e-2:1:log"), "cosine"), 50)
    with pytest.raises(UsageError, match="leaves nothing of a 50-step budget"):
        check_schedule([adam], "warmup-cosine", resolve_space(parse_space("warmup=0:50"), "warmup-cosine"), 50)


def test_schedule_is_part_of_the_study_name():
    problem, adam, proto = get_problem("rosenbrock"), get_optimizer("adam"), get_protocol("tpe")
    dims = resolve_space(parse_space(""))
    space = [dims.get("lr") or parse_space("lr=1e-5:10:log")["lr"]]

    def name(schedule, space=space):
        return study_name(problem, adam, proto, 100, space, "float64", Recipe(schedule or "constant"))

    assert name(None) == name("constant") and "schedule" not in name(None)  # studies from before keep their name
    assert name("cosine") == name("cosine(min_lr=0.0)") != name("linear")
    searched = [*space, resolve_space(parse_space("warmup=0:0.3"), "warmup-cosine")["schedule.warmup"]]
    assert name("warmup-cosine", searched).endswith("|schedule=warmup-cosine(min_lr=0.0)")  # searched: not fixed


def _check_outputs(out, optimizers=("adam", "sgd-momentum")):
    (record,) = json.loads((out / "manifest.json").read_text())["tuning"]
    assert record["schedule"] == "warmup-cosine"
    studies = {s["optimizer"]: s for s in record["studies"]}
    assert sorted(studies) == sorted(optimizers)
    summary = load_summary(out)
    for opt, study in studies.items():
        assert study["schedule"] == "warmup-cosine" and study["study"].endswith("|schedule=warmup-cosine(min_lr=0.0)")
        warmup = study["best_params"]["schedule.warmup"]
        assert 0 <= warmup <= 0.3
        assert study["best_schedule"] == schedule_for("warmup-cosine", {"schedule.warmup": warmup}).label
        rows = summary[summary["optimizer"] == opt]
        assert len(rows) == 2 and set(rows["schedule"]) == {study["best_schedule"]}
        assert set(rows["optimizer_label"]) == {f"{opt}+{study['best_schedule']}"}
        assert np.allclose(rows["lr"], study["best_params"]["lr"])
    return record


def test_tune_cli_with_a_schedule_and_searched_warmup(tmp_path):
    from optbench.cli.app import app

    out = tmp_path / "t"
    args = ["tune", "-p", "rosenbrock", "-o", "adam,sgd-momentum", "--schedule", "warmup-cosine", "--space",
            "warmup=0:0.3", "--trials", "20", "--steps", "50", "--seeds", "2", "--out", str(out)]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    assert "best schedule" in result.output and "warmup-cosine(warmup=" in result.output
    _check_outputs(out)


@pytest.mark.slow  # the installed script pays torch's and optuna's imports (~4 s on 2 cores)
def test_tune_script_with_a_schedule_in_worker_processes(tmp_path):
    out = tmp_path / "t"
    r = subprocess.run([shutil.which("optbench"), "tune", "-p", "rosenbrock", "-o", "adam,sgd-momentum",
                        "--schedule", "warmup-cosine", "--space", "warmup=0:0.3", "--trials", "20", "--steps", "50",
                        "--seeds", "2", "--workers", "2", "--out", str(out), "-q"],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    assert _check_outputs(out)["workers"] == 2


@pytest.mark.parametrize("extra, message", [
    (["--schedule", "warmup-cosin"], "Unknown schedule 'warmup-cosin'. Did you mean 'warmup-cosine'"),
    (["--schedule", "warmup-cosine", "--space", "warmpu=0:0.3"], "--space key 'warmpu' is not a hyperparameter "
     "of adam nor a parameter of schedule 'warmup-cosine'; valid keys: lr, beta1, beta2, eps, weight_decay, "
     "warmup, min_lr."),
    (["--schedule", "cosine,linear"], "--schedule takes one schedule for tuning (got 2)"),
])
def test_usage_errors_exit_2_with_one_sentence(tmp_path, extra, message):
    from cli_invoke import invoke

    r = invoke("tune", "-p", "rosenbrock", "-o", "adam", *extra, "--trials", "5", "--out", tmp_path / "t")
    assert r.exit_code == 2, r.stderr
    text = " ".join(r.stderr.split())
    assert text.startswith("Error: ") and message in text and "Traceback" not in r.stderr
    assert text.count(". ") <= 2 and text.endswith(".")  # one sentence (a "Did you mean" hint at most)
    assert not (tmp_path / "t").exists()  # rejected before any work


def test_suite_tune_table_takes_a_schedule(tmp_path):
    from optbench.cli.app import app
    from optbench.suite import load_suite

    suite = tmp_path / "s.toml"
    suite.write_text('[tune]\nproblems = ["rosenbrock"]\noptimizers = ["adam"]\ntrials = 12\nsteps = 30\nseeds = 1\n'
                     'schedule = "warmup-cosine"\nspace = "warmup=0:10"\n')
    assert load_suite(suite).tune["schedule"] == "warmup-cosine"
    out = tmp_path / "t"
    result = CliRunner().invoke(app, ["tune", "--suite", str(suite), "--out", str(out), "-q"])
    assert result.exit_code == 0, result.output
    (study,) = json.loads((out / "manifest.json").read_text())["tuning"][0]["studies"]
    assert study["schedule"] == "warmup-cosine" and study["best_schedule"].startswith("warmup-cosine(warmup=")
    assert isinstance(study["best_params"]["schedule.warmup"], int)
    suite.write_text('[tune]\nschedule = "warmup-cosin"\n')
    with pytest.raises(UsageError, match=r"s.toml:2: \[tune\]: schedule: Unknown schedule 'warmup-cosin'"):
        load_suite(suite)
