"""The ask/tell loop of one tuning study (one problem × one optimizer config).

Each round asks Optuna for up to ``batch`` trials (``study.ask()`` repeatedly; the ``tpe`` protocol's
sampler sets the round size, a round of its own for the random startup trials, and keeps the round's
trials apart), evaluates them together — batched where :func:`optbench.engines.capabilities.choose_engine`
picks the batched engine (as ``optbench run`` would), else one loop-engine run per trial — and tells
the results. With a schedule (``schedule=``) every trial follows it, with the trial's own values of any
searched schedule parameters (``schedule.KEY`` dimensions, see ``spaces``): the batched engine takes one
schedule per configuration. Every trial runs from the same start with the tuning seed ``TUNE_SEED`` (the
re-run that produces the verdict uses fresh seeds 0..N-1). The objective is the final loss; the losses at about
``REPORTS`` recorded steps are reported as intermediate values when a pruner is chosen (``--pruner
median``), which marks trials whose curve falls behind the median as pruned. The decision is taken after
the trial's run (a batch advances as one computation, so stopping one member saves nothing): pruning
here filters the record, it does not save compute. Runs that diverge (or escape an unbounded problem) are told as
failed, with their status in the trial's user attributes: they are part of the budget, not crashes.

Budget across processes (:mod:`optbench.tuning.budget`): the budget is ``budget`` slots claimed in the
storage. In a shared storage each round asks fresh trials, whose storage-assigned numbers are their slots,
plus re-issued slots (a crashed process's abandoned trials); a trial that, read back, is not the holder of
a slot below the budget is closed at once as failed with the user attribute ``released`` (``over_budget``
or ``duplicate``) and never evaluated, so the trials evaluated over all processes number exactly the
budget. A process whose last slots other processes are still evaluating waits for them (or for their
lease to expire), so its verdict reads the finished study. The samplers draw from each trial's slot,
not from a per-process stream (:class:`Protocol`). A study is read from its first ``budget``
trials by slot (:func:`summarize`, and the in-memory copy the default storage works on), however many
more its storage holds.
"""

from __future__ import annotations

import functools
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from optbench.engines.recipe import PLAIN, Recipe
from optbench.errors import UsageError
from optbench.problems.base import Problem
from optbench.tuning.budget import (
    OWNER,
    POLL_S,
    RELEASED,
    SLOT,
    Lease,
    close,
    holders,
    is_closed,
    is_evaluated,
    next_fresh_slot,
    slot_map,
    used_copies,
    used_trials,
)
from optbench.tuning.protocols import PRUNERS, Protocol
from optbench.tuning.spaces import (
    SCHEDULE_PREFIX,
    Dim,
    apply,
    check_schedule,
    resolve_space,
    schedule_for,
    study_space,
    suggest,
)

TUNE_SEED = 10_000  # start point / noise stream of every tuning trial; verdict re-runs use seeds 0..N-1
REPORTS = 10  # intermediate values reported per trial
DEFAULT_BATCH = 64  # trials asked for and evaluated together


@dataclass
class TuneResult:
    problem: str
    optimizer: str  # label of the optimizer config that was tuned
    study_name: str
    protocol: str
    budget: int
    dims: list[str]
    best_params: dict[str, float] | None
    best_value: float | None
    best_config: Any  # OptimizerConfig with the best values applied (None if every trial failed)
    states: dict[str, int] = field(default_factory=dict)  # used trials per state (complete, fail, pruned)
    evaluated_here: int = 0  # trials this process evaluated
    wall_time_s: float = 0.0
    schedule: str = "constant"  # label of the schedule every trial followed (before searched values)
    best_schedule: str | None = None  # label of the best trial's schedule, searched values set
    trials_used: int = 0  # evaluated trials the result is read from: the first `budget` by slot
    trials_in_storage: int = 0  # evaluated trials the study holds (more than used after a larger --trials)
    not_used: dict[str, int] = field(default_factory=dict)  # the study's other trials, by why they are not used
    after: Any = None  # what tune_parallel's after_study returned for this study in its worker (else None)

    def record(self) -> dict[str, Any]:
        """What the results manifest keeps about this study."""
        return {"problem": self.problem, "optimizer": self.optimizer, "study": self.study_name,
                "protocol": self.protocol, "budget": self.budget, "space": self.dims,
                "best_params": self.best_params, "best_value": self.best_value, "trials": self.states,
                "trials_used": self.trials_used, "trials_in_storage": self.trials_in_storage,
                "trials_not_used": self.not_used, "trials_evaluated_here": self.evaluated_here,
                "best_label": self.best_config.label if self.best_config is not None else None,
                "schedule": self.schedule, "best_schedule": self.best_schedule}


