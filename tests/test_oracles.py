"""The stochastic sample model: every oracle a method calls on a noisy problem sees the step's one sample.

- contract over every registered optimizer (loop engine, and batched where it runs it): the trajectory
  changes with the NQM's batch size and with Rosenbrock's noise;
- on noise-free problems the closure-calling methods are bitwise what they were (loss_at = f);
- SPSA's central difference, the forward gradient's JVP and SGD's gradient see the same ξ_t of the run's
  noise stream, checked against float64 references written here from the formulas;
- every oracle call inside one step shares ξ_t, and the stream advances once per step;
- the SPSA and forward-gradient estimates stay unbiased for ∇f, with the variance the noise adds;
- on networks, loss values come from the step's own mini-batch.
"""

from __future__ import annotations

import hashlib
import sys
import textwrap

import numpy as np
import pytest
import torch

from optbench.engines.batched import run_batched, supports_batched
from optbench.engines.loop import AnalyticClosure, run_loop
from optbench.optimizers import get_optimizer, list_optimizers
from optbench.problems import get_problem
from optbench.randomness import derive_seed
from optbench.sweep.spec import Run

NAMES = [e.name for e in list_optimizers() if not e.unsupported]  # refused as a whole: tests/test_catalogue.py
NOISE_BLOCK = 256  # the noise stream fills blocks of this many steps; the references below stay inside one


def _trajectory(trace) -> np.ndarray:
    """Everything a trace says about where the run went: recorded losses and the final point."""
    return np.concatenate([trace.loss.ravel(), trace.end_x.ravel()])


# pytorch_optimizer classes that by design take no step for their first few steps: run them longer
FIRST_STEP_LATER = {"adashift": 14,  # waits for keep_num = 10 queued gradients
                    "po.radam": 8, "schedulefreeradam": 8}  # no step while the variance estimate is unreliable
# ... and ones that never step where a pair of problems below starts, so that no noise can show there
STILL_WHERE_THEY_START = {
    "alig": {"rosenbrock(start=(1.0, 1.0))"},  # Polyak step f̃_t(x_t)/‖g‖²: f̃_t(x_t) = f(x_t) = 0 at the minimum
    "sara": {"noisy-quadratic(dim=10, batch_size=1)", "rosenbrock(start=(1.0, 1.0))"},  # steps weights < 1e-3 only
}


def _engines(name):
    opt = get_optimizer(name)
    steps = FIRST_STEP_LATER.get(name, 4)
    yield "loop", lambda problem, seed: run_loop(problem, opt, seed=seed, steps=steps, measure_cost=False)
    if supports_batched(opt):
        yield "batched", lambda problem, seed: run_batched(problem, [opt], [seed], steps=steps, measure_cost=False)


# ---- (a) the contract: every optimizer's trajectory depends on the noise --------------------------

@pytest.mark.parametrize("name", NAMES)
def test_every_optimizer_sees_the_batch_size_and_the_noise(name):
    pairs = [("noisy-quadratic(dim=10, batch_size=1)", "noisy-quadratic(dim=10, batch_size=1024)"),
             # at the minimum, where ∇f = 0, so that sign-based updates (Lion) see the noise too
             ("rosenbrock(start=(1.0, 1.0))", "rosenbrock(start=(1.0, 1.0), noise=5)")]
    for engine, run in _engines(name):
        for spec_a, spec_b in pairs:
            a, b = run(get_problem(spec_a), 0), run(get_problem(spec_b), 0)
            if spec_a in STILL_WHERE_THEY_START.get(name, ()):
                assert (a.loss == a.loss[0]).all() and (b.loss == b.loss[0]).all(), f"{name} moved on {spec_a}"
                continue
            assert not np.array_equal(_trajectory(a), _trajectory(b), equal_nan=True), (
                f"{name} ({engine}): {spec_a} and {spec_b} gave the same trajectory")


def test_recorded_loss_stays_exact_under_sampled_oracles():
    problem = get_problem("noisy-quadratic(dim=3, batch_size=2)")
    for name in ("spsa", "forward-grad", "lbfgs", "newton"):
        trace = run_loop(problem, get_optimizer(f"{name}(lr=0.05)"), seed=1, steps=5, measure_cost=False)
        exact = problem.loss(torch.from_numpy(trace.coords[:, 0])).numpy()
        np.testing.assert_array_equal(trace.loss[:, 0], exact)


