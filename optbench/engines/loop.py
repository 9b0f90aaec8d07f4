"""The loop engine: one real optimizer object per run. It runs every optimizer, user classes included,
and is the reference the batched engine is tested against."""

from __future__ import annotations

import warnings
from collections.abc import Callable
from typing import TYPE_CHECKING

import torch

from optbench.cost import StepTimer, state_bytes_per_param
from optbench.engines.recipe import PLAIN, Recipe, StepRecipe
from optbench.engines.recorder import GroupTrace, Recorder, StepTicker
from optbench.engines.step_rng import StepRandomness, isolated

if TYPE_CHECKING:
    from optbench.problems.base import AnalyticProtocol

PROGRESS_EVERY = 50  # steps between progress callbacks


class AnalyticClosure:
    """The closure handed to ``optimizer.step``, exposing the oracles of the step's sampled function f̃_t
    (optbench.problems.analytic: the stochastic sample model).

    The engine calls :meth:`begin_step` once before each update: it draws the step's one noise sample ξ_t
    from the run's stream (advancing it once per step whatever the method calls) and fixes x_t. Then every
    call in that step sees the same ξ_t: ``closure()`` zeroes grads, evaluates f at the parameter, backward,
    adds ξ_t to ``.grad`` (then clips) and returns f̃_t(x) (= f(x_t) at the iterate itself);
    ``loss_at(tensors)`` evaluates f̃_t at other values functionally and differentiably (Newton's Hessian of
    it is the exact ∇²f; SPSA's loss differences and the forward gradient's JVP carry ξ_t).
    """

    def __init__(self, problem, param: torch.Tensor, noise_std, noise_stream):
        self.problem, self.param = problem, param
        self.noise_std, self.noise_stream = noise_std, noise_stream
        self.calls = 0
        # StepRecipe.clip_ with the run's settings, applied to the noisy gradient
        self.clip: Callable[[list[torch.Tensor]], None] | None = None
        self.sample: torch.Tensor | None = None  # ξ_t of the current step (None on a noise-free problem)
        self.anchor: torch.Tensor | None = None  # x_t, where the current step started
        self.create_graph = False  # backward(create_graph=True), for optimizers taking Hessian-vector products

    def draw_sample(self) -> torch.Tensor | None:
        """Draw the next step's ξ_t = σ ⊙ z_t (None on a noise-free problem) without fixing x_t."""
        self.sample = None if self.noise_std is None else self.noise_std * self.noise_stream.next()[0]
        self.anchor = None
        return self.sample

    def begin_step(self) -> None:
        """Start a step: draw its sample ξ_t and fix x_t = the current parameter."""
        self.draw_sample()
        self.anchor = self.param.detach().clone() if self.sample is not None else None

    def _check_begun(self) -> None:
        if self.sample is not None and self.anchor is None:
            raise RuntimeError("internal: AnalyticClosure used on a noisy problem before begin_step()")

    def __call__(self) -> torch.Tensor:
        self.calls += 1
        self.param.grad = None
        with torch.enable_grad():
            loss = self.problem.loss(self.param)
            backward(loss, self.create_graph)
        if self.sample is not None:
            assert self.param.grad is not None  # set by the backward above
            self.param.grad.add_(self.sample)
        if self.clip is not None:
            self.clip([self.param])
        if self.sample is None:
            return loss.detach()
        self._check_begun()
        return loss.detach() + self.problem.sample_offset(self.param.detach(), self.anchor, self.sample)

    def loss_at(self, tensors: list[torch.Tensor]) -> torch.Tensor:
        self._check_begun()
        return self.problem.sampled_loss(tensors[0], self.anchor, self.sample)


def backward(loss: torch.Tensor, create_graph: bool = False) -> None:
    """``loss.backward()``; with ``create_graph`` (Hessian-vector products of ``.grad``) torch warns of the
    parameter↔gradient reference cycle, which the engines break by resetting ``.grad`` to None every step."""
    if not create_graph:
        loss.backward()
        return
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r"Using backward\(\) with create_graph=True")
        loss.backward(create_graph=True)


