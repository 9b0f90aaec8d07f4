"""How many threads the torch batched path lets an operation use on a CPU, by tensor size.

torch splits an element-wise operation over its intra-op threads once the tensor passes its grain size; on
the ``[K, d]`` tensors of an analytic sweep each operation is a few microseconds of work, so the split costs
more than it saves, and on a loaded machine a thread that waits for a busy core stalls every operation:
measured (benchmarks/bench_fastpath.py, issue #19) the engine went from 0.47 s at K = 1024 to 1.23 s at
K = 1025 on the idle 2-core machine, and K = 10,000 took 44.7 s under load against 14.8 s on one thread.
So the engine runs on one thread until an operation has :data:`ELEMENTS_PER_THREAD` elements per thread,
and restores the setting afterwards. Thread counts do not change any number here (element-wise
operations, and reductions over the last axis of rows that no thread splits).
"""

from __future__ import annotations

import contextlib

# elements an element-wise float64 operation needs per thread before a second thread pays (~0.5 ms of work)
ELEMENTS_PER_THREAD = 1 << 19


def intraop_threads(elements: int, available: int) -> int:
    """Threads for operations over ``elements`` values when ``available`` are configured (at least 1)."""
    return max(1, min(int(available), int(elements) // ELEMENTS_PER_THREAD))


@contextlib.contextmanager
def cpu_threads_for(elements: int, device):
    """Run the block with :func:`intraop_threads` torch threads on a CPU (a GPU device: unchanged)."""
    import torch

    if torch.device(device).type != "cpu":
        yield
        return
    before = torch.get_num_threads()
    wanted = intraop_threads(elements, before)
    if wanted == before:
        yield
        return
    torch.set_num_threads(wanted)
    try:
        yield
    finally:
        torch.set_num_threads(before)
