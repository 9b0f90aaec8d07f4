"""The batched rules of Sophia-H and AdaHessian (optbench.engines.rules_hessian).

Two kinds of check: a formula test per rule, two steps of each paper's update written here in numpy on a tiny
quadratic, with the Hutchinson probes drawn from the documented per-step seed (engines.step_rng) independently
of the rule; and the batched engine against the loop engine (real library objects) on every branch the
hyperparameters reach, rows of one group mixing them, under each recipe setting the engine implements. The
registry-wide contract (tests/test_engine_contract.py) runs the defaults only.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from optbench.engines.batched import run_batched, stack_hyperparams
from optbench.engines.batched_rules import RULES
from optbench.engines.batched_rules import SEEDS as SEEDS_NEED
from optbench.engines.capabilities import choose_engine, engine_supports
from optbench.engines.loop import run_loop
from optbench.engines.recipe import Recipe
from optbench.errors import UsageError
from optbench.optimizers import get_optimizer
from optbench.problems import get_problem
from optbench.randomness import derive_seed

RTOL = 1e-8
A = np.array([[3.0, 1.0, 0.0], [1.0, 2.0, -0.5], [0.0, -0.5, 1.5]])  # the Hessian of ½xᵀAx
X0 = np.array([[1.0, -2.0, 0.5], [-0.3, 0.8, 2.0]])
SEEDS = [3, 11]


def _probes(seed: int, t: int, n: int, distribution: str, d: int = 3) -> list[np.ndarray]:
    """The n probes the class draws at step t (from 1) of a run with ``seed``: torch's global generator seeded
    with derive_seed(seed, "optimizer") + t before the class's step, n draws in turn (engines.step_rng)."""
    generator = torch.Generator().manual_seed(derive_seed(seed, "optimizer") + t)
    if distribution == "rademacher":
        return [(torch.randint(0, 2, (d,), dtype=torch.float64, generator=generator) * 2.0 - 1.0).numpy()
                for _ in range(n)]
    return [torch.randn(d, dtype=torch.float64, generator=generator).numpy() for _ in range(n)]


def _hutchinson(seed, t, n, distribution):
    """The paper's estimator: diag(H) ≈ (1/n) Σᵢ zᵢ ⊙ (A zᵢ)."""
    return sum(z * (A @ z) for z in _probes(seed, t, n, distribution)) / n


def _rule_steps(specs, steps=2):
    """Run the batched rule of ``specs`` (one row each, seeds SEEDS) on ½xᵀAx for ``steps`` steps."""
    configs = [get_optimizer(s) for s in specs]
    hp = stack_hyperparams(configs, torch.float64, "cpu")
    rule = RULES[configs[0].entry.batched]
    x = torch.tensor(X0)
    state = rule.init(x, hp)
    state["seeds"] = list(SEEDS)
    for t in range(1, steps + 1):
        state["hessian"] = torch.tensor(A).expand(len(specs), 3, 3)
        g = x @ torch.tensor(A)
        rule.step(x, g, state, hp, t)
    return x.numpy()


def test_sophiah_follows_the_paper_for_two_steps():
    """Liu et al. 2023, Algorithm 3 (the library's parametrisation, rules_hessian._SophiaH): m ← β₁m + (1 − β₁)g;
    h ← β₂h + (1 − β₂)ĥ on refresh steps (t − 1 ≡ 0 mod k); x ← x − η·clip(m / max(h, ε), ±p)."""
    specs = ["sophiah(lr=0.05, betas=(0.9, 0.95), p=0.5, update_period=1, num_samples=2)",
             "sophiah(lr=0.2, betas=(0.8, 0.9), p=0.1, update_period=2, num_samples=1, weight_decay=0.1)"]
    lrs, betas, bounds, periods, samples = [0.05, 0.2], [(0.9, 0.95), (0.8, 0.9)], [0.5, 0.1], [1, 2], [2, 1]
    expected = []
    for k in range(2):
        x, m, h = X0[k].copy(), np.zeros(3), np.zeros(3)
        beta1, beta2 = betas[k]
        for t in (1, 2):
            g = A @ x
            x = x * (1 - (0.1 * lrs[k] if k == 1 else 0.0))  # decoupled decay λη
            m = beta1 * m + (1 - beta1) * g
            if (t - 1) % periods[k] == 0:
                h = beta2 * h + (1 - beta2) * _hutchinson(SEEDS[k], t, samples[k], "gaussian")
            x = x - lrs[k] * np.clip(m / np.maximum(h, 1e-12), -bounds[k], bounds[k])
        expected.append(x)
    np.testing.assert_allclose(_rule_steps(specs), np.array(expected), rtol=1e-12)


