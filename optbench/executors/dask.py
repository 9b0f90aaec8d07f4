"""The Dask executor (``--executor dask --scheduler tcp://HOST:PORT`` or ``--scheduler-file PATH``): the work
items of a sweep run as tasks on a Dask distributed cluster; this process (the client) keeps the results
directory.

How an item runs: the client submits one task per work item (:func:`optbench.sweep.plan.plan_groups`), carrying
its runs as spec strings and fields (:func:`optbench.sweep.parallel._portable`, as for the local worker pool). A
worker rebuilds the runs (checking that each run id is unchanged), runs the item on its own device, builds
the chunk's two Arrow tables and returns them; the client writes each chunk atomically with the same writer
as a local run (:func:`optbench.results.write_chunk`). So the workers need no access to the results
directory, and run ids, chunk files and tables are those of a local run.

Faults:

- a worker that dies (SIGKILL, a lost node) loses its items in flight: the scheduler runs them again on
  another worker (Dask's ``allowed-failures``, 3 by default; an item that kills that many workers fails the
  sweep with one sentence);
- a client killed mid-sweep loses nothing written: re-running the same command skips the complete runs;
- an error of the user's (a file the worker cannot import, a spec it rejects, ``--device cuda`` on a worker
  without one) comes back as a value, not an exception: the first one cancels every other task and is
  reported once, as one sentence naming the worker;
- an unreachable scheduler fails within :data:`CONNECT_TIMEOUT_S` seconds, naming the address.

distributed is imported only when this executor is chosen (``pip install optbench[dask]``).
"""

from __future__ import annotations

import json
import os
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from optbench.errors import OptbenchError, UsageError, UserCodeError

CONNECT_TIMEOUT_S = 5.0  # an unreachable scheduler is reported after this long
WAIT_S = 0.5  # how often the client looks up from waiting (Ctrl-C, progress)


class DaskExecutor:
    name = "dask"

    def __init__(self, scheduler: str | None = None, scheduler_file: str | None = None):
        if scheduler and scheduler_file:
            raise UsageError("Give --scheduler or --scheduler-file, not both.")
        if not scheduler and not scheduler_file:
            raise UsageError("--executor dask needs --scheduler tcp://HOST:PORT or --scheduler-file PATH "
                             "(see docs/distributed.md).")
        self.scheduler = scheduler
        self.scheduler_file = scheduler_file
        self._client: Any = None
        self._devices: Any = None  # the token of optbench.executors.DEVICES_ON_WORKERS while entered

    # -- connection ----------------------------------------------------------------------------------

    @property
    def address(self) -> str:
        """The scheduler's address, as given or as its scheduler file says."""
        if self.scheduler:
            return self.scheduler
        path = Path(str(self.scheduler_file)).expanduser()
        try:
            return str(json.loads(path.read_text())["address"])
        except FileNotFoundError:
            raise UsageError(f"--scheduler-file {self.scheduler_file}: no such file; start the scheduler with "
                             f"'dask scheduler --scheduler-file {self.scheduler_file}' first.") from None
        except (OSError, ValueError, KeyError, TypeError):
            raise UsageError(f"--scheduler-file {self.scheduler_file} is not a Dask scheduler file (JSON with "
                             "an 'address'); give the file 'dask scheduler --scheduler-file' wrote.") from None

    @property
    def client(self):
        """The connected ``distributed.Client`` (connecting on first use)."""
        if self._client is None:
            self._client = connect(self.address)
        return self._client

    def __enter__(self) -> DaskExecutor:
        from optbench.executors import DEVICES_ON_WORKERS

        self._devices = DEVICES_ON_WORKERS.set(True)  # --device cuda names the workers' devices, not ours
        return self

    def __exit__(self, *exc: object) -> None:
        from optbench.executors import DEVICES_ON_WORKERS

        if self._devices is not None:
            DEVICES_ON_WORKERS.reset(self._devices)
            self._devices = None
        self.close()

    def close(self) -> None:
        if self._client is not None:
            client, self._client = self._client, None
            try:
                client.close(timeout=CONNECT_TIMEOUT_S)
            except Exception:  # noqa: BLE001 - the scheduler went away: nothing left to close
                pass

    # -- sweeps --------------------------------------------------------------------------------------

    def takes(self, items: Sequence[tuple[str, list[Any]]]) -> bool:
        return bool(items)

    def run_items(self, items, out, progress=None):
        """Submit every item; as each finishes, write its chunk into ``out`` and yield (engine, statuses)."""
        from optbench.determinism import is_deterministic
        from optbench.results import write_chunk
        from optbench.sweep.parallel import _portable
        from optbench.sweep.writer import chunk_id

        client = self.client
        deterministic = is_deterministic()  # --deterministic: the workers switch torch the same way
        cwd = os.getcwd()  # relative file specs ('my_opt.py:MyAdam') name files here
        tag = uuid.uuid4().hex[:8]
        pending = {}
        for engine, group in items:
            cid = chunk_id(group)
            future = client.submit(compute_item, engine, [_portable(r) for r in group], deterministic, cwd,
                                   key=f"optbench-item-{cid}-{tag}", pure=False)
            pending[future] = (cid, sum(r.steps for r in group))
        try:
            for future in finished_futures(client, pending):
                cid, steps = pending.pop(future)
                outcome = future_result(future, "work item")
                future.release()
                engine, statuses, steps_table, summary_table = outcome
                write_chunk(out, cid, steps_table, summary_table)
                if progress is not None:
                    progress.advance(steps)
                yield engine, statuses
        finally:
            if pending:  # an error, Ctrl-C or SIGTERM: the items not finished stop; written chunks stay
                cancel(client, list(pending))


