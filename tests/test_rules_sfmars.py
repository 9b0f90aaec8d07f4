"""The batched rules of Schedule-Free SGD/RAdam (engines.rules_schedulefree) and MARS, Adai, AdamS
(engines.rules_variance): every option against the class (the engine contract's batched == loop, to 1e-8 in float64,
on analytic problems and, where the network engine takes the rule, an MLP and a CNN), and each rule against its
paper's formula, hand-computed here on a tiny input without the library."""

from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np
import pytest
import torch
from test_engine_contract import CNN, MLP, _analytic_group, _network_group

from optbench.engines import batched_rules_modern
from optbench.engines.batched import stack_hyperparams
from optbench.engines.batched_rules import RULES
from optbench.engines.capabilities import engine_supports
from optbench.engines.layout import ParamLayout
from optbench.optimizers import get_optimizer
from optbench.problems import get_problem

# every branch of each rule: weight-decay flags, AMSBound, warm-up, polynomial and lr weights, the SGD phase,
# MARS's types, optimize_1d, cautious masking and its 1-D AdamW group, Adai's dampening and stable decay
VARIANTS = {
    "schedulefreesgd": ["schedulefreesgd(lr=0.01, warmup_steps=5, weight_decay=0.05, r=0.5, weight_lr_power=1.0, "
                        "momentum=0.8)",
                        "schedulefreesgd(lr=0.05, weight_lr_power=0.0)"],
    "schedulefreeradam": ["schedulefreeradam(lr=0.01, betas=(0.8, 0.9), silent_sgd_phase=False, weight_decay=0.05, "
                          "r=0.5)",
                          "schedulefreeradam(lr=0.05, betas=(0.9, 0.9), weight_lr_power=0.0, eps=1e-3)"],
    "mars": ["mars(optimize_1d=True, gamma=0.1)",
             "mars(optimize_1d=True, mars_type='lion', weight_decouple=False, weight_decay=0.1, lr=0.01)",
             "mars(optimize_1d=True, cautious=True, ams_bound=True, fixed_decay=True, weight_decay=0.01)",
             "mars(lr_1d=0.01, weight_decay_1d=0.2, betas_1d=(0.8, 0.9), cautious=True, weight_decouple=False)",
             "mars(mars_type='shampoo', weight_decay=0.1, lr=0.01)",
             "mars(mars_type='shampoo', optimize_1d=True, eps=1e-4)",
             "mars(mars_type='lion', lr=0.01)"],
    "adai": ["adai(weight_decay=0.1, lr=0.01)",
             "adai(weight_decay=0.1, weight_decouple=True, stable_weight_decay=True, lr=0.01)",
             "adai(weight_decay=0.05, stable_weight_decay=True, dampening=0.5, betas=(0.2, 0.9), lr=0.01)",
             "adai(weight_decouple=True, fixed_decay=True, weight_decay=0.01, eps=0.1, lr=0.01)"],
    "adams": ["adams(weight_decouple=False, weight_decay=0.1, lr=0.01)",
              "adams(ams_bound=True, fixed_decay=True, weight_decay=0.01, betas=(0.8, 0.99), lr=0.01)",
              "adams(weight_decay=0.0, lr=0.01)"],
}
SPECS = [spec for specs in VARIANTS.values() for spec in specs]


@pytest.fixture
def newton_schulz_in_float64(monkeypatch):
    """MARS's shampoo type runs Newton–Schulz in bfloat16 (the library's default; the rule does the same): compare
    both in float64, as the engine contract does for Muon."""
    from pytorch_optimizer.optimizer import mars

    monkeypatch.setattr(mars, "zero_power_via_newton_schulz_5",
                        functools.partial(mars.zero_power_via_newton_schulz_5, dtype=torch.float64))
    monkeypatch.setattr(batched_rules_modern, "NEWTON_SCHULZ_DTYPE",
                        dict.fromkeys(batched_rules_modern.NEWTON_SCHULZ_DTYPE, torch.float64))