def test_adahessian_follows_the_paper_for_two_steps():
    """Yao et al. 2021, Algorithm 1 (rules_hessian._AdaHessian): m ← β₁m + (1 − β₁)g; v ← β₂v + (1 − β₂)D²
    on refresh steps; x ← x − η m̂ / (v̂^(κ/2) + ε), m̂ = m/(1 − β₁ᵗ), v̂ = v/(1 − β₂ᵗ)."""
    specs = ["adahessian(lr=0.1, hessian_power=1.0, num_samples=3, hessian_distribution='rademacher', "
             "weight_decouple=False)",
             "adahessian(lr=0.3, hessian_power=0.5, update_period=2, betas=(0.5, 0.9), weight_decay=0.2, "
             "weight_decouple=False, hessian_distribution='rademacher')"]
    lrs, betas, powers, periods, samples = [0.1, 0.3], [(0.9, 0.999), (0.5, 0.9)], [1.0, 0.5], [1, 2], [3, 1]
    expected = []
    for k in range(2):
        x, m, v = X0[k].copy(), np.zeros(3), np.zeros(3)
        beta1, beta2 = betas[k]
        for t in (1, 2):
            g = A @ x + (0.2 * x if k == 1 else 0.0)  # coupled decay λx
            m = beta1 * m + (1 - beta1) * g
            if (t - 1) % periods[k] == 0:
                d = _hutchinson(SEEDS[k], t, samples[k], "rademacher")
                v = beta2 * v + (1 - beta2) * d * d
            m_hat, v_hat = m / (1 - beta1**t), v / (1 - beta2**t)
            x = x - lrs[k] * m_hat / (v_hat ** (powers[k] / 2) + 1e-16)
        expected.append(x)
    np.testing.assert_allclose(_rule_steps(specs), np.array(expected), rtol=1e-12)


# ---- batched == loop on every branch ----------------------------------------------------------------

# One group each (their non-float settings are shared); float settings, update_period and num_samples included,
# differ row by row.
GROUPS = {
    "sophiah": [
        # p = 10: the clip does not saturate on these problems, so every row's steps depend on its probes
        ["sophiah(lr=0.01)", "sophiah(lr=0.03, update_period=1, num_samples=3, p=10.0)",
         "sophiah(lr=0.02, update_period=4, num_samples=2, betas=(0.5, 0.9), p=0.1, eps=1e-3)",
         "sophiah(lr=0.01, weight_decay=0.1)"],
        ["sophiah(lr=0.01, hessian_distribution='rademacher', weight_decouple=False, weight_decay=0.1, "
         "update_period=1, p=10.0)",
         "sophiah(lr=0.05, hessian_distribution='rademacher', weight_decouple=False, weight_decay=0.0, "
         "update_period=3, num_samples=2)"],
        ["sophiah(lr=0.02, fixed_decay=True, weight_decay=0.05, update_period=2, p=1.0)",
         "sophiah(lr=0.01, fixed_decay=True, weight_decay=0.01, update_period=1, num_samples=2)"],
    ],
    "adahessian": [
        ["adahessian(lr=0.05)", "adahessian(lr=0.1, hessian_power=0.5, num_samples=2)",
         "adahessian(lr=0.02, update_period=3, hessian_power=0.25, betas=(0.3, 0.9))",
         "adahessian(lr=0.05, weight_decay=0.1, eps=1e-4)"],
        ["adahessian(lr=0.05, hessian_distribution='gaussian', weight_decouple=False, weight_decay=0.1)",
         "adahessian(lr=0.02, hessian_distribution='gaussian', weight_decouple=False, weight_decay=0.0, "
         "update_period=2, num_samples=3)"],
        ["adahessian(lr=0.05, fixed_decay=True, weight_decay=0.05, update_period=2)",
         "adahessian(lr=0.1, fixed_decay=True, weight_decay=0.01, hessian_power=0.75)"],
    ],
}
PROBLEMS = ["rosenbrock(noise=0.1)", "beale(start='random')", "noisy-quadratic(dim=5, batch_size=4)"]


