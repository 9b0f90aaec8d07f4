"""The batched rules of engines/rules_factored.py: each rule against its paper's update, written here by hand in
plain torch float64 (independent of pytorch_optimizer and of the rule's code), for a few steps on a small layout
with a matrix (the factored path) and a vector, with per-configuration hyperparameters; and every option branch
against the class (batched == loop, to 1e-8 in float64, on analytic problems, an MLP and a CNN)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from test_engine_contract import CNN, MLP, _analytic_group, _network_group
from test_optimizers import compare_engines

from optbench.cost import probe_state_bytes_per_param
from optbench.engines.batched import stack_hyperparams
from optbench.engines.batched_rules import RULES
from optbench.engines.capabilities import engine_supports
from optbench.engines.layout import ParamLayout
from optbench.optimizers import get_optimizer
from optbench.problems import get_problem

# settings that take the branches the registry defaults do not
VARIANTS = {
    "came": ["came(lr=0.01, weight_decay=0.1, weight_decouple=False, clip_threshold=0.5)",
             "came(lr=0.01, weight_decay=0.05, fixed_decay=True, ams_bound=True, betas=(0.8, 0.9, 0.99))",
             "came(lr=0.01, ams_bound=True, eps1=1e-3, eps2=1e-3, weight_decay=0.01)"],
    "novograd": ["novograd(lr=0.01, weight_decay=0.1, grad_averaging=True)",
                 "novograd(lr=0.01, weight_decay=0.05, weight_decouple=True, betas=(0.5, 0.9), eps=1e-3)"],
    "adafactor-paper": ["adafactor-paper(lr=0.05, beta1=0.5, clip_threshold=0.5)",
                        "adafactor-paper(beta1=0.9, decay_rate=-0.5, eps2=0.1, eps1=1e-3)"],
    "adalite": ["adalite(lr=0.01, weight_decouple=False, weight_decay=0.1, tau=0.5)",
                "adalite(lr=0.01, fixed_decay=True, weight_decay=0.05, ratio_min=0.5, g_norm_min=0.1, eps2=1e-3)"],
    "adanorm": ["adanorm(lr=0.01, weight_decay=0.1, weight_decouple=False, r=0.5)",
                "adanorm(lr=0.01, ams_bound=True, fixed_decay=True, weight_decay=0.01, betas=(0.5, 0.9))"],
    "adatam": ["adatam(lr=0.01, weight_decay=0.1, weight_decouple=False, decay_rate=0.5)",
               "adatam(lr=0.01, fixed_decay=True, weight_decay=0.01, betas=(0.5, 0.9), eps=1e-3)"],
    "aida": ["aida(lr=0.01, weight_decay=0.1, k=3, xi=1e-3)",
             "aida(lr=0.01, weight_decouple=True, fixed_decay=True, weight_decay=0.01, ams_bound=True, k=0)",
             "aida(lr=0.01, rectify=True, weight_decay=0.05)",
             "aida(lr=0.01, rectify=True, degenerated_to_sgd=False, n_sma_threshold=4, betas=(0.8, 0.9))"],
    "adashift": ["adashift(lr=0.01, keep_num=2)", "adashift(lr=0.01, keep_num=1, betas=(0.5, 0.9), eps=1e-3)"],
    # Alice: the compensation (rank < rows), random completion columns (leading_basis < rank), Alice-0 (β₃ = 0)
    "alice": ["alice(lr=0.01, update_interval=3, weight_decay=0.1, weight_decouple=False)",
              "alice(lr=0.01, rank=2, leading_basis=1, update_interval=2, fixed_decay=True, weight_decay=0.01)",
              "alice(lr=0.01, rank=1, leading_basis=1, alpha_c=0.8, gamma=1.5, update_interval=4)",
              "alice(lr=0.01, rank=4, leading_basis=2, update_interval=4, betas=(0.8, 0.9, 0.0))"],
    "flashadamw": ["flashadamw(lr=0.01, quantize=False, weight_decay=0.1)",
                   "flashadamw(lr=0.01, decouple_lr=True, weight_decay=0.05, betas=(0.5, 0.9), eps=1e-3)",
                   "flashadamw(lr=0.01, decouple_lr=True, quantize=False, weight_decay=0.0)"],
}
# integer settings are per-configuration columns: one group may mix them
MIXED = {"aida": ["aida(lr=0.01, k=1)", "aida(lr=0.02, k=3)", "aida(lr=0.01, k=0)"],
         "adashift": ["adashift(lr=0.01, keep_num=1)", "adashift(lr=0.02, keep_num=3)", "adashift(lr=0.01)"],
         "alice": ["alice(lr=0.01, rank=1, leading_basis=1, update_interval=3)",
                   "alice(lr=0.02, rank=4, leading_basis=2, update_interval=2)", "alice(lr=0.01)"]}
SPECS = [spec for specs in VARIANTS.values() for spec in specs]
TOL = 1e-12


def _variant_groups(spec):
    config = get_optimizer(spec)
    if config.lr is None:
        return [config, config], [0, 7]
    return [config, config.with_hyperparams(lr=config.lr / 2)], [0, 7]


@pytest.mark.parametrize("spec", SPECS)
@pytest.mark.parametrize("problem_spec", ["beale", "rosenbrock(noise=0.1)"])
def test_factored_variants_equal_the_class_on_analytic_problems(spec, problem_spec):
    problem = get_problem(problem_spec)
    configs, seeds = _variant_groups(spec)
    assert all(engine_supports("batched", problem, c) for c in configs)
    _analytic_group(problem, configs, seeds)


NETWORK_SPECS = [spec for spec in [*VARIANTS, *SPECS] if not spec.startswith("alice")]  # SEEDS: analytic only


@pytest.mark.parametrize("spec", NETWORK_SPECS)
@pytest.mark.parametrize("network", [MLP, CNN], ids=["mlp", "cnn"])
def test_factored_variants_equal_the_class_on_networks(network_data, spec, network):
    """Matrices and kernels on the factored path, biases on the vector path: batched == loop."""
    problem = get_problem(network)
    configs, seeds = _variant_groups(spec)
    assert all(engine_supports("batched", problem, c) for c in configs)
    _network_group(problem, configs, seeds)


def test_alice_runs_on_the_loop_engine_on_networks(network_data):
    """Alice's random completion columns need the run seeds (SEEDS), which the network engine does not provide."""
    from optbench.engines.capabilities import choose_engine

    problem = get_problem(MLP)
    assert not engine_supports("batched", problem, get_optimizer("alice"))
    assert choose_engine("auto", problem, get_optimizer("alice"), {}, "cuda") == "loop"


