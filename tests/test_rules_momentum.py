"""The batched rules of engines/rules_momentum.py (Tiger, SignSGD, SGDW, QHM, AggMo, PID, PNM, AdaPNM, SGDP,
pytorch_optimizer's AdaDelta, Kate, VSGD, MSVAG): each rule against the update of its paper (with the library's
documented deviations), written here by hand in plain torch float64, one configuration at a time, for a few steps
on a tiny input with per-configuration hyperparameters; and against the class on the branches the registry
defaults of tests/test_engine_contract.py do not reach (the engine contract's batched == loop, to 1e-8 in float64,
on analytic problems, an MLP and, for SGDP's per-tensor projection, a CNN)."""

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
from optbench.errors import UsageError
from optbench.optimizers import get_optimizer
from optbench.problems import get_problem

# settings that take the branches the registry defaults do not: coupled, decoupled and fixed decay, momentum on
# and off, dampening, Nesterov, AMSBound off, other betas and gains, SGDP's projection and its decay ratio
VARIANTS = {
    "tiger": ["tiger(lr=0.01, weight_decouple=False, weight_decay=0.1)",
              "tiger(lr=0.01, fixed_decay=True, weight_decay=0.01, beta=0.5)"],
    "signsgd": ["signsgd(lr=0.01, momentum=0.0, weight_decay=0.1)",
                "signsgd(lr=0.01, momentum=0.5, weight_decouple=False, weight_decay=0.1)"],
    "sgdw": ["sgdw(lr=1e-3, momentum=0.9, dampening=0.5, weight_decay=0.1)",
             "sgdw(lr=1e-3, momentum=0.5, nesterov=True, weight_decouple=False, weight_decay=0.1)"],
    "qhm": ["qhm(lr=1e-3, momentum=0.9, nu=0.7, weight_decay=0.1)",
            "qhm(lr=1e-3, momentum=0.5, nu=0.3, weight_decouple=True, fixed_decay=True, weight_decay=0.01)",
            "qhm(lr=1e-3, momentum=0.8, weight_decouple=True, weight_decay=0.1)"],
    "aggmo": ["aggmo(lr=1e-3, betas=(0.5, 0.8, 0.95), weight_decay=0.1)",
              "aggmo(lr=1e-3, weight_decouple=True, fixed_decay=True, weight_decay=0.01)"],
    "pid": ["pid(lr=1e-4, momentum=0.9)",
            "pid(lr=1e-3, momentum=0.5, dampening=0.3, integral=2.0, derivative=1.0, weight_decay=0.1)",
            "pid(lr=1e-3, momentum=0.8, weight_decouple=True, fixed_decay=True, weight_decay=0.01)"],
    "pnm": ["pnm(lr=1e-3, betas=(0.8, 0.5), weight_decay=0.1)",
            "pnm(lr=1e-3, weight_decouple=False, weight_decay=0.1)",
            "pnm(lr=1e-3, fixed_decay=True, weight_decay=0.01)"],
    "adapnm": ["adapnm(lr=0.01, ams_bound=False, betas=(0.8, 0.99, 0.5))",
               "adapnm(lr=0.01, weight_decouple=False, weight_decay=0.1, eps=1e-3)",
               "adapnm(lr=0.01, fixed_decay=True, weight_decay=0.01)"],
    "sgdp": ["sgdp(lr=1e-3, momentum=0.9, weight_decay=0.1)",
             "sgdp(lr=1e-3, momentum=0.5, nesterov=True, dampening=0.3, fixed_decay=True, weight_decay=0.01)",
             "sgdp(lr=1e-3, momentum=0.9, weight_decouple=False, weight_decay=0.1)",
             "sgdp(lr=1e-3, momentum=0.5, delta=2.0, wd_ratio=0.5, weight_decay=0.1)",
             "sgdp(lr=1e-3, delta=20.0, eps=1e-3, weight_decay=0.1)"],
    "po.adadelta": ["po.adadelta(rho=0.5, weight_decay=0.1)",
                    "po.adadelta(weight_decouple=True, fixed_decay=True, weight_decay=0.01, eps=1e-3)"],
    "kate": ["kate(lr=0.01, delta=0.5)",
             "kate(lr=0.01, weight_decouple=False, weight_decay=0.1, eps=1e-3)",
             "kate(lr=0.01, fixed_decay=True, weight_decay=0.01)"],
    "vsgd": ["vsgd(lr=0.05, ghattg=10.0, ps=1e-4, tau1=0.5, tau2=0.7)",
             "vsgd(lr=0.05, weight_decouple=False, weight_decay=0.1)",
             "vsgd(lr=0.05, weight_decay=0.01, eps=1e-3)"],
    "msvag": ["msvag(lr=0.01, beta=0.5)", "msvag(lr=0.01, beta=0.0)", "msvag(lr=1e-3, beta=0.99)"],
}
SPECS = [spec for specs in VARIANTS.values() for spec in specs]


