"""Contracts over the analytic problem registry: formulas, minima, batching, starts, noise, run endings."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from optbench.engines.batched import run_batched
from optbench.engines.loop import run_loop
from optbench.errors import SpecError
from optbench.optimizers import get_optimizer
from optbench.problems import get_problem, list_problems

ANALYTIC = [e.name for e in list_problems() if e.kind == "analytic"]


# Independent closed forms, written from the documented formulas (x: [d] float64 tensor).
def _rosenbrock(x):
    return sum(100 * (x[i + 1] - x[i] ** 2) ** 2 + (1 - x[i]) ** 2 for i in range(len(x) - 1))


def _valley(x, kappa=100.0, angle=0.0):
    c, s = math.cos(math.radians(angle)), math.sin(math.radians(angle))
    u, v = c * x[0] + s * x[1], -s * x[0] + c * x[1]
    return 0.5 * (u**2 + kappa * v**2)


def _noisy_quadratic(x, power=1.0):
    return sum(0.5 * (i + 1) ** (-power) * x[i] ** 2 for i in range(len(x)))


FORMULAS = {
    "rosenbrock": _rosenbrock,
    "saddle": lambda x: x[0] ** 2 - x[1] ** 2,
    "monkey-saddle": lambda x: x[0] ** 3 - 3 * x[0] * x[1] ** 2,
    "valley": _valley,
    "beale": lambda x: ((1.5 - x[0] + x[0] * x[1]) ** 2 + (2.25 - x[0] + x[0] * x[1] ** 2) ** 2
                        + (2.625 - x[0] + x[0] * x[1] ** 3) ** 2),
    "himmelblau": lambda x: (x[0] ** 2 + x[1] - 11) ** 2 + (x[0] + x[1] ** 2 - 7) ** 2,
    "rastrigin": lambda x: 10 * len(x) + sum(v**2 - 10 * math.cos(2 * math.pi * v) for v in x.tolist()),
    "ackley": lambda x: (-20 * math.exp(-0.2 * math.sqrt(float((x**2).mean())))
                         - math.exp(float(torch.cos(2 * math.pi * x).mean())) + 20 + math.e),
    "styblinski-tang": lambda x: 0.5 * float((x**4 - 16 * x**2 + 5 * x).sum()),
    "noisy-quadratic": _noisy_quadratic,
}
# Documented global minima (points, value); saddles have none.
MINIMA = {
    "rosenbrock": ([(1.0, 1.0)], 0.0),
    "valley": ([(0.0, 0.0)], 0.0),
    "beale": ([(3.0, 0.5)], 0.0),
    "himmelblau": ([(3.0, 2.0), (-2.805118, 3.131312), (-3.779310, -3.283186), (3.584428, -1.848127)], 0.0),
    "rastrigin": ([(0.0, 0.0)], 0.0),
    "ackley": ([(0.0, 0.0)], 0.0),
    "styblinski-tang": ([(-2.903534, -2.903534)], -39.16616570377142 * 2),
    "noisy-quadratic": ([(0.0,) * 100], 0.0),
    "saddle": ([], None),
    "monkey-saddle": ([], None),
}
SPECS = {"valley": ["valley", "valley(kappa=10, angle=30)"], "rosenbrock": ["rosenbrock", "rosenbrock(dim=5)"],
         "noisy-quadratic": ["noisy-quadratic(dim=4, power=2.0)"], "rastrigin": ["rastrigin(dim=3)"],
         "ackley": ["ackley(dim=3)"], "styblinski-tang": ["styblinski-tang(dim=3)"]}


def _formula(problem):
    fn = FORMULAS[problem.name]
    if problem.name == "valley":
        return lambda x: fn(x, problem.config["kappa"], problem.config["angle"])
    if problem.name == "noisy-quadratic":
        return lambda x: fn(x, problem.config["power"])
    return fn


def test_every_analytic_problem_has_a_reference():
    assert set(ANALYTIC) == set(FORMULAS) == set(MINIMA)


@pytest.mark.parametrize("spec", [s for n in ANALYTIC for s in SPECS.get(n, [n])])
def test_loss_matches_formula_and_grad_matches_differences(spec):
    problem = get_problem(spec)
    fn = _formula(problem)
    lo = torch.tensor([b[0] for b in problem.bounds], dtype=torch.float64)
    hi = torch.tensor([b[1] for b in problem.bounds], dtype=torch.float64)
    points = lo + torch.rand(5, problem.dim, generator=torch.Generator().manual_seed(1), dtype=torch.float64) * (
        hi - lo)
    losses = problem.loss(points)
    grads = problem.grad(points)
    h = 1e-6
    for x, loss, grad in zip(points, losses, grads):
        assert float(loss) == pytest.approx(float(fn(x)), rel=1e-12, abs=1e-12)
        eye = torch.eye(problem.dim, dtype=torch.float64)
        fd = torch.tensor([(float(fn(x + h * e)) - float(fn(x - h * e))) / (2 * h) for e in eye])
        np.testing.assert_allclose(grad.numpy(), fd.numpy(), rtol=1e-6, atol=1e-5)


@pytest.mark.parametrize("spec", [s for n in ANALYTIC for s in SPECS.get(n, [n])]
                         + ["rosenbrock(dim=5)", "ackley(dim=3)", "rastrigin(dim=4)"])
def test_closed_form_gradient_equals_autograd(spec):
    """The closed-form gradients the batched engine uses agree with autograd of the loss to 1e-12, over
    the plot bounds and at the minima, in float64 and float32 (to float32 precision)."""
    problem = get_problem(spec)
    assert problem.grad_fn is not None
    lo = torch.tensor([b[0] for b in problem.bounds], dtype=torch.float64)
    hi = torch.tensor([b[1] for b in problem.bounds], dtype=torch.float64)
    points = lo + torch.rand(64, problem.dim, generator=torch.Generator().manual_seed(2), dtype=torch.float64) * (
        hi - lo)
    points = torch.cat([points, problem.minima, torch.zeros(1, problem.dim, dtype=torch.float64)])
    for dtype, rtol in ((torch.float64, 1e-12), (torch.float32, 1e-5)):
        x = points.to(dtype)
        xg = x.clone().requires_grad_(True)
        (expected,) = torch.autograd.grad(problem.fn(xg).sum(), xg)
        loss, grad = problem.loss_and_grad(x)
        assert grad.dtype == dtype and grad.shape == x.shape
        torch.testing.assert_close(loss, problem.fn(x), rtol=0, atol=0)
        scale = expected.abs().max()
        torch.testing.assert_close(grad, expected, rtol=rtol, atol=rtol * float(scale))


@pytest.mark.parametrize("spec", [s for n in ANALYTIC for s in SPECS.get(n, [n])]
                         + ["rosenbrock(dim=5)", "ackley(dim=3)", "rastrigin(dim=4)", "noisy-quadratic(dim=2)",
                            "rastrigin(A=3.5)", "styblinski-tang"])
def test_numpy_loss_equals_the_torch_loss(spec):
    """Every registered analytic problem has a numpy loss (the report draws landscapes with it, without
    torch) equal to its torch loss to 1e-12 over the plot bounds, at the minima and at the origin, over
    leading dimensions."""
    import numpy as np

    problem = get_problem(spec)
    lo = np.array([b[0] for b in problem.bounds])
    hi = np.array([b[1] for b in problem.bounds])
    points = lo + np.random.default_rng(3).random((3, 50, problem.dim)) * (hi - lo)
    points[0, :len(problem.minima)] = problem.minima.numpy()
    points[1, 0] = 0.0
    got = problem.numpy_loss(points)
    expected = problem.loss(torch.from_numpy(points)).numpy()
    assert isinstance(got, np.ndarray) and got.dtype == np.float64 and got.shape == (3, 50)
    np.testing.assert_allclose(got, expected, rtol=1e-12, atol=1e-12 * max(1.0, np.abs(expected).max()))


@pytest.mark.parametrize("power", [0.0, 1.0, 0.5, 2.0, 1.3])
def test_noisy_quadratic_spectrum_is_torchs_pow(power):
    """h_i = i^(−p) bit for bit as torch computes it (targets and run ids depend on it); for p = 0 and 1 without
    torch (numpy's 1/i is correctly rounded, as torch's), so a report on it needs no torch."""
    for d in (1, 2, 7, 100, 5000):
        problem = get_problem(f"noisy-quadratic(dim={d}, power={power})")
        h = torch.arange(1, d + 1, dtype=torch.float64) ** (-power)
        assert torch.equal(problem.noise_variance(1), h)
        assert problem.target == 1e-3 * 0.5 * sum(h.tolist())


@pytest.mark.parametrize("name", ANALYTIC)
def test_known_minima(name):
    problem = get_problem(name)
    points, value = MINIMA[name]
    assert problem.f_min == (pytest.approx(value, rel=1e-12) if value is not None else None)
    assert problem.minima.dtype == torch.float64
    assert problem.minima.shape == (len(points), problem.dim)
    np.testing.assert_allclose(problem.minima.numpy().reshape(-1, problem.dim), np.array(points).reshape(
        -1, problem.dim), atol=1e-6)
    for m in problem.minima:
        assert float(problem.loss(m)) == pytest.approx(value, abs=1e-12)
        assert float(problem.grad(m).norm()) < 1e-6
        assert float(problem.distance_to_minimum(m)) == 0.0
    if not points:
        assert problem.unbounded and math.isnan(float(problem.distance_to_minimum(problem.start)))
    # numpy in, numpy out (the results tables): the same distances as the torch path
    x = np.random.default_rng(0).normal(size=(4, 3, problem.dim)) * 2
    expected = problem.distance_to_minimum(torch.from_numpy(x)).numpy()
    got = problem.distance_to_minimum(x)
    assert isinstance(got, np.ndarray) and got.shape == (4, 3)
    np.testing.assert_allclose(got, expected, rtol=1e-12, equal_nan=True)
    # the start is not already at the target
    start = problem.start
    assert float(problem.loss(start)) - (value or 0.0) > problem.target


def test_styblinski_tang_minimum_is_the_global_root():
    problem = get_problem("styblinski-tang(dim=1)")
    xs = torch.linspace(-5, 5, 200001, dtype=torch.float64)[:, None]
    assert float(problem.loss(xs).min()) >= problem.f_min - 1e-12
    assert problem.f_min == pytest.approx(-39.16616570377142, rel=1e-14)


@pytest.mark.parametrize("name", ANALYTIC)
def test_batching_over_leading_dims(name):
    problem = get_problem(name if name != "noisy-quadratic" else "noisy-quadratic(dim=3)")
    d = problem.dim
    x = torch.randn(2, 3, d, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    loss, grad = problem.loss(x), problem.grad(x)
    assert loss.shape == (2, 3) and grad.shape == (2, 3, d)
    assert loss.dtype == torch.float64 and grad.dtype == torch.float64
    flat = x.reshape(6, d)
    np.testing.assert_allclose(problem.loss(flat).reshape(2, 3).numpy(), loss.numpy(), rtol=1e-14)
    for i in range(2):
        for j in range(3):
            assert float(problem.loss(x[i, j])) == pytest.approx(float(loss[i, j]), rel=1e-14)
            np.testing.assert_allclose(problem.grad(x[i, j]).numpy(), grad[i, j].numpy(), rtol=1e-13, atol=1e-300)
    with pytest.raises(ValueError, match="dimension"):
        problem.loss(torch.zeros(4, d + 1, dtype=torch.float64))


@pytest.mark.parametrize("name", ANALYTIC)
def test_float64_by_default(name):
    problem = get_problem(name)
    points = problem.start_points([0, 1])
    assert points.dtype == torch.float64 and points.shape == (2, problem.dim)
    assert problem.loss(points).dtype == torch.float64
    assert problem.start_points([0], dtype=torch.float32).dtype == torch.float32


def test_start_dimension_is_checked():
    with pytest.raises(SpecError, match=r"3 coordinates.*dimension 2"):
        get_problem("rosenbrock(start=(1, 2, 3))")
    with pytest.raises(SpecError, match="dimension 3"):
        get_problem("rosenbrock(dim=3, start=(1, 2))")
    with pytest.raises(SpecError, match="start"):
        get_problem("valley(start=(1, 'a'))")
    with pytest.raises(SpecError, match="start"):
        get_problem("valley(start='middle')")
    problem = get_problem("rosenbrock(start=[0.5, -0.5])")
    assert problem.start.tolist() == [0.5, -0.5]
    assert problem.start_points([3, 4]).tolist() == [[0.5, -0.5], [0.5, -0.5]]


@pytest.mark.parametrize("name", ANALYTIC)
def test_random_start_is_seeded_and_inside_bounds(name):
    problem = get_problem(f"{name}(start='random')")
    points = problem.start_points(list(range(20)))
    lo = torch.tensor([b[0] for b in problem.bounds], dtype=torch.float64)
    hi = torch.tensor([b[1] for b in problem.bounds], dtype=torch.float64)
    assert bool(((points >= lo) & (points <= hi)).all())
    assert torch.equal(points, problem.start_points(list(range(20))))
    assert torch.equal(points[5], problem.start_points([5])[0])  # a seed's point does not depend on the group
    assert len({tuple(p.tolist()) for p in points}) == 20
    # spread over the box, not clustered: the sample covers most of each coordinate's range
    span = (points.max(0).values - points.min(0).values) / (hi - lo)
    assert bool((span > 0.5).all())


def test_random_start_reaches_the_engines():
    problem = get_problem("beale(start='random')")
    trace = run_loop(problem, get_optimizer("sgd(lr=1e-4)"), seed=9, steps=2)
    np.testing.assert_array_equal(trace.coords[0, 0], problem.start_points([9])[0].numpy())


def _observed_noise(problem_spec, steps, lr=1e-3):
    """Noise the optimizer saw, recovered from SGD's steps: ε_t = (x_t − x_{t+1})/lr − ∇f(x_t)."""
    problem = get_problem(problem_spec)
    trace = run_loop(problem, get_optimizer(f"sgd(lr={lr})"), seed=4, steps=steps)
    x = torch.from_numpy(trace.coords[:, 0, :])
    return (x[:-1] - x[1:]) / lr - problem.grad(x[:-1])


