"""What an optimizer draws from torch's global generator is fixed by the run (optbench.engines.step_rng): the
same whatever ran before it in the process, the same alone and side by side in a round of trials, different
from seed to seed, the caller's stream left alone, and exactly the stream the module's docstring states.

The catalogue-wide contract (every supported class, both loop engines) is in tests/test_catalogue.py; the
side-by-side equality for every registered optimizer in tests/test_gallery.py. Here: a user class that draws
noise from the global generator in every step, which pins the mechanism down independently of the library."""

from __future__ import annotations

import textwrap

import numpy as np
import pytest
import torch

from optbench.engines.loop import run_loop
from optbench.engines.recipe import Recipe
from optbench.engines.trials import run_trials
from optbench.optimizers import get_optimizer
from optbench.problems import get_problem
from optbench.randomness import derive_seed

NOISE = 0.5
PROBLEM = "rosenbrock(start=(-1.2, 1.0))"

NOISY_SGD = f'''
import torch


class NoisySGD(torch.optim.Optimizer):
    """x <- x - lr (g + {NOISE} z), z ~ N(0, I) from torch's global generator."""

    def __init__(self, params, lr=1e-3):
        super().__init__(params, {{"lr": lr}})

    @torch.no_grad()
    def step(self, closure=None):
        for group in self.param_groups:
            for p in group["params"]:
                p.add_(p.grad + {NOISE} * torch.randn_like(p), alpha=-group["lr"])
'''


@pytest.fixture
def noisy_sgd(tmp_path, monkeypatch):
    (tmp_path / "noisy.py").write_text(textwrap.dedent(NOISY_SGD))
    monkeypatch.chdir(tmp_path)
    return "noisy.py:NoisySGD(lr=0.001)"


def _run(spec, seed=0, steps=6, **kw):
    return run_loop(get_problem(PROBLEM), get_optimizer(spec), seed, steps, measure_cost=False, **kw)


def test_a_run_does_not_depend_on_what_drew_before_it(noisy_sgd):
    torch.manual_seed(1)
    first = _run(noisy_sgd)
    torch.manual_seed(2)
    torch.randn(1000)
    caller = torch.get_rng_state()
    second = _run(noisy_sgd)
    assert torch.equal(torch.get_rng_state(), caller), "the run moved the caller's generator"
    assert np.array_equal(first.coords, second.coords)


def test_the_draws_are_the_documented_stream(noisy_sgd):
    """Step t draws from the global generator seeded with derive_seed(seed, "optimizer") + t + 1."""
    seed, lr = 7, 1e-3
    trace = _run(noisy_sgd, seed=seed, steps=3)
    problem = get_problem(PROBLEM)
    x = torch.tensor(trace.coords[0, 0])
    for t in range(3):
        xg = x.clone().requires_grad_(True)
        (g,) = torch.autograd.grad(problem.loss(xg[None]).sum(), xg)
        z = torch.randn(2, generator=torch.Generator().manual_seed(derive_seed(seed, "optimizer") + t + 1),
                        dtype=torch.float64)
        x = x - lr * (g + NOISE * z)
        np.testing.assert_allclose(trace.coords[t + 1, 0], x.numpy(), rtol=1e-15, atol=0)


def test_seeds_draw_differently(noisy_sgd):
    assert not np.array_equal(_run(noisy_sgd, seed=0).coords, _run(noisy_sgd, seed=1).coords)


def test_side_by_side_trials_draw_what_they_draw_alone_wherever_they_sit(noisy_sgd):
    base = get_optimizer(noisy_sgd)
    configs = [base.with_hyperparams(lr=lr) for lr in (1e-3, 3e-3, 1e-3)]
    recipe = Recipe(clip_norm=1.0)
    trace = run_trials(get_problem(PROBLEM), configs, 5, 6, 1, recipe=recipe)
    assert np.array_equal(trace.coords[:, 0], trace.coords[:, 2])
    for k, config in enumerate(configs):
        alone = run_loop(get_problem(PROBLEM), config, 5, 6, 1, measure_cost=False, recipe=recipe)
        assert np.array_equal(trace.coords[:, k], alone.coords[:, 0]), k