def _compare(problem_spec, specs, seeds, steps=15, recipe=Recipe()):
    problem = get_problem(problem_spec)
    configs = [get_optimizer(s) for s in specs]
    batched = run_batched(problem, configs, seeds, steps, 1, recipe=recipe)
    for k, (config, seed) in enumerate(zip(configs, seeds)):
        loop = run_loop(problem, config, seed, steps, 1, recipe=recipe)
        assert batched.status[k] == loop.status[0] and batched.end_step[k] == loop.end_step[0], config.label
        rows = batched.steps < loop.end_step[0]
        for column in ("loss", "coords", "grad_norm"):
            if getattr(loop, column) is None:  # coordinates are recorded for dim ≤ 3
                continue
            np.testing.assert_allclose(getattr(batched, column)[rows, k], getattr(loop, column)[rows, 0],
                                       rtol=RTOL, atol=1e-300, err_msg=f"{config.label} {column}")
        np.testing.assert_allclose(batched.end_x[k], loop.end_x[0], rtol=RTOL, atol=1e-300)
        assert batched.cost["state_bytes_per_param"][k] == loop.cost["state_bytes_per_param"][0], config.label
    return batched


@pytest.mark.parametrize("problem_spec", PROBLEMS)
@pytest.mark.parametrize("name", sorted(GROUPS))
def test_every_branch_equals_the_class(name, problem_spec):
    for specs in GROUPS[name]:
        seeds = [k % 2 * 7 for k in range(len(specs))]
        _compare(problem_spec, specs, seeds)


@pytest.mark.parametrize("recipe", [Recipe(clip_norm=1.0), Recipe(clip_value=0.5), Recipe(schedule="cosine"),
                                    Recipe(clip_norm=1.0, schedule="warmup-cosine")],
                         ids=["clip-norm", "clip-value", "cosine", "clip+warmup"])
@pytest.mark.parametrize("name", sorted(GROUPS))
def test_recipes_equal_the_class(name, recipe):
    """Clipping changes .grad but not its graph: the class's Hutchinson products stay those of the Hessian."""
    specs = GROUPS[name][0]
    _compare("rosenbrock", specs, [5] * len(specs), recipe=recipe)


@pytest.mark.parametrize("name", sorted(GROUPS))
def test_rows_draw_their_own_seeds_probes(name):
    """Same seed, same configuration: bitwise equal rows; another seed: other probes, another trajectory
    (a rule that ignored the seeds, or drew once for the whole group, fails here or in the loop comparison)."""
    spec = GROUPS[name][0][1]
    batched = _compare("rosenbrock", [spec] * 3, [0, 0, 1])
    assert np.array_equal(batched.coords[:, 0], batched.coords[:, 1])
    assert not np.allclose(batched.coords[:, 0], batched.coords[:, 2])


@pytest.mark.parametrize("name", sorted(GROUPS))
def test_the_callers_generator_is_left_alone(name):
    torch.manual_seed(123)
    state = torch.get_rng_state()
    run_batched(get_problem("rosenbrock"), [get_optimizer(name)], [0], 5, 1, measure_cost=False)
    assert torch.equal(torch.get_rng_state(), state)


@pytest.mark.parametrize("name", sorted(GROUPS))
def test_batched_on_analytic_problems_loop_on_networks(name, tmp_path, monkeypatch):
    from optbench.data import store
    from optbench.data.synthetic import write_dataset
    from optbench.engines.capabilities import batched_unsupported_reason

    write_dataset("mnist", tmp_path / "mnist", n_train=60, n_test=20)
    monkeypatch.setenv(store.DATA_ENV, str(tmp_path))
    config = get_optimizer(name)
    assert SEEDS_NEED in RULES[config.entry.batched].needs
    assert choose_engine("auto", get_problem("rosenbrock"), config) == "batched"
    network = get_problem("mnist-mlp(width=4, depth=1, batch_size=20, train_size=60, test_size=20)")
    assert not engine_supports("batched", network, config)
    assert "run seed" in batched_unsupported_reason(network, config)
    assert choose_engine("auto", network, config, (), "cuda") == "loop"


@pytest.mark.parametrize("spec, message", [
    ("sophiah(hessian_distribution='uniform')", "hessian_distribution must be one of gaussian, rademacher"),
    ("adahessian(hessian_distribution='uniform')", "hessian_distribution must be one of gaussian, rademacher"),
    ("sophiah(update_period=0)", "update_period must be >= 1"),  # the class's own checks at construction
    ("sophiah(num_samples=0)", "num_samples must be > 0"),
    ("sophiah(p=-1.0)", "p must be >= 0"),
    ("adahessian(hessian_power=0.0)", r"hessian_power must be in \(0, 1\]"),
    ("adahessian(update_period=0)", "update_period must be nonzero"),  # the class divides by it in step()
])
def test_options_the_class_cannot_take_are_refused(spec, message):
    with pytest.raises(UsageError, match=message):
        run_batched(get_problem("rosenbrock"), [get_optimizer(spec)], [0], 3, 1)
