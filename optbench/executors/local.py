"""The local executor: ``--workers N`` processes on this machine (:func:`optbench.sweep.parallel.run_items_parallel`),
each computing work items and writing their chunks into the results directory; with one worker (or one
item) the runner computes the items in its own process, overlapping each chunk's write with the next item."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any


class LocalExecutor:
    name = "local"

    def __init__(self, workers: int = 1):
        self.workers = workers

    def takes(self, items: Sequence[tuple[str, list[Any]]]) -> bool:
        return self.workers > 1 and len(items) > 1

    def run_items(self, items, out, progress=None):
        from optbench.sweep.parallel import run_items_parallel

        yield from run_items_parallel(items, out, self.workers, progress)

    def __enter__(self) -> LocalExecutor:
        return self

    def __exit__(self, *exc: object) -> None:
        pass
