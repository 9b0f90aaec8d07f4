"""``optbench gallery``: every registered optimizer tuned on Rosenbrock and Rastrigin with equal budgets, each
best trajectory drawn on the function's contours, and an index page ranking them (optbench.gallery)."""

from __future__ import annotations

import shlex
import sys
from pathlib import Path
from typing import Annotated

import typer

from optbench.cli.common import console, errors_handled
from optbench.gallery import DEFAULT_DTYPE, DEFAULT_STEPS, DEFAULT_TRIALS


@errors_handled
def gallery(
    out: Annotated[Path, typer.Option(help="Gallery directory: tuning journal, results, figures/, index.html, "
                                      "index.md, gallery.json. Re-running resumes it.")] = Path("gallery"),
    opt: Annotated[str | None, typer.Option("--opt", "-o", help="Optimizers to include, comma-separated "
                                            "(default: every registered optimizer that can run here).")] = None,
    problems: Annotated[str | None, typer.Option("--problems", "-p", help="2-D analytic problems, "
                                                 "comma-separated (default: the peer's 'rosenbrock(start=(-2.0, "
                                                 "2.0)),rastrigin(start=(-2.0, 3.5))').")] = None,
    trials: Annotated[int, typer.Option(min=1, help="Trials per problem × optimizer, the same for every "
                                        "optimizer.")] = DEFAULT_TRIALS,
    steps: Annotated[int, typer.Option(min=1, help="Optimizer steps per trial and per re-run.")] = DEFAULT_STEPS,
    workers: Annotated[int, typer.Option(min=1, help="Processes tuning studies in parallel (each also re-runs "
                                          "and draws the studies it tuned).")] = 1,
    batch: Annotated[int | None, typer.Option(min=1, help="Trials asked for and evaluated together (default: "
                                              "trials/10, at least 8, at most 64: about ten TPE rounds).")] = None,
    dtype: Annotated[str, typer.Option(help="float32 (the peer's, torch's default) or float64.")] = DEFAULT_DTYPE,
    clip_norm: Annotated[float, typer.Option("--clip-norm", min=0.0, help="Clip every gradient to this norm, as "
                                             "the peer does (0: no clipping).")] = 1.0,
    sampler_seed: Annotated[int, typer.Option("--sampler-seed", help="Seed of the sampler.")] = 0,
    figure_format: Annotated[str, typer.Option("--format", help="png or svg.")] = "png",
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="Print nothing but errors.")] = False,
) -> None:
    """Tune every optimizer on Rosenbrock and Rastrigin with equal budgets and draw the gallery."""
    from optbench.cli.progress import TrialProgress
    from optbench.errors import UsageError
    from optbench.formatting import fmt_num, plural
    from optbench.gallery import run_gallery
    from optbench.sweep.spec import DTYPES

    if dtype not in DTYPES:
        raise UsageError(f"Unknown dtype {dtype!r}; valid dtypes: {', '.join(DTYPES)}.")

    def log(text: str) -> None:
        if not quiet:
            console.print(text, markup=False, highlight=False)

    outcome = run_gallery(out, problems=problems, optimizers=opt, trials=trials, steps=steps, workers=workers,
                          batch=batch, dtype=dtype, clip_norm=clip_norm or None, sampler_seed=sampler_seed,
                          figure_format=figure_format,
                          progress_factory=lambda total, studies: TrialProgress(total, studies, quiet),
                          log=log, command="optbench " + " ".join(shlex.quote(a) for a in sys.argv[1:]))
    if quiet:
        return
    for label in outcome.settings["problems"]:
        ranked = sorted((e for e in outcome.entries if e.problem == label and e.rank),
                        key=lambda e: e.rank or 0)[:5]  # (every one here has a rank)
        best = ", ".join(f"{e.rank}. {e.optimizer} {fmt_num(e.final_loss)}" for e in ranked) or "none"
        log(f"{label}: {best}")
    if outcome.skipped:
        names = ", ".join(s.optimizer for s in outcome.skipped)
        log(f"not in the gallery: {plural(len(outcome.skipped), 'optimizer')} ({names}; "
            f"reasons in {outcome.index_md.name})")
    log(f"tuning {outcome.tune_s:.1f} s, total {outcome.total_s:.1f} s → {outcome.index_html}")
