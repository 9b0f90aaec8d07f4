"""Contracts over the optimizer registry, and golden checks of every update rule.

- every entry builds, steps, and rejects bad hyperparameters naming the key;
- declared defaults equal the library's constructor defaults (except the name-implied ones);
- the loop engine reproduces torch.optim driven by hand, noise included, to 1e-12;
- the batched engine reproduces the loop engine for every rule, to 1e-8;
- the hand-written optimizers match their defining formulas computed here;
- every optimizer converges on a parabola; user classes load, and their failures are reported.
"""

from __future__ import annotations

import inspect
import math
import sys
import textwrap
import uuid

import numpy as np
import pytest
import torch

from optbench.engines.batched import run_batched, supports_batched
from optbench.engines.batched_rules import RULES
from optbench.engines.loop import AnalyticClosure, run_loop
from optbench.errors import SpecError, UserCodeError
from optbench.optimizers import get_optimizer, list_optimizers
from optbench.problems import get_problem
from optbench.problems.rng import NormalStream
from optbench.randomness import derive_seed

ENTRIES = [e for e in list_optimizers() if not e.unsupported]  # unsupported ones: tests/test_catalogue.py
NAMES = [e.name for e in ENTRIES]
# curated entries (the generated pytorch_optimizer catalogue has its own contract in tests/test_catalogue.py)
CURATED = [e.name for e in ENTRIES if not e.generated]
BATCHED = [e.name for e in ENTRIES if e.batched]

# Defaults that differ from the library class on purpose: the registry name implies them.
NAME_IMPLIED = {("sgd-momentum", "momentum"): 0.9, ("nag", "momentum"): 0.9, ("nag", "nesterov"): True}


def _entry(name):
    return next(e for e in ENTRIES if e.name == name)


# ---- independent closed forms (not optbench's) ---------------------------------------------------

def rosenbrock(x):
    return 100.0 * (x[1] - x[0] ** 2) ** 2 + (1.0 - x[0]) ** 2


def rosenbrock_grad(x):
    a, b = float(x[0]), float(x[1])
    return torch.tensor([-400.0 * a * (b - a * a) - 2.0 * (1.0 - a), 200.0 * (b - a * a)], dtype=torch.float64)


def rosenbrock_hessian(x):
    a, b = float(x[0]), float(x[1])
    return torch.tensor([[1200.0 * a * a - 400.0 * b + 2.0, -400.0 * a], [-400.0 * a, 200.0]], dtype=torch.float64)


def valley100(x):
    return 0.5 * (x[0] ** 2 + 100.0 * x[1] ** 2)


# ---- 1. every entry builds, steps and validates ----------------------------------------------------

def test_registry_is_populated():
    for name in ["sgd", "sgd-momentum", "nag", "adam", "adamw", "rmsprop", "adagrad", "adadelta", "adamax",
                 "nadam", "radam", "lbfgs", "lion", "newton", "spsa", "forward-grad"]:
        assert name in NAMES
    for entry in ENTRIES:
        assert entry.doc and entry.params, entry.name
        if entry.batched:
            assert entry.batched in RULES, f"{entry.name}: rule {entry.batched!r} is not defined"


@pytest.mark.parametrize("name", CURATED)
@pytest.mark.parametrize("problem_spec", ["valley(kappa=1)", "rosenbrock"])
def test_builds_and_steps(name, problem_spec):
    problem = get_problem(problem_spec)
    opt = get_optimizer(name)
    trace = run_loop(problem, opt, seed=0, steps=5)
    assert trace.status == ["done"]
    assert trace.end_step.tolist() == [5]
    assert np.isfinite(trace.loss).all() and np.isfinite(trace.coords).all()
    assert not np.array_equal(trace.coords[0], trace.coords[-1]), f"{name} did not move"
    assert trace.loss[-1, 0] < trace.loss[0, 0] or name in {"spsa", "forward-grad"}, (name, trace.loss[:, 0])


def _bad_cases(entry):
    params = entry.params
    cases = []
    if "lr" in params:
        cases += [("lr=-1", "lr"), ("lr=0", "lr"), ("lr='fast'", "lr"), ("lr=True", "lr"), ("lr=float('nan')", "lr")]
    for key in ("momentum", "dampening", "alpha", "rho", "beta"):
        p = params.get(key)
        if p is not None and p.valid == "in [0, 1)":
            cases += [(f"{key}=1.0", key), (f"{key}=-0.1", key), (f"{key}='x'", key)]
    if "betas" in params:
        cases += [("betas=(1.5, 0.9)", "betas"), ("betas=(-0.1, 0.9)", "betas"),
                  ("betas=0.9", "betas"), ("betas=('a', 0.9)", "betas")]
        if max(params["betas"].default) < 1:  # PNM's β₂ = 1 by default (a coefficient ≥ 0, not a decay)
            cases += [("betas=(0.9, 1.0)", "betas")]
    for key in ("weight_decay", "eps"):
        if key in params:
            cases += [(f"{key}=-1e-3", key)]
    for key, p in params.items():
        if p.types == (bool,):
            cases += [(f"{key}=1", key), (f"{key}='yes'", key)]
    cases += [("lrr=0.1" if "lr" in params else "bogus=1", "Unknown key")]
    return cases


