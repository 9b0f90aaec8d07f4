"""The batched rules of engines/rules_memory.py (SM3, SM3Paper, GaLore, Fira, SPAM, Nero, EmoNavi, EmoFact, EmoLynx):
each rule against the update formula of its docstring (the paper's, with the library's documented changes),
written here by hand in plain torch float64 with a loop over configurations, for a few steps on small ``[K, d]``
inputs with per-configuration hyperparameters (to 1e-12), on vectors and, for the per-tensor rules, on matrices;
and against the class (batched == loop, 1e-8 in float64) on the settings the registry defaults of
tests/test_engine_contract.py do not reach, on analytic problems and small networks."""

from __future__ import annotations

import math

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

TOL = 1e-12
F64 = torch.float64

# settings that take the branches the registry defaults do not
VARIANTS = {
    "sm3": ["sm3(lr=0.05, momentum=0.9)", "sm3(lr=0.05, beta=0.5)", "sm3(lr=0.05, beta=0.9, momentum=0.5, eps=1e-8)"],
    "sm3-paper": ["sm3-paper(lr=0.05, momentum=0.9)", "sm3-paper(lr=0.05, beta=0.5)",
                  "sm3-paper(lr=0.05, beta=0.9, momentum=0.5, eps=1e-8)"],
    "galore": ["galore(lr=0.01, weight_decay=0.1, betas=(0.8, 0.99), eps=1e-8)"],
    "fira": ["fira(lr=0.01, weight_decay=0.05, betas=(0.5, 0.9))"],
    # resets at t ≡ 0 mod ΔT with the warm-up restarting (also inside a warm-up), spike clipping, decay; ΔT = 1
    "spam": ["spam(lr=0.01, update_proj_gap=5, grad_accu_steps=2, threshold=2, warmup_epoch=3, weight_decay=0.1)",
             "spam(lr=0.01, update_proj_gap=4, grad_accu_steps=1, threshold=1, warmup_epoch=6, betas=(0.5, 0.9))",
             "spam(lr=0.01, update_proj_gap=1, grad_accu_steps=0, threshold=3, warmup_epoch=0)"],
    "nero": ["nero(lr=0.01, constraints=False)", "nero(lr=0.02, beta=0.9, eps=1e-4)"],
    **{name: [f"{name}(lr=0.01, use_shadow=True, weight_decay=0.1)",
              f"{name}(lr=0.01, weight_decouple=False, weight_decay=0.1, betas=(0.8, 0.9))",
              f"{name}(lr=0.01, fixed_decay=True, weight_decay=0.01, eps=1e-3)",
              f"{name}(lr=0.01, weight_decay=0.0)"] for name in ("emonavi", "emofact", "emolynx")},
}


def _rule_path(specs, x0, grads, shapes=None):
    """The rule of ``specs`` (one group: K configurations, differing in float hyperparameters only) driven by hand
    from ``x0`` ``[K, P]`` through ``grads`` (a list of ``[K, P]``): the points after each step. ``shapes``: the
    parameter tensors behind the P columns (default one vector)."""
    configs = [get_optimizer(s) for s in specs]
    rule = RULES[configs[0].entry.batched]
    hp = stack_hyperparams(configs, F64, "cpu")
    x = x0.clone()
    state = rule.init(x, hp)
    state["layout"] = ParamLayout(shapes or [(x.shape[-1],)])
    path = []
    for t, g in enumerate(grads, start=1):
        rule.step(x, g.clone(), state, hp, t)
        path.append(x.clone())
    return path


def _grads(K, P, steps, seed=0):
    generator = torch.Generator().manual_seed(seed)
    return [torch.randn(K, P, generator=generator, dtype=F64) for _ in range(steps)]


def _x0(K, P, seed=1):
    return torch.randn(K, P, generator=torch.Generator().manual_seed(seed), dtype=F64)


def _assert_paths(got, want):
    assert len(got) == len(want)
    for t, (a, b) in enumerate(zip(got, want), start=1):
        torch.testing.assert_close(a, b, rtol=TOL, atol=1e-300, msg=lambda m, t=t: f"step {t}: {m}")


# ---- SM3 --------------------------------------------------------------------------------------------------

