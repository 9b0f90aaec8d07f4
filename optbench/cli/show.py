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
    target: Annotated[float | None, typer.Option(help="Override the targets for 'steps to target'.")] = None,
    all_lrs: Annotated[bool, typer.Option("--all-lrs", help="Show every learning rate.")] = False,
    csv: Annotated[Path | None, typer.Option(help="Also write the tidy step table to this CSV file.")] = None,
    summary_csv: Annotated[Path | None, typer.Option("--summary-csv",
                                                     help="Write the per-run summary to this CSV file.")] = None,
    json_out: Annotated[bool, typer.Option("--json", help="Print the comparison as JSON.")] = False,
) -> None:
    """Print the comparison table of saved results (the same table 'optbench run' printed)."""
    from optbench.cli.tables import render_summary, summary_records
    from optbench.results import check_file_writable, load_results, load_summary
    from optbench.summary import aggregate, recompute_target

    for option, path in (("--csv", csv), ("--summary-csv", summary_csv)):
        if path is not None:
            check_file_writable(path, option)
    summary = load_summary(*results)
    if target is not None:
        summary = recompute_target(load_results(*results, columns=["run_id", "step", "loss"]), summary, target)
    table = aggregate(summary, best_lr_only=not all_lrs)
    if csv is not None:
        load_results(*results).to_csv(csv, index=False)
    if summary_csv is not None:
        summary.to_csv(summary_csv, index=False)
    if json_out:
        print(json.dumps(summary_records(table), indent=2))
        return
    render_summary(table, console)
    if csv is not None:
        console.print(f"step table → {csv}")
    if summary_csv is not None:
        console.print(f"run summary → {summary_csv}")