def _variant_groups(spec):
    config = get_optimizer(spec)
    return [config, config.with_hyperparams(lr=config.lr / 2)], [0, 7]


@pytest.mark.parametrize("spec", SPECS)
@pytest.mark.parametrize("problem_spec", ["beale", "rosenbrock(noise=0.1)"])
def test_sfmars_variants_equal_the_class_on_analytic_problems(spec, problem_spec):
    problem = get_problem(problem_spec)
    configs, seeds = _variant_groups(spec)
    assert all(engine_supports("batched", problem, c) for c in configs)
    _analytic_group(problem, configs, seeds)


@pytest.mark.parametrize("spec", [s for s in SPECS if not s.startswith("schedulefree")])
@pytest.mark.parametrize("network", [MLP, CNN], ids=["mlp", "cnn"])
def test_sfmars_variants_equal_the_class_on_networks(network_data, newton_schulz_in_float64, spec,  # noqa: F811
                                                     network):
    """MARS per tensor (matrices, kernels and biases), Adai and AdamS over the whole model: batched == loop."""
    problem = get_problem(network)
    configs, seeds = _variant_groups(spec)
    assert all(engine_supports("batched", problem, c) for c in configs)
    _network_group(problem, configs, seeds)


@dataclass(frozen=True)
class _Network:
    """What the engine choice reads of a network problem (no dataset needed)."""

    kind: str = "mlp"
    label: str = "a network"
    features: tuple = ()
    loop_only: None = None


@pytest.mark.parametrize("name", ["schedulefreesgd", "schedulefreeradam"])
def test_schedule_free_rules_run_on_the_loop_engine_on_networks(name):
    """The network engine records no reported point: its batched engine refuses the REPORTED rules, auto loops."""
    from optbench.engines.capabilities import batched_unsupported_reason, choose_engine

    reason = batched_unsupported_reason(_Network(), get_optimizer(name))
    assert reason is not None and "reported point" in reason
    assert choose_engine("auto", _Network(), get_optimizer(name), (), "cuda") == "loop"


# ---- the papers' formulas, by hand ------------------------------------------------------------------------

def _rule_run(spec, x0, grad_fn, steps):
    """The rule of ``spec`` on one configuration from ``x0`` for ``steps`` steps of ``grad_fn(y)``: the trained
    points, the reported points (schedule-free) and the final state."""
    config = get_optimizer(spec)
    rule = RULES[config.entry.batched]
    hp = stack_hyperparams([config], torch.float64, "cpu")
    x = torch.tensor([x0], dtype=torch.float64)
    state = rule.init(x, hp)
    state["layout"] = ParamLayout.vector(x.shape[-1])
    trained, reported = [], []
    for t in range(1, steps + 1):
        rule.step(x, grad_fn(x), state, hp, t)
        trained.append(x[0].clone())
        if rule.reported is not None:
            reported.append(rule.reported(x, state, hp)[0].clone())
    return trained, reported, state


def _quadratic_grad(y):
    return torch.tensor([[1.0, 3.0, -2.0]], dtype=torch.float64) * y + 0.5


def _quadratic_grad_np(y):
    return np.array([1.0, 3.0, -2.0]) * y + 0.5


X0 = [1.0, -0.5, 0.4]  # no zero gradient (0/0 in the ε = 0 formulas)