def test_gradient_noise_has_the_configured_std():
    eps = _observed_noise("valley(kappa=1, noise=0.3)", 2000)
    std = eps.std(0)
    assert bool(((std / 0.3 - 1).abs() < 0.08).all()), std
    assert bool((eps.mean(0).abs() < 5 * 0.3 / math.sqrt(2000)).all())
    corr = torch.corrcoef(eps.T)[0, 1]
    assert abs(float(corr)) < 0.1
    lag = torch.corrcoef(torch.stack([eps[:-1, 0], eps[1:, 0]]))[0, 1]
    assert abs(float(lag)) < 0.1  # fresh noise every step


def test_noisy_quadratic_variance_scales_as_one_over_batch_size():
    h = torch.tensor([1.0, 0.5, 1 / 3], dtype=torch.float64)
    for batch in (1, 16):
        var = _observed_noise(f"noisy-quadratic(dim=3, batch_size={batch})", 2000).var(0)
        ratio = var / (h / batch)
        assert bool(((ratio - 1).abs() < 0.1).all()), (batch, ratio)
    problem = get_problem("noisy-quadratic(dim=3, batch_size=4, noise=0.2)")
    np.testing.assert_allclose(problem.noise_std().numpy(), (h / 4 + 0.04).sqrt().numpy(), rtol=1e-14)
    assert get_problem("noisy-quadratic(dim=3)").batch_size == 1
    assert get_problem("noisy-quadratic(dim=3)", batch_size=8).batch_size == 8


