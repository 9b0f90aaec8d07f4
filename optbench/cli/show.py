"""``optbench show DIR``: print a results directory's comparison again, or export it."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from optbench.cli.common import console, errors_handled


@errors_handled
def show(
    results: Annotated[list[Path], typer.Argument(help="One or more results directories (merged).")],
    target: Annotated[float | None, typer.Option(help="Recount 'steps to target' at this target (first recorded "
                                                 "step with loss − f* ≤ TARGET) from the recorded steps; "
                                                 "default: the target stored with each run.")] = None,
    all_lrs: Annotated[bool, typer.Option("--all-lrs", help="Show every learning rate.")] = False,
    metric: Annotated[str | None, typer.Option(help="Rank by a time-to-result column: steps_to_result, "
                                               "examples_to_result or seconds_to_result (censored median over "
                                               "seeds, never = ∞); default: the comparison table's rule.")] = None,
    result_target: Annotated[str | None, typer.Option(
        "--result-target", help="Recount time to result of network runs at these targets (comma-separated "
        "METRIC>=VALUE or METRIC<=VALUE, e.g. 'test_acc>=0.9,test_acc>=0.95'; one table per target) from the "
        "recorded steps; default: each run's own target.")] = None,
    csv: Annotated[Path | None, typer.Option(help="Also write the tidy step table to this CSV file.")] = None,
    summary_csv: Annotated[Path | None, typer.Option("--summary-csv",
                                                     help="Write the per-run summary to this CSV file.")] = None,
    json_out: Annotated[bool, typer.Option("--json", help="Print the comparison as JSON.")] = False,
) -> None:
    """Print the comparison table of saved results (the same table 'optbench run' printed)."""
    from rich.markup import escape

    from optbench.analysis.summary import aggregate
    from optbench.cli.common import err_console
    from optbench.cli.progress import PhaseProgress
    from optbench.cli.tables import render_summary, summary_records
    from optbench.results import check_file_writable, load_results, load_summary
    from optbench.targets import mixed_targets_warning, with_target
    from optbench.time_to_result import check_metric, parse_result_targets, with_result_target

    check_metric(metric)
    result_targets = parse_result_targets(result_target)
    for option, path in (("--csv", csv), ("--summary-csv", summary_csv)):
        if path is not None:
            check_file_writable(path, option)
    phases = 2 + (target is not None) + bool(result_targets) + 2 * (csv is not None) + (summary_csv is not None)
    with PhaseProgress("show", quiet=json_out) as progress:
        done = 0

        def phase(what: str) -> None:
            nonlocal done
            progress(what, done, phases)
            done += 1

        phase("loading the run summary")
        summary = load_summary(*results)
        if target is not None:
            phase(f"recounting steps to target {target:g}")
            summary = with_target(load_results(*results, columns=["run_id", "step", "loss"]), summary, target)
        elif warning := mixed_targets_warning(summary):
            err_console.print(f"[yellow]Warning:[/] {escape(warning)}", markup=True)
        phase("aggregating over seeds")
        tables = [("", aggregate(summary, best_lr_only=not all_lrs, metric=metric))]
        if result_targets:
            phase("recounting time to result")
            steps = load_results(*results)
            tables = [("", aggregate(with_result_target(steps, summary, t), best_lr_only=not all_lrs, metric=metric))
                      for t in result_targets]  # each table's title names its result target
        table = tables[0][1]
        if csv is not None:
            phase("loading the recorded steps")
            steps = load_results(*results)
            phase(f"writing {len(steps)} rows to {csv}")
            steps.to_csv(csv, index=False)
        if summary_csv is not None:
            phase(f"writing {summary_csv}")
            summary.to_csv(summary_csv, index=False)
    if json_out:
        print(json.dumps(summary_records(table), indent=2))
        return
    for title_extra, one in tables:
        render_summary(one, console, title_extra, metric=metric)
    if csv is not None:
        console.print(f"step table → {csv}")
    if summary_csv is not None:
        console.print(f"run summary → {summary_csv}")
