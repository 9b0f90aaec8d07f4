"""Schedules: torch's sequence and the closed-form formula agree; the batched engine with schedules and
clipping reproduces the loop engine; a recipe is part of a run's identity but constant changes nothing."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
import torch
from torch.optim import lr_scheduler as L

from optbench.engines.batched import run_batched
from optbench.engines.loop import run_loop
from optbench.engines.recipe import Recipe
from optbench.errors import SpecError, UsageError
from optbench.optimizers import get_optimizer
from optbench.problems import get_problem
from optbench.schedules import get_schedule, list_schedules, lr_factors, lr_sequence
from optbench.sweep.spec import Run, Sweep

T, BASE, MIN = 40, 0.1, 1e-3


def torch_loop(make, steps=T, base=BASE):
    """The lr of each update in a training loop that steps ``make(opt)`` after every optimizer step."""
    p = torch.nn.Parameter(torch.ones(2))
    opt = torch.optim.SGD([p], lr=base)
    sched = make(opt)
    out = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for t in range(steps):
            out.append(opt.param_groups[0]["lr"])
            p.grad = torch.zeros_like(p)
            opt.step()
            if t + 1 < steps:
                sched.step()
    return out


def cos(t, n, lo=MIN, hi=BASE):
    return lo + (hi - lo) * (1 + math.cos(math.pi * t / n)) / 2


W = 4  # warmup=0.1 of T=40
FORMULAS = {
    "constant": lambda t: BASE,
    f"cosine(min_lr={MIN})": lambda t: cos(t, T),
    f"linear(min_lr={MIN})": lambda t: BASE + (MIN - BASE) * t / T,
    "step(milestones=(10, 0.5), gamma=0.5)": lambda t: BASE * 0.5 ** ((t >= 10) + (t >= 20)),
    f"warmup-cosine(warmup=0.1, min_lr={MIN})": lambda t: BASE * (t + 1) / (W + 1) if t < W else cos(t - W, T - W),
    f"warmup-linear(warmup={W}, min_lr={MIN})": (
        lambda t: BASE * (t + 1) / (W + 1) if t < W else BASE + (MIN - BASE) * (t - W) / (T - W)),
    "warmup-constant(warmup=0.1)": lambda t: BASE * (t + 1) / (W + 1) if t < W else BASE,
}
TORCH = {
    f"cosine(min_lr={MIN})": lambda o: L.CosineAnnealingLR(o, T, MIN),
    f"linear(min_lr={MIN})": lambda o: L.LinearLR(o, 1.0, MIN / BASE, T),
    "step(milestones=(10, 0.5), gamma=0.5)": lambda o: L.MultiStepLR(o, [10, 20], 0.5),
    "one-cycle": lambda o: L.OneCycleLR(o, BASE, total_steps=T, cycle_momentum=False),
}


@pytest.mark.parametrize("spec", list(FORMULAS))
def test_sequence_matches_formula(spec):
    got = lr_sequence(spec, T, BASE)
    assert len(got) == T
    np.testing.assert_allclose(got, [FORMULAS[spec](t) for t in range(T)], rtol=1e-12, atol=1e-15)


@pytest.mark.parametrize("spec", list(TORCH))
def test_sequence_matches_torch_training_loop(spec):
    assert list(lr_sequence(spec, T, BASE)) == torch_loop(TORCH[spec])


def test_one_cycle_formula_endpoints():
    seq = lr_sequence("one-cycle(pct_start=0.25, div_factor=10.0, final_div_factor=100.0)", T, BASE)
    assert seq[0] == pytest.approx(BASE / 10)
    assert max(seq) == pytest.approx(BASE) and int(np.argmax(seq)) == 9  # pct_start·T − 1
    assert seq[-1] == pytest.approx(BASE / 10 / 100)
    assert np.all(np.diff(seq[:10]) > 0) and np.all(np.diff(seq[9:]) < 0)


def test_every_schedule_is_tested_and_factors_scale():
    named = {get_schedule(s).name for s in [*FORMULAS, *TORCH]}
    assert named == set(list_schedules())
    assert lr_factors("cosine", 10)[0] == 1.0 and lr_factors("cosine", 10)[-1] < 0.03


@pytest.mark.parametrize("spec, match", [
    ("cosin", "Unknown schedule 'cosin'. Did you mean 'cosine'"),
    ("warmup-cosine(warmup=1.5)", "warmup=1.5 is out of range"),
    ("step(gamma=2.0)", "gamma=2.0 is out of range"),
    ("cosine(decay=1)", "Unknown key 'decay'"),
    ("one-cycle(anneal='exp')", "anneal='exp' is out of range"),
])
def test_bad_specs(spec, match):
    with pytest.raises(SpecError, match=match):
        get_schedule(spec)


def test_bad_values_for_a_budget():
    with pytest.raises(SpecError, match="exceeds the learning rate"):
        lr_sequence("cosine(min_lr=1.0)", T, BASE)
    with pytest.raises(SpecError, match="leaves nothing"):
        lr_sequence("warmup-linear(warmup=50)", T, BASE)


def _close(a, b):
    np.testing.assert_allclose(a.end_x, b.end_x, rtol=1e-8, atol=1e-12)
    np.testing.assert_allclose(a.loss, b.loss, rtol=1e-8, atol=1e-12, equal_nan=True)


RECIPES = [
    ("warmup-cosine(warmup=0.1, min_lr=1e-4)", None, None),
    ("one-cycle", 0.5, None),
    ("step(milestones=(0.3,))", None, 0.2),
    ("linear", 0.3, 0.1),
]


@pytest.mark.parametrize("opt", ["sgd-momentum", "adam", "adamw(weight_decay=0.1)", "nadam", "radam",
                                 "adagrad", "rmsprop", "lion"])
@pytest.mark.parametrize("schedule, clip_norm, clip_value", RECIPES)
def test_batched_equals_loop_with_recipes(opt, schedule, clip_norm, clip_value):
    problem = get_problem("noisy-quadratic(dim=5, batch_size=4)")
    configs = [get_optimizer(opt).with_hyperparams(lr=lr) for lr in (0.02, 0.05, 0.05)]
    seeds = [0, 1, 2]
    kw = dict(recipe=Recipe(schedule, clip_norm, clip_value), measure_cost=False)
    group = run_batched(problem, configs, seeds, 30, 1, **kw)
    for k, (config, seed) in enumerate(zip(configs, seeds)):
        ref = run_loop(problem, config, seed, 30, 1, **kw)
        np.testing.assert_allclose(group.end_x[k], ref.end_x[0], rtol=1e-8, atol=1e-12)
        np.testing.assert_allclose(group.loss[:, k], ref.loss[:, 0], rtol=1e-8, atol=1e-12)


def test_loop_schedule_sets_the_optimizer_lr():
    """SGD on ½x² from x = 1: x_T = Π (1 − η_t), with η_t from the schedule."""
    problem = get_problem("valley(kappa=1)")
    seq = lr_sequence("cosine", 20, 0.1)
    trace = run_loop(problem, get_optimizer("sgd(lr=0.1)"), 0, 20, 1, recipe=Recipe("cosine"))
    x0 = problem.start_points([0])[0].numpy()
    h = problem.grad(torch.ones(problem.dim, dtype=torch.float64)).numpy() / 1.0  # gradient of x at x = 1
    expected = x0 * np.prod([1 - eta * h for eta in seq], axis=0)
    np.testing.assert_allclose(trace.end_x[0], expected, rtol=1e-10)


def test_clip_norm_bounds_the_step():
    problem = get_problem("valley(kappa=100)")
    trace = run_loop(problem, get_optimizer("sgd(lr=1.0)"), 0, 1, 1, recipe=Recipe(clip_norm=0.01),
                     measure_cost=False)
    start = problem.start_points([0])[0].numpy()
    assert np.linalg.norm(trace.end_x[0] - start) == pytest.approx(0.01, rel=1e-4)


def test_recipe_identity_and_labels():
    problem, opt = get_problem("valley"), get_optimizer("adam(betas=(0.8, 0.9))")
    plain = Run(problem, opt, 0, 100, 1)
    assert "recipe" not in plain.identity
    assert Run(problem, opt, 0, 100, 1, recipe=Recipe("constant")).run_id == plain.run_id
    cosine = Run(problem, opt, 0, 100, 1, recipe=Recipe("cosine"))
    assert cosine.run_id != plain.run_id
    assert Run(problem, opt, 0, 100, 1, recipe=Recipe("cosine(min_lr=0.0)")).run_id == cosine.run_id
    assert Run(problem, opt, 0, 100, 1, recipe=Recipe(clip_norm=1.0)).run_id not in (plain.run_id, cosine.run_id)
    assert plain.optimizer_label == "adam(betas=(0.8, 0.9))"
    assert cosine.optimizer_label == "adam(betas=(0.8, 0.9))+cosine"
    label = Run(problem, opt, 0, 100, 1, recipe=Recipe("warmup-cosine(warmup=0.05)", clip_value=0.5)).optimizer_label
    assert label == "adam(betas=(0.8, 0.9))+warmup-cosine(warmup=0.05)+clip-value=0.5"


def test_sweep_schedule_axis_and_validation():
    sweep = Sweep([get_problem("valley")], [get_optimizer("sgd"), get_optimizer("adam")], seeds=[0, 1],
                  steps=50, schedules=["constant", "cosine", "warmup-linear(warmup=5)"])
    runs = sweep.expand()
    assert len(runs) == 2 * 3 * 2 and len({r.run_id for r in runs}) == 12
    with pytest.raises(UsageError, match="--clip-norm"):
        Sweep([get_problem("valley")], [get_optimizer("sgd")], recipe=Recipe(clip_norm=-1.0)).expand()
    with pytest.raises(UsageError, match="network"):
        Sweep([get_problem("valley")], [get_optimizer("sgd")], recipe=Recipe(label_smoothing=0.1)).expand()
    with pytest.raises(SpecError, match="leaves nothing"):
        Sweep([get_problem("valley")], [get_optimizer("sgd")], steps=10,
              schedules=["warmup-cosine(warmup=20)"]).expand()


def test_every_schedule_is_listed_with_its_formula():
    """`optbench list schedules` describes each built-in schedule (SCHEDULE_DOCS is its one description)."""
    from optbench.cli.listing import _registry_rows
    from optbench.schedules import SCHEDULE_DOCS, SCHEDULE_PARAMS

    assert set(SCHEDULE_DOCS) == set(SCHEDULE_PARAMS.names())
    assert all(row["doc"] for row in _registry_rows("schedules"))
