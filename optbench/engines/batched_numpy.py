"""The batched engine's numpy path: analytic sweeps on a CPU without importing torch.

The same engine as :mod:`optbench.engines.batched` (K configurations of one rule as ``[K, d]`` arrays, one
loss-and-gradient evaluation and one update per step for the whole group, the same recording and end
rules), computed in numpy: at ``[1000, 2]`` an operation costs its dispatch, which is ~1 µs in numpy and
~4 µs in torch, and ``import torch`` (1.3 s) is most of a short sweep. It runs when :func:`supports` says
so — a registered analytic landscape (``AnalyticProblem.numpy``), a rule ported to
:mod:`optbench.engines.numpy_rules`, float64 on the CPU, no recipe setting beyond schedules and clipping —
and the runner picks it automatically (``sweep.plan.execute``); everything else takes the torch path, which
stays the reference for the GPU and for the rules not ported. Both paths draw their noise and random
starts from the same numpy streams (:mod:`optbench.problems.rng`), so a run has the same numbers on either
path up to rounding (tests: every ported rule against the loop engine to 1e-8 relative).

Per step the recorder does a handful of operations: the rows of a step are written into preallocated
arrays, and the end-of-run checks (divergence, escape) cost one comparison and a host-side ``any()``,
with the bookkeeping only on the steps where a run ends.

No thread cliff: numpy's element-wise operations are single-threaded, and a group of K configurations is
advanced in blocks of :func:`block_size` configurations (all steps of one block, then the next), so the
working set of a step stays in the CPU's cache whatever K is (configurations are independent: blocking
changes no number).
"""

from __future__ import annotations

import bisect
import math
import time
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np

from optbench.engines.numpy_rules import RULES, stack_hyperparams
from optbench.engines.recorder import DIVERGED, DONE, ESCAPED, MAX_COORDS, GroupTrace, StepTicker, record_steps
from optbench.errors import UsageError

SYNC_EVERY = 100  # steps between progress updates and the "every run has ended" check, as the torch path
RECIPE = frozenset({"schedule", "clip_norm", "clip_value", "lr_scaling", "base_batch_size"})
# configurations per block: each of the ~20 arrays a step touches is BLOCK_BYTES / (8 d) values, so a
# step's working set stays within a core's L2 cache (measured in benchmarks/bench_fastpath.py)
BLOCK_BYTES = 32 * 1024
NOISE_BUFFER = 1 << 22  # float64 noise draws held per block (32 MiB): one draw per run up to 2048 steps
MIN_BLOCK = 256  # below this the per-operation dispatch (~1 µs) outweighs the work


def supports(problem, rule_name: str | None, recipe: Iterable[str] = (), device: str = "cpu",
             dtype: str = "float64") -> bool:
    """Whether the numpy path runs this configuration (else the torch path does)."""
    return (getattr(problem, "kind", None) == "analytic" and bool(getattr(problem, "numpy", False))
            and rule_name in RULES and str(device) == "cpu" and dtype == "float64"
            and set(recipe) <= RECIPE)


