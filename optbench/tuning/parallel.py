"""Independent studies in parallel processes (``optbench tune --workers N``).

Each study (problem × optimizer) is tuned whole by one worker process, in an in-memory Optuna study; the
parent process is the only writer of the study of record: it hands each worker the study's existing trials
and appends every round the worker reports to the journal (one write per round), so a kill loses at most
the rounds in flight, as with one process. With a shared ``--storage`` the workers ask and tell in it
directly. Workers take studies from a common queue, so a 1200-trial study does not hold up the others.
Problems and optimizers travel as spec strings (their entries hold lambdas, which do not pickle).
A caller's ``after_study`` runs in the worker as each study ends (the gallery re-runs the study's best
configuration and draws its figure there), so that work too is spread over the workers and overlaps the
other studies' tuning.
"""

from __future__ import annotations

import multiprocessing
import os
import queue as queue_module
import sys
import time
import traceback
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from optbench.engines.recipe import PLAIN
from optbench.errors import OptbenchError
from optbench.tuning.spaces import resolve_space, study_space
from optbench.tuning.study import TuneResult, open_storage, study_name, summarize, tune_one


def _worker(tasks, reports, options: dict[str, Any], after_study=None, parent_pid: int | None = None) -> None:
    import torch

    from optbench.optimizers import get_optimizer
    from optbench.problems import get_problem
    from optbench.sweep.parallel import die_with_parent

    if parent_pid is not None:
        die_with_parent(parent_pid)  # a parent killed outright (SIGKILL) leaves no worker tuning on
    torch.set_num_threads(1)  # one core per worker: the batched engine's tensors are small
    while (task := tasks.get()) is not None:
        index, problem_spec, optimizer_spec, budget, existing = task
        try:
            problem, optimizer = get_problem(problem_spec), get_optimizer(optimizer_spec)
            if "storage" in options:  # a shared storage: ask and tell there, report counts only
                result = tune_one(problem, optimizer, trials=budget,
                                  progress=lambda n, failed, i=index: reports.put(("count", i, (n, failed))),
                                  **options)
            else:
                result = tune_one(problem, optimizer, trials=budget, existing=existing,
                                  persist=lambda finished, i=index: reports.put(("round", i, finished)), **options)
            reports.put(("done", index, None if after_study is None else after_study(problem, optimizer, result)))
        except (OptbenchError, OSError) as exc:  # a user's or the environment's error: raised as such in the parent
            reports.put(("error", index, _portable(exc, traceback.format_exc())))
        except BaseException:  # noqa: BLE001 - reported to the parent, which raises
            reports.put(("error", index, traceback.format_exc()))


def _portable(exc: BaseException, text: str):
    """``exc`` itself where it survives pickling (for the parent to raise), else its traceback's ``text``."""
    import pickle

    try:
        pickle.loads(pickle.dumps(exc))
    except Exception:  # noqa: BLE001 - an exception class with a constructor pickle cannot call
        return text
    return exc