BAD = [(e.name, kw, frag) for e in ENTRIES for kw, frag in _bad_cases(e)]


@pytest.mark.parametrize("name, kwargs, fragment", BAD, ids=[f"{n}-{k}" for n, k, _ in BAD])
def test_rejects_bad_hyperparameters(name, kwargs, fragment):
    with pytest.raises(SpecError) as info:
        get_optimizer(f"{name}({kwargs})")
    message = str(info.value)
    assert fragment in message
    assert name in message


def test_unknown_key_suggests_and_lists():
    with pytest.raises(SpecError, match=r"Did you mean 'lr'\?.*Valid keys: amsgrad, betas, eps, lr, weight_decay"):
        get_optimizer("adam(lrr=0.1)")
    with pytest.raises(SpecError, match=r"Did you mean 'momentum'"):
        get_optimizer("sgd(momentun=0.9)")


def test_unknown_optimizer_suggests():
    with pytest.raises(SpecError, match=r"Unknown optimizer 'adamm'.*Did you mean 'adam'"):
        get_optimizer("adamm")


def test_error_messages_name_the_value():
    with pytest.raises(SpecError, match=r"lr=-1 is out of range; it must be > 0"):
        get_optimizer("adam(lr=-1)")
    with pytest.raises(SpecError, match=r"momentum=1.0 is out of range; it must be in \[0, 1\)"):
        get_optimizer("sgd-momentum(momentum=1.0)")
    with pytest.raises(SpecError, match=r"amsgrad=1 has the wrong type; expected True/False"):
        get_optimizer("adam(amsgrad=1)")


def test_config_fills_defaults_and_labels():
    cfg = get_optimizer("adam(lr=1e-2, betas=[0.8, 0.9])")
    assert cfg.hyperparams == {"lr": 0.01, "betas": (0.8, 0.9), "eps": 1e-8, "weight_decay": 0.0, "amsgrad": False}
    assert cfg.label == "adam(betas=[0.8, 0.9], lr=0.01)" or cfg.label == "adam(betas=(0.8, 0.9), lr=0.01)"
    assert cfg.lr == 0.01
    assert get_optimizer("sgd(lr=1)").hyperparams["lr"] == 1.0 and isinstance(
        get_optimizer("sgd(lr=1)").hyperparams["lr"], float)
    assert cfg.with_hyperparams(lr=0.5).lr == 0.5
    with pytest.raises(SpecError, match="lr"):
        cfg.with_hyperparams(lr=-0.5)


# ---- 2. declared defaults are the library's defaults ------------------------------------------------

@pytest.mark.parametrize("name", NAMES)
def test_declared_defaults_match_library(name):
    entry = _entry(name)
    signature = inspect.signature(entry.resolve_class()).parameters
    for key, param in entry.params.items():
        assert key in signature, f"{name}: {key!r} is not a constructor argument of {entry.target}"
        expected = NAME_IMPLIED.get((name, key), signature[key].default)
        same = param.default == expected and isinstance(param.default, bool) == isinstance(expected, bool)
        assert same, (name, key, param.default, expected)


def test_name_implied_defaults_reach_the_constructor():
    param = torch.nn.Parameter(torch.zeros(2, dtype=torch.float64))
    for name, momentum, nesterov in [("sgd", 0.0, False), ("sgd-momentum", 0.9, False), ("nag", 0.9, True)]:
        cfg = get_optimizer(name)
        opt = cfg.entry.build([param], cfg.hyperparams)
        group = opt.param_groups[0]
        assert (group["momentum"], group["nesterov"], group["lr"]) == (momentum, nesterov, 1e-3)


# ---- 3. the loop engine reproduces torch.optim driven by hand ---------------------------------------