def open_storage(storage: str | None, out_dir: str | Path):
    """Returns ``(storage, flush)``. A ``--storage`` URL (postgresql://, mysql://, sqlite:///) or journal
    file path is shared safely by any number of processes; by default the storage is a journal file
    ``tuning.journal`` in the results directory, written once per round by this process alone (see
    :func:`round_journal`). ``flush()`` writes what the round produced."""
    from optuna.storages import JournalStorage
    from optuna.storages.journal import JournalFileBackend

    if storage and "://" in storage:
        return rdb_storage(storage), lambda: None
    if storage:
        try:
            Path(storage).parent.mkdir(parents=True, exist_ok=True)
            return JournalStorage(JournalFileBackend(str(storage))), lambda: None
        except OSError as exc:
            raise UsageError(f"--storage {storage}: cannot open this journal file ({exc.strerror or exc}); "
                             "give a writable path or a postgresql://… URL.") from None
    path = Path(out_dir) / "tuning.journal"
    path.parent.mkdir(parents=True, exist_ok=True)
    backend = round_journal(JournalFileBackend(str(path)))
    return JournalStorage(backend), backend.flush


def rdb_storage(url: str, attempts: int = 6):
    """Optuna's RDB storage for ``url``. Processes that start together race to create Optuna's tables
    (PostgreSQL then reports a duplicate type or key); the loser waits and opens the finished schema."""
    import time

    from optuna.storages import RDBStorage
    from sqlalchemy.exc import ArgumentError, IntegrityError, OperationalError, ProgrammingError

    shown = _without_password(url)
    if url.startswith("postgresql://"):
        import importlib.util

        if importlib.util.find_spec("psycopg") is None and importlib.util.find_spec("psycopg2") is not None:
            url = "postgresql+psycopg2://" + url[len("postgresql://"):]  # newer SQLAlchemy defaults to psycopg 3
    for attempt in range(attempts):
        try:
            return RDBStorage(url)
        except ImportError as exc:
            what = f"the Python module {exc.name!r} it needs" if exc.name else "its database driver"
            raise UsageError(f"--storage {shown}: {what} is not installed (for PostgreSQL: "
                             "pip install 'optbench[postgres]', which installs psycopg2-binary).") from None
        except (ArgumentError, ValueError) as exc:
            raise UsageError(f"--storage {shown} is not a database URL SQLAlchemy understands "
                             f"({_hide(str(exc), url)}); expected e.g. postgresql://USER:PASS@HOST/DB.") from None
        except OperationalError as exc:
            if attempt == attempts - 1:
                reason = _hide(str(exc.orig or exc).strip().splitlines()[0], url)
                raise UsageError(f"--storage {shown}: cannot open the database: {reason}") from None
            time.sleep(0.25 * (attempt + 1))
        except (IntegrityError, ProgrammingError):
            if attempt == attempts - 1:
                raise
            time.sleep(0.25 * (attempt + 1))
    raise AssertionError("unreachable")


def _without_password(url: str) -> str:
    """``url`` with its password replaced by ``***`` (for messages), as SQLAlchemy parses it."""
    import re

    parsed = _parsed_url(url)
    if parsed is None:  # not parsable: mask everything between '://user:' and the last '@'
        return re.sub(r"(://[^:/@]*:).*@", r"\1***@", url)
    return parsed.render_as_string(hide_password=True)


def _hide(text: str, url: str) -> str:
    """``text`` (a driver's message) with the URL's password, if any, replaced by ``***``."""
    parsed = _parsed_url(url)
    password = parsed.password if parsed is not None else None
    return text.replace(str(password), "***") if password else text


