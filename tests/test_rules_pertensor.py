"""The batched rules of engines/rules_pertensor.py (methods with per-tensor statistics): each rule against its
paper's update formula, written here by hand in plain torch float64 (a loop over configurations and parameter
tensors, independent of pytorch_optimizer and of the rule's code), for several steps on a small ``[K, P]``
input of two or three parameter tensors with per-configuration hyperparameters; and every option branch the
registry defaults do not reach against the class (batched == loop, to 1e-8 in float64, on analytic problems and
networks)."""

from __future__ import annotations

import functools
import math
import re

import numpy as np
import pytest
import torch
from test_engine_contract import CNN, MLP, _analytic_group, _network_group

from optbench.engines.batched import stack_hyperparams
from optbench.engines.batched_rules import ACCUMULATED, RULES
from optbench.engines.capabilities import engine_supports
from optbench.engines.layout import ParamLayout
from optbench.optimizers import get_optimizer
from optbench.problems import get_problem

TOL = 1e-12
STEPS = 4
# the parameter tensors of the formula tests: a 2 × 3 matrix, a vector, a 2 × 2 matrix
SHAPES = [(2, 3), (3,), (2, 2)]
LAYOUT = ParamLayout(SHAPES)
P = LAYOUT.size


def _x0(K):
    """K distinct starting points ``[K, P]``."""
    base = torch.linspace(-1.2, 1.5, P, dtype=torch.float64)
    return torch.stack([base * (1 + 0.3 * k) + 0.1 * k for k in range(K)])


_CURVATURE = torch.linspace(0.5, 3.0, P, dtype=torch.float64)
_SHIFT = torch.linspace(-0.4, 0.6, P, dtype=torch.float64)


def _grad(x):
    """A gradient field that depends on the point (so the formula's own trajectory matters): a quadratic's."""
    return _CURVATURE * x + _SHIFT + 0.2 * torch.sin(3 * x)


def _rule_path(specs, x0, layout=LAYOUT, steps=STEPS, grad=_grad):
    """The rule of ``specs`` (one configuration each, one group) from ``x0`` for ``steps`` steps of ``grad``:
    the points after each step, ``[steps, K, P]``."""
    configs = [get_optimizer(spec) for spec in specs]
    rule = RULES[configs[0].entry.batched]
    hp = stack_hyperparams(configs, torch.float64, "cpu")
    x = x0.clone()
    state = rule.init(x, hp)
    state["layout"] = layout
    path = []
    for t in range(1, steps + 1):
        g = grad(x)
        if ACCUMULATED in rule.needs and state["grad_buffer"] is not None:  # as the engines add it
            g = g + state["grad_buffer"]
        rule.step(x, g, state, hp, t)
        path.append(x.clone())
    return torch.stack(path)


def _split(row, shapes=SHAPES):
    """One configuration's ``[P]`` row as its parameter tensors (views), in order."""
    return [part.view(shape) for part, shape in zip(row.split([math.prod(s) for s in shapes]), shapes)]


def _close(actual, expected, what=""):
    torch.testing.assert_close(actual, expected, rtol=TOL, atol=1e-14, msg=what)


def _variant_groups(spec):
    config = get_optimizer(spec)
    return [config, config.with_hyperparams(lr=config.lr / 2)], [0, 7]


# settings that take the branches the registry defaults do not (each spec is one group at two lrs and seeds)
VARIANTS = {
    "lamb-paper": ["lamb-paper(lr=0.01, weight_decay=0.1, betas=(0.5, 0.9))",
                   "lamb-paper(lr=0.01, eps=1e-3, weight_decay=0.01)"],
    "stableadamw": ["stableadamw(lr=0.01, weight_decouple=False, weight_decay=0.1)",
                    "stableadamw(lr=0.01, weight_decay=0.0, betas=(0.5, 0.9), eps=1e-3)",
                    "stableadamw(lr=0.01, kahan_sum=False, weight_decay=0.2)"],
    "scion": ["scion(lr=0.01, momentum=0.5, weight_decay=0.1, scale=2.0)",
              "scion(lr=0.01, weight_decay=0.1, weight_decouple=False)",
              "scion(lr=0.01, constraint=True, weight_decay=0.1, momentum=0.9)"],
    "scionlight": ["scionlight(lr=0.01, momentum=0.5, weight_decay=0.1, scale=2.0)",
                   "scionlight(lr=0.01, weight_decay=0.1, weight_decouple=False)",
                   "scionlight(lr=0.01, constraint=True, weight_decay=0.1)"],
    "stablespam": ["stablespam(lr=0.01, update_proj_gap=3, weight_decay=0.1, theta=0.5)",
                   "stablespam(lr=0.01, gamma1=-1.0, gamma2=0.5, betas=(0.5, 0.9), eps=1e-3, update_proj_gap=4)"],
    "sgdsai": ["sgdsai(lr=1e-3, momentum=0.0, weight_decay=0.1, weight_decouple=False)",
               "sgdsai(lr=1e-3, momentum=0.5, weight_decay=0.1, weight_decouple=False)",
               "sgdsai(lr=1e-3, momentum=0.0, weight_decay=0.1, eps=1e-3)"],
    "tam": ["tam(lr=1e-3, momentum=0.5, decay_rate=0.5, weight_decay=0.1)",
            "tam(lr=1e-3, weight_decay=0.1, fixed_decay=True, eps=1e-3)",
            "tam(lr=1e-3, weight_decay=0.1, weight_decouple=False)"],
    "racs": ["racs(lr=0.01, beta=0.5, gamma=1.5, weight_decay=0.1, weight_decouple=False)",
             "racs(lr=0.01, alpha=0.5, weight_decay=0.1, fixed_decay=True, eps=1e-3)",
             "racs(lr=0.01, gamma=1.0001, weight_decay=0.01)"],
    "rose": ["rose(lr=1e-3, weight_decay=0.1, weight_decouple=True, centralize=False)",
             "rose(lr=1e-3, weight_decay=0.1, weight_decouple=True, fixed_decay=True, stabilize=False)",
             "rose(lr=1e-3, weight_decay=0.1, centralize=False, stabilize=False)"],
    # ScalableShampoo: preconditioning from step 2 (roots every other step, small blocks so that a 2-D vector and
    # every network tensor is preconditioned), SVD roots, the moving-average momentum, coupled decay, coupled lr
    "scalableshampoo": ["scalableshampoo(lr=1e-3, block_size=1, start_preconditioning_step=2, "
                        "preconditioning_compute_steps=2, weight_decay=0.1)",
                        "scalableshampoo(lr=1e-3, block_size=4, start_preconditioning_step=3, "
                        "preconditioning_compute_steps=3, statistics_compute_steps=2, use_svd=True, "
                        "moving_average_for_momentum=True, decoupled_weight_decay=True, weight_decay=0.1)",
                        "scalableshampoo(lr=1e-3, block_size=1, start_preconditioning_step=1, "
                        "preconditioning_compute_steps=1, nesterov=False, decoupled_learning_rate=False, "
                        "inverse_exponent_override=2, betas=(0.5, 0.9))",
                        "scalableshampoo(lr=1e-3, block_size=3, shape_interpretation=False, "
                        "start_preconditioning_step=2, preconditioning_compute_steps=2, matrix_eps=1e-3)"],
}
SPECS = [spec for specs in VARIANTS.values() for spec in specs]
SPEC_IDS = [f"{name}-{i}" for name, specs in VARIANTS.items() for i in range(len(specs))]


