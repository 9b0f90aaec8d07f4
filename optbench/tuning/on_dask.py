"""Tuning on a Dask cluster (``optbench tune --executor dask``): the cluster's workers evaluate trials of
each study directly in one shared Optuna storage.

Every study (problem × optimizer) gets up to one task per worker thread, all asking and telling in the same
study: the trial-slot budget of :mod:`optbench.tuning.budget` makes the evaluated trials exactly the budget
however many tasks share a study, and the leases close the trials of a worker that dies (its slots are
re-issued to the tasks still running, or to the next command). A task that starts after its study is full
returns at once.

The storage is the one ``--storage`` names (PostgreSQL, MySQL, ``sqlite:///FILE`` or a journal file), or by
default the journal ``OUT/tuning.journal``, written by the workers themselves. A file storage must be on a file
system every worker mounts at the same path: before any trial, and again in every task, a probe file written
next to it must be visible, or the command stops with one sentence (a local sqlite or journal file that workers
on other hosts cannot reach would otherwise split the study in two). Relative paths are made absolute here.
"""

from __future__ import annotations

import math
import os
import queue
import time
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from optbench.engines.recipe import PLAIN
from optbench.errors import OptbenchError, UsageError
from optbench.tuning.spaces import resolve_space, study_space
from optbench.tuning.study import TuneResult, open_storage, study_name, summarize

SQLITE = "sqlite:///"


def shared_storage(storage: str | None, out_dir: str | Path) -> tuple[str, Path | None]:
    """(the storage the workers open, the file it lives in or None for a database server): relative paths made
    absolute; the default is the journal ``OUT/tuning.journal``."""
    if storage is None:
        path = (Path(out_dir) / "tuning.journal").resolve()
        return str(path), path
    if storage.startswith(SQLITE):
        name = storage[len(SQLITE):]
        if name in ("", ":memory:"):
            raise UsageError(f"--storage {storage} is in memory: workers cannot share it; give a file or a "
                             "postgresql:// URL.")
        path = Path(name).expanduser().resolve()
        return SQLITE + str(path), path
    if "://" in storage:
        return storage, None
    path = Path(storage).expanduser().resolve()
    return str(path), path


def write_probe(path: Path) -> tuple[str, str]:
    """A probe file beside the storage file ``path``: (its path, its token)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    token = uuid.uuid4().hex
    probe = path.parent / f".optbench-probe-{token[:16]}"
    probe.write_text(token)
    return str(probe), token


def probe_error(probe: str | None, token: str, shown: str) -> str | None:
    """On a worker: None when it sees the probe file the client wrote, else the one sentence to report."""
    import socket

    if probe is None:
        return None
    try:
        if Path(probe).read_text() == token:
            return None
    except OSError:
        pass
    return (f"--storage {shown}: the Dask worker on {socket.gethostname()} cannot reach {Path(probe).parent} (a "
            "file on the client's machine, such as a local sqlite or journal file, is invisible to workers on other "
            "hosts); put the storage on a file system every worker mounts at the same path, or use --storage "
            "postgresql://USER@HOST/DB.")


def tune_task(problem_label: str, optimizer_label: str, budget: int, options: dict[str, Any], probe: str | None,
              token: str, shown: str, topic: str, cwd: str | None = None) -> tuple:
    """One worker's share of a study: ``tune_one`` in the shared storage until the study holds its budget.
    Returns ``("ok",)`` or the user's error as a value (:func:`optbench.executors.dask.worker_error`)."""
    from optbench.executors.dask import enter_client_directory, use_one_thread, worker_error
    from optbench.optimizers import get_optimizer
    from optbench.problems import get_problem
    from optbench.tuning.study import tune_one

    message = probe_error(probe, token, shown)
    if message is not None:
        return "error", "UsageError", message, ""

    def report(n: int, failed: int) -> None:
        from distributed import get_worker

        try:
            get_worker().log_event(topic, (problem_label, optimizer_label, n, failed))
        except Exception:  # noqa: BLE001 - progress only
            pass

    try:
        enter_client_directory(cwd)
        use_one_thread()
        tune_one(get_problem(problem_label), get_optimizer(optimizer_label), trials=budget, progress=report,
                 **options)
    except OptbenchError as exc:
        return worker_error(exc)
    return ("ok",)