TORCH_CASES = [
    ("sgd(lr=1e-3)", torch.optim.SGD, {"lr": 1e-3}),
    ("sgd-momentum(lr=1e-3)", torch.optim.SGD, {"lr": 1e-3, "momentum": 0.9}),
    ("nag(lr=1e-3)", torch.optim.SGD, {"lr": 1e-3, "momentum": 0.9, "nesterov": True}),
    ("sgd(lr=1e-3, momentum=0.5, dampening=0.3, weight_decay=0.1)", torch.optim.SGD,
     {"lr": 1e-3, "momentum": 0.5, "dampening": 0.3, "weight_decay": 0.1}),
    ("adagrad(lr=0.1)", torch.optim.Adagrad, {"lr": 0.1}),
    ("adagrad(lr=0.1, lr_decay=0.05, initial_accumulator_value=0.2, weight_decay=0.1)", torch.optim.Adagrad,
     {"lr": 0.1, "lr_decay": 0.05, "initial_accumulator_value": 0.2, "weight_decay": 0.1}),
    ("rmsprop(lr=1e-2)", torch.optim.RMSprop, {"lr": 1e-2}),
    ("rmsprop(lr=1e-3, centered=True, momentum=0.5)", torch.optim.RMSprop,
     {"lr": 1e-3, "centered": True, "momentum": 0.5}),
    ("adadelta", torch.optim.Adadelta, {}),
    ("adam(lr=1e-2)", torch.optim.Adam, {"lr": 1e-2}),
    ("adam(lr=1e-2, amsgrad=True, weight_decay=0.1)", torch.optim.Adam,
     {"lr": 1e-2, "amsgrad": True, "weight_decay": 0.1}),
    ("adamw(lr=1e-2)", torch.optim.AdamW, {"lr": 1e-2}),
    ("adamax(lr=1e-2)", torch.optim.Adamax, {"lr": 1e-2}),
    ("nadam(lr=1e-2)", torch.optim.NAdam, {"lr": 1e-2}),
    ("nadam(lr=1e-2, decoupled_weight_decay=True, weight_decay=0.1)", torch.optim.NAdam,
     {"lr": 1e-2, "decoupled_weight_decay": True, "weight_decay": 0.1}),
    ("radam(lr=1e-3)", torch.optim.RAdam, {"lr": 1e-3}),
    ("lbfgs(lr=0.5, max_iter=3)", torch.optim.LBFGS, {"lr": 0.5, "max_iter": 3}),
]
TORCH_PROBLEMS = [("rosenbrock", rosenbrock, (-1.2, 1.0), 0.0),
                  ("valley(kappa=100)", valley100, (-2.0, 0.5), 0.0),
                  ("rosenbrock(noise=0.1)", rosenbrock, (-1.2, 1.0), 0.1)]


def torch_reference(cls, kwargs, fn, start, noise, seed, steps):
    """torch.optim on x ∈ R², loss by backward, the run's Gaussian gradient noise added after backward: one
    sample ξ_t per step, which every closure call of the step shares (L-BFGS evaluates several points), with
    loss values f(x) + ⟨ξ_t, x − x_t⟩ (the sample model of optbench.problems.analytic)."""
    x = torch.nn.Parameter(torch.tensor(start, dtype=torch.float64))
    opt = cls([x], **kwargs)
    stream = NormalStream([seed], 2, torch_dtype=torch.float64) if noise else None
    sample = {}

    def closure():
        opt.zero_grad()
        loss = fn(x)
        loss.backward()
        if stream is None:
            return loss
        x.grad.add_(sample["xi"])
        return loss.detach() + torch.dot(sample["xi"], x.detach() - sample["x_t"])

    losses, points = [], []
    for t in range(steps + 1):
        with torch.no_grad():
            losses.append(float(fn(x)))
            points.append(x.detach().clone())
        if t == steps:
            break
        if stream is not None:
            sample.update(xi=noise * stream.next()[0], x_t=x.detach().clone())
        if cls is torch.optim.LBFGS:
            opt.step(closure)
        else:
            closure()
            opt.step()
    return np.array(losses), torch.stack(points).numpy()


@pytest.mark.parametrize("spec, cls, kwargs", TORCH_CASES, ids=[c[0] for c in TORCH_CASES])
@pytest.mark.parametrize("problem_spec, fn, start, noise", TORCH_PROBLEMS, ids=[p[0] for p in TORCH_PROBLEMS])
def test_loop_engine_matches_torch_optim(spec, cls, kwargs, problem_spec, fn, start, noise):
    steps, seed = (8 if cls is torch.optim.LBFGS else 40), 3
    problem = get_problem(problem_spec)
    trace = run_loop(problem, get_optimizer(spec), seed=seed, steps=steps)
    losses, points = torch_reference(cls, kwargs, fn, start, noise, seed, steps)
    assert trace.status == ["done"]
    np.testing.assert_allclose(trace.coords[:, 0, :], points, rtol=1e-12, atol=1e-300)
    np.testing.assert_allclose(trace.loss[:, 0], losses, rtol=1e-12, atol=1e-300)


def test_noise_changes_the_trajectory_and_depends_on_seed():
    problem = get_problem("rosenbrock(noise=0.1)")
    opt = get_optimizer("adam(lr=1e-2)")
    a, b, c = (run_loop(problem, opt, seed=s, steps=10) for s in (0, 0, 1))
    exact = run_loop(get_problem("rosenbrock"), opt, seed=0, steps=10)
    np.testing.assert_array_equal(a.coords, b.coords)
    # far above rounding (adam normalises a gradient of ~200, so σ = 0.1 moves the points by ~1e-5)
    assert np.abs(a.coords[1:] - c.coords[1:]).max() > 1e-7
    assert np.abs(a.coords[1:] - exact.coords[1:]).max() > 1e-7


