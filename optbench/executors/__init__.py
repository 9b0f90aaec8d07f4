"""Where a sweep's work items run: the local process pool (``--executor local``) or a Dask distributed
cluster (``--executor dask``).

Every executor takes the work items the runner plans (:func:`optbench.sweep.plan.plan_groups`: one batched
group or one loop run each), runs them somewhere, and yields ``(engine, statuses)`` of each item once its
chunk is in the results directory. The run ids, the items and the tables are the same whichever executor
runs them; only where the arithmetic happens changes.

- :class:`~optbench.executors.local.LocalExecutor`: ``--workers N`` processes on this machine, each
  writing its own chunks (:func:`optbench.sweep.parallel.run_items_parallel`); one worker runs in this process.
- :class:`~optbench.executors.dask.DaskExecutor`: a Dask scheduler's workers compute each item and return
  its chunk tables; this process writes them, so the workers need no access to the results directory.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextvars import ContextVar
from typing import Any, Protocol

from optbench.errors import UsageError

EXECUTORS = ("local", "dask")


class Executor(Protocol):
    """Runs planned work items; a context manager (a cluster connection is closed on exit)."""

    name: str

    def takes(self, items: Sequence[tuple[str, list[Any]]]) -> bool:
        """Whether this executor runs these items (else the runner runs them in this process)."""

    def run_items(self, items: Sequence[tuple[str, list[Any]]], out, progress=None) -> Iterator[tuple[str, list[str]]]:
        """Run every item; yield (engine, statuses of its runs) as each item's chunk is written into ``out``."""

    def __enter__(self) -> Executor: ...

    def __exit__(self, *exc: object) -> None: ...


def get_executor(name: str = "local", *, workers: int = 1, scheduler: str | None = None,
                 scheduler_file: str | None = None) -> Executor:
    """The executor ``--executor NAME`` asks for, its options validated (no connection is made yet)."""
    if name not in EXECUTORS:
        raise UsageError(f"Unknown --executor {name!r}; valid executors: {', '.join(EXECUTORS)}.")
    if name == "local":
        if scheduler or scheduler_file:
            option = "--scheduler" if scheduler else "--scheduler-file"
            raise UsageError(f"{option} needs --executor dask (the local executor runs on this machine).")
        from optbench.executors.local import LocalExecutor

        return LocalExecutor(workers)
    if workers != 1:
        raise UsageError(f"--workers {workers} applies to --executor local; with --executor dask the cluster's "
                         "workers run the items (start as many 'dask worker' processes as you want).")
    from optbench.executors.dask import DaskExecutor

    return DaskExecutor(scheduler=scheduler, scheduler_file=scheduler_file)


# True while a distributed executor is in use: ``--device cuda`` then names each worker's own device, which
# this machine need not have (optbench.devices.resolve_device checks the spelling only; the worker checks
# the device).
DEVICES_ON_WORKERS: ContextVar[bool] = ContextVar("optbench_devices_on_workers", default=False)