def connect(address: str):
    """A ``distributed.Client`` of the scheduler at ``address``; an unreachable one is one sentence (exit 2)
    after :data:`CONNECT_TIMEOUT_S` seconds."""
    try:
        from distributed import Client
    except ImportError:
        raise UsageError("--executor dask needs Dask distributed: pip install 'optbench[dask]'.") from None
    try:
        return Client(address, timeout=CONNECT_TIMEOUT_S, set_as_default=False)
    except (OSError, TimeoutError, ValueError) as exc:
        why = "it did not answer" if isinstance(exc, (OSError, TimeoutError)) else f"{exc}"
        raise UsageError(f"Cannot reach the Dask scheduler at {address} within {CONNECT_TIMEOUT_S:g} s ({why}): "
                         "start it ('dask scheduler') or check --scheduler / --scheduler-file.") from None


def finished_futures(client, pending: dict):
    """Yield the futures of ``pending`` as they finish (in any state); looks up every :data:`WAIT_S` seconds,
    so that Ctrl-C and SIGTERM are handled while the cluster computes."""
    from distributed import wait

    while pending:
        try:
            with client.as_current():
                done, _ = wait(list(pending), timeout=WAIT_S, return_when="FIRST_COMPLETED")
        except TimeoutError:
            continue
        yield from list(done)


def future_result(future, what: str):
    """The value of a finished task that returns ``("ok", *values)`` or ``("error", ...)`` (see
    :func:`worker_error`); raises the user's error, or one sentence when the cluster lost the task."""
    if future.status == "error":
        exc = future.exception()
        if type(exc).__name__ == "KilledWorker":
            raise OptbenchError(f"A {what} ({future.key}) was in flight on each of the Dask workers that died "
                                "(as many as the scheduler's allowed-failures, 3 by default): it may be what kills "
                                "them (out of memory?); the chunks finished so far are saved.")
        raise OptbenchError(f"A {what} failed on a Dask worker: {type(exc).__name__}: {exc}")
    if future.status == "cancelled":
        raise OptbenchError(f"A {what} ({future.key}) was cancelled on the Dask cluster (the scheduler restarted?); "
                            "run the same command again to resume.")
    result = future.result()
    if result[0] == "error":
        _, kind, message, user_tb = result
        if kind == "UserCodeError":
            raise UserCodeError(message, user_tb)
        raise UsageError(message)
    return result[1:]


