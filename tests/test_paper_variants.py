"""Where optimizers differ from their papers: stated for every entry, and the paper's versions checked.

- every registry entry states its deviations (a new entry cannot forget: registering one without fails);
- lamb-paper, sm3-paper and adafactor-paper equal float64 references written here from the papers' algorithms
  (numpy, one step at a time), on a matrix, a vector and a scalar parameter, and through the loop engine;
- each library deviation the registry states is observable: the library entry differs from the paper's by it.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from optbench.engines.loop import run_loop
from optbench.optimizers import OPTIMIZERS, get_optimizer, list_optimizers, register_optimizer
from optbench.problems import get_problem

PAPER = ["lamb-paper", "sm3-paper", "adafactor-paper"]


# ---- every entry states its deviations -----------------------------------------------------------

@pytest.mark.parametrize("name", [e.name for e in list_optimizers()])
def test_every_entry_states_its_deviations(name):
    text = OPTIMIZERS[name].deviations
    assert text.strip() and len(text) > 10, name  # a sentence: "none known: ..." or what differs


def test_registering_an_entry_without_deviations_fails():
    entry = dataclasses.replace(OPTIMIZERS["adam"], name="adam-copy", deviations="  ")
    with pytest.raises(ValueError, match="deviations"):
        register_optimizer(entry)
    assert "adam-copy" not in OPTIMIZERS


def test_library_entries_name_their_paper_variant():
    for library, paper in [("lamb", "lamb-paper"), ("sm3", "sm3-paper"), ("adafactor", "adafactor-paper")]:
        assert paper in OPTIMIZERS[library].deviations
        assert OPTIMIZERS[paper].source == "optbench" and OPTIMIZERS[paper].reference


# ---- float64 references written from the papers ----------------------------------------------------

def rosenbrock_grad(x):
    a, b = x
    return np.array([-400.0 * a * (b - a * a) - 2.0 * (1.0 - a), 200.0 * (b - a * a)])


def rms(x):
    return np.sqrt(np.mean(x * x))


def lamb_reference(x, grad, steps, lr, beta1, beta2, eps, weight_decay):
    """You et al. 2020, Algorithm 2 with φ(z) = z, on one tensor."""
    m, v, xs = np.zeros_like(x), np.zeros_like(x), [x.copy()]
    for t in range(1, steps + 1):
        g = grad(x)
        m = beta1 * m + (1 - beta1) * g
        v = beta2 * v + (1 - beta2) * g * g
        r = (m / (1 - beta1**t)) / (np.sqrt(v / (1 - beta2**t)) + eps)
        u = r + weight_decay * x
        x = x - lr * np.linalg.norm(x) / np.linalg.norm(u) * u
        xs.append(x.copy())
    return np.array(xs)


def sm3_covers(shape):
    """The cover of SM3's experiments: every slice along each dimension, as sets of flat indices."""
    index = np.arange(int(np.prod(shape))).reshape(shape)
    if len(shape) == 0:
        return [[0]]
    return [list(np.take(index, i, axis=d).ravel()) for d in range(len(shape)) for i in range(shape[d])]


def sm3_reference(x, grad, steps, lr, momentum, beta, eps):
    """Anil et al. 2019, SM3-II over explicit cover sets (β > 0: the sum replaced by an average)."""
    covers = sm3_covers(x.shape)
    mu = np.zeros(len(covers))
    buffer, xs = np.zeros(x.size), [x.copy()]
    for _ in range(steps):
        g = grad(x).ravel()
        smallest = np.array([min(mu[r] for r, cover in enumerate(covers) if j in cover) for j in range(g.size)])
        nu = smallest + g * g if beta == 0 else beta * smallest + (1 - beta) * g * g
        mu = np.array([max(nu[j] for j in cover) for cover in covers])
        u = g / np.sqrt(nu + eps)
        buffer = momentum * buffer + (1 - momentum) * u if momentum > 0 else u
        x = x - lr * buffer.reshape(x.shape)
        xs.append(x.copy())
    return np.array(xs)