@pytest.mark.parametrize("name", MIXED)
@pytest.mark.parametrize("problem_spec", ["beale", "rosenbrock(noise=0.1)", MLP])
def test_integer_settings_may_differ_inside_a_group(network_data, name, problem_spec):
    if name == "alice" and problem_spec == MLP:  # analytic only (SEEDS): ranks 1, 4 and 5 of 5 rows
        compare_engines("rosenbrock(dim=5, start='random')", MIXED[name], [0, 7, 3], steps=15)
        return
    problem = get_problem(problem_spec)
    configs = [get_optimizer(spec) for spec in MIXED[name]]
    assert all(engine_supports("batched", problem, c) for c in configs)
    (_network_group if problem_spec == MLP else _analytic_group)(problem, configs, [0, 7, 3])


@pytest.mark.parametrize("spec", [*VARIANTS, *SPECS])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_factored_rules_declare_the_state_their_class_keeps(spec, dtype):
    config = get_optimizer(spec)
    # (FlashAdamW's 8-bit moments are bytes whatever the dtype: Rule.fixed_bytes)
    declared = RULES[config.entry.batched].bytes_per_param(config.hyperparams, 5, dtype.itemsize)
    # AdaShift's queue of keep_num gradients is full from step keep_num on: measured there
    steps = int(config.hyperparams["keep_num"]) + 1 if config.entry.name == "adashift" else 2
    assert declared == probe_state_bytes_per_param(config, 5, dtype, steps=steps), spec


# ---- the papers' formulas, by hand ------------------------------------------------------------------------

SHAPES = [(3, 4), (4,), (2, 2, 3)]  # a matrix, a vector and a 3-D kernel (factored over its last two dimensions)
SIZES = [math.prod(s) for s in SHAPES]
P = sum(SIZES)
COEF = torch.linspace(0.5, 3.0, 128, dtype=torch.float64)  # long enough for every layout here
SHIFT = torch.sin(torch.arange(128, dtype=torch.float64)) * 0.7 + 0.1


def _grad(x: torch.Tensor) -> torch.Tensor:
    """The gradient of a separable quadratic, ∇f(x) = c ⊙ x + b (rows of ``[K, P]``, or one ``[P]`` vector)."""
    n = x.shape[-1]
    return COEF[:n] * x + SHIFT[:n]


def _x0(k: int, size: int = P) -> torch.Tensor:
    return torch.stack([torch.cos(torch.arange(size, dtype=torch.float64) * (1.3 + i)) for i in range(k)])


def _rule_path(specs, steps, shapes=SHAPES, seeds=None):
    """The rule of ``specs`` (one configuration each, one batched group) for ``steps`` steps of ``_grad``:
    the ``[K, P]`` points after each step."""
    configs = [get_optimizer(s) for s in specs]
    rule = RULES[configs[0].entry.batched]
    hp = stack_hyperparams(configs, torch.float64, "cpu")
    x = _x0(len(specs), sum(math.prod(s) for s in shapes))
    state = rule.init(x, hp)
    state["layout"] = ParamLayout(shapes)
    state["seeds"] = seeds
    path = []
    for t in range(1, steps + 1):
        rule.step(x, _grad(x), state, hp, t)
        path.append(x.clone())
    return path