@pytest.mark.parametrize("spec", SPECS, ids=SPEC_IDS)
@pytest.mark.parametrize("problem_spec", ["beale", "rosenbrock(noise=0.1)"])
def test_pertensor_variants_equal_the_class_on_analytic_problems(spec, problem_spec):
    problem = get_problem(problem_spec)
    configs, seeds = _variant_groups(spec)
    assert all(engine_supports("batched", problem, c) for c in configs)
    _analytic_group(problem, configs, seeds)


@pytest.mark.parametrize("spec", SPECS, ids=SPEC_IDS)
@pytest.mark.parametrize("network", [MLP, CNN], ids=["mlp", "cnn"])
def test_pertensor_variants_equal_the_class_on_networks(network_data, spec, network):
    # ScalableShampoo's tiny blocks (which precondition a 2-D analytic vector) would make the MLP's 784-wide
    # layer thousands of Schur–Newton problems: blocks of 64 still split it (13 blocks of two preconditioners)
    spec = re.sub(r"block_size=[13],", "block_size=64,", spec)
    problem = get_problem(network)
    configs, seeds = _variant_groups(spec)
    assert all(engine_supports("batched", problem, c) for c in configs)
    _network_group(problem, configs, seeds)


@pytest.mark.parametrize("spec", ["lamb-paper", "stableadamw", "stableadamw(weight_decouple=False)", "scion",
                                  "scionlight", "stablespam", "sgdsai", "sgdsai(momentum=0.0)", "tam", "racs", "rose",
                                  "scalableshampoo"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_pertensor_rules_declare_the_state_their_class_keeps(spec, dtype):
    from optbench.cost import probe_state_bytes_per_param

    config = get_optimizer(spec)
    declared = RULES[config.entry.batched].slots_per_param(config.hyperparams, 5) * dtype.itemsize
    assert declared == probe_state_bytes_per_param(config, 5, dtype)


# ---- LAMB (You et al. 2020, Algorithm 2) -------------------------------------------------------------------

LAMB_CONFIGS = [(0.01, 0.9, 0.999, 1e-6, 0.0), (0.05, 0.5, 0.9, 1e-3, 0.1), (0.02, 0.8, 0.99, 1e-6, 0.01)]


def test_lamb_paper_follows_algorithm_2_per_tensor():
    """m̂ = m/(1 − β₁ᵗ), v̂ = v/(1 − β₂ᵗ), r = m̂/(√v̂ + ε), x ← x − η‖x‖/‖r + λx‖·(r + λx), each tensor its own norms."""
    specs = [f"lamb-paper(lr={lr}, betas=({b1}, {b2}), eps={eps}, weight_decay={wd})"
             for lr, b1, b2, eps, wd in LAMB_CONFIGS]
    x0 = _x0(len(specs))
    path = _rule_path(specs, x0)
    for k, (lr, b1, b2, eps, wd) in enumerate(LAMB_CONFIGS):
        x = x0[k].clone()
        m, v = torch.zeros(P, dtype=torch.float64), torch.zeros(P, dtype=torch.float64)
        for t in range(1, STEPS + 1):
            g = _grad(x)
            m = b1 * m + (1 - b1) * g
            v = b2 * v + (1 - b2) * g * g
            r = (m / (1 - b1 ** t)) / (torch.sqrt(v / (1 - b2 ** t)) + eps)
            new = []
            for xi, ri in zip(_split(x), _split(r)):
                u = ri + wd * xi
                new.append((xi - lr * torch.linalg.norm(xi) / torch.linalg.norm(u) * u).reshape(-1))
            x = torch.cat(new)
            _close(path[t - 1, k], x, f"config {k}, step {t}")


def test_lamb_paper_moves_each_tensor_by_lr_times_its_norm():
    """φ(z) = z: every step moves each parameter tensor by exactly η‖x_t‖ (the defining property of the paper's
    trust ratio, which the library's Lamb does not have)."""
    x0 = _x0(1)
    path = _rule_path(["lamb-paper(lr=0.03, weight_decay=0.05)"], x0)
    before = x0[0]
    for t in range(STEPS):
        after = path[t, 0]
        for xb, xa in zip(_split(before), _split(after)):
            _close(torch.linalg.norm(xa - xb), 0.03 * torch.linalg.norm(xb))
        before = after


def test_lamb_paper_takes_the_plain_step_on_a_zero_tensor():
    """The ratio is 1 where ‖x‖ = 0 (a zero-initialised tensor: the paper leaves 0/0 open): that tensor takes
    x ← x − η(r + λx) = −η r, the others the trust-ratio step."""
    x0 = _x0(1)
    x0[:, 6:9] = 0.0  # the vector
    path = _rule_path(["lamb-paper(lr=0.01)"], x0, steps=1)
    g = _grad(x0[0])
    r = ((1 - 0.9) * g / (1 - 0.9)) / (torch.sqrt((1 - 0.999) * g * g / (1 - 0.999)) + 1e-6)
    _close(path[0, 0, 6:9], -0.01 * r[6:9])
    matrix = x0[0, :6]
    _close(path[0, 0, :6], matrix - 0.01 * torch.linalg.norm(matrix) / torch.linalg.norm(r[:6]) * r[:6])


# ---- StableAdamW (Wortsman et al. 2023) ------------------------------------------------------------------------

STABLE_CONFIGS = [(0.01, 0.9, 0.99, 1e-8, 0.01), (0.05, 0.5, 0.9, 1e-3, 0.1), (0.002, 0.8, 0.999, 1e-6, 0.0)]


def _stableadamw_reference(x0, configs, coupled=False):
    """StableAdamW: β̂ = β(1 − β^(t−1))/(1 − βᵗ), m ← β̂₁m + (1 − β̂₁)g, v ← β̂₂v + (1 − β̂₂)g², per tensor
    RMS = √mean(g²/max(v, ε²)), η_t = η/max(1, RMS), x ← x − η_tλx − η_t m/(√v + ε). ``coupled``: the library's
    option, λx added to g first (and no decoupled decay)."""
    points = []
    for k, (lr, b1, b2, eps, wd) in enumerate(configs):
        x = x0[k].clone()
        m, v = torch.zeros(P, dtype=torch.float64), torch.zeros(P, dtype=torch.float64)
        row = []
        for t in range(1, STEPS + 1):
            g = _grad(x)
            if coupled:
                g = g + wd * x
            hat1 = b1 * (1 - b1 ** (t - 1)) / (1 - b1 ** t)
            hat2 = b2 * (1 - b2 ** (t - 1)) / (1 - b2 ** t)
            m = hat1 * m + (1 - hat1) * g
            v = hat2 * v + (1 - hat2) * g * g
            new = []
            for xi, gi, mi, vi in zip(_split(x), _split(g), _split(m), _split(v)):
                rms = torch.sqrt(torch.mean(gi * gi / torch.clamp(vi, min=eps * eps)))
                eta = lr / max(1.0, rms.item())
                decay = 0.0 if coupled else eta * wd * xi
                new.append((xi - decay - eta * mi / (torch.sqrt(vi) + eps)).reshape(-1))
            x = torch.cat(new)
            row.append(x)
        points.append(torch.stack(row))
    return torch.stack(points, dim=1)  # [steps, K, P]


@pytest.mark.parametrize("coupled", [False, True])
def test_stableadamw_follows_algorithm_1_per_tensor(coupled):
    specs = [f"stableadamw(lr={lr}, betas=({b1}, {b2}), eps={eps}, weight_decay={wd}, weight_decouple={not coupled})"
             for lr, b1, b2, eps, wd in STABLE_CONFIGS]
    x0 = _x0(len(specs))
    _close(_rule_path(specs, x0), _stableadamw_reference(x0, STABLE_CONFIGS, coupled))


def test_stableadamw_first_step_clips_to_the_sign_step():
    """At t = 1, β̂ = 0: m = g and v = g², so RMS = 1 (no clip) and the step is η·g/(|g| + ε) ≈ η·sign(g)."""
    x0 = _x0(1)
    path = _rule_path(["stableadamw(lr=0.01, weight_decay=0.0, eps=1e-12)"], x0, steps=1)
    g = _grad(x0[0])
    _close(path[0, 0], x0[0] - 0.01 * g / (g.abs() + 1e-12))


# ---- SCION and SCIONLight (Pethick et al. 2025, Algorithm 1: uSCG; SCG with the constraint) ----------------

SCION_SHAPES = [(2, 3), (3,), (4, 2), (2, 1, 2, 2)]  # a wide and a tall matrix, a vector, a convolution kernel
SCION_LAYOUT = ParamLayout(SCION_SHAPES)
SCION_P = SCION_LAYOUT.size
QUINTIC = (3.4445, -4.7750, 2.0315)


@pytest.fixture
def scion_newton_schulz_in_float64(monkeypatch):
    """SCION's Newton–Schulz iteration runs in bfloat16 (the library's default; the rule calls the same function):
    the formula tests compare the rule with the hand-written iteration in float64."""
    from pytorch_optimizer.optimizer import scion

    monkeypatch.setattr(scion, "zero_power_via_newton_schulz_5",
                        functools.partial(scion.zero_power_via_newton_schulz_5, dtype=torch.float64))


def _polar(matrix, steps=5):
    """Jordan et al.'s quintic Newton–Schulz approximation of the polar factor UVᵀ: X₀ = M/‖M‖_F (of Mᵀ for a tall
    M), X ← aX + b(XXᵀ)X + c(XXᵀ)²X."""
    tall = matrix.shape[0] > matrix.shape[1]
    x = matrix.T if tall else matrix
    x = x / max(torch.linalg.norm(x).item(), 1e-7)
    a, b, c = QUINTIC
    for _ in range(steps):
        gram = x @ x.T
        x = a * x + b * gram @ x + c * gram @ gram @ x
    return x.T if tall else x


def _lmo(d, shape):
    """The oracle direction of one tensor's norm (the paper's Table: RMS norm for a vector, the RMS→RMS operator
    norm for a matrix, its per-kernel version for a convolution), up to the sign and the radius."""
    if len(shape) == 1:
        return d / (torch.sqrt(torch.mean(d * d)) + 1e-8)
    rows, cols = shape[0], shape[1]
    direction = _polar(d.reshape(rows, -1)).reshape(shape) * math.sqrt(rows / cols)
    return direction / math.prod(shape[2:]) if len(shape) > 2 else direction


def _scion_grad(x):
    curvature = torch.linspace(0.5, 3.0, SCION_P, dtype=torch.float64)
    return curvature * x + torch.linspace(-0.4, 0.6, SCION_P, dtype=torch.float64) + 0.2 * torch.sin(3 * x)


SCION_CONFIGS = [(0.01, 0.1, 1.0, 0.0), (0.05, 0.5, 2.0, 0.1), (0.02, 0.9, 0.5, 0.01)]  # η, α, ρ, λ


def _scion_reference(x0, configs, light=False, constraint=False, coupled=False):
    points = []
    for k, (lr, alpha, rho, wd) in enumerate(configs):
        x = x0[k].clone()
        d = torch.zeros(SCION_P, dtype=torch.float64)
        row = []
        for _ in range(STEPS):
            g = _scion_grad(x)
            if not constraint:
                if coupled:
                    g = g + wd * x
                else:
                    x = x * (1 - wd * lr)
            # SCIONLight: d is the .grad buffer, scaled by 1 − α after each step, the new gradient added to it
            d = g + (1 - alpha) * d if light else (1 - alpha) * d + alpha * g
            s = torch.cat([(rho * _lmo(di, shape)).reshape(-1) for di, shape in zip(_split(d, SCION_SHAPES),
                                                                                    SCION_SHAPES)])
            x = (1 - lr) * x - lr * s if constraint else x - lr * s
            row.append(x)
        points.append(torch.stack(row))
    return torch.stack(points, dim=1)


@pytest.mark.parametrize("name", ["scion", "scionlight"])
@pytest.mark.parametrize("variant", ["uscg", "coupled", "scg"])
def test_scion_follows_the_conditional_gradient_steps_per_tensor(scion_newton_schulz_in_float64, name, variant):
    """uSCG: d ← (1 − α)d + αg, x ← x − ηρ·lmo(d) (SCIONLight: d ← (1 − α)d + g), with decoupled decay x ← x(1 − λη) or
    coupled g ← g + λx; SCG (``constraint``): x ← (1 − η)x − ηρ·lmo(d), no decay."""
    flags = {"uscg": "", "coupled": ", weight_decouple=False", "scg": ", constraint=True"}[variant]
    specs = [f"{name}(lr={lr}, momentum={alpha}, scale={rho}, weight_decay={wd}{flags})"
             for lr, alpha, rho, wd in SCION_CONFIGS]
    x0 = torch.stack([torch.linspace(-1.2, 1.5, SCION_P, dtype=torch.float64) * (1 + 0.3 * k) + 0.1 * k
                      for k in range(len(specs))])
    path = _rule_path(specs, x0, SCION_LAYOUT, grad=_scion_grad)
    expected = _scion_reference(x0, SCION_CONFIGS, light=name == "scionlight", constraint=variant == "scg",
                                coupled=variant == "coupled")
    torch.testing.assert_close(path, expected, rtol=1e-10, atol=1e-12)


def test_scion_orthogonalises_in_bfloat16_as_the_class():
    """Unpatched, the matrices' directions are bfloat16-accurate (the class's default dtype), not float64's."""
    x0 = torch.linspace(-1.2, 1.5, SCION_P, dtype=torch.float64)[None]
    path = _rule_path(["scion(lr=0.1, momentum=0.999999)"], x0, SCION_LAYOUT, steps=1, grad=_scion_grad)
    exact = _scion_reference(x0, [(0.1, 0.999999, 1.0, 0.0)])[0]
    moved, expected = (path[0] - x0)[0, :6], (exact - x0)[0, :6]
    error = (torch.linalg.norm(moved - expected) / torch.linalg.norm(expected)).item()
    assert 1e-4 < error < 0.1  # bfloat16 (8 bits of mantissa) through five iterations; float64 would be ~1e-16


@pytest.mark.parametrize("network", [MLP, CNN], ids=["mlp", "cnn"])
def test_scionlight_keeps_its_momentum_in_grad_under_the_engines(network_data, network):
    """The class keeps its momentum in .grad (``accumulates_grad``): the network loop engine keeps .grad between
    steps, so momentum matters, and a run equals a plain training loop that never clears .grad."""
    from optbench.engines.network import run_network

    problem = get_problem(network)
    runs = [run_network(problem, get_optimizer(f"scionlight(lr=0.01, momentum={a})"), 0, 4, 1) for a in (0.1, 0.9)]
    assert not np.allclose(runs[0].loss[1:], runs[1].loss[1:], rtol=1e-6)


def test_scionlight_loop_engine_is_a_training_loop_that_never_clears_grad():
    """On an analytic problem: run_loop equals the class driven by hand with backward() accumulating into .grad."""
    from optbench.engines.loop import run_loop

    problem = get_problem("rosenbrock")
    config = get_optimizer("scionlight(lr=0.01, momentum=0.3)")
    trace = run_loop(problem, config, 0, 6, 1)
    param = torch.nn.Parameter(problem.start_points([0], dtype=torch.float64, device="cpu")[0].clone())
    opt = config.entry.build([param], config.hyperparams, dtype=torch.float64, seed=0)
    losses = []
    for _ in range(6):
        loss = problem.loss(param)
        losses.append(float(loss))
        loss.backward()  # adds to what the last step left in .grad
        opt.step()
    np.testing.assert_allclose(trace.loss[:6, 0], losses, rtol=1e-12)


# ---- StableSPAM (Huang et al. 2025, Algorithm 1) -----------------------------------------------------------

class _SpikyGrad:
    """The formula tests' gradient field with a spike (×6) at the third call and a vector that never gets a
    gradient (its norm is 0: the class skips that tensor's step)."""

    def __init__(self):
        self.calls = 0

    def __call__(self, x):
        self.calls += 1
        g = _grad(x) * (6.0 if self.calls == 3 else 1.0)
        g[..., 6:9] = 0.0
        return g


SPAM_CONFIGS = [  # η, β₁, β₂, γ₁, γ₂, θ, λ, ε, T
    (0.01, 0.9, 0.999, 0.7, 0.9, 0.999, 0.0, 1e-8, 1000),
    (0.05, 0.5, 0.9, 0.6, 0.5, 0.5, 0.1, 1e-3, 4),
    (0.02, 0.8, 0.99, -1.0, 0.8, 0.9, 0.01, 1e-6, 3),
]


def test_stablespam_follows_algorithm_1_per_tensor():
    """AdaClip (M ← θM + (1 − θ)max|g|, clip |g| to M/(1 − θᵗ)), AdaGN (g ← g/‖g‖ · μ̂/(√ν̂ + ε)), Adam on the
    result, the moments reset every T steps (the bias corrections restart with them), decoupled decay."""
    steps = 7
    specs = [f"stablespam(lr={lr}, betas=({b1}, {b2}), gamma1={g1}, gamma2={g2}, theta={th}, weight_decay={wd}, "
             f"eps={eps}, update_proj_gap={gap})" for lr, b1, b2, g1, g2, th, wd, eps, gap in SPAM_CONFIGS]
    x0 = _x0(len(specs))
    path = _rule_path(specs, x0, steps=steps, grad=_SpikyGrad())
    for k, (lr, b1, b2, g1, g2, th, wd, eps, gap) in enumerate(SPAM_CONFIGS):
        g1 = b1 if g1 == -1.0 else g1
        x = x0[k].clone()
        m, v = torch.zeros(P, dtype=torch.float64), torch.zeros(P, dtype=torch.float64)
        big, mu, nu = [0.0] * 3, [0.0] * 3, [0.0] * 3
        grad, s = _SpikyGrad(), 0
        clipped_any = False
        for t in range(1, steps + 1):
            g_all = grad(x[None])[0]
            if t % gap == 0:
                m, v, s = torch.zeros_like(m), torch.zeros_like(v), 1
            else:
                s += 1
            x = x * (1 - wd * lr)
            pieces = []
            for i, (xi, gi, mi, vi) in enumerate(zip(_split(x), _split(g_all), _split(m), _split(v))):
                top = gi.abs().max().item()
                big[i] = th * big[i] + (1 - th) * top
                bound = big[i] / (1 - th ** t)
                clip = gi.abs() > bound
                clipped_any |= bool(clip.any())
                gi = torch.where(clip, gi * bound / top, gi)
                n = torch.linalg.norm(gi).item()
                if n == 0:
                    pieces.append(xi.reshape(-1))
                    continue
                mu[i] = g1 * mu[i] + (1 - g1) * n
                nu[i] = g2 * nu[i] + (1 - g2) * n * n
                gi = gi / n * (mu[i] / (1 - g1 ** t)) / (math.sqrt(nu[i] / (1 - g2 ** t)) + eps)
                mi.copy_(b1 * mi + (1 - b1) * gi)
                vi.copy_(b2 * vi + (1 - b2) * gi * gi)
                pieces.append((xi - lr / (1 - b1 ** s) * mi / (torch.sqrt(vi) / math.sqrt(1 - b2 ** s) + eps))
                              .reshape(-1))
            x = torch.cat(pieces)
            _close(path[t - 1, k], x, f"config {k}, step {t}")
        assert clipped_any, "the spike must be clipped"
        decays = (1 - wd * lr) ** torch.arange(1, steps + 1, dtype=torch.float64)[:, None]
        _close(path[:, k, 6:9], x0[k, 6:9] * decays, "a tensor without gradient is only decayed")


def test_stablespam_refuses_the_cosine_decay():
    from optbench.engines.capabilities import choose_engine

    problem, config = get_problem("rosenbrock"), get_optimizer("stablespam(t_max=100)")
    assert not engine_supports("batched", problem, config)
    assert choose_engine("auto", problem, config, {}, "cuda") == "loop"
    assert engine_supports("batched", problem, get_optimizer("stablespam"))


# ---- SGD-SaI (Xu et al. 2024, Algorithm 1) -----------------------------------------------------------------

SAI_SHAPES = [(2, 3), (3,), (1, 4), (3, 2)]  # matrices, a vector and a single-row matrix (σ taken as 0)
SAI_LAYOUT = ParamLayout(SAI_SHAPES)
SAI_P = SAI_LAYOUT.size
SAI_CONFIGS = [(0.01, 0.9, 0.01, 1e-8), (0.002, 0.0, 0.1, 1e-3), (0.005, 0.5, 0.0, 1e-8)]  # η, μ, λ, ε


def _sai_grad(x):
    return torch.linspace(0.5, 3.0, SAI_P, dtype=torch.float64) * x + torch.linspace(-0.4, 0.6, SAI_P,
                                                                                       dtype=torch.float64)


@pytest.mark.parametrize("coupled", [False, True])
def test_sgdsai_scales_each_tensor_by_its_first_gsnr(coupled):
    """s = ‖g₁‖/(σ(g₁) + ε) per tensor at the first step (‖g₁‖ for vectors and single-row matrices), then
    b ← μb + (1 − μ)g, x ← x − ηs·b with decoupled decay x ← x(1 − λη), or coupled λx in g (only without momentum:
    the class adds it after forming b)."""
    specs = [f"sgdsai(lr={lr}, momentum={mu}, weight_decay={wd}, eps={eps}, weight_decouple={not coupled})"
             for lr, mu, wd, eps in SAI_CONFIGS]
    x0 = torch.stack([torch.linspace(-1.2, 1.5, SAI_P, dtype=torch.float64) * (1 + 0.3 * k) for k in range(3)])
    path = _rule_path(specs, x0, SAI_LAYOUT, grad=_sai_grad)
    for k, (lr, mu, wd, eps) in enumerate(SAI_CONFIGS):
        x, b, gsnr = x0[k].clone(), torch.zeros(SAI_P, dtype=torch.float64), None
        for t in range(1, STEPS + 1):
            g = _sai_grad(x)
            if gsnr is None:
                gsnr = []
                for gi, shape in zip(_split(g, SAI_SHAPES), SAI_SHAPES):
                    n = gi.numel()
                    norm = torch.sqrt((gi * gi).sum())
                    if len(shape) > 1 and shape[0] > 1:
                        sigma = torch.sqrt(((gi - gi.mean()) ** 2).sum() / (n - 1))
                        gsnr.append(torch.full((n,), (norm / (sigma + eps)).item(), dtype=torch.float64))
                    else:
                        gsnr.append(torch.full((n,), norm.item(), dtype=torch.float64))
                gsnr = torch.cat(gsnr)
            b = (mu * b + (1 - mu) * g) if mu > 0 else g + (wd * x if coupled else 0.0)
            if not coupled:
                x = x * (1 - wd * lr)
            x = x - lr * gsnr * b
            _close(path[t - 1, k], x, f"config {k}, step {t}")


# ---- TAM (Malviya et al. 2024) ------------------------------------------------------------------------------

TAM_SHAPES = [(2, 3), (3,), (3, 1, 2)]
TAM_LAYOUT = ParamLayout(TAM_SHAPES)
TAM_P = TAM_LAYOUT.size
TAM_CONFIGS = [(0.01, 0.9, 0.9, 0.0, 1e-8), (0.002, 0.5, 0.5, 0.1, 1e-3), (0.005, 0.8, 0.7, 0.01, 1e-8)]  # η μ ρ λ ε


def _tam_grad(x):
    return (torch.linspace(0.5, 3.0, TAM_P, dtype=torch.float64) * x
            + torch.linspace(-0.4, 0.6, TAM_P, dtype=torch.float64) + 0.3 * torch.cos(2 * x))


def _unit_columns(tensor):
    """Each fibre along the first dimension divided by its Euclidean length (a vector: the whole vector)."""
    return tensor / torch.sqrt((tensor * tensor).sum(dim=0, keepdim=True))


@pytest.mark.parametrize(("coupled", "fixed"), [(False, False), (False, True), (True, False)])
def test_tam_damps_the_gradient_by_its_alignment_with_the_momentum(coupled, fixed):
    """c = (b/|b|)⊙(g/|g|) along the first dimension, s ← ρs + (1 − ρ)c, b ← μb + ((1 + s)/2 + ε)g (b₀ = g₁),
    x ← x(1 − λη) (λ with fixed_decay) − ηb; coupled decay (weight_decouple=False) leaves the steps unchanged."""
    specs = [f"tam(lr={lr}, momentum={mu}, decay_rate={rho}, weight_decay={wd}, eps={eps}, fixed_decay={fixed}, "
             f"weight_decouple={not coupled})" for lr, mu, rho, wd, eps in TAM_CONFIGS]
    x0 = torch.stack([torch.linspace(-1.2, 1.5, TAM_P, dtype=torch.float64) * (1 + 0.3 * k) for k in range(3)])
    path = _rule_path(specs, x0, TAM_LAYOUT, grad=_tam_grad)
    for k, (lr, mu, rho, wd, eps) in enumerate(TAM_CONFIGS):
        x, s, b = x0[k].clone(), torch.zeros(TAM_P, dtype=torch.float64), None
        for t in range(1, STEPS + 1):
            g = _tam_grad(x)
            b = g.clone() if b is None else b
            c = torch.cat([(_unit_columns(bi) * _unit_columns(gi)).reshape(-1)
                           for bi, gi in zip(_split(b, TAM_SHAPES), _split(g, TAM_SHAPES))])
            s = rho * s + (1 - rho) * c
            b = mu * b + ((1 + s) / 2 + eps) * g
            if not coupled:
                x = x * (1 - wd * (1.0 if fixed else lr))
            x = x - lr * b
            _close(path[t - 1, k], x, f"config {k}, step {t}")


# ---- RACS (Gong et al. 2025, Algorithm 2) -------------------------------------------------------------------

class _GrowingGrad:
    """SCION's test field, scaled ×4 at the fourth call: a jump in the normalised gradient's norm."""

    def __init__(self):
        self.calls = 0

    def __call__(self, x):
        self.calls += 1
        return _scion_grad(x) * (4.0 if self.calls == 4 else 1.0)


RACS_CONFIGS = [(0.01, 0.9, 0.05, 1.01, 0.0, 1e-8), (0.05, 0.5, 0.5, 1.5, 0.1, 1e-3),
                (0.02, 0.8, 0.2, 1.0001, 0.01, 1e-8)]  # η, β, α, γ, λ, ε


@pytest.mark.parametrize("decay", ["decoupled", "coupled", "fixed"])
def test_racs_scales_rows_and_columns_and_limits_the_norm_growth(decay):
    """Per tensor G (a vector as an n × 1 matrix, a kernel as out × rest): s ← βs + (1 − β)mean_row(G²),
    q ← βq + (1 − β)mean_col(G²) from s₀ = 0, q₀ = 1, Ĝ = diag(s + ε)^(−½) G diag(q + ε)^(−½), φ₁ = 1 then
    φ = γ/max(‖Ĝ‖/(θ + ε), γ) (at most γ-fold growth of the step norm), θ = φ‖Ĝ‖, x ← x − ηαφĜ; decay first."""
    flags = {"decoupled": "", "coupled": ", weight_decouple=False", "fixed": ", fixed_decay=True"}[decay]
    specs = [f"racs(lr={lr}, beta={b}, alpha={a}, gamma={c}, weight_decay={wd}, eps={eps}{flags})"
             for lr, b, a, c, wd, eps in RACS_CONFIGS]
    x0 = torch.stack([torch.linspace(-1.2, 1.5, SCION_P, dtype=torch.float64) * (1 + 0.3 * k) for k in range(3)])
    path = _rule_path(specs, x0, SCION_LAYOUT, steps=6, grad=_GrowingGrad())
    for k, (lr, b, a, c, wd, eps) in enumerate(RACS_CONFIGS):
        grad = _GrowingGrad()
        x = x0[k].clone()
        views = [(math.prod(s), 1) if len(s) < 2 else (s[0], math.prod(s[1:])) for s in SCION_SHAPES]
        row_avg = [torch.zeros(m, dtype=torch.float64) for m, _ in views]
        col_avg = [torch.ones(n, dtype=torch.float64) for _, n in views]
        theta = [0.0] * len(views)
        limited = False
        for t in range(1, 7):
            g = grad(x[None])[0]
            if decay == "coupled":
                g = g + wd * x
            else:
                x = x * (1 - wd * (1.0 if decay == "fixed" else lr))
            pieces = []
            for i, (xi, gi, (m, n)) in enumerate(zip(_split(x, SCION_SHAPES), _split(g, SCION_SHAPES), views)):
                G = gi.reshape(m, n)
                row_avg[i] = b * row_avg[i] + (1 - b) * (G * G).mean(dim=1)
                col_avg[i] = b * col_avg[i] + (1 - b) * (G * G).mean(dim=0)
                hat = G / torch.sqrt(row_avg[i] + eps)[:, None] / torch.sqrt(col_avg[i] + eps)[None, :]
                norm = torch.sqrt((hat * hat).sum()).item()
                phi = 1.0 if t == 1 else c / max(norm / (theta[i] + eps), c)
                limited |= phi < 1.0
                theta[i] = norm * phi
                pieces.append(xi.reshape(-1) - lr * a * phi * hat.reshape(-1))
            x = torch.cat(pieces)
            _close(path[t - 1, k], x, f"config {k}, step {t}")
        assert limited or c > 1.001, "γ ≈ 1 must limit some step"


# ---- ROSE (github.com/MatthewK78/Rose; no paper) ------------------------------------------------------------

ROSE_CONFIGS = [(0.01, 1e-4), (0.002, 0.1), (0.005, 0.0)]  # η, λ


def _rose_reference(x0, configs, decoupled, fixed, centralize, stabilize):
    points = []
    for k, (lr, wd) in enumerate(configs):
        x = x0[k].clone()
        grad = _GrowingGrad()
        row = []
        for _ in range(STEPS):
            g = grad(x[None])[0]
            if decoupled:
                x = x * (1 - wd * (1.0 if fixed else lr))
            else:
                g = g + wd * x
            pieces = []
            for xi, gi, shape in zip(_split(x, SCION_SHAPES), _split(g, SCION_SHAPES), SCION_SHAPES):
                if len(shape) == 1:
                    scale = abs(gi.max().item()) - gi.min().item()
                    pieces.append(xi - lr * gi / (scale if scale != 0 else 1.0))
                    continue
                rows = gi.reshape(shape[0], -1)
                if centralize:
                    rows = rows - rows.mean(dim=1, keepdim=True)
                ranges = rows.max(dim=1).values.abs() - rows.min(dim=1).values
                if stabilize:
                    mean = ranges.mean()
                    sd = torch.sqrt(((ranges - mean) ** 2).mean())
                    tau = mean / (sd + mean) if mean != 0 else mean
                    ranges = mean + tau * (ranges - mean)
                ranges = torch.where(ranges == 0, 1.0, ranges)
                pieces.append((xi.reshape(shape[0], -1) - lr * rows / ranges[:, None]).reshape(-1))
            x = torch.cat(pieces)
            row.append(x)
        points.append(torch.stack(row))
    return torch.stack(points, dim=1)


@pytest.mark.parametrize(("decay", "centralize", "stabilize"), [("coupled", True, True), ("decoupled", False, True),
                                                                ("fixed", True, False), ("coupled", False, False)])
def test_rose_divides_each_row_by_its_stabilised_range(decay, centralize, stabilize):
    """A vector: x ← x − ηg/(|max g| − min g); a matrix or kernel, row by row: g_r centred (``centralize``),
    R_r = |max g_r| − min g_r, D_r = R̄ + τ(R_r − R̄) with τ = R̄/(σ_R + R̄) (``stabilize``), x ← x − ηg/D; decay
    coupled (the default), decoupled, or decoupled with λ unscaled (fixed_decay)."""
    flags = {"coupled": "", "decoupled": ", weight_decouple=True",
             "fixed": ", weight_decouple=True, fixed_decay=True"}[decay]
    specs = [f"rose(lr={lr}, weight_decay={wd}, centralize={centralize}, stabilize={stabilize}{flags})"
             for lr, wd in ROSE_CONFIGS]
    x0 = torch.stack([torch.linspace(-1.2, 1.5, SCION_P, dtype=torch.float64) * (1 + 0.3 * k) for k in range(3)])
    path = _rule_path(specs, x0, SCION_LAYOUT, grad=_GrowingGrad())
    expected = _rose_reference(x0, ROSE_CONFIGS, decay != "coupled", decay == "fixed", centralize, stabilize)
    _close(path, expected)


def test_rose_refuses_the_scheduler_reference_of_its_decay():
    problem = get_problem("rosenbrock")
    assert not engine_supports("batched", problem, get_optimizer("rose(wd_schedule=True)"))
    assert engine_supports("batched", problem, get_optimizer("rose(wd_schedule=True, weight_decay=0.0)"))


def test_rose_float32_parameters_step_in_float64():
    """The class computes in float64 (its compute_dtype) and rounds the parameters back: so does the rule."""
    x0 = torch.linspace(-1.2, 1.5, SCION_P, dtype=torch.float64)[None]
    path = _rule_path(["rose(lr=0.01)"], x0.float(), SCION_LAYOUT, steps=1, grad=lambda x: _scion_grad(x.double())
                      .float())
    expected = _rose_reference(x0.float().double(), [(0.01, 1e-4)], False, False, True, True)[0]
    torch.testing.assert_close(path[0], expected.float(), rtol=0, atol=0)


# ---- ScalableShampoo (Anil et al. 2020) ---------------------------------------------------------------------

SHAMPOO_SHAPES = [(2, 3), (3,), (4, 2)]
SHAMPOO_LAYOUT = ParamLayout(SHAMPOO_SHAPES)
SHAMPOO_P = SHAMPOO_LAYOUT.size
SHAMPOO_CONFIGS = [(0.01, 0.9, 0.999, 1e-6, 0.0, 2, 2), (0.005, 0.5, 0.9, 1e-3, 0.1, 1, 1),
                   (0.02, 0.8, 0.99, 1e-4, 0.01, 3, 2)]  # η, β₁, β₂, ε_m, λ, start, roots every


def _inverse_root(matrix, power):
    values, vectors = torch.linalg.eigh(matrix)
    return (vectors * values.pow(-1.0 / power)) @ vectors.T


def _shampoo_grad(x):
    return (torch.linspace(0.5, 3.0, SHAMPOO_P, dtype=torch.float64) * x
            + torch.linspace(-0.4, 0.6, SHAMPOO_P, dtype=torch.float64) + 0.3 * torch.sin(2 * x))


def test_scalableshampoo_preconditions_each_matrix_and_grafts_the_sgd_norm():
    """Per matrix G: L ← β₂L + (1 − β₂)GGᵀ, R ← β₂R + (1 − β₂)GᵀG from ε_m·I every step, L^(−1/4), R^(−1/4) every
    k steps (identity before; SVD roots here), s = L^(−1/4)GR^(−1/4) grafted to the SGD step's norm,
    s·‖G‖/(‖s‖ + 1e-16) (a vector: s = G grafted to itself); decoupled decay, M ← β₁M + s, M_g ← β₁M_g + G, and
    the Nesterov step x ← x − η(β₁M + s) from the start step on, x ← x − η(β₁M_g + G) before it."""
    specs = [f"scalableshampoo(lr={lr}, betas=({b1}, {b2}), matrix_eps={eps}, weight_decay={wd}, "
             f"start_preconditioning_step={start}, preconditioning_compute_steps={every}, use_svd=True, "
             f"shape_interpretation=False, decoupled_weight_decay=True)"
             for lr, b1, b2, eps, wd, start, every in SHAMPOO_CONFIGS]
    steps = 6
    x0 = torch.stack([torch.linspace(-1.2, 1.5, SHAMPOO_P, dtype=torch.float64) * (1 + 0.3 * k) for k in range(3)])
    path = _rule_path(specs, x0, SHAMPOO_LAYOUT, steps=steps, grad=_shampoo_grad)
    for k, (lr, b1, b2, eps, wd, start, every) in enumerate(SHAMPOO_CONFIGS):
        x = x0[k].clone()
        momentum, graft_momentum = torch.zeros(SHAMPOO_P, dtype=torch.float64), torch.zeros(SHAMPOO_P,
                                                                                          dtype=torch.float64)
        stats = {i: [eps * torch.eye(n, dtype=torch.float64) for n in shape]
                 for i, shape in enumerate(SHAMPOO_SHAPES) if len(shape) == 2}
        roots = {i: [torch.eye(n, dtype=torch.float64) for n in SHAMPOO_SHAPES[i]] for i in stats}
        for t in range(1, steps + 1):
            g = _shampoo_grad(x)
            pieces = []
            for i, gi in enumerate(_split(g, SHAMPOO_SHAPES)):
                if i not in stats:
                    s = gi.clone()
                else:
                    left, right = stats[i]
                    stats[i] = [b2 * left + (1 - b2) * gi @ gi.T, b2 * right + (1 - b2) * gi.T @ gi]
                    if t % every == 0:
                        roots[i] = [_inverse_root(h, 4) for h in stats[i]]
                    s = roots[i][0] @ gi @ roots[i][1]
                s = s * torch.linalg.norm(gi) / (torch.linalg.norm(s) + 1e-16)
                pieces.append(s.reshape(-1))
            s = torch.cat(pieces)
            x = x * (1 - wd * lr)
            momentum = b1 * momentum + s
            graft_momentum = b1 * graft_momentum + g
            x = x - lr * (b1 * momentum + s if t >= start else b1 * graft_momentum + g)
            torch.testing.assert_close(path[t - 1, k], x, rtol=1e-10, atol=1e-13, msg=f"config {k}, step {t}")


def test_scalableshampoo_merges_small_matrices_into_an_unpreconditioned_vector():
    """With shape_interpretation (the default) a 2 × 3 matrix merges into one dimension of 6 ≤ block_size, which
    the class does not precondition: it takes the grafted SGD-momentum step, as a vector does."""
    specs = ["scalableshampoo(lr=0.01, start_preconditioning_step=1, preconditioning_compute_steps=1)"]
    x0 = _x0(1)
    path = _rule_path(specs, x0, grad=_grad, steps=3)
    x, momentum = x0[0].clone(), torch.zeros(P, dtype=torch.float64)
    for t in range(3):
        g = _grad(x)
        s = torch.cat([(gi * torch.linalg.norm(gi) / (torch.linalg.norm(gi) + 1e-16)).reshape(-1)
                       for gi in _split(g)])
        momentum = 0.9 * momentum + s
        x = x - 0.01 * (0.9 * momentum + s)
        _close(path[t, 0], x)