def adafactor_reference(x, grad, steps, lr=None, beta1=0.0, c=-0.8, d=1.0, eps1=1e-30, eps2=1e-3):
    """Shazeer & Stern 2018, Algorithm 4 (matrix) / 5 (vector), relative step, clipping, β̂₂ₜ = 1 − t^c."""
    if x.ndim == 2:
        n, m_cols = x.shape
        R, C = np.zeros(n), np.zeros(m_cols)
    else:
        V = np.zeros_like(x)
    first, xs = np.zeros_like(x), [x.copy()]
    for t in range(1, steps + 1):
        g = grad(x)
        rho = lr if lr is not None else min(1e-2, 1 / np.sqrt(t))
        alpha = max(eps2, rms(x)) * rho
        b2 = 1 - t**c
        if x.ndim == 2:
            R = b2 * R + (1 - b2) * (g * g + eps1) @ np.ones(m_cols)
            C = b2 * C + (1 - b2) * np.ones(n) @ (g * g + eps1)
            v_hat = np.outer(R, C) / (np.ones(n) @ R)
        else:
            V = b2 * V + (1 - b2) * (g * g + eps1)
            v_hat = V
        u = g / np.sqrt(v_hat)
        u_hat = u / max(1.0, rms(u) / d)
        step = alpha * u_hat
        if beta1 > 0:
            first = beta1 * first + (1 - beta1) * step
            step = first
        x = x - step
        xs.append(x.copy())
    return np.array(xs)


def reference_for(spec, x, grad, steps):
    cfg = get_optimizer(spec)
    hp = cfg.hyperparams
    if cfg.name == "lamb-paper":
        return lamb_reference(x, grad, steps, hp["lr"], *hp["betas"], hp["eps"], hp["weight_decay"])
    if cfg.name == "sm3-paper":
        return sm3_reference(x, grad, steps, hp["lr"], hp["momentum"], hp["beta"], hp["eps"])
    return adafactor_reference(x, grad, steps, hp["lr"], hp["beta1"], hp["decay_rate"], hp["clip_threshold"],
                               hp["eps1"], hp["eps2"])


# A separable loss over three tensors of different ranks: f = Σ ½ a (x − c)² + 0.3 Σ sin(3x), so each tensor's
# gradient depends on itself only and changes sign and size along the run.
SHAPES = [(3, 4), (5,), ()]


def _setup(shape, k):
    rng = np.random.default_rng(10 + k)
    start = rng.normal(size=shape) * 2.0
    scale = rng.uniform(0.2, 3.0, size=shape)
    centre = rng.normal(size=shape)
    return start, (lambda x: scale * (x - centre) + 0.9 * np.cos(3 * x))


def drive(spec, steps):
    """Run the registry's class on the three tensors together; the trajectory of each."""
    cfg = get_optimizer(spec)
    setups = [_setup(shape, k) for k, shape in enumerate(SHAPES)]
    params = [torch.nn.Parameter(torch.tensor(start, dtype=torch.float64)) for start, _ in setups]
    opt = cfg.entry.build(params, cfg.hyperparams, dtype=torch.float64)
    traj = [[p.detach().numpy().copy()] for p in params]
    for _ in range(steps):
        for p, (_, grad) in zip(params, setups):
            p.grad = torch.tensor(grad(p.detach().numpy()), dtype=torch.float64)
        opt.step()
        for t, p in zip(traj, params):
            t.append(p.detach().numpy().copy())
    return [np.array(t) for t in traj], setups


PAPER_CASES = ["lamb-paper(lr=0.05)", "lamb-paper(lr=0.02, weight_decay=0.1, betas=(0.8, 0.99), eps=1e-3)",
               "sm3-paper(lr=0.3)", "sm3-paper(lr=0.3, beta=0.9)", "sm3-paper(lr=0.2, beta=0.5, momentum=0.9)",
               "adafactor-paper", "adafactor-paper(lr=0.05, clip_threshold=0.5)",
               "adafactor-paper(beta1=0.9, decay_rate=-0.5, eps2=0.1)"]