def _split(flat: torch.Tensor, shapes=SHAPES) -> list[torch.Tensor]:
    return [part.reshape(shape).clone() for part, shape in zip(flat.split([math.prod(s) for s in shapes]), shapes)]


def _rms(t: torch.Tensor) -> torch.Tensor:
    return (t.pow(2).sum() / t.numel()).sqrt()


def _reference_path(update_fn, k: int, steps: int, shapes=SHAPES):
    """Configuration ``k`` by hand: ``update_fn(t, params, grads, state)`` updates the list of tensors."""
    params = _split(_x0(k + 1, sum(math.prod(s) for s in shapes))[k], shapes)
    state: dict = {}
    path = []
    for t in range(1, steps + 1):
        grads = _split(_grad(torch.cat([p.reshape(-1) for p in params])), shapes)
        update_fn(t, params, grads, state)
        path.append(torch.cat([p.reshape(-1) for p in params]))
    return path


def _compare(rule_path, references):
    for t, points in enumerate(rule_path):
        for k, reference in enumerate(references):
            np.testing.assert_allclose(points[k].numpy(), reference[t].numpy(), rtol=TOL, atol=1e-14,
                                       err_msg=f"step {t + 1}, configuration {k}")


def _came_reference(lr, b1, b2, b3, eps1, eps2, d):
    """Luo et al. 2023, Algorithm 1 (sums over rows and columns, V = RC/1ᵀR); vectors unfactored, no confidence."""
    def update(t, params, grads, state):
        for i, (p, g) in enumerate(zip(params, grads)):
            s = state.setdefault(i, {})
            sq = g * g + eps1
            if p.ndim >= 2:
                r = s.get("r", 0.0) * b2 + (1 - b2) * sq.sum(-1)
                c = s.get("c", 0.0) * b2 + (1 - b2) * sq.sum(-2)
                s["r"], s["c"] = r, c
                v = r.unsqueeze(-1) * c.unsqueeze(-2) / r.sum(-1, keepdim=True).unsqueeze(-1)
            else:
                v = s["v"] = s.get("v", 0.0) * b2 + (1 - b2) * sq
            u = g / v.sqrt()
            u = u / max(1.0, float(_rms(u)) / d)
            m = s["m"] = s.get("m", 0.0) * b1 + (1 - b1) * u
            if p.ndim >= 2:
                res = (u - m) ** 2 + eps2
                r = s.get("rr", 0.0) * b3 + (1 - b3) * res.sum(-1)
                c = s.get("rc", 0.0) * b3 + (1 - b3) * res.sum(-2)
                s["rr"], s["rc"] = r, c
                conf = r.unsqueeze(-1) * c.unsqueeze(-2) / r.sum(-1, keepdim=True).unsqueeze(-1)
                p -= lr * m / conf.sqrt()
            else:
                p -= lr * m
    return update


def test_came_follows_its_paper():
    settings = [(0.01, 0.9, 0.999, 0.9999, 1e-30, 1e-16, 1.0), (0.003, 0.5, 0.9, 0.8, 1e-3, 1e-2, 0.3)]
    specs = [f"came(lr={lr}, betas=({b1}, {b2}, {b3}), eps1={e1}, eps2={e2}, clip_threshold={d})"
             for lr, b1, b2, b3, e1, e2, d in settings]
    _compare(_rule_path(specs, 4), [_reference_path(_came_reference(*s), k, 4) for k, s in enumerate(settings)])


def test_came_decay_and_ams_bound():
    """Coupled decay g ← g + λx (before every statistic); decoupled x ← x(1 − λη) (fixed: 1 − λ) first;
    ``ams_bound`` as the library does it: V̂ ← max(V̂, √V) (the reciprocal of the inverse root it holds, not of
    V), U = g/√(V̂/β₂), so a fourth root of V."""
    lr, b1, b2, b3, eps1, eps2, wd = 0.01, 0.9, 0.99, 0.999, 1e-30, 1e-16, 0.2

    def reference(coupled, fixed, ams):
        base = _came_reference(lr, b1, b2, b3, eps1, eps2, 1.0)

        def update(t, params, grads, state):
            if coupled:
                grads = [g + wd * p for p, g in zip(params, grads)]
            else:
                for p in params:
                    p *= 1 - wd * (1.0 if fixed else lr)
            if not ams:
                return base(t, params, grads, state)
            for i, (p, g) in enumerate(zip(params, grads)):  # the vector path with AMSBound (no matrices here)
                s = state.setdefault(i, {})
                s["v"] = s.get("v", 0.0) * b2 + (1 - b2) * (g * g + eps1)
                s["vmax"] = torch.maximum(s.get("vmax", torch.zeros_like(g)), s["v"].sqrt())
                u = g / (s["vmax"] / b2).sqrt()
                u = u / max(1.0, float(_rms(u)))
                s["m"] = s.get("m", 0.0) * b1 + (1 - b1) * u
                p -= lr * s["m"]
        return update

    common = f"lr={lr}, betas=({b1}, {b2}, {b3}), weight_decay={wd}"
    for spec, args, shapes in [(f"came({common}, weight_decouple=False)", (True, False, False), SHAPES),
                               (f"came({common}, fixed_decay=True)", (False, True, False), SHAPES),
                               (f"came({common}, ams_bound=True)", (False, False, True), [(P,)])]:
        _compare(_rule_path([spec], 4, shapes), [_reference_path(reference(*args), 0, 4, shapes)])


