"""The loop engine: one real optimizer object per run. It runs every optimizer, user classes included,
and is the reference the batched engine is tested against."""

from __future__ import annotations

import torch

from optbench.cost import StepTimer, state_bytes_per_param
from optbench.engines.recorder import GroupTrace, Recorder, StepTicker

PROGRESS_EVERY = 50  # steps between progress callbacks


class AnalyticClosure:
    """The closure handed to ``optimizer.step``: zero grads, loss at the parameter, backward, then add
    the run's gradient noise to ``.grad``. ``loss_at(tensors)`` evaluates the exact loss at other values,
    functionally (for Newton's Hessian, SPSA and forward gradients)."""

    def __init__(self, problem, param: torch.Tensor, noise_std, noise_stream):
        self.problem, self.param = problem, param
        self.noise_std, self.noise_stream = noise_std, noise_stream
        self.calls = 0
        self.clip = None  # clip_gradient_ with the run's settings, applied to the noisy gradient

    def __call__(self) -> torch.Tensor:
        self.calls += 1
        self.param.grad = None
        with torch.enable_grad():
            loss = self.problem.loss(self.param)
            loss.backward()
        if self.noise_std is not None:
            self.param.grad.add_(self.noise_std * self.noise_stream.next()[0])
        if self.clip is not None:
            self.clip([self.param])
        return loss.detach()

    def loss_at(self, tensors: list[torch.Tensor]) -> torch.Tensor:
        return self.problem.loss(tensors[0])


def _exact(problem, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    with torch.enable_grad():
        xg = x.detach().requires_grad_(True)
        loss = problem.loss(xg)
        (grad,) = torch.autograd.grad(loss, xg)
    return loss.detach(), grad


def clip_gradient_(params, clip_norm: float | None = None, clip_value: float | None = None) -> None:
    """Clip the ``.grad`` of ``params`` in place with torch's utilities: by total norm, then by value."""
    if clip_norm is not None:
        torch.nn.utils.clip_grad_norm_(params, clip_norm)
    if clip_value is not None:
        torch.nn.utils.clip_grad_value_(params, clip_value)


def run_loop(problem, optimizer, seed: int, steps: int, record_every: int = 1, *, device="cpu",
             dtype=torch.float64, progress=None, schedule: str | None = None, clip_norm: float | None = None,
             clip_value: float | None = None, measure_cost: bool = True) -> GroupTrace:
    """Run one analytic run with a real optimizer object; returns its trace (K = 1).

    ``schedule`` (a spec, optbench.schedules) sets every param group's lr before each update;
    ``clip_norm`` / ``clip_value`` clip the gradient the optimizer sees (after the noise);
    ``measure_cost`` fills ``trace.cost`` (optbench.cost).
    """
    x0 = problem.start_points([seed], dtype=dtype, device=device)[0]
    param = torch.nn.Parameter(x0.clone())
    opt = optimizer.entry.build([param], optimizer.hyperparams, dtype=dtype, seed=seed)
    noise_std = problem.noise_std(dtype=dtype, device=device)
    closure = AnalyticClosure(problem, param, noise_std, problem.noise_stream([seed], dtype=dtype, device=device))
    rec = Recorder(problem, 1, steps, record_every, device, dtype)
    needs_closure = optimizer.entry.needs_closure
    lrs = None
    if schedule is not None and schedule != "constant":
        from optbench.schedules import lr_sequence

        lrs = lr_sequence(schedule, steps, optimizer.lr)
    clip = None
    if clip_norm is not None or clip_value is not None:
        def clip(params):
            clip_gradient_(params, clip_norm, clip_value)

        closure.clip = clip
    timer = StepTimer(steps, device) if measure_cost else None
    start = mid = 0.0
    ticker = StepTicker(progress, 1, steps, PROGRESS_EVERY)  # the loop checks its one run every step itself
    for t in range(steps + 1):
        if timer is not None:
            start = timer.clock(t)
        if needs_closure or t == steps:
            loss, grad = _exact(problem, param)
        else:
            # one evaluation serves both the record (exact values) and the update (noisy gradient)
            param.grad = None
            with torch.enable_grad():
                loss = problem.loss(param)
                loss.backward()
            grad = param.grad.detach().clone()
            loss = loss.detach()
            if noise_std is not None:
                param.grad.add_(noise_std * closure.noise_stream.next()[0])
        rec.observe(t, param.detach()[None], loss[None], grad[None])
        if t == steps or not bool(rec.active[0]):
            break
        if lrs is not None:
            for group in opt.param_groups:
                group["lr"] = lrs[t]
        if clip is not None and not needs_closure:
            clip([param])
        if timer is not None:
            mid = timer.clock(t)
        if needs_closure:
            opt.step(closure)
        else:
            opt.step()
        if timer is not None:
            timer.record(t, start, mid, timer.clock(t))
        ticker.tick(t)
    ticker.close()
    trace = rec.finish()
    if timer is not None:
        trace.cost = timer.results(1, state_bytes_per_param(opt))
    return trace
