"""The batched engine: K configurations of one optimizer advance as one tensor computation.

Points are a ``[K, d]`` tensor; every float hyperparameter becomes a ``[K, 1]`` tensor, so learning
rates, betas and seeds (through each run's own noise stream and start point) vary along the first axis.
One loss evaluation, one backward and one update per step serve the whole group. Each run reproduces the
trajectory the loop engine gives it (tested to 1e-8 relative in float64).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from optbench.cost import StepTimer
from optbench.engines.batched_rules import (
    ACCUMULATED,
    CLOSURE,
    HESSIAN,
    JOINT,
    LAYERS,
    REPORTED,
    RULES,
    SEEDS,
    VECTORS,
    check_needs,
)
from optbench.engines.grouping import group_key  # noqa: F401  (re-exported: engines.grouping)
from optbench.engines.grouping import is_float_like as _is_float_like
from optbench.engines.intraop import cpu_threads_for
from optbench.engines.layout import ParamLayout
from optbench.engines.recipe import PLAIN, Recipe
from optbench.engines.recorder import GroupTrace, Recorder, StepTicker
from optbench.errors import OptbenchError

if TYPE_CHECKING:
    from optbench.problems.base import Problem

from optbench.engines.grouping import MAX_GROUP  # noqa: E402,F401  (re-exported)

SYNC_EVERY = 100  # steps between host-side checks for "every run has ended" and progress updates
# what this engine gives a rule (batched_rules.Rule.needs): Hessians by double backward, the layout of the
# [K, d] points, which is one 1-D parameter tensor per configuration, as in the loop engine, the step's sampled
# function as a closure (loss_at, as the loop engine's AnalyticClosure), the run seeds, only vectors to step, and
# the gradient added to a buffer the rule keeps (JOINT: a point is one tensor)
PROVIDES = frozenset({HESSIAN, LAYERS, REPORTED, JOINT, CLOSURE, SEEDS, VECTORS, ACCUMULATED})
# the training-recipe settings (Recipe.settings()) it implements; lr scaling is already in each lr
RECIPE = frozenset({"schedule", "clip_norm", "clip_value", "lr_scaling", "base_batch_size"})


def supports_batched(optimizer) -> bool:
    """Whether the optimizer has a batched rule that takes its hyperparameters (``Rule.refuses``; what an engine
    needs beyond it: engines.capabilities)."""
    rule = RULES.get(optimizer.entry.batched) if optimizer.entry.batched is not None else None
    return rule is not None and rule.refuses(optimizer.hyperparams) is None




def stack_hyperparams(optimizers: Sequence[Any], dtype, device) -> dict[str, Any]:
    """Turn K hyperparameter dicts into ``[K, 1]`` tensors (floats) or shared values (the rest)."""
    first = optimizers[0].hyperparams
    out: dict[str, Any] = {}
    for key, value in first.items():
        if _is_float_like(value):
            if isinstance(value, tuple):
                for i in range(len(value)):
                    column = [float(o.hyperparams[key][i]) for o in optimizers]
                    out[f"beta{i + 1}" if key == "betas" else f"{key}{i}"] = torch.tensor(
                        column, dtype=dtype, device=device)[:, None]
            else:
                column = [float(o.hyperparams[key]) for o in optimizers]
                out[key] = torch.tensor(column, dtype=dtype, device=device)[:, None]
        else:
            if any(repr(o.hyperparams[key]) != repr(value) for o in optimizers):
                raise OptbenchError(f"internal: {key} differs inside one batched group")
            out[key] = value
    return out


def _batched_hessian(problem, x: torch.Tensor) -> torch.Tensor:
    """Per-configuration Hessians ``[K, d, d]`` of the problem's loss (rows by double backward)."""
    with torch.enable_grad():
        xg = x.detach().requires_grad_(True)
        (g,) = torch.autograd.grad(problem.loss(xg).sum(), xg, create_graph=True)
        rows = [torch.autograd.grad(g[:, i].sum(), xg, retain_graph=True)[0] for i in range(x.shape[-1])]
    return torch.stack(rows, dim=1)


def _sampled_loss_at(problem, x: torch.Tensor, sample: torch.Tensor | None):
    """``loss_at(points [K, d]) -> [K]``: each configuration's step's sampled function f̃_t(x) = f(x) + ⟨ξ_t, x − x_t⟩
    (``problem.sampled_loss``) with x_t the rows of ``x`` now (copied: the rule updates ``x`` in place)."""
    anchor = None if sample is None else x.clone()
    return lambda points: problem.sampled_loss(points, anchor, sample)