# ---- 4. the batched engine reproduces the loop engine ----------------------------------------------

BASE_LR = {"sgd": 1e-3, "sgd-momentum": 1e-3, "nag": 1e-3, "adagrad": 0.1, "rmsprop": 1e-2, "adadelta": 1.0,
           "adam": 1e-2, "adamw": 1e-2, "adamax": 1e-2, "nadam": 1e-2, "radam": 1e-2, "lion": 1e-2, "newton": 0.5,
           "lars": 1e-3, "lamb": 1e-2, "novograd": 1e-2, "sm3": 0.1, "adopt": 1e-2,
           "schedulefreeadamw": 1e-2, "muon": 0.02, "shampoo": 1e-2, "prodigy": 1.0,
           "schedulefreesgd": 1e-2, "schedulefreeradam": 1e-2, "mars": 3e-3, "adai": 1e-2, "adams": 1e-2,
           "dualadam": 1e-2, "avagrad": 0.1, "splus": 1.0, "apollodqn": 1e-2, "adagc": 1e-2,
           "dadaptadagrad": 1.0, "dadaptadam": 1.0, "dadaptadan": 1.0, "dadaptlion": 1.0, "dadaptsgd": 1.0,
           "spsa": 1e-3, "forward-grad": 1e-3, "gravity": 1e-2, "dash": 1e-2, "kron": 1e-2,
           "sophiah": 1e-2, "adahessian": 0.05, "lbfgs": 1.0,
           # rules_adamlike.py
           "adabelief": 1e-2, "yogi": 1e-2, "adamp": 1e-2, "laprop": 1e-2, "qhadam": 1e-2, "diffgrad": 1e-2,
           "padam": 1e-2, "adamod": 1e-2, "adamc": 1e-2, "exadam": 1e-2, "adasmooth": 1e-2, "po.radam": 1e-2,
           "po.adamax": 1e-2,
           # rules_momentum.py
           "tiger": 0.01,
           "signsgd": 0.01,
           "sgdw": 0.001,
           "qhm": 0.001,
           "aggmo": 0.001,
           "pid": 0.001,
           "pnm": 0.001,
           "adapnm": 0.01,
           "sgdp": 0.001,
           "po.adadelta": 1.0,
           "kate": 0.1,
           "vsgd": 0.01,
           "msvag": 0.001,
           # rules_recent.py
           "adan": 1e-2, "ademamix": 1e-2, "simplifiedademamix": 1e-2, "grams": 1e-2, "grokfastadamw": 1e-2,
           "adamwsn": 1e-2, "ano": 1e-2, "apollo": 1e-2, "bcos": 1e-2, "focus": 1e-2,
           "conda": 1e-2, "sara": 1e-2,
           # rules_memory.py
           "sm3-paper": 0.1, "galore": 1e-2, "fira": 1e-2, "spam": 1e-2, "nero": 1e-2,
           "emonavi": 1e-2, "emofact": 1e-2, "emolynx": 1e-2,
           # rules_factored.py
           "came": 1e-2, "adafactor-paper": 0.05, "adalite": 1e-2, "adanorm": 1e-2, "adatam": 1e-2, "aida": 1e-2,
           "adashift": 1e-2, "alice": 1e-2, "flashadamw": 1e-2,
           # rules_pertensor.py
           "lamb-paper": 1e-2, "stableadamw": 1e-2, "scion": 1e-2, "scionlight": 1e-2,
           "stablespam": 1e-2, "sgdsai": 1e-3, "tam": 1e-3, "racs": 1e-2, "rose": 1e-3,
           "scalableshampoo": 1e-3,
           # rules_groups.py
           "madgrad": 1e-2, "ranger": 1e-3, "adabound": 1e-2, "adafactor": 1e-2,
           "a2grad": 1e-2, "accsgd": 3e-3, "asgd": 1e-2,
           # (ranger: no lr makes progress in 25 steps at its defaults, whose first five steps climb the averaged
           # gradient: engines/rules_groups.py; a2grad takes no lr)
           # rules_soap.py
           "soap": 1e-2,
           "swats": 1e-2,
           "fromage": 1e-2,
           "amos": 1e-2,
           "adamg": 1.0,
           "ftrl": 0.1,
           "srmm": 1e-4,
           }
BATCH_PROBLEMS = ["rosenbrock(noise=0.1)", "saddle", "noisy-quadratic(dim=5, batch_size=4)", "beale(start='random')"]


