"""Muon, Shampoo and Prodigy: the batched rules (engines/batched_rules_modern.py) against their papers' formulas,
written here independently in numpy float64, and against the pytorch_optimizer classes where the contract of
tests/test_engine_contract.py cannot reach (Muon's bfloat16 Newton–Schulz, a matrix parameter, the documented
deviations of each class from its paper)."""

from __future__ import annotations

import functools

import numpy as np
import pytest
import torch

from optbench.engines import batched_rules_modern
from optbench.engines.batched import run_batched, stack_hyperparams
from optbench.engines.batched_rules import RULES
from optbench.engines.layout import ParamLayout
from optbench.engines.loop import run_loop
from optbench.optimizers import get_optimizer, list_optimizers
from optbench.problems import get_problem

RNG = np.random.default_rng(0)
A = RNG.standard_normal((6, 4))
TARGET = RNG.standard_normal((6, 3))
W0 = RNG.standard_normal((4, 3))  # a 4 × 3 weight: f(W) = ½‖AW − T‖²_F, ∇f = Aᵀ(AW − T)


def _matrix_grad(w):
    return A.T @ (A @ w - TARGET)


def _rosenbrock_grad(x):
    a, b = x
    return np.array([-400.0 * a * (b - a * a) - 2.0 * (1.0 - a), 200.0 * (b - a * a)])


def _entry(name):
    return next(e for e in list_optimizers() if e.name == name)


@pytest.fixture
def newton_schulz_in_float64(monkeypatch):
    """Newton–Schulz in float64 in the rule and in the class (both default to bfloat16, the class's choice)."""
    from pytorch_optimizer.optimizer.muon import base

    for name in ("zero_power_via_newton_schulz_5", "zero_power_via_gram_newton_schulz"):
        monkeypatch.setattr(base, name, functools.partial(getattr(base, name), dtype=torch.float64))
    monkeypatch.setattr(batched_rules_modern, "NEWTON_SCHULZ_DTYPE",
                        dict.fromkeys(batched_rules_modern.NEWTON_SCHULZ_DTYPE, torch.float64))


def _rule_path(spec_list, shape, grad, x0, steps):
    """The batched rule driven by hand on one parameter tensor of ``shape``: ``[steps + 1, K, *shape]``."""
    configs = [get_optimizer(s) for s in spec_list]
    rule = RULES[configs[0].entry.batched]
    hp = stack_hyperparams(configs, torch.float64, "cpu")
    x = torch.tensor(np.stack([np.asarray(x0, float).reshape(-1)] * len(configs)))
    state = rule.init(x, hp)
    state["layout"] = ParamLayout([shape])
    path = [x.clone()]
    for t in range(1, steps + 1):
        g = torch.tensor(np.stack([grad(row.numpy().reshape(shape)).reshape(-1) for row in x]))
        rule.step(x, g, state, hp, t)
        path.append(x.clone())
    return torch.stack(path).numpy().reshape(steps + 1, len(configs), *shape)


def _class_path(spec, grad, x0, steps):
    """The pytorch_optimizer class on one parameter tensor (optbench's build: Muon's parameter groups)."""
    config = get_optimizer(spec)
    param = torch.nn.Parameter(torch.tensor(np.asarray(x0, float)))
    opt = config.entry.build([param], config.hyperparams, dtype=torch.float64)
    path = [param.detach().clone()]
    for _ in range(steps):
        param.grad = torch.tensor(grad(param.detach().numpy()))
        opt.step()
        path.append(param.detach().clone())
    return torch.stack(path).numpy()


# ---- Muon -----------------------------------------------------------------------------------------------

def _newton_schulz_paper(g, steps=5, coefficients=(3.4445, -4.7750, 2.0315)):
    """Jordan et al. 2024: X₀ = G/‖G‖_F (on Gᵀ when G is tall), then X ← aX + b(XXᵀ)X + c(XXᵀ)²X."""
    a, b, c = coefficients
    tall = g.shape[0] > g.shape[1]
    x = g.T if tall else g
    x = x / max(np.linalg.norm(x), 1e-7)
    for _ in range(steps):
        gram = x @ x.T
        x = a * x + b * gram @ x + c * gram @ gram @ x
    return x.T if tall else x