def cancel(client, futures: list) -> None:
    try:
        client.cancel(futures, force=True)
    except Exception:  # noqa: BLE001 - the scheduler is gone: its tasks are too
        pass


def worker_error(exc: OptbenchError) -> tuple:
    """A user's error on a worker as a plain value (it pickles, and the scheduler does not retry it): its
    message names the worker's host."""
    import socket

    where = f" (on the Dask worker at {socket.gethostname()}; the files a sweep names must exist at the same " \
            "path on every worker)" if "file" in str(exc) else f" (on the Dask worker at {socket.gethostname()})"
    return ("error", type(exc).__name__, f"{str(exc).rstrip('.')}{where}.", getattr(exc, "user_traceback", ""))


def compute_item(engine: str, portables: list[tuple], deterministic: bool = False, cwd: str | None = None) -> tuple:
    """One work item on a worker: rebuild its runs, run them on this worker's device, return the chunk's
    tables (``("ok", engine, statuses, steps_table, summary_table)``) or the user's error as a value.
    ``deterministic``: the client runs ``--deterministic`` (optbench.determinism), and so does this task;
    ``cwd``: the client's working directory (see :func:`enter_client_directory`)."""
    from optbench.sweep.parallel import _rebuild
    from optbench.sweep.plan import execute
    from optbench.sweep.tables import trace_tables

    try:
        enter_client_directory(cwd)
        use_one_thread(deterministic)
        group = [_rebuild(p, None) for p in portables]
        check_worker_device(group[0].device)
        trace = execute(engine, group)
        steps_table, summary_table = trace_tables(group, trace, engine)
    except OptbenchError as exc:
        return worker_error(exc)
    return "ok", engine, list(trace.status), steps_table, summary_table


def enter_client_directory(cwd: str | None) -> None:
    """Work in the client's working directory when this worker has it (a shared file system, or the same
    checkout at the same path), so that relative file specs (``my_opt.py:MyAdam``, ``my_task.py:make_task``)
    name the client's files, as in a local run; the spec strings, hence the run ids, stay as given. The
    directory is the process's: tasks of clients working in different directories should use absolute paths."""
    if cwd and os.path.isdir(cwd) and os.getcwd() != cwd:
        os.chdir(cwd)


def use_one_thread(deterministic: bool = False) -> None:
    """One torch thread per task, as in the local worker pool: a worker with ``--nthreads N`` runs N items
    at once on N cores. ``deterministic``: torch's deterministic algorithms too (``--deterministic``)."""
    import torch

    from optbench.determinism import enable_determinism

    if deterministic:
        enable_determinism()
    elif torch.are_deterministic_algorithms_enabled():  # a previous task's sweep was deterministic
        torch.use_deterministic_algorithms(False)
    if torch.get_num_threads() != 1:
        torch.set_num_threads(1)


def check_worker_device(device: str) -> None:
    """``--device cuda`` (or mps) is the worker's own device: one it has, else one sentence."""
    import socket

    import torch

    if device.startswith("cuda"):
        if not torch.cuda.is_available():
            raise UsageError(f"--device {device}: the Dask worker on {socket.gethostname()} has no CUDA device; "
                             "start GPU workers with one device each (CUDA_VISIBLE_DEVICES, docs/distributed.md).")
        index = int(device.split(":", 1)[1]) if ":" in device else 0
        if index >= torch.cuda.device_count():
            raise UsageError(f"--device {device}: the Dask worker on {socket.gethostname()} has "
                             f"{torch.cuda.device_count()} CUDA devices; give --device cuda (each worker's own).")
    elif device == "mps" and not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
        raise UsageError(f"--device mps: the Dask worker on {socket.gethostname()} has no Apple MPS device.")

