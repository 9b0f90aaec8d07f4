"""Many loop-engine trials of one analytic problem in one pass: K real optimizer objects, one per configuration,
stepped side by side while the work around them is done once for all K.

A tuning study of an optimizer without a batched rule evaluates every trial on the loop engine
(:func:`optbench.engines.loop.run_loop`). For a small analytic problem most of a loop run's time is not the
optimizer's ``step()`` but what surrounds it: autograd on a ``[d]`` parameter, ``clip_grad_norm_``, the
recorder's dozen tensor operations, building the run. :func:`run_trials` keeps what must stay per trial (each
configuration's own optimizer object and its own parameter, so every class runs as the library ships it, with
no assumption about how its update couples coordinates) and does the rest once per step over a ``[K, d]``
stack: the loss and gradient (one autograd call on the stack; the gradient of Σₖ f(xₖ) with respect to row k is
∇f(xₖ)), the record (one :class:`~optbench.engines.recorder.Recorder` of K runs) and the gradient clipping
(each row clipped as ``clip_grad_norm_`` clips a lone parameter: g · min(1, c / (‖g‖ + 1e-6)), then each
coordinate to [−v, v]).

Trials of a class that :mod:`optbench.engines.stacked` verified to be linear in lr (and that set nothing but lr)
go further: one object for all of them (:func:`~optbench.engines.stacked.run_shared`).

It reproduces ``run_loop`` run by run, bitwise side by side and to rounding when sharing an object
(``tests/test_gallery.py`` checks every registered optimizer it accepts against it), and :func:`fast_path_reason`
says when it does not apply: noisy problems (each run's own noise stream), optimizers that call the closure or
backpropagate with ``create_graph`` (their oracles are per parameter), lr schedules and recorded costs. Those
configurations run ``run_loop`` one by one here, so a caller never has to choose.
"""

from __future__ import annotations

import math

import torch

from optbench.engines.loop import run_loop
from optbench.engines.recipe import PLAIN, Recipe
from optbench.engines.recorder import GroupTrace, Recorder, merge_traces, select_run
from optbench.engines.step_rng import StepRandomness, isolated

CLIP_EPS = 1e-6  # torch.nn.utils.clip_grad_norm_'s guard: coefficient max_norm / (total_norm + 1e-6)


def fast_path_reason(problem, optimizer, schedule: str | None = None) -> str | None:
    """Why ``run_trials`` runs ``optimizer`` on ``problem`` one ``run_loop`` at a time, or None when it steps
    the trials side by side."""
    entry = optimizer.entry
    if problem.kind != "analytic":
        return f"{problem.label} is not an analytic problem"
    if problem.noise_std() is not None:
        return f"{problem.label} is noisy: every run draws its own noise stream"
    if entry.needs_closure:
        return f"{entry.name!r} calls the loss closure in step()"
    if entry.create_graph:
        return f"{entry.name!r} backpropagates with create_graph=True"
    if entry.accumulates_grad:
        return f"{entry.name!r} keeps its momentum in .grad, which each backward pass adds to"
    if schedule not in (None, "constant"):
        return "an lr schedule sets each run's lr every step"
    return None


def run_trials(problem, configs: list, seed: int, steps: int, record_every: int = 1, *, device="cpu",
               dtype=torch.float64, recipe: Recipe = PLAIN, schedules: list[str] | None = None) -> GroupTrace:
    """Run every configuration of ``configs`` (optimizer configs) from the start of ``seed``; returns one trace
    of K = len(configs) runs, run k equal to ``run_loop(problem, configs[k], seed, ...)`` without cost metrics.

    ``recipe``: every trial's (its clipping; its schedule unless ``schedules[k]`` gives config k's label).
    Label smoothing and the other network settings do not apply to an analytic problem."""
    schedules = schedules or [recipe.schedule] * len(configs)
    clip_norm, clip_value = recipe.clip_norm, recipe.clip_value
    slow = [k for k, (c, s) in enumerate(zip(configs, schedules)) if fast_path_reason(problem, c, s) is not None]
    fast = [k for k in range(len(configs)) if k not in set(slow)]
    traces: dict[int, GroupTrace] = {}
    for k in slow:
        traces[k] = run_loop(problem, configs[k], seed, steps, record_every, device=device, dtype=dtype,
                             recipe=recipe.replace(schedule=schedules[k]), measure_cost=False)
    if len(slow) == len(configs):
        return merge_traces([traces[k] for k in range(len(configs))])
    from optbench.engines.stacked import run_shared, share_groups

    groups, single = share_groups([configs[k] for k in fast])
    for group in groups:  # classes verified to be linear in lr: one object for the group
        stacked = run_shared(problem, [configs[fast[j]] for j in group], seed, steps, record_every, device=device,
                              dtype=dtype, clip_norm=clip_norm, clip_value=clip_value)
        for i, j in enumerate(group):
            traces[fast[j]] = select_run(stacked, i)
    if single:
        with isolated(device):
            side_by_side = _side_by_side(problem, [configs[fast[j]] for j in single], seed, steps, record_every,
                                         device=device, dtype=dtype, clip_norm=clip_norm, clip_value=clip_value)
        if len(single) == len(configs):
            return side_by_side
        for i, j in enumerate(single):
            traces[fast[j]] = select_run(side_by_side, i)
    return merge_traces([traces[k] for k in range(len(configs))])