def _covers(shape):
    """The cover of SM3's experiments: every slice of the tensor along each dimension, as sets of flat indices."""
    index = torch.arange(int(torch.tensor(shape).prod())).reshape(shape)
    covers = []
    for dim, n in enumerate(shape):
        for i in range(n):
            covers.append(index.select(dim, i).reshape(-1).tolist())
    return covers


def _sm3_by_hand(x0, grads, shape, lr, momentum, beta, eps, paper):
    """SM3-II over explicit cover sets (Anil et al. 2019): ν(j) = min_{r∋j} μ(r) + g(j)²; μ(r) = max_{j∈r} ν(j);
    x ← x − η g/√(ν + ε); with β > 0 ν(j) = β min μ + (1 − β)g², and μ(r) ← max(μ(r), max ν) for the library
    (``paper=False``) or μ(r) ← max ν (sm3-paper). Momentum: m ← μm + (1 − μ)u, x ← x − ηm. One configuration."""
    covers = _covers(shape)
    mu = [0.0] * len(covers)
    x, m = x0.clone(), torch.zeros_like(x0)
    path = []
    for g in grads:
        nu = torch.empty_like(g)
        for j in range(g.numel()):
            smallest = min(mu[r] for r, cover in enumerate(covers) if j in cover)
            nu[j] = beta * smallest + (1 - beta) * g[j] ** 2 if beta > 0 else smallest + g[j] ** 2
        for r, cover in enumerate(covers):
            largest = max(float(nu[j]) for j in cover)
            mu[r] = max(mu[r], largest) if (beta > 0 and not paper) else largest
        u = g / (nu + eps).sqrt()
        if momentum > 0:
            m = momentum * m + (1 - momentum) * u
            u = m
        x = x - lr * u
        path.append(x)
    return path


@pytest.mark.parametrize("name", ["sm3", "sm3-paper"])
@pytest.mark.parametrize("shape", [(4,), (3, 4), (2, 3, 2)], ids=["vector", "matrix", "3-d"])
@pytest.mark.parametrize("setting", ["", "momentum=0.8", "beta=0.6", "beta=0.9, momentum=0.5"])
def test_sm3_follows_sm3_ii(name, shape, setting):
    """Per-configuration learning rates and eps; the cover of every slice; the library's running maximum (sm3)
    against the paper's replaced accumulator (sm3-paper) where β > 0. β = 0: both are SM3-II (vector: AdaGrad)."""
    P, steps = int(torch.tensor(shape).prod()), 4
    lrs, epss = [0.1, 0.03, 0.2], [1e-30, 1e-8, 1e-3]
    specs = [f"{name}(lr={lr}, eps={eps}{', ' + setting if setting else ''})" for lr, eps in zip(lrs, epss)]
    x0, grads = _x0(3, P), _grads(3, P, steps)
    hp = get_optimizer(specs[0]).hyperparams
    got = _rule_path(specs, x0, grads, [shape])
    want = [_sm3_by_hand(x0[k], [g[k] for g in grads], shape, lrs[k], hp["momentum"], hp["beta"], epss[k],
                         paper=name == "sm3-paper") for k in range(3)]
    _assert_paths(got, [torch.stack([w[t] for w in want]) for t in range(steps)])


def test_sm3_with_beta_keeps_a_running_maximum_where_the_paper_replaces_it():
    """The documented deviation: on a vector with a shrinking gradient, sm3(beta) keeps μ = max(μ, ν) with
    ν = βμ + (1 − β)g², so step 3 still divides by the first gradient's scale, while sm3-paper's μ = ν decays."""
    x0 = torch.zeros(1, 1, dtype=F64)
    grads = [torch.full((1, 1), v, dtype=F64) for v in (1.0, 0.1, 0.01)]
    library = _rule_path(["sm3(lr=1.0, beta=0.5)"], x0, grads)
    paper = _rule_path(["sm3-paper(lr=1.0, beta=0.5)"], x0, grads)
    nu1 = 0.5 * 1.0  # both: ν₁ = (1 − β)g₁², μ = ν₁
    nu2 = 0.5 * nu1 + 0.5 * 0.1 ** 2  # both divide step 2 by ν₂; then the library keeps μ = ν₁, the paper μ = ν₂
    assert float(library[1] - library[0]) == pytest.approx(-0.1 / nu2 ** 0.5, rel=1e-14)
    assert float(paper[1] - paper[0]) == pytest.approx(-0.1 / nu2 ** 0.5, rel=1e-14)
    assert float(library[2] - library[1]) == pytest.approx(-0.01 / (0.5 * nu1 + 0.5 * 1e-4) ** 0.5, rel=1e-14)
    assert float(paper[2] - paper[1]) == pytest.approx(-0.01 / (0.5 * nu2 + 0.5 * 1e-4) ** 0.5, rel=1e-14)


