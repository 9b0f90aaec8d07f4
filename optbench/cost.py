"""Cost metrics of a run: optimizer state memory, step time, peak device memory.

- ``state_bytes_per_param``: bytes of optimizer state per parameter element, measured from the tensors
  in ``optimizer.state`` (nested dicts, lists and tuples are walked). Tensors with at least one dimension
  count; 0-d tensors (step counters, scalar running products) are per-tensor bookkeeping and do not.
  SGD: 0; momentum: 1× the parameter's element size; Adam: 2×; Adafactor without β₁ on an n×m matrix:
  (n + m)/(n·m)×. The batched engine reports, per configuration, the state its rule declares for the
  mirrored class (``Rule.state_slots``); tests check each declaration against the real class measured
  with :func:`probe_state_bytes_per_param` (building a torch optimizer at run time would cost a second
  of imports).
- ``step_time_s``: median seconds of ``optimizer.step`` (batched: one group step divided by K).
  ``train_step_time_s``: median seconds of a whole iteration: loss, backward, noise, clipping, recording and
  the step. The first ``WARMUP_STEPS`` iterations are left out. On CUDA the clock is read after
  ``torch.cuda.synchronize`` on every ``CUDA_TIME_EVERY``-th step only, so timing does not serialise the run.
- ``peak_memory_bytes``: ``torch.cuda.max_memory_allocated`` over the work item (a batched group shares
  one); NaN where the device does not report it (CPU, MPS).
- ``peak_rss_bytes`` (network runs, :class:`PeakMemory`): how far the process's resident memory rose above
  its level at the start of the work item (after the dataset is on the device, which the runs share): on
  Linux the peak resident set (``VmHWM``), reset to the current size by writing 5 to ``/proc/self/clear_refs``;
  elsewhere the growth of ``getrusage().ru_maxrss``, a lower bound (0 when an earlier peak was higher). It
  counts host memory (model, optimizer state, activations on a CPU; on CUDA only the host side).
- ``examples_per_s`` (network runs): training examples per training second over the whole budget
  (:mod:`optbench.time_to_result`; evaluation time left out).
- ``overhead_vs_sgd`` (summary time, :func:`optbench.analysis.cost.overhead_vs_sgd`): train step time over the
  median train step time of plain ``sgd`` runs on the same problem, batch size and engine (DeepOBS's runtime estimate);
  NaN when the results hold no such run.
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterable
from typing import Any

import numpy as np

WARMUP_STEPS = 5  # iterations left out of the medians (first-call allocations, lazy state init)
CUDA_TIME_EVERY = 16  # on CUDA, synchronise and time one iteration in this many
COST_COLUMNS = ("state_bytes_per_param", "step_time_s", "train_step_time_s", "peak_memory_bytes")  # every engine
NETWORK_COST_COLUMNS = ("peak_rss_bytes", "examples_per_s")  # the network engines (NaN for analytic runs)
SUMMARY_COST_COLUMNS = COST_COLUMNS + NETWORK_COST_COLUMNS  # written with every run
PEAK_COLUMNS = ("peak_memory_bytes", "peak_rss_bytes")  # aggregated over seeds by their maximum


def state_bytes(state: Any, exclude: Iterable[Any] = ()) -> int:
    """Bytes of every tensor with at least one dimension reachable from an optimizer state: through dicts,
    lists, tuples, sets and deques (AdaShift's queue of gradients) and the attributes of the objects kept there
    (ScalableShampoo's preconditioners, GaLore's projectors), each tensor once, none of ``exclude`` (the
    parameters themselves, which such objects may point back to)."""
    seen = {id(x) for x in exclude}
    return _reachable_bytes(state, seen)


def _reachable_bytes(obj: Any, seen: set[int]) -> int:
    import collections
    import types

    import torch

    if obj is None or isinstance(obj, (bool, int, float, complex, str, bytes)) or id(obj) in seen:
        return 0
    seen.add(id(obj))
    if isinstance(obj, torch.Tensor):
        return obj.nbytes if obj.dim() > 0 else 0
    if isinstance(obj, dict):
        return sum(_reachable_bytes(v, seen) for v in obj.values())
    if isinstance(obj, (list, tuple, set, frozenset, collections.deque)):
        return sum(_reachable_bytes(v, seen) for v in obj)
    if isinstance(obj, (type, types.ModuleType, types.FunctionType, types.MethodType, types.BuiltinFunctionType,
                        torch.optim.Optimizer, torch.nn.Module)):
        return 0  # code, or another optimizer or model the object points to: not this state
    attributes = getattr(obj, "__dict__", None)
    return sum(_reachable_bytes(v, seen) for v in attributes.values()) if isinstance(attributes, dict) else 0


def state_bytes_per_param(optimizer) -> float:
    """Optimizer state bytes per parameter element of a built ``torch.optim.Optimizer``."""
    params = [p for group in optimizer.param_groups for p in group["params"]]
    numel = sum(p.numel() for p in params)
    return state_bytes(dict(optimizer.state), exclude=params) / numel if numel else math.nan


_PROBES: dict[tuple, float] = {}


def probe_state_bytes_per_param(optimizer_config, dim: int, dtype, device="cpu", steps: int = 2) -> float:
    """Build the real optimizer on a ``[dim]`` probe parameter, take ``steps`` steps on the gradient of
    ½‖x‖², and measure its state. Memoized per (optimizer, hyperparameters, dim, dtype, device type)."""
    import torch

    key = (optimizer_config.name, repr(sorted(optimizer_config.hyperparams.items())), dim, str(dtype),
           torch.device(device).type)
    if key not in _PROBES:
        from optbench.engines.step_rng import isolated

        with isolated(device):  # a class drawing from the global generator leaves the caller's stream alone
            _PROBES[key] = _probe(optimizer_config, dim, dtype, device, steps)
    return _PROBES[key]


def _probe(optimizer_config, dim: int, dtype, device, steps: int) -> float:
    """The state bytes per parameter of the real class after ``steps`` steps on ½‖x‖² (see above)."""
    import torch

    param = torch.nn.Parameter(torch.ones(dim, dtype=dtype, device=device))
    opt = optimizer_config.entry.build([param], optimizer_config.hyperparams, dtype=dtype, seed=0)

    class Closure:
        """½‖x‖² with backward, and ``loss_at(tensors)``: the same loss at other values, functionally, as the
        engines' closures offer it (the forward gradient needs it: optimizers.handwritten)."""

        def __call__(self):
            param.grad = None
            with torch.enable_grad():
                loss = 0.5 * (param * param).sum()
                loss.backward()
            return loss.detach()

        @staticmethod
        def loss_at(tensors):
            return 0.5 * (tensors[0] * tensors[0]).sum()

    closure = Closure()
    for _ in range(steps):
        if optimizer_config.entry.needs_closure:
            opt.step(closure)
        else:
            closure()
            opt.step()
    return state_bytes_per_param(opt)


class StepTimer:
    """Per-iteration clock readings into preallocated arrays; medians at the end.

    Use: ``start = timer.clock(t)`` at the top of iteration ``t``, ``mid = timer.clock(t)`` right before
    the optimizer step, ``timer.record(t, start, mid, timer.clock(t))`` after it. ``clock`` synchronises
    on CUDA for the sampled iterations only; elsewhere it is ``time.perf_counter()``.
    """

    def __init__(self, steps: int, device="cpu", per_run: int = 1):
        import torch

        self.device = torch.device(device)
        self.cuda = self.device.type == "cuda"
        self.every = CUDA_TIME_EVERY if self.cuda else 1
        self.per_run = per_run  # the batched engine divides group times by K
        self.step = np.full(max(steps, 1), np.nan)
        self.full = np.full(max(steps, 1), np.nan)
        if self.cuda:
            torch.cuda.reset_peak_memory_stats(self.device)

    def clock(self, t: int) -> float:
        if self.cuda and t % self.every == 0:
            import torch

            torch.cuda.synchronize(self.device)
        return time.perf_counter()

    def record(self, t: int, start: float, mid: float, end: float) -> None:
        if t % self.every == 0:
            self.step[t] = end - mid
            self.full[t] = end - start

    def _median(self, values: np.ndarray) -> float:
        kept = values[WARMUP_STEPS:] if np.isfinite(values[WARMUP_STEPS:]).any() else values
        kept = kept[np.isfinite(kept)]
        return float(np.median(kept)) / self.per_run if kept.size else math.nan

    def peak_memory_bytes(self) -> float:
        if self.cuda:
            import torch

            return float(torch.cuda.max_memory_allocated(self.device))
        return math.nan

    def results(self, K: int, state_per_param) -> dict[str, np.ndarray]:
        """The GroupTrace ``cost`` dict: one value per run, ``[K]`` arrays."""
        values = {"state_bytes_per_param": state_per_param, "step_time_s": self._median(self.step),
                  "train_step_time_s": self._median(self.full), "peak_memory_bytes": self.peak_memory_bytes()}
        return {k: np.full(K, v, dtype=np.float64) for k, v in values.items()}


_WARMED_UP: list[bool] = []


def _warm_up_once() -> None:
    """One tiny training step per process before the first measurement: torch's one-time initialisation
    (autograd's engine, the optimizer module's lazy imports: about 80 MiB on a CPU) would otherwise count as
    the first run's memory."""
    if _WARMED_UP:
        return
    import torch

    with torch.random.fork_rng(devices=[]):
        layer = torch.nn.Linear(4, 2)
        opt = torch.optim.Adam(layer.parameters())
        torch.nn.functional.cross_entropy(layer(torch.ones(3, 4)), torch.zeros(3, dtype=torch.long)).backward()
        opt.step()
    _WARMED_UP.append(True)


def _return_freed_memory() -> None:
    """Hand memory that earlier runs freed back to the OS (glibc ``malloc_trim``), so that a run re-using it
    counts it as its own growth instead of getting it for free from the run before."""
    import ctypes
    import ctypes.util

    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        libc.malloc_trim(0)
    except (OSError, AttributeError):
        pass


def _rss_now_and_peak() -> tuple[float, float] | None:
    """(current, peak) resident set bytes of this process from /proc/self/status (Linux), else None."""
    try:
        with open("/proc/self/status") as f:
            fields = dict(line.split(":", 1) for line in f if ":" in line)
        return float(fields["VmRSS"].split()[0]) * 1024, float(fields["VmHWM"].split()[0]) * 1024
    except (OSError, KeyError, ValueError):
        return None


class PeakMemory:
    """Peak memory of one work item, from its start: ``peak_memory_bytes`` (CUDA allocator) and
    ``peak_rss_bytes`` (growth of the process's resident set; the module docstring says what it measures)."""

    def __init__(self, device="cpu"):
        import torch

        self.device = torch.device(device)
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
        _warm_up_once()
        _return_freed_memory()
        self.hwm_reset = False
        try:
            with open("/proc/self/clear_refs", "w") as f:
                f.write("5")  # VmHWM := VmRSS (Linux >= 4.0)
            self.hwm_reset = True
        except OSError:
            pass
        rss = _rss_now_and_peak()
        self.start_rss = rss[0] if rss else math.nan
        self.start_maxrss = self._maxrss()

    @staticmethod
    def _maxrss() -> float:
        try:
            import resource
            import sys

            peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
            return float(peak if sys.platform == "darwin" else peak * 1024)  # bytes on macOS, KiB on Linux
        except (ImportError, OSError):
            return math.nan

    def results(self, K: int) -> dict[str, np.ndarray]:
        import torch

        cuda = math.nan
        if self.device.type == "cuda":
            cuda = float(torch.cuda.max_memory_allocated(self.device))
        rss = _rss_now_and_peak()
        if self.hwm_reset and rss is not None:
            grown = max(0.0, rss[1] - self.start_rss)
        else:
            grown = max(0.0, self._maxrss() - self.start_maxrss)
        return {"peak_memory_bytes": np.full(K, cuda), "peak_rss_bytes": np.full(K, grown)}