def tune_on_dask(pairs: list[tuple[Any, Any]], *, executor, protocol, trials: int | None | Sequence[int | None],
                 dims, steps: int, storage: str | None, out_dir: str | Path, progress=None, study_done=None,
                 **options: Any) -> list[TuneResult]:
    """Tune every (problem, optimizer) pair on the executor's Dask cluster; results in the order of ``pairs``.
    Arguments as :func:`optbench.tuning.parallel.tune_parallel` (``options`` go to ``tune_one``)."""
    import optuna

    from optbench.executors.dask import cancel, finished_futures, future_result

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    per_pair = list(trials) if isinstance(trials, Sequence) else [trials] * len(pairs)
    budgets = [protocol.budget(t) for t in per_pair]
    recipe = options.get("recipe", PLAIN)
    dims = resolve_space(dims, recipe.schedule)  # the names tune_one computes in the workers
    url, path = shared_storage(storage, out_dir)
    shown = storage or str(Path(out_dir) / "tuning.journal")
    open_storage(url, out_dir)  # a bad URL or an unopenable file fails here, in one sentence, before any task
    client = executor.client
    probe, token = write_probe(path) if path is not None else (None, "")
    t0 = time.perf_counter()
    topic = f"optbench-tune-{uuid.uuid4().hex[:8]}"
    events: queue.SimpleQueue = queue.SimpleQueue()
    pending: dict = {}
    try:
        if probe is not None:  # the workers connected now see the storage's folder, or nothing starts
            for message in client.run(probe_error, probe, token, shown).values():
                if message is not None:
                    raise UsageError(message)
        client.subscribe_topic(topic, lambda event: events.put(event[1]))
        common = dict(protocol=protocol, dims=dims, steps=steps, out_dir=str(out_dir), storage=url, **options)
        threads = max(1, sum(client.nthreads().values()))
        per_round = max(1, options.get("batch") or 1)
        order = sorted(range(len(pairs)), key=lambda i: -budgets[i])  # the largest studies first
        tasks_left = dict.fromkeys(range(len(pairs)), 0)
        for replica in range(threads):
            for index in order:
                if replica < max(1, math.ceil(budgets[index] / per_round)):
                    problem, optimizer = pairs[index]
                    future = client.submit(tune_task, problem.label, optimizer.label, budgets[index], common, probe,
                                           token, shown, topic, os.getcwd(), priority=-replica, pure=False,
                                           key=f"optbench-tune-{index}-{replica}-{topic[-8:]}")
                    pending[future] = index
                    tasks_left[index] += 1
        evaluated = dict.fromkeys(range(len(pairs)), 0)
        label_index = {(p.label, o.label): i for i, (p, o) in enumerate(pairs)}

        def drain() -> None:
            while not events.empty():
                problem_label, optimizer_label, n, failed = events.get()
                evaluated[label_index[(problem_label, optimizer_label)]] += n
                if progress is not None:
                    progress(n, failed)

        for future in finished_futures(client, pending):
            drain()
            index = pending.pop(future)
            future_result(future, "tuning task")
            tasks_left[index] -= 1
            if not tasks_left[index] and study_done is not None:
                study_done()
        time.sleep(0.1)  # the last progress events
        drain()
    finally:
        if pending:
            cancel(client, list(pending))
        try:
            client.unsubscribe_topic(topic)
        except Exception:  # noqa: BLE001 - the scheduler is gone
            pass
        if probe is not None:
            Path(probe).unlink(missing_ok=True)
    store, _ = open_storage(url, out_dir)
    wall = time.perf_counter() - t0
    results = []
    for index, (problem, optimizer) in enumerate(pairs):
        space = study_space(optimizer, dims, protocol)
        name = study_name(problem, optimizer, protocol, steps, space, options.get("dtype", "float64"), recipe)
        study = optuna.load_study(study_name=name, storage=store)
        results.append(summarize(study.get_trials(deepcopy=False), problem, optimizer, protocol, budgets[index], space,
                                 name, evaluated[index], wall, recipe.schedule))
    return results