# ---- GaLore, Fira -----------------------------------------------------------------------------------------

@pytest.mark.parametrize("name", ["galore", "fira"])
def test_galore_and_fira_without_a_projection_are_adam_with_decay_after_the_step(name):
    """P = I (no ``rank`` in the group): m ← β₁m + (1 − β₁)g, v ← β₂v + (1 − β₂)g²,
    x ← x − η√(1 − β₂ᵗ)/(1 − β₁ᵗ) · m/(√v + ε), then x ← x(1 − ηλ); per-configuration η, β, ε, λ."""
    settings = [(0.01, 0.9, 0.999, 1e-6, 0.1), (0.05, 0.5, 0.9, 1e-3, 0.0), (0.002, 0.8, 0.99, 1e-8, 0.3)]
    specs = [f"{name}(lr={lr}, betas=({b1}, {b2}), eps={eps}, weight_decay={wd})" for lr, b1, b2, eps, wd in settings]
    K, P, steps = 3, 4, 5
    x0, grads = _x0(K, P), _grads(K, P, steps)
    got = _rule_path(specs, x0, grads, [(2, 2)] if name == "fira" else None)
    want = []
    for k, (lr, b1, b2, eps, wd) in enumerate(settings):
        x, m, v, path = x0[k].clone(), torch.zeros(P, dtype=F64), torch.zeros(P, dtype=F64), []
        for t, g in enumerate(grads, start=1):
            m = b1 * m + (1 - b1) * g[k]
            v = b2 * v + (1 - b2) * g[k] ** 2
            x = x - lr * (1 - b2**t) ** 0.5 / (1 - b1**t) * m / (v.sqrt() + eps)
            x = x * (1 - lr * wd)
            path.append(x)
        want.append(path)
    _assert_paths(got, [torch.stack([w[t] for w in want]) for t in range(steps)])


# ---- SPAM -------------------------------------------------------------------------------------------------

def _spam_by_hand(x0, grads, lr, b1, b2, eps, wd, gap, accumulate, theta, warmup):
    """SPAM (Huang et al. 2025, Algorithm 1) as the library runs it: moments reset to 0 at t ≡ 0 mod ΔT; spikes
    g² > θv clipped to sign(g)√(θv) once t ≥ N and t mod ΔT ≥ N; the step scaled by 1 − r_j, r_j =
    0.99(1 + cos(π(j + 1)/(W + 1)))/2 the cosine (closed form) j steps after the last reset (0 before the first
    reset and from j = W on); bias corrections from the global t; decoupled decay after the step."""
    x, m, v = x0.clone(), torch.zeros_like(x0), torch.zeros_like(x0)
    since_reset = None  # steps since the last reset: none before the first (the warm-up counter starts past W)
    path = []
    for t, g in enumerate(grads, start=1):
        g = g.clone()
        if t % gap == 0:
            m, v = torch.zeros_like(x0), torch.zeros_like(x0)
            since_reset = 0
        elif since_reset is not None:
            since_reset += 1
        if theta != 0 and t >= accumulate and t % gap >= accumulate:
            for i in range(g.numel()):
                if g[i] ** 2 > theta * v[i]:
                    g[i] = torch.sign(g[i]) * (theta * v[i]).sqrt()
        m = b1 * m + (1 - b1) * g
        v = b2 * v + (1 - b2) * g * g
        j = since_reset
        rate = 0.0 if j is None or j >= warmup else 0.99 * (1 + math.cos(math.pi * (j + 1) / (warmup + 1))) / 2
        x = x - (1 - rate) * lr * (1 - b2**t) ** 0.5 / (1 - b1**t) * m / (v.sqrt() + eps)
        x = x * (1 - lr * wd)
        path.append(x)
    return path


