"""``optbench report DIR [DIR ...]``: figures, tables, index.html and report.md from saved results."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from optbench.cli.common import console, errors_handled, split_list


@errors_handled
def report(
    results: Annotated[list[Path], typer.Argument(help="One or more results directories (merged).")],
    out: Annotated[Path | None, typer.Option("--out", help="Report directory: figures/, tables/, "
                                             "index.html, report.md (default: FIRST_RESULTS_DIR/report).")]
    = None,
    format: Annotated[str, typer.Option("--format", "-f", help="Comma-separated: png, svg, pdf (static "
                                        "figures), gif, mp4 (animations; mp4 needs ffmpeg).")] = "png,gif",
    figures: Annotated[str, typer.Option(help="Comma-separated figures, or all (each drawn where the results "
                                         "allow it): {figures}.")] = "all",
    frames: Annotated[int, typer.Option(help="Frame budget of each animation; longer runs are subsampled.")] = 200,
    fps: Annotated[int, typer.Option(help="Animation frames per second.")] = 20,
    dpi: Annotated[int, typer.Option(help="Resolution of figures and animations (100: a 600×600 px race).")]
    = 100,
    title: Annotated[str | None, typer.Option(help="Report title (also on every figure).")] = None,
    all_lrs: Annotated[bool, typer.Option("--all-lrs", help="Show every learning rate in the summary and "
                                          "the loss curves, not only the best per optimizer.")] = False,
    metric: Annotated[str, typer.Option(help="Cell value of the batch size × lr tables: final_loss, "
                                        "best_loss, steps_to_target, test_acc, or a time to result "
                                        "(steps_to_result, examples_to_result, seconds_to_result), which also "
                                        "ranks the configurations and drives the performance profile.")]
    = "final_loss",
    result_target: Annotated[str | None, typer.Option(
        "--result-target", help="Recount time to result of network runs at this target (METRIC>=VALUE or "
        "METRIC<=VALUE, e.g. test_acc>=0.9) from the recorded steps; default: each run's own.")] = None,
    target: Annotated[float | None, typer.Option(help="Recount 'steps to target' at this target (first recorded "
                                                 "step with loss − f* ≤ TARGET) from the recorded steps; "
                                                 "default: the target stored with each run.")] = None,
    heatmap_scale: Annotated[str, typer.Option("--heatmap-scale", help="Colour range of the batch size × lr "
                                               "heatmaps: shared (one per problem, so colours compare across "
                                               "optimizers) or each (one per heatmap).")] = "shared",
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="Print nothing but errors (no progress, no "
                                        "closing line).")] = False,
) -> None:
    """Draw figures and write a report (HTML and Markdown) of saved results; opens from disk, no server."""
    from optbench.cli.progress import PhaseProgress
    from optbench.report import build_report

    with PhaseProgress("report", quiet) as progress:
        index = build_report(results, out or Path(results[0]) / "report", formats=split_list(format),
                             figures=split_list(figures), frames=frames, fps=fps, dpi=dpi, title=title,
                             all_lrs=all_lrs, metric=metric, target=target, result_target=result_target,
                             progress=progress, heatmap_scale=heatmap_scale)
    if not quiet:
        console.print(f"report → {index} (and {index.parent / 'report.md'})")