def test_paper_cases_cover_every_paper_entry():
    assert {get_optimizer(s).name for s in PAPER_CASES} == set(PAPER)


@pytest.mark.parametrize("spec", PAPER_CASES)
def test_paper_entry_follows_its_paper(spec):
    steps = 40
    trajectories, setups = drive(spec, steps)
    for traj, (start, grad), shape in zip(trajectories, setups, SHAPES):
        expected = reference_for(spec, start, grad, steps)
        np.testing.assert_allclose(traj, expected, rtol=1e-12, atol=1e-14, err_msg=f"{spec} {shape}")
        assert not np.allclose(traj[-1], traj[0]), (spec, shape)


@pytest.mark.parametrize("spec", ["lamb-paper(lr=0.01)", "sm3-paper(lr=0.05, beta=0.9)", "adafactor-paper"])
def test_paper_entry_through_the_loop_engine(spec):
    """The registry wiring and the engine: Rosenbrock from (−1.2, 1), the reference on the same gradient."""
    steps = 30
    trace = run_loop(get_problem("rosenbrock"), get_optimizer(spec), seed=0, steps=steps)
    expected = reference_for(spec, np.array([-1.2, 1.0]), rosenbrock_grad, steps)
    np.testing.assert_allclose(trace.coords[:, 0, :], expected, rtol=1e-12, atol=1e-14)


def test_references_are_the_papers_on_known_cases():
    """Guards the references: SM3 on a vector is AdaGrad; Adafactor's factored V̂ of a rank-1 G² is exact."""
    x = np.array([1.0, -2.0, 0.5])
    grad = lambda x: 2 * x  # noqa: E731
    sm3 = sm3_reference(x, grad, 5, lr=0.1, momentum=0.0, beta=0.0, eps=0.0)
    s, y = np.zeros(3), x.copy()
    for t in range(5):
        s += grad(y) ** 2
        y = y - 0.1 * grad(y) / np.sqrt(s)
        np.testing.assert_allclose(sm3[t + 1], y, rtol=1e-14)
    G = np.outer([1.0, 2.0], [3.0, 0.5, 1.0])  # G² = outer(a², b²) is rank 1: R C / 1ᵀR = G² (ε₁ = 0)
    R, C = (G * G).sum(1), (G * G).sum(0)
    np.testing.assert_allclose(np.outer(R, C) / R.sum(), G * G, rtol=1e-14)


# ---- the library deviations the registry states are real ----------------------------------------------

def _first_step(spec, x0=(-1.2, 1.0)):
    cfg = get_optimizer(spec)
    x = torch.nn.Parameter(torch.tensor(x0, dtype=torch.float64))
    opt = cfg.entry.build([x], cfg.hyperparams, dtype=torch.float64)
    x.grad = torch.tensor([3.0, -0.5], dtype=torch.float64)
    opt.step()
    return (x.detach() - torch.tensor(x0, dtype=torch.float64)).numpy()


def test_library_lamb_steps_one_over_one_minus_beta1_longer():
    paper, library = _first_step("lamb-paper(lr=0.01)"), _first_step("lamb(lr=0.01)")
    assert np.linalg.norm(paper) == pytest.approx(0.01 * np.hypot(-1.2, 1.0), rel=1e-12)  # η‖x‖
    assert np.linalg.norm(library) / np.linalg.norm(paper) == pytest.approx(1 / (1 - 0.9), rel=1e-5)
    # same direction up to ε = 1e-6 meeting the uncorrected √v (≈ 0.016 here) instead of √v̂
    np.testing.assert_allclose(library / np.linalg.norm(library), paper / np.linalg.norm(paper), rtol=1e-4)


