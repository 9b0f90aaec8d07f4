"""Refuse, before any compute, a work item whose recording buffers would not fit in memory."""

from __future__ import annotations

from collections.abc import Sequence

from optbench.errors import UsageError
from optbench.sweep.spec import Run

RECORDED_FLOATS_PER_ROW = 4  # loss, grad norm, wall time and one float of slack per run and recorded row
TIMED_FLOATS_PER_STEP = 2  # cost.StepTimer: step time and full iteration time, one float64 each per step


def recording_bytes(group: Sequence[Run]) -> int:
    """Memory the engines preallocate to record one work item: rows × runs × (floats + coordinates) for
    the recorder, and the step timer's per-step clock readings (8 bytes each)."""
    first = group[0]
    rows = first.steps // first.record_every + 2
    coords = first.problem.dim if first.problem.dim <= 3 else 0
    return 8 * (rows * len(group) * (RECORDED_FLOATS_PER_ROW + coords) + TIMED_FLOATS_PER_STEP * first.steps)


def memory_limit_bytes() -> int:
    """Half the machine's physical memory (a sane ceiling for one work item's recording buffers)."""
    import os

    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") // 2
    except (ValueError, OSError, AttributeError):  # no sysconf (Windows): assume 8 GiB
        return 8 << 30


def check_memory(items: Sequence[tuple[str, list[Run]]]) -> None:
    """Refuse, before any compute, a budget whose recording buffers would not fit (``--steps 10**12``
    would ask for terabytes): one sentence naming the steps, the record interval and the memory."""
    if not items:
        return
    engine, group = max(items, key=lambda item: recording_bytes(item[1]))
    need, limit = recording_bytes(group), memory_limit_bytes()
    if need > limit:
        first = group[0]
        raise UsageError(
            f"--steps {first.steps} (recording every {first.record_every}, {len(group)} runs at once): the "
            f"recording buffers would need about {need / 2**30:,.1f} GiB, more than half of this machine's "
            f"memory ({2 * limit / 2**30:,.1f} GiB); use fewer --steps or a larger --record-every.")
