"""The engine contract: every registered optimizer × every problem kind × every engine.

An engine that accepts a configuration (``engines.capabilities.engine_supports``) reproduces the loop engine
(the reference, real optimizer objects) to 1e-8 relative in float64: loss, gradient norm and, where the trace
keeps them, final parameters (analytic) or test loss and mean train loss (networks). An engine that does not
accept it raises ``UsageError`` when handed it, ``--engine batched`` is refused with the same reason, and
``--engine auto`` picks the loop engine. The runner (``plan_groups``) and the tuner take the decision from the
same function, and the optimizer entries' capability flags agree with the needs their batched rules declare.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from optbench.engines.batched import run_batched
from optbench.engines.batched_numpy import run_batched_numpy
from optbench.engines.batched_numpy import supports as numpy_path_supports
from optbench.engines.batched_rules import CLOSURE, HESSIAN, LAYERS, NEED_DESCRIPTIONS, REPORTED, RULES, SEEDS
from optbench.engines.capabilities import choose_engine, engine_supports
from optbench.engines.loop import run_loop
from optbench.engines.network import run_network, run_network_batched
from optbench.engines.numpy_rules import RULES as NUMPY_RULES
from optbench.engines.recipe import Recipe
from optbench.errors import UsageError
from optbench.optimizers import get_optimizer, list_optimizers
from optbench.problems import get_problem

ENTRIES = [e for e in list_optimizers() if not e.unsupported]  # refused as a whole: tests/test_catalogue.py
NAMES = [e.name for e in ENTRIES]
RTOL = 1e-8

ANALYTIC = ["beale", "rosenbrock(noise=0.1)"]  # a deterministic landscape and a noisy one
MLP = "mnist-mlp(width=6, depth=2, batch_size=20, train_size=120, test_size=40, precision='float64', eval_every=3)"
CNN = "cifar10-cnn(channels=(3, 3, 4), hidden=(5,), batch_size=8, train_size=32, test_size=16, precision='float64', " \
      "eval_every=3)"
NETWORK_STEPS = 6

# Settings that take every branch of the layer-wise rules: coupled decay, no momentum, Nesterov, no averaging,
LAYERWISE_VARIANTS = {
    "lars": ["lars(lr=0.05, weight_decay=0.1, trust_coefficient=0.5, nesterov=True)",
             "lars(lr=0.05, momentum=0.0, weight_decay=0.01, trust_coefficient=0.2)"],
    "lamb": ["lamb(lr=0.01, weight_decouple=False, weight_decay=0.1)",
             "lamb(lr=0.01, fixed_decay=True, weight_decay=0.01, grad_averaging=False, betas=(0.5, 0.9))"],
    # and of the catalogue's rules: coupled and decoupled decay; warm-up, polynomial weights, AMSBound, C
    "adopt": ["adopt(lr=0.01, weight_decay=0.1, betas=(0.5, 0.9))",
              "adopt(lr=0.01, weight_decay=0.1, weight_decouple=True, fixed_decay=True)"],
    "schedulefreeadamw": ["schedulefreeadamw(lr=0.01, warmup_steps=5, weight_decay=0.05, r=0.5, weight_lr_power=1.0)",
                          "schedulefreeadamw(lr=0.01, ams_bound=True, decoupling_c=2, betas=(0.8, 0.99))"],
    # Muon: coupled decay on both groups, plain momentum, Moonlight's shape scale, another NS schedule and length
    "muon": ["muon(lr=0.02, weight_decouple=False, weight_decay=0.1, adamw_wd=0.1, nesterov=False)",
             "muon(lr=0.02, use_adjusted_lr=True, ns_steps=3, ns_coeffs='quintic', weight_decay=0.05, "
             "adamw_lr=0.01, adamw_betas=(0.8, 0.9))"],
    # Shampoo: momentum, coupled and decoupled decay, preconditioners recomputed every other step
    "shampoo": ["shampoo(lr=0.005, momentum=0.5, weight_decay=0.1, preconditioning_compute_steps=2)",
                "shampoo(lr=0.005, weight_decouple=True, fixed_decay=True, weight_decay=0.01, matrix_eps=1e-3)"],
    # Prodigy: bias correction, decoupled decay, safeguard warm-up, atan2 (eps=None), growth limit, β₃, d_coef
    "prodigy": ["prodigy(lr=1.0, bias_correction=True, weight_decay=0.1, d_coef=0.5)",
                "prodigy(lr=1.0, safeguard_warmup=True, eps=None, beta3=0.9, growth_rate=1.5, fixed_decay=True, "
                "weight_decay=0.01)"],
    # DASH: blocks smaller than the tensors (edge blocks, square and rectangular), two-sided and one-sided roots,
    # momentum with and without Nesterov, no first moment, eigh and Frobenius scaling, a later start, decay
    "dash": ["dash(lr=0.01, block_size=4, momentum=0.5, weight_decay=0.1, precondition_frequency=2, "
             "grafting_beta=0.9)",
             "dash(lr=0.01, betas=(0.0, 0.9), inverse_root_method='eigh', momentum=0.3, nesterov=False, "
             "start_preconditioning_step=3, correct_bias=False)",
             "dash(lr=0.01, block_size=3, matrix_scaling='frobenius', newton_steps=4)"],
}


@pytest.fixture(autouse=True)
def newton_schulz_in_float64(monkeypatch):
    """pytorch_optimizer's Muon runs Newton–Schulz in bfloat16 whatever the parameters' dtype (its helper's
    default; the batched rule does the same, engines.batched_rules_modern.NEWTON_SCHULZ_DTYPE): the contract
    compares both in float64. tests/test_modern_rules.py compares them unpatched, at bfloat16 accuracy."""
    import functools

    from pytorch_optimizer.optimizer.muon import base

    from optbench.engines import batched_rules_modern

    for name in ("zero_power_via_newton_schulz_5", "zero_power_via_gram_newton_schulz"):
        monkeypatch.setattr(base, name, functools.partial(getattr(base, name), dtype=torch.float64))
    monkeypatch.setattr(batched_rules_modern, "NEWTON_SCHULZ_DTYPE",
                        dict.fromkeys(batched_rules_modern.NEWTON_SCHULZ_DTYPE, torch.float64))




def _entry(name):
    return next(e for e in ENTRIES if e.name == name)


def _groups(name: str) -> list[tuple[list, list[int]]]:
    """(configs, seeds) groups the batched engine can take as one: the registry defaults at two learning rates
    and two seeds, plus the layer-wise variants (each its own group: their non-float settings differ)."""
    base = get_optimizer(name)
    configs = [base] if base.lr is None else [base, base.with_hyperparams(lr=base.lr * 3)]
    groups = [(configs + configs, [0] * len(configs) + [7] * len(configs))]
    for spec in LAYERWISE_VARIANTS.get(name, []):
        config = get_optimizer(spec)
        groups.append(([config, config.with_hyperparams(lr=config.lr / 2)], [0, 7]))
    return groups


def _close(actual, expected, what):
    np.testing.assert_allclose(actual, expected, rtol=RTOL, atol=1e-300, equal_nan=True, err_msg=what)


# ---- capabilities are declared once, on the rule ----------------------------------------------------

@pytest.mark.parametrize("name", NAMES)
def test_entry_flags_agree_with_the_needs_of_its_rule(name):
    entry = _entry(name)
    if entry.batched is None:
        return
    rule = RULES[entry.batched]
    assert rule.needs <= set(NEED_DESCRIPTIONS)
    assert entry.needs_hessian == (HESSIAN in rule.needs)
    assert entry.schedule_free == (REPORTED in rule.needs), f"{name}: schedule-free entries record a reported point"
    if entry.needs_closure:  # the loop engine's closure computes something the batched engine must supply
        assert rule.needs & {HESSIAN, CLOSURE}, f"{name} calls a closure but its rule declares no need for one"
    # random directions from the class's own generator, seeded from the run seed: the rule needs the run seeds
    # a seeded entry's rule draws from each run's own generator; a rule may also need the seeds to reproduce what
    # its class draws from torch's global generator, which the engines seed per run and step (Gravity's v₀)
    assert not entry.seeded or SEEDS in rule.needs, f"{name}: a seeded entry's rule needs the run seeds"


def test_every_rule_serves_an_entry():
    assert set(RULES) == {e.batched for e in ENTRIES if e.batched}


# ---- batched == loop wherever the batched engine accepts the configuration ----------------------------

def _refused(problem, configs, seeds, run):
    """The batched engine refuses: handed the group it raises UsageError; batched is refused; auto is loop."""
    for config in configs:
        with pytest.raises(UsageError, match="does not support"):
            choose_engine("batched", problem, config, {}, "cuda")
        assert choose_engine("auto", problem, config, {}, "cuda") == "loop"
    with pytest.raises(UsageError, match="does not support"):
        run(problem, configs, seeds, 3, 1)


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("problem_spec", ANALYTIC)
def test_analytic_batched_equals_loop_or_refuses(name, problem_spec):
    problem = get_problem(problem_spec)
    for configs, seeds in _groups(name):
        if all(engine_supports("batched", problem, c) for c in configs):
            _analytic_group(problem, configs, seeds)
        else:
            _refused(problem, configs, seeds, run_batched)


@pytest.mark.parametrize("name", [n for n in NAMES if _entry(n).batched in NUMPY_RULES])
@pytest.mark.parametrize("problem_spec", ANALYTIC + ["saddle(noise=0.2)", "ackley(dim=3, start='random')"])
def test_analytic_numpy_path_equals_loop(name, problem_spec):
    """The numpy path (engines.batched_numpy) of every rule ported to numpy, where it takes the group."""
    problem = get_problem(problem_spec)
    for configs, seeds in _groups(name):
        assert numpy_path_supports(problem, configs[0].entry.batched)
        _analytic_group(problem, configs, seeds, run_batched_numpy)


def _analytic_group(problem, configs, seeds, engine=run_batched):
    steps = 15
    batched = engine(problem, configs, seeds, steps, 1, measure_cost=False)
    for k, (config, seed) in enumerate(zip(configs, seeds)):
        loop = run_loop(problem, config, seed, steps, 1, measure_cost=False)
        assert batched.status[k] == loop.status[0] and batched.end_step[k] == loop.end_step[0], config.label
        rows = batched.steps < loop.end_step[0]  # rows after a run ends are not reported (runner drops them)
        _close(batched.loss[rows, k], loop.loss[rows, 0], f"{config.label} loss")
        _close(batched.coords[rows, k], loop.coords[rows, 0], f"{config.label} coordinates")
        _close(batched.grad_norm[rows, k], loop.grad_norm[rows, 0], f"{config.label} gradient norm")
        _close(batched.end_x[k], loop.end_x[0], f"{config.label} final parameters")


def _network_case(name, problem_spec):
    problem = get_problem(problem_spec)
    for configs, seeds in _groups(name):
        if all(engine_supports("batched", problem, c) for c in configs):
            _network_group(problem, configs, seeds)
        else:
            _refused(problem, configs, seeds, run_network_batched)


def _network_group(problem, configs, seeds):
    batched = run_network_batched(problem, configs, seeds, NETWORK_STEPS, 1)
    for k, (config, seed) in enumerate(zip(configs, seeds)):
        loop = run_network(problem, config, seed, NETWORK_STEPS, 1)
        assert np.array_equal(batched.steps, loop.steps)
        assert batched.status[k] == loop.status[0] and batched.end_step[k] == loop.end_step[0], config.label
        _close(batched.loss[:, k], loop.loss[:, 0], f"{config.label} loss")
        _close(batched.grad_norm[:, k], loop.grad_norm[:, 0], f"{config.label} gradient norm")
        for column in ("test_loss", "train_loss_avg"):  # functions of the parameters at evaluation steps
            _close(batched.extra[column][:, k], loop.extra[column][:, 0], f"{config.label} {column}")


@pytest.mark.parametrize("name", NAMES)
def test_network_batched_equals_loop_or_refuses(network_data, name):
    _network_case(name, MLP)


@pytest.mark.parametrize("name", sorted({e.name for e in ENTRIES if e.batched and LAYERS in RULES[e.batched].needs}))
def test_layerwise_rules_on_a_cnn(network_data, name):
    """Convolution kernels (ndim 4) next to biases (ndim 1): the per-tensor norms of each."""
    _network_case(name, CNN)


# ---- one decision for the runner and the tuner ----------------------------------------------------

def _run(problem, config, device, seed=0, **recipe):
    from optbench.engines.recipe import Recipe
    from optbench.sweep.spec import Run

    return Run(problem, config, seed, 5, 1, "float64", device, Recipe(**recipe))


RECIPES = [{}, {"clip_norm": 1.0}, {"schedule": "cosine"}]


@pytest.mark.parametrize("engine", ["auto", "loop", "batched"])
@pytest.mark.parametrize("device", ["cpu", "cuda"])
def test_plan_groups_takes_the_capability_decision(network_data, engine, device):
    """For every optimizer, problem kind and recipe, plan_groups runs what choose_engine says, or refuses."""
    from optbench.sweep.plan import plan_groups

    for problem in (get_problem(ANALYTIC[0]), get_problem(MLP)):
        for name in NAMES:
            for recipe in RECIPES:
                run = _run(problem, get_optimizer(name), device, **recipe)
                try:
                    expected = choose_engine(engine, problem, run.optimizer, run.recipe, device, group_size=1)
                except UsageError as error:
                    with pytest.raises(UsageError, match="does not support"):
                        plan_groups([run], engine)
                    assert engine == "batched", str(error)
                    continue
                assert plan_groups([run], engine) == [(expected, [run])], (problem.kind, name, recipe)


@pytest.mark.parametrize("name, recipe, device, engine, expected", [
    ("lamb", {}, "cuda", "auto", "batched"),  # layer-wise rules run batched on networks, correctly
    ("lars", {}, "cpu", "batched", "batched"),
    ("adam", {}, "cpu", "auto", "loop"),  # one network configuration on a CPU: vmap is slower than a loop
    ("sgd", {}, "cpu", "batched", "batched"),
    ("adam", {"clip_norm": 1.0}, "cuda", "auto", "loop"),
    ("adam", {"clip_norm": 1.0}, "cpu", "batched", "does not implement clip_norm"),
    ("adam", {"label_smoothing": 0.1}, "cuda", "batched", "does not implement label_smoothing"),
    ("newton", {}, "cuda", "batched", "the Hessian of the loss"),
    ("newton", {}, "cuda", "auto", "loop"),
    ("spsa", {}, "cuda", "batched", "loss evaluations at other points within a step"),  # no closure on networks
    ("forward-grad", {}, "cuda", "batched", "the run seeds"),
    ("spsa", {}, "cuda", "auto", "loop"),
    ("lbfgs", {}, "cuda", "batched", "loss evaluations at other points within a step"),
    ("lbfgs(line_search_fn='strong_wolfe')", {}, "cuda", "batched", "without a line search"),  # Rule.refuses
])
def test_network_engine_choices(network_data, name, recipe, device, engine, expected):
    from optbench.sweep.plan import plan_groups

    run = _run(get_problem(MLP), get_optimizer(name), device, **recipe)
    if expected in ("loop", "batched"):
        assert plan_groups([run], engine) == [(expected, [run])]
    else:
        with pytest.raises(UsageError, match=expected):
            plan_groups([run], engine)


@pytest.mark.parametrize("name, device, runs, expected", [
    ("adam", "cpu", 2, "batched"), ("adamw", "cpu", 16, "batched"),  # the fused update pays from K = 2 (measured)
    ("adam", "cpu", 1, "loop"), ("sgd-momentum", "cpu", 8, "loop"), ("rmsprop", "cpu", 8, "loop"),
    ("lamb", "cpu", 8, "loop"), ("sgd-momentum", "cuda", 8, "batched"), ("adam", "cuda", 1, "batched"),
])
def test_auto_batches_networks_only_where_it_pays(network_data, name, device, runs, expected):
    """``auto`` on networks: the measured crossover (engines.capabilities.batched_network_pays) decides each
    group by its rule, device and number of configurations; the tuner's per-configuration question (no group
    size) assumes a group that pays."""
    from optbench.engines.capabilities import batched_network_pays
    from optbench.sweep.plan import plan_groups

    problem, optimizer = get_problem(MLP), get_optimizer(name)
    group = [_run(problem, optimizer, device, seed=seed) for seed in range(runs)]
    items = plan_groups(group, "auto")
    assert {engine for engine, _ in items} == {expected}
    assert sum(len(g) for _, g in items) == runs
    assert batched_network_pays(optimizer, device, runs) == (expected == "batched")
    assert choose_engine("auto", problem, optimizer, (), device, group_size=runs) == expected


def test_the_tuner_takes_the_same_decision(network_data, tmp_path, monkeypatch):
    """``--engine batched`` on a network: the tuner runs the batched network engine (it used to fall back to
    loops), and refuses what the batched network engine does not implement, as ``optbench run`` does."""
    import optbench.engines.network as network
    from optbench.tuning import get_protocol, parse_space, tune_one

    calls = []

    def spy(problem, optimizers, *args, **kwargs):
        calls.append(len(optimizers))
        return run_network_batched(problem, optimizers, *args, **kwargs)

    monkeypatch.setattr(network, "run_network_batched", spy)
    options = dict(protocol=get_protocol("random"), trials=4, dims=parse_space(""), steps=3, batch=4,
                   engine="batched", device="cpu")
    result = tune_one(get_problem(MLP), get_optimizer("lamb"), out_dir=tmp_path / "a", **options)
    assert calls == [4] and sum(result.states.values()) == 4
    with pytest.raises(UsageError, match="does not implement label_smoothing"):
        tune_one(get_problem(MLP), get_optimizer("lamb"), out_dir=tmp_path / "b",
                 recipe=Recipe(label_smoothing=0.1), **options)