@pytest.mark.parametrize(("gap", "accumulate", "theta", "warmup"), [(5, 2, 2, 3), (4, 1, 1, 6), (3, 0, 0, 0),
                                                                     (500, 20, 5000, 50)])
def test_spam_follows_its_algorithm(gap, accumulate, theta, warmup):
    """Resets, clipping and the cosine warm-up over 14 steps, per-configuration η, β, ε, λ; a matrix (the
    class's masked path) beside a vector."""
    settings = [(0.01, 0.9, 0.999, 1e-6, 0.1), (0.05, 0.5, 0.9, 1e-3, 0.0)]
    common = f"update_proj_gap={gap}, grad_accu_steps={accumulate}, threshold={theta}, warmup_epoch={warmup}"
    specs = [f"spam(lr={lr}, betas=({b1}, {b2}), eps={eps}, weight_decay={wd}, {common})"
             for lr, b1, b2, eps, wd in settings]
    K, P, steps = 2, 9, 14
    x0 = _x0(K, P)
    grads = [g * (1 + 10 * (t % 3 == 0)) for t, g in enumerate(_grads(K, P, steps))]  # spikes every third step
    got = _rule_path(specs, x0, grads, [(2, 3), (3,)])
    want = [_spam_by_hand(x0[k], [g[k] for g in grads], *settings[k], gap, accumulate, theta, warmup)
            for k in range(K)]
    _assert_paths(got, [torch.stack([w[t] for w in want]) for t in range(steps)])


def test_spam_warmup_table_is_the_recursive_cosine_of_the_class():
    """The rule's death rates (torch's recursive CosineAnnealingLR, as the class's CosineDecay steps it) equal the
    closed form 0.99(1 + cos(π(j + 1)/(W + 1)))/2 to rounding."""
    from optbench.engines.rules_memory import _spam_death_rates

    for warmup in (1, 3, 50):
        closed = [0.99 * (1 + math.cos(math.pi * (j + 1) / (warmup + 1))) / 2 for j in range(warmup)]
        assert _spam_death_rates(warmup) == pytest.approx(closed, rel=1e-12, abs=1e-15)


def test_spam_refuses_sparse_masks():
    from optbench.engines.batched import PROVIDES
    from optbench.engines.batched_rules import check_needs
    from optbench.errors import UsageError

    check_needs(get_optimizer("spam"), PROVIDES, "batched engine")
    with pytest.raises(UsageError, match="density < 1"):
        check_needs(get_optimizer("spam(density=0.5)"), PROVIDES, "batched engine")


# ---- Nero -------------------------------------------------------------------------------------------------

def _nero_by_hand(x0, grads, shape, lr, beta, eps, constraints):
    """Nero (Liu et al. 2021, Algorithm 1) as the library runs it, on one tensor of ``shape``: neurons are the
    rows of a matrix (the coordinates of a vector); a constrained matrix is centred and normalised row by row
    before the first step and after each; s = mean neuron norm after that first projection;
    v ← βv + (1 − β)‖g_row‖², x ← x − η s g/(√(v/(1 − βᵗ)) + ε)."""
    matrix = len(shape) > 1
    x = x0.clone().reshape(shape[0], -1) if matrix else x0.clone().reshape(-1, 1)

    def project(x):
        rows = []
        for row in x:
            row = row - row.sum() / row.numel()
            rows.append(row / ((row * row).sum().sqrt() + eps))
        return torch.stack(rows)

    def norms(y):
        return torch.stack([(row * row).sum().sqrt() for row in y])[:, None]

    if constraints and matrix:
        x = project(x)
    scale = float(norms(x).mean())
    scale = scale if scale != 0 else 0.01
    v = torch.zeros(x.shape[0], 1, dtype=F64)
    path = []
    for t, g in enumerate(grads, start=1):
        g = g.reshape(x.shape)
        v = beta * v + (1 - beta) * norms(g) ** 2
        x = x - lr * scale * g / ((v / (1 - beta**t)).sqrt() + eps)
        if constraints and matrix:
            x = project(x)
        path.append(x.reshape(-1))
    return path


