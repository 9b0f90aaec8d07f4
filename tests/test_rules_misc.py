"""DualAdam, AvaGrad, SPlus, ApolloDQN and AdaGC (engines/rules_misc.py): each rule against the update formula its
docstring states (the paper's, with the library's documented changes), written here independently in numpy
float64 for one or two steps on a tiny input, and against the class on the
branches the registry defaults of tests/test_engine_contract.py do not reach (decay variants, the inverse-Adam
switch, Apollo's belief rebound and stable decay, AdaGC after its warm-up, a schedule during Apollo's warm-up)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from optbench.cost import probe_state_bytes_per_param
from optbench.engines.batched import run_batched, stack_hyperparams
from optbench.engines.batched_rules import RULES
from optbench.engines.capabilities import engine_supports
from optbench.engines.layout import ParamLayout
from optbench.engines.loop import run_loop
from optbench.engines.network import run_network, run_network_batched
from optbench.engines.recipe import Recipe
from optbench.optimizers import get_optimizer
from optbench.problems import get_problem

RTOL = 1e-8
X0 = np.array([0.7, -1.3, 0.2])
G1 = np.array([0.5, -2.0, 0.03])
G2 = np.array([-0.4, 1.5, 0.6])

# settings that take the branches the registry defaults do not
VARIANTS = {
    "dualadam": ["dualadam(lr=0.01, switch_rate=0.2, weight_decay=0.1, weight_decouple=True)",
                 "dualadam(lr=0.01, switch_rate=0.1, weight_decay=0.05, weight_decouple=True, fixed_decay=True)",
                 "dualadam(lr=0.01, weight_decay=0.1, betas=(0.5, 0.9))"],
    "avagrad": ["avagrad(lr=0.05, weight_decay=0.1, weight_decouple=False, betas=(0.5, 0.9))",
                "avagrad(lr=0.05, weight_decay=0.01, fixed_decay=True, eps=0.01)"],
    "splus": ["splus(lr=0.5, nonstandard_constant=0.1, weight_decay=0.1, weight_decouple=False, ema_rate=0.9)",
              "splus(lr=0.5, nonstandard_constant=0.1, weight_decay=0.01, fixed_decay=True, betas=(0.5, 0.99))"],
    "apollodqn": ["apollodqn(lr=0.01, rebound='belief', weight_decay=0.1, weight_decay_type='stable', warmup_steps=5)",
                  "apollodqn(lr=0.01, init_lr=None, weight_decay=0.05, weight_decay_type='decoupled', warmup_steps=3)",
                  "apollodqn(lr=0.01, weight_decay=0.1, warmup_steps=4, beta=0.5, eps=1e-3)"],
    "adagc": ["adagc(lr=0.01, warmup_steps=4, lambda_abs=0.5, lambda_rel=1.0, weight_decay=0.05, "
              "weight_decouple=False)",
              "adagc(lr=0.01, warmup_steps=1, lambda_abs=0.1, beta=0.5, weight_decay=0.01, fixed_decay=True)",
              "adagc(lr=0.01, warmup_steps=3, lambda_rel=0.5, weight_decay=0.0)"],
}
NAMES = sorted(VARIANTS)
MLP = "mnist-mlp(width=6, depth=2, batch_size=20, train_size=120, test_size=40, precision='float64', eval_every=3)"
CNN = "cifar10-cnn(channels=(3, 3, 4), hidden=(5,), batch_size=8, train_size=32, test_size=16, precision='float64', " \
      "eval_every=3)"


def _close(actual, expected, what):
    np.testing.assert_allclose(actual, expected, rtol=RTOL, atol=1e-300, equal_nan=True, err_msg=what)


def _steps(spec, grads, x0=X0):
    """The rule driven by hand: the points after each of ``grads`` (and the final state)."""
    config = get_optimizer(spec)
    rule = RULES[config.entry.batched]
    hp = stack_hyperparams([config], torch.float64, "cpu")
    x = torch.tensor(x0, dtype=torch.float64)[None].clone()
    state = rule.init(x, hp)
    state["layout"] = ParamLayout.vector(x.shape[-1])
    path = []
    for t, g in enumerate(grads, start=1):
        rule.step(x, torch.tensor(g, dtype=torch.float64)[None], state, hp, t)
        path.append(x[0].numpy().copy())
    return path, state, rule, hp


# ---- the papers' formulas -------------------------------------------------------------------------------

def test_dualadam_mixes_inverse_adam_then_switches_to_adam():
    lr, b1, b2, eps, s = 0.01, 0.9, 0.999, 1e-8, 0.3
    (x1, x2, x3), _, _, _ = _steps(f"dualadam(lr={lr}, switch_rate={s})", [G1, G2, G1])
    m, v = (1 - b1) * G1, (1 - b2) * G1**2
    D = np.sqrt(v / (1 - b2)) + eps
    r = 1 - s  # r_1 = 0.7 ≥ s: mixed
    _close(x1, X0 - lr * m / (1 - b1) * ((1 - r) / D + r * D), "step 1")
    m, v = b1 * m + (1 - b1) * G2, b2 * v + (1 - b2) * G2**2
    D = np.sqrt(v / (1 - b2**2)) + eps
    r = 1 - 2 * s  # 0.4 ≥ 0.3: mixed
    expected2 = x1 - lr * m / (1 - b1**2) * ((1 - r) / D + r * D)
    _close(x2, expected2, "step 2")
    m, v = b1 * m + (1 - b1) * G1, b2 * v + (1 - b2) * G1**2
    D = np.sqrt(v / (1 - b2**3)) + eps  # r_3 = 0.1 < 0.3: Adam
    _close(x3, expected2 - lr * m / (1 - b1**3) / D, "step 3 (Adam)")


def test_avagrad_steps_with_the_lagged_second_moment_and_global_gamma():
    lr, b1, b2, eps = 0.1, 0.9, 0.999, 0.1
    (x1, x2), state, _, _ = _steps(f"avagrad(lr={lr})", [G1, G2])
    _close(x1, X0, "no move at the first step")
    gamma1 = 1 / np.sqrt(np.mean((np.zeros(3) + eps) ** -2.0))  # r = √v₀/√(1 − β₂) + ε with v₀ = 0
    m2 = b1 * (1 - b1) * G1 + (1 - b1) * G2
    v1 = (1 - b2) * G1**2
    _close(x2, X0 - gamma1 * lr / (1 - b1**2) * m2 / (np.sqrt(v1) / np.sqrt(1 - b2) + eps), "step 2")
    rates = np.sqrt(v1) / np.sqrt(1 - b2**2) + eps
    _close(state["gamma"][0, 0].item(), 1 / np.sqrt(np.mean(rates**-2.0)), "γ₂")


def test_splus_sign_momentum_reports_the_debiased_average():
    lr, c, b1, rho, wd = 0.5, 0.1, 0.9, 0.9, 0.01
    (x1, x2), state, rule, hp = _steps(f"splus(lr={lr}, nonstandard_constant={c}, ema_rate={rho}, weight_decay={wd})",
                                       [G1, G2])
    eta = lr * c
    m = (1 - b1) * G1
    y1 = X0 - eta * np.sign(m)  # the iterate before the decoupled decay
    ema = (1 - rho) * y1
    _close(x1, y1 * (1 - wd * eta), "step 1")
    m = b1 * m + (1 - b1) * G2
    y2 = x1 - eta * np.sign(m)
    ema = rho * ema + (1 - rho) * y2
    _close(x2, y2 * (1 - wd * eta), "step 2")
    x = torch.tensor(x2)[None]
    _close(rule.reported(x, state, hp)[0].numpy(), ema / (1 - rho**2), "reported: e/(1 − ρᵗ)")


def test_apollo_quasi_newton_curvature_update():
    lr, init_lr, beta, eps, warmup = 0.01, 1e-5, 0.9, 1e-4, 10
    (x1, x2), state, _, _ = _steps(f"apollodqn(lr={lr}, warmup_steps={warmup})", [G1, G2])
    eps_c = eps / 0.01  # the 'constant' rebound's ε
    lr_t = [(lr - init_lr) * t / warmup + init_lr for t in (1, 2)]
    # step 1: d₀ = 0 and B₀ = 0, so B₁ = 0, the rectified curvature is σ = 0.01 and m₁ = g₁ (α₁ = 1)
    d1 = G1 / 0.01
    _close(x1, X0 - lr_t[0] * d1, "step 1")
    alpha = (1 - beta) / (1 - beta**2)
    y = G2 - G1  # g₂ − m₁
    m2 = G1 + alpha * y
    D = np.sum(d1**4) ** 0.25 + eps_c
    s = d1 / D
    B = -(alpha * np.dot(y / D, s) + 0.0) * s**2  # B₁ = 0
    _close(state["b"][0].numpy(), B, "curvature B₂")
    _close(x2, x1 - lr_t[1] * m2 / np.maximum(np.abs(B), 0.01), "step 2")


def test_adagc_clips_globally_in_warmup_then_per_tensor():
    lr, b1, b2, beta, eps, lam_abs, lam_rel, wd = 0.01, 0.9, 0.999, 0.98, 1e-8, 0.5, 1.05, 0.1
    (x1, x2), state, _, _ = _steps(f"adagc(lr={lr}, lambda_abs={lam_abs}, warmup_steps=2, weight_decay={wd})",
                                   [G1, G2])
    g1 = G1 * min(1.0, lam_abs / (np.linalg.norm(G1) + eps))
    gamma = np.linalg.norm(g1)
    m, v = (1 - b1) * g1, (1 - b2) * g1**2
    expected1 = X0 * (1 - wd * lr) - lr / (1 - b1) * m / (np.sqrt(v) / np.sqrt(1 - b2) + eps)
    np.testing.assert_allclose(x1, expected1, rtol=1e-6)  # the warm-up scale is float32, as the class's
    g2 = G2 * min(1.0, lam_rel * gamma / np.linalg.norm(G2))
    gamma = beta * gamma + (1 - beta) * np.linalg.norm(g2)
    m, v = b1 * m + (1 - b1) * g2, b2 * v + (1 - b2) * g2**2
    expected2 = x1 * (1 - wd * lr) - lr / (1 - b1**2) * m / (np.sqrt(v) / np.sqrt(1 - b2**2) + eps)
    np.testing.assert_allclose(x2, expected2, rtol=1e-6)
    np.testing.assert_allclose(state["gamma"][0, 0].item(), gamma, rtol=1e-6)


def test_adagc_warmup_norm_under_coupled_decay_is_the_classs_running_one():
    """Coupled decay: the class recomputes the global norm at each tensor, after decaying that tensor's gradient in
    place, so tensor l sees decayed gradients before it and raw ones after it."""
    from optbench.engines.rules_misc import _warmup_norm

    raw = torch.tensor([[3.0, 4.0, 12.0]], dtype=torch.float64)
    decayed = torch.tensor([[5.0, 1.0, 2.0]], dtype=torch.float64)
    expected = [np.sqrt(25 + 16 + 144), np.sqrt(25 + 1 + 144), np.sqrt(25 + 1 + 4)]
    np.testing.assert_allclose(_warmup_norm(raw, decayed, True)[0].numpy(), expected, rtol=1e-7)  # float32
    np.testing.assert_allclose(_warmup_norm(raw, decayed, False)[0].numpy(), [13.0] * 3)  # raw gradients, once


# ---- batched == loop on the branches the defaults do not reach -------------------------------------------

def _group(spec):
    config = get_optimizer(spec)
    return [config, config.with_hyperparams(lr=config.lr / 2)], [0, 7]


@pytest.mark.parametrize("spec", [s for name in NAMES for s in VARIANTS[name]])
@pytest.mark.parametrize("problem_spec", ["beale", "rosenbrock(noise=0.1)"])
def test_variants_batched_equal_loop(spec, problem_spec):
    problem = get_problem(problem_spec)
    configs, seeds = _group(spec)
    assert all(engine_supports("batched", problem, c) for c in configs)
    _analytic_group(problem, configs, seeds)


def test_apollo_warmup_under_a_schedule_starts_from_the_constructors_lr():
    """Apollo's warm-up interpolates to the lr it was built with (``self.lr``), the schedule moves the rest."""
    problem = get_problem("rosenbrock")
    configs, seeds = _group("apollodqn(lr=0.01, warmup_steps=6)")
    _analytic_group(problem, configs, seeds, Recipe(schedule="cosine"))