def test_library_lamb_decays_outside_the_trust_ratio():
    # with λ the paper's step still has length η‖x‖ (λx is inside the normalisation); the library's does not
    paper = _first_step("lamb-paper(lr=0.01, weight_decay=0.5)")
    library = _first_step("lamb(lr=0.01, weight_decay=0.5)")
    assert np.linalg.norm(paper) == pytest.approx(0.01 * np.hypot(-1.2, 1.0), rel=1e-12)
    direction = lambda v: v / np.linalg.norm(v)  # noqa: E731
    assert np.abs(direction(library) - direction(paper)).max() > 1e-3


def test_library_lamb_trajectory_differs_from_the_paper():
    problem = get_problem("rosenbrock")
    paper = run_loop(problem, get_optimizer("lamb-paper(lr=0.01)"), seed=0, steps=100).coords[:, 0]
    library = run_loop(problem, get_optimizer("lamb(lr=0.01)"), seed=0, steps=100).coords[:, 0]
    moved = np.linalg.norm(paper[-1] - paper[0])
    assert np.linalg.norm(library[-1] - paper[-1]) / moved > 0.1


def test_sm3_paper_with_sums_equals_the_library():
    for spec in ("sm3(lr=0.3)", "sm3(lr=0.2, momentum=0.9)"):
        paper, _ = drive(spec.replace("sm3(", "sm3-paper("), 30)
        library, _ = drive(spec, 30)
        for a, b in zip(paper, library):
            np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-14)


def test_library_sm3_keeps_a_running_max_not_an_average():
    # one coordinate with a large then a small gradient: the paper's average decays, the library's maximum stays
    def accumulator(spec):
        cfg = get_optimizer(spec)
        x = torch.nn.Parameter(torch.zeros(1, dtype=torch.float64))
        opt = cfg.entry.build([x], cfg.hyperparams)
        for g in [10.0] + [0.1] * 20:
            x.grad = torch.tensor([g], dtype=torch.float64)
            opt.step()
        state = opt.state[x]
        return float(state["accumulators"][0] if "accumulators" in state else state["accumulator_0"])

    paper, library = accumulator("sm3-paper(beta=0.5)"), accumulator("sm3(beta=0.5)")
    assert paper == pytest.approx(50 * 0.5**20 + 0.01 * (1 - 0.5**20), rel=1e-9)  # ν ← ½ν + ½g²
    assert library == pytest.approx(50.0)  # (1 − β)·10², never decreased


@pytest.mark.parametrize("paper_spec, library_spec", [
    ("adafactor-paper", "adafactor(betas=(None, 0.999))"),
    ("adafactor-paper(lr=0.05)", "adafactor(lr=0.05, relative_step=False, betas=(None, 0.999))")])
def test_adafactor_paper_equals_the_library_without_first_moment_before_the_cap(paper_spec, library_spec):
    paper, _ = drive(paper_spec, 30)
    library, _ = drive(library_spec, 30)
    for a, b in zip(paper, library):
        np.testing.assert_allclose(a, b, rtol=1e-10, atol=1e-14)


def test_library_adafactor_beta2_caps_the_decay():
    # with β₂ = 0.9 the cap binds from t = 0.1^(1/−0.8) ≈ 17.8: equal before, different after
    paper, _ = drive("adafactor-paper(lr=0.05)", 40)
    library, _ = drive("adafactor(lr=0.05, relative_step=False, betas=(None, 0.9))", 40)
    np.testing.assert_allclose(paper[0][:18], library[0][:18], rtol=1e-10)
    assert np.abs(paper[0][40] - library[0][40]).max() > 1e-6


def test_library_adafactor_defaults_are_not_the_papers():
    problem = get_problem("rosenbrock")
    paper = run_loop(problem, get_optimizer("adafactor-paper"), seed=0, steps=100).coords[:, 0]
    library = run_loop(problem, get_optimizer("adafactor"), seed=0, steps=100).coords[:, 0]
    assert np.linalg.norm(library[-1] - paper[-1]) / np.linalg.norm(paper[-1] - paper[0]) > 0.1