# ---- (b) noise-free problems: the closure-calling methods are unchanged, bitwise -----------------

class _ExactClosure:
    """The closure as it was before the sample model: f and ∇f, and loss_at = f."""

    def __init__(self, problem, param):
        self.problem, self.param = problem, param

    def __call__(self):
        self.param.grad = None
        with torch.enable_grad():
            loss = self.problem.loss(self.param)
            loss.backward()
        return loss.detach()

    def loss_at(self, tensors):
        return self.problem.loss(tensors[0])


@pytest.mark.parametrize("spec", ["spsa(lr=1e-3, c=0.05, alpha=0.602, gamma=0.101)", "forward-grad(lr=1e-4)",
                                  "newton(lr=0.5)", "lbfgs(lr=0.1)"])
@pytest.mark.parametrize("problem_spec", ["rosenbrock", "valley(kappa=10, angle=30)"])
def test_noise_free_trajectories_are_unchanged(spec, problem_spec):
    problem, opt, seed, steps = get_problem(problem_spec), get_optimizer(spec), 4, 8
    trace = run_loop(problem, opt, seed=seed, steps=steps, measure_cost=False)
    param = torch.nn.Parameter(problem.start_points([seed])[0].clone())
    reference = opt.entry.build([param], opt.hyperparams, dtype=torch.float64, seed=seed)
    closure = _ExactClosure(problem, param)
    path = [param.detach().clone()]
    for _ in range(steps):
        reference.step(closure)
        path.append(param.detach().clone())
    np.testing.assert_array_equal(trace.coords[:, 0], torch.stack(path).numpy())


# ---- (c) one sample per step, the same for every oracle and every method -------------------------

DIM, BATCH, POWER = 3, 2, 1.0
NQM = f"noisy-quadratic(dim={DIM}, batch_size={BATCH}, power={POWER})"
H = torch.tensor([(i + 1) ** -POWER for i in range(DIM)], dtype=torch.float64)
SIGMA = (H / BATCH).sqrt()  # the NQM's gradient noise: ε ~ N(0, H / B)


def f_nqm(x):
    return 0.5 * (H * x * x).sum()


def _noise_samples(seed, steps):
    """ξ_t = σ ⊙ z_t, z_t the run's standard-normal stream (optbench.problems.rng.NormalStream's numpy PCG64
    generator, started from sha256("{seed}:noise"), written out here)."""
    digest = hashlib.sha256(f"{seed}:noise".encode()).digest()
    bits = np.random.PCG64(0)
    state = bits.state
    state["state"] = {"state": int.from_bytes(digest[:16], "little"), "inc": int.from_bytes(digest[16:], "little")}
    bits.state = state
    z = torch.from_numpy(np.random.Generator(bits).standard_normal((NOISE_BLOCK, DIM)))
    assert steps <= NOISE_BLOCK
    return [SIGMA * z[t] for t in range(steps)]


def _directions(seed):
    return torch.Generator().manual_seed(derive_seed(seed, "directions"))


def test_spsa_central_difference_sees_the_step_sample():
    lr, c, seed, steps = 0.05, 0.1, 3, 12
    trace = run_loop(get_problem(NQM), get_optimizer(f"spsa(lr={lr}, c={c})"), seed=seed, steps=steps,
                     measure_cost=False)
    generator, x = _directions(seed), torch.ones(DIM, dtype=torch.float64)
    for t, xi in enumerate(_noise_samples(seed, steps)):
        np.testing.assert_allclose(trace.coords[t, 0], x.numpy(), rtol=1e-12, atol=1e-15)
        delta = (torch.randint(0, 2, (DIM,), generator=generator) * 2 - 1).to(torch.float64)

        def f_sampled(y, x_t=x, xi=xi):  # f̃_t(y) = f(y) + ⟨ξ_t, y − x_t⟩
            return f_nqm(y) + torch.dot(xi, y - x_t)

        slope = (f_sampled(x + c * delta) - f_sampled(x - c * delta)) / (2 * c)
        x = x - lr * slope * delta
    np.testing.assert_allclose(trace.coords[steps, 0], x.numpy(), rtol=1e-12, atol=1e-15)