def assert_same_runs(batched, loops, rtol=1e-8):
    """Each run of a batched trace equals its loop run: status, end step, rows up to the end, end values."""
    for k, loop in enumerate(loops):
        assert batched.status[k] == loop.status[0], k
        assert batched.end_step[k] == loop.end_step[0], k
        rows = batched.steps < loop.end_step[0]  # rows after a run ends are not reported (runner drops them)
        np.testing.assert_allclose(batched.loss[rows, k], loop.loss[rows, 0], rtol=rtol, atol=1e-300, err_msg=str(k))
        if loop.coords is not None:
            np.testing.assert_allclose(batched.coords[rows, k], loop.coords[rows, 0], rtol=rtol, atol=1e-300,
                                       err_msg=str(k))
        np.testing.assert_allclose(batched.grad_norm[rows, k], loop.grad_norm[rows, 0], rtol=1e-6, atol=1e-300)
        np.testing.assert_allclose(batched.end_loss[k], loop.end_loss[0], rtol=rtol, equal_nan=True)
        np.testing.assert_allclose(batched.end_x[k], loop.end_x[0], rtol=rtol, atol=1e-300, equal_nan=True)


def compare_engines(problem_spec, specs, seeds, steps, record_every=1, rtol=1e-8):
    problem = get_problem(problem_spec)
    configs = [get_optimizer(s) for s in specs]
    assert all(supports_batched(c) for c in configs)
    batched = run_batched(problem, configs, seeds, steps, record_every)
    loops = [run_loop(problem, c, seed=s, steps=steps, record_every=record_every) for c, s in zip(configs, seeds)]
    assert_same_runs(batched, loops, rtol)
    return batched


# torch.optim.LBFGS's inner products are BLAS dot calls on [d] vectors (MKL: the summation order depends on the
# vector's length and memory alignment); the rule's row sums over [K, d] round differently in the last bit from
# d = 3 on, and 25 steps of up to 20 quasi-Newton iterations on a noisy problem amplify that to ~3e-8 (measured;
# 2-D problems agree to the bit, tests/test_rules_lbfgs.py)
AMPLIFIED_ROUNDING = {("lbfgs", "noisy-quadratic(dim=5, batch_size=4)"): 1e-6}


@pytest.mark.parametrize("name", BATCHED)
@pytest.mark.parametrize("problem_spec", BATCH_PROBLEMS)
def test_batched_equals_loop(name, problem_spec):
    base = BASE_LR[name]
    lrs = [base * 0.3, base, base * 30]  # the largest often diverges or escapes: statuses must agree too
    specs, seeds = [], []
    for lr in lrs:
        for seed in (0, 7):
            specs.append(f"{name}(lr={lr!r})")
            seeds.append(seed)
    compare_engines(problem_spec, specs, seeds, steps=25, record_every=2,
                    rtol=AMPLIFIED_ROUNDING.get((name, problem_spec), 1e-8))


NON_DEFAULT = [
    ["adam(amsgrad=True)"],
    ["adam(weight_decay=0.1)", "adam(weight_decay=0.0)", "adam(betas=(0.5, 0.9), eps=1e-3)"],
    ["adam(amsgrad=True, weight_decay=0.05, betas=(0.8, 0.99))"],
    ["adamw(weight_decay=0.1)", "adamw(weight_decay=0.5, betas=(0.7, 0.9))"],
    ["adamw(amsgrad=True, weight_decay=0.1)"],
    ["rmsprop(centered=True, momentum=0.9)", "rmsprop(centered=True, momentum=0.0, alpha=0.9)"],
    ["rmsprop(momentum=0.5, weight_decay=0.01)", "rmsprop(momentum=0.0, eps=1e-3)"],
    ["sgd(momentum=0.9, dampening=0.5)", "sgd(momentum=0.0)", "sgd(momentum=0.5, weight_decay=0.1)"],
    ["sgd(momentum=0.9, nesterov=True, weight_decay=0.1)", "sgd(momentum=0.5, nesterov=True)"],
    ["nag(weight_decay=0.1)", "nag(momentum=0.3)"],
    ["sgd-momentum(dampening=0.3)"],
    ["adagrad(lr_decay=0.1, initial_accumulator_value=0.1, weight_decay=0.1)", "adagrad(eps=1e-3)"],
    ["adadelta(rho=0.5, weight_decay=0.1)", "adadelta(eps=1e-3)"],
    ["adamax(weight_decay=0.1)", "adamax(betas=(0.5, 0.9))"],
    ["nadam(decoupled_weight_decay=True, weight_decay=0.1)", "nadam(decoupled_weight_decay=True, momentum_decay=0.1)"],
    ["nadam(weight_decay=0.1, momentum_decay=0.01)", "nadam(betas=(0.8, 0.99))"],
    ["radam(decoupled_weight_decay=True, weight_decay=0.1)"],
    ["radam(weight_decay=0.1, betas=(0.8, 0.99))", "radam(betas=(0.9, 0.5))"],
    ["lion(weight_decay=0.1)", "lion(weight_decay=0.5, betas=(0.5, 0.9))"],
    ["lion(weight_decouple=False, weight_decay=0.1)"],
    ["lion(fixed_decay=True, weight_decay=0.01)"],
    ["newton(damping=0.5)", "newton(damping=0.0)", "newton(damping=10.0)"],
    ["lars(momentum=0.0)", "lars(momentum=0.5, dampening=0.3)", "lars(weight_decay=0.1, trust_coefficient=0.1)"],
    ["lars(nesterov=True)", "lars(nesterov=True, momentum=0.0)"],
    ["lamb(weight_decay=0.1)", "lamb(betas=(0.5, 0.9), eps=1e-3)", "lamb(weight_decay=0.0)"],
    ["lamb(weight_decouple=False, weight_decay=0.1)"],
    ["lamb(fixed_decay=True, weight_decay=0.01, grad_averaging=False)"],
]