def _sampled_loss_grad_at(problem, x: torch.Tensor, sample: torch.Tensor | None, clip_norm: float | None,
                          clip_value: float | None):
    """``loss_grad_at(points [K, d]) -> ([K], [K, d])``: f̃_t and ∇f̃_t = ∇f + ξ_t of each configuration's step's
    sampled function at ``points``, the gradient clipped row by row as the loop engine's ``closure()`` clips what
    it leaves in ``.grad`` (``AnalyticClosure``: value f(x) + ⟨ξ_t, x − x_t⟩, x_t the rows of ``x`` now). ∇f by
    autograd, as that closure takes it (the closed-form gradients differ in the last bits, which a quasi-Newton
    method's history amplifies at a minimum)."""
    from optbench.engines.trials import _exact_rows

    anchor = None if sample is None else x.clone()

    def loss_grad_at(points: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        loss, grad = _exact_rows(problem, points)
        if sample is not None:
            loss = loss + problem.sample_offset(points, anchor, sample)
            grad = grad + sample
        return loss, clip_rows(grad, clip_norm, clip_value)

    return loss_grad_at


def clip_rows(grad: torch.Tensor, clip_norm: float | None, clip_value: float | None) -> torch.Tensor:
    """Per-configuration clipping of a ``[K, d]`` gradient, operation for operation as
    ``torch.nn.utils.clip_grad_norm_`` (g · min(1, c/(‖g‖ + 1e-6))) then ``clip_grad_value_``."""
    if clip_norm is not None:
        norm = torch.linalg.vector_norm(grad, dim=-1, keepdim=True)
        grad = grad * (clip_norm / (norm + 1e-6)).clamp(max=1.0)
    if clip_value is not None:
        grad = grad.clamp(-clip_value, clip_value)
    return grad


def _lr_schedule(optimizers, schedule, steps: int, dtype, device):
    """``(table [steps, U], index [K])``: the lr of every step for each distinct (schedule, base lr) pair,
    or ``(None, None)`` when every configuration's schedule is constant.

    ``schedule`` is one spec for the whole group or a sequence of K specs, one per configuration
    (tuning searches schedule parameters: each trial has its own warm-up length, say).
    """
    from optbench.schedules import Schedule, get_schedule, lr_sequence

    K = len(optimizers)
    specs = [schedule] * K if schedule is None or isinstance(schedule, (str, Schedule)) else list(schedule)
    if len(specs) != K:
        raise ValueError(f"{len(specs)} schedules for {K} configurations")
    resolved = [get_schedule(s) for s in specs]
    if all(s.is_constant for s in resolved):
        return None, None
    pairs = [(s.resolved, o.lr) for s, o in zip(resolved, optimizers)]
    uniq = list(dict.fromkeys(pairs))
    position = {pair: i for i, pair in enumerate(uniq)}
    table = torch.tensor([lr_sequence(sched, steps, lr) for sched, lr in uniq], dtype=dtype, device=device).T
    index = torch.tensor([position[pair] for pair in pairs], dtype=torch.int64, device=device)
    return table.contiguous(), index


def run_batched(problem: Problem, optimizers: Sequence[Any], seeds: Sequence[int], steps: int,
                record_every: int = 1, *, device="cpu", dtype=torch.float64, progress=None, recipe: Recipe = PLAIN,
                schedules: Sequence[str] | None = None, measure_cost: bool = True) -> GroupTrace:
    """Run K = len(seeds) configurations (``optimizers[k]`` with ``seeds[k]``) of one batched rule.

    ``recipe`` (:class:`Recipe`) is shared by the group: its schedule (as in ``run_loop``), ``clip_norm`` and
    ``clip_value``. ``schedules``, given, is a sequence of K specs, one per configuration, in place of the
    recipe's schedule (tuning searches schedule parameters); each configuration's lr follows its schedule
    from its own base lr.
    """
    if len(optimizers) != len(seeds):
        raise ValueError("one optimizer config per seed")
    for optimizer in optimizers:  # a rule may refuse some hyperparameter values (Rule.refuses)
        check_needs(optimizer, PROVIDES, "batched engine")
    # no thread cliff: one thread until the [K, d] operations are large enough to split (engines.intraop)
    with cpu_threads_for(len(seeds) * problem.dim, device):
        return _run_batched(problem, optimizers, seeds, steps, record_every, device, dtype, progress, recipe,
                            schedules, measure_cost)


def _run_batched(problem, optimizers, seeds, steps, record_every, device, dtype, progress, recipe: Recipe,
                 schedules, measure_cost) -> GroupTrace:
    rule = RULES[optimizers[0].entry.batched]
    K = len(seeds)
    hp = stack_hyperparams(optimizers, dtype, device)
    x = problem.start_points(seeds, dtype=dtype, device=device)
    noise_std = problem.noise_std(dtype=dtype, device=device)
    noise = problem.noise_stream(seeds, dtype=dtype, device=device)
    state = rule.init(x, hp)
    if LAYERS in rule.needs:
        state["layout"] = ParamLayout.vector(x.shape[-1], device)
    if SEEDS in rule.needs:
        state["seeds"] = list(seeds)
    closure, accumulated = CLOSURE in rule.needs, ACCUMULATED in rule.needs
    rec = Recorder(problem, K, steps, record_every, device, dtype)
    lr_table, lr_index = _lr_schedule(optimizers, recipe.schedule if schedules is None else schedules, steps,
                                      dtype, device)
    clip_norm, clip_value = recipe.clip_norm, recipe.clip_value
    clip = clip_norm is not None or clip_value is not None
    timer = StepTimer(steps, device, per_run=K) if measure_cost else None
    start = mid = 0.0
    ticker = StepTicker(progress, K, steps, SYNC_EVERY)
    slots: torch.Tensor | None = None  # Rule.slots_in: each run's state slots when it stopped stepping
    for t in range(steps + 1):
        if timer is not None:
            start = timer.clock(t)
        if rule.reported is not None:  # record the point the method reports, train at x
            shown = rule.reported(x, state, hp)
            rec.observe(t, shown, *problem.loss_and_grad(shown))
            if t == steps:
                break
            loss, grad = problem.loss_and_grad(x)
        else:
            loss, grad = problem.loss_and_grad(x)  # closed form where the problem has one
            rec.observe(t, x, loss, grad)
            if t == steps:
                break
        sample = None if noise_std is None else noise_std * noise.next()  # ξ_t of every run
        if sample is not None:
            grad = grad + sample
        if accumulated and state.get("grad_buffer") is not None:  # backward() adds to what the class left in .grad
            grad = grad + state["grad_buffer"]
        if closure:  # the oracles of f̃_t, as AnalyticClosure.loss_at; unclipped, as the loop engine's loss_at
            state["loss_at"] = _sampled_loss_at(problem, x, sample)
            state["sampled_grad"] = grad
            state["loss_grad_at"] = _sampled_loss_grad_at(problem, x, sample, clip_norm, clip_value)
            state["running"] = rec.active  # runs not ended (diverged, escaped): the loop engine stops stepping those
        if clip:
            grad = clip_rows(grad, clip_norm, clip_value)
        if lr_table is not None:
            hp["lr"] = lr_table[t].index_select(0, lr_index)[:, None]
        if rule.needs_hessian:
            state["hessian"] = _batched_hessian(problem, x)
        if timer is not None:
            mid = timer.clock(t)
        rule.step(x, grad, state, hp, t + 1)
        if timer is not None:
            timer.record(t, start, mid, timer.clock(t))
        if rule.slots_in is not None:  # state that follows the trajectory: a run's, as its loop run stops stepping
            now = rule.slots_in(state)
            slots = now if slots is None else torch.where(rec.active, now, slots)
        if ticker.tick(t, rec):
            break
    ticker.close()
    trace = rec.finish()
    if timer is not None:
        # per configuration, from the rule's declaration of the mirrored class's state (tests check it
        # against the real class); building a torch.optim object here would cost a second of imports
        itemsize = torch.empty((), dtype=dtype).element_size()
        state_per_param = np.array([rule.bytes_per_param(o.hyperparams, x.shape[-1], itemsize)
                                    for o in optimizers], float)
        if slots is not None:
            state_per_param = slots.to(torch.float64).cpu().numpy() * itemsize
        trace.cost = timer.results(K, state_per_param)
    return trace