def _novograd_reference(lr, b1, b2, eps, wd, averaging, decoupled):
    """Ginsburg et al. 2019, Algorithm 1 (v₁ = ‖g₁‖², m₁ = ĝ₁) with the library's ε at t = 1."""
    def update(t, params, grads, state):
        for i, (p, g) in enumerate(zip(params, grads)):
            s = state.setdefault(i, {})
            norm2 = (g * g).sum()
            s["v"] = norm2 if t == 1 else b2 * s["v"] + (1 - b2) * norm2
            if decoupled:
                p *= 1 - wd * lr
                g_hat = g / (s["v"].sqrt() + eps)
            else:
                g_hat = g / (s["v"].sqrt() + eps) + wd * p
            s["m"] = g_hat if t == 1 else b1 * s["m"] + ((1 - b1) if averaging else 1.0) * g_hat
            p -= lr * s["m"]
    return update


@pytest.mark.parametrize("averaging, decoupled", [(False, False), (True, False), (False, True)])
def test_novograd_follows_its_paper(averaging, decoupled):
    settings = [(0.01, 0.95, 0.98, 1e-8, 0.0), (0.03, 0.5, 0.9, 1e-3, 0.1)]
    flags = f"grad_averaging={averaging}, weight_decouple={decoupled}"
    specs = [f"novograd(lr={lr}, betas=({b1}, {b2}), eps={eps}, weight_decay={wd}, {flags})"
             for lr, b1, b2, eps, wd in settings]
    _compare(_rule_path(specs, 4),
             [_reference_path(_novograd_reference(*s, averaging, decoupled), k, 4) for k, s in enumerate(settings)])


def _adafactor_reference(lr, beta1, c, d, eps1, eps2):
    """Shazeer & Stern 2018, Algorithms 4 and 5: ρ_t = min(1e-2, 1/√t) (or lr), α_t = max(ε₂, RMS(X))ρ_t,
    β̂₂ₜ = 1 − t^c, factored V̂ = RC/1ᵀR over the last two dimensions, Û = U/max(1, RMS(U)/d); β₁ > 0: a first
    moment over α_tÛ."""
    def update(t, params, grads, state):
        rho = lr if lr is not None else min(1e-2, 1 / math.sqrt(t))
        b2 = 1 - t ** c
        for i, (p, g) in enumerate(zip(params, grads)):
            s = state.setdefault(i, {})
            alpha = max(eps2, float(_rms(p))) * rho
            sq = g * g + eps1
            if p.ndim >= 2:
                s["r"] = s.get("r", 0.0) * b2 + (1 - b2) * sq.sum(-1)
                s["c"] = s.get("c", 0.0) * b2 + (1 - b2) * sq.sum(-2)
                v = s["r"].unsqueeze(-1) * s["c"].unsqueeze(-2) / s["r"].sum(-1, keepdim=True).unsqueeze(-1)
            else:
                v = s["v"] = s.get("v", 0.0) * b2 + (1 - b2) * sq
            u = g / v.sqrt()
            step = alpha * u / max(1.0, float(_rms(u)) / d)
            if beta1 > 0:
                step = s["m"] = s.get("m", 0.0) * beta1 + (1 - beta1) * step
            p -= step
    return update


def test_adafactor_paper_follows_its_paper_relative_step():
    settings = [(None, 0.0, -0.8, 1.0, 1e-30, 1e-3), (None, 0.0, -0.5, 0.3, 1e-3, 0.5)]
    specs = [f"adafactor-paper(decay_rate={c}, clip_threshold={d}, eps1={e1}, eps2={e2})"
             for _, _, c, d, e1, e2 in settings]
    _compare(_rule_path(specs, 4), [_reference_path(_adafactor_reference(*s), k, 4) for k, s in enumerate(settings)])


def test_adafactor_paper_with_lr_and_first_moment():
    """A constant ρ = lr, and β₁ per configuration (0 in one: no first moment, as the class)."""
    settings = [(0.05, 0.0, -0.8, 1.0, 1e-30, 1e-3), (0.02, 0.9, -0.8, 1.0, 1e-30, 1e-3)]
    specs = [f"adafactor-paper(lr={lr}, beta1={b1})" for lr, b1, *_ in settings]
    _compare(_rule_path(specs, 4), [_reference_path(_adafactor_reference(*s), k, 4) for k, s in enumerate(settings)])