@pytest.mark.parametrize("specs", NON_DEFAULT, ids=[s[0] for s in NON_DEFAULT])
def test_batched_equals_loop_non_default(specs):
    name = specs[0].split("(")[0]
    base = BASE_LR[name]
    with_lr = []
    for spec in specs:
        for lr in (base, base * 3):
            with_lr.append(spec[:-1] + f", lr={lr!r})" if "(" in spec else f"{spec}(lr={lr!r})")
    seeds = [i % 3 for i in range(len(with_lr))]
    compare_engines("rosenbrock(noise=0.1)", with_lr, seeds, steps=25)


def test_batched_group_of_one_and_record_every():
    # K = 1 and a record interval that does not divide the steps: the last step is still recorded
    batched = compare_engines("valley(kappa=100)", ["adam(lr=0.05)"], [0], steps=23, record_every=5)
    assert batched.steps.tolist() == [0, 5, 10, 15, 20, 23]


# ---- 5. hand-written optimizers against their formulas ----------------------------------------------

def test_newton_solves_a_quadratic_in_one_step():
    problem = get_problem("valley(kappa=100, angle=30)")
    trace = run_loop(problem, get_optimizer("newton"), seed=0, steps=1)
    assert trace.loss[0, 0] > 1.0
    assert trace.loss[1, 0] < 1e-24
    np.testing.assert_allclose(trace.coords[1, 0], [0.0, 0.0], atol=1e-12)


def test_newton_with_damping_follows_the_formula():
    lr, damping, steps = 0.7, 0.5, 4
    trace = run_loop(get_problem("rosenbrock"), get_optimizer(f"newton(lr={lr}, damping={damping})"), seed=0,
                     steps=steps)
    x = torch.tensor([-1.2, 1.0], dtype=torch.float64)
    for t in range(steps):
        np.testing.assert_allclose(trace.coords[t, 0], x.numpy(), rtol=1e-10)
        matrix = rosenbrock_hessian(x) + damping * torch.eye(2, dtype=torch.float64)
        x = x - lr * torch.linalg.solve(matrix, rosenbrock_grad(x))
    np.testing.assert_allclose(trace.coords[steps, 0], x.numpy(), rtol=1e-10)


@pytest.mark.parametrize("alpha, gamma", [(0.0, 0.0), (0.602, 0.101)])
def test_spsa_step_follows_the_formula(alpha, gamma):
    lr, c, seed, steps = 1e-3, 0.05, 5, 6
    spec = f"spsa(lr={lr}, c={c}, alpha={alpha}, gamma={gamma})"
    trace = run_loop(get_problem("rosenbrock"), get_optimizer(spec), seed=seed, steps=steps)
    generator = torch.Generator().manual_seed(derive_seed(seed, "directions"))
    x = torch.tensor([-1.2, 1.0], dtype=torch.float64)
    for t in range(1, steps + 1):
        np.testing.assert_allclose(trace.coords[t - 1, 0], x.numpy(), rtol=1e-12)
        a_t, c_t = lr / t**alpha, c / t**gamma
        delta = (torch.randint(0, 2, (2,), generator=generator) * 2 - 1).to(torch.float64)
        slope = (rosenbrock(x + c_t * delta) - rosenbrock(x - c_t * delta)) / (2 * c_t)
        x = x - a_t * slope * delta
    np.testing.assert_allclose(trace.coords[steps, 0], x.numpy(), rtol=1e-12)


def test_forward_gradient_step_follows_the_formula():
    lr, seed, steps = 1e-4, 2, 6
    trace = run_loop(get_problem("rosenbrock"), get_optimizer(f"forward-grad(lr={lr})"), seed=seed, steps=steps)
    generator = torch.Generator().manual_seed(derive_seed(seed, "directions"))
    x = torch.tensor([-1.2, 1.0], dtype=torch.float64)
    for t in range(steps):
        np.testing.assert_allclose(trace.coords[t, 0], x.numpy(), rtol=1e-12)
        v = torch.randn(2, generator=generator, dtype=torch.float64)
        x = x - lr * torch.dot(rosenbrock_grad(x), v) * v
    np.testing.assert_allclose(trace.coords[steps, 0], x.numpy(), rtol=1e-12)