def _exact(problem, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    with torch.enable_grad():
        xg = x.detach().requires_grad_(True)
        loss = problem.loss(xg)
        (grad,) = torch.autograd.grad(loss, xg)
    return loss.detach(), grad


def run_loop(problem: AnalyticProtocol, optimizer, seed: int, steps: int, record_every: int = 1, *, device="cpu",
             dtype=torch.float64, progress=None, recipe: Recipe = PLAIN, measure_cost: bool = True) -> GroupTrace:
    """Run one analytic run with a real optimizer object; returns its trace (K = 1).

    ``recipe`` (:class:`optbench.engines.recipe.Recipe`): its schedule sets every param group's lr before each
    update; its ``clip_norm`` / ``clip_value`` clip the gradient the optimizer sees (after the noise);
    ``measure_cost`` fills ``trace.cost`` (optbench.cost).

    Capabilities of the entry (optbench.optimizers.catalogue): ``create_graph`` backpropagates with
    ``create_graph=True``; ``schedule_free`` calls ``opt.eval()`` before every recorded row and at the end
    (the row is the loss, gradient and coordinates of the point the method reports) and ``opt.train()``
    before the training gradient, one extra evaluation per step.
    """
    with isolated(device):
        return _run_loop(problem, optimizer, seed, steps, record_every, device, dtype, progress, recipe,
                         measure_cost)


def _run_loop(problem, optimizer, seed, steps, record_every, device, dtype, progress, recipe: Recipe,
              measure_cost: bool) -> GroupTrace:
    x0 = problem.start_points([seed], dtype=dtype, device=device)[0]
    param = torch.nn.Parameter(x0.clone())
    randomness = StepRandomness(seed, device)  # what the class draws from torch's global generator
    randomness.before(-1)
    opt = optimizer.entry.build([param], optimizer.hyperparams, dtype=dtype, seed=seed)
    noise_std = problem.noise_std(dtype=dtype, device=device)
    closure = AnalyticClosure(problem, param, noise_std, problem.noise_stream([seed], dtype=dtype, device=device))
    rec = Recorder(problem, 1, steps, record_every, device, dtype)
    needs_closure, accumulates = optimizer.entry.needs_closure, optimizer.entry.accumulates_grad
    per_step = StepRecipe(recipe, opt, optimizer, steps)
    if per_step.clips:
        closure.clip = per_step.clip_
    timer = StepTimer(steps, device) if measure_cost else None
    start = mid = 0.0
    ticker = StepTicker(progress, 1, steps, PROGRESS_EVERY)  # the loop checks its one run every step itself
    schedule_free, create_graph = optimizer.entry.schedule_free, optimizer.entry.create_graph
    closure.create_graph = create_graph
    for t in range(steps + 1):
        if timer is not None:
            start = timer.clock(t)
        if schedule_free:
            # the recorded point is the one the method reports (eval()); the gradient is taken where it trains.
            # Before the first step both are x₀ (and some classes, SPlus, have no state to switch yet).
            if t > 0:
                opt.eval()
            loss, grad = _exact(problem, param)
            rec.observe(t, param.detach()[None], loss[None], grad[None])
            if t == steps or not bool(rec.active[0]):
                break
            if t > 0:
                opt.train()
        if needs_closure or t == steps:
            loss, grad = _exact(problem, param)
        else:
            # one evaluation serves both the record (exact values) and the update (noisy gradient)
            kept = param.grad if accumulates else None  # what the class left in .grad for this backward pass
            param.grad = None
            with torch.enable_grad():
                loss = problem.loss(param)
                backward(loss, create_graph)  # create_graph: Hessian-vector products of .grad
            assert param.grad is not None  # set by the backward above
            grad = param.grad.detach().clone()
            loss = loss.detach()
            sample = closure.draw_sample()  # ξ_t: the gradient oracle of f̃_t is ∇f(x_t) + ξ_t
            if sample is not None:
                param.grad.add_(sample)
            if kept is not None:  # backward() adds to .grad: the class's buffer plus this step's gradient
                param.grad.add_(kept)
        if not schedule_free:
            rec.observe(t, param.detach()[None], loss[None], grad[None])
            if t == steps or not bool(rec.active[0]):
                break
        per_step.set_lr(t)
        if per_step.clips and not needs_closure:
            per_step.clip_([param])
        randomness.before(t)  # the engine's work, outside the optimizer's step time
        if timer is not None:
            mid = timer.clock(t)
        if needs_closure:
            closure.begin_step()  # one ξ_t for every oracle call of this step
            opt.step(closure)
        else:
            opt.step()
        if timer is not None:
            timer.record(t, start, mid, timer.clock(t))
        ticker.tick(t)
    ticker.close()
    param.grad = None  # create_graph leaves a reference cycle between the parameter and its gradient
    trace = rec.finish()
    if timer is not None:
        trace.cost = timer.results(1, state_bytes_per_param(opt))
    return trace