def _adalite_reference(lr, b1, b2, wd, g_norm_min, ratio_min, tau, eps1, eps2, coupled, fixed):
    """Adalite as its rule's docstring states it (the library's own method: no paper), one tensor at a time."""
    def update(t, params, grads, state):
        for i, (p, g) in enumerate(zip(params, grads)):
            s = state.setdefault(i, {})
            g = g.reshape(p.shape[0], -1) if p.ndim > 2 else g
            if coupled:
                g = g + wd * p.reshape(g.shape)
            if sum(g.shape) > 1:
                g = g * max(ratio_min, float(p.norm() / max(g_norm_min, float(g.norm()))))
            if g.ndim < 2:
                m = s["m"] = s.get("m", 0.0) + (1 - b1) * (g - s.get("m", 0.0))
                v = s["v"] = s.get("v", 0.0) + (1 - b2) * ((g - m) ** 2 - s.get("v", 0.0))
                u = m + (1 - b1) * (g - m)
            else:
                rows, cols = g.shape
                r, c = s.get("r", torch.zeros(rows)), s.get("c", torch.zeros(cols))
                v = torch.outer(r, c) / max(eps2, float(r.sum()))
                m = s.get("mc", torch.zeros(rows))[:, None] * s.get("s", 0.0) * s.get("mr", torch.zeros(cols))[None]
                m = m + (1 - b1) * (g - m)
                v = v + (1 - b2) * ((g - m) ** 2 - v)
                w = torch.outer(torch.softmax(v.mean(1), 0), torch.softmax(v.mean(0), 0))
                m = m + (1 - w) * (g - m)
                u = m + (1 - b1) * (g - m)
                s["r"], s["c"] = v.sum(1), v.sum(0) / max(eps2, float(v.sum()))
                mc = (m * torch.softmax(v.mean(0) / tau, 0)[None]).sum(1)
                mr = (m * torch.softmax(v.mean(1) / tau, 0)[:, None]).sum(0)
                s["s"] = float(mc @ m @ mr) / max(eps2, float((mc**2).sum() * (mr**2).sum()))
                s["mc"], s["mr"] = mc, mr
            u = (u / (v / (1 - b2**t) + eps1).sqrt()).reshape(p.shape)
            if not coupled:
                p *= 1 - wd * (1.0 if fixed else lr)
            p -= lr * u
    return update


@pytest.mark.parametrize("coupled, fixed", [(False, False), (True, False), (False, True)])
def test_adalite_follows_its_formula(coupled, fixed):
    settings = [(0.01, 0.9, 0.999, 0.01, 1e-10, 1e-4, 1.0, 1e-6, 1e-10),
                (0.003, 0.5, 0.9, 0.2, 0.5, 0.3, 0.4, 1e-3, 1e-2)]
    flags = f"weight_decouple={not coupled}, fixed_decay={fixed}"
    specs = [f"adalite(lr={lr}, betas=({b1}, {b2}), weight_decay={wd}, g_norm_min={gm}, ratio_min={rm}, tau={tau}, "
             f"eps1={e1}, eps2={e2}, {flags})" for lr, b1, b2, wd, gm, rm, tau, e1, e2 in settings]
    _compare(_rule_path(specs, 4),
             [_reference_path(_adalite_reference(*s, coupled, fixed), k, 4) for k, s in enumerate(settings)])


def _decayed(params, grads, wd, lr, coupled, fixed):
    """Coupled g + λx, or decoupled x ← x(1 − λη) (η unscaled when fixed) in place: the gradients to use."""
    if coupled:
        return [g + wd * p for p, g in zip(params, grads)]
    for p in params:
        p *= 1 - wd * (1.0 if fixed else lr)
    return grads


def _adanorm_reference(lr, b1, b2, r, eps, wd, coupled, fixed, ams):
    """Dubey et al. 2023, the Adam instance: e ← re + (1 − r)‖g‖, s = (e/‖g‖)g when e > ‖g‖, Adam on
    (s, g²); with the library's ε placement (√(v + 1e-15) + ε before the bias correction of v)."""
    def update(t, params, grads, state):
        grads = _decayed(params, grads, wd, lr, coupled, fixed)
        for i, (p, g) in enumerate(zip(params, grads)):
            st = state.setdefault(i, {"e": 0.0, "m": 0.0, "v": 0.0, "vmax": torch.zeros_like(g)})
            norm = float(g.norm())
            st["e"] = r * st["e"] + (1 - r) * norm
            s = g * (st["e"] / norm) if 0 < norm < st["e"] else g
            st["m"] = b1 * st["m"] + (1 - b1) * s
            st["v"] = b2 * st["v"] + (1 - b2) * g * g
            st["vmax"] = torch.maximum(st["vmax"], st["v"])
            v = st["vmax"] if ams else st["v"]
            p -= lr / (1 - b1**t) * st["m"] / (((v + 1e-15).sqrt() + eps) / math.sqrt(1 - b2**t))
    return update