def _mean_estimate(name, draws, x0, problem):
    """Average of the gradient estimates of ``draws`` single steps from x0: (x0 − x1) / lr."""
    cfg = get_optimizer(f"{name}(lr=1.0)")
    param = torch.nn.Parameter(x0.clone())
    opt = cfg.entry.build([param], cfg.hyperparams, seed=11)
    closure = AnalyticClosure(problem, param, None, None)
    estimates = torch.empty(draws, x0.numel(), dtype=torch.float64)
    for i in range(draws):
        with torch.no_grad():
            param.copy_(x0)
        opt.step(closure)
        estimates[i] = x0 - param.detach()
    return estimates


def test_forward_gradient_is_unbiased():
    problem = get_problem("rosenbrock")
    x0 = torch.tensor([-0.5, 0.7], dtype=torch.float64)
    g = rosenbrock_grad(x0)
    draws = 1500
    estimates = _mean_estimate("forward-grad", draws, x0, problem)
    # Var[(g·v) v_i] = |g|² + g_i² for v ~ N(0, I)
    std_err = ((g.norm() ** 2 + g**2) / draws).sqrt()
    assert ((estimates.mean(0) - g).abs() < 5 * std_err).all(), (estimates.mean(0), g)
    assert not torch.allclose(estimates[0], estimates[1])  # fresh directions every step


def test_spsa_is_unbiased_on_a_quadratic():
    # for a quadratic the central difference is exact, so E[(g·Δ)Δ] = g with Rademacher Δ
    problem = get_problem("valley(kappa=10, angle=20)")
    x0 = torch.tensor([0.8, -0.3], dtype=torch.float64)
    g = problem.grad(x0)
    draws = 2000
    estimates = _mean_estimate("spsa", draws, x0, problem)
    std_err = ((g.norm() ** 2 - g**2) / draws).sqrt()  # Var[(g·Δ)Δ_i] = Σ_{j≠i} g_j²
    assert ((estimates.mean(0) - g).abs() < 5 * std_err + 1e-12).all(), (estimates.mean(0), g)


def test_seeded_optimizers_depend_on_the_run_seed():
    problem = get_problem("rosenbrock")
    for name in ("spsa", "forward-grad"):
        opt = get_optimizer(f"{name}(lr=1e-4)")
        a, b, c = (run_loop(problem, opt, seed=s, steps=3) for s in (1, 1, 2))
        np.testing.assert_array_equal(a.coords, b.coords)
        assert not np.allclose(a.coords[1:], c.coords[1:])


# ---- 6. convergence table -------------------------------------------------------------------------

# (spec, steps): every registered optimizer must appear; all start at (-2, 0.5) on ½|x|², loss 2.125.
CONVERGENCE = {
    "sgd": ("sgd(lr=0.1)", 200), "sgd-momentum": ("sgd-momentum(lr=0.05)", 200), "nag": ("nag(lr=0.05)", 200),
    "adagrad": ("adagrad(lr=0.5)", 300), "rmsprop": ("rmsprop(lr=0.01)", 400),
    "adadelta": ("adadelta(lr=1.0, eps=1e-2)", 300), "adam": ("adam(lr=0.05)", 300), "adamw": ("adamw(lr=0.05)", 300),
    "adamax": ("adamax(lr=0.05)", 300), "nadam": ("nadam(lr=0.05)", 300), "radam": ("radam(lr=0.05)", 300),
    "lbfgs": ("lbfgs", 3), "lion": ("lion(lr=0.02, betas=(0.5, 0.5))", 300), "lars": ("lars(lr=0.05)", 200),
    "lamb": ("lamb(lr=0.05)", 300), "novograd": ("novograd(lr=0.05)", 300),
    "adafactor": ("adafactor(lr=0.05, relative_step=False, scale_parameter=False)", 300),
    "sm3": ("sm3(lr=0.5)", 300), "lamb-paper": ("lamb-paper(lr=0.05)", 300), "sm3-paper": ("sm3-paper(lr=0.5)", 300),
    "adafactor-paper": ("adafactor-paper(lr=0.1)", 200), "newton": ("newton", 1), "spsa": ("spsa(lr=0.2)", 100),
    "forward-grad": ("forward-grad(lr=0.1)", 150),
}


def test_convergence_table_covers_every_optimizer():
    assert set(CONVERGENCE) == set(CURATED)


