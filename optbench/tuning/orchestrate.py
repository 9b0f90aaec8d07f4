"""Tuning every optimizer with the same trial budget, then re-running the best configurations over fresh seeds:
the orchestration behind ``optbench tune`` and :func:`optbench.api.tune`, printing nothing.

Order of work: validate everything (specs, protocol, space, schedule, budgets, recipe, the results directory)
before any trial; one study per (problem, optimizer) (``study.tune_one``, or ``parallel.tune_parallel`` with
``workers > 1``), sharing one journal under ``out`` unless a storage is given; each problem's best
configurations re-run as sweeps (grouped by their best schedule) into ``out``; last, a ``"tuning"`` record in
the manifest (protocol, budgets, studies), which the report's "Tuning protocol and budget" section reads.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from optbench.errors import UsageError

TRIALS_RULE = ("a study's results are read from its first N trials by budget slot (trial number), N = its "
               "budget; trials beyond them in the storage are not used")
# what a suite's [tune] table can set; the value when neither the caller nor the table sets it
DEFAULTS: dict[str, Any] = {"trials": None, "protocol": "tpe", "space": None, "schedule": None, "steps": 200,
                            "batch": 64, "workers": 1, "storage": None, "seeds": 5}


@dataclass
class TuneOutcome:
    """What a tuning run did: one :class:`~optbench.tuning.study.TuneResult` per study, the re-runs' sweep
    outcomes, and the manifest record it wrote. ``summary`` reads the re-runs' comparison table back."""

    out_dir: Path
    results: list[Any]  # TuneResult, one per (problem, optimizer)
    protocol: Any  # Protocol
    budgets: dict[str, int]  # {optimizer label: trial budget}
    budget_text: str  # '50 trials each', or the budget of each optimizer when they differ
    used_text: str  # the budget text, or the trials each verdict is really read from
    seeds: list[int]  # the re-runs' seeds
    tuning_wall_time_s: float
    wall_time_s: float
    reruns: list[Any] = field(default_factory=list)  # SweepOutcome of each re-run sweep
    record: dict[str, Any] = field(default_factory=dict)  # the manifest's "tuning" record

    @property
    def best(self) -> dict[tuple[str, str], dict[str, float] | None]:
        """{(problem, optimizer): best hyperparameters} (None where every trial failed)."""
        return {(r.problem, r.optimizer): r.best_params for r in self.results}

    @property
    def summary(self):
        """The re-runs' comparison table (every lr: one per tuned configuration), as ``optbench tune`` prints."""
        import pandas as pd

        from optbench.analysis.summary import aggregate
        from optbench.results import load_summary

        if not self.reruns:
            return pd.DataFrame()
        return aggregate(load_summary(self.out_dir), best_lr_only=False)


def with_suite(suite: str | Path | None, given: dict[str, Any]) -> dict[str, Any]:
    """The tuning settings: ``given`` (None: not given) over the suite's ``[tune]`` table over DEFAULTS.
    ``problems`` / ``optimizers`` come from the table when not given, as comma-separated spec text."""
    conf: dict[str, Any] = {}
    if suite is not None:
        from optbench.suite import load_suite

        conf = dict(load_suite(suite).tune)
        for key in ("problems", "optimizers"):
            if key in conf:
                conf[key] = ",".join(conf[key])
        if "trials" in conf:
            conf["trials"] = str(conf["trials"])
    out = {}
    for key in ("problems", "optimizers", *DEFAULTS):
        value = given.get(key)
        out[key] = value if value is not None else conf.get(key, DEFAULTS.get(key))
    return out


