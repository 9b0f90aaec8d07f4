"""``optbench tune``: tune every optimizer with the same trial budget, re-run the best configurations
over fresh seeds, and print the comparison (the re-runs land in the results directory)."""

from __future__ import annotations

import shlex
import sys
import time
from pathlib import Path
from typing import Annotated

import typer

from optbench.cli.common import console, errors_handled, fmt_float, split_list
from optbench.cli.executors import ExecutorOption, SchedulerFileOption, SchedulerOption, open_executor
from optbench.cli.progress import PhaseProgress, SweepProgress, TrialProgress
from optbench.formatting import plural


@errors_handled
def tune(
    ctx: typer.Context,
    problem: Annotated[str | None, typer.Option("--problem", "-p", help="Problem specs, comma-separated.")] = None,
    opt: Annotated[str | None, typer.Option("--opt", "-o", help="Optimizer specs, comma-separated; "
                                            "hyperparameters set in a spec are not searched.")] = None,
    trials: Annotated[str | None, typer.Option(help="Trial budget per (problem, optimizer), the same for every "
                                               "optimizer (default: the protocol's). 'N,NAME=M' gives "
                                               "optimizer NAME its own budget (e.g. '600,sgd=1200'); the "
                                               "table then says the budgets differ.")] = None,
    protocol: Annotated[str, typer.Option(help="tpe, random, random-small (25), random-large (50) or grid "
                                          "(DeepOBS lr grid, 36). See docs/tuning.md.")] = "tpe",
    space: Annotated[str | None, typer.Option(help="Extra searched hyperparameters: "
                                              "'momentum=0.5:0.99,lr=1e-4:1:log'. Default: lr in "
                                              "[1e-5, 10], log-uniform. With --schedule, also its "
                                              "parameters: 'warmup=0:0.3' (fraction of the budget; "
                                              "'warmup=0:20': steps), 'schedule.min_lr=0:1e-5'.")] = None,
    schedule: Annotated[str | None, typer.Option("--schedule", help="One learning-rate schedule for every "
                                                 "trial and the re-runs, e.g. 'warmup-cosine(warmup=0.05)' "
                                                 "(see docs/recipes.md); part of the study. --space can "
                                                 "search its numeric parameters.")] = None,
    seeds: Annotated[int, typer.Option(min=1, help="Fresh seeds (0..N-1) for the re-runs of the best "
                                       "configurations.")] = 5,
    steps: Annotated[int, typer.Option(min=1, help="Optimizer steps per trial and per re-run.")] = 200,
    batch: Annotated[int, typer.Option(min=1, help="Trials asked for and evaluated together (batched "
                                       "engine); 1: one at a time.")] = 64,
    engine: Annotated[str, typer.Option(help="auto, loop or batched.")] = "auto",
    dtype: Annotated[str, typer.Option(help="float64 or float32.")] = "float64",
    pruner: Annotated[str, typer.Option(help="none or median (reads the intermediate losses).")] = "none",
    storage: Annotated[str | None, typer.Option(help="Optuna storage shared by tuning processes: "
                                                "postgresql://USER@HOST/DB, sqlite:///FILE or a journal "
                                                "file path. Default: OUT/tuning.journal.")] = None,
    clip_norm: Annotated[float | None, typer.Option("--clip-norm", help="Clip each trial's gradient to this "
                                                     "norm (also in the re-runs).")] = None,
    clip_value: Annotated[float | None, typer.Option("--clip-value", help="Clip each gradient coordinate of "
                                                      "every trial (and the re-runs) to [-V, V].")] = None,
    label_smoothing: Annotated[float, typer.Option("--label-smoothing", help="Label smoothing of the "
                                                   "cross-entropy (network problems; trials and re-runs).")] = 0.0,
    workers: Annotated[int, typer.Option(min=1, help="Processes tuning independent studies in parallel "
                                         "(one study per problem × optimizer).")] = 1,
    executor: ExecutorOption = "local",
    scheduler: SchedulerOption = None,
    scheduler_file: SchedulerFileOption = None,
    sampler_seed: Annotated[int, typer.Option("--sampler-seed", help="Seed of the sampler.")] = 0,
    suite: Annotated[Path | None, typer.Option(help="Take problems, optimizers and the [tune] table from a "
                                               "suite file; command-line options win.")] = None,
    out: Annotated[Path | None, typer.Option(help="Results directory (default: results/tune-DATE-TIME).")] = None,
    force: Annotated[bool, typer.Option(help="Re-run re-runs already complete in --out.")] = False,
    report: Annotated[bool, typer.Option("--report", help="Then write the report of --out into OUT/report "
                                         "in the same process (as 'optbench report OUT').")] = False,
    report_figures: Annotated[str, typer.Option("--report-figures", help="Figures of --report (as 'optbench "
                                                "report --figures').")] = "race,trajectories,curves,sensitivity,"
                                                                          "grids,profiles",
    report_format: Annotated[str, typer.Option("--report-format", help="Formats of --report (as 'optbench "
                                               "report --format').")] = "png,gif",
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="Print nothing but errors.")] = False,
) -> None:
    """Tune each optimizer's hyperparameters with one Optuna study per problem, with equal budgets."""
    from optbench.errors import UsageError
    from optbench.optimizers import get_optimizer
    from optbench.problems import get_problem
    from optbench.results import check_writable, update_manifest
    from optbench.runner import DTYPES, ENGINES, Sweep, run_sweep
    from optbench.spec import parse_spec_list
    from optbench.tuning import get_protocol, parse_space, tune_one
    from optbench.tuning.spaces import check_schedule, check_space, resolve_space
    from optbench.tuning.study import check_tuning

    def given(name: str) -> bool:
        source = ctx.get_parameter_source(name)
        return source is not None and source.name == "COMMANDLINE"

    seed_list = list(range(seeds))
    if suite is not None:
        from optbench.suite import load_suite

        conf = load_suite(suite).tune
        problem = problem or (",".join(conf["problems"]) if "problems" in conf else None)
        opt = opt or (",".join(conf["optimizers"]) if "optimizers" in conf else None)
        trials = trials if given("trials") else (str(conf["trials"]) if "trials" in conf else trials)
        protocol = protocol if given("protocol") else conf.get("protocol", protocol)
        space = space if given("space") else conf.get("space", space)
        schedule = schedule if given("schedule") else conf.get("schedule", schedule)
        steps = steps if given("steps") else conf.get("steps", steps)
        batch = batch if given("batch") else conf.get("batch", batch)
        workers = workers if given("workers") else conf.get("workers", workers)
        storage = storage if given("storage") else conf.get("storage", storage)
        seed_list = seed_list if given("seeds") else conf.get("seeds", seed_list)
    if not problem or not opt:
        raise UsageError("Give --problem and --opt (or a --suite whose [tune] table lists problems and "
                         "optimizers).")
    if engine not in ENGINES:
        raise UsageError(f"Unknown engine {engine!r}; valid engines: {', '.join(ENGINES)}.")
    if dtype not in DTYPES:
        raise UsageError(f"Unknown dtype {dtype!r}; valid dtypes: {', '.join(DTYPES)}.")
    problems = [get_problem(s) for s in parse_spec_list(problem)]
    optimizers = [get_optimizer(s) for s in parse_spec_list(opt)]
    proto = get_protocol(protocol)
    sched = _schedule(schedule)
    dims = check_space(optimizers, parse_space(space), sched)
    check_schedule(optimizers, sched, dims, steps, proto)
    for optimizer in optimizers:  # nothing to tune, a bad pruner or engine: before any output or journal
        check_tuning(optimizer, resolve_space(dims, sched), proto, engine=engine, pruner=pruner)
    budgets = trial_budgets(trials, optimizers, proto)
    if report:  # bad figure or format names fail before any work
        from optbench.report import validate as validate_report

        validate_report(split_list(report_format), split_list(report_figures), "final_loss", 200, 20, 100)
    # the recipe options are validated as 'optbench run' validates them (clip values, label smoothing on
    # networks only), before any trial
    Sweep(problems, optimizers, seeds=[0], steps=steps, clip_norm=clip_norm, clip_value=clip_value,
          label_smoothing=label_smoothing).check_recipe(problems)
    out_dir = check_writable(out or Path("results") / time.strftime("tune-%Y%m%d-%H%M%S"))  # before any trial
    runs_on = open_executor(ctx, executor, workers, scheduler, scheduler_file)

    pairs = [(prob, optimizer) for prob in problems for optimizer in optimizers]
    pair_budgets = [budgets[j] for _ in problems for j in range(len(optimizers))]
    budget = max(budgets)
    budget_text = _budget_text(budgets, [o.label for o in optimizers])
    options = dict(batch=batch, seed=sampler_seed, engine=engine, dtype=dtype, pruner=pruner, clip_norm=clip_norm,
                   clip_value=clip_value, label_smoothing=label_smoothing, schedule=sched)
    t0 = time.perf_counter()
    progress = TrialProgress(sum(pair_budgets), len(pairs), quiet)
    try:
        if runs_on.name == "dask":
            from optbench.tuning.on_dask import tune_on_dask

            progress.print(f"tuning {plural(len(pairs), 'study', 'studies')} on the Dask cluster at "
                           f"{runs_on.address}: {proto.name}, {budget_text}")
            progress.advance(0)
            results = tune_on_dask(pairs, executor=runs_on, protocol=proto, trials=pair_budgets, dims=dims,
                                   steps=steps, storage=storage, out_dir=out_dir, progress=progress.advance,
                                   study_done=progress.study_done, **options)
        elif workers > 1 and len(pairs) > 1:
            from optbench.tuning.parallel import tune_parallel

            progress.print(f"tuning {plural(len(pairs), 'study', 'studies')} in "
                           f"{plural(min(workers, len(pairs)), 'process', 'processes')}: {proto.name}, {budget_text}")
            progress.advance(0)  # the bar (after its delay) while the workers start
            results = tune_parallel(pairs, workers=workers, protocol=proto, trials=pair_budgets, dims=dims, steps=steps,
                                    storage=storage, out_dir=out_dir, progress=progress.advance,
                                    study_done=progress.study_done,
                                    while_waiting=_import_report_libraries if report else None, **options)
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

    command = "optbench " + " ".join(shlex.quote(a) for a in sys.argv[1:])
    reruns = []
    for prob in problems:
        best_by_schedule: dict[str, list] = {}  # each best configuration re-runs with its own best schedule
        for r in results:
            if r.problem == prob.label and r.best_config is not None:
                best_by_schedule.setdefault(r.best_schedule or "constant", []).append(r.best_config)
        for best_schedule, best in best_by_schedule.items():
            reruns.append(Sweep([prob], best, seeds=seed_list, steps=steps, engine=engine, dtype=dtype,
                                clip_norm=clip_norm, clip_value=clip_value, label_smoothing=label_smoothing,
                                schedules=[best_schedule]))
    outcomes = []
    rerun_progress = SweepProgress(quiet, what="re-runs")  # 're-runs 2/3 · runs 4/10' on the sweep bar
    for index, sweep in enumerate(reruns, start=1):
        rerun_progress.begin_sweep(index, len(reruns))
        outcomes.append(run_sweep(sweep, out_dir, force=force, command=command, progress_factory=rerun_progress,
                                  executor=runs_on))
    update_manifest(out_dir, lambda manifest: manifest.setdefault("tuning", []).append({
        "command": command, "protocol": proto.name, "protocol_doc": proto.doc, "budget": budget,
        **({"budgets": {o.label: b for o, b in zip(optimizers, budgets)}} if len(set(budgets)) > 1 else {}),
        "steps": steps, "clip_norm": clip_norm, "clip_value": clip_value, "label_smoothing": label_smoothing,
        "schedule": sched, "batch": batch, "workers": workers,
        **({"executor": runs_on.name, "scheduler": runs_on.address} if runs_on.name != "local" else {}),
        "rerun_seeds": seed_list, "storage": storage or str(out_dir / "tuning.journal"),
        "trials_rule": TRIALS_RULE,
        "tuning_wall_time_s": round(tune_s, 4), "studies": [r.record() for r in results]}))
    if not quiet:
        _print(results, out_dir, proto, used_text, seed_list, tune_s, time.perf_counter() - t0,
               rerun=bool(outcomes))
    if report and outcomes:
        from optbench.report import build_report

        with PhaseProgress("report", quiet) as phases:  # as 'run --report': each phase of the report
            index = build_report([out_dir], out_dir / "report", formats=split_list(report_format),
                                 figures=split_list(report_figures), progress=phases)
        if not quiet:
            console.print(f"report → {index}")


