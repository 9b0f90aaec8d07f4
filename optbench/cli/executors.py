"""The options that choose where work runs (``--executor``, ``--scheduler``, ``--scheduler-file``), shared
by ``run`` and ``tune``; see docs/distributed.md."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

ExecutorOption = Annotated[str, typer.Option(
    "--executor", help="Where work items run: local (this machine, --workers processes) or dask (the workers "
    "of a Dask distributed scheduler: --scheduler or --scheduler-file; see docs/distributed.md).")]
SchedulerOption = Annotated[str | None, typer.Option(
    "--scheduler", help="--executor dask: the scheduler's address, tcp://HOST:PORT.")]
SchedulerFileOption = Annotated[Path | None, typer.Option(
    "--scheduler-file", help="--executor dask: the JSON file 'dask scheduler --scheduler-file' wrote "
    "(on a shared file system, e.g. in a SLURM job).")]


def open_executor(ctx: typer.Context, name: str, workers: int, scheduler: str | None, scheduler_file: Path | None):
    """The chosen executor, entered for the rest of the command and closed when it ends. A scheduler is
    connected to when there is work for it (an unreachable one is then reported before any compute)."""
    from optbench.executors import get_executor

    executor = get_executor(name, workers=workers, scheduler=scheduler,
                            scheduler_file=str(scheduler_file) if scheduler_file is not None else None)
    return ctx.with_resource(executor)
