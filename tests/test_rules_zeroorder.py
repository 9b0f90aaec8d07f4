"""The batched rules of SPSA and the forward gradient (engines.rules_zeroorder) and what the analytic batched engine
provides them: each rule against its paper's formula written here, the forward gradient's JVP against the inner
product the rule takes, and the engine choices (batched on analytic problems, never on the numpy path or networks).
The batched-vs-loop contract itself is tests/test_engine_contract.py's."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from optbench.engines.batched import run_batched
from optbench.engines.loop import AnalyticClosure, run_loop
from optbench.engines.recipe import Recipe
from optbench.optimizers import get_optimizer
from optbench.problems import get_problem
from optbench.randomness import derive_seed

START = torch.tensor([-1.2, 1.0], dtype=torch.float64)  # rosenbrock's default start, every seed


def rosenbrock(x):
    return (1 - x[..., 0]) ** 2 + 100 * (x[..., 1] - x[..., 0] ** 2) ** 2


def rosenbrock_grad(x):
    return torch.stack([-2 * (1 - x[..., 0]) - 400 * x[..., 0] * (x[..., 1] - x[..., 0] ** 2),
                        200 * (x[..., 1] - x[..., 0] ** 2)], -1)


def _generator(seed):
    return torch.Generator().manual_seed(derive_seed(seed, "directions"))


@pytest.mark.parametrize("alpha, gamma", [(0.0, 0.0), (0.602, 0.101)])
def test_spsa_rule_follows_spalls_formula(alpha, gamma):
    """Spall 1992 with A = 0: a_t = η/t^α, c_t = c/t^γ, ĝ = (f(x + c_tΔ) − f(x − c_tΔ))/(2c_t) · Δ, x ← x − a_t ĝ;
    three configurations (two learning rates, two seeds) in one batched run, each with its own directions."""
    c, steps = 0.05, 4
    lrs, seeds = [1e-3, 3e-4, 1e-3], [5, 5, 9]
    configs = [get_optimizer(f"spsa(lr={lr}, c={c}, alpha={alpha}, gamma={gamma})") for lr in lrs]
    trace = run_batched(get_problem("rosenbrock"), configs, seeds, steps, measure_cost=False)
    for k, (lr, seed) in enumerate(zip(lrs, seeds)):
        generator, x = _generator(seed), START.clone()
        for t in range(1, steps + 1):
            a_t, c_t = lr / t**alpha, c / t**gamma
            delta = (torch.randint(0, 2, (2,), generator=generator) * 2 - 1).to(torch.float64)
            x = x - a_t * (rosenbrock(x + c_t * delta) - rosenbrock(x - c_t * delta)) / (2 * c_t) * delta
            np.testing.assert_allclose(trace.coords[t, k], x.numpy(), rtol=1e-12)


def test_forward_gradient_rule_follows_algorithm_1():
    """Baydin et al. 2022, Algorithm 1: v ~ N(0, I), ĝ = (∇f(x)·v) v, x ← x − η ĝ; per configuration."""
    steps, lrs, seeds = 4, [1e-4, 3e-4], [2, 3]
    configs = [get_optimizer(f"forward-grad(lr={lr})") for lr in lrs]
    trace = run_batched(get_problem("rosenbrock"), configs, seeds, steps, measure_cost=False)
    for k, (lr, seed) in enumerate(zip(lrs, seeds)):
        generator, x = _generator(seed), START.clone()
        for t in range(1, steps + 1):
            v = torch.randn(2, generator=generator, dtype=torch.float64)
            x = x - lr * torch.dot(rosenbrock_grad(x), v) * v
            np.testing.assert_allclose(trace.coords[t, k], x.numpy(), rtol=1e-12)


@pytest.mark.parametrize("noise", [0.0, 0.3])
def test_the_classes_jvp_is_the_inner_product_with_the_sampled_gradient(noise):
    """What ForwardGradient computes by forward mode through ``closure.loss_at`` on f̃_t(x) = f(x) + ⟨ξ_t, x − x_t⟩
    is ⟨∇f(x_t) + ξ_t, v⟩, the inner product the rule takes with the engine's noisy gradient."""
    problem = get_problem(f"rosenbrock(noise={noise})")
    param = torch.nn.Parameter(torch.tensor([0.3, -0.4], dtype=torch.float64))
    closure = AnalyticClosure(problem, param, problem.noise_std(), problem.noise_stream([4]))
    v = torch.randn(2, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    for _ in range(3):
        closure.begin_step()
        _, jvp = torch.func.jvp(lambda p: closure.loss_at([p]), (param.detach(),), (v,))
        sampled_grad = rosenbrock_grad(param.detach()) + (0.0 if closure.sample is None else closure.sample)
        assert (closure.sample is None) == (noise == 0.0)
        np.testing.assert_allclose(float(jvp), float(torch.dot(sampled_grad, v)), rtol=1e-12)
        with torch.no_grad():
            param.add_(0.1)


@pytest.mark.parametrize("name", ["spsa", "forward-grad"])
@pytest.mark.parametrize("recipe", [Recipe(clip_norm=1e-3), Recipe(clip_value=1e-3, schedule="cosine")])
def test_recipes_reach_the_rules_as_they_reach_the_class(name, recipe):
    """The loop engine clips only what ``closure()`` leaves in ``.grad``, which neither class calls, so clipping
    leaves both trajectories as they are; the batched engine hands the rules the unclipped sampled gradient and
    agrees, and a schedule sets the lr of both."""
    problem = get_problem("rosenbrock(noise=0.1)")
    configs = [get_optimizer(f"{name}(lr=1e-4)"), get_optimizer(f"{name}(lr=2e-4)")]
    trace = run_batched(problem, configs, [0, 1], 12, recipe=recipe, measure_cost=False)
    unclipped = run_batched(problem, configs, [0, 1], 12, recipe=Recipe(schedule=recipe.schedule), measure_cost=False)
    for k, (config, seed) in enumerate(zip(configs, [0, 1])):
        loop = run_loop(problem, config, seed, 12, recipe=recipe, measure_cost=False)
        np.testing.assert_allclose(trace.coords[:, k], loop.coords[:, 0], rtol=1e-10)
    np.testing.assert_array_equal(trace.coords, unclipped.coords)


@pytest.mark.parametrize("name", ["spsa", "forward-grad"])
def test_float32_batched_matches_the_loop(name):
    """The gallery's dtype: directions drawn in float32 as the class draws them; the runs agree to float32
    rounding."""
    problem = get_problem("rosenbrock")
    configs = [get_optimizer(f"{name}(lr=1e-4)"), get_optimizer(f"{name}(lr=3e-4)")]
    trace = run_batched(problem, configs, [0, 0], 20, dtype=torch.float32, measure_cost=False)
    for k, config in enumerate(configs):
        loop = run_loop(problem, config, 0, 20, dtype=torch.float32, measure_cost=False)
        np.testing.assert_allclose(trace.coords[:, k], loop.coords[:, 0], rtol=1e-5)


@pytest.mark.parametrize("name", ["spsa", "forward-grad"])
def test_engine_choices(name):
    """Analytic: batched (the torch path: the numpy path has no closure) for ``auto`` and a tuning round, as the
    gallery's; the batched network engine refuses both for the needs it lacks."""
    from optbench.engines import batched_numpy
    from optbench.engines.capabilities import choose_engine
    from optbench.errors import UsageError
    from optbench.gallery import CLIP_NORM

    config = get_optimizer(name)
    analytic = get_problem("rosenbrock")
    assert not batched_numpy.supports(analytic, config.entry.batched, frozenset(), "cpu", "float64")
    for recipe in (Recipe(), Recipe(clip_norm=CLIP_NORM)):
        assert choose_engine("auto", analytic, config, recipe) == "batched"
        assert choose_engine("batched", analytic, config, recipe) == "batched"
    # networks (tests/test_engine_contract.py::test_network_engine_choices runs one): the engine lacks both needs
    from optbench.engines.batched_rules import RULES, check_needs
    from optbench.engines.network import BATCHED_PROVIDES

    assert RULES[config.entry.batched].needs - BATCHED_PROVIDES == {"closure", "seeds"}
    with pytest.raises(UsageError, match=r"within a step \(a closure\); the run seeds"):
        check_needs(config, BATCHED_PROVIDES, "batched network engine")


def test_the_batched_engine_value_runs_the_torch_path():
    """``BatchedEngine.run`` of a round (what the tuner executes): the numpy path declines, the torch path runs it,
    equal to the loop runs."""
    from optbench.engines.capabilities import get_engine
    from optbench.sweep.spec import Run

    problem = get_problem("rosenbrock(noise=0.1)")
    runs = [Run(problem, get_optimizer(f"spsa(lr={lr})"), 3, 10, 5, "float64", "cpu", Recipe()) for lr in (1e-4, 1e-3)]
    trace = get_engine("batched", "analytic").run(runs, measure_cost=False)
    for k, run in enumerate(runs):
        loop = run_loop(problem, run.optimizer, 3, 10, 5, measure_cost=False)
        np.testing.assert_allclose(trace.end_x[k], loop.end_x[0], rtol=1e-10)


@pytest.mark.parametrize("shapes", [[(2,)], [(3, 2), (5,)], [(40_000,)]])
def test_bits_drawn_ahead_are_the_bits_drawn_step_by_step(shapes):
    """SPSA's rule draws ``randint(0, 2)`` for several steps at once per configuration; torch's CPU sampler fills
    element by element, so the block is what the class draws step by step, parameter tensor by tensor."""
    from optbench.engines.rules_zeroorder import _rademacher_bits

    size = sum(int(np.prod(s)) for s in shapes)
    x = torch.zeros(3, size)
    state = {"seeds": [0, 1, 7]}
    drawn = torch.stack([_rademacher_bits(state, x) for _ in range(70)])  # more than one block
    for k, seed in enumerate(state["seeds"]):
        generator = _generator(seed)
        for t in range(70):
            expected = torch.cat([torch.randint(0, 2, s, generator=generator).reshape(-1) for s in shapes])
            assert torch.equal(drawn[t, k], expected), (seed, t)


@pytest.mark.parametrize("name", ["spsa", "forward-grad"])
def test_the_numpy_path_refuses_the_zero_order_rules(name):
    """No numpy port (the numpy path has no closure and no generators): handed one, it refuses by name."""
    from optbench.engines.batched_numpy import run_batched_numpy
    from optbench.errors import UsageError

    with pytest.raises(UsageError, match=f"numpy batched path does not support '{name}'"):
        run_batched_numpy(get_problem("rosenbrock"), [get_optimizer(name)], [0], 3)