@pytest.mark.parametrize("coupled, fixed, ams", [(False, False, False), (True, False, True), (False, True, False)])
def test_adanorm_follows_its_paper(coupled, fixed, ams):
    settings = [(0.01, 0.9, 0.99, 0.95, 1e-8, 0.0), (0.003, 0.5, 0.9, 0.3, 1e-3, 0.1)]
    flags = f"weight_decouple={not coupled}, fixed_decay={fixed}, ams_bound={ams}"
    specs = [f"adanorm(lr={lr}, betas=({b1}, {b2}), r={r}, eps={eps}, weight_decay={wd}, {flags})"
             for lr, b1, b2, r, eps, wd in settings]
    _compare(_rule_path(specs, 5),
             [_reference_path(_adanorm_reference(*s, coupled, fixed, ams), k, 5) for k, s in enumerate(settings)])


def _adatam_reference(lr, b1, b2, gamma, eps, wd, coupled, fixed):
    """Malviya et al. 2024's adaptive TAM: s ← γs + (1 − γ)(m̄ ⊙ ḡ) with the columns (dim 0) normalised,
    m ← β₁m + ((1 + s)/2 + ε)g, v ← β₂v + (1 − β₂)g², x ← x − ηm/(√v + ε) (the library's form: no bias correction)."""
    def unit(a):
        return a / a.norm(dim=0, keepdim=True).clamp_min(1e-12)

    def update(t, params, grads, state):
        grads = _decayed(params, grads, wd, lr, coupled, fixed)
        for i, (p, g) in enumerate(zip(params, grads)):
            st = state.setdefault(i, {"s": 0.0, "m": torch.zeros_like(g), "v": 0.0})
            st["s"] = gamma * st["s"] + (1 - gamma) * unit(st["m"]) * unit(g)
            st["m"] = b1 * st["m"] + ((1 + st["s"]) / 2 + eps) * g
            st["v"] = b2 * st["v"] + (1 - b2) * g * g
            p -= lr * st["m"] / (st["v"].sqrt() + eps)
    return update


@pytest.mark.parametrize("coupled, fixed", [(False, False), (True, False), (False, True)])
def test_adatam_follows_its_paper(coupled, fixed):
    settings = [(0.01, 0.9, 0.999, 0.9, 1e-8, 0.0), (0.003, 0.5, 0.9, 0.4, 1e-3, 0.1)]
    flags = f"weight_decouple={not coupled}, fixed_decay={fixed}"
    specs = [f"adatam(lr={lr}, betas=({b1}, {b2}), decay_rate={d}, eps={eps}, weight_decay={wd}, {flags})"
             for lr, b1, b2, d, eps, wd in settings]
    _compare(_rule_path(specs, 4),
             [_reference_path(_adatam_reference(*s, coupled, fixed), k, 4) for k, s in enumerate(settings)])


def _aida_reference(lr, b1, b2, k, xi, eps, wd, coupled, fixed, ams, rectify, threshold, degenerated):
    """Zhang et al. 2022: K mutual projections of (g, m), v ← β₂v + (1 − β₂)(m_K − g_K)² + ε, Adam's step
    with the library's ε also added to √v; ``rectify``: RAdam's rectification of the step."""
    def update(t, params, grads, state):
        grads = _decayed(params, grads, wd, lr, coupled, fixed)
        rho_inf = 2 / (1 - b2) - 1
        rho = rho_inf - 2 * t * b2**t / (1 - b2**t)
        for i, (p, g) in enumerate(zip(params, grads)):
            st = state.setdefault(i, {"m": 0.0, "v": 0.0, "vmax": torch.zeros_like(g)})
            st["m"] = b1 * st["m"] + (1 - b1) * g
            pg, pm = g.clone(), st["m"].clone()
            for _ in range(k):
                inner = float((pg * pm).sum())
                pg, pm = inner / (float((pg**2).sum()) + xi) * pg, inner / (float((pm**2).sum()) + xi) * pm
            st["v"] = b2 * st["v"] + (1 - b2) * (pm - pg) ** 2 + eps
            st["vmax"] = torch.maximum(st["vmax"], st["v"])
            root = ((st["vmax"] if ams else st["v"]) + 1e-15).sqrt() + eps
            if not rectify:
                p -= lr / (1 - b1**t) * st["m"] / (root / math.sqrt(1 - b2**t))
            elif rho >= threshold:
                rt = math.sqrt((1 - b2**t) * (rho - 4) * (rho - 2) * rho_inf / ((rho_inf - 4) * (rho_inf - 2) * rho))
                p -= lr * rt / (1 - b1**t) * st["m"] / root
            elif degenerated:
                p -= lr / (1 - b1**t) * st["m"]
    return update


@pytest.mark.parametrize("flags", [(False, False, False, False, True), (True, False, True, False, True),
                                   (False, True, False, True, True), (False, False, False, True, False)])