def run_tuning(problems, optimizers, *, trials: str | int | None = None, protocol: str = "tpe",
               space: str | None = None, schedule: str | None = None, seeds: int | list[int] = 5, steps: int = 200,
               batch: int = 64, engine: str = "auto", dtype: str = "float64", pruner: str = "none",
               storage: str | None = None, clip_norm: float | None = None, clip_value: float | None = None,
               label_smoothing: float = 0.0, workers: int = 1, sampler_seed: int = 0,
               out: str | Path | None = None, force: bool = False, command: str = "",
               progress_factory: Callable[[int, int], Any] | None = None, rerun_progress=None,
               while_waiting: Callable[[], None] | None = None, executor=None) -> TuneOutcome:
    """Tune each optimizer on each problem with equal budgets, re-run the best configurations over ``seeds``
    (a count: 0..N-1, or a list) and record the tuning in ``out``'s manifest; see the module docstring.

    ``progress_factory(total_trials, studies)`` may return an object with ``print(text)``, ``begin_study(i, n)``,
    ``advance(n, failed=0)``, ``study_done()`` and ``close()``; ``rerun_progress`` is the re-runs' run_sweep
    progress factory (with ``begin_sweep(i, n)`` if it has one). ``while_waiting`` runs while worker processes
    tune (``workers > 1``)."""
    from optbench.engines.recipe import Recipe
    from optbench.formatting import plural
    from optbench.resolve import resolve_optimizers, resolve_problems
    from optbench.results import check_writable, update_manifest
    from optbench.runner import run_sweep
    from optbench.sweep.spec import DTYPES, ENGINES, Sweep
    from optbench.tuning import get_protocol, parse_space, tune_one
    from optbench.tuning.spaces import check_schedule, check_space, resolve_space
    from optbench.tuning.study import check_tuning

    if not problems or not optimizers:
        raise UsageError("Give --problem and --opt (or a --suite whose [tune] table lists problems and "
                         "optimizers).")
    if engine not in ENGINES:
        raise UsageError(f"Unknown engine {engine!r}; valid engines: {', '.join(ENGINES)}.")
    if dtype not in DTYPES:
        raise UsageError(f"Unknown dtype {dtype!r}; valid dtypes: {', '.join(DTYPES)}.")
    seed_list = list(range(seeds)) if isinstance(seeds, int) else [int(s) for s in seeds]
    if not seed_list:
        raise UsageError(f"seeds={seeds!r}: the re-runs need at least one seed.")
    problems = resolve_problems(problems)
    optimizers = resolve_optimizers(optimizers)
    proto = get_protocol(protocol)
    sched = one_schedule(schedule)
    dims = check_space(optimizers, parse_space(space), sched)
    check_schedule(optimizers, sched, dims, steps, proto)
    for optimizer in optimizers:  # nothing to tune, a bad pruner or engine: before any output or journal
        check_tuning(optimizer, resolve_space(dims, sched), proto, engine=engine, pruner=pruner)
    budgets = trial_budgets(None if trials is None else str(trials), optimizers, proto)
    # the recipe options are validated as 'optbench run' validates them (clip values, label smoothing on
    # networks only), before any trial
    recipe = Recipe(schedule=sched, clip_norm=clip_norm, clip_value=clip_value, label_smoothing=label_smoothing)
    recipe.replace(schedule="constant").validate(problems, optimizers, steps=steps)
    out_dir = check_writable(Path(out) if out is not None else Path("results") / time.strftime("tune-%Y%m%d-%H%M%S"))

    pairs = [(prob, optimizer) for prob in problems for optimizer in optimizers]
    pair_budgets = [budgets[j] for _ in problems for j in range(len(optimizers))]
    budget = max(budgets)
    budget_text = _budget_text(budgets, [o.label for o in optimizers])
    options: dict[str, Any] = dict(batch=batch, seed=sampler_seed, engine=engine, dtype=dtype, pruner=pruner,
                                   recipe=recipe)
    t0 = time.perf_counter()
    progress = progress_factory(sum(pair_budgets), len(pairs)) if progress_factory else _Silent()
    try:
        if executor is not None and executor.name == "dask":
            from optbench.tuning.on_dask import tune_on_dask

            progress.print(f"tuning {plural(len(pairs), 'study', 'studies')} on the Dask cluster at "
                           f"{executor.address}: {proto.name}, {budget_text}")
            progress.advance(0)
            results = tune_on_dask(pairs, executor=executor, protocol=proto, trials=pair_budgets, dims=dims,
                                   steps=steps, storage=storage, out_dir=out_dir, progress=progress.advance,
                                   study_done=progress.study_done, **options)
        elif workers > 1 and len(pairs) > 1:
            from optbench.tuning.parallel import tune_parallel

            progress.print(f"tuning {plural(len(pairs), 'study', 'studies')} in "
                           f"{plural(min(workers, len(pairs)), 'process', 'processes')}: {proto.name}, {budget_text}")
            progress.advance(0)  # the bar (after its delay) while the workers start
            results = tune_parallel(pairs, workers=workers, protocol=proto, trials=pair_budgets, dims=dims, steps=steps,
                                    storage=storage, out_dir=out_dir, progress=progress.advance,
                                    study_done=progress.study_done, while_waiting=while_waiting, **options)
        else:
            from optbench.tuning.study import open_storage

            results = []
            journal = open_storage(None, out_dir) if storage is None else None  # one journal for every study
            for index, ((prob, optimizer), pair_budget) in enumerate(zip(pairs, pair_budgets), start=1):
                schedule_text = "" if sched == "constant" else f", schedule {sched}"
                progress.print(f"tuning {optimizer.label} on {prob.label}: {proto.name}, "
                               f"{plural(pair_budget, 'trial')}{schedule_text}")
                progress.begin_study(index, len(pairs))
                results.append(tune_one(prob, optimizer, protocol=proto, trials=pair_budget, dims=dims, steps=steps,
                                        storage=storage, out_dir=out_dir, progress=progress.advance, journal=journal,
                                        **options))
    finally:
        progress.close()
    tune_s = time.perf_counter() - t0
    used_text = _used_text(results, pair_budgets, budget_text)

    reruns = []
    for prob in problems:
        best_by_schedule: dict[str, list] = {}  # each best configuration re-runs with its own best schedule
        for r in results:
            if r.problem == prob.label and r.best_config is not None:
                best_by_schedule.setdefault(r.best_schedule or "constant", []).append(r.best_config)
        for best_schedule, best in best_by_schedule.items():
            reruns.append(Sweep([prob], best, seeds=seed_list, steps=steps, engine=engine, dtype=dtype,
                                recipe=recipe.replace(schedule="constant"), schedules=[best_schedule]))
    outcomes = []
    for index, sweep in enumerate(reruns, start=1):
        if hasattr(rerun_progress, "begin_sweep"):  # 're-runs 2/3 · runs 4/10' on the CLI's sweep bar
            rerun_progress.begin_sweep(index, len(reruns))
        outcomes.append(run_sweep(sweep, out_dir, force=force, command=command, progress_factory=rerun_progress,
                                  executor=executor))
    record = {
        "command": command, "protocol": proto.name, "protocol_doc": proto.doc, "budget": budget,
        **({"budgets": {o.label: b for o, b in zip(optimizers, budgets)}} if len(set(budgets)) > 1 else {}),
        "steps": steps, "clip_norm": clip_norm, "clip_value": clip_value, "label_smoothing": label_smoothing,
        "schedule": sched, "batch": batch, "workers": workers,
        **({"executor": executor.name, "scheduler": executor.address}
           if executor is not None and executor.name != "local" else {}),
        "rerun_seeds": seed_list, "storage": storage or str(out_dir / "tuning.journal"),
        "trials_rule": TRIALS_RULE,
        "tuning_wall_time_s": round(tune_s, 4), "studies": [r.record() for r in results]}
    update_manifest(out_dir, lambda manifest: manifest.setdefault("tuning", []).append(record))
    return TuneOutcome(out_dir, results, proto, {o.label: b for o, b in zip(optimizers, budgets)}, budget_text,
                       used_text, seed_list, tune_s, time.perf_counter() - t0, outcomes, record)