def test_forward_gradient_directional_derivative_sees_the_step_sample():
    lr, seed, steps = 0.05, 5, 12
    trace = run_loop(get_problem(NQM), get_optimizer(f"forward-grad(lr={lr})"), seed=seed, steps=steps,
                     measure_cost=False)
    generator, x = _directions(seed), torch.ones(DIM, dtype=torch.float64)
    for t, xi in enumerate(_noise_samples(seed, steps)):
        np.testing.assert_allclose(trace.coords[t, 0], x.numpy(), rtol=1e-12, atol=1e-15)
        v = torch.randn(DIM, generator=generator, dtype=torch.float64)
        x = x - lr * torch.dot(H * x + xi, v) * v  # (∇f(x_t) + ξ_t)·v along v
    np.testing.assert_allclose(trace.coords[steps, 0], x.numpy(), rtol=1e-12, atol=1e-15)


@pytest.mark.parametrize("engine", ["loop", "batched"])
def test_gradient_methods_see_the_same_samples(engine):
    """SGD's noisy gradient at step t is ∇f(x_t) + ξ_t with the same ξ_t the tests above give SPSA."""
    lr, seed, steps = 0.1, 3, 12
    opt = get_optimizer(f"sgd(lr={lr})")
    problem = get_problem(NQM)
    trace = (run_loop(problem, opt, seed=seed, steps=steps, measure_cost=False) if engine == "loop"
             else run_batched(problem, [opt], [seed], steps=steps, measure_cost=False))
    x = torch.ones(DIM, dtype=torch.float64)
    for t, xi in enumerate(_noise_samples(seed, steps)):
        np.testing.assert_allclose(trace.coords[t, 0], x.numpy(), rtol=1e-12, atol=1e-15)
        x = x - lr * (H * x + xi)
    np.testing.assert_allclose(trace.coords[steps, 0], x.numpy(), rtol=1e-12, atol=1e-15)


def test_lbfgs_line_search_sees_one_sampled_function_per_step():
    """torch's L-BFGS evaluates the closure several times per step: all on f̃_t (written here with autograd)."""
    seed, steps = 4, 6
    spec = "lbfgs(lr=0.5, max_iter=4, line_search_fn='strong_wolfe')"
    trace = run_loop(get_problem(NQM), get_optimizer(spec), seed=seed, steps=steps, measure_cost=False)
    param = torch.nn.Parameter(torch.ones(DIM, dtype=torch.float64))
    reference = torch.optim.LBFGS([param], lr=0.5, max_iter=4, line_search_fn="strong_wolfe")
    for t, xi in enumerate(_noise_samples(seed, steps)):
        np.testing.assert_allclose(trace.coords[t, 0], param.detach().numpy(), rtol=1e-9, atol=1e-12)
        x_t = param.detach().clone()

        def sampled(x_t=x_t, xi=xi):
            reference.zero_grad()
            loss = f_nqm(param) + torch.dot(xi, param - x_t)
            loss.backward()
            return loss

        reference.step(sampled)
    np.testing.assert_allclose(trace.coords[steps, 0], param.detach().numpy(), rtol=1e-9, atol=1e-12)


PROBE = '''
import torch

SEEN = []


class ProbeOracles(torch.optim.Optimizer):
    """Calls every oracle twice per step, at x_t and at x_t + 0.1, then takes an SGD step from x_t."""

    def __init__(self, params, lr=0.05):
        super().__init__(params, dict(lr=lr))

    @torch.no_grad()
    def step(self, closure):
        (p,) = self.param_groups[0]["params"]
        x_t = p.detach().clone()
        with torch.enable_grad():
            loss_0 = closure()
        grad_0 = p.grad.detach().clone()
        p.add_(0.1)
        with torch.enable_grad():
            loss_1 = closure()
        grad_1 = p.grad.detach().clone()
        p.copy_(x_t)
        at_1 = closure.loss_at([x_t + 0.1])
        v = torch.linspace(-1.0, 1.0, x_t.numel(), dtype=x_t.dtype)
        _, slope = torch.func.jvp(lambda y: closure.loss_at([y]), (x_t,), (v,))
        SEEN.append(dict(x_t=x_t, loss_0=loss_0, grad_0=grad_0, loss_1=loss_1, grad_1=grad_1, at_1=at_1,
                         v=v, slope=slope))
        p.add_(grad_0, alpha=-self.param_groups[0]["lr"])
        return loss_0
'''


