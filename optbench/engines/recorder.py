"""What both engines record per step, and how a run ends (diverged, escaped, done).

A recorder holds K runs that advance together (K = 1 in the loop engine). Step 0 is the start; step t
is after t updates. Rows are kept at steps 0, e, 2e, … (e = ``record_every``) and at the final step of
every run, so a run that diverges between two recorded steps still shows where it ended. All checks are
tensor operations on the run's device: no host synchronisation per step.
"""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

DONE, DIVERGED, ESCAPED = "done", "diverged", "escaped"
STATUSES = (DONE, DIVERGED, ESCAPED)
MAX_COORDS = 3  # coordinates are recorded for problems of dimension <= 3


@dataclass
class GroupTrace:
    """The recorded history of K runs. Arrays are numpy, rows are recorded steps."""

    steps: np.ndarray  # [R] recorded step numbers
    loss: np.ndarray  # [R, K]
    grad_norm: np.ndarray  # [R, K]
    coords: np.ndarray | None  # [R, K, d] for d <= 3, else None
    wall_time_s: np.ndarray  # [R, K] seconds since the run started
    status: list[str]  # [K]
    end_step: np.ndarray  # [K] last step of each run
    end_loss: np.ndarray  # [K] values at the end step (for runs that end between recorded steps)
    end_grad_norm: np.ndarray
    end_x: np.ndarray  # [K, d] the point where each run ended
    end_wall_time_s: np.ndarray
    extra: dict[str, np.ndarray] = field(default_factory=dict)  # more per-row columns, [R, K]
    cost: dict[str, np.ndarray] = field(default_factory=dict)  # per-run cost metrics, [K] (optbench.cost)

    @property
    def num_runs(self) -> int:
        return len(self.status)


def select_run(trace: GroupTrace, k: int) -> GroupTrace:
    """Run ``k`` of a trace as a trace of one run."""
    return GroupTrace(steps=trace.steps, loss=trace.loss[:, k:k + 1], grad_norm=trace.grad_norm[:, k:k + 1],
                      coords=None if trace.coords is None else trace.coords[:, k:k + 1],
                      wall_time_s=trace.wall_time_s[:, k:k + 1], status=[trace.status[k]],
                      end_step=trace.end_step[k:k + 1], end_loss=trace.end_loss[k:k + 1],
                      end_grad_norm=trace.end_grad_norm[k:k + 1], end_x=trace.end_x[k:k + 1],
                      end_wall_time_s=trace.end_wall_time_s[k:k + 1])


def merge_traces(traces: list[GroupTrace]) -> GroupTrace:
    """Traces of runs on one record grid, as one trace of all their runs in order."""
    def cat(name, axis):
        parts = [getattr(t, name) for t in traces]
        return None if parts[0] is None else np.concatenate(parts, axis=axis)

    return GroupTrace(steps=traces[0].steps, loss=cat("loss", 1), grad_norm=cat("grad_norm", 1),
                      coords=cat("coords", 1), wall_time_s=cat("wall_time_s", 1),
                      status=[s for t in traces for s in t.status], end_step=cat("end_step", 0),
                      end_loss=cat("end_loss", 0), end_grad_norm=cat("end_grad_norm", 0), end_x=cat("end_x", 0),
                      end_wall_time_s=cat("end_wall_time_s", 0))


def record_steps(steps: int, record_every: int) -> list[int]:
    grid = list(range(0, steps + 1, record_every))
    if grid[-1] != steps:
        grid.append(steps)
    return grid


class RecorderBase:
    """The bookkeeping every engine's recorder shares: the record grid and its rows, which runs are still
    active, each run's end step, and the clock of ``wall_time_s`` (which :meth:`exclude_time` keeps
    measurement out of)."""

    def __init__(self, problem, num_runs: int, steps: int, grid: Sequence[int], device):
        import torch  # here, not at the top: the numpy path (engines.batched_numpy) shares this module

        self.problem, self.K, self.steps, self.device = problem, num_runs, steps, device
        self.grid = list(grid)
        self.row_of = {s: i for i, s in enumerate(self.grid)}
        self.wall = np.zeros(len(self.grid))
        self.active = torch.ones(num_runs, dtype=torch.bool, device=device)
        self.diverged = torch.zeros(num_runs, dtype=torch.bool, device=device)
        self.end_step = torch.full((num_runs,), steps, dtype=torch.int64, device=device)
        self.eval_s = 0.0  # seconds of measurement (evaluations, probes) kept out of wall_time_s
        self.t0 = time.perf_counter()

    def elapsed(self) -> float:
        """Training seconds since the start: wall clock less the excluded measurement time."""
        return time.perf_counter() - self.t0 - self.eval_s

    def synchronize(self) -> None:
        """Wait for the device's queued work (CUDA), so that a clock reading covers it."""
        import torch

        if torch.device(self.device).type == "cuda":
            torch.cuda.synchronize(self.device)

    @contextlib.contextmanager
    def exclude_time(self):
        """Keep the enclosed measurement (an evaluation, a noise-scale probe) out of ``wall_time_s``: the
        device is synchronised at its end, and its duration is subtracted from every later reading."""
        start = time.perf_counter()
        try:
            yield
        finally:
            self.synchronize()
            self.eval_s += time.perf_counter() - start

    def any_active(self) -> bool:
        """Host-synchronising check, meant for every few dozen steps."""
        return bool(self.active.any())