@pytest.mark.parametrize("name", ["adahessian", "kron", "gravity"])
def test_library_classes_that_draw_are_reproducible(name):
    """The classes found drawing from the global generator when this was written (each differed run to run)."""
    spec = get_optimizer(name)
    torch.manual_seed(3)
    first = run_loop(get_problem("rosenbrock(noise=0.1)"), spec, 0, 12, measure_cost=False)
    torch.manual_seed(4)
    second = run_loop(get_problem("rosenbrock(noise=0.1)"), spec, 0, 12, measure_cost=False)
    assert np.array_equal(first.loss, second.loss, equal_nan=True)


def test_the_network_engine_seeds_the_draws_too(noisy_sgd, tmp_path, monkeypatch, one_thread):
    from optbench.data import store
    from optbench.data.synthetic import write_dataset
    from optbench.engines.network import run_network

    write_dataset("mnist", tmp_path / "data" / "mnist", n_train=60, n_test=20)
    monkeypatch.setenv(store.DATA_ENV, str(tmp_path / "data"))
    problem = get_problem("mnist-mlp(width=4, depth=1, batch_size=20, train_size=60, test_size=20, "
                          "precision='float64', eval_every=2)")
    torch.manual_seed(1)
    first = run_network(problem, get_optimizer(noisy_sgd), seed=0, steps=4)
    torch.manual_seed(2)
    caller = torch.get_rng_state()
    second = run_network(problem, get_optimizer(noisy_sgd), seed=0, steps=4)
    assert torch.equal(torch.get_rng_state(), caller)
    assert np.array_equal(first.loss, second.loss)


NUMPY_COIN_SGD = '''
import numpy as np
import torch


class CoinSGD(torch.optim.Optimizer):
    """x <- x - lr g, and - lr g once more when NumPy's global generator's coin says so (as Kron's rebalancing)."""

    def __init__(self, params, lr=1e-3):
        super().__init__(params, {"lr": lr})

    @torch.no_grad()
    def step(self, closure=None):
        twice = np.random.random() < 0.5
        for group in self.param_groups:
            for p in group["params"]:
                p.add_(p.grad, alpha=-group["lr"] * (2.0 if twice else 1.0))
'''


def test_numpys_global_generator_is_fixed_by_the_run_and_left_alone(tmp_path, monkeypatch):
    from optbench.engines.step_rng import step_seed

    (tmp_path / "coin.py").write_text(NUMPY_COIN_SGD)
    monkeypatch.chdir(tmp_path)
    spec = "coin.py:CoinSGD(lr=0.001)"
    np.random.seed(1)
    first = _run(spec, steps=12)
    np.random.seed(2)
    np.random.random(100)
    state = np.random.get_state()[1].copy()
    second = _run(spec, steps=12)
    np.testing.assert_array_equal(first.loss, second.loss)
    np.testing.assert_array_equal(np.random.get_state()[1], state)  # the caller's stream is untouched
    # the coins are the stream the module states: step t's first draw after np.random.seed(s_t mod 2³²)
    coins = []
    for t in range(12):
        np.random.seed(step_seed(0, t) % (1 << 32))
        coins.append(np.random.random() < 0.5)
    assert 0 < sum(coins) < 12  # both branches taken, so the check below means something
    problem = get_problem(PROBLEM)
    x = problem.start_points([0], dtype=torch.float64, device="cpu")[0].clone()
    for t, twice in enumerate(coins):
        np.testing.assert_allclose(first.loss[t, 0], float(problem.loss(x)), rtol=1e-12)
        x = x - 0.001 * (2.0 if twice else 1.0) * problem.grad(x)