TRIALS_RULE = ("a study's results are read from its first N trials by budget slot (trial number), N = its "
               "budget; trials beyond them in the storage are not used")


def _budget_text(budgets: list[int], labels: list[str]) -> str:
    """'50 trials each' ('1 trial each'), or the budget of each optimizer when they differ."""
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


def _import_report_libraries() -> None:
    """Import what the re-runs and --report need (pandas, Parquet, matplotlib: ~1 s) while worker
    processes tune; a failure here only means the import happens later, where it is reported."""
    try:
        import pandas  # noqa: F401
        import pyarrow.parquet  # noqa: F401

        from optbench.report.style import pyplot

        pyplot()
    except Exception:  # noqa: BLE001
        pass


def trial_budgets(text: str | None, optimizers, protocol) -> list[int]:
    """``--trials`` → the budget of each optimizer config, in order. ``'600'`` gives all 600; ``'600,sgd=1200'``
    gives configs named ``sgd`` 1200 and the others 600; without a plain number the others get the
    protocol's default. Protocols with a fixed budget (random-small, grid, …) reject other budgets."""
    from optbench.errors import UsageError

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


def _schedule(text: str | None) -> str:
    """``--schedule`` text → the canonical label of one validated schedule (``constant`` when absent)."""
    from optbench.errors import UsageError
    from optbench.schedules import get_schedule
    from optbench.spec import parse_spec_list

    specs = parse_spec_list(text) if text else []
    if len(specs) > 1:
        raise UsageError(f"--schedule takes one schedule for tuning (got {len(specs)}); tune each schedule in "
                         "its own command.")
    return get_schedule(specs[0] if specs else None).label