def _parsed_url(url: str):
    """SQLAlchemy's parse of ``url``, or None when it cannot parse it."""
    try:
        from sqlalchemy.engine import make_url

        return make_url(url)
    except Exception:
        return None


def round_journal(inner):
    """A journal backend that keeps this process's log entries in memory and appends them to ``inner``
    in one write (one fsync) per round instead of one per storage operation: a 600-trial study goes from
    thousands of fsyncs to ten. Only for a journal no other process writes meanwhile (the default file
    in a results directory); a kill -9 loses at most the round in flight."""
    from optuna.storages.journal import BaseJournalBackend

    class RoundJournal(BaseJournalBackend):
        def __init__(self):
            self.buffer: list = []
            self.inner_count = sum(1 for _ in inner.read_logs(0))

        def read_logs(self, log_number_from: int):
            if log_number_from < self.inner_count:
                return [*inner.read_logs(log_number_from), *self.buffer]
            return self.buffer[log_number_from - self.inner_count:]

        def append_logs(self, logs) -> None:
            self.buffer.extend(logs)

        def flush(self) -> None:
            if self.buffer:
                inner.append_logs(self.buffer)
                self.inner_count += len(self.buffer)
                self.buffer = []

    return RoundJournal()


def study_name(problem: Problem, optimizer, protocol: Protocol, steps: int, dims: list[Dim], dtype: str,
               recipe: Recipe = PLAIN) -> str:
    """Everything that defines the search except its budget (a larger --trials continues the study).
    The recipe's schedule enters with every parameter it does not search (``cosine`` and
    ``cosine(min_lr=0.0)`` are one study; searched ones are in the space); without one (or constant) the name
    is as it always was."""
    from optbench.schedules import get_schedule
    from optbench.spec import format_spec

    space = ",".join(str(d) for d in dims)
    clip = f"|clip_norm={recipe.clip_norm:g}" if recipe.clip_norm else ""
    clip += (f"|clip_value={recipe.clip_value:g}" if recipe.clip_value else "") + (
        f"|label_smoothing={recipe.label_smoothing:g}" if recipe.label_smoothing else "")
    sched = get_schedule(recipe.schedule)
    searched = {d.name.removeprefix(SCHEDULE_PREFIX) for d in dims if d.name.startswith(SCHEDULE_PREFIX)}
    fixed = format_spec(sched.name, {k: v for k, v in sched.params.items() if k not in searched})
    sched_part = "" if sched.is_constant else f"|schedule={fixed}"
    return (f"optbench|{problem.label}|{optimizer.label}|{protocol.name}|steps={steps}|{space}|{dtype}{clip}"
            f"{sched_part}")