def test_exact_problems_have_no_noise():
    problem = get_problem("rosenbrock")
    assert problem.noise_std() is None and problem.noise_stream([0]) is None and not problem.is_noisy
    a = run_loop(problem, get_optimizer("sgd(lr=1e-3)"), seed=0, steps=5)
    b = run_loop(problem, get_optimizer("sgd(lr=1e-3)"), seed=1, steps=5)
    np.testing.assert_array_equal(a.coords, b.coords)


@pytest.mark.parametrize("name", ["saddle", "monkey-saddle"])
@pytest.mark.parametrize("engine", ["loop", "batched"])
def test_saddles_escape_rather_than_diverge(name, engine):
    problem = get_problem(name)
    opt = get_optimizer("sgd(lr=0.1)")
    if engine == "loop":
        trace = run_loop(problem, opt, seed=0, steps=500)
    else:
        trace = run_batched(problem, [opt], [0], steps=500)
    assert trace.status == ["escaped"]
    assert 0 < trace.end_step[0] < 500
    lo, hi = problem.escape_box()
    end = torch.from_numpy(trace.end_x[0])
    assert bool(((end < lo) | (end > hi)).any())
    assert np.isfinite(trace.end_loss[0])
    # the recorded step before the end was still inside the widened box
    before = torch.from_numpy(trace.coords[trace.end_step[0] - 1, 0])
    assert bool(((before >= lo) & (before <= hi)).all())