def _analytic_group(problem, configs, seeds, recipe=Recipe()):
    steps = 15
    batched = run_batched(problem, configs, seeds, steps, 1, recipe=recipe, measure_cost=False)
    for k, (config, seed) in enumerate(zip(configs, seeds)):
        loop = run_loop(problem, config, seed, steps, 1, recipe=recipe, measure_cost=False)
        assert batched.status[k] == loop.status[0] and batched.end_step[k] == loop.end_step[0], config.label
        rows = batched.steps < loop.end_step[0]
        _close(batched.loss[rows, k], loop.loss[rows, 0], f"{config.label} loss")
        _close(batched.coords[rows, k], loop.coords[rows, 0], f"{config.label} coordinates")
        _close(batched.end_x[k], loop.end_x[0], f"{config.label} final parameters")




NETWORK_VARIANTS = [s for name in NAMES if name != "splus" for s in VARIANTS[name]]


@pytest.mark.parametrize("spec", NETWORK_VARIANTS)
@pytest.mark.parametrize("problem_spec", [MLP, CNN])
def test_variants_on_networks_batched_equal_loop(network_data, spec, problem_spec):
    problem = get_problem(problem_spec)
    configs, seeds = _group(spec)
    assert all(engine_supports("batched", problem, c) for c in configs)
    batched = run_network_batched(problem, configs, seeds, 6, 1)
    for k, (config, seed) in enumerate(zip(configs, seeds)):
        loop = run_network(problem, config, seed, 6, 1)
        _close(batched.loss[:, k], loop.loss[:, 0], f"{config.label} loss")
        _close(batched.extra["test_loss"][:, k], loop.extra["test_loss"][:, 0], f"{config.label} test loss")