def _muon_paper(w0, grad, steps, lr, momentum, nesterov=True):
    """Muon as Jordan et al. 2024 state it, in float64: B ← μB + G; O = NS(G + μB) (Nesterov) or NS(B);
    W ← W − η·√max(1, m/n)·O. (The library's B is the exponential average (1 − μ)·B; Newton–Schulz divides by
    the norm first, so the update is the same.)"""
    w, buf = np.array(w0, float), np.zeros_like(w0)
    scale = max(1.0, w.shape[0] / w.shape[1]) ** 0.5
    path = [w.copy()]
    for _ in range(steps):
        g = grad(w)
        buf = momentum * buf + g
        w = w - lr * scale * _newton_schulz_paper(g + momentum * buf if nesterov else buf)
        path.append(w.copy())
    return np.array(path)


def test_newton_schulz_maps_singular_values_near_one():
    """The quintic's fixed coefficients push every singular value of the normalised matrix into about
    [0.7, 1.2] in five steps (not exactly 1: the iteration trades accuracy for speed, as its paper says)."""
    g = torch.tensor(RNG.standard_normal((3, 7, 5)))
    out = batched_rules_modern.newton_schulz(g, [(3.4445, -4.7750, 2.0315)] * 5, torch.float64)
    singular = torch.linalg.svdvals(out)
    assert singular.min() > 0.6 and singular.max() < 1.25
    for k in range(3):
        np.testing.assert_allclose(out[k].numpy(), _newton_schulz_paper(g[k].numpy()), rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("nesterov", [True, False])
def test_muon_rule_follows_its_paper_on_a_matrix(newton_schulz_in_float64, nesterov):
    specs = [f"muon(lr=0.02, nesterov={nesterov})", f"muon(lr=0.05, momentum=0.9, nesterov={nesterov})"]
    path = _rule_path(specs, (4, 3), _matrix_grad, W0, 20)
    for k, (lr, momentum) in enumerate([(0.02, 0.95), (0.05, 0.9)]):
        np.testing.assert_allclose(path[:, k], _muon_paper(W0, _matrix_grad, 20, lr, momentum, nesterov),
                                   rtol=1e-9, atol=1e-12)
    assert np.linalg.norm(_matrix_grad(path[-1, 0])) < np.linalg.norm(_matrix_grad(W0))


def test_muon_rule_equals_the_class_on_a_matrix_in_float64(newton_schulz_in_float64):
    for spec in ("muon(lr=0.02)", "muon(lr=0.02, use_adjusted_lr=True, weight_decay=0.1)",
                 "muon(lr=0.02, weight_decouple=False, weight_decay=0.1, nesterov=False, ns_coeffs='quintic')",
                 "muon(lr=0.02, ns_method='gram_newton_schulz', ns_steps=4, ns_reset_steps=(2, 3))"):
        np.testing.assert_allclose(_rule_path([spec], (4, 3), _matrix_grad, W0, 15)[:, 0],
                                   _class_path(spec, _matrix_grad, W0, 15), rtol=1e-10, atol=1e-12, err_msg=spec)


def test_muon_rule_and_class_share_bfloat16_newton_schulz():
    """Unpatched, both orthogonalise in bfloat16 (the documented deviation): they agree to bfloat16 accuracy
    and both differ from the float64 iteration by more than float64 rounding would."""
    steps = 10
    rule = _rule_path(["muon(lr=0.02)"], (4, 3), _matrix_grad, W0, steps)[:, 0]
    library = _class_path("muon(lr=0.02)", _matrix_grad, W0, steps)
    exact = _muon_paper(W0, _matrix_grad, steps, 0.02, 0.95)
    step = np.abs(exact[1:] - exact[:-1]).max()
    assert np.abs(rule - library).max() < 0.05 * step
    assert np.abs(rule - exact).max() > 1e-6 * step and np.abs(library - exact).max() > 1e-6 * step
    assert "bfloat16" in _entry("muon").deviations


def test_muon_on_a_vector_is_its_adamw_group():
    """An analytic problem is one vector: the rule (like the class, in its AdamW group) is AdamW with the
    adamw_* settings, and Muon's own lr does not move it."""
    problem = get_problem("rosenbrock")
    muon = run_batched(problem, [get_optimizer("muon(lr=0.5, adamw_lr=0.01, adamw_betas=(0.9, 0.99))")], [0], 20,
                       measure_cost=False)
    adamw = run_loop(problem, get_optimizer("adamw(lr=0.01, betas=(0.9, 0.99), eps=1e-10, weight_decay=0.0)"), 0,
                     20, measure_cost=False)
    np.testing.assert_allclose(muon.coords[:, 0], adamw.coords[:, 0], rtol=1e-12)
    assert "AdamW" in _entry("muon").matrix_only


# ---- Shampoo --------------------------------------------------------------------------------------------

def _inverse_root_paper(h, power):
    values, vectors = np.linalg.eigh(h)
    return (vectors * values ** (-1.0 / power)) @ vectors.T


def _shampoo_paper(x0, grad, steps, lr, eps):
    """Shampoo, Gupta, Koren & Singer 2018 (Algorithm 1 for a matrix, full-matrix AdaGrad for a vector), in float64:
    L ← L + GGᵀ, R ← R + GᵀG from L₀ = R₀ = εI, W ← W − η L^(−1/4) G R^(−1/4); a vector: H ← H + ggᵀ,
    x ← x − η H^(−1/2) g (the order-k rule H_i^(−1/2k) with k = 1). Matrix roots by eigendecomposition."""
    x = np.array(x0, float)
    pre = [eps * np.eye(n) for n in x.shape]
    path = [x.copy()]
    for _ in range(steps):
        g = grad(x)
        if x.ndim == 1:
            pre[0] += np.outer(g, g)
            x = x - lr * _inverse_root_paper(pre[0], 2) @ g
        else:
            pre[0] += g @ g.T
            pre[1] += g.T @ g
            x = x - lr * _inverse_root_paper(pre[0], 4) @ g @ _inverse_root_paper(pre[1], 4)
        path.append(x.copy())
    return np.array(path)


def test_shampoo_rule_follows_its_paper_on_a_matrix():
    path = _rule_path(["shampoo(lr=0.05, matrix_eps=1e-3)", "shampoo(lr=0.1, matrix_eps=1e-2)"], (4, 3),
                      _matrix_grad, W0, 20)
    for k, (lr, eps) in enumerate([(0.05, 1e-3), (0.1, 1e-2)]):
        np.testing.assert_allclose(path[:, k], _shampoo_paper(W0, _matrix_grad, 20, lr, eps), rtol=1e-8, atol=1e-10)


@pytest.mark.parametrize("engine", ["loop", "batched"])
def test_shampoo_follows_its_paper_on_a_vector(engine):
    config = get_optimizer("shampoo(lr=0.05, matrix_eps=1e-4)")
    problem = get_problem("rosenbrock")
    run = run_loop(problem, config, 0, 25, measure_cost=False) if engine == "loop" else run_batched(
        problem, [config], [0], 25, measure_cost=False)
    np.testing.assert_allclose(run.coords[:, 0], _shampoo_paper([-1.2, 1.0], _rosenbrock_grad, 25, 0.05, 1e-4),
                               rtol=1e-8)


def test_shampoo_rule_equals_the_class_on_a_matrix():
    for spec in ("shampoo(lr=0.05)", "shampoo(lr=0.05, momentum=0.5, weight_decay=0.1)",
                 "shampoo(lr=0.05, preconditioning_compute_steps=3, weight_decouple=True, weight_decay=0.1)"):
        np.testing.assert_allclose(_rule_path([spec], (4, 3), _matrix_grad, W0, 12)[:, 0],
                                   _class_path(spec, _matrix_grad, W0, 12), rtol=1e-9, atol=1e-12, err_msg=spec)


def test_shampoo_does_not_move_before_its_first_preconditioner():
    """The documented deviation: with preconditioning_compute_steps = k the inverse roots start at zero, so the
    first k − 1 steps leave the parameters where they are (in the class and in the rule)."""
    library = _class_path("shampoo(lr=0.05, preconditioning_compute_steps=3)", _matrix_grad, W0, 4)
    rule = _rule_path(["shampoo(lr=0.05, preconditioning_compute_steps=3)"], (4, 3), _matrix_grad, W0, 4)[:, 0]
    for path in (library, rule):
        assert np.array_equal(path[0], path[2]) and not np.allclose(path[2], path[3])
    assert "zero" in _entry("shampoo").deviations


# ---- Prodigy --------------------------------------------------------------------------------------------

def _prodigy_paper(x0, grad, steps, lr, beta1, beta2, eps, d0, library_eps=False):
    """Prodigy with Adam, Algorithm 3 of Mishchenko & Defazio 2023 (arXiv:2306.06101), in float64, β₃ = √β₂:
    m ← β₁m + (1 − β₁)d g, v ← β₂v + (1 − β₂)d²g², r ← √β₂ r + (1 − √β₂)ηd²⟨g, x₀ − x⟩,
    s ← √β₂ s + (1 − √β₂)ηd² g, d̂ = r/‖s‖₁, then x ← x − ηd·m/(√v + dε) and d ← max(d, d̂).
    ``library_eps``: the documented deviation, the new d in the ε term."""
    x = np.array(x0, float)
    x_start, m, v, s, r, d = x.copy(), np.zeros_like(x), np.zeros_like(x), np.zeros_like(x), 0.0, d0
    beta3 = beta2 ** 0.5
    path = [x.copy()]
    for _ in range(steps):
        g = grad(x)
        m = beta1 * m + (1 - beta1) * d * g
        v = beta2 * v + (1 - beta2) * d * d * g * g
        r = beta3 * r + (1 - beta3) * lr * d * d * g @ (x_start - x)
        s = beta3 * s + (1 - beta3) * lr * d * d * g
        d_new = max(d, r / np.abs(s).sum())
        x = x - lr * d * m / (np.sqrt(v) + (d_new if library_eps else d) * eps)
        d = d_new
        path.append(x.copy())
    return np.array(path)


@pytest.fixture
def float64_default():
    """The class keeps r and ‖s‖₁ in torch's default dtype (float32 otherwise: a documented deviation)."""
    before = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    yield
    torch.set_default_dtype(before)


@pytest.mark.parametrize("engine", ["loop", "batched"])
def test_prodigy_follows_its_paper(float64_default, engine):
    problem = get_problem("rosenbrock")

    def run(spec):
        config = get_optimizer(spec)
        if engine == "loop":
            return run_loop(problem, config, 0, 40, measure_cost=False).coords[:, 0]
        return run_batched(problem, [config], [0], 40, measure_cost=False).coords[:, 0]

    path = run("prodigy(lr=1.0, eps=1e-3)")
    with_deviation = _prodigy_paper([-1.2, 1.0], _rosenbrock_grad, 40, 1.0, 0.9, 0.999, 1e-3, 1e-6, library_eps=True)
    np.testing.assert_allclose(path, with_deviation, rtol=1e-10)
    literal = _prodigy_paper([-1.2, 1.0], _rosenbrock_grad, 40, 1.0, 0.9, 0.999, 1e-3, 1e-6)
    assert not np.allclose(path, literal, rtol=1e-8)
    # lr multiplies the estimated step: the paper's d grows from d0 by orders of magnitude in a few steps
    np.testing.assert_allclose(run("prodigy(lr=0.5, eps=1e-3)"),
                               _prodigy_paper([-1.2, 1.0], _rosenbrock_grad, 40, 0.5, 0.9, 0.999, 1e-3, 1e-6, True),
                               rtol=1e-10)


def test_prodigy_rule_keeps_the_class_float32_statistics():
    """Without a float64 default dtype the class's d-estimate is float32-accurate; the rule reproduces it to
    1e-8, where a float64 estimate would not."""
    config = get_optimizer("prodigy(lr=1.0)")
    problem = get_problem("beale")
    batched = run_batched(problem, [config], [0], 40, measure_cost=False).coords[:, 0]
    loop = run_loop(problem, config, 0, 40, measure_cost=False).coords[:, 0]
    np.testing.assert_allclose(batched, loop, rtol=1e-8)
    assert "float32" in _entry("prodigy").deviations


def test_prodigy_coupled_weight_decay_has_no_effect():
    """The documented deviation: with weight_decouple=False the class adds λx to the gradient after it has used
    the gradient, so coupled decay changes nothing (the rule reproduces that)."""
    problem = get_problem("rosenbrock")
    plain = run_loop(problem, get_optimizer("prodigy"), 0, 20, measure_cost=False).coords
    coupled = run_loop(problem, get_optimizer("prodigy(weight_decouple=False, weight_decay=0.5)"), 0, 20,
                       measure_cost=False).coords
    decoupled = run_loop(problem, get_optimizer("prodigy(weight_decay=0.5)"), 0, 20, measure_cost=False).coords
    assert np.array_equal(plain, coupled) and not np.array_equal(plain, decoupled)
    batched = run_batched(problem, [get_optimizer("prodigy(weight_decouple=False, weight_decay=0.5)")], [0], 20,
                          measure_cost=False).coords
    np.testing.assert_allclose(batched, coupled, rtol=1e-8)
    assert "no effect" in _entry("prodigy").deviations