def _variant_groups(spec):
    config = get_optimizer(spec)
    return [config, config.with_hyperparams(lr=config.lr / 2)], [0, 7]


@pytest.mark.parametrize("spec", SPECS)
@pytest.mark.parametrize("problem_spec", ["beale", "rosenbrock(noise=0.1)"])
def test_momentum_variants_equal_the_class_on_analytic_problems(spec, problem_spec):
    problem = get_problem(problem_spec)
    configs, seeds = _variant_groups(spec)
    assert all(engine_supports("batched", problem, c) for c in configs)
    _analytic_group(problem, configs, seeds)


@pytest.mark.parametrize("spec", SPECS)
def test_momentum_variants_equal_the_class_on_an_mlp(network_data, spec):
    problem = get_problem(MLP)
    configs, seeds = _variant_groups(spec)
    assert all(engine_supports("batched", problem, c) for c in configs)
    _network_group(problem, configs, seeds)


@pytest.mark.parametrize("spec", VARIANTS["sgdp"])
def test_sgdp_variants_equal_the_class_on_a_cnn(network_data, spec):
    """Kernels (ndim 4, projected per output channel or as a whole) next to biases (never projected)."""
    problem = get_problem(CNN)
    configs, seeds = _variant_groups(spec)
    _network_group(problem, configs, seeds)


@pytest.mark.parametrize("specs", [["signsgd(lr=0.01, momentum=0.0)", "signsgd(lr=0.01, momentum=0.9)"],
                                   ["sgdw(lr=1e-3, momentum=0.0)", "sgdw(lr=1e-3, momentum=0.9, dampening=0.2)"],
                                   ["pid(lr=1e-3, momentum=0.0)", "pid(lr=1e-3, momentum=0.9)"],
                                   ["sgdp(lr=1e-3, momentum=0.0, delta=2.0, weight_decay=0.1)",
                                    "sgdp(lr=1e-3, momentum=0.9, delta=0.1, weight_decay=0.1)"],
                                   ["sgdp(lr=1e-3, delta=2.0, eps=1e-8)", "sgdp(lr=1e-3, delta=2.0, eps=1.0)"]])
def test_momentum_on_and_off_in_one_group(network_data, specs):
    """μ is a float column: configurations with and without momentum share a group, each keeps its own branch
    (and SGDP's ε, a float the class hands torch's cosine_similarity: one call per distinct ε of the group)."""
    configs = [get_optimizer(spec) for spec in specs]
    _analytic_group(get_problem("rosenbrock(noise=0.1)"), configs, [0, 7])
    _network_group(get_problem(MLP), configs, [0, 7])


def test_aggmo_refuses_repeated_betas():
    """Repeated betas share one buffer in the class (it keys its buffers by β), stepped once per beta: the loop engine
    runs them. (Another number of betas is refused too, though the registry's spec already takes three only.)"""
    from optbench.engines.capabilities import choose_engine

    reason = "share one momentum buffer"
    config = get_optimizer("aggmo(betas=(0.9, 0.9, 0.99))")
    problem = get_problem("rosenbrock")
    assert reason in RULES["aggmo"].refuses(config.hyperparams)
    assert "takes 3 betas" in RULES["aggmo"].refuses({**config.hyperparams, "betas": (0.0, 0.9)})
    assert RULES["aggmo"].refuses(get_optimizer("aggmo").hyperparams) is None
    with pytest.raises(UsageError, match=reason):
        choose_engine("batched", problem, config, {}, "cuda")
    assert choose_engine("auto", problem, config, {}, "cuda") == "loop"


