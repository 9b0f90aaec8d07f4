"""How much memory a sweep's recorded rows may take, and how many runs a work item may hold to stay in it.

Recorded rows cost memory three times over while a group of runs is in flight: the recorder's buffers
(:class:`optbench.engines.recorder.Recorder`, preallocated for every recorded step), their numpy copies
(``GroupTrace``) and the Arrow tables built from them (``sweep.tables.trace_tables``; on the numpy path the float
columns of the steps table are views of the recorded buffers, so the estimate below is an upper bound there), which
Parquet then encodes; the writer thread holds one finished chunk while the next group computes. Measured (peak RSS
of whole sweeps, ``benchmarks/bench_memory.py``) that is ~150 B per (run, recorded row) for a 2-D problem, growing
with the recorded coordinates (dimension ≤ 3). A sweep whose rows would not fit the budget is cut into slices of
runs, each its own chunk (written atomically, complete or absent on resume). The runs of a batched group compute
independently of each other, and slices of multiples of ``ALIGN_RUNS`` runs keep them bitwise equal to the unsliced
group's on one thread (with several threads the group's own values already depend on how torch splits it; a slice
below 64 runs, when one run's rows take more than 1/128 of the budget, agrees to rounding).

The limit is the process's peak memory for the recorded rows plus the libraries (torch, pyarrow, ~0.4 GiB:
``RESIDENT_BYTES``): ``--memory-limit`` on ``optbench run`` or the environment variable
``OPTBENCH_MEMORY_LIMIT`` (sizes as ``1GiB``, ``512MiB``, ``2e9``; default 1 GiB). A single run whose rows do
not fit is refused before any compute (fewer --steps, a larger --record-every, or a larger limit). Network
problems' data, models and activations come on top (the limit bounds what recording adds).
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Sequence
from typing import TYPE_CHECKING

from optbench.errors import UsageError

if TYPE_CHECKING:
    from optbench.sweep.spec import Run

ENV = "OPTBENCH_MEMORY_LIMIT"
DEFAULT_LIMIT = 1 << 30  # 1 GiB
RESIDENT_BYTES = 400 << 20  # interpreter + torch + pyarrow + numpy of an analytic sweep, before any row (measured)
MIN_ROWS_BYTES = 64 << 20  # the least the rows get, whatever the limit: smaller limits are refused
ROW_BYTES = 128  # per (run, recorded row) of a work item: its numpy copies and tables (earlier: the recorder)
COORD_BYTES = 24  # per recorded coordinate (x0..x2) and row: recorder, copy, table column
TIMED_BYTES_PER_STEP = 16  # cost.StepTimer: step time and iteration time, one float64 each, per step of a group
# Slices of a multiple of 64 runs keep every coordinate at the same position modulo 64 elements as in the whole
# group, and the last slice the whole group's tail: torch's vectorised CPU kernels (transcendental functions are
# not correctly rounded, and their scalar tail differs from the vector body) then give every run the same bits.
ALIGN_RUNS = 64
_UNITS = {"": 1, "b": 1, "k": 1e3, "kb": 1e3, "m": 1e6, "mb": 1e6, "g": 1e9, "gb": 1e9, "t": 1e12, "tb": 1e12,
          "kib": 2**10, "mib": 2**20, "gib": 2**30, "tib": 2**40}


def parse_size(text: str, source: str = "--memory-limit") -> int:
    """``'1GiB'``, ``'512MiB'``, ``'2.5GB'``, ``'2e9'`` → bytes; anything else is a ``UsageError`` naming it."""
    match = re.fullmatch(r"\s*([0-9]*\.?[0-9]+(?:[eE][+-]?[0-9]+)?)\s*([a-zA-Z]*)\s*", str(text))
    unit = match.group(2).lower() if match else None
    if match is None or unit not in _UNITS:
        raise UsageError(f"{source} {text!r} is not a size: give bytes or a number with a unit, e.g. 1GiB, "
                         f"512MiB or 2GB.")
    size = int(float(match.group(1)) * _UNITS[unit])
    least = RESIDENT_BYTES + MIN_ROWS_BYTES
    if size < least:
        raise UsageError(f"{source} {text!r} is less than the {least / 2**20:.0f} MiB a sweep needs (its libraries "
                         f"take about {RESIDENT_BYTES / 2**20:.0f} MiB); give at least {least >> 20}MiB.")
    return size


def memory_limit_bytes() -> int:
    """The limit in force: ``OPTBENCH_MEMORY_LIMIT`` (``optbench run --memory-limit`` sets it) or 1 GiB."""
    text = os.environ.get(ENV)
    return DEFAULT_LIMIT if text in (None, "") else parse_size(text, ENV)


def rows_budget_bytes(limit: int | None = None) -> int:
    """What the recorded rows of the work items in flight may take under ``limit`` (the limit in force)."""
    limit = memory_limit_bytes() if limit is None else limit
    return max(limit - RESIDENT_BYTES, MIN_ROWS_BYTES)


def bytes_per_run(steps: int, record_every: int, dim: int) -> int:
    """Peak bytes one run's recorded rows take in flight (rows: steps 0, e, 2e, … and the last)."""
    rows = steps // record_every + 2
    coords = dim if dim <= 3 else 0
    return rows * (ROW_BYTES + COORD_BYTES * coords)


