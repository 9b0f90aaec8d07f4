"""The batched rules of engines/rules_memory.py (SM3, SM3Paper, GaLore, Fira, SPAM, Nero, EmoNavi, EmoFact, EmoLynx):
each rule against the update formula of its docstring (the paper's, with the library's documented changes),
written here by hand in plain torch float64 with a loop over configurations, for a few steps on small ``[K, d]``
inputs with per-configuration hyperparameters (to 1e-12), on vectors and, for the per-tensor rules, on matrices;
and against the class (batched == loop, 1e-8 in float64) on the settings the registry defaults of
tests/test_engine_contract.py do not reach, on analytic problems and small networks."""

from __future__ import annotations

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