@pytest.mark.parametrize("spec", ["tiger", "signsgd", "signsgd(momentum=0.0)", "sgdw", "sgdw(momentum=0.9)", "qhm",
                                  "aggmo", "pid", "pid(momentum=0.9)", "pnm", "adapnm", "adapnm(ams_bound=False)",
                                  "sgdp", "po.adadelta", "kate", "vsgd", "msvag"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_momentum_rules_declare_the_state_their_class_keeps(spec, dtype):
    config = get_optimizer(spec)
    declared = RULES[config.entry.batched].slots_per_param(config.hyperparams, 5) * dtype.itemsize
    assert declared == probe_state_bytes_per_param(config, 5, dtype)


# ---- the papers' formulas, by hand ------------------------------------------------------------------------

X0 = [[1.0, -0.5, 0.4], [0.3, 0.8, -1.2]]  # two configurations, no zero gradient
CURVATURE = torch.tensor([1.0, 3.0, -2.0], dtype=torch.float64)
STEPS = 4


def _grad(y):
    """∇ of ½Σcᵢyᵢ² + 0.5Σyᵢ (a saddle: the methods move in every direction), any leading shape."""
    return CURVATURE * y + 0.5


def _rule_path(specs, x0=X0, grad=_grad, steps=STEPS, layout=None):
    """The rule of ``specs`` (one group: a configuration per row of ``x0``) for ``steps`` steps of ``grad``: the
    ``[K, d]`` points after each step."""
    configs = [get_optimizer(spec) for spec in specs]
    rule = RULES[configs[0].entry.batched]
    hp = stack_hyperparams(configs, torch.float64, "cpu")
    x = torch.tensor(x0, dtype=torch.float64)
    state = rule.init(x, hp)
    state["layout"] = layout or ParamLayout.vector(x.shape[-1])
    path = []
    for t in range(1, steps + 1):
        rule.step(x, grad(x), state, hp, t)
        path.append(x.clone())
    return path


def _reference_path(update, settings, x0=X0, grad=_grad, steps=STEPS):
    """The hand-written method ``update(x, g, memory, t, **setting) -> x`` for each configuration's ``setting``
    (``memory``: a dict it keeps its state in), as ``[K, d]`` points after each step."""
    rows = []
    for start, setting in zip(x0, settings):
        x, memory, row = torch.tensor(start, dtype=torch.float64), {}, []
        for t in range(1, steps + 1):
            x = update(x, grad(x), memory, t, **setting)
            row.append(x)
        rows.append(row)
    return [torch.stack([row[t] for row in rows]) for t in range(steps)]


def _spec(name, setting):
    return f"{name}({', '.join(f'{key}={value!r}' for key, value in setting.items())})"


def _check(name, update, settings, rtol=1e-12, **kwargs):
    rule = _rule_path([_spec(name, s) for s in settings], **kwargs)
    reference = _reference_path(update, settings, **{k: v for k, v in kwargs.items() if k != "layout"})
    assert not torch.allclose(rule[-1], torch.tensor(X0, dtype=torch.float64)), "it moved"
    for t, (got, expected) in enumerate(zip(rule, reference), start=1):
        np.testing.assert_allclose(got.numpy(), expected.numpy(), rtol=rtol, atol=1e-15, err_msg=f"step {t}")


def _zeros(memory, *names):
    for name in names:
        memory.setdefault(name, torch.zeros(3, dtype=torch.float64))


def test_tiger_follows_its_definition():
    """Su 2023: m ← βm + (1 − β)g, x ← x − η(sign(m) + λx)."""
    def tiger(x, g, memory, t, lr, beta, weight_decay):
        _zeros(memory, "m")
        memory["m"] = beta * memory["m"] + (1 - beta) * g
        return x - lr * (torch.sign(memory["m"]) + weight_decay * x)

    _check("tiger", tiger, [dict(lr=0.05, beta=0.9, weight_decay=0.1), dict(lr=0.02, beta=0.5, weight_decay=0.0)])


def test_tiger_coupled_and_fixed_decay():
    """The library's options: coupled (λx added to g before the average) and decay unscaled by η."""
    def coupled(x, g, memory, t, lr, beta, weight_decay, weight_decouple):
        _zeros(memory, "m")
        memory["m"] = beta * memory["m"] + (1 - beta) * (g + weight_decay * x)
        return x - lr * torch.sign(memory["m"])

    _check("tiger", coupled, [dict(lr=0.05, beta=0.9, weight_decay=2.0, weight_decouple=False),
                              dict(lr=0.02, beta=0.5, weight_decay=1.0, weight_decouple=False)])

    def fixed(x, g, memory, t, lr, beta, weight_decay, fixed_decay):
        _zeros(memory, "m")
        memory["m"] = beta * memory["m"] + (1 - beta) * g
        return x * (1 - weight_decay) - lr * torch.sign(memory["m"])

    _check("tiger", fixed, [dict(lr=0.05, beta=0.9, weight_decay=0.1, fixed_decay=True),
                            dict(lr=0.02, beta=0.5, weight_decay=0.01, fixed_decay=True)])


def test_signsgd_and_signum_follow_bernstein_et_al():
    """Algorithm 1 (β = 0: x ← x − η sign(g)) and Algorithm 3 (Signum: m ← βm + (1 − β)g, x ← x − η sign(m)), in
    one group; decoupled decay x ← x(1 − λη) first."""
    def signum(x, g, memory, t, lr, momentum, weight_decay):
        _zeros(memory, "m")
        x = x * (1 - lr * weight_decay)
        if momentum == 0:
            return x - lr * torch.sign(g)
        memory["m"] = momentum * memory["m"] + (1 - momentum) * g
        return x - lr * torch.sign(memory["m"])

    _check("signsgd", signum, [dict(lr=0.05, momentum=0.0, weight_decay=0.1),
                               dict(lr=0.02, momentum=0.9, weight_decay=0.05)])


def test_sgdw_follows_decoupled_weight_decay():
    """Loshchilov & Hutter 2019, Algorithm 1 (SGDW) with torch.optim.SGD's buffer: b₁ = g, b ← μb + (1 − τ)g,
    d = b (or g + μb, Nesterov), x ← x(1 − λη) − ηd; μ = 0 is plain SGD with decoupled decay."""
    def sgdw(x, g, memory, t, lr, momentum, dampening, weight_decay, nesterov=False):
        if momentum == 0:
            return x * (1 - lr * weight_decay) - lr * g
        memory["b"] = g.clone() if t == 1 else momentum * memory["b"] + (1 - dampening) * g
        d = g + momentum * memory["b"] if nesterov else memory["b"]
        return x * (1 - lr * weight_decay) - lr * d

    _check("sgdw", sgdw, [dict(lr=0.05, momentum=0.9, dampening=0.3, weight_decay=0.1),
                          dict(lr=0.02, momentum=0.0, dampening=0.0, weight_decay=0.2)])
    _check("sgdw", sgdw, [dict(lr=0.05, momentum=0.9, dampening=0.0, weight_decay=0.1, nesterov=True),
                          dict(lr=0.02, momentum=0.5, dampening=0.1, weight_decay=0.0, nesterov=True)])


def test_sgdw_coupled_decay_is_l2_in_the_gradient():
    def sgd_l2(x, g, memory, t, lr, momentum, weight_decay, weight_decouple):
        g = g + weight_decay * x
        memory["b"] = g.clone() if t == 1 else momentum * memory["b"] + g
        return x - lr * memory["b"]

    _check("sgdw", sgd_l2, [dict(lr=0.05, momentum=0.9, weight_decay=0.1, weight_decouple=False),
                            dict(lr=0.02, momentum=0.5, weight_decay=0.3, weight_decouple=False)])


def test_qhm_follows_ma_and_yarats():
    """Ma & Yarats 2019: g_buf ← βg_buf + (1 − β)g, x ← x − η((1 − ν)g + νg_buf); coupled decay g ← g + λx."""
    def qhm(x, g, memory, t, lr, momentum, nu, weight_decay):
        _zeros(memory, "b")
        g = g + weight_decay * x
        memory["b"] = momentum * memory["b"] + (1 - momentum) * g
        return x - lr * ((1 - nu) * g + nu * memory["b"])

    _check("qhm", qhm, [dict(lr=0.05, momentum=0.9, nu=0.7, weight_decay=0.1),
                        dict(lr=0.02, momentum=0.5, nu=0.3, weight_decay=0.0)])


def test_qhm_decoupled_decay():
    def qhm(x, g, memory, t, lr, momentum, nu, weight_decay, weight_decouple, fixed_decay):
        _zeros(memory, "b")
        x = x * (1 - weight_decay * (1.0 if fixed_decay else lr))
        memory["b"] = momentum * memory["b"] + (1 - momentum) * g
        return x - lr * ((1 - nu) * g + nu * memory["b"])

    _check("qhm", qhm, [dict(lr=0.05, momentum=0.9, nu=0.7, weight_decay=0.1, weight_decouple=True,
                             fixed_decay=True),
                        dict(lr=0.02, momentum=0.5, nu=0.3, weight_decay=0.05, weight_decouple=True,
                             fixed_decay=True)])
    _check("qhm", qhm, [dict(lr=0.05, momentum=0.9, nu=0.7, weight_decay=0.1, weight_decouple=True,
                             fixed_decay=False),
                        dict(lr=0.02, momentum=0.5, nu=0.3, weight_decay=0.05, weight_decouple=True,
                             fixed_decay=False)])


def test_aggmo_follows_lucas_et_al():
    """Lucas et al. 2019, Algorithm 1: v⁽ⁱ⁾ ← β⁽ⁱ⁾v⁽ⁱ⁾ − g, x ← x + (η/K)Σᵢv⁽ⁱ⁾ (K = 3); coupled decay g ← g + λx."""
    def aggmo(x, g, memory, t, lr, betas, weight_decay):
        g = g + weight_decay * x
        memory.setdefault("v", [torch.zeros(3, dtype=torch.float64) for _ in betas])
        memory["v"] = [beta * v - g for beta, v in zip(betas, memory["v"])]
        return x + lr / len(betas) * sum(memory["v"])

    _check("aggmo", aggmo, [dict(lr=0.05, betas=(0.0, 0.9, 0.99), weight_decay=0.1),
                            dict(lr=0.02, betas=(0.5, 0.7, 0.8), weight_decay=0.0)])


def test_pid_follows_its_documented_update():
    """An et al. 2018, Algorithm 1, in the library's form: I ← μI + (1 − τ)g, D ← μD + (1 − μ)(g − g_prev)
    (D ← μD at step 1), x ← x − η(g + K_iI + K_dD); μ = 0 is plain SGD, in the same group."""
    def pid(x, g, memory, t, lr, momentum, dampening, integral, derivative):
        if momentum == 0:
            return x - lr * g
        _zeros(memory, "i", "d")
        memory["i"] = momentum * memory["i"] + (1 - dampening) * g
        memory["d"] = momentum * memory["d"]
        if t > 1:
            memory["d"] = memory["d"] + (1 - momentum) * (g - memory["prev"])
        memory["prev"] = g
        return x - lr * (g + integral * memory["i"] + derivative * memory["d"])

    _check("pid", pid, [dict(lr=0.01, momentum=0.9, dampening=0.1, integral=5.0, derivative=10.0),
                        dict(lr=0.02, momentum=0.0, dampening=0.0, integral=2.0, derivative=1.0)])
    _check("pid", pid, [dict(lr=0.01, momentum=0.9, dampening=0.1, integral=5.0, derivative=10.0),
                        dict(lr=0.02, momentum=0.5, dampening=0.0, integral=2.0, derivative=1.0)])


def test_pid_first_derivative_is_zero():
    """The library's D at step 1 is μ·0 = 0 (no previous gradient), not (1 − μ)g₁: the first step is
    x ← x − η(1 + K_i(1 − τ))g."""
    (x1,) = _rule_path(["pid(lr=0.01, momentum=0.9, integral=5.0, derivative=10.0)"], x0=X0[:1], steps=1)
    x0 = torch.tensor(X0[0], dtype=torch.float64)
    np.testing.assert_allclose(x1[0].numpy(), (x0 - 0.01 * (1 + 5.0) * _grad(x0)).numpy(), rtol=1e-14)


def _pnm_momentum(memory, g, t, beta1, beta0):
    """Positive-negative momentum: two momenta, the one of step t updated from its value two steps ago."""
    memory.setdefault("m", [torch.zeros(3, dtype=torch.float64), torch.zeros(3, dtype=torch.float64)])
    current = memory["m"][t % 2]
    current = beta1 ** 2 * current + (1 - beta1 ** 2) * g
    memory["m"][t % 2] = current
    previous = memory["m"][(t + 1) % 2]
    return ((1 + beta0) * current - beta0 * previous) / math.sqrt((1 + beta0) ** 2 + beta0 ** 2)


def test_pnm_follows_xie_et_al():
    """Xie et al. 2021, Algorithm 2: m_t = β₁²m_{t−2} + (1 − β₁²)g_t, x ← x − η((1 + β₀)m_t − β₀m_{t−1})/
    √((1 + β₀)² + β₀²), with (β₁, β₀) = betas; decoupled decay x ← x(1 − λη) first."""
    def pnm(x, g, memory, t, lr, betas, weight_decay):
        x = x * (1 - lr * weight_decay)
        return x - lr * _pnm_momentum(memory, g, t, *betas)

    _check("pnm", pnm, [dict(lr=0.05, betas=(0.9, 1.0), weight_decay=0.1),
                        dict(lr=0.02, betas=(0.8, 0.5), weight_decay=0.0)], steps=5)


def test_adapnm_follows_xie_et_al():
    """Xie et al. 2021, Algorithm 3 (AdaPNM, AMSGrad max), with the library's ε: x ← x − η/(1 − β₁ᵗ) · m̂ /
    ((√(v_max + 1e-15) + ε)/√(1 − β₂ᵗ)), m̂ the positive-negative momentum; without ams_bound v itself."""
    def adapnm(x, g, memory, t, lr, betas, eps, ams_bound=True):
        beta1, beta2, beta0 = betas
        _zeros(memory, "v", "vmax")
        momentum = _pnm_momentum(memory, g, t, beta1, beta0)
        memory["v"] = beta2 * memory["v"] + (1 - beta2) * g * g
        memory["vmax"] = torch.maximum(memory["vmax"], memory["v"])
        second = memory["vmax"] if ams_bound else memory["v"]
        denominator = (torch.sqrt(second + 1e-15) + eps) / math.sqrt(1 - beta2 ** t)
        return x - lr / (1 - beta1 ** t) * momentum / denominator

    _check("adapnm", adapnm, [dict(lr=0.05, betas=(0.9, 0.999, 1.0), eps=1e-8),
                              dict(lr=0.02, betas=(0.8, 0.9, 0.5), eps=1e-3)], steps=5)
    _check("adapnm", adapnm, [dict(lr=0.05, betas=(0.9, 0.999, 1.0), eps=1e-8, ams_bound=False),
                              dict(lr=0.02, betas=(0.8, 0.9, 0.5), eps=1e-3, ams_bound=False)], steps=5)


def test_adapnm_epsilon_is_scaled_by_the_bias_correction():
    """The documented deviation: with a large ε (and β₀ = 0) the first step is
    η(1 − β₁²)/(1 − β₁) · g√(1 − β₂)/(√((1 − β₂)g² + 1e-15) + ε), not the paper's η(1 − β₁²)/(1 − β₁) · g/(|g| + ε)
    (ε added after the bias correction of v)."""
    lr, beta1, beta2, eps = 0.1, 0.9, 0.999, 0.5
    (x1,) = _rule_path([f"adapnm(lr={lr}, betas=({beta1}, {beta2}, 0.0), eps={eps})"], x0=X0[:1], steps=1)
    x0 = torch.tensor(X0[0], dtype=torch.float64)
    g = _grad(x0)
    scale = lr * (1 - beta1 ** 2) / (1 - beta1)
    library = x0 - scale * g * math.sqrt(1 - beta2) / (torch.sqrt((1 - beta2) * g * g + 1e-15) + eps)
    paper = x0 - scale * g / (g.abs() + eps)
    np.testing.assert_allclose(x1[0].numpy(), library.numpy(), rtol=1e-13)
    assert not np.allclose(x1[0].numpy(), paper.numpy(), rtol=1e-3)


def test_sgdp_on_a_vector_is_momentum_sgd_with_scaled_decay():
    """A vector (an analytic problem's, a bias) is never projected: b ← μb + (1 − τ)g, x ← x(1 − λη/(1 − μ)) − ηb
    (the library's decay ratio 1/(1 − μ))."""
    def sgdp(x, g, memory, t, lr, momentum, dampening, weight_decay):
        _zeros(memory, "b")
        memory["b"] = momentum * memory["b"] + (1 - dampening) * g
        return x * (1 - lr * weight_decay / (1 - momentum)) - lr * memory["b"]

    _check("sgdp", sgdp, [dict(lr=0.05, momentum=0.9, dampening=0.1, weight_decay=0.1),
                          dict(lr=0.02, momentum=0.0, dampening=0.0, weight_decay=0.3)])


def test_sgdp_coupled_decay_has_no_effect():
    """weight_decouple=False: the class adds λx to the gradient after the update is formed, so nothing changes."""
    with_decay = _rule_path(["sgdp(lr=0.05, momentum=0.9, weight_decouple=False, weight_decay=0.5)"], x0=X0[:1])
    without = _rule_path(["sgdp(lr=0.05, momentum=0.9, weight_decay=0.0)"], x0=X0[:1])
    np.testing.assert_array_equal(with_decay[-1].numpy(), without[-1].numpy())


# one 2 × 3 weight matrix per configuration: rows nearly orthogonal to the gradient (channel projection), rows
# aligned but cancelling over the whole matrix (layer projection), and a gradient along x (no projection)
SGDP_X0 = [[1.0, 0.0, 0.0, 0.0, 1.0, 0.0], [1.0, 0.0, 0.0, 0.0, 1.0, 0.0], [1.0, 2.0, 0.5, -1.0, 0.3, 0.2]]
SGDP_GRADS = [[0.0, 0.3, -0.2, 0.4, 0.0, 0.1], [1.0, 0.05, 0.0, 0.0, -1.0, 0.05], [1.0, 2.0, 0.5, -1.0, 0.3, 0.2]]


def _sgdp_grad(y):
    return torch.tensor(SGDP_GRADS, dtype=torch.float64) + 0.01 * y


def _cosines(a, b):
    return (a * b).sum(-1).abs() / (a.norm(dim=-1) * b.norm(dim=-1))


def test_sgdp_projects_a_matrix_per_channel_or_as_a_whole():
    """Heo et al. 2021, Algorithm 1 (SGDP): for a matrix, if max_c |cos(x_c, g_c)| < δ/√(row length), remove from
    the update d its component along each x̂_c = x_c/(‖x_c‖ + ε); else if |cos(x, g)| < δ/√n, along x̂ of the whole
    matrix; the decay ratio is then wd_ratio: x ← x(1 − λη·ratio/(1 − μ)) − ηd."""
    delta, wd_ratio, lr, momentum, wd, eps = 0.5, 0.3, 0.1, 0.5, 0.2, 1e-8
    branches = []

    def sgdp(x, g, memory, t, k):
        memory.setdefault("b", torch.zeros(6, dtype=torch.float64))
        memory["b"] = momentum * memory["b"] + g[k]
        d = memory["b"].reshape(2, 3)
        p = x.reshape(2, 3)
        grad = g[k].reshape(2, 3)
        ratio = 1.0
        if _cosines(grad, p).max() < delta / math.sqrt(3):
            unit = p / (p.norm(dim=-1, keepdim=True) + eps)
            d = d - (unit * d).sum(-1, keepdim=True) * unit
            ratio, branch = wd_ratio, "channel"
        elif _cosines(grad.reshape(1, 6), p.reshape(1, 6)).max() < delta / math.sqrt(6):
            unit = p / (p.norm() + eps)
            d = d - (unit * d).sum() * unit
            ratio, branch = wd_ratio, "layer"
        else:
            branch = "none"
        if t == 1:
            branches.append(branch)
        return x * (1 - wd * lr * ratio / (1 - momentum)) - lr * d.reshape(6)

    spec = f"sgdp(lr={lr}, momentum={momentum}, delta={delta}, wd_ratio={wd_ratio}, weight_decay={wd})"
    layout = ParamLayout([(2, 3)])
    rule = _rule_path([spec] * 3, x0=SGDP_X0, grad=_sgdp_grad, layout=layout)
    rows = []
    for k, start in enumerate(SGDP_X0):
        x, memory, row = torch.tensor(start, dtype=torch.float64), {}, []
        for t in range(1, STEPS + 1):
            full = _sgdp_grad(torch.stack([x] * 3))  # configuration k's gradient is row k
            x = sgdp(x, full, memory, t, k)
            row.append(x)
        rows.append(row)
    assert branches == ["channel", "layer", "none"]
    for t in range(STEPS):
        np.testing.assert_allclose(rule[t].numpy(), torch.stack([row[t] for row in rows]).numpy(), rtol=1e-12,
                                   atol=1e-15, err_msg=f"step {t + 1}")


def test_pytorch_optimizer_adadelta_follows_zeiler():
    """Zeiler 2012, Algorithm 1, with an lr η (η = 1 is the paper's): v ← ρv + (1 − ρ)g², Δ = √(u + ε)/√(v + ε)·g,
    u ← ρu + (1 − ρ)Δ², x ← x − ηΔ; coupled decay g ← g + λx."""
    def adadelta(x, g, memory, t, lr, rho, eps, weight_decay):
        _zeros(memory, "v", "u")
        g = g + weight_decay * x
        memory["v"] = rho * memory["v"] + (1 - rho) * g * g
        delta = torch.sqrt(memory["u"] + eps) / torch.sqrt(memory["v"] + eps) * g
        memory["u"] = rho * memory["u"] + (1 - rho) * delta * delta
        return x - lr * delta

    _check("po.adadelta", adadelta, [dict(lr=1.0, rho=0.9, eps=1e-6, weight_decay=0.1),
                                     dict(lr=0.5, rho=0.5, eps=1e-3, weight_decay=0.0)])


def test_kate_follows_choudhury_et_al():
    """Choudhury et al. 2024, Algorithm 1, with the library's ε in b²: b² ← b² + g² + ε, m² ← m² + δg² + g²/b²,
    x ← x − η m g/b²."""
    def kate(x, g, memory, t, lr, delta, eps):
        _zeros(memory, "b2", "m2")
        memory["b2"] = memory["b2"] + g * g + eps
        memory["m2"] = memory["m2"] + delta * g * g + g * g / memory["b2"]
        return x - lr * torch.sqrt(memory["m2"]) * g / memory["b2"]

    _check("kate", kate, [dict(lr=0.05, delta=0.0, eps=1e-8), dict(lr=0.02, delta=0.5, eps=1e-3)], rtol=1e-11)


def test_kate_coupled_decay():
    def kate(x, g, memory, t, lr, weight_decay, weight_decouple):
        _zeros(memory, "b2", "m2")
        g = g + weight_decay * x
        memory["b2"] = memory["b2"] + g * g + 1e-8
        memory["m2"] = memory["m2"] + g * g / memory["b2"]
        return x - lr * torch.sqrt(memory["m2"]) * g / memory["b2"]

    _check("kate", kate, [dict(lr=0.05, weight_decay=0.1, weight_decouple=False),
                          dict(lr=0.02, weight_decay=0.5, weight_decouple=False)], rtol=1e-11)


def test_vsgd_follows_chen_et_al():
    """Chen et al. 2024, Algorithm 1: priors a = 2γ + 1 + 10⁻⁴, b_g⁰ = 2γ, b_ĝ⁰ = 2Kγ; σ² = b/a (b⁰/(a − 1) at
    step 1); μ ← (σ_ĝ²μ + σ_g²g)/(σ_g² + σ_ĝ²); s = μ² + σ_g²σ_ĝ²/(σ_g² + σ_ĝ²); b_g, b_ĝ move towards
    b_g⁰ + s − 2μμ_prev + μ_prev² and b_ĝ⁰ + s − 2gμ + g² at rates t^(−τ₁), t^(−τ₂); x ← x − ημ/(√s + ε)."""
    def vsgd(x, g, memory, t, lr, ghattg, ps, tau1, tau2, eps):
        a, bg0, bhg0 = 2 * ps + 1 + 1e-4, 2 * ps, 2 * ghattg * ps
        memory.setdefault("mu", torch.zeros(3, dtype=torch.float64))
        memory.setdefault("bg", torch.full((3,), bg0, dtype=torch.float64))
        memory.setdefault("bhg", torch.full((3,), bhg0, dtype=torch.float64))
        if t == 1:
            sg = torch.full((3,), bg0 / (a - 1), dtype=torch.float64)
            shg = torch.full((3,), bhg0 / (a - 1), dtype=torch.float64)
        else:
            sg, shg = memory["bg"] / a, memory["bhg"] / a
        previous = memory["mu"]
        mu = (shg * previous + sg * g) / (sg + shg)
        s = mu ** 2 + sg * shg / (sg + shg)
        rho1, rho2 = t ** -tau1, t ** -tau2
        memory["bg"] = (1 - rho1) * memory["bg"] + rho1 * (bg0 + s - 2 * mu * previous + previous ** 2)
        memory["bhg"] = (1 - rho2) * memory["bhg"] + rho2 * (bhg0 + s - 2 * g * mu + g ** 2)
        memory["mu"] = mu
        return x - lr * mu / (torch.sqrt(s) + eps)

    _check("vsgd", vsgd, [dict(lr=0.1, ghattg=30.0, ps=1e-8, tau1=0.81, tau2=0.9, eps=1e-8),
                          dict(lr=0.05, ghattg=10.0, ps=0.1, tau1=0.5, tau2=0.7, eps=1e-3)], rtol=1e-10)


def test_msvag_follows_balles_and_hennig():
    """Balles & Hennig 2018, Algorithm 1 (M-SVAG) with ρ(β, t) = (1 − β)(1 + βᵗ)/((1 + β)(1 − βᵗ)) bounded by
    0.9999, γ = m̃²/(m̃² + ρs) clipped to [0, 1] (0 where 0/0)."""
    def msvag(x, g, memory, t, lr, beta):
        _zeros(memory, "m", "v")
        memory["m"] = beta * memory["m"] + (1 - beta) * g
        memory["v"] = beta * memory["v"] + (1 - beta) * g * g
        m, v = memory["m"] / (1 - beta ** t), memory["v"] / (1 - beta ** t)
        rho = min((1 - beta) * (1 + beta ** t) / ((1 + beta) * (1 - beta ** t)), 0.9999)
        s = (v - m ** 2) / (1 - rho)
        gamma = torch.nan_to_num(m ** 2 / (m ** 2 + rho * s), nan=0.0).clamp(0.0, 1.0)
        return x - lr * gamma * m

    # the grad's noise-free: s ≈ 0 at first, so γ ≈ 1 early; β = 0.5 then mixes
    _check("msvag", msvag, [dict(lr=0.05, beta=0.9), dict(lr=0.02, beta=0.5)], rtol=1e-9)


def test_msvag_shrinks_noisy_coordinates():
    """Variance adaptation: a coordinate whose gradient flips sign every step gets γ ≪ 1, a steady one γ ≈ 1."""
    flips = iter([1.0, -1.0, 1.0, -1.0, 1.0])

    def grad(y):
        return torch.tensor([[next(flips), 1.0, 1.0]], dtype=torch.float64).expand_as(y).clone()

    path = _rule_path(["msvag(lr=0.1, beta=0.5)"], x0=[[0.0, 0.0, 0.0]], grad=grad, steps=5)
    moves = (path[-1] - path[-2])[0].abs()
    assert moves[0] < 0.1 * moves[1] and moves[1] == pytest.approx(0.1)
