"""The batched rules of engines/rules_recent.py (Adan, AdEMAMix, SimplifiedAdEMAMix, Grams, GrokFastAdamW,
AdamWSN, Ano, APOLLO, BCOS, FOCUS): each rule against the update formula its docstring states (the paper's, with the
library's documented deviations), written here by hand in plain torch float64, one configuration at a time, for
several steps of K configurations with their own hyperparameters; and against the class (batched == loop, 1e-8 in
float64) on the option branches the registry defaults of tests/test_engine_contract.py do not reach, on analytic
problems and on an MLP and a CNN."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from test_engine_contract import CNN, MLP, _analytic_group, _network_group

from optbench.cost import probe_state_bytes_per_param
from optbench.engines.batched import stack_hyperparams
from optbench.engines.batched_rules import RULES
from optbench.engines.capabilities import engine_supports
from optbench.engines.layout import ParamLayout
from optbench.optimizers import get_optimizer
from optbench.problems import get_problem

# settings that take the branches the registry defaults do not
VARIANTS = {
    "adan": ["adan(lr=0.01, weight_decay=0.1)",
             "adan(lr=0.01, weight_decay=0.05, weight_decouple=True, betas=(0.9, 0.8, 0.95))",
             "adan(lr=0.01, max_grad_norm=0.5, eps=1e-4)"],
    "ademamix": ["ademamix(lr=0.01, weight_decay=0.1)",
                 "ademamix(lr=0.01, weight_decay=0.05, weight_decouple=True, t_alpha_beta3=5)",
                 "ademamix(lr=0.01, weight_decay=0.01, weight_decouple=True, fixed_decay=True, alpha=2.0, "
                 "betas=(0.8, 0.9, 0.99))"],
    "simplifiedademamix": ["simplifiedademamix(lr=0.001, alpha=2.0, weight_decay=0.1)",
                           "simplifiedademamix(lr=0.001, beta1_warmup=6, min_beta1=0.5, weight_decay=0.1, "
                           "weight_decouple=False)",
                           "simplifiedademamix(lr=0.001, weight_decay=0.01, fixed_decay=True, betas=(0.9, 0.8))"],
    "grams": ["grams(lr=0.01, weight_decay=0.1)",
              "grams(lr=0.01, weight_decay=0.1, weight_decouple=False, betas=(0.8, 0.9))"],
    "grokfastadamw": ["grokfastadamw(lr=0.01, weight_decay=0.1, grokfast_after_step=3)",
                      "grokfastadamw(lr=0.01, normalize_lr=False, weight_decay=0.05, weight_decouple=False, "
                      "grokfast_alpha=0.5, grokfast_lamb=0.5)",
                      "grokfastadamw(lr=0.01, grokfast=False, weight_decay=0.01, fixed_decay=True)",
                      "grokfastadamw(lr=0.01, grokfast_lamb=0.0, eps=0.1)"],
    "adamwsn": ["adamwsn(lr=0.01, weight_decay=0.1)",
                "adamwsn(lr=0.01, weight_decay=0.1, fixed_decay=True, betas=(0.8, 0.9))",
                "adamwsn(lr=0.01, weight_decay=0.1, weight_decouple=False, subset_size=2)"],
    "ano": ["ano(lr=0.01, weight_decay=0.1)",
            "ano(lr=0.01, logarithmic_schedule=True, weight_decay=0.05, weight_decouple=False)",
            "ano(lr=0.01, weight_decay=0.01, fixed_decay=True, betas=(0.5, 0.9))"],
    "apollo": ["apollo(lr=0.01, weight_decay=0.1)",
               "apollo(lr=0.01, correct_bias=False, weight_decay=0.1, weight_decouple=False)",
               "apollo(lr=0.01, weight_decay=0.01, fixed_decay=True, scale_type='channel')"],
    "bcos": ["bcos(lr=0.01, mode='g')",
             "bcos(lr=0.01, mode='m', beta2=0.99, weight_decouple=False)",
             "bcos(lr=0.01, simple_cond=True)",
             "bcos(lr=0.01, simple_cond=True, beta2=0.95, weight_decay=0.0)",
             "bcos(lr=0.01, mode='g', beta2=0.9, beta=0.5)"],
    "focus": ["focus(lr=0.01, weight_decay=0.1)",
              "focus(lr=0.01, gamma=0.5, betas=(0.5, 0.9), weight_decay=0.01)"],
    "conda": ["conda(lr=0.01, weight_decay=0.1, update_proj_gap=2, scale=0.5)",
              "conda(lr=0.01, projection_type='reverse_std', update_proj_gap=3)",
              "conda(lr=0.01, projection_type='right', weight_decay=0.01)",
              "conda(lr=0.01, projection_type='left', update_proj_gap=2)",
              "conda(lr=0.01, projection_type='full', update_proj_gap=2, betas=(0.8, 0.9))",
              "conda(lr=0.01, projection_type='random', update_proj_gap=4)"],
    "sara": ["sara(lr=0.01, threshold=1.1)",
             "sara(lr=0.01, threshold=1.3, progressive_iter=3, ams_bound=True, weight_decay=0.1)",
             "sara(lr=0.01, threshold=2.0, weight_decay=0.0, betas=(0.8, 0.9), eps=1e-3)",
             "sara(lr=0.01, threshold=0.05, progressive_iter=2)"],
}
SPECS = [spec for specs in VARIANTS.values() for spec in specs]


def _variant_group(spec):
    config = get_optimizer(spec)
    return [config, config.with_hyperparams(lr=config.lr / 2)], [0, 7]


@pytest.mark.parametrize("spec", SPECS)
@pytest.mark.parametrize("problem_spec", ["beale", "rosenbrock(noise=0.1)"])
def test_variants_equal_the_class_on_analytic_problems(spec, problem_spec):
    problem = get_problem(problem_spec)
    configs, seeds = _variant_group(spec)
    assert all(engine_supports("batched", problem, c) for c in configs)
    _analytic_group(problem, configs, seeds)


@pytest.mark.parametrize("spec", SPECS)
@pytest.mark.parametrize("network", [MLP, CNN], ids=["mlp", "cnn"])
def test_variants_equal_the_class_on_networks(network_data, spec, network):
    problem = get_problem(network)
    configs, seeds = _variant_group(spec)
    assert all(engine_supports("batched", problem, c) for c in configs)
    _network_group(problem, configs, seeds)


@pytest.mark.parametrize("spec", [s for s in list(VARIANTS) + SPECS if not s.startswith("sara")])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_rules_declare_the_state_their_class_keeps(spec, dtype):
    config = get_optimizer(spec)
    declared = RULES[config.entry.batched].slots_per_param(config.hyperparams, 5) * dtype.itemsize
    assert declared == probe_state_bytes_per_param(config, 5, dtype), spec


@pytest.mark.parametrize("spec", ["sara(lr=0.1, threshold=1.0)", "sara(lr=0.1, threshold=1.0, ams_bound=True)",
                                  "sara(lr=0.1, threshold=1.0, progressive_iter=1)", "sara(lr=0.1, threshold=0.01)"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_sara_counts_the_state_of_its_selection(spec, dtype):
    """SaRA keeps a bool mask per weight and moments for the selected weights only: slots_in after the class's own
    steps (the selection is refined after the first here, with progressive_iter=1) equals its measured state."""
    from optbench.cost import state_bytes_per_param

    config = get_optimizer(spec)
    start = [0.5, 2.0, 0.1, -3.0, 0.95]
    param = torch.nn.Parameter(torch.tensor(start, dtype=dtype))
    opt = config.entry.build([param], config.hyperparams, dtype=dtype, seed=0)
    rule = RULES["sara"]
    hp = stack_hyperparams([config], dtype, "cpu")
    x = torch.tensor([start], dtype=dtype)
    state = rule.init(x, hp)
    for t in (1, 2, 3):
        param.grad = param.detach() * 3.0
        opt.step()
        rule.step(x, x * 3.0, state, hp, t)
    assert rule.slots_in is not None
    assert float(rule.slots_in(state)[0]) * dtype.itemsize == pytest.approx(state_bytes_per_param(opt), rel=1e-12)


def test_sara_refuses_the_rank_penalty():
    config = get_optimizer("sara(lr=0.01, lambda_rank=0.1)")
    assert "lambda_rank" in RULES["sara"].refuses(config.hyperparams)
    assert not engine_supports("batched", get_problem("beale"), config)


# ---- the papers' formulas, by hand ------------------------------------------------------------------------

X0 = torch.tensor([[1.0, -0.5, 0.4], [0.3, 0.8, -1.1]], dtype=torch.float64)  # K = 2 starting points
SCALE = torch.tensor([[1.0, 3.0, -2.0], [0.5, -1.0, 4.0]], dtype=torch.float64)


def _grad(x):
    """A quadratic's gradient, one per configuration (row); no coordinate's gradient is 0 on the paths here."""
    return SCALE * x + 0.5


def _rule_path(specs, steps, x0=X0, layout=None):
    """The rule of ``specs`` (one per row of ``x0``, the same non-float settings) for ``steps`` steps of
    :func:`_grad`: the points after each step, ``[steps, K, d]``."""
    configs = [get_optimizer(spec) for spec in specs]
    rule = RULES[configs[0].entry.batched]
    hp = stack_hyperparams(configs, torch.float64, "cpu")
    x = x0.clone()
    state = rule.init(x, hp)
    state["layout"] = layout or ParamLayout.vector(x.shape[-1])
    path = []
    for t in range(1, steps + 1):
        rule.step(x, _grad(x), state, hp, t)
        path.append(x.clone())
    return torch.stack(path)


def _reference_path(step_fn, configs, steps, x0=X0):
    """``step_fn(x, g, state, hp, t)`` (one configuration, ``[d]`` tensors and Python floats) from each row of
    ``x0``: ``[steps, K, d]``."""
    rows = []
    for k, hp in enumerate(configs):
        x, state, path = x0[k].clone(), {}, []
        for t in range(1, steps + 1):
            x = step_fn(x, SCALE[k] * x + 0.5, state, hp, t)
            path.append(x.clone())
        rows.append(torch.stack(path))
    return torch.stack(rows, dim=1)


def _close(actual, expected, rtol=1e-12):
    np.testing.assert_allclose(actual.numpy(), expected.numpy(), rtol=rtol, atol=1e-14)


def test_adan_follows_its_paper():
    """Xie et al. 2022, Algorithm 1 in its decay rates β (the library's betas are 1 − β), with the bias corrections
    of the authors' code: Δ = g − g_prev (0 first), m ← (1 − β₁)m + β₁g, v ← (1 − β₂)v + β₂Δ,
    n ← (1 − β₃)n + β₃(g + (1 − β₂)Δ)², x ← (x − η(m̂ + (1 − β₂)v̂)/(√n̂ + ε))/(1 + λη)."""
    specs = ["adan(lr=0.05, weight_decay=0.1, betas=(0.98, 0.92, 0.99))",
             "adan(lr=0.02, weight_decay=0.3, betas=(0.9, 0.8, 0.95), eps=1e-3)"]
    configs = [dict(lr=0.05, wd=0.1, b=(0.02, 0.08, 0.01), eps=1e-8),
               dict(lr=0.02, wd=0.3, b=(0.1, 0.2, 0.05), eps=1e-3)]

    def step(x, g, s, hp, t):
        (b1, b2, b3), lr = hp["b"], hp["lr"]
        diff = g - s.get("prev", g)
        s["m"] = (1 - b1) * s.get("m", 0 * g) + b1 * g
        s["v"] = (1 - b2) * s.get("v", 0 * g) + b2 * diff
        s["n"] = (1 - b3) * s.get("n", 0 * g) + b3 * (g + (1 - b2) * diff) ** 2
        s["prev"] = g
        m_hat, v_hat = s["m"] / (1 - (1 - b1) ** t), s["v"] / (1 - (1 - b2) ** t)
        n_hat = s["n"] / (1 - (1 - b3) ** t)
        return (x - lr * (m_hat + (1 - b2) * v_hat) / (n_hat.sqrt() + hp["eps"])) / (1 + lr * hp["wd"])

    _close(_rule_path(specs, 4), _reference_path(step, configs, 4))


def test_adan_decoupled_decay_and_global_clip():
    """Deviations: decoupled decay x ← x(1 − ηλ) before the step (not the proximal division), and the global
    norm clip g ← g·min(1, max_grad_norm/(‖g‖ + ε)) before everything (‖g‖ over all tensors, in float32)."""
    specs = ["adan(lr=0.05, weight_decay=0.1, weight_decouple=True, max_grad_norm=0.5)",
             "adan(lr=0.02, weight_decay=0.3, weight_decouple=True, max_grad_norm=0.0)"]
    configs = [dict(lr=0.05, wd=0.1, clip=0.5), dict(lr=0.02, wd=0.3, clip=0.0)]
    b1, b2, b3, eps = 0.02, 0.08, 0.01, 1e-8

    def step(x, g, s, hp, t):
        lr = hp["lr"]
        if hp["clip"]:
            g = g * min(1.0, hp["clip"] / (float(torch.linalg.vector_norm(g)) + eps))
        diff = g - s.get("prev", g)
        s["m"] = (1 - b1) * s.get("m", 0 * g) + b1 * g
        s["v"] = (1 - b2) * s.get("v", 0 * g) + b2 * diff
        s["n"] = (1 - b3) * s.get("n", 0 * g) + b3 * (g + (1 - b2) * diff) ** 2
        s["prev"] = g
        m_hat, v_hat = s["m"] / (1 - (1 - b1) ** t), s["v"] / (1 - (1 - b2) ** t)
        n_hat = s["n"] / (1 - (1 - b3) ** t)
        return x * (1 - lr * hp["wd"]) - lr * (m_hat + (1 - b2) * v_hat) / (n_hat.sqrt() + eps)

    _close(_rule_path(specs, 4), _reference_path(step, configs, 4), rtol=1e-6)  # the clip factor is float32


def test_adan_clips_by_the_norm_over_every_parameter_tensor():
    """JOINT: on two parameter tensors the clip uses the norm of both, as on one vector of all their coordinates."""
    spec = ["adan(lr=0.05, max_grad_norm=0.5)"] * 2
    joint = _rule_path(spec, 3, layout=ParamLayout([(2,), (1, 1)]))
    whole = _rule_path(spec, 3)
    _close(joint, whole, rtol=1e-7)  # the same norm, its squares summed in float32 per tensor or once
    assert not torch.equal(whole, _rule_path(["adan(lr=0.05)"] * 2, 3))  # and it clips here


def _adam_moments(s, g, beta1, beta2):
    s["m"] = beta1 * s.get("m", 0 * g) + (1 - beta1) * g
    s["v"] = beta2 * s.get("v", 0 * g) + (1 - beta2) * g * g


def test_ademamix_follows_its_paper():
    """Pagliardini et al. 2024, Algorithm 1 without warm-up: x ← x − η((m₁/(1 − β₁ᵗ) + αm₂)/(√v̂ + ε) + λx) in
    the paper (decoupled, the first configuration); the library's default adds λx to g instead (the second)."""
    specs = ["ademamix(lr=0.05, alpha=5.0, weight_decay=0.1, weight_decouple=True, betas=(0.9, 0.999, 0.9999))",
             "ademamix(lr=0.02, alpha=2.0, weight_decay=0.2, weight_decouple=True, betas=(0.8, 0.99, 0.95), "
             "eps=1e-3)"]
    configs = [dict(lr=0.05, alpha=5.0, wd=0.1, b=(0.9, 0.999, 0.9999), eps=1e-8),
               dict(lr=0.02, alpha=2.0, wd=0.2, b=(0.8, 0.99, 0.95), eps=1e-3)]

    def step(x, g, s, hp, t, coupled=False):
        (b1, b2, b3), lr, wd = hp["b"], hp["lr"], hp["wd"]
        if coupled:
            g = g + wd * x
        _adam_moments(s, g, b1, b2)
        s["slow"] = b3 * s.get("slow", 0 * g) + (1 - b3) * g
        update = (s["m"] / (1 - b1 ** t) + hp["alpha"] * s["slow"]) / ((s["v"] / (1 - b2 ** t)).sqrt() + hp["eps"])
        return x - lr * update - (0.0 if coupled else lr * wd * x)

    _close(_rule_path(specs, 4), _reference_path(step, configs, 4))
    coupled = [spec.replace("weight_decouple=True", "weight_decouple=False") for spec in specs]
    _close(_rule_path(coupled, 4), _reference_path(lambda *a: step(*a, coupled=True), configs, 4))


def test_ademamix_warms_up_alpha_and_beta3():
    """With T = t_alpha_beta3: α(t) = min(tα/T, α), β₃(t) = min(exp(ln β₁ ln β₃/((1 − t/T) ln β₃ + (t/T) ln β₁)),
    β₃), each configuration its own T; past T both stay at their final values."""
    specs = ["ademamix(lr=0.05, alpha=5.0, t_alpha_beta3=3)", "ademamix(lr=0.02, alpha=2.0, t_alpha_beta3=6, "
                                                             "betas=(0.8, 0.99, 0.95))"]
    configs = [dict(lr=0.05, alpha=5.0, T=3, b=(0.9, 0.999, 0.9999)),
               dict(lr=0.02, alpha=2.0, T=6, b=(0.8, 0.99, 0.95))]

    def step(x, g, s, hp, t):
        (b1, b2, b3), T = hp["b"], hp["T"]
        alpha = min(t * hp["alpha"] / T, hp["alpha"])
        beta3 = min(math.exp(math.log(b1) * math.log(b3) / ((1 - t / T) * math.log(b3) + t / T * math.log(b1))), b3)
        _adam_moments(s, g, b1, b2)
        s["slow"] = beta3 * s.get("slow", 0 * g) + (1 - beta3) * g
        update = (s["m"] / (1 - b1 ** t) + alpha * s["slow"]) / ((s["v"] / (1 - b2 ** t)).sqrt() + 1e-8)
        return x - hp["lr"] * update

    _close(_rule_path(specs, 7), _reference_path(step, configs, 7))


def _float32(value):
    return float(np.float32(value))


def test_simplified_ademamix_follows_its_formula():
    """The library's Simplified AdEMAMix: m ← β₁m + (1 − β₁)g (the paper accumulates m ← β₁m + g), s = 1 − β₂ᵗ,
    x ← x(1 − λη) − η(m + αg)/(√v + √s·ε)/√s, with √s rounded to float32 (and the ε term float32(√s·ε))."""
    specs = ["simplifiedademamix(lr=0.01, alpha=2.0, weight_decay=0.1, betas=(0.99, 0.95))",
             "simplifiedademamix(lr=0.02, alpha=0.5, weight_decay=0.3, betas=(0.9, 0.8), eps=1e-3)"]
    configs = [dict(lr=0.01, alpha=2.0, wd=0.1, b=(0.99, 0.95), eps=1e-8),
               dict(lr=0.02, alpha=0.5, wd=0.3, b=(0.9, 0.8), eps=1e-3)]

    def step(x, g, s, hp, t):
        (b1, b2), lr = hp["b"], hp["lr"]
        x = x * (1 - lr * hp["wd"])
        _adam_moments(s, g, b1, b2)
        root = _float32(math.sqrt(1 - b2 ** t))
        return x - lr * (s["m"] + hp["alpha"] * g) / (s["v"].sqrt() + _float32(root * _float32(hp["eps"]))) / root

    _close(_rule_path(specs, 4), _reference_path(step, configs, 4))


def test_simplified_ademamix_warms_up_beta1_by_half_life():
    """beta1_warmup = W: for t < W, β₁(t) = 0.5^(1/(h + 1)) with h = (1 − t/W)f(β_min) + (t/W)f(β₁),
    f(β) = ln 0.5/ln(β + 1e-8) − 1 (the half-life in steps, linear from β_min's to β₁'s); β₁ from step W on."""
    specs = ["simplifiedademamix(lr=0.01, beta1_warmup=3, min_beta1=0.5, betas=(0.99, 0.95))",
             "simplifiedademamix(lr=0.02, beta1_warmup=5, min_beta1=0.6, betas=(0.9, 0.8))"]
    configs = [dict(lr=0.01, W=3, low=0.5, b=(0.99, 0.95)), dict(lr=0.02, W=5, low=0.6, b=(0.9, 0.8))]

    def half_life(beta):
        return math.log(0.5) / math.log(beta + 1e-8) - 1

    def step(x, g, s, hp, t):
        (b1, b2), W = hp["b"], hp["W"]
        if t < W:
            b1 = 0.5 ** (1 / ((1 - t / W) * half_life(hp["low"]) + t / W * half_life(b1) + 1))
        _adam_moments(s, g, b1, b2)
        root = _float32(math.sqrt(1 - b2 ** t))
        return x - hp["lr"] * s["m"] / (s["v"].sqrt() + _float32(root * _float32(1e-8))) / root

    _close(_rule_path(specs, 6), _reference_path(step, configs, 6))


def test_grams_takes_the_adam_magnitude_and_the_gradient_sign():
    """Cao et al. 2024, Algorithm 1: u = m̂/(√v̂ + ε), x ← x − η(|u|·sign(g) + λx), with the class's bias
    corrections (ε after the correction of √v); the decay is decoupled, before the step."""
    specs = ["grams(lr=0.05, weight_decay=0.1, betas=(0.9, 0.999))",
             "grams(lr=0.02, weight_decay=0.3, betas=(0.8, 0.9), eps=1e-3)"]
    configs = [dict(lr=0.05, wd=0.1, b=(0.9, 0.999), eps=1e-6), dict(lr=0.02, wd=0.3, b=(0.8, 0.9), eps=1e-3)]

    def step(x, g, s, hp, t, decay=True):
        (b1, b2), lr = hp["b"], hp["lr"]
        _adam_moments(s, g, b1, b2)
        u = (s["m"] / (1 - b1 ** t)) / ((s["v"] / (1 - b2 ** t)).sqrt() + hp["eps"])
        return x * (1 - lr * hp["wd"] * decay) - lr * u.abs() * g.sign()

    _close(_rule_path(specs, 4), _reference_path(step, configs, 4))
    # weight_decouple=False: the class adds λx to a gradient it has already used — no decay at all
    coupled = [spec.replace("weight_decay", "weight_decouple=False, weight_decay") for spec in specs]
    _close(_rule_path(coupled, 4), _reference_path(lambda *a: step(*a, decay=False), configs, 4))


def test_grokfast_amplifies_the_slow_gradient():
    """Lee et al. 2024, Grokfast-EMA on AdamW: μ ← αμ + (1 − α)g (μ₀ = g₁), ĝ = g + λ_gμ once t > after_step;
    Adam on ĝ with ε as a floor, x ← x(1 − λη) − η m̂/max(√v̂, ε), η = lr/(1 + λ_g) (normalize_lr)."""
    specs = ["grokfastadamw(lr=0.05, grokfast_alpha=0.9, grokfast_lamb=2.0, grokfast_after_step=0, weight_decay=0.1)",
             "grokfastadamw(lr=0.02, grokfast_alpha=0.5, grokfast_lamb=0.5, grokfast_after_step=2, weight_decay=0.3, "
             "betas=(0.8, 0.9), eps=0.3)"]
    configs = [dict(lr=0.05, alpha=0.9, lamb=2.0, after=0, wd=0.1, b=(0.9, 0.99), eps=1e-8),
               dict(lr=0.02, alpha=0.5, lamb=0.5, after=2, wd=0.3, b=(0.8, 0.9), eps=0.3)]

    def step(x, g, s, hp, t, normalize=True):
        (b1, b2), lamb = hp["b"], hp["lamb"]
        lr = hp["lr"] / (1 + lamb) if normalize else hp["lr"]
        s.setdefault("mu", g)
        if t > hp["after"]:
            s["mu"] = hp["alpha"] * s["mu"] + (1 - hp["alpha"]) * g
            g = g + lamb * s["mu"]
        _adam_moments(s, g, b1, b2)
        denom = torch.clamp((s["v"] / (1 - b2 ** t)).sqrt(), min=hp["eps"])
        return x * (1 - lr * hp["wd"]) - lr * (s["m"] / (1 - b1 ** t)) / denom

    _close(_rule_path(specs, 5), _reference_path(step, configs, 5))
    plain = [spec.replace("(lr", "(normalize_lr=False, lr") for spec in specs]
    _close(_rule_path(plain, 5), _reference_path(lambda *a: step(*a, normalize=False), configs, 5))


def test_adamwsn_without_subsets_is_adamw_with_the_eps_before_the_correction():
    """AdamWSN as the registry builds it (no ``sn``): x ← x − η√(1 − β₂ᵗ)/(1 − β₁ᵗ)·m/(√v + ε), then x ← x(1 − λη)."""
    specs = ["adamwsn(lr=0.05, weight_decay=0.1, betas=(0.9, 0.999))",
             "adamwsn(lr=0.02, weight_decay=0.3, betas=(0.8, 0.9), eps=1e-3)"]
    configs = [dict(lr=0.05, wd=0.1, b=(0.9, 0.999), eps=1e-8), dict(lr=0.02, wd=0.3, b=(0.8, 0.9), eps=1e-3)]

    def step(x, g, s, hp, t, decay=True):
        (b1, b2), lr = hp["b"], hp["lr"]
        _adam_moments(s, g, b1, b2)
        x = x - lr * math.sqrt(1 - b2 ** t) / (1 - b1 ** t) * s["m"] / (s["v"].sqrt() + hp["eps"])
        return x * (1 - lr * hp["wd"] * decay)

    _close(_rule_path(specs, 4), _reference_path(step, configs, 4))
    coupled = [spec.replace("weight_decay", "weight_decouple=False, weight_decay") for spec in specs]
    _close(_rule_path(coupled, 4), _reference_path(lambda *a: step(*a, decay=False), configs, 4))


def test_ano_steps_with_the_gradient_magnitude_and_the_momentum_sign():
    """Ano: m ← β₁m + (1 − β₁)g, v ← β₂v + (1 − β₂)sign(g² − v)g², x ← x(1 − λη) − η|g|sign(m)/(√v̂ + ε);
    Anolog replaces β₁ by 1 − 1/ln(max(2, t))."""
    specs = ["ano(lr=0.05, weight_decay=0.1, betas=(0.92, 0.99))",
             "ano(lr=0.02, weight_decay=0.3, betas=(0.5, 0.9), eps=1e-3)"]
    configs = [dict(lr=0.05, wd=0.1, b=(0.92, 0.99), eps=1e-8), dict(lr=0.02, wd=0.3, b=(0.5, 0.9), eps=1e-3)]

    def step(x, g, s, hp, t, log_schedule=False):
        (b1, b2), lr = hp["b"], hp["lr"]
        if log_schedule:
            b1 = 1 - 1 / math.log(max(2, t))
        x = x * (1 - lr * hp["wd"])
        s["m"] = b1 * s.get("m", 0 * g) + (1 - b1) * g
        v = s.get("v", 0 * g)
        s["v"] = b2 * v + (1 - b2) * torch.sign(g * g - v) * g * g
        return x - lr * g.abs() * s["m"].sign() / ((s["v"] / (1 - b2 ** t)).sqrt() + hp["eps"])

    _close(_rule_path(specs, 5), _reference_path(step, configs, 5))
    log = [spec.replace("(lr", "(logarithmic_schedule=True, lr") for spec in specs]
    _close(_rule_path(log, 5), _reference_path(lambda *a: step(*a, log_schedule=True), configs, 5))


def test_apollo_without_a_rank_is_adamw_with_a_bias_corrected_step():
    """APOLLO with no projection: s = η√(1 − β₂ᵗ)/(1 − β₁ᵗ) (η without correct_bias), x ← x − s·m/(√v + ε), then
    the decoupled decay x ← x(1 − λs); coupled (weight_decouple=False): g ← g + λx first."""
    specs = ["apollo(lr=0.05, weight_decay=0.1, betas=(0.9, 0.999))",
             "apollo(lr=0.02, weight_decay=0.3, betas=(0.8, 0.9), eps=1e-3)"]
    configs = [dict(lr=0.05, wd=0.1, b=(0.9, 0.999), eps=1e-6), dict(lr=0.02, wd=0.3, b=(0.8, 0.9), eps=1e-3)]

    def step(x, g, s, hp, t, coupled=False, correct=True):
        (b1, b2), lr, wd = hp["b"], hp["lr"], hp["wd"]
        size = lr * math.sqrt(1 - b2 ** t) / (1 - b1 ** t) if correct else lr
        if coupled:
            g = g + wd * x
        _adam_moments(s, g, b1, b2)
        x = x - size * s["m"] / (s["v"].sqrt() + hp["eps"])
        return x if coupled else x * (1 - wd * size)

    _close(_rule_path(specs, 4), _reference_path(step, configs, 4))
    coupled = [spec.replace("(lr", "(weight_decouple=False, correct_bias=False, lr") for spec in specs]
    _close(_rule_path(coupled, 4), _reference_path(lambda *a: step(*a, coupled=True, correct=False), configs, 4))


@pytest.mark.parametrize("mode, simple, beta2", [("c", False, None), ("c", True, None), ("c", True, 0.95),
                                                 ("m", False, None), ("m", False, 0.99), ("g", False, None),
                                                 ("g", False, 0.9)])
def test_bcos_follows_its_formula(mode, simple, beta2):
    """BCOS: x ← x(1 − λη) − η d/(√v + ε); d = g (mode g) or m ← βm + (1 − β)g (m, c; m₀ = g₁); v ← β_v v +
    (1 − β_v)d² (g, m; v₀ = g₁², β_v = β or beta2) or, mode c, v = (3β² − 2β³)m² + (1 − β)²g² + 2β(1 − β)²mg
    (simple_cond: β_v m² + (1 − β_v)g², β_v = 1 − (1 − β)² or beta2)."""
    extra = f", mode={mode!r}, simple_cond={simple}" + ("" if beta2 is None else f", beta2={beta2}")
    specs = [f"bcos(lr=0.05, beta=0.9, weight_decay=0.1{extra})", f"bcos(lr=0.02, beta=0.6, weight_decay=0.3, "
                                                                  f"eps=1e-3{extra})"]
    configs = [dict(lr=0.05, beta=0.9, wd=0.1, eps=1e-6), dict(lr=0.02, beta=0.6, wd=0.3, eps=1e-3)]

    def step(x, g, s, hp, t):
        beta, lr = hp["beta"], hp["lr"]
        s.setdefault("m", g)
        s.setdefault("v", g * g)
        x = x * (1 - lr * hp["wd"])
        if mode == "g":
            d = g
        else:
            d = s["m"] = beta * s["m"] + (1 - beta) * g
        if mode in ("g", "m"):
            beta_v = beta if beta2 is None else beta2
            v = s["v"] = beta_v * s["v"] + (1 - beta_v) * d * d
        elif simple:
            beta_v = 1 - (1 - beta) ** 2 if beta2 is None else beta2
            v = beta_v * d * d + (1 - beta_v) * g * g
        else:
            v = (3 * beta ** 2 - 2 * beta ** 3) * d * d + (1 - beta) ** 2 * g * g + 2 * beta * (1 - beta) ** 2 * d * g
        return x - lr * d / (v.sqrt() + hp["eps"])

    _close(_rule_path(specs, 4), _reference_path(step, configs, 4), rtol=1e-11)


def test_focus_follows_its_paper():
    """Liu et al. 2025: m ← β₁m + (1 − β₁)g, p̄ ← β₂p̄ + (1 − β₂)x, p̂ = p̄/(1 − β₂ᵗ), x ← x − ηλp̂ (λ > 0),
    x ← x − η(sign(m) + γ sign(x − p̂)); the second configuration has no decay."""
    specs = ["focus(lr=0.05, gamma=0.1, weight_decay=0.1, betas=(0.9, 0.999))",
             "focus(lr=0.02, gamma=0.5, weight_decay=0.0, betas=(0.5, 0.9))"]
    configs = [dict(lr=0.05, gamma=0.1, wd=0.1, b=(0.9, 0.999)), dict(lr=0.02, gamma=0.5, wd=0.0, b=(0.5, 0.9))]

    def step(x, g, s, hp, t):
        (b1, b2), lr = hp["b"], hp["lr"]
        s["m"] = b1 * s.get("m", 0 * g) + (1 - b1) * g
        s["pbar"] = b2 * s.get("pbar", 0 * x) + (1 - b2) * x
        p_hat = s["pbar"] / (1 - b2 ** t)
        x = x - lr * hp["wd"] * p_hat
        return x - lr * (s["m"].sign() + hp["gamma"] * (x - p_hat).sign())

    _close(_rule_path(specs, 5), _reference_path(step, configs, 5))


def _svd32(matrix):
    """The class's SVD: in float32 (for a float64 matrix), the factors cast back."""
    u, _, vh = torch.linalg.svd(matrix.float(), full_matrices=False)
    return u.double(), vh.double()


@pytest.mark.parametrize("kind", ["std", "full"])
def test_conda_keeps_the_second_moment_in_the_momentum_basis(kind):
    """Conda on a 3 × 2 matrix and a vector (x = [matrix | vector] columns): m ← β₁m + (1 − β₁)g; every gap
    steps (each configuration its own) the basis of the SVD m = UΣVᵀ: std, tall, g̃ = gV (ṽ the same); full,
    g̃ = Uᵀg V; v ← β₂v + (1 − β₂)g̃², the step is s·c·(m̃/(√v + ε)) taken back (·Vᵀ, or U·Vᵀ), s the bias-corrected
    lr; the vector takes Adam's step s·m/(√v + ε); then x ← x(1 − λη)."""
    specs = [f"conda(lr=0.05, weight_decay=0.1, update_proj_gap=2, scale=0.5, projection_type={kind!r})",
             f"conda(lr=0.02, weight_decay=0.3, update_proj_gap=3, betas=(0.8, 0.9), eps=1e-3, "
             f"projection_type={kind!r})"]
    configs = [dict(lr=0.05, wd=0.1, gap=2, scale=0.5, b=(0.9, 0.999), eps=1e-8),
               dict(lr=0.02, wd=0.3, gap=3, scale=1.0, b=(0.8, 0.9), eps=1e-3)]
    x0 = torch.tensor([[1.0, -0.5, 0.4, 0.3, 0.8, -1.1, 0.6, -0.2], [0.3, 0.8, -1.1, 1.0, -0.5, 0.4, -0.7, 0.9]],
                      dtype=torch.float64)
    scale = torch.tensor([[1.0, 3.0, -2.0, 0.5, -1.0, 4.0, 2.0, -0.5], [0.5, -1.0, 4.0, 1.0, 3.0, -2.0, 1.5, 0.7]],
                         dtype=torch.float64)
    steps = 5
    configured = [get_optimizer(spec) for spec in specs]
    rule = RULES["conda"]
    hp = stack_hyperparams(configured, torch.float64, "cpu")
    x = x0.clone()
    state = rule.init(x, hp)
    state["layout"] = ParamLayout([(3, 2), (2,)])
    path = []
    for t in range(1, steps + 1):
        rule.step(x, scale * x + 0.5, state, hp, t)
        path.append(x.clone())
    for k, c in enumerate(configs):
        (b1, b2), lr = c["b"], c["lr"]
        y, m, v_mat, v_vec, basis = x0[k].clone(), torch.zeros(8, dtype=torch.float64), None, 0.0, None
        for t in range(1, steps + 1):
            g = scale[k] * y + 0.5
            size = lr * math.sqrt(1 - b2 ** t) / (1 - b1 ** t)
            m = b1 * m + (1 - b1) * g
            M, G = m[:6].reshape(3, 2), g[:6].reshape(3, 2)
            if basis is None or t % c["gap"] == 0:
                basis = _svd32(M)
            U, Vh = basis
            low_g, low_m = (G @ Vh.T, M @ Vh.T) if kind == "std" else (U.T @ G @ Vh.T, U.T @ M @ Vh.T)
            v_mat = b2 * (0 * low_g if v_mat is None else v_mat) + (1 - b2) * low_g ** 2
            low = low_m / (v_mat.sqrt() + c["eps"])
            back = (low @ Vh if kind == "std" else U @ low @ Vh) * c["scale"]
            v_vec = b2 * v_vec + (1 - b2) * g[6:] ** 2
            y = y - size * torch.cat([back.reshape(-1), m[6:] / (v_vec.sqrt() + c["eps"])])
            y = y * (1 - lr * c["wd"])
            _close(path[t - 1][k], y)


def test_sara_is_adamw_on_the_weights_small_at_the_start():
    """SaRA: the coordinates with |x₀| < τ (each configuration its τ) take AdamW steps (decay x(1 − λη), then
    x − η m̂/(√v̂ + ε)); the others never move; progressive_iter = p drops, before step p + 1, the selected weights
    no longer below τ; AMSBound divides by the running maximum of v. Without lr, η = 10⁻³exp(−350τ)."""
    specs = ["sara(lr=0.05, threshold=0.47, weight_decay=0.1, progressive_iter=2, ams_bound=True)",
             "sara(lr=0.02, threshold=0.81, weight_decay=0.3, betas=(0.8, 0.9), eps=1e-3, progressive_iter=1, "
             "ams_bound=True)"]
    configs = [dict(lr=0.05, tau=0.47, wd=0.1, b=(0.9, 0.999), eps=1e-8, p=2),
               dict(lr=0.02, tau=0.81, wd=0.3, b=(0.8, 0.9), eps=1e-3, p=1)]

    def step(x, g, s, hp, t):
        (b1, b2), lr = hp["b"], hp["lr"]
        s.setdefault("mask", x.abs() < hp["tau"])
        if t == hp["p"] + 1:
            s["mask"] = s["mask"] & (x.abs() < hp["tau"])
        _adam_moments(s, g, b1, b2)
        s["vmax"] = torch.maximum(s.get("vmax", s["v"]), s["v"])
        moved = x * (1 - lr * hp["wd"]) - lr * (s["m"] / (1 - b1 ** t)) / ((s["vmax"] / (1 - b2 ** t)).sqrt()
                                                                             + hp["eps"])
        return torch.where(s["mask"], moved, x)

    path = _rule_path(specs, 5)
    _close(path, _reference_path(step, configs, 5))
    assert torch.equal(path[:, 0, :2], X0[0, :2].expand(5, 2))  # never selected
    assert path[1, 0, 2] > 0.47 and torch.equal(path[2:, 0, 2], path[1, 0, 2].expand(3))  # dropped before step 3
    assert path[0, 1, 1] > 0.81 and torch.equal(path[1:, 1, 1], path[0, 1, 1].expand(4))  # dropped before step 2
    assert not torch.equal(path[-1, 1, 0], path[-2, 1, 0])  # still selected
    default_lr = _rule_path(["sara(threshold=0.9)"] * 2, 1)
    configs = [dict(lr=1e-3 * math.exp(-350 * 0.9), tau=0.9, wd=0.01, b=(0.9, 0.999), eps=1e-8, p=-1)] * 2
    _close(default_lr, _reference_path(step, configs, 1))


def test_grokfast_under_a_schedule_scales_the_normalised_lr():
    """With a schedule factor s_t (what a torch lr scheduler does: s_t times the group's initial lr), the class
    steps with s_t·lr/(1 + λ_g); the rule, given the scheduled lr s_t·lr, divides it by 1 + λ_g the same way."""
    spec, factors = "grokfastadamw(lr=0.05, grokfast_lamb=2.0, weight_decay=0.1)", [1.0, 0.7, 0.4, 0.1]
    config = get_optimizer(spec)
    param = torch.nn.Parameter(X0[0].clone())
    opt = config.entry.build([param], config.hyperparams, dtype=torch.float64, seed=0)
    initial = opt.param_groups[0]["lr"]
    assert initial == pytest.approx(0.05 / 3.0)
    rule = RULES["grokfastadamw"]
    hp = stack_hyperparams([config], torch.float64, "cpu")
    x = X0[:1].clone()
    state = rule.init(x, hp)
    for t, factor in enumerate(factors, start=1):
        opt.param_groups[0]["lr"] = initial * factor
        param.grad = SCALE[0] * param.detach() + 0.5
        opt.step()
        rule.step(x, SCALE[:1] * x + 0.5, state, {**hp, "lr": hp["lr"] * factor}, t)
        _close(x[0], param.detach(), rtol=1e-13)


@pytest.mark.parametrize("schedule", ["cosine", "linear"])
def test_grokfast_batched_equals_the_loop_engine_under_a_schedule(schedule):
    """The loop engine scales the class's normalised group lr by the schedule's factor (as torch's schedulers
    do: engines.recipe.set_scheduled_lr), so the batched rule and the class agree under a schedule too."""
    from optbench.engines.batched import run_batched
    from optbench.engines.loop import run_loop
    from optbench.engines.recipe import Recipe
    from optbench.problems import get_problem

    problem, recipe = get_problem("rosenbrock(noise=0.1)"), Recipe(schedule=schedule)
    configs = [get_optimizer(f"grokfastadamw(lr={lr}, grokfast_lamb=2.0)") for lr in (0.01, 0.03)]
    batched = run_batched(problem, configs, [0, 0], 12, 1, recipe=recipe)
    for k, config in enumerate(configs):
        loop = run_loop(problem, config, 0, 12, 1, recipe=recipe)
        np.testing.assert_allclose(batched.loss[:, k], loop.loss[:, 0], rtol=1e-10)