def _print(results, out_dir: Path, proto, budget_text: str, seeds: list[int], tune_s: float, total_s: float,
           rerun: bool = True) -> None:
    from rich.table import Table

    from optbench.cli.tables import render_summary
    from optbench.results import load_summary
    from optbench.summary import aggregate
    from optbench.tuning.spaces import SCHEDULE_PREFIX

    table = Table(title=f"tuning: protocol {proto.name}, {budget_text}", title_style="bold")
    scheduled = any(r.schedule != "constant" for r in results)
    columns = ("problem", "optimizer", "searched", "best", *(["best schedule"] if scheduled else []),
               "best trial loss", "trials")
    rows: list[tuple] = []
    notes: list[str] = []
    for r in results:
        # the schedule's searched values go in their own column
        best = ", ".join(f"{k}={fmt_float(v)}" for k, v in (r.best_params or {}).items()
                         if not k.startswith(SCHEDULE_PREFIX))
        best = best or ("all trials failed" if r.best_params is None else "—")
        states = ", ".join(f"{k} {v}" for k, v in sorted(r.states.items())) or "none"
        if r.trials_in_storage > r.trials_used:  # a caption line, not a cell: a narrow table would fold it
            notes.append(f"{r.optimizer} on {r.problem}: the first {r.trials_used} of {r.trials_in_storage} "
                         "in the study")
        rows.append((r.problem, r.optimizer, "; ".join(r.dims), best,
                     *([_short_schedule(r.best_schedule)] if scheduled else []), fmt_float(r.best_value), states))
    for col, width in zip(columns, _fitted_widths(columns, rows, console.width)):
        table.add_column(col, overflow="fold", width=width)  # wraps between words; a long word folds, never cut
    for row in rows:
        table.add_row(*row)
    if notes:
        table.caption = "; ".join(notes)
    console.print(table)
    summary = load_summary(out_dir) if rerun else []  # nothing re-run when every trial failed
    if len(summary):
        console.print(f"Best configurations re-run over {plural(len(seeds), 'fresh seed')} "
                      f"(verdicts from protocol {proto.name}, {budget_text}):")
        render_summary(aggregate(summary, best_lr_only=False), console)
    console.print(f"tuning {tune_s:.2f} s, total {total_s:.2f} s → {out_dir}")