def tune_parallel(pairs: list[tuple[Any, Any]], *, workers: int, protocol, trials: int | None | Sequence[int | None],
                  dims, steps: int, storage: str | None, out_dir: str | Path, progress=None,
                  while_waiting=None, study_done=None, after_study=None, **options: Any) -> list[TuneResult]:
    """Tune every (problem, optimizer) pair with ``workers`` processes; results in the order of ``pairs``.

    ``trials`` is one budget for every pair or a sequence of one per pair; the largest studies are
    queued first, so that a long study does not start last and hold up the end.

    ``options`` are passed on to :func:`tune_one` (batch, seed, engine, dtype, device, pruner, recipe).
    ``progress(n_trials, n_failed)`` is called in this process after every round of any study, and
    ``study_done()`` as each study ends.
    ``after_study(problem, optimizer, result)`` (picklable, e.g. a module-level function or a ``partial`` of
    one) runs in the worker once a study's tuning ends, with the worker's :class:`TuneResult`; what it returns
    is the ``after`` of that study's result here. An ``OptbenchError`` or ``OSError`` in a worker is raised
    here as itself (a full disk stays the environment's error), anything else as an ``OptbenchError``
    carrying the worker's traceback.
    ``while_waiting()`` runs in a background thread of this process once the workers are started (never
    before the fork): the CLI imports the report's libraries there while the workers tune.
    """
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    per_pair = list(trials) if isinstance(trials, Sequence) else [trials] * len(pairs)
    budgets = [protocol.budget(t) for t in per_pair]
    recipe = options.get("recipe", PLAIN)
    dims = resolve_space(dims, recipe.schedule)  # the names tune_one computes in the workers
    common = dict(protocol=protocol, dims=dims, steps=steps, out_dir=str(out_dir), **options)
    t0 = time.perf_counter()

    def named(problem, optimizer):
        """(searched space, study name) of a pair, as tune_one computes them in the workers."""
        space = study_space(optimizer, dims, protocol)
        return space, study_name(problem, optimizer, protocol, steps, space, common.get("dtype", "float64"), recipe)

    records: dict[int, Any] = {}
    if storage is None:
        store, write_round = open_storage(None, out_dir)
    else:
        common["storage"] = storage
    # fork (Linux) skips re-importing torch and optuna in every worker (~2 s each): import the engine (and
    # torch) here, once, before forking; the parent runs no torch op before the fork, so no thread pool
    # exists yet. The parent needs torch anyway for the re-runs that follow.
    import optbench.engines.batched  # noqa: F401

    ctx = multiprocessing.get_context("fork") if sys.platform == "linux" else multiprocessing.get_context("spawn")
    tasks, reports = ctx.Queue(), ctx.Queue()
    for index in sorted(range(len(pairs)), key=lambda i: -budgets[i]):
        problem, optimizer = pairs[index]
        existing = None
        if storage is None:
            records[index] = optuna.create_study(study_name=named(problem, optimizer)[1], storage=store,
                                                 direction="minimize",
                                                 load_if_exists=True)
            existing = records[index].get_trials(deepcopy=False)
            write_round()
        tasks.put((index, problem.label, optimizer.label, budgets[index], existing))
    n_procs = max(1, min(workers, len(pairs)))
    for _ in range(n_procs):
        tasks.put(None)
    procs = [ctx.Process(target=_worker, args=(tasks, reports, common, after_study, os.getpid()), daemon=True)
             for _ in range(n_procs)]
    for p in procs:
        p.start()
    if while_waiting is not None:
        import threading

        threading.Thread(target=while_waiting, name="optbench-warm-up", daemon=True).start()
    evaluated = dict.fromkeys(range(len(pairs)), 0)
    after: dict[int, Any] = {}
    pending = set(range(len(pairs)))
    try:
        while pending:
            try:
                kind, index, payload = reports.get(timeout=1.0)
            except queue_module.Empty:
                if not any(p.is_alive() for p in procs):
                    raise OptbenchError("tuning workers exited without finishing their studies") from None
                continue
            if kind == "round":
                if storage is None:
                    records[index].add_trials(payload)
                    write_round()
                evaluated[index] += len(payload)
                if progress is not None:
                    progress(len(payload), sum(t.state.name == "FAIL" for t in payload))
            elif kind == "count":
                evaluated[index] += payload[0]
                if progress is not None:
                    progress(*payload)
            elif kind == "done":
                after[index] = payload
                pending.discard(index)
                if study_done is not None:
                    study_done()
            else:
                if isinstance(payload, BaseException):
                    raise payload
                problem, optimizer = pairs[index]
                raise OptbenchError(f"tuning {optimizer.label} on {problem.label} failed in a worker:\n{payload}")
    finally:
        for p in procs:
            if p.is_alive() and pending:
                p.terminate()
            p.join(timeout=5)
    results = []
    wall = time.perf_counter() - t0
    for index, (problem, optimizer) in enumerate(pairs):
        space, name = named(problem, optimizer)
        study = records.get(index)
        if study is None:  # a --storage study: this process did not open it
            assert storage is not None  # without --storage every study is in records
            study = optuna.load_study(study_name=name, storage=_url(storage))
        results.append(summarize(study.get_trials(deepcopy=False), problem, optimizer, protocol, budgets[index], space,
                                 name, evaluated[index], wall, recipe.schedule))
        results[-1].after = after.get(index)
    return results


def _url(storage: str):
    store, _ = open_storage(storage, ".")
    return store
