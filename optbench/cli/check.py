"""``optbench check`` and ``optbench baseline``: fail CI when an optimizer's behaviour changes.

check NEW --against BASELINE compares two results directories; check --suite FILE runs the suite
deterministically and compares it with the stored baseline. Exit codes: 0 behaviour holds, 1 regression,
2 usage error (including configurations missing on one side). See docs/ci.md.
"""

from __future__ import annotations

import shlex
import sys
from pathlib import Path
from typing import Annotated

import typer

from optbench.cli.common import EXIT_FAILURE, console, err_console, errors_handled
from optbench.formatting import fmt_num, plural

OptOption = Annotated[str | None, typer.Option(
    "--opt", "-o", help="Replace the suite's optimizers: comma-separated specs, user classes included "
    "('my_pkg.optim:MyAdam', 'path/to/opt.py:MyAdam(lr=1e-3)'). The label is the spec as typed, so "
    "baseline and check must name the optimizer the same way; two spellings of one file path ('./opt.py', "
    "'opt.py') compare as one.")]
SuiteOption = Annotated[Path | None, typer.Option("--suite", help="Suite file (TOML), e.g. problems/ci.toml.")]


def _command() -> str:
    return "optbench " + " ".join(shlex.quote(a) for a in sys.argv[1:])


def _progress(quiet: bool):
    """The suite runs' progress factory: one sweep bar per sweep."""
    from optbench.cli.progress import SweepBar

    return lambda steps, runs: SweepBar(steps, runs, quiet)


@errors_handled
def baseline(
    suite: Annotated[Path, typer.Option("--suite", help="Suite file (TOML), e.g. problems/ci.toml.")],
    out: Annotated[Path | None, typer.Option(help="Baseline directory (default: the suite's [check] "
                                             "baseline, else results/baselines/SUITE-NAME). Its previous "
                                             "contents are replaced.")] = None,
    opt: OptOption = None,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="Print nothing but errors.")] = False,
) -> None:
    """Record (or refresh) the baseline of a suite: a deterministic run of it, for 'optbench check'."""
    from optbench.api import baseline as record

    outcome = record(suite, out, opt=opt, progress=_progress(quiet), command=_command())
    if not quiet:
        console.print(f"Baseline of suite {outcome.suite_name!r}: {plural(outcome.runs, 'run')} in "
                      f"{outcome.wall_time_s:.1f} s → {outcome.out_dir} ({outcome.size_bytes / 1024:.0f} KiB). "
                      f"Commit it; 'optbench check --suite {suite}' compares later runs with it.")


@errors_handled
def check(
    new_results: Annotated[Path | None, typer.Argument(help="New results directory (from 'optbench run "
                                                       "--deterministic'); omit with --suite.")] = None,
    against: Annotated[Path | None, typer.Option("--against", help="Baseline results directory (with "
                                                 "--suite: default the suite's baseline).")] = None,
    suite: SuiteOption = None,
    opt: OptOption = None,
    out: Annotated[Path | None, typer.Option(help="With --suite: where the new run goes (default "
                                             "results/check/SUITE-NAME; rewritten each time).")] = None,
    mode: Annotated[str | None, typer.Option(help="exact (seed by seed, for deterministic runs) or "
                                             "statistical (seed medians). Default: the suite's [check] "
                                             "mode, else exact when both runs are deterministic.")] = None,
    rtol: Annotated[float | None, typer.Option(min=0, help="Relative tolerance for every metric "
                                               "(defaults on losses: 1e-9 in both modes).")] = None,
    atol: Annotated[float | None, typer.Option(min=0, help="Absolute tolerance for every metric.")] = None,
    test: Annotated[str | None, typer.Option(help="statistical mode: band (median band, default) or rank "
                                             "(Mann-Whitney U across seeds).")] = None,
    junit: Annotated[Path | None, typer.Option(help="Write JUnit XML: one test case per configuration "
                                               "and metric.")] = None,
    markdown: Annotated[Path | None, typer.Option(help="Write a Markdown summary (PR comment), with the loss "
                                                  "curves of regressions next to it.")] = None,
    all_rows: Annotated[bool, typer.Option("--all", help="Print every check, not only the failed ones "
                                           "and a count.")] = False,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="Print only regressions and errors.")] = False,
) -> None:
    """Compare new results with a baseline; exit 1 when an optimizer's behaviour changed beyond tolerance."""
    from optbench.api import check as run_check

    result = run_check(new_results, against, suite=suite, opt=opt, out=out, mode=mode, rtol=rtol, atol=atol,
                       test=test, junit=junit, markdown=markdown, progress=_progress(quiet), command=_command())
    _print(result.table, result.failed, result.warnings, result.tolerances.describe(), result.baseline_dir,
           result.new_dir, all_rows, quiet)
    if not result.passed:
        raise typer.Exit(EXIT_FAILURE)


def _print(table, failed, warnings, tolerances: str, base_dir, new_dir, all_rows: bool, quiet: bool) -> None:
    from rich.console import JustifyMethod
    from rich.table import Table

    from optbench.check.compare import config_label
    from optbench.check.output import fmt_band
    from optbench.formatting import fmt_change, fmt_value

    for w in warnings:
        err_console.print(f"[yellow]Warning:[/] {w}", markup=True)
    shown = table if all_rows else failed
    if len(shown):
        out = Table(title=f"optbench check: {new_dir} against {base_dir}", title_justify="left")
        columns: tuple[tuple[str, JustifyMethod], ...] = (
            ("configuration", "left"), ("metric", "left"), ("baseline", "right"), ("new", "right"),
            ("allowed", "left"), ("change", "right"), ("verdict", "left"))
        for name, justify in columns:
            out.add_column(name, justify=justify, overflow="fold")
        for _, row in shown.iterrows():
            m = row["metric"]
            style = "green" if row["passed"] else "bold red"
            out.add_row(config_label(row), m, fmt_value(row["baseline"], m, row["steps"]),
                        fmt_value(row["new"], m, row["steps"]), fmt_band(row), fmt_change(row["change_rel"]),
                        f"[{style}]{row['verdict']}[/]")
        console.print(out)
    if quiet and not len(failed):
        return
    n_configs = len(table.drop_duplicates(["problem", "optimizer_label", "lr", "batch_size", "steps"]))
    console.print(f"tolerances: {tolerances}")
    if len(failed):
        worse = int((failed["direction"] == "worse").sum())
        console.print(f"[bold red]REGRESSION[/]: {len(failed)} of {plural(len(table), 'check')} failed ({worse} worse, "
                      f"{len(failed) - worse} better) over {plural(n_configs, 'configuration')}. A deliberate change? "
                      "Accept it with 'optbench baseline'.")
    else:
        console.print(f"[green]OK[/]: {plural(len(table), 'check')} over {plural(n_configs, 'configuration')} within "
                      f"tolerance (largest change {fmt_num(table['change_rel'].abs().max(), 3)} relative).")