def test_every_oracle_call_of_a_step_shares_its_sample(tmp_path):
    """A user class calling closure() twice, loss_at and a JVP in one step: all see the same ξ_t, the one
    the stream gives step t (so SPSA, L-BFGS and SGD advance it alike)."""
    path = tmp_path / "probe_oracles.py"
    path.write_text(textwrap.dedent(PROBE))
    opt = get_optimizer(f"{path}:ProbeOracles(lr=0.05)")
    assert opt.entry.needs_closure
    module = sys.modules[opt.entry.resolve_class().__module__]
    module.SEEN.clear()
    problem, seed, steps = get_problem(NQM), 2, 6
    run_loop(problem, opt, seed=seed, steps=steps, measure_cost=False)
    samples = _noise_samples(seed, steps)
    assert len(module.SEEN) == steps
    for t, seen in enumerate(module.SEEN):
        x_t, xi, shift = seen["x_t"], samples[t], torch.full((DIM,), 0.1, dtype=torch.float64)
        np.testing.assert_allclose(seen["grad_0"], H * x_t + xi, rtol=1e-12, atol=1e-15)
        np.testing.assert_allclose(seen["grad_1"], H * (x_t + shift) + xi, rtol=1e-12, atol=1e-15)
        # f̃_t(x_t) = f(x_t) exactly: the sample adds ⟨ξ_t, 0⟩ (f as the problem computes it: H·x² and (H·x)·x
        # differ in the last bit)
        assert float(seen["loss_0"]) == float(problem.loss(x_t))
        for loss in (seen["loss_1"], seen["at_1"]):
            np.testing.assert_allclose(float(loss), float(f_nqm(x_t + shift) + torch.dot(xi, shift)), rtol=1e-12)
        np.testing.assert_allclose(float(seen["slope"]), float(torch.dot(H * x_t + xi, seen["v"])), rtol=1e-12)


def test_the_stream_advances_once_per_step_whatever_the_closure_calls():
    problem = get_problem(NQM)
    param = torch.nn.Parameter(torch.ones(DIM, dtype=torch.float64))
    closure = AnalyticClosure(problem, param, problem.noise_std(), problem.noise_stream([7]))
    samples = _noise_samples(7, 3)
    for t in range(3):
        closure.begin_step()
        for _ in range(3):
            closure()
            closure.loss_at([param.detach() * 2])
        np.testing.assert_array_equal(closure.sample, samples[t])
    fresh = AnalyticClosure(problem, param, problem.noise_std(), problem.noise_stream([7]))
    closure.draw_sample()
    fresh.draw_sample()
    with pytest.raises(RuntimeError, match="begin_step"):
        fresh.loss_at([param.detach()])


# ---- (d) the estimates stay unbiased, and carry the noise's variance ------------------------------

def _estimates(name, problem, x0, draws, seed=11):
    """(x0 − x1) / lr of ``draws`` single steps from x0, each with a fresh sample ξ and a fresh direction."""
    cfg = get_optimizer(f"{name}(lr=1.0)")
    param = torch.nn.Parameter(x0.clone())
    opt = cfg.entry.build([param], cfg.hyperparams, seed=seed)
    closure = AnalyticClosure(problem, param, problem.noise_std(), problem.noise_stream([seed]))
    out = torch.empty(draws, x0.numel(), dtype=torch.float64)
    for i in range(draws):
        with torch.no_grad():
            param.copy_(x0)
        closure.begin_step()
        opt.step(closure)
        out[i] = x0 - param.detach()
    return out