def _evaluate(problem: Problem, configs: list, steps: int, *, engine: str, dtype: str, device: str,
              recipe: Recipe = PLAIN, schedules: list[str] | None = None):
    """Run the configs with ``recipe`` (``schedules[k]``: config k's schedule label in place of the recipe's);
    returns (recorded steps [R], losses [R, K], final losses [K], statuses [K]).

    ``engine`` is :func:`optbench.engines.capabilities.choose_engine`'s decision for the study (as for ``run``);
    :func:`optbench.sweep.plan.plan_round` makes the round's work items and :func:`~optbench.sweep.plan.execute`
    runs each on its engine without cost metrics: batched rounds as one group (each trial its own schedule),
    analytic loop rounds side by side or sharing one object (the ``trials`` engine), the rest one run each."""
    from optbench.engines.recorder import merge_traces, select_run
    from optbench.sweep.plan import execute, plan_round
    from optbench.sweep.spec import Run

    record_every = max(1, steps // REPORTS)
    labels = schedules or [recipe.schedule] * len(configs)
    runs = [Run(problem, c, TUNE_SEED, steps, record_every, dtype, device, recipe.replace(schedule=s))
            for c, s in zip(configs, labels)]
    items = plan_round(runs, engine)
    if len(items) == 1:
        trace = execute(items[0][0], runs, measure_cost=False)
    else:
        parts: dict[int, Any] = {}
        for name, indices in items:
            part = execute(name, [runs[i] for i in indices], measure_cost=False)
            parts.update({i: select_run(part, j) for j, i in enumerate(indices)})
        trace = merge_traces([parts[i] for i in range(len(runs))])
    return trace.steps, trace.loss, trace.end_loss, trace.status


def check_tuning(optimizer, dims, protocol, *, engine: str = "auto", pruner: str = "none"):
    """The searched space of ``optimizer`` (``dims`` resolved against the schedule), after the checks that
    need no study: something left to tune, the engine, the pruner. Commands call it for every optimizer
    before printing or creating anything."""
    from optbench.engines.batched import supports_batched

    PRUNERS.get(pruner)  # an unknown name raises, with the valid ones
    space = study_space(optimizer, dims, protocol)
    if not space:
        raise UsageError(f"Nothing to tune for {optimizer.label!r}: its spec fixes every searched "
                         "hyperparameter; drop lr= from the spec or add keys with --space.")
    if engine == "batched" and not supports_batched(optimizer):
        raise UsageError(f"The batched engine does not support {optimizer.label!r}; use --engine loop or auto.")
    return space


def tune_one(problem, optimizer, *, protocol: Protocol, trials: int | None = None, dims: dict[str, Dim],
             steps: int = 200, storage=None, out_dir: str | Path = ".", batch: int = DEFAULT_BATCH,
             seed: int = 0, engine: str = "auto", dtype: str = "float64", device: str = "cpu",
             pruner: str = "none", recipe: Recipe = PLAIN, progress=None,
             persist=None, existing=None, journal=None, loop_batch: int = 1) -> TuneResult:
    """Tune ``optimizer`` on ``problem`` until the study holds ``budget`` evaluated trials.

    ``recipe`` is every trial's training recipe (clipping, label smoothing); its schedule (a spec) is every
    trial's lr schedule, and ``dims`` may search its parameters
    (``schedule.KEY``, see :mod:`optbench.tuning.spaces`), and each trial then has its own schedule.

    Where the trials live:

    - ``storage`` given (a shared URL or journal path): the study is asked and told in that storage,
      so any number of processes can work on it (see the module docstring and :mod:`optbench.tuning.budget`).
    - else, by default: the live study is an Optuna ``InMemoryStorage`` copy of the used trials (the first
      ``budget`` by slot) of the study of record (``OUT/tuning.journal``); each round's finished trials are
      appended to the journal in one write.
      A process killed mid-round loses that round only, and a re-run resumes from the journal.
    - ``persist`` given (a callable taking a round's finished ``FrozenTrial`` s): as by default, but the
      live study starts from ``existing`` trials and each round goes to ``persist`` instead of a file
      (``optbench.tuning.parallel`` uses this: worker processes tune, the parent writes the journal).

    ``journal``: ``open_storage(None, out_dir)`` opened once by a caller that tunes several studies into one
    directory in turn; opening the journal replays every study already in it, so opening it per study
    would cost time quadratic in the number of studies.

    ``loop_batch``: trials asked for together when the loop engine evaluates them (analytic problems: run side
    by side, :mod:`optbench.engines.trials`); 1 (the default): one ask/tell per trial.
    """
    import optuna
    from optuna.exceptions import UpdateFinishedTrialError
    from optuna.trial import TrialState

    from optbench.engines.capabilities import choose_engine
    from optbench.schedules import get_schedule

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    t0 = time.perf_counter()
    sched = get_schedule(recipe.schedule)
    recipe = recipe.replace(schedule=sched.label)
    dims = resolve_space(dims, sched)
    space = check_tuning(optimizer, dims, protocol, engine=engine, pruner=pruner)
    check_schedule([optimizer], sched, dims, steps, protocol)
    budget = protocol.budget(trials)
    batched = choose_engine(engine, problem, optimizer, recipe, device) == "batched" and batch > 1
    round_engine = "batched" if batched else "loop"
    name = study_name(problem, optimizer, protocol, steps, space, dtype, recipe)
    sampler = protocol.make_sampler(seed, space)
    make_pruner = protocol.make_pruner if pruner == "none" else PRUNERS.get(pruner)

    def new_study(store):
        return optuna.create_study(
            study_name=name, storage=store, sampler=sampler, direction="minimize", load_if_exists=True,
            pruner=make_pruner())

    shared = storage is not None and persist is None
    record = None
    if shared:
        store, flush = open_storage(storage, out_dir)
        study = new_study(store)
    else:
        if persist is None:
            store, write_round = journal or open_storage(None, out_dir)
            record = new_study(store)
            existing = record.get_trials(deepcopy=False)

            def persist(finished):
                record.add_trials(finished)
                write_round()
        study = new_study(optuna.storages.InMemoryStorage())
        # only the trials the budget uses: the sampler never sees trials past it (a larger --trials before)
        study.add_trials(used_copies(existing or [], budget))
        flush = lambda: None  # noqa: E731
    lease = Lease(study) if shared else None
    evaluated, in_flight = 0, []
    try:
        while True:
            trials = study.get_trials(deepcopy=False)
            if lease is not None and lease.abandon_stale(trials):
                trials = study.get_trials(deepcopy=False)
            held = holders(trials, budget)
            waiting = [s for s, t in held.items() if t.state == TrialState.WAITING]
            free = [s for s in range(budget) if s not in held]
            if not free and not waiting:
                if any(t.state == TrialState.RUNNING for t in held.values()):
                    time.sleep(POLL_S)  # other processes' last trials: the study is finished when they are
                    continue
                break
            k = min(batch if batched else loop_batch, len(free) + len(waiting))
            if hasattr(sampler, "start_round"):
                k = max(1, sampler.next_round_size(study, k))
                sampler.start_round(k)
            # slots whose number is taken (a closed trial's) are re-issued; in a shared storage the others
            # are fresh trials, whose storage-assigned numbers are their slots
            reissue = [s for s in free if not shared or s < next_fresh_slot(trials)]
            for s in reissue[:max(0, k - len(waiting))]:
                study.enqueue_trial({}, user_attrs={SLOT: s})
            asked = in_flight = [_ask(study, shared) for _ in range(k)]
            if lease is not None:
                for trial in asked:
                    trial.set_user_attr(OWNER, lease.token)
            round_trials = study.get_trials(deepcopy=False)
            held, slots = holders(round_trials, budget), slot_map(round_trials)
            live = []
            for trial in asked:
                slot = slots[trial.number]
                if slot in held and held[slot].number == trial.number:
                    live.append(trial)
                else:  # another process took the slot first, or it is past the budget: never evaluated
                    trial.set_user_attr(RELEASED, "over_budget" if slot >= budget else "duplicate")
                    tell(study, trial, state=TrialState.FAIL)
            if not live:
                flush()
                continue
            values = [{d.name: suggest(t, d) for d in space} for t in live]
            configs = [apply(optimizer, v) for v in values]
            schedules = None if sched.is_constant else [schedule_for(sched, v).label for v in values]
            steps_rec, losses, finals, statuses = _evaluate(problem, configs, steps, engine=round_engine, dtype=dtype,
                                                           device=device, recipe=recipe, schedules=schedules)
            failed = told = 0
            for k, trial in enumerate(live):
                try:
                    failed += _tell(study, trial, k, steps_rec, losses, finals, statuses, pruner)
                    told += 1
                except (UpdateFinishedTrialError, ValueError):
                    if not is_closed(study._storage.get_trial(trial._trial_id)):
                        raise
                    continue  # abandoned meanwhile (this process stalled past its lease): its slot is re-issued
            evaluated += told
            if shared:
                flush()
            else:
                numbers = {t.number for t in live}
                persist([t for t in study.get_trials(deepcopy=False) if t.number in numbers])
            in_flight = []  # told: nothing of this round is in flight any more
            if progress is not None:
                progress(told, failed)
    except BaseException:
        if lease is not None:  # Ctrl-C or an error mid-round: hand the round's slots back at once
            for trial in in_flight:  # (close skips those already told)
                try:
                    close(study, trial._trial_id, "abandoned")
                except Exception:  # noqa: BLE001 - the storage is unreachable: the lease expires instead
                    break
        raise
    finally:
        if lease is not None:
            lease.stop()
    # the study of record holds every trial (the live in-memory copy only the used ones)
    return summarize((record or study).get_trials(deepcopy=False), problem, optimizer, protocol, budget, space, name,
                     evaluated, time.perf_counter() - t0, sched)


def _ask(study, shared: bool, attempts: int = 5):
    """``study.ask()``; in a shared storage, retried when the database was busy (SQLite refuses a second
    writer at once instead of waiting when two processes take the same re-issued slot)."""
    from optuna.exceptions import StorageInternalError

    for attempt in range(attempts):
        try:
            return study.ask()
        except StorageInternalError:
            if not shared or attempt == attempts - 1:
                raise
            time.sleep(0.1 * (attempt + 1))
    raise AssertionError("unreachable")


def _tell(study, trial, k: int, steps_rec, losses, finals, statuses, pruner: str) -> bool:
    """Tell trial ``k`` of a round its result; True when it failed (diverged, escaped)."""
    from optuna.trial import TrialState

    if statuses[k] != "done" or not math.isfinite(float(finals[k])):
        trial.set_user_attr("status", statuses[k])
        tell(study, trial, state=TrialState.FAIL)
        return True
    for r, step in enumerate(steps_rec[:-1] if pruner != "none" else ()):
        value = float(losses[r, k])
        if math.isfinite(value):
            trial.report(value, int(step))
            if trial.should_prune():
                tell(study, trial, state=TrialState.PRUNED)
                return False
    tell(study, trial, float(finals[k]))
    return False


def tell(study, trial, value: float | None = None, state=None) -> None:
    """``study.tell(trial, value, state=state)`` without the deep copy of the told trial that ``Study.tell``
    returns (a tenth of a gallery study's time, thrown away): its own first step, Optuna's
    ``_tell_with_warning``, where this Optuna has it with that signature, else ``Study.tell`` itself."""
    told = _optuna_tell()
    if told is None:
        study.tell(trial, value, state=state)
    else:
        told(study=study, trial=trial, value_or_values=value, state=state, skip_if_finished=False)


@functools.cache
def _optuna_tell():
    import inspect

    try:
        from optuna.study._tell import _tell_with_warning
    except ImportError:
        return None
    wanted = {"study", "trial", "value_or_values", "state", "skip_if_finished"}
    return _tell_with_warning if wanted <= set(inspect.signature(_tell_with_warning).parameters) else None


def summarize(all_trials, problem, optimizer, protocol: Protocol, budget: int, space: list[Dim], name: str,
              evaluated: int, wall_time_s: float, schedule=None) -> TuneResult:
    """The :class:`TuneResult` of a study's trials (``schedule``: the study's schedule spec), read from the
    trials the budget uses only (:func:`optbench.tuning.budget.used_trials`: the first ``budget`` by slot)."""
    from optuna.trial import TrialState

    from optbench.schedules import get_schedule

    used = used_trials(all_trials, budget)
    states: dict[str, int] = {}
    for t in used:
        states[t.state.name.lower()] = states.get(t.state.name.lower(), 0) + 1
    not_used: dict[str, int] = {}
    numbers = {t.number for t in used}
    for t in all_trials:
        if t.number in numbers:
            continue
        key = ("beyond_budget" if is_evaluated(t) else str(t.user_attrs.get(RELEASED, "over_budget"))
               if is_closed(t) else t.state.name.lower())
        not_used[key] = not_used.get(key, 0) + 1
    complete = [t for t in used if t.state == TrialState.COMPLETE]
    best = min(complete, key=lambda t: t.value) if complete else None
    best_params = dict(best.params) if best else None
    sched = get_schedule(schedule)
    return TuneResult(problem.label, optimizer.label, name, protocol.name, budget, [str(d) for d in space],
                      best_params, best.value if best else None,
                      apply(optimizer, best_params) if best_params is not None else None, states, evaluated,
                      wall_time_s,
                      sched.label, schedule_for(sched, best.params).label if best else None,
                      trials_used=len(used), trials_in_storage=sum(map(is_evaluated, all_trials)),
                      not_used=not_used)
