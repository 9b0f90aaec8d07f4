"""``optbench tune``: tune every optimizer with the same trial budget, re-run the best configurations
over fresh seeds, and print the comparison (the re-runs land in the results directory)."""

from __future__ import annotations

import shlex
import sys
from pathlib import Path
from typing import Annotated

import typer

from optbench.cli.common import console, errors_handled, split_list
from optbench.cli.executors import ExecutorOption, SchedulerFileOption, SchedulerOption, open_executor
from optbench.cli.progress import PhaseProgress, SweepProgress, TrialProgress
from optbench.formatting import fmt_num, plural


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
    protocol: Annotated[str, typer.Option(help="How the trial budget is spent: {protocols}. See "
                                          "docs/tuning.md.")] = "tpe",
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
    pruner: Annotated[str, typer.Option(help="{pruners} (median reads the intermediate losses).")] = "none",
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
    report_figures: Annotated[str, typer.Option("--report-figures", help="Figures of --report, comma-separated, "
                                                "or all (as 'optbench report --figures'): {figures}.")] = "all",
    report_format: Annotated[str, typer.Option("--report-format", help="Formats of --report (as 'optbench "
                                               "report --format').")] = "png,gif",
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="Print nothing but errors.")] = False,
) -> None:
    """Tune each optimizer's hyperparameters with one Optuna study per problem, with equal budgets."""
    from optbench.api import tune as run_tuning

    def value(name: str):  # with --suite, None where not on the command line: the suite's [tune] table decides
        source = ctx.get_parameter_source(name)
        from_command_line = source is not None and source.name == "COMMANDLINE"
        return ctx.params[name] if suite is None or from_command_line else None

    if report:  # bad figure or format names fail before any work
        from optbench.report import validate as validate_report

        validate_report(split_list(report_format), split_list(report_figures), "final_loss", 200, 20, 100)
    runs_on = open_executor(ctx, executor, workers, scheduler, scheduler_file)
    settings = {name: value(name) for name in ("trials", "protocol", "space", "schedule", "steps", "batch",
                                               "workers", "storage", "seeds")}
    outcome = run_tuning(problem, opt, suite=suite, **settings, engine=engine, dtype=dtype, pruner=pruner,
                         clip_norm=clip_norm, clip_value=clip_value, label_smoothing=label_smoothing,
                         sampler_seed=sampler_seed, out=out, force=force, executor=runs_on,
                         progress=lambda total, studies: TrialProgress(total, studies, quiet),
                         rerun_progress=SweepProgress(quiet, what="re-runs"),
                         while_waiting=_import_report_libraries if report else None,
                         command="optbench " + " ".join(shlex.quote(a) for a in sys.argv[1:]))
    if not quiet:
        _print(outcome.results, outcome.out_dir, outcome.protocol, outcome.used_text, outcome.seeds,
               outcome.tuning_wall_time_s, outcome.wall_time_s, rerun=bool(outcome.reruns))
    if report and outcome.reruns:
        from optbench.api import report as write_report

        with PhaseProgress("report", quiet) as phases:  # as 'run --report': each phase of the report
            written = write_report([outcome.out_dir], outcome.out_dir / "report", formats=split_list(report_format),
                                   figures=split_list(report_figures), progress=phases)
        if not quiet:
            console.print(f"report → {written.index}")


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


def _print(results, out_dir: Path, proto, budget_text: str, seeds: list[int], tune_s: float, total_s: float,
           rerun: bool = True) -> None:
    from rich.table import Table

    from optbench.analysis.summary import aggregate
    from optbench.cli.tables import render_summary
    from optbench.results import load_summary
    from optbench.tuning.spaces import SCHEDULE_PREFIX

    table = Table(title=f"tuning: protocol {proto.name}, {budget_text}", title_style="bold")
    scheduled = any(r.schedule != "constant" for r in results)
    columns = ("problem", "optimizer", "searched", "best", *(["best schedule"] if scheduled else []),
               "best trial loss", "trials")
    rows: list[tuple] = []
    notes: list[str] = []
    for r in results:
        # the schedule's searched values go in their own column
        best = ", ".join(f"{k}={fmt_num(v)}" for k, v in (r.best_params or {}).items()
                         if not k.startswith(SCHEDULE_PREFIX))
        best = best or ("all trials failed" if r.best_params is None else "—")
        states = ", ".join(f"{k} {v}" for k, v in sorted(r.states.items())) or "none"
        if r.trials_in_storage > r.trials_used:  # a caption line, not a cell: a narrow table would fold it
            notes.append(f"{r.optimizer} on {r.problem}: the first {r.trials_used} of {r.trials_in_storage} "
                         "in the study")
        rows.append((r.problem, r.optimizer, "; ".join(r.dims), best,
                     *([_short_schedule(r.best_schedule)] if scheduled else []), fmt_num(r.best_value), states))
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
        out[k] = w = min(natural[k], max(share, 1))
        spare -= w
        texts = [t for t in texts if t != k]
        share = spare // len(texts) if texts else 0
    return out


def _short_schedule(label: str | None) -> str:
    """A schedule label with its numbers in the tables' short format: ``warmup-cosine(warmup=0.1601)``."""
    from optbench.schedules import get_schedule

    if label is None:
        return "—"
    sched = get_schedule(label)
    values = ", ".join(f"{k}={v if isinstance(v, int) else fmt_num(v)}" for k, v in sorted(sched.given.items()))
    return f"{sched.name}({values})" if values else sched.name