def test_splus_is_refused_on_networks(network_data):
    """SPlus reports its average (REPORTED), which the network engine does not provide: the loop runs it."""
    assert not engine_supports("batched", get_problem(MLP), get_optimizer("splus"))


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_rules_declare_the_state_their_class_keeps(name, dtype):
    for spec in [name, *VARIANTS[name]]:
        config = get_optimizer(spec)
        declared = RULES[config.entry.batched].slots_per_param(config.hyperparams, 5) * dtype.itemsize
        assert declared == probe_state_bytes_per_param(config, 5, dtype), spec


def test_gravity_follows_its_formula_with_the_documented_first_velocity():
    """Gravity by hand in numpy: v₀ ~ N(0, (α/η)²) drawn with normal_ from the generator seeded with
    step_seed(seed, 0) (what the class draws from torch's global generator inside its first step), then
    m = 1/‖g‖_∞, ζ = g/(1 + (g/m)²), β_t = (βt + 1)/(t + 2), v ← v + (1 − β_t)(ζ − v), x ← x − ηv."""
    from optbench.engines.step_rng import step_seed

    problem, lr, alpha, beta, seeds = get_problem("rosenbrock(start=(-1.2, 1.0))"), 1e-3, 0.05, 0.8, [3, 4]
    config = get_optimizer(f"gravity(lr={lr}, alpha={alpha}, beta={beta})")
    trace = run_batched(problem, [config] * 2, seeds, 3, 1, measure_cost=False)
    for k, seed in enumerate(seeds):
        x = np.array([-1.2, 1.0])
        gen = torch.Generator().manual_seed(step_seed(seed, 0))
        v = torch.empty(2, dtype=torch.float64).normal_(0.0, alpha / lr, generator=gen).numpy()
        for t in range(1, 4):
            g = np.array([-2 * (1 - x[0]) - 400 * x[0] * (x[1] - x[0] ** 2), 200 * (x[1] - x[0] ** 2)])
            m = 1.0 / np.abs(g).max()
            zeta = g / (1 + (g / m) ** 2)
            beta_t = (beta * t + 1) / (t + 2)
            v = v + (1 - beta_t) * (zeta - v)
            x = x - lr * v
            np.testing.assert_allclose(trace.coords[t, k], x, rtol=1e-12)
    assert not np.array_equal(trace.coords[1, 0], trace.coords[1, 1]), "each seed draws its own v₀"