def _exact_rows(problem, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """f and ∇f at each row of ``x`` [K, d]: one autograd call on the stack."""
    with torch.enable_grad():
        xg = x.detach().requires_grad_(True)
        loss = problem.loss(xg)
        (grad,) = torch.autograd.grad(loss.sum(), xg)
    return loss.detach(), grad


def clip_rows_(grad: torch.Tensor, clip_norm: float | None, clip_value: float | None) -> torch.Tensor:
    """Clip each row of ``grad`` [K, d] in place as ``clip_gradient_`` clips one parameter's gradient."""
    if clip_norm is not None:
        norms = torch.linalg.vector_norm(grad, 2.0, dim=-1, keepdim=True)
        grad.mul_(torch.clamp(clip_norm / (norms + CLIP_EPS), max=1.0))
    if clip_value is not None:
        grad.clamp_(min=-clip_value, max=clip_value)
    return grad


def _side_by_side(problem, configs: list, seed: int, steps: int, record_every: int, *, device, dtype,
                  clip_norm: float | None, clip_value: float | None) -> GroupTrace:
    """The fast path: K parameters and K optimizer objects; loss, gradient, record and clipping over the stack.

    As in ``run_loop``: a schedule-free class is recorded at the point it reports (``eval()`` before the
    record from step 1 on) and takes its gradient where it trains (``train()`` after it); a run stops being
    stepped at the step the recorder ends it (diverged, escaped), and its later rows stay unrecorded (NaN)."""
    K = len(configs)
    x0 = problem.start_points([seed], dtype=dtype, device=device)[0]
    params = [torch.nn.Parameter(x0.clone()) for _ in range(K)]
    randomness = StepRandomness(seed, device)  # each trial draws what it would draw alone (run_loop)
    opts = []
    for c, p in zip(configs, params):
        randomness.before(-1)
        opts.append(c.entry.build([p], c.hyperparams, dtype=dtype, seed=seed))
    schedule_free = [c.entry.schedule_free for c in configs]
    any_schedule_free = any(schedule_free)
    rec = Recorder(problem, K, steps, record_every, device, dtype)
    live = list(range(K))
    for t in range(steps + 1):
        if any_schedule_free and t > 0:
            for k in live:
                if schedule_free[k]:
                    opts[k].eval()
        x = torch.stack([p.detach() for p in params])
        loss, grad = _exact_rows(problem, x)
        rec.observe(t, x, loss, grad)
        if t == steps:
            break
        active = rec.active.tolist()
        live = [k for k in live if active[k]]
        if not live:
            break
        if any_schedule_free and t > 0 and any(schedule_free[k] for k in live):
            for k in live:
                if schedule_free[k]:
                    opts[k].train()
            x = torch.stack([p.detach() for p in params])  # the training points: the gradient is taken there
            _, grad = _exact_rows(problem, x)
        if clip_norm is not None or clip_value is not None:
            clip_rows_(grad, clip_norm, clip_value)
        for k in live:
            params[k].grad = grad[k]
            randomness.before(t)
            opts[k].step()
    trace = rec.finish()
    _unrecord_after_end(trace)
    return trace


def _unrecord_after_end(trace: GroupTrace) -> None:
    """Rows after a run's end step as ``run_loop`` leaves them: never recorded (NaN)."""
    after = trace.steps[:, None] > trace.end_step[None, :]
    trace.loss[after] = math.nan
    trace.grad_norm[after] = math.nan
    if trace.coords is not None:
        trace.coords[after] = math.nan