class _Silent:
    """The progress of a caller that wants none."""

    def print(self, text: str) -> None:
        pass

    def begin_study(self, index: int, count: int) -> None:
        pass

    def advance(self, n: int, failed: int = 0) -> None:
        pass

    def study_done(self) -> None:
        pass

    def close(self) -> None:
        pass


def _budget_text(budgets: list[int], labels: list[str]) -> str:
    """'50 trials each' ('1 trial each'), or the budget of each optimizer when they differ."""
    from optbench.formatting import plural

    if len(set(budgets)) == 1:
        return f"{plural(budgets[0], 'trial')} each"
    return ("unequal budgets " + ", ".join(f"{o} {b}" for o, b in zip(labels, budgets))
            + " (not an equal-budget comparison)")


def _used_text(results, budgets: list[int], budget_text: str) -> str:
    """The budget text when every study's verdict is read from exactly its budget of trials, else the real
    number of trials behind each verdict (a study some process is still filling, every trial abandoned)."""
    if all(r.trials_used == b for r, b in zip(results, budgets)):
        return budget_text
    return "trials used " + ", ".join(f"{r.optimizer} on {r.problem} {r.trials_used} of {b}"
                                      for r, b in zip(results, budgets))


def trial_budgets(text: str | None, optimizers, protocol) -> list[int]:
    """``--trials`` → the budget of each optimizer config, in order. ``'600'`` gives all 600; ``'600,sgd=1200'``
    gives configs named ``sgd`` 1200 and the others 600; without a plain number the others get the
    protocol's default. Protocols with a fixed budget (random-small, grid, …) reject other budgets."""
    default: int | None = None
    overrides: dict[str, int] = {}
    for part in (p.strip() for p in (text or "").split(",")):
        if not part:
            continue
        name, eq, number = (x.strip() for x in part.rpartition("=")) if "=" in part else ("", "", part)
        try:
            value = int(number)
        except ValueError:
            raise UsageError(f"--trials {text!r}: {number!r} is not a whole number; write N or N,NAME=M, "
                             "e.g. '600,sgd=1200'.") from None
        if value < 1:
            raise UsageError(f"--trials {text!r}: a budget must be at least 1 trial (got {value}).")
        if not eq:
            if default is not None:
                raise UsageError(f"--trials {text!r}: give one plain budget and NAME=M for the exceptions.")
            default = value
            continue
        names = {o.name: o for o in optimizers}
        if name not in names:
            raise UsageError(f"--trials {text!r}: {name!r} is not one of the optimizers tuned here "
                             f"({', '.join(names)}).")
        if name in overrides:
            raise UsageError(f"--trials {text!r}: {name!r} is given twice.")
        overrides[name] = value
    return [protocol.budget(overrides.get(o.name, default)) for o in optimizers]


def one_schedule(text: str | None) -> str:
    """``--schedule`` text → the canonical label of one validated schedule (``constant`` when absent)."""
    from optbench.schedules import get_schedule
    from optbench.spec import parse_spec_list

    specs = parse_spec_list(text) if text else []
    if len(specs) > 1:
        raise UsageError(f"--schedule takes one schedule for tuning (got {len(specs)}); tune each schedule in "
                         "its own command.")
    return get_schedule(specs[0] if specs else None).label