def test_schedule_free_sgd_follows_the_paper():
    """Defazio et al. 2024, Algorithm 1 with the weighted average of §4 (c_{t+1} = w_t/Σ_{i≤t} w_i,
    w_t = t^r γ_max,t^p, γ_t the warmed-up lr) and decay at y: z ← z − γ_t(∇f(y) + λy),
    x ← (1 − c)x + cz, y ← (1 − β)z + βx. The rule keeps y and z only; its reported point must be x."""
    lr, beta, wd, r, power, warmup, steps = 0.1, 0.8, 0.05, 0.5, 1.0, 3, 6
    trained, reported, _ = _rule_run(f"schedulefreesgd(lr={lr}, momentum={beta}, weight_decay={wd}, r={r}, "
                                     f"weight_lr_power={power}, warmup_steps={warmup})", X0, _quadratic_grad, steps)
    x = z = y = np.array(X0)
    weight_sum, lr_max = 0.0, 0.0
    for t in range(1, steps + 1):
        gamma = lr * min(1.0, t / warmup)
        lr_max = max(lr_max, gamma)
        weight = t ** r * lr_max ** power
        weight_sum += weight
        c = weight / weight_sum
        z = z - gamma * (_quadratic_grad_np(y) + wd * y)
        x = (1 - c) * x + c * z
        y = (1 - beta) * z + beta * x
        np.testing.assert_allclose(trained[t - 1].numpy(), y, rtol=1e-12, atol=1e-14)
        np.testing.assert_allclose(reported[t - 1].numpy(), x, rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("silent", [True, False])
def test_schedule_free_radam_follows_rectified_adam(silent):
    """β₂ = 0.9: ρ∞ = 19 and ρ_t < 4 for t ≤ 4, so the first four steps are the SGD phase (no move when silent;
    the class's step of size 1 on the raw gradient otherwise) and step 5 is rectified: z ← z − η_t u with
    η_t = η r_t (Liu et al. 2020's r_t, no extra bias correction: it cancels the one of √v), u = g/(√v̂ + ε)."""
    lr, beta1, beta2, eps, steps = 0.1, 0.9, 0.9, 1e-8, 5
    trained, reported, _ = _rule_run(f"schedulefreeradam(lr={lr}, betas=({beta1}, {beta2}), eps={eps}, "
                                     f"silent_sgd_phase={silent}, weight_lr_power=2.0)", X0, _quadratic_grad, steps)
    rho_inf = 2 / (1 - beta2) - 1
    x = z = y = np.array(X0)
    v = np.zeros(3)
    weight_sum, lr_max = 0.0, -1.0
    for t in range(1, steps + 1):
        g = _quadratic_grad_np(y)
        v = beta2 * v + (1 - beta2) * g * g
        rho = rho_inf - 2 * t * beta2 ** t / (1 - beta2 ** t)
        if rho > 4:
            rect = np.sqrt((rho - 4) * (rho - 2) * rho_inf / ((rho_inf - 4) * (rho_inf - 2) * rho))
            gamma, u = lr * rect, g / (np.sqrt(v / (1 - beta2 ** t)) + eps)
        else:
            gamma, u = (0.0 if silent else 1.0), g
        lr_max = max(lr_max, gamma)
        weight_sum += lr_max ** 2
        c = lr_max ** 2 / weight_sum if weight_sum else 0.0
        z = z - gamma * u
        x = (1 - c) * x + c * z
        y = (1 - beta1) * z + beta1 * x
        np.testing.assert_allclose(trained[t - 1].numpy(), y, rtol=1e-12, atol=1e-14)
        np.testing.assert_allclose(reported[t - 1].numpy(), x, rtol=1e-12, atol=1e-14)
    assert silent == bool(np.array_equal(trained[3].numpy(), np.array(X0)))  # silent: no move before step 5


def _mars_reference(lr, beta1, beta2, gamma, steps, lion=False):
    """MARS (Yuan et al. 2024, Algorithm 1, AdamW and Lion instances, ε = 0) with the unit-norm clip of c."""
    x, m, v, last = np.array(X0), np.zeros(3), np.zeros(3), np.zeros(3)
    points = []
    for t in range(1, steps + 1):
        g = _quadratic_grad_np(x)
        c = g + gamma * beta1 / (1 - beta1) * (g - last)
        c = c / max(1.0, np.linalg.norm(c))
        m = beta1 * m + (1 - beta1) * c
        v = beta2 * v + (1 - beta2) * c * c
        step = np.sign(m) if lion else (m / (1 - beta1 ** t)) / np.sqrt(v / (1 - beta2 ** t))
        x = x - lr * step
        last = g
        points.append(x)
    return points


@pytest.mark.parametrize("mars_type", ["adamw", "lion"])
def test_mars_follows_its_paper_on_a_vector_with_optimize_1d(mars_type):
    lr, beta1, beta2, gamma, steps = 0.05, 0.9, 0.99, 0.2, 4
    trained, _, _ = _rule_run(f"mars(lr={lr}, betas=({beta1}, {beta2}), gamma={gamma}, optimize_1d=True, eps=0.0, "
                              f"weight_decay=0.0, mars_type={mars_type!r})", X0, _quadratic_grad, steps)
    expected = _mars_reference(lr, beta1, beta2, gamma, steps, lion=mars_type == "lion")
    for t in range(steps):  # 1e-15 under the square root is the only difference from the formula
        np.testing.assert_allclose(trained[t].numpy(), expected[t], rtol=1e-10)


def test_mars_on_a_vector_is_adamw_with_its_1d_settings():
    """optimize_1d=False (the default): a vector gets AdamW with lr_1d, betas_1d and weight_decay_1d, decoupled —
    torch.optim.AdamW (ε = 0, where the class's ε placement and its 1e-15 cannot differ from it)."""
    lr_1d, betas, wd, steps = 0.02, (0.8, 0.9), 0.3, 4
    trained, _, _ = _rule_run(f"mars(lr=0.5, lr_1d={lr_1d}, betas_1d={betas}, weight_decay_1d={wd}, eps=0.0)", X0,
                              _quadratic_grad, steps)
    p = torch.nn.Parameter(torch.tensor(X0, dtype=torch.float64))
    opt = torch.optim.AdamW([p], lr=lr_1d, betas=betas, weight_decay=wd, eps=0.0)
    for t in range(steps):
        p.grad = _quadratic_grad(p.detach()[None])[0]
        opt.step()
        np.testing.assert_allclose(trained[t].numpy(), p.detach().numpy(), rtol=1e-10)


def test_adai_follows_its_paper():
    """Xie et al. 2022, Algorithm 2 (Adai, τ = 1): v̂ = v/(1 − β₂ᵗ), v̄ = mean(v̂), β₁ = clip(1 − β₀v̂/v̄, 0, 1 − ε),
    m ← β₁m + (1 − β₁)g, Π ← Πβ₁, x ← x − η m/(1 − Π)."""
    lr, beta0, beta2, eps, steps = 0.1, 0.1, 0.99, 1e-3, 3
    trained, _, _ = _rule_run(f"adai(lr={lr}, betas=({beta0}, {beta2}), eps={eps})", X0, _quadratic_grad, steps)
    x, m, v, prod = np.array(X0), np.zeros(3), np.zeros(3), np.ones(3)
    for t in range(1, steps + 1):
        g = _quadratic_grad_np(x)
        v = beta2 * v + (1 - beta2) * g * g
        v_hat = v / (1 - beta2 ** t)
        beta1 = np.clip(1 - beta0 * v_hat / max(eps, v_hat.mean()), 0, 1 - eps)
        m = beta1 * m + (1 - beta1) * g
        prod = prod * beta1
        x = x - lr * m / (1 - prod)
        np.testing.assert_allclose(trained[t - 1].numpy(), x, rtol=1e-12)


def test_adams_follows_its_paper():
    """Xie et al., AdamS (stable weight decay, ε = 0): x ← x − η(m̂/√v̂ + λx/√v̄), v̄ = mean(v̂)."""
    lr, beta1, beta2, wd, steps = 0.05, 0.9, 0.999, 0.2, 3
    trained, _, _ = _rule_run(f"adams(lr={lr}, betas=({beta1}, {beta2}), weight_decay={wd}, eps=0.0)", X0,
                              _quadratic_grad, steps)
    x, m, v = np.array(X0), np.zeros(3), np.zeros(3)
    for t in range(1, steps + 1):
        g = _quadratic_grad_np(x)
        m = beta1 * m + (1 - beta1) * g
        v = beta2 * v + (1 - beta2) * g * g
        m_hat, v_hat = m / (1 - beta1 ** t), v / (1 - beta2 ** t)
        x = x - lr * (m_hat / np.sqrt(v_hat) + wd * x / np.sqrt(v_hat.mean()))
        np.testing.assert_allclose(trained[t - 1].numpy(), x, rtol=1e-12)


def _steps(spec, x, layout, grads):
    config = get_optimizer(spec)
    rule = RULES[config.entry.batched]
    hp = stack_hyperparams([config], torch.float64, "cpu")
    state = rule.init(x, hp)
    state["layout"] = layout
    for t, g in enumerate(grads, start=1):
        rule.step(x, g, state, hp, t)
    return x


@pytest.mark.parametrize("spec", ["adai(lr=0.1)", "adams(lr=0.1, weight_decay=0.5)"])
def test_adai_and_adams_take_the_mean_over_the_whole_model(spec):
    """JOINT: on two parameter tensors the mean of v̂ spans both, as on one vector of all their coordinates;
    each tensor stepped alone (its own mean) ends elsewhere."""
    grads = [torch.tensor([[1.0, -2.0, 0.1, 0.2, -0.3]], dtype=torch.float64),
             torch.tensor([[0.5, 1.0, -0.4, 0.2, 0.1]], dtype=torch.float64)]
    start = torch.ones(1, 5, dtype=torch.float64)
    joint = _steps(spec, start.clone(), ParamLayout([(2,), (3, 1)]), grads)
    whole = _steps(spec, start.clone(), ParamLayout.vector(5), grads)
    alone = torch.cat([_steps(spec, start[:, columns].clone(), ParamLayout.vector(n), [g[:, columns] for g in grads])
                       for columns, n in ((slice(0, 2), 2), (slice(2, 5), 3))], dim=-1)
    np.testing.assert_allclose(joint.numpy(), whole.numpy(), rtol=1e-14)
    assert not np.allclose(joint.numpy(), alone.numpy(), rtol=1e-6)


@pytest.mark.parametrize("spec", ["schedulefreesgd", "schedulefreeradam", "mars", "mars(ams_bound=True)",
                                  "mars(optimize_1d=True, mars_type='lion')", "adai", "adams",
                                  "adams(ams_bound=True)"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_sfmars_rules_declare_the_state_their_class_keeps(spec, dtype):
    from optbench.cost import probe_state_bytes_per_param

    config = get_optimizer(spec)
    declared = RULES[config.entry.batched].slots_per_param(config.hyperparams, 5) * dtype.itemsize
    assert declared == probe_state_bytes_per_param(config, 5, dtype)


@pytest.mark.parametrize("lr", [0.05, 0.5])
def test_schedule_free_radam_rectification_is_the_class_python_floats_in_float32(lr):
    """The class computes ρ_t, r_t and c_t as Python floats; in float32 arithmetic ρ_t = ρ∞ − 2tβ₂ᵗ/(1 − β₂ᵗ)
    cancels (ρ_t ≈ t from ρ∞ ≈ 2000: ρ₅ = 4.986 instead of 4.996) and moved the rule's float32 steps by 0.55 %
    (measured). The rule computes them in float64: the displacement from x₀ agrees to float32 accuracy."""
    from optbench.engines.batched import run_batched
    from optbench.engines.loop import run_loop

    problem, config, steps = get_problem("rosenbrock"), get_optimizer(f"schedulefreeradam(lr={lr})"), 12
    batched = run_batched(problem, [config], [0], steps, 1, dtype=torch.float32, measure_cost=False).coords[:, 0]
    loop = run_loop(problem, config, 0, steps, 1, dtype=torch.float32, measure_cost=False).coords[:, 0]
    assert np.abs(loop[-1] - loop[0]).min() > 1e-3  # it moved
    np.testing.assert_allclose(batched - batched[0], loop - loop[0], rtol=1e-3, atol=1e-6)