VALUE_COLUMNS = ("searched", "best", "best schedule", "best trial loss")


def _fitted_widths(columns, rows, width: int) -> list[int | None]:
    """Column widths of the tuning table within ``width`` characters: None (natural) where everything fits;
    else the value columns as wide as their longest word ('lr=7.667e-05': wrapped between values, never inside
    one) and the text columns (problem, optimizer, trials) sharing the rest; equal shares when even that does
    not fit."""
    room = width - (3 * len(columns) + 1)  # inside the borders and the padding
    cells = [[col, *(str(row[k]) for row in rows)] for k, col in enumerate(columns)]
    natural = [max(len(c) for c in column) for column in cells]
    if sum(natural) <= room:
        return [None] * len(columns)
    words = [max(len(w) for c in column for w in c.split() or [""]) for column in cells]
    values = {k: min(natural[k], words[k]) for k, col in enumerate(columns) if col in VALUE_COLUMNS}
    texts = [k for k in range(len(columns)) if k not in values]
    left = room - sum(values.values())
    if left < 6 * len(texts):
        return [max(1, room // len(columns))] * len(columns)
    out = [values.get(k) for k in range(len(columns))]
    share, spare = left // len(texts), left
    for k in sorted(texts, key=lambda k: natural[k]):  # narrow text columns take what they need, the rest share
        out[k] = min(natural[k], max(share, 1))
        spare -= out[k]
        texts = [t for t in texts if t != k]
        share = spare // len(texts) if texts else 0
    return out


def _short_schedule(label: str | None) -> str:
    """A schedule label with its numbers in the tables' short format: ``warmup-cosine(warmup=0.1601)``."""
    from optbench.schedules import get_schedule

    if label is None:
        return "—"
    sched = get_schedule(label)
    values = ", ".join(f"{k}={v if isinstance(v, int) else fmt_float(v)}" for k, v in sorted(sched.given.items()))
    return f"{sched.name}({values})" if values else sched.name
