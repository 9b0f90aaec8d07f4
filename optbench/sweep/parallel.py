"""Work items in worker processes: each rebuilds its runs from specs, runs them and writes its own chunks.

:func:`run_items_parallel` is the one function an executor plugs into (the caller writes the manifest)."""

from __future__ import annotations

import os
import time
from pathlib import Path

from optbench.sweep import plan
from optbench.sweep.spec import Run
from optbench.sweep.tables import trace_tables
from optbench.sweep.writer import chunk_id


def _portable(run: Run) -> tuple:
    """A run as picklable values (problems and optimizer entries hold closures): specs and fields."""
    import dataclasses

    fields = {f.name: getattr(run, f.name) for f in dataclasses.fields(run) if f.name not in ("problem", "optimizer")}
    batch = run.problem.batch_size if run.problem.has_batch_size else None
    return str(run.problem.spec), batch, str(run.optimizer.spec), fields, run.run_id


def _rebuild(portable: tuple, device: str | None) -> Run:
    from optbench.optimizers import get_optimizer
    from optbench.problems import get_problem

    problem_spec, batch, optimizer_spec, fields, run_id = portable
    problem = get_problem(problem_spec)  # the spec holds a --batch-size given: the label stays the local one
    if batch is not None and problem.batch_size != batch:
        problem = get_problem(problem_spec, batch_size=batch)
    run = Run(problem, get_optimizer(optimizer_spec), **fields)
    if run.run_id != run_id:
        raise RuntimeError(f"internal: run {run_id} rebuilt in a worker as {run.run_id}")
    if device is not None:  # a device index only: run ids hash the device type, so they are unchanged
        run = Run(problem, run.optimizer, **{**fields, "device": device})
    return run


def _run_item(engine: str, portables: list[tuple], out: Path, device: str | None) -> tuple[str, list[str]]:
    """One work item in a worker process: run it and write its chunk (atomic, like the serial path)."""
    import torch

    from optbench.results import write_chunk

    torch.set_num_threads(1)  # one core per worker; N workers share the machine
    group = [_rebuild(p, device) for p in portables]
    trace = plan.execute(engine, group)
    steps_table, summary_table = trace_tables(group, trace, engine)
    write_chunk(out, chunk_id(group), steps_table, summary_table)
    return engine, list(trace.status)


def run_items_parallel(items, out: Path, workers: int, progress=None):
    """Run work items in ``workers`` processes (spawned: safe with torch's thread pools); yields
    (engine, statuses of its runs) as items finish, their chunks written. Each worker writes its own chunks;
    the caller writes the manifest.
    On CUDA with several devices, item i goes to device i mod (number of devices). Ctrl-C cancels the
    items not started; finished chunks are already on disk."""
    import multiprocessing
    from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait

    import torch

    ndev = torch.cuda.device_count() if items and items[0][1][0].device.startswith("cuda") else 0
    pool = ProcessPoolExecutor(max_workers=workers, mp_context=multiprocessing.get_context("spawn"),
                               initializer=die_with_parent, initargs=(os.getpid(),))
    try:
        pending = {pool.submit(_run_item, engine, [_portable(r) for r in group], out,
                               f"cuda:{i % ndev}" if ndev > 1 else None):
                   sum(r.steps for r in group) for i, (engine, group) in enumerate(items)}
        while pending:
            finished, _ = wait(pending, return_when=FIRST_COMPLETED)
            for future in finished:
                steps = pending.pop(future)
                engine, statuses = future.result()
                if progress is not None:
                    progress.advance(steps)
                yield engine, statuses
    except BaseException:  # Ctrl-C, SIGTERM or a failure: stop the workers now; finished chunks are on disk
        for process in list(getattr(pool, "_processes", {}).values()):
            process.terminate()
        raise
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


PARENT_POLL_S = 0.5  # how often a worker's watchdog checks that its parent is alive


def die_with_parent(parent_pid: int) -> None:
    """Worker initializer: end this process when ``parent_pid`` ends, however it ends (SIGKILL included),
    so no worker (each holding hundreds of MB) outlives the sweep. Linux: ``prctl(PR_SET_PDEATHSIG,
    SIGKILL)``; everywhere: a daemon thread that exits when the parent is gone (the process is
    re-parented, so ``os.getppid()`` changes)."""
    import signal
    import sys
    import threading

    if sys.platform.startswith("linux"):
        try:
            import ctypes

            PR_SET_PDEATHSIG = 1
            ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
        except (OSError, AttributeError):
            pass
    if os.getppid() != parent_pid:  # the parent died before we asked to follow it
        os._exit(1)

    def watch() -> None:
        while os.getppid() == parent_pid:
            time.sleep(PARENT_POLL_S)
        os._exit(1)

    threading.Thread(target=watch, name="optbench-parent-watchdog", daemon=True).start()