@pytest.mark.parametrize("shape", [(5,), (3, 4), (2, 2, 3)], ids=["vector", "matrix", "kernel"])
@pytest.mark.parametrize("constraints", [True, False])
def test_nero_follows_its_algorithm(shape, constraints):
    settings = [(0.01, 0.999, 1e-8), (0.1, 0.9, 1e-3), (0.03, 0.5, 1e-6)]
    specs = [f"nero(lr={lr}, beta={beta}, eps={eps}, constraints={constraints})" for lr, beta, eps in settings]
    K, P, steps = 3, int(torch.tensor(shape).prod()), 4
    x0, grads = _x0(K, P), _grads(K, P, steps)
    got = _rule_path(specs, x0, grads, [shape])
    want = [_nero_by_hand(x0[k], [g[k] for g in grads], shape, *settings[k], constraints) for k in range(K)]
    _assert_paths(got, [torch.stack([w[t] for w in want]) for t in range(steps)])


# ---- the EmoNavi family -----------------------------------------------------------------------------------

EMO_SETTINGS = [(0.01, 0.9, 0.999, 1e-8, 0.01, "weight_decouple=True"),
                (0.05, 0.5, 0.9, 1e-3, 0.1, "weight_decouple=False"),
                (0.02, 0.8, 0.99, 1e-6, 0.2, "fixed_decay=True")]


def _emo_decay(x, g, lr, wd, flags):
    if "weight_decouple=False" in flags:
        return x, g + wd * x
    return x * (1 - wd * (1.0 if "fixed_decay=True" in flags else lr)), g