@pytest.mark.parametrize("name", CURATED)
def test_converges_on_a_parabola(name):
    spec, steps = CONVERGENCE[name]
    trace = run_loop(get_problem("valley(kappa=1)"), get_optimizer(spec), seed=0, steps=steps)
    assert trace.status == ["done"]
    assert trace.loss[0, 0] == pytest.approx(2.125)
    assert trace.end_loss[0] < 1e-3, (spec, trace.end_loss[0])


# ---- 7. user optimizers ---------------------------------------------------------------------------

USER_SOURCE = '''
import torch


class MyOpt(torch.optim.Optimizer):
    """Plain gradient descent with a scale: x <- x - lr * scale * g."""

    def __init__(self, params, lr=0.1, scale=1.0):
        super().__init__(params, {"lr": lr, "scale": scale})

    @torch.no_grad()
    def step(self, closure=None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            for p in group["params"]:
                p.add_(p.grad, alpha=-group["lr"] * group["scale"])
        return loss


class NotAnOptimizer:
    pass
'''


def _check_user_optimizer(ref):
    cfg = get_optimizer(f"{ref}(lr=0.2, scale=0.5)")
    assert cfg.hyperparams == {"lr": 0.2, "scale": 0.5}
    assert cfg.entry.source == "user"
    trace = run_loop(get_problem("valley(kappa=1)"), cfg, seed=0, steps=3)
    # x_t = (1 − 0.1)^t x_0 on ½|x|²
    np.testing.assert_allclose(trace.coords[3, 0], np.array([-2.0, 0.5]) * 0.9**3, rtol=1e-12)
    with pytest.raises(SpecError, match="lr"):
        get_optimizer(f"{ref}(lr=-1)")
    with pytest.raises(SpecError, match=r"Unknown key 'scal'.*Did you mean 'scale'"):
        get_optimizer(f"{ref}(scal=2.0)")


def test_user_optimizer_from_relative_file(tmp_path, monkeypatch):
    (tmp_path / "opt.py").write_text(USER_SOURCE)
    monkeypatch.chdir(tmp_path)
    _check_user_optimizer("opt.py:MyOpt")


def test_user_optimizer_from_absolute_file(tmp_path):
    path = tmp_path / "my_opt.py"
    path.write_text(USER_SOURCE)
    _check_user_optimizer(f"{path}:MyOpt")


def test_user_optimizer_from_module(tmp_path, monkeypatch):
    package = f"optbench_test_pkg_{uuid.uuid4().hex[:8]}"
    (tmp_path / package).mkdir()
    (tmp_path / package / "__init__.py").write_text("")
    (tmp_path / package / "mod.py").write_text(USER_SOURCE)
    monkeypatch.syspath_prepend(str(tmp_path))
    try:
        _check_user_optimizer(f"{package}.mod:MyOpt")
    finally:
        for key in [k for k in sys.modules if k.startswith(package)]:
            del sys.modules[key]


def test_user_optimizer_errors(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "opt.py").write_text(USER_SOURCE)
    (tmp_path / "broken.py").write_text(textwrap.dedent('''
        import torch

        def helper():
            raise RuntimeError("boom in user code")

        helper()
    '''))
    with pytest.raises(SpecError, match="not a torch.optim.Optimizer subclass"):
        get_optimizer("opt.py:NotAnOptimizer")
    with pytest.raises(SpecError, match=r"has no class 'Missing'.*MyOpt"):
        get_optimizer("opt.py:Missing")
    with pytest.raises(SpecError, match="does not exist"):
        get_optimizer("nowhere.py:MyOpt")
    with pytest.raises(UserCodeError, match="boom in user code") as info:
        get_optimizer("broken.py:MyOpt")
    assert "RuntimeError: boom in user code" in info.value.user_traceback
    assert "helper()" in info.value.user_traceback and "broken.py" in info.value.user_traceback
    with pytest.raises(SpecError, match="Cannot import module"):
        get_optimizer(f"no_such_pkg_{uuid.uuid4().hex[:8]}.mod:MyOpt")


def test_user_module_raising_on_import(tmp_path, monkeypatch):
    package = f"optbench_test_bad_{uuid.uuid4().hex[:8]}"
    (tmp_path / f"{package}.py").write_text("import no_such_dependency_xyz\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(UserCodeError, match="no_such_dependency_xyz") as info:
        get_optimizer(f"{package}:MyOpt")
    assert "ModuleNotFoundError" in info.value.user_traceback


def test_math_sanity():
    # the closed forms above agree with optbench's problems at a point (guards the references themselves)
    x = torch.tensor([0.3, -0.7], dtype=torch.float64)
    assert float(rosenbrock(x)) == pytest.approx(float(get_problem("rosenbrock").loss(x)), rel=1e-14)
    np.testing.assert_allclose(rosenbrock_grad(x), get_problem("rosenbrock").grad(x), rtol=1e-13)
    assert math.isclose(float(valley100(x)), float(get_problem("valley(kappa=100)").loss(x)), rel_tol=1e-14)