def group_bytes(runs: int, steps: int, record_every: int, dim: int) -> int:
    """Peak bytes of a work item of ``runs`` runs: their rows and the step timer's clock readings."""
    return runs * bytes_per_run(steps, record_every, dim) + TIMED_BYTES_PER_STEP * steps


def runs_per_item(steps: int, record_every: int, dim: int, budget: int) -> int:
    """The most runs a work item may hold within ``budget``, counting the writer's chunk in flight (the previous
    item's tables and their encoded bytes while this one records: two items' rows at once); at least 1 (a run
    that alone does not fit is refused by :func:`check_memory`)."""
    return max(1, (budget // 2 - TIMED_BYTES_PER_STEP * steps) // bytes_per_run(steps, record_every, dim))


def slices(count: int, most: int, align: int = ALIGN_RUNS) -> list[slice]:
    """``count`` runs cut into the fewest slices of at most ``most``, near-equal, each but the last a multiple of
    ``align`` runs when ``most`` allows it (see ``ALIGN_RUNS``)."""
    if most >= align:
        most -= most % align
    else:
        align = 1
    n = math.ceil(count / most)
    size = min(most, math.ceil(math.ceil(count / n) / align) * align)  # near-equal, rounded up to a multiple
    return [slice(start, min(start + size, count)) for start in range(0, count, size)]


def physical_memory_bytes() -> int:
    """The machine's physical memory (16 GiB where it cannot be read)."""
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):  # no sysconf (Windows)
        return 16 << 30


def rows_budget_limit() -> int:
    """The memory limit in force (``--memory-limit``, ``OPTBENCH_MEMORY_LIMIT``, 1 GiB), at most half the
    machine's memory."""
    return min(memory_limit_bytes(), physical_memory_bytes() // 2)


def recording_bytes(group: Sequence[Run]) -> int:
    """Peak memory of one work item's recorded rows (recorder, copies, tables: :func:`group_bytes`)."""
    first = group[0]
    return group_bytes(len(group), first.steps, first.record_every, first.problem.dim)


def check_memory(items: Sequence[tuple[str, list[Run]]]) -> None:
    """Refuse, before any compute, a work item whose recorded rows would not fit the memory limit even as a
    slice of one run (``--steps 10**12`` would ask for terabytes): one sentence naming the steps, the record
    interval, the memory and what to change. ``sweep.plan.plan_groups`` already cut every larger group to fit."""
    if not items:
        return
    engine, group = max(items, key=lambda item: recording_bytes(item[1]))
    limit = rows_budget_limit()
    need, budget = recording_bytes(group), rows_budget_bytes(limit)
    if need > budget:
        first = group[0]
        raise UsageError(
            f"--steps {first.steps} (recording every {first.record_every}, {len(group)} run(s) at once): the "
            f"recorded rows would need about {need / 2**30:,.2f} GiB, more than the {budget / 2**30:,.2f} GiB a "
            f"memory limit of {limit / 2**30:,.2f} GiB leaves them (--memory-limit or {ENV}, at most half "
            f"of this machine's memory); use fewer --steps, a larger --record-every or a larger --memory-limit.")