def test_aida_follows_its_paper(flags):
    coupled, fixed, ams, rectify, degenerated = flags
    settings = [(0.01, 0.9, 0.999, 2, 1e-20, 1e-8, 0.0, 5), (0.003, 0.5, 0.9, 3, 1e-3, 1e-3, 0.1, 4)]
    options = (f"weight_decouple={not coupled}, fixed_decay={fixed}, ams_bound={ams}, rectify={rectify}, "
               f"degenerated_to_sgd={degenerated}")
    specs = [f"aida(lr={lr}, betas=({b1}, {b2}), k={k}, xi={xi}, eps={eps}, weight_decay={wd}, n_sma_threshold={n}, "
             f"{options})" for lr, b1, b2, k, xi, eps, wd, n in settings]
    steps = 8  # past ρ_t ≥ 5 for β₂ = 0.999 (t = 6) and ≥ 4 for β₂ = 0.9 (t = 5): both rectify branches
    references = [_reference_path(_aida_reference(*s[:7], coupled, fixed, ams, rectify, s[7], degenerated), i, steps)
                  for i, s in enumerate(settings)]
    _compare(_rule_path(specs, steps), references)


def _adashift_reference(lr, b1, b2, n, eps):
    """Zhou et al. 2019 (φ = max over the tensor): m_t = Σ_{i<n} β₁ⁱ g_{t−i} / Σ_{i<n} β₁ⁱ (the window
    directly, not the recursion), v_t = β₂v + (1 − β₂) max(g_{t−n}²), x ← x − η m_t/(√(v_t/(1 − β₂^(t−n))) + ε),
    no step while t ≤ n."""
    def update(t, params, grads, state):
        history = state.setdefault("grads", [])
        history.append(grads)
        if t <= n:
            return
        weight = sum(b1**i for i in range(n))
        for i, p in enumerate(params):
            st = state.setdefault(i, {"v": 0.0})
            m = sum(b1**j * history[t - 1 - j][i] for j in range(n)) / weight
            st["v"] = b2 * st["v"] + (1 - b2) * float((history[t - 1 - n][i] ** 2).max())
            p -= lr * m / (math.sqrt(st["v"] / (1 - b2 ** (t - n))) + eps)
    return update


def test_adashift_follows_its_paper():
    settings = [(0.01, 0.9, 0.999, 3, 1e-10), (0.003, 0.5, 0.9, 1, 1e-3), (0.02, 0.8, 0.99, 4, 1e-6)]
    specs = [f"adashift(lr={lr}, betas=({b1}, {b2}), keep_num={n}, eps={eps})" for lr, b1, b2, n, eps in settings]
    _compare(_rule_path(specs, 7), [_reference_path(_adashift_reference(*s), k, 7) for k, s in enumerate(settings)])


def _alice_reference(lr, b1, b2, b3, alpha, alpha_c, interval, rank, gamma, eps):
    """Gong et al. 2025, Alice with leading_basis = rank (no random columns), in float64: each tensor
    as an m × n matrix, r = min(rank, m); at steps 1, interval, 2·interval, … one subspace iteration of
    Q̃ = β₃UQUᵀ + (1 − β₃)GGᵀ from U (orthonormalised Q̃U, rotated to the eigenvectors of its Rayleigh quotient,
    largest first); σ = UᵀG, Q, M, V running averages (β₃, β₁, β₂); the compensation C = √(m − r)(G − Uσ)/√p with
    p the running mean (β₁) of ‖G_j‖² − ‖σ_j‖² (≥ 1e-8) and ‖C‖ growing at most γ× a step;
    X ← X − ηα(U M/(√V + ε) + α_c C)."""
    def update(t, params, grads, state):
        for i, (p, g) in enumerate(zip(params, grads)):
            g = g.reshape(-1, 1) if g.ndim < 2 else g
            rows, cols = g.shape
            r = min(rank, rows)
            s = state.setdefault(i, {"U": torch.zeros(rows, r, dtype=g.dtype), "Q": torch.zeros(r, r, dtype=g.dtype),
                                     "M": 0.0, "V": 0.0, "p": 0.0, "phi": 0.0})
            if t == 1 or t % interval == 0:
                target = b3 * s["U"] @ s["Q"] @ s["U"].T + (1 - b3) * g @ g.T
                basis, _ = torch.linalg.qr(target @ s["U"])
                values, vectors = torch.linalg.eigh(basis.T @ target @ basis)
                s["U"] = (basis @ vectors)[:, torch.argsort(values, descending=True)]
            u = s["U"]
            sigma = u.T @ g
            s["Q"] = b3 * s["Q"] + (1 - b3) * sigma @ sigma.T
            s["M"] = b1 * s["M"] + (1 - b1) * sigma
            s["V"] = b2 * s["V"] + (1 - b2) * sigma**2
            s["p"] = (b1 * s["p"] + (1 - b1) * ((g**2).sum(0) - (sigma**2).sum(0))).clamp_min(1e-8)
            c = math.sqrt(rows - r) * (g - u @ sigma) / s["p"].sqrt()
            if s["phi"] > 0:
                c = c * gamma / max(float(c.norm()) / s["phi"], gamma)
            s["phi"] = float(c.norm())
            p -= (lr * alpha * (u @ (s["M"] / (s["V"].sqrt() + eps)) + alpha_c * c)).reshape(p.shape)
    return update