@pytest.mark.parametrize("name", ["spsa", "forward-grad"])
def test_zero_order_and_forward_estimates_are_unbiased_with_the_noise_variance(name):
    problem = get_problem("noisy-quadratic(dim=3, batch_size=1)")
    x0 = torch.tensor([0.4, -0.3, 0.2], dtype=torch.float64)
    g, var_xi = H * x0, H  # batch size 1: Var ξ_i = h_i, several times the noise-free variance
    draws = 600  # a forward-mode JVP costs milliseconds
    est = _estimates(name, problem, x0, draws)
    if name == "spsa":  # quadratic: the central difference is exact; ĝ_i = ((g + ξ)·Δ) Δ_i
        variance = var_xi + ((g**2 + var_xi).sum() - (g**2 + var_xi))
        noise_free = (g**2).sum() - g**2
    else:  # ĝ_i = ((g + ξ)·v) v_i, v ~ N(0, I)
        variance = (g**2).sum() + var_xi.sum() + g**2 + 2 * var_xi
        noise_free = (g**2).sum() + g**2
    mean = est.mean(0)
    assert ((mean - g).abs() < 5 * (variance / draws).sqrt()).all(), (mean, g)
    centred = est - mean
    sample_var = (centred**2).mean(0)
    assert (sample_var > 3 * noise_free).all(), (sample_var, noise_free)  # the noise is really there (≥ 7×)
    if name == "spsa":  # Rademacher Δ keeps the tails light: the variance itself matches within 5 std errors
        var_stderr = (((centred**4).mean(0) - sample_var**2) / draws).sqrt()
        assert ((sample_var - variance).abs() < 5 * var_stderr).all(), (sample_var, variance)


# ---- identity: runs whose oracles changed are not resumed from old results ------------------------

def test_run_ids_change_only_where_the_sampled_oracles_apply():
    def run(problem, opt):
        return Run(get_problem(problem), get_optimizer(opt), seed=0, steps=10, record_every=1)

    for problem in ("rosenbrock", "valley"):
        for opt in ("spsa", "lbfgs", "adam"):
            assert not run(problem, opt).sees_sampled_oracles
    for problem in ("rosenbrock(noise=1)", "noisy-quadratic"):
        assert run(problem, "spsa").sees_sampled_oracles and run(problem, "forward-grad").sees_sampled_oracles
        assert not run(problem, "adam").sees_sampled_oracles and "oracles" not in run(problem, "adam").identity
        assert run(problem, "spsa").identity["oracles"] == "one-sample-per-step"


# ---- networks: the sample is the step's mini-batch, for every oracle -------------------------------

NET_PROBE = '''
import torch

SEEN = []


class LossAtProbe(torch.optim.Optimizer):
    """Records loss_at(x_t) and closure() at every step, then an SGD step with the closure's gradient."""

    def __init__(self, params, lr=0.05):
        super().__init__(params, dict(lr=lr))

    @torch.no_grad()
    def step(self, closure):
        params = list(self.param_groups[0]["params"])
        at = closure.loss_at([p.detach() for p in params])
        with torch.enable_grad():
            loss = closure()
        SEEN.append((float(at), float(loss)))
        for p in params:
            p.add_(p.grad, alpha=-self.param_groups[0]["lr"])
        return loss
'''


def test_network_loss_values_come_from_the_steps_mini_batch(tmp_path, monkeypatch):
    from optbench.data import store
    from optbench.data.synthetic import write_dataset
    from optbench.engines.network import run_network

    write_dataset("mnist", tmp_path / "data" / "mnist", n_train=200, n_test=50)
    monkeypatch.setenv(store.DATA_ENV, str(tmp_path / "data"))
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        path = tmp_path / "loss_at_probe.py"
        path.write_text(textwrap.dedent(NET_PROBE))
        opt = get_optimizer(f"{path}:LossAtProbe(lr=0.05)")
        module = sys.modules[opt.entry.resolve_class().__module__]
        module.SEEN.clear()
        spec = "mnist-mlp(width=8, depth=1, train_size=200, test_size=50, batch_size={})"
        trace = run_network(get_problem(spec.format(20)), opt, seed=0, steps=6)
        # the recorded loss at step t is the mini-batch loss at x_t: loss_at and closure() of step t equal it
        for t, (at, loss) in enumerate(module.SEEN):
            np.testing.assert_allclose([at, loss], trace.loss[t, 0], rtol=1e-6)
        assert len({round(at, 6) for at, _ in module.SEEN}) == len(module.SEEN)  # a new batch every step
        spsa = get_optimizer("spsa(lr=0.01, c=0.01)")
        small, full = (run_network(get_problem(spec.format(b)), spsa, seed=0, steps=4) for b in (20, 200))
        assert not np.array_equal(small.loss, full.loss)
    finally:
        torch.set_num_threads(threads)