@pytest.mark.parametrize("engine", ["loop", "batched"])
def test_divergence_ends_the_run(engine):
    problem = get_problem("rosenbrock")
    opt = get_optimizer("sgd(lr=10.0)")
    with np.errstate(all="raise"):
        if engine == "loop":
            trace = run_loop(problem, opt, seed=0, steps=100)
        else:
            trace = run_batched(problem, [opt, get_optimizer("sgd(lr=1e-4)")], [0, 0], steps=100)
    assert trace.status[0] == "diverged"
    assert 0 < trace.end_step[0] < 10
    assert not np.isfinite(trace.end_loss[0]) or trace.end_loss[0] > problem.blowup_level(float(trace.loss[0, 0]))
    if engine == "batched":
        assert trace.status[1] == "done" and trace.end_step[1] == 100


def test_get_problem_errors():
    with pytest.raises(SpecError, match=r"Unknown problem 'rosenbrok'.*Did you mean 'rosenbrock'"):
        get_problem("rosenbrok")
    with pytest.raises(SpecError, match=r"Unknown key 'kapa'.*Did you mean 'kappa'"):
        get_problem("valley(kapa=3)")
    with pytest.raises(SpecError, match=r"dim=2.5 has the wrong type"):
        get_problem("rastrigin(dim=2.5)")
    with pytest.raises(SpecError, match=r"kappa='big' has the wrong type"):
        get_problem("valley(kappa='big')")
    with pytest.raises(SpecError, match=r"kappa=0.5 is out of range"):
        get_problem("valley(kappa=0.5)")
    with pytest.raises(SpecError, match=r"noise=-0.1 is out of range"):
        get_problem("rosenbrock(noise=-0.1)")
    with pytest.raises(SpecError, match=r"dim=1 is out of range"):
        get_problem("rosenbrock(dim=1)")
    with pytest.raises(SpecError, match=r"'rosenbrock' has no batch size.*noisy-quadratic"):
        get_problem("rosenbrock(batch_size=4)")
    with pytest.raises(SpecError, match="has no batch size"):
        get_problem("valley", batch_size=4)
    with pytest.raises(SpecError, match="batch_size=0 is out of range"):
        get_problem("noisy-quadratic(batch_size=0)")


def test_problem_identity():
    problem = get_problem("valley(kappa=100)")
    assert problem.label == "valley(kappa=100)" and problem.kind == "analytic" and problem.dim == 2
    assert problem.config["kappa"] == 100.0 and isinstance(problem.config["kappa"], float)
    assert get_problem("valley(kappa=100, angle=0)").label == "valley(angle=0, kappa=100)"