@pytest.mark.parametrize("rank", [256, 1])
def test_alice_follows_its_paper(monkeypatch, rank):
    """rank 256: every basis spans its tensor (the Adam step in the rotating eigenbasis, C = 0); rank 1: the
    one-vector basis and the compensation. The switch in float64 here (the class's is float32)."""
    from optbench.engines import rules_factored

    monkeypatch.setattr(rules_factored, "ALICE_SWITCH_DTYPE", torch.float64)
    shapes = [(3, 4), (2,)]  # GGᵀ has full rank on the matrix; the vector's null space is one line
    # ε ≥ 1e-4: the vector's σ along the null line of ggᵀ is rounding noise, which M/(√V + ε) divides by ε
    settings = [(0.02, 0.9, 0.9, 0.999, 0.3, 0.4, 2, rank, 1.01, 1e-4),
                (0.01, 0.5, 0.8, 0.9, 0.5, 0.8, 3, rank, 1.5, 1e-3)]
    specs = [f"alice(lr={lr}, betas=({b1}, {b2}, {b3}), alpha={a}, alpha_c={ac}, update_interval={n}, rank={r}, "
             f"leading_basis={r}, gamma={gm}, eps={e})" for lr, b1, b2, b3, a, ac, n, r, gm, e in settings]
    _compare(_rule_path(specs, 6, shapes, seeds=[0, 1]),
             [_reference_path(_alice_reference(*s), k, 6, shapes) for k, s in enumerate(settings)])


@pytest.mark.parametrize("spec", ["flashadamw(master_weight_bits=24)", "flashadamw(check_numerics=True)",
                                  "flashadamw(fused=True)"])
def test_flashadamw_refuses_the_options_it_does_not_reproduce(spec):
    from optbench.engines.capabilities import choose_engine

    problem = get_problem("beale")
    assert not engine_supports("batched", problem, get_optimizer(spec))
    assert choose_engine("auto", problem, get_optimizer(spec), {}, "cuda") == "loop"


def _quantized(values: torch.Tensor, second: bool) -> torch.Tensor:
    """FlashOptim's 8-bit storage of one flattened tensor, by hand: groups of 32, the float16 scale s of the group's
    largest magnitude; m: round(127·φ(m/s)) with φ(z) = 2z/(1 + |z|), read back as s·φ⁻¹(q/127), φ⁻¹(y) = y/(2 − |y|);
    v: round(255·√v/s) over √v, read back as (s·q/255)²."""
    flat = values.reshape(-1).to(torch.float32)
    out = torch.empty_like(flat)
    for start in range(0, flat.numel(), 32):
        block = flat[start:start + 32]
        if second:
            block = block.clamp_min(0).sqrt()
        scale = max(float(block.abs().max()), 1e-12)
        stored = float(torch.tensor(scale, dtype=torch.float16))
        if second:
            q = torch.round(block / scale * 255).clamp(0, 255)
            out[start:start + 32] = (q / 255 * stored) ** 2
        else:
            z = block / scale
            q = torch.round(2 * z / (1 + z.abs()) * 127).clamp(-127, 127)
            y = q / 127
            out[start:start + 32] = y / (2 - y.abs()).clamp_min(1e-12) * stored
    return out.reshape(values.shape).to(values.dtype)


def _flashadamw_reference(lr, b1, b2, wd, eps, quantize, decouple_lr):
    """Loshchilov & Hutter's AdamW (decoupled decay λη, or λη/η₀ with ``decouple_lr``) with FlashOptim's 8-bit
    moments between steps."""
    def update(t, params, grads, state):
        for i, (p, g) in enumerate(zip(params, grads)):
            s = state.setdefault(i, {"m": torch.zeros_like(g), "v": torch.zeros_like(g)})
            p *= 1 - (wd / lr if decouple_lr and wd > 0 else wd) * lr
            m = b1 * s["m"] + (1 - b1) * g
            v = b2 * s["v"] + (1 - b2) * g * g
            p -= lr * (m / (1 - b1**t)) / ((v / (1 - b2**t)).sqrt() + eps)
            s["m"], s["v"] = (_quantized(m, False), _quantized(v, True)) if quantize else (m, v)
    return update


@pytest.mark.parametrize("quantize, decouple_lr", [(True, False), (False, False), (True, True)])
def test_flashadamw_follows_adamw_with_8_bit_moments(quantize, decouple_lr):
    shapes = [(5, 8), (3,), (2, 3, 7)]  # 40 values: two groups, one padded; 3; 42: two groups
    settings = [(0.01, 0.9, 0.999, 0.01, 1e-8), (0.003, 0.5, 0.9, 0.2, 1e-3)]
    specs = [f"flashadamw(lr={lr}, betas=({b1}, {b2}), weight_decay={wd}, eps={eps}, quantize={quantize}, "
             f"decouple_lr={decouple_lr})" for lr, b1, b2, wd, eps in settings]
    _compare(_rule_path(specs, 4, shapes),
             [_reference_path(_flashadamw_reference(*s, quantize, decouple_lr), k, 4, shapes)
              for k, s in enumerate(settings)])
