"""The batched engine's numpy path (engines.batched_numpy): same numbers as the loop engine, chosen by itself,
no torch import, shared random streams, and the decisions that keep time per configuration flat in K.

tests/test_engine_contract.py runs every ported rule over the registry against the loop engine on both paths;
here: the shared streams, the landscapes in numpy, end rules (divergence, escape, off-grid ends), groups
whose hyperparameters all differ, the path decision, blocking and the torch path's thread decision.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch

from optbench.engines import batched_numpy, intraop
from optbench.engines.batched import run_batched
from optbench.engines.batched_numpy import block_size, noise_block, run_batched_numpy, supports
from optbench.engines.batched_rules import RULES as TORCH_RULES
from optbench.engines.loop import run_loop
from optbench.engines.numpy_rules import RULES as NUMPY_RULES
from optbench.optimizers import get_optimizer, list_optimizers
from optbench.problems import get_problem, list_problems
from optbench.problems.rng import NormalStream, torch_rand
from optbench.randomness import derive_seed
from optbench.sweep.spec import Run

RTOL = 1e-8
ANALYTIC = sorted(e.name for e in list_problems() if e.kind == "analytic")
NUMPY_ENTRIES = [e for e in list_optimizers() if not e.unsupported and e.batched in NUMPY_RULES]


def _close(actual, expected, what):
    np.testing.assert_allclose(actual, expected, rtol=RTOL, atol=1e-300, equal_nan=True, err_msg=what)


def _same_as_loop(problem, configs, seeds, steps, record_every=1):
    trace = run_batched_numpy(problem, configs, seeds, steps, record_every, measure_cost=False)
    for k, (config, seed) in enumerate(zip(configs, seeds)):
        loop = run_loop(problem, config, seed, steps, record_every, measure_cost=False)
        assert trace.status[k] == loop.status[0] and trace.end_step[k] == loop.end_step[0], config.label
        rows = trace.steps < loop.end_step[0]
        _close(trace.loss[rows, k], loop.loss[rows, 0], f"{config.label} loss")
        _close(trace.grad_norm[rows, k], loop.grad_norm[rows, 0], f"{config.label} gradient norm")
        _close(trace.end_x[k], loop.end_x[0], f"{config.label} end point")
        _close(trace.end_loss[k], loop.end_loss[0], f"{config.label} end loss")
        _close(trace.end_grad_norm[k], loop.end_grad_norm[0], f"{config.label} end gradient norm")
    return trace


# ---- the random streams both paths share ----------------------------------------------------------

@pytest.mark.parametrize("n", [1, 2, 3, 17])
def test_torch_rand_is_reproduced_bit_for_bit(n):
    for seed in (0, 1, 12345, derive_seed(7, "start")):
        expected = torch.rand(n, generator=torch.Generator().manual_seed(seed), dtype=torch.float64).numpy()
        assert np.array_equal(torch_rand(seed, n), expected)


@pytest.mark.parametrize("name", ANALYTIC)
def test_random_starts_are_the_same_on_both_paths(name):
    problem = get_problem(f"{name}(start='random')")
    seeds = [0, 3, 99]
    assert np.array_equal(problem.start_points_numpy(seeds), problem.start_points(seeds).numpy())
    fixed = get_problem(name)
    assert np.array_equal(fixed.start_points_numpy(seeds), fixed.start_points(seeds).numpy())


def test_a_runs_noise_does_not_depend_on_block_size_or_group():
    together = NormalStream([1, 2, 3], 2, block=7)
    alone = NormalStream([3], 2, block=256)
    pair = NormalStream([2, 3], 2, block=1000)
    as_torch = NormalStream([1, 2, 3], 2, block=5, torch_dtype=torch.float64)
    a = np.stack([together.next() for _ in range(300)])
    assert np.array_equal(a[:, 2], np.stack([alone.next() for _ in range(300)])[:, 0])
    assert np.array_equal(a[:, 1:], np.stack([pair.next() for _ in range(300)]))
    assert np.array_equal(a, torch.stack([as_torch.next() for _ in range(300)]).numpy())
    assert not np.array_equal(a[:, 0], a[:, 1])  # runs have their own streams
    assert abs(a.mean()) < 0.1 and abs(a.std() - 1) < 0.1


def test_the_loop_engine_draws_from_the_shared_stream():
    problem = get_problem("rosenbrock(noise=0.1)")
    stream = problem.noise_stream([5])
    assert isinstance(stream, NormalStream)
    assert np.array_equal(stream.next().numpy(), NormalStream([5], 2).next())


def test_noisy_analytic_runs_say_which_generator_in_their_identity():
    adam = get_optimizer("adam")
    noisy = Run(get_problem("rosenbrock(noise=0.1)"), adam, 0, 10, 1)
    nqm = Run(get_problem("noisy-quadratic(dim=4)"), adam, 0, 10, 1)
    exact = Run(get_problem("rosenbrock"), adam, 0, 10, 1)
    assert noisy.identity["noise_rng"] == nqm.identity["noise_rng"] == "numpy-pcg64"
    assert "noise_rng" not in exact.identity  # noise-free runs keep their run ids
    assert noisy.run_id != Run(get_problem("rosenbrock(noise=0.2)"), adam, 0, 10, 1).run_id


# ---- the landscapes compute in numpy ---------------------------------------------------------------

@pytest.mark.parametrize("name", ANALYTIC)
def test_every_numpy_landscape_matches_torch(name):
    spec = {"rosenbrock": "rosenbrock(dim=4)", "rastrigin": "rastrigin(dim=3)"}.get(name, name)
    problem = get_problem(spec)
    if not problem.numpy:
        assert problem.has_batch_size  # only the noisy quadratic's noise model is torch
        assert not supports(problem, "adam")
        return
    lo = np.array([b[0] for b in problem.bounds])
    hi = np.array([b[1] for b in problem.bounds])
    x = lo + np.random.default_rng(0).random((64, problem.dim)) * (hi - lo)
    loss, grad = problem.loss(torch.from_numpy(x)).numpy(), problem.grad(torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(problem.fn(x), loss, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(problem.grad_fn(x), grad, rtol=1e-12, atol=1e-12)
    assert isinstance(problem.grad_fn(x), np.ndarray)


# ---- the numpy rules: twins of the torch rules, same as the loop engine ----------------------------

@pytest.mark.parametrize("name", sorted(NUMPY_RULES))
def test_every_numpy_rule_has_a_torch_twin_with_the_same_state(name):
    assert name in TORCH_RULES and not TORCH_RULES[name].needs  # the numpy path provides no needs
    for entry in (e for e in list_optimizers() if e.batched == name and not e.unsupported):
        hp = get_optimizer(entry.name).hyperparams
        assert NUMPY_RULES[name].state_slots(hp) == TORCH_RULES[name].state_slots(hp), entry.name


def _varied(config):
    """The config with every float hyperparameter it has moved off its default (a [K, 1] column each)."""
    changes = {}
    hp = config.hyperparams
    if "weight_decay" in hp:
        changes["weight_decay"] = 0.03
    if "betas" in hp:
        changes["betas"] = (0.8, 0.99)
    if "momentum" in hp:
        changes["momentum"] = 0.5
    for key in ("eps", "alpha", "rho", "dampening", "lr_decay"):
        if key == "dampening" and hp.get("nesterov"):
            continue  # Nesterov needs zero dampening
        if key in hp and isinstance(hp[key], float):
            changes[key] = hp[key] * 0.5 if hp[key] else 0.1
    return config.with_hyperparams(lr=(config.lr or 1e-3) * 2, **changes)


@pytest.mark.parametrize("name", [e.name for e in NUMPY_ENTRIES])
def test_groups_whose_hyperparameters_all_differ(name):
    base = get_optimizer(name)
    if base.lr is None:
        return
    configs = [base, _varied(base)]
    _same_as_loop(get_problem("rosenbrock(noise=0.1)"), configs + configs, [0, 0, 4, 4], 12)


@pytest.mark.parametrize("spec,lr,record_every", [
    ("rosenbrock", 0.02, 1),  # sgd diverges: loss above the blow-up level
    ("rosenbrock", 0.02, 4),  # ... between recorded rows: the end row is kept separately
    ("saddle", 0.3, 3),  # unbounded: runs escape the box
    ("monkey-saddle(noise=0.5)", 0.2, 2),
])
def test_end_rules_match_the_loop_engine(spec, lr, record_every):
    problem = get_problem(spec)
    configs = [get_optimizer(f"sgd(lr={lr * f})") for f in (0.01, 0.5, 1.0)]
    trace = _same_as_loop(problem, configs, [0, 1, 2], 40, record_every)
    assert set(trace.status) - {"done"}, "the case should end some runs early"


# ---- which path runs ------------------------------------------------------------------------------

def test_the_numpy_path_runs_nothing_the_torch_path_would_refuse():
    from optbench.engines import batched

    assert batched_numpy.RECIPE <= batched.RECIPE  # capabilities answers for the torch path from supports()
    for entry in NUMPY_ENTRIES:
        assert batched.supports_batched(get_optimizer(entry.name)), entry.name


def test_the_numpy_path_decision():
    rosen, adam = get_problem("rosenbrock(noise=0.1)"), get_optimizer("adam")
    assert supports(rosen, adam.entry.batched)
    assert supports(rosen, "sgd", {"schedule": "cosine", "clip_norm": 1.0})
    assert not supports(rosen, "adam", device="cuda")  # a device other than the CPU: torch
    assert not supports(rosen, "adam", dtype="float32")
    assert not supports(rosen, "adam", {"label_smoothing": 0.1})
    assert not supports(rosen, "newton") and not supports(rosen, "lamb") and not supports(rosen, None)
    assert not supports(get_problem("noisy-quadratic(dim=4)"), "adam")


def test_a_numpy_path_sweep_never_imports_torch(tmp_path):
    code = textwrap.dedent(f"""
        import sys
        from optbench import Sweep, get_optimizer, get_problem
        from optbench.runner import run_sweep
        sweep = Sweep([get_problem("rosenbrock(noise=0.1)"), get_problem("rastrigin")],
                      [get_optimizer("adam"), get_optimizer("sgd-momentum")], lrs=[1e-3, 1e-2], seeds=[0, 1],
                      steps=20, engine="auto")
        outcome = run_sweep(sweep, {str(tmp_path)!r})
        assert outcome.runs_done == 16, outcome
        assert outcome.engines == {{"batched": 16}}, outcome.engines
        assert "torch" not in sys.modules
    """)
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)


def test_blocks_change_no_number(monkeypatch):
    problem = get_problem("rosenbrock(noise=0.1)")
    configs = [get_optimizer(f"adam(lr={lr})") for lr in (1e-3, 3e-3, 1e-2)] * 2
    seeds = [0, 0, 0, 1, 1, 1]
    whole = run_batched_numpy(problem, configs, seeds, 30, 1, measure_cost=False)
    monkeypatch.setattr(batched_numpy, "MIN_BLOCK", 2)
    monkeypatch.setattr(batched_numpy, "BLOCK_BYTES", 2 * 8 * problem.dim)
    assert block_size(len(seeds), problem.dim) == 2
    blocked = run_batched_numpy(problem, configs, seeds, 30, 1, measure_cost=False)
    for name in ("loss", "grad_norm", "coords", "end_x", "end_step"):
        assert np.array_equal(getattr(whole, name), getattr(blocked, name)), name


def test_blowup_levels_are_blowup_level_per_run():
    for spec in ("rosenbrock", "styblinski-tang", "saddle"):
        problem = get_problem(spec)
        losses = np.array([0.0, 0.5, 3.0, -50.0, 1e300, np.inf, np.nan])
        expected = [problem.blowup_level(v) for v in losses.tolist()]
        assert np.array_equal(problem.blowup_levels(losses), np.array(expected)), spec


def test_block_and_noise_buffer_sizes():
    fits = batched_numpy.BLOCK_BYTES // 16
    assert block_size(100, 2) == 100 and block_size(fits, 2) == fits  # one block while it fits
    assert block_size(100_000, 2) == fits and block_size(fits + 1, 2) == fits
    assert block_size(10_000, 100_000) == batched_numpy.MIN_BLOCK  # never below the dispatch floor
    assert noise_block(1000, 2, 1000) * 1000 * 2 <= batched_numpy.NOISE_BUFFER
    assert noise_block(10, 2, 1000) == 1000 and noise_block(10**7, 2, 1000) == 16


def test_torch_threads_by_tensor_size(one_thread):
    per = intraop.ELEMENTS_PER_THREAD
    assert intraop.intraop_threads(2048, 8) == 1 and intraop.intraop_threads(200_000, 8) == 1
    assert intraop.intraop_threads(2 * per, 8) == 2 and intraop.intraop_threads(100 * per, 8) == 8
    assert intraop.intraop_threads(0, 8) == 1 and intraop.intraop_threads(100 * per, 1) == 1
    torch.set_num_threads(2)
    with intraop.cpu_threads_for(4096, "cpu"):
        assert torch.get_num_threads() == 1
    assert torch.get_num_threads() == 2


def test_the_torch_path_keeps_its_numbers_on_one_thread(one_thread):
    problem = get_problem("rosenbrock(noise=0.1)")
    configs = [get_optimizer(f"adam(lr={lr})") for lr in (1e-3, 1e-2)]
    torch_path = run_batched(problem, configs, [0, 1], 20, 1, measure_cost=False)
    numpy_path = run_batched_numpy(problem, configs, [0, 1], 20, 1, measure_cost=False)
    _close(numpy_path.loss, torch_path.loss, "loss")
    _close(numpy_path.coords, torch_path.coords, "coordinates")
