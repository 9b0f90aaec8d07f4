"""The D-Adaptation rules (optbench.engines.rules_dadapt): each against its method's formulas written here in numpy,
independently of pytorch_optimizer, and against the class (the loop engine) on every branch of its options, on
analytic problems and on an MLP (tests/test_engine_contract.py covers the registry defaults).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from optbench.engines.batched import run_batched, stack_hyperparams
from optbench.engines.batched_rules import RULES
from optbench.engines.capabilities import engine_supports
from optbench.engines.layout import ParamLayout
from optbench.engines.loop import run_loop
from optbench.optimizers import get_optimizer
from optbench.problems import get_problem

START = np.array([-1.2, 1.0])  # rosenbrock's start
STEPS = 30


def _rosenbrock_grad(x):
    a, b = x
    return np.array([-2 * (1 - a) - 400 * a * (b - a * a), 200 * (b - a * a)])


@pytest.fixture
def float64_default():
    """The classes keep their statistics in torch's default dtype: float64 here, so the formulas in float64 apply
    to 1e-10 (the float32 statistics otherwise: test_float32_statistics_are_the_class_s)."""
    before = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    yield
    torch.set_default_dtype(before)


# ---- the methods' formulas, one step at a time, in float64 ---------------------------------------------------

def _dadapt_adam(lr=1.0, beta1=0.9, beta2=0.999, eps=1e-8, d0=1e-6):
    """D-Adaptation V3 Adam: r, s with √β₂ averaging, d̂ = r/((1 − √β₂)‖s‖₁); m carries dη."""
    x, d, r = START.copy(), d0, 0.0
    m, v, s = np.zeros(2), np.zeros(2), np.zeros(2)
    path, root = [x.copy()], np.sqrt(beta2)
    for _ in range(STEPS):
        g, step = _rosenbrock_grad(x), d * lr
        r = root * r + (1 - root) * step * g @ (s / (np.sqrt(v) + eps))
        m = beta1 * m + step * (1 - beta1) * g
        v = beta2 * v + (1 - beta2) * g * g
        s = root * s + step * (1 - root) * g
        d = max(d, r / ((1 - root) * np.abs(s).sum()))
        x = x - m / (np.sqrt(v) + eps)
        path.append(x.copy())
    return np.array(path), d


def _dadapt_sgd(lr=1.0, momentum=0.9, d0=1e-6):
    """D-Adaptation V3 SGD: steps dη = d·lr/‖g₀‖, d̂ = 2⟨Σ dη g, ·⟩/‖s‖₂, x averages z = x₀ − s."""
    x, d, r = START.copy(), d0, 0.0
    s, g0 = np.zeros(2), np.linalg.norm(_rosenbrock_grad(START))
    path = [x.copy()]
    for _ in range(STEPS):
        g = _rosenbrock_grad(x)
        step = d * lr / g0
        r += step * g @ s
        s = s + step * g
        d = max(d, 2 * r / np.linalg.norm(s))
        x = x + (1 - momentum) * ((START - s) - x)
        path.append(x.copy())
    return np.array(path), d


def _dadapt_lion(lr=1.0, beta1=0.9, beta2=0.999, d0=1e-6):
    """D-Adapted Lion: x moves by dη·sign(β₁m + (1 − β₁)g) before d grows to r/((1 − √β₂)‖s‖₁)."""
    x, d, r = START.copy(), d0, 0.0
    m, s = np.zeros(2), np.zeros(2)
    path, root = [x.copy()], np.sqrt(beta2)
    for _ in range(STEPS):
        g, step = _rosenbrock_grad(x), d * lr
        u = np.sign(beta1 * m + (1 - beta1) * g)
        x = x - step * u
        m = beta2 * m + (1 - beta2) * step * g
        r = root * r + (1 - root) * step * u @ s
        s = root * s + (1 - root) * step * u
        d = max(d, r / ((1 - root) * np.abs(s).sum()))
        path.append(x.copy())
    return np.array(path), d


def _dadapt_adagrad(lr=1.0, eps=0.0, d0=1e-6):
    """D-Adapted diagonal AdaGrad by dual averaging: d̂ = (Σ s²/a − Σ dη² g²/a)/‖s‖₁, x = x₀ − s/a."""
    x, d, gamma = START.copy(), d0, 0.0
    alpha, s = np.full(2, 1e-6), np.zeros(2)
    path = [x.copy()]
    for _ in range(STEPS):
        g, step = _rosenbrock_grad(x), d * lr
        alpha = alpha + g * g
        a = np.sqrt(alpha) + eps
        s = s + step * g
        gamma += step * step * (g * g / a).sum()
        d = max(d, ((s * s / a).sum() - gamma) / np.abs(s).sum())
        x = START - s / a
        path.append(x.copy())
    return np.array(path), d


def _dadapt_adan(lr=1.0, beta1=0.98, beta2=0.92, beta3=0.99, eps=1e-8, d0=1e-6, power=4):
    """D-Adapted Adan; ``power`` of the corrected gradient ĝ = g + β₂Δ that v averages (Adan's paper: 2)."""
    x, d, gamma = START.copy(), d0, 0.0
    m, n, v, s = np.zeros(2), np.zeros(2), np.zeros(2), np.zeros(2)
    previous = _rosenbrock_grad(START)
    path = [x.copy()]
    for _ in range(STEPS):
        g, step = _rosenbrock_grad(x), d * lr
        diff = g - previous
        m = beta1 * m + step * (1 - beta1) * g
        n = beta2 * n + step * (1 - beta2) * diff
        v = beta3 * v + (1 - beta3) * (g + beta2 * diff) ** power
        a = np.sqrt(v) + eps
        s = beta3 * s + step * (1 - beta3) * g
        gamma = beta3 * gamma + step * step * (1 - beta3) * (g * g / a).sum()
        d = max(d, ((s * s / a).sum() / (1 - beta3) - gamma) / np.abs(s).sum())
        x = x - m / a - beta2 * n / a
        previous = g
        path.append(x.copy())
    return np.array(path), d


FORMULAS = {"dadaptadam": _dadapt_adam, "dadaptsgd": _dadapt_sgd, "dadaptlion": _dadapt_lion,
            "dadaptadagrad": _dadapt_adagrad, "dadaptadan": _dadapt_adan}


# lr multipliers at which d grows well past d0 within STEPS on Rosenbrock (Adan's estimate grows slowly)
FORMULA_CASES = [(name, lr) for name in sorted(FORMULAS)
                 for lr in ((10.0, 20.0) if name == "dadaptadan" else (1.0, 0.5))]


@pytest.mark.parametrize("name, lr", FORMULA_CASES)
def test_rule_follows_the_formulas(float64_default, name, lr):
    problem = get_problem("rosenbrock")
    config = get_optimizer(f"{name}(lr={lr})")
    expected, d = FORMULAS[name](lr=lr)
    batched = run_batched(problem, [config], [0], STEPS, measure_cost=False).coords[:, 0]
    loop = run_loop(problem, config, 0, STEPS, measure_cost=False).coords[:, 0]
    # the formulas' own order of operations: 1e-16 rounding differences double with d at each step (to 1e-8
    # for DAdaptSGD here); a wrong term is an O(1) difference
    np.testing.assert_allclose(loop, expected, rtol=1e-6, err_msg="the formula is not the class's")
    np.testing.assert_allclose(batched, expected, rtol=1e-6)
    assert d > 5e-6  # d has grown from d0 = 1e-6: the estimate is exercised


def test_adan_rule_keeps_the_library_fourth_power(float64_default):
    """The library's v averages (ĝ²)², Adan's paper ĝ²: the rule follows the library."""
    problem = get_problem("rosenbrock")
    path = run_batched(problem, [get_optimizer("dadaptadan")], [0], STEPS, measure_cost=False).coords[:, 0]
    assert not np.allclose(path, _dadapt_adan(power=2)[0], rtol=1e-6)


@pytest.mark.parametrize("name, lr", FORMULA_CASES[::2])
def test_float32_statistics_are_the_class_s(name, lr):
    """Without a float64 default dtype the classes' statistics (and so d) are float32-accurate: the rule
    reproduces the class's displacement from the start to 1e-8, where the same rule with float64 statistics
    does not."""
    problem = get_problem("rosenbrock")
    config = get_optimizer(f"{name}(lr={lr})")
    loop = run_loop(problem, config, 0, STEPS, measure_cost=False).coords[:, 0] - START
    batched = run_batched(problem, [config], [0], STEPS, measure_cost=False).coords[:, 0] - START
    np.testing.assert_allclose(batched, loop, rtol=1e-8, atol=1e-300)
    before = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    try:
        wide = run_batched(problem, [config], [0], STEPS, measure_cost=False).coords[:, 0] - START
    finally:
        torch.set_default_dtype(before)
    assert not np.allclose(wide, loop, rtol=1e-8, atol=0)


# ---- batched == loop on every option branch -------------------------------------------------------------

VARIANTS = {
    "dadaptadam": ["dadaptadam(bias_correction=True, weight_decay=0.1)",
                   "dadaptadam(weight_decouple=True, weight_decay=0.1, growth_rate=1.5, betas=(0.5, 0.9))",
                   "dadaptadam(weight_decouple=True, fixed_decay=True, weight_decay=0.01, eps=1e-3)"],
    "dadaptsgd": ["dadaptsgd(momentum=0.0, weight_decay=0.1, growth_rate=1.2)",
                  "dadaptsgd(weight_decouple=True, weight_decay=0.1)",
                  "dadaptsgd(weight_decouple=True, fixed_decay=True, weight_decay=0.01, momentum=0.5)"],
    "dadaptlion": ["dadaptlion(weight_decay=0.1, betas=(0.5, 0.9))",
                   "dadaptlion(weight_decouple=True, weight_decay=0.1)",
                   "dadaptlion(weight_decouple=True, fixed_decay=True, weight_decay=0.01)"],
    "dadaptadagrad": ["dadaptadagrad(momentum=0.5, weight_decay=0.1, eps=1e-6)",
                      "dadaptadagrad(weight_decouple=True, weight_decay=0.1, growth_rate=1.5)",
                      "dadaptadagrad(weight_decouple=True, fixed_decay=True, weight_decay=0.01, momentum=0.9)"],
    "dadaptadan": ["dadaptadan(weight_decay=0.1, betas=(0.9, 0.9, 0.9))",
                   "dadaptadan(weight_decouple=True, weight_decay=0.1, growth_rate=1.5)",
                   "dadaptadan(growth_rate=1.01, eps=1e-3)"],
}
CASES = [spec for specs in VARIANTS.values() for spec in specs]


def _close(actual, expected, what):
    np.testing.assert_allclose(actual, expected, rtol=1e-8, atol=1e-300, equal_nan=True, err_msg=what)


@pytest.mark.parametrize("problem_spec", ["beale", "rosenbrock(noise=0.1)", "noisy-quadratic(dim=5, batch_size=4)"])
@pytest.mark.parametrize("spec", CASES)
def test_variants_batched_equal_loop(spec, problem_spec):
    problem = get_problem(problem_spec)
    base = get_optimizer(spec)
    configs = [base, base.with_hyperparams(lr=3.0), base, base.with_hyperparams(lr=0.3)]
    seeds = [0, 0, 7, 7]
    assert all(engine_supports("batched", problem, c) for c in configs)
    batched = run_batched(problem, configs, seeds, 30, 1, measure_cost=False)
    for k, (config, seed) in enumerate(zip(configs, seeds)):
        loop = run_loop(problem, config, seed, 30, 1, measure_cost=False)
        assert batched.status[k] == loop.status[0] and batched.end_step[k] == loop.end_step[0], config.label
        rows = batched.steps < loop.end_step[0]
        _close(batched.loss[rows, k], loop.loss[rows, 0], f"{config.label} loss")
        _close(batched.end_x[k], loop.end_x[0], f"{config.label} final parameters")


MLP = "mnist-mlp(width=6, depth=2, batch_size=20, train_size=120, test_size=40, precision='float64', eval_every=3)"




@pytest.mark.parametrize("spec", CASES)
def test_variants_on_a_network(network_data, spec):
    """Several parameter tensors: the per-tensor sums in the class's order, d shared by all of them."""
    from optbench.engines.network import run_network, run_network_batched

    problem = get_problem(MLP)
    base = get_optimizer(spec)
    configs, seeds = [base, base.with_hyperparams(lr=0.5)], [0, 7]
    assert all(engine_supports("batched", problem, c) for c in configs)
    batched = run_network_batched(problem, configs, seeds, 6, 1)
    for k, (config, seed) in enumerate(zip(configs, seeds)):
        loop = run_network(problem, config, seed, 6, 1)
        assert batched.status[k] == loop.status[0] and batched.end_step[k] == loop.end_step[0], config.label
        _close(batched.loss[:, k], loop.loss[:, 0], f"{config.label} loss")
        _close(batched.extra["test_loss"][:, k], loop.extra["test_loss"][:, 0], f"{config.label} test loss")


def test_a_zero_gradient_does_not_move_its_configuration():
    """With ‖s‖₁ = 0 (and DAdaptSGD's ‖g₀‖ = 0) the classes return before the update, as the rules do for that
    configuration while the others of the group move on."""
    for name in sorted(FORMULAS):
        config = get_optimizer(name)
        param = torch.nn.Parameter(torch.tensor([0.5, -1.0], dtype=torch.float64))
        optimizer = config.entry.build([param], config.hyperparams, dtype=torch.float64, seed=0)
        param.grad = torch.zeros_like(param)
        optimizer.step()
        assert torch.equal(param.detach(), torch.tensor([0.5, -1.0], dtype=torch.float64)), name

        rule = RULES[config.entry.batched]
        hp = stack_hyperparams([config, config], torch.float64, "cpu")
        x = torch.tensor([[0.5, -1.0], [0.5, -1.0]], dtype=torch.float64)
        state = rule.init(x, hp)
        state["layout"] = ParamLayout.vector(2)
        rule.step(x, torch.tensor([[0.0, 0.0], [1.0, 2.0]], dtype=torch.float64), state, hp, 1)
        assert torch.equal(x[0], torch.tensor([0.5, -1.0], dtype=torch.float64)), name
        assert not torch.equal(x[1], x[0]), name


@pytest.mark.parametrize("name", sorted(FORMULAS))
def test_schedule_and_clipping(name):
    """The engine's scheduled lr (a multiplier here, decaying to 0: the classes' ``lr > 0`` test) and clipped
    gradient reach the rule as the loop engine hands them to the class."""
    from optbench.engines.recipe import Recipe

    problem, recipe = get_problem("beale"), Recipe(schedule="cosine", clip_norm=1.0)
    configs, seeds = [get_optimizer(name), get_optimizer(name).with_hyperparams(lr=3.0)], [0, 7]
    batched = run_batched(problem, configs, seeds, 20, 1, recipe=recipe, measure_cost=False)
    for k, (config, seed) in enumerate(zip(configs, seeds)):
        loop = run_loop(problem, config, seed, 20, 1, recipe=recipe, measure_cost=False)
        _close(batched.loss[:, k], loop.loss[:, 0], f"{config.label} loss")
        _close(batched.end_x[k], loop.end_x[0], f"{config.label} final parameters")