def _emo_by_hand(name, x0, grads, shape, lr, b1, b2, eps, wd, flags):
    """The EmoNavi family at loss 0 (emo_drive = 1): decay, then EmoNavi x ← x − η m/(√v + ε) (Adam's moments,
    no bias correction); EmoLynx x ← x − η sign((1 − β₁)g + β₁m), m ← β₂m + (1 − β₂)g; EmoFact
    x ← x − η sign(g/(√(r c) + ε)) with r, c the β₁-averages of √(row/column means of g² + ε) for ndim ≥ 2, else
    x ← x − η sign(m/(√v + ε))."""
    x, m, v = x0.clone(), torch.zeros_like(x0), torch.zeros_like(x0)
    rows = shape[0] if len(shape) > 1 else 1
    r, c = torch.zeros(rows, 1, dtype=F64), torch.zeros(1, x0.numel() // rows, dtype=F64)
    path = []
    for g in grads:
        x, g = _emo_decay(x, g, lr, wd, flags)
        if name == "emonavi":
            m = b1 * m + (1 - b1) * g
            v = b2 * v + (1 - b2) * g * g
            x = x - lr * m / (v.sqrt() + eps)
        elif name == "emolynx":
            x = x - lr * torch.sign((1 - b1) * g + b1 * m)
            m = b2 * m + (1 - b2) * g
        elif len(shape) > 1:
            square = (g * g).reshape(rows, -1)
            r = b1 * r + (1 - b1) * (square.mean(dim=1, keepdim=True) + eps).sqrt()
            c = b1 * c + (1 - b1) * (square.mean(dim=0, keepdim=True) + eps).sqrt()
            x = x - lr * torch.sign(g.reshape(rows, -1) / ((r * c).sqrt() + eps)).reshape(-1)
        else:
            m = b1 * m + (1 - b1) * g
            v = b2 * v + (1 - b2) * g * g
            x = x - lr * torch.sign(m / (v.sqrt() + eps))
        path.append(x)
    return path


@pytest.mark.parametrize("name", ["emonavi", "emofact", "emolynx"])
@pytest.mark.parametrize("shape", [(5,), (3, 4), (2, 2, 3)], ids=["vector", "matrix", "kernel"])
def test_emo_family_follows_its_update_at_loss_zero(name, shape):
    """One configuration per decay variant (the flags are shared by a group, so each is its own run)."""
    P, steps = int(torch.tensor(shape).prod()), 4
    x0, grads = _x0(1, P), _grads(1, P, steps)
    for lr, b1, b2, eps, wd, flags in EMO_SETTINGS:
        got = _rule_path([f"{name}(lr={lr}, betas=({b1}, {b2}), eps={eps}, weight_decay={wd}, {flags})"], x0,
                         grads, [shape])
        want = _emo_by_hand(name, x0[0], [g[0] for g in grads], shape, lr, b1, b2, eps, wd, flags)
        _assert_paths(got, [w[None] for w in want])


@pytest.mark.parametrize("name", ["emonavi", "emofact", "emolynx"])
def test_emo_shadow_is_kept_but_never_feeds_back_at_loss_zero(name):
    """use_shadow at loss 0: the shadow ratio is 0, so the shadow never pulls x back: the path is unchanged."""
    x0, grads = _x0(2, 4), _grads(2, 4, 3)
    plain = _rule_path([f"{name}(lr=0.01)", f"{name}(lr=0.1)"], x0, grads)
    shadowed = _rule_path([f"{name}(lr=0.01, use_shadow=True)", f"{name}(lr=0.1, use_shadow=True)"], x0, grads)
    _assert_paths(shadowed, plain)


# ---- against the class, on the settings the registry defaults do not reach ------------------------------------

SPECS = [spec for specs in VARIANTS.values() for spec in specs]


def _variant_groups(spec):
    config = get_optimizer(spec)
    return [config, config.with_hyperparams(lr=config.lr / 2)], [0, 7]


@pytest.mark.parametrize("spec", SPECS)
@pytest.mark.parametrize("problem_spec", ["beale", "rosenbrock(noise=0.1)"])
def test_memory_variants_equal_the_class_on_analytic_problems(spec, problem_spec):
    problem = get_problem(problem_spec)
    configs, seeds = _variant_groups(spec)
    assert all(engine_supports("batched", problem, c) for c in configs)
    _analytic_group(problem, configs, seeds)


@pytest.mark.parametrize("spec", SPECS)
@pytest.mark.parametrize("network", [MLP, CNN], ids=["mlp", "cnn"])
def test_memory_variants_equal_the_class_on_networks(network_data, spec, network):
    problem = get_problem(network)
    configs, seeds = _variant_groups(spec)
    assert all(engine_supports("batched", problem, c) for c in configs)
    _network_group(problem, configs, seeds)


@pytest.mark.parametrize("name", sorted(VARIANTS))
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_rules_declare_the_state_their_class_keeps(name, dtype):
    for spec in [name, *VARIANTS[name]]:
        config = get_optimizer(spec)
        declared = RULES[config.entry.batched].slots_per_param(config.hyperparams, 5) * dtype.itemsize
        assert declared == probe_state_bytes_per_param(config, 5, dtype), spec


SHAPES = [(4, 3), (4,), (2, 3, 2, 2), (2,), (1, 5)]  # a matrix, biases, a convolution kernel, a one-row matrix


@pytest.mark.parametrize("spec", [spec for name, specs in VARIANTS.items() for spec in [name, *specs]])
def test_rules_equal_the_class_tensor_by_tensor_over_many_steps(spec):
    """The class on five parameter tensors against the rule called tensor by tensor (as the network engine calls
    it), 40 steps of random gradients with a spike every seventh step (SPAM's resets, clipping and warm-ups): to
    rounding in float64 (measured: bitwise)."""
    config = get_optimizer(spec)
    generator = torch.Generator().manual_seed(0)
    params = [torch.nn.Parameter(torch.randn(shape, generator=generator, dtype=F64)) for shape in SHAPES]
    optimizer = config.entry.build(params, config.hyperparams, dtype=F64, seed=0)
    rule = RULES[config.entry.batched]
    hp = stack_hyperparams([config], F64, "cpu")
    columns = [p.detach().clone().reshape(1, -1) for p in params]
    states = [rule.init(column, hp) for column in columns]
    for state, shape in zip(states, SHAPES):
        state["layout"] = ParamLayout([shape])
    for t in range(1, 41):
        grads = [torch.randn(shape, generator=generator, dtype=F64) * (1 + 20 * (t % 7 == 0)) for shape in SHAPES]
        for p, g in zip(params, grads):
            p.grad = g.clone()
        optimizer.step()
        for column, state, g in zip(columns, states, grads):
            rule.step(column, g.reshape(1, -1).clone(), state, hp, t)
        for i, (p, column) in enumerate(zip(params, columns)):
            torch.testing.assert_close(column[0], p.detach().reshape(-1), rtol=TOL, atol=1e-300,
                                       msg=lambda m, t=t, i=i: f"step {t}, tensor {SHAPES[i]}: {m}")