def noise_block(K: int, dim: int, steps: int) -> int:
    """Steps of noise drawn at once for a block of K configurations: as many as keep the draws within
    :data:`NOISE_BUFFER` floats (one generator call per run and block costs ~5 µs), at least 16."""
    return max(16, min(steps, NOISE_BUFFER // max(1, K * dim)))


def block_size(K: int, dim: int) -> int:
    """Configurations advanced together: all K when that fits :data:`BLOCK_BYTES` per array, else blocks of
    ``BLOCK_BYTES / (8 dim)`` (at least :data:`MIN_BLOCK`)."""
    fits = max(MIN_BLOCK, BLOCK_BYTES // (8 * max(1, dim)))
    return K if fits >= K else fits


class NumpyRecorder:
    """:class:`optbench.engines.recorder.Recorder` for numpy arrays, writing into a group's ``[R, K]`` arrays
    at the columns ``cols`` of its block. Same rows, same end rules (loss above the blow-up level, a
    non-finite gradient norm, leaving the escape box of an unbounded problem, the last step)."""

    def __init__(self, problem, trace: dict[str, np.ndarray], cols: slice, steps: int, row_of: dict[int, int]):
        self.problem, self.trace, self.cols, self.steps, self.row_of = problem, trace, cols, steps, row_of
        K = cols.stop - cols.start
        self.ncoords = problem.dim if problem.dim <= MAX_COORDS else 0
        self.active = np.ones(K, dtype=bool)
        self.diverged = np.zeros(K, dtype=bool)
        self.escaped = np.zeros(K, dtype=bool)
        self.escape = problem.escape_box_numpy() if problem.unbounded else None
        self.blowup: np.ndarray | None = None
        self.t0 = time.perf_counter()

    def observe(self, t: int, x: np.ndarray, loss: np.ndarray, grad: np.ndarray) -> None:
        gnorm = np.sqrt(np.einsum("kd,kd->k", grad, grad))
        if self.blowup is None:
            self.blowup = self.problem.blowup_levels(loss)
        elapsed = time.perf_counter() - self.t0
        tr, cols = self.trace, self.cols
        row = self.row_of.get(t)
        if row is not None:
            tr["loss"][row, cols] = loss
            tr["grad_norm"][row, cols] = gnorm
            if self.ncoords:
                tr["coords"][row, cols] = x
            tr["wall"][row, cols] = elapsed
        # NaN fails every comparison, so this also catches NaN losses and gradients
        ok = (loss <= self.blowup) & (gnorm <= np.finfo(np.float64).max)
        if self.escape is not None:
            ok &= np.isfinite(loss)
            out = ((x < self.escape[0]) | (x > self.escape[1])).any(axis=-1)
            escaped = self.active & ok & out
        else:
            escaped = None
        bad = self.active & ~ok
        if escaped is not None and escaped.any():
            self.escaped |= escaped
            ending_bad = bad | escaped
        else:
            ending_bad = bad
        self.diverged |= bad
        ending = self.active if t == self.steps else ending_bad
        if ending.any():
            idx = cols.start + np.flatnonzero(ending)
            tr["end_step"][idx] = t
            tr["end_x"][idx] = x[ending]
            if row is None:
                tr["off_loss"][idx] = loss[ending]
                tr["off_grad_norm"][idx] = gnorm[ending]
                tr["off_wall"][idx] = elapsed
        if ending_bad.any():
            self.active &= ~ending_bad

    def any_active(self) -> bool:
        return bool(self.active.any())


def _lr_schedule(optimizers, schedule, steps: int):
    """``(table [steps, U], index [K])`` as :func:`optbench.engines.batched._lr_schedule`, in numpy."""
    from optbench.schedules import Schedule, get_schedule, lr_sequence

    K = len(optimizers)
    specs = [schedule] * K if schedule is None or isinstance(schedule, (str, Schedule)) else list(schedule)
    if len(specs) != K:
        raise ValueError(f"{len(specs)} schedules for {K} configurations")
    by_spec: dict[Any, Any] = {}
    resolved = [by_spec[s] if s in by_spec else by_spec.setdefault(s, get_schedule(s)) for s in specs]
    if all(s.is_constant for s in resolved):
        return None, None
    pairs = [(s.resolved, o.lr) for s, o in zip(resolved, optimizers)]
    uniq = list(dict.fromkeys(pairs))
    position = {pair: i for i, pair in enumerate(uniq)}
    table = np.array([lr_sequence(sched, steps, lr) for sched, lr in uniq], dtype=np.float64).T.copy()
    return table, np.array([position[pair] for pair in pairs], dtype=np.int64)


def clip_rows(grad: np.ndarray, clip_norm: float | None, clip_value: float | None) -> np.ndarray:
    """:func:`optbench.engines.batched.clip_rows` in numpy: g · min(1, c/(‖g‖ + 1e-6)), then clamp to ±v."""
    if clip_norm is not None:
        norm = np.sqrt(np.einsum("kd,kd->k", grad, grad))[:, None]
        grad = grad * np.minimum(clip_norm / (norm + 1e-6), 1.0)
    if clip_value is not None:
        grad = np.clip(grad, -clip_value, clip_value)
    return grad


def _slice_hp(hp: dict[str, Any], cols: slice) -> dict[str, Any]:
    return {k: v[cols] if isinstance(v, np.ndarray) else v for k, v in hp.items()}


def run_batched_numpy(problem, optimizers: Sequence[Any], seeds: Sequence[int], steps: int, record_every: int = 1,
                      *, progress=None, schedule: str | Sequence[str] | None = None,
                      clip_norm: float | None = None, clip_value: float | None = None,
                      measure_cost: bool = True) -> GroupTrace:
    """Run K = len(seeds) configurations of one ported rule; the arguments and the result are those of
    :func:`optbench.engines.batched.run_batched` (float64 on the CPU)."""
    from optbench.problems.rng import NormalStream

    if len(optimizers) != len(seeds):
        raise ValueError("one optimizer config per seed")
    if optimizers[0].entry.batched not in RULES:  # no numpy port: the torch path (engines.batched) runs it
        raise UsageError(f"The numpy batched path does not support {optimizers[0].name!r}: its rule has no numpy "
                         "port (the torch path of the batched engine runs it).")
    rule = RULES[optimizers[0].entry.batched]
    K, d = len(seeds), problem.dim
    hp_all = stack_hyperparams(optimizers)
    x_all = problem.start_points_numpy(seeds)
    noise_std = problem.noise_std_numpy()
    lr_table, lr_index = _lr_schedule(optimizers, schedule, steps)
    clip = clip_norm is not None or clip_value is not None
    grid = record_steps(steps, record_every)
    row_of = {s: i for i, s in enumerate(grid)}
    R = len(grid)
    ncoords = d if d <= MAX_COORDS else 0
    # recorded rows are held run-major ([K, R] buffers seen as [R, K]): a run's rows are then contiguous, which
    # is the order of the result tables, so sweep.tables takes each column as a view instead of a transposed copy.
    # Not filled in advance: every row up to a block's last observed step is written, the rows after it (every run
    # of the block ended early) are set to NaN then (a NaN fill of every row first touched all the memory once more:
    # half the engine's time at K = 100,000)
    trace = {"loss": np.empty((K, R)).T, "grad_norm": np.empty((K, R)).T,
             "coords": np.empty((ncoords, K, R)).transpose(2, 1, 0), "wall": np.zeros((K, R)).T,
             "end_step": np.full(K, steps, dtype=np.int64), "end_x": np.full((K, d), np.nan),
             "off_loss": np.full(K, np.nan), "off_grad_norm": np.full(K, np.nan), "off_wall": np.zeros(K)}
    diverged, escaped = np.zeros(K, bool), np.zeros(K, bool)
    step_times, full_times = np.full(max(steps, 1), np.nan), np.full(max(steps, 1), np.nan)
    fn, grad_fn = problem.fn, problem.grad_fn
    B = block_size(K, d)
    # a run that diverges overflows on its way to inf, as in torch: silently (its status says so)
    with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
        for start in range(0, K, B):
            cols = slice(start, min(K, start + B))
            x = x_all[cols].copy()
            hp = _slice_hp(hp_all, cols)
            index = None if lr_index is None else lr_index[cols]
            block_noise = noise_block(cols.stop - cols.start, d, steps)
            noise = None if noise_std is None else NormalStream(seeds[cols], d, block=block_noise)
            state = rule.init(x, hp)
            rec = NumpyRecorder(problem, trace, cols, steps, row_of)
            ticker = StepTicker(progress, cols.stop - cols.start, steps, SYNC_EVERY)
            timed = measure_cost and start == 0  # the first block's clock readings, per configuration
            for t in range(steps + 1):
                t_start = time.perf_counter() if timed else 0.0
                loss, grad = fn(x), grad_fn(x)
                rec.observe(t, x, loss, grad)
                if t == steps:
                    break
                if noise is not None:
                    grad = grad + noise_std * noise.next()
                if clip:
                    grad = clip_rows(grad, clip_norm, clip_value)
                if lr_table is not None:
                    hp["lr"] = lr_table[t][index][:, None]
                if timed:
                    t_mid = time.perf_counter()
                    rule.step(x, grad, state, hp, t + 1)
                    t_end = time.perf_counter()
                    step_times[t], full_times[t] = t_end - t_mid, t_end - t_start
                else:
                    rule.step(x, grad, state, hp, t + 1)
                if ticker.tick(t, rec):
                    break
            ticker.close()
            unobserved = bisect.bisect_right(grid, t)  # first row after the block's last observed step
            for name in ("loss", "grad_norm", "coords"):
                trace[name][unobserved:, cols] = np.nan
            diverged[cols], escaped[cols] = rec.diverged, rec.escaped
    result = _finish(trace, grid, diverged, escaped)
    if measure_cost:
        result.cost = _cost(rule, optimizers, step_times, full_times, min(B, K))
    return result


def _finish(tr: dict[str, np.ndarray], grid: list[int], diverged, escaped) -> GroupTrace:
    """The GroupTrace of the recorded arrays, as ``Recorder.finish`` builds it."""
    grid_arr = np.asarray(grid, dtype=np.int64)
    end_step = tr["end_step"]
    K = len(end_step)
    row = np.searchsorted(grid_arr, end_step)
    safe_row = np.minimum(row, len(grid_arr) - 1)
    on_grid = (row < len(grid_arr)) & (grid_arr[safe_row] == end_step)
    runs = np.arange(K)
    loss, grad_norm, wall = tr["loss"], tr["grad_norm"], tr["wall"]
    status = [DIVERGED if dv else ESCAPED if es else DONE for dv, es in zip(diverged.tolist(), escaped.tolist())]
    return GroupTrace(
        steps=grid_arr, loss=loss, grad_norm=grad_norm,
        coords=tr["coords"] if tr["coords"].shape[-1] else None,
        wall_time_s=wall, status=status, end_step=end_step,
        end_loss=np.where(on_grid, loss[safe_row, runs], tr["off_loss"]),
        end_grad_norm=np.where(on_grid, grad_norm[safe_row, runs], tr["off_grad_norm"]),
        end_x=tr["end_x"],
        end_wall_time_s=np.where(on_grid, wall[safe_row, runs], tr["off_wall"]),
    )


def _median(values: np.ndarray) -> float:
    """``np.median`` of a non-empty 1-D float array without NaNs, the same value: ``np.median`` imports
    ``numpy.ma`` (~15 ms) on its first call."""
    ordered = np.sort(values)
    mid = ordered.size // 2
    return float(ordered[mid] if ordered.size % 2 else (ordered[mid - 1] + ordered[mid]) / 2)


def _cost(rule, optimizers, step_times, full_times, per_run: int) -> dict[str, np.ndarray]:
    """The GroupTrace ``cost`` dict, as ``cost.StepTimer.results`` computes it on a CPU."""
    from optbench.cost import WARMUP_STEPS

    def median(values):
        kept = values[WARMUP_STEPS:] if np.isfinite(values[WARMUP_STEPS:]).any() else values
        kept = kept[np.isfinite(kept)]
        return _median(kept) / per_run if kept.size else math.nan

    K = len(optimizers)
    slots: dict[int, int] = {}
    state = np.array([slots[id(o)] if id(o) in slots else slots.setdefault(id(o), rule.state_slots(o.hyperparams))
                      for o in optimizers], float) * 8  # float64 items
    return {"state_bytes_per_param": state, "step_time_s": np.full(K, median(step_times)),
            "train_step_time_s": np.full(K, median(full_times)), "peak_memory_bytes": np.full(K, math.nan)}
