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
    csv: Annotated[Path | None, typer.Option(help="Also write the tidy step table to this CSV file.")] = None,
    summary_csv: Annotated[Path | None, typer.Option("--summary-csv",
                                                     help="Write the per-run summary to this CSV file.")] = None,
    json_out: Annotated[bool, typer.Option("--json", help="Print the comparison as JSON.")] = False,
) -> None:
    """Print the comparison table of saved results (the same table 'optbench run' printed)."""
    from rich.markup import escape

    from optbench.cli.common import err_console
    from optbench.cli.progress import PhaseProgress
    from optbench.cli.tables import render_summary, summary_records
    from optbench.results import check_file_writable, load_results, load_summary
    from optbench.summary import aggregate
    from optbench.targets import mixed_targets_warning, with_target

    for option, path in (("--csv", csv), ("--summary-csv", summary_csv)):
        if path is not None:
            check_file_writable(path, option)
    phases = 2 + (target is not None) + 2 * (csv is not None) + (summary_csv is not None)
    with PhaseProgress("show", quiet=json_out) as progress:
        progress("loading the run summary", 0, phases)
        summary = load_summary(*results)
        if target is not None:
            progress(f"recounting steps to target {target:g}", 1, phases)
            summary = with_target(load_results(*results, columns=["run_id", "step", "loss"]), summary, target)
        elif warning := mixed_targets_warning(summary):
            err_console.print(f"[yellow]Warning:[/] {escape(warning)}", markup=True)
        progress("aggregating over seeds", phases - 1 - 2 * (csv is not None) - (summary_csv is not None), phases)
        table = aggregate(summary, best_lr_only=not all_lrs)
        if csv is not None:
            progress("loading the recorded steps", phases - 2 - (summary_csv is not None), phases)
            steps = load_results(*results)
            progress(f"writing {len(steps)} rows to {csv}", phases - 1 - (summary_csv is not None), phases)
            steps.to_csv(csv, index=False)
        if summary_csv is not None:
            progress(f"writing {summary_csv}", phases - 1, phases)
            summary.to_csv(summary_csv, index=False)
    if json_out:
        print(json.dumps(summary_records(table), indent=2))
        return
    render_summary(table, console)
    if csv is not None:
        console.print(f"step table → {csv}")
    if summary_csv is not None:
        console.print(f"run summary → {summary_csv}")