class Recorder(RecorderBase):
    """Records K runs on one device and decides when each ends.

    Per step this costs about a dozen small tensor operations and no host synchronisation. Values at a
    run's end step are read back from the recorded rows when the end step is on the record grid, and
    kept separately (a few ``torch.where``) only on the steps between recorded ones.
    """

    def __init__(self, problem, num_runs: int, steps: int, record_every: int, device, dtype):
        import torch  # here, not at the top: the numpy path (engines.batched_numpy) shares this module

        super().__init__(problem, num_runs, steps, record_steps(steps, record_every), device)
        R, K = len(self.grid), num_runs
        self.ncoords = problem.dim if problem.dim <= MAX_COORDS else 0
        opts = dict(dtype=dtype, device=device)
        self.loss = torch.full((R, K), math.nan, **opts)
        self.grad_norm = torch.full((R, K), math.nan, **opts)
        self.coords = torch.full((R, K, self.ncoords), math.nan, **opts)
        self.escaped = torch.zeros(K, dtype=torch.bool, device=device)
        # values at end steps that fall between recorded rows
        self.off_loss = torch.full((K,), math.nan, **opts)
        self.off_grad_norm = torch.full((K,), math.nan, **opts)
        self.off_wall = torch.zeros(K, dtype=torch.float64, device=device)
        self.end_x = torch.full((K, problem.dim), math.nan, **opts)
        self.blowup: torch.Tensor | None = None  # set at step 0, from the start losses
        self.escape_lo = self.escape_hi = None
        if problem.unbounded:
            lo, hi = problem.escape_box()
            self.escape_lo, self.escape_hi = lo.to(**opts), hi.to(**opts)
        self.largest = torch.finfo(dtype).max

    def observe(self, t: int, x, loss, grad) -> None:
        """Record step ``t`` for points ``x`` [K, d] with exact ``loss`` [K] and ``grad`` [K, d] (tensors)."""
        import torch

        x, loss = x.detach(), loss.detach()
        gnorm = torch.linalg.vector_norm(grad.detach(), dim=-1)
        if t == 0:
            self.blowup = torch.tensor([self.problem.blowup_level(v) for v in loss.double().tolist()],
                                       dtype=loss.dtype, device=loss.device)
        # NaN fails every comparison, so this also catches NaN losses and gradients
        ok = (loss <= self.blowup) & (gnorm <= self.largest)
        if self.escape_lo is not None:
            ok = ok & torch.isfinite(loss)
        bad = self.active & ~ok
        self.diverged |= bad
        if self.escape_lo is not None:
            out = ((x < self.escape_lo) | (x > self.escape_hi)).any(dim=-1)
            escaped = self.active & ok & out
            self.escaped |= escaped
            bad = bad | escaped
        ending = self.active if t == self.steps else bad
        elapsed = self.elapsed()
        row = self.row_of.get(t)
        if row is not None:
            self.loss[row] = loss
            self.grad_norm[row] = gnorm
            if self.ncoords:
                self.coords[row] = x
            self.wall[row] = elapsed
        else:
            self.off_loss = torch.where(ending, loss, self.off_loss)
            self.off_grad_norm = torch.where(ending, gnorm, self.off_grad_norm)
            self.off_wall = torch.where(ending, elapsed, self.off_wall)
        self.end_step = torch.where(ending, t, self.end_step)
        self.end_x = torch.where(ending[:, None], x, self.end_x)
        self.active = self.active & ~bad

    def finish(self) -> GroupTrace:
        def np_(t):
            return t.detach().cpu().numpy()

        end_step = np_(self.end_step)
        grid = np.asarray(self.grid, dtype=np.int64)
        loss = np_(self.loss).astype(np.float64)
        grad_norm = np_(self.grad_norm).astype(np.float64)
        wall = np.repeat(self.wall[:, None], self.K, axis=1)
        # end values: from the recorded row when the end step is on the grid, else from the off-grid copy
        row = np.searchsorted(grid, end_step)
        on_grid = (row < len(grid)) & (grid[np.minimum(row, len(grid) - 1)] == end_step)
        runs = np.arange(self.K)
        safe_row = np.minimum(row, len(grid) - 1)
        end_loss = np.where(on_grid, loss[safe_row, runs], np_(self.off_loss))
        end_grad_norm = np.where(on_grid, grad_norm[safe_row, runs], np_(self.off_grad_norm))
        end_wall = np.where(on_grid, wall[safe_row, runs], np_(self.off_wall))
        diverged, escaped = np_(self.diverged), np_(self.escaped)
        status = [DIVERGED if d else ESCAPED if e else DONE for d, e in zip(diverged, escaped)]
        return GroupTrace(
            steps=grid,
            loss=loss,
            grad_norm=grad_norm,
            coords=np_(self.coords).astype(np.float64) if self.ncoords else None,
            wall_time_s=wall,
            status=status,
            end_step=end_step,
            end_loss=end_loss,
            end_grad_norm=end_grad_norm,
            end_x=np_(self.end_x).astype(np.float64),
            end_wall_time_s=end_wall,
        )


class StepTicker:
    """Progress and early stop for K runs advancing together, without a host sync per step.

    ``tick(t, recorder)`` after step ``t`` reports every ``every`` steps to ``progress`` (in run-steps) and then
    asks the recorder, with one host synchronisation, whether any run is still active; it returns True when
    every run has ended. ``close()`` reports the rest, so a run that ended early counts as complete.
    """

    def __init__(self, progress, runs: int, steps: int, every: int):
        self.progress, self.runs, self.steps, self.every = progress, runs, steps, every
        self.reported = 0

    def tick(self, t: int, recorder=None) -> bool:
        if (t + 1) % self.every:
            return False
        if self.progress is not None:
            self.progress(self.every * self.runs)
            self.reported += self.every * self.runs
        return recorder is not None and not recorder.any_active()

    def close(self) -> None:
        if self.progress is not None:
            self.progress(self.steps * self.runs - self.reported)
