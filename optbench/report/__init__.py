"""Figures and reports drawn from results files alone (matplotlib lives here only, on the Agg backend).

``build_report(dirs, out_dir)`` writes into ``out_dir``: ``figures/`` (race animations, trajectories, loss
curves, learning-rate sensitivity, batch size × lr heatmaps, performance profile, ECDF), ``tables/``
(bs × lr grids as CSV and Markdown), ``index.html`` (opens from disk) and ``report.md``.
"""

from __future__ import annotations

import sys
import types
from collections.abc import Iterable, Sequence
from pathlib import Path

STATIC_FORMATS = ("png", "svg", "pdf")
ANIMATION_FORMATS = ("gif", "mp4")
FORMATS = STATIC_FORMATS + ANIMATION_FORMATS
DEFAULT_FORMATS = ("png", "gif")
METRICS = ("final_loss", "best_loss", "steps_to_target", "test_acc", "steps_to_result", "examples_to_result",
           "seconds_to_result")
HEATMAP_SCALES = ("shared", "each")  # bs × lr heatmaps: one colour range per problem, or one per heatmap


def _choose(kind: str, values: Iterable[str], valid: Sequence[str]) -> list[str]:
    from optbench.errors import UsageError, suggest

    chosen = []
    for v in values:
        v = v.strip().lower()
        if v not in valid:
            raise UsageError(f"Unknown {kind} {v!r}.{suggest(v, valid)} Valid {kind}s: {', '.join(valid)}.")
        if v not in chosen:
            chosen.append(v)
    if not chosen:
        raise UsageError(f"No {kind} given; valid {kind}s: {', '.join(valid)}.")
    return chosen


def choose_figures(values: Iterable[str] | None) -> list[str]:
    """Registered figure names from ``values`` (``all`` or None: every registered figure, in registry order);
    an unknown name raises SpecError with the nearest ones and the valid ones."""
    from optbench.errors import UsageError
    from optbench.report.figures import ALL, FIGURES

    chosen: list[str] = []
    for v in [ALL] if values is None else values:
        v = v.strip().lower()
        for name in FIGURES.names() if v == ALL else [FIGURES.canonical(v)]:
            if name not in chosen:
                chosen.append(name)
    if not chosen:
        raise UsageError(f"No figure given; valid figures: {ALL}, {', '.join(FIGURES.names())}.")
    return chosen


def validate(formats, figures, metric: str, frames: int, fps: int, dpi: int) -> tuple[list[str], list[str]]:
    """Check the options before any work; returns (formats, figures) normalised (figures None: all)."""
    from optbench.errors import UsageError

    formats = _choose("format", formats, FORMATS)
    figures = choose_figures(figures)
    if metric not in METRICS:
        raise UsageError(f"Unknown metric {metric!r}. Valid metrics: {', '.join(METRICS)}.")
    if frames < 2:
        raise UsageError(f"frames={frames}: an animation needs at least 2 frames.")
    if not 1 <= fps <= 100:
        raise UsageError(f"fps={fps}: choose between 1 and 100 frames per second.")
    if not 30 <= dpi <= 600:
        raise UsageError(f"dpi={dpi}: choose between 30 and 600.")
    if "mp4" in formats:
        from optbench.report.animate import require_ffmpeg

        require_ffmpeg()
    return formats, figures


def build_report(results_dirs: list[Path], out_dir: Path, *, formats: Sequence[str] = DEFAULT_FORMATS,
                 figures: Sequence[str] | None = None, frames: int = 200, fps: int = 20, dpi: int = 100,
                 title: str | None = None, all_lrs: bool = False, metric: str = "final_loss",
                 target: float | None = None, result_target: str | None = None, progress=None,
                 heatmap_scale: str = "shared") -> Path:
    """Write the report of one or more results directories (merged) into ``out_dir``; returns index.html.

    formats: static figures in png/svg/pdf, animations in gif/mp4 (mp4 needs ffmpeg). figures: names
    registered in ``optbench.report.figures.FIGURES`` (None or ``all``: every one); each is drawn where the
    results allow it (races for 2-D problems, grids for sweeps over batch size and lr, profiles across several
    problems or seeds). metric: the bs × lr tables' cell value; a
    time to result (``steps_to_result``, ``examples_to_result``, ``seconds_to_result``) also ranks the
    configurations and is the performance profile's measure. target: recount steps to target at it from the
    recorded steps (default: the target stored with each run). result_target: recount time to result at it
    (``METRIC>=VALUE``, optbench.time_to_result). progress: ``progress(what, done, total)`` before each phase
    (loading, each figure kind, the pages). heatmap_scale: ``shared`` (default: the bs × lr heatmaps of one
    problem share one colour range, so one colour is one value across them) or ``each`` (every heatmap its own
    range); the colour bar says which.
    """
    from optbench.errors import UsageError
    from optbench.report.build import Builder
    from optbench.targets import check_target

    formats, figures = validate(formats, figures, metric, frames, fps, dpi)
    check_target(target)
    if heatmap_scale not in HEATMAP_SCALES:
        raise UsageError(f"Unknown heatmap scale {heatmap_scale!r}; valid: {', '.join(HEATMAP_SCALES)}.")
    if result_target is not None:
        from optbench.time_to_result import parse_result_target

        parse_result_target(result_target)
    dirs = [Path(d) for d in results_dirs]
    if not dirs:
        raise UsageError("No results directory given; pass one or more directories written by 'optbench run'.")
    return Builder(dirs, Path(out_dir), formats=formats, figures=figures, frames=frames, fps=fps, dpi=dpi,
                   title=title, all_lrs=all_lrs, metric=metric, target=target,
                   result_target=result_target, progress=progress, heatmap_scale=heatmap_scale).build()


class _CallablePackage(types.ModuleType):
    """``optbench.report(dirs, out)`` (optbench.api.report) is this package called: a submodule import binds
    ``optbench.report`` to the package, so the package is made callable rather than shadowing the function."""

    def __call__(self, *args, **kwargs):
        from optbench.api import report

        return report(*args, **kwargs)


sys.modules[__name__].__class__ = _CallablePackage
