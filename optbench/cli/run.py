"""``optbench run``: cross problems with optimizers, run the sweep, print the comparison."""

from __future__ import annotations

import json
import shlex
import sys
import time
from pathlib import Path
from typing import Annotated

import typer

from optbench.cli import common
from optbench.cli.common import errors_handled
from optbench.cli.executors import ExecutorOption, SchedulerFileOption, SchedulerOption, open_executor
from optbench.cli.progress import SweepProgress


def default_out_dir() -> Path:
    return Path("results") / time.strftime("run-%Y%m%d-%H%M%S")


@errors_handled
def run(
    ctx: typer.Context,
    problem: Annotated[str | None, typer.Option("--problem", "-p", help="Problem specs, comma-separated: "
                                                "'saddle,valley(kappa=100)'. See 'optbench list problems'.")] = None,
    opt: Annotated[str | None, typer.Option("--opt", "-o", help="Optimizer specs, comma-separated: "
                                            "'adam(lr=3e-3),sgd-momentum'; user classes as 'pkg.mod:Class' or "
                                            "'file.py:Class'. See 'optbench list optimizers'.")] = None,
    lr: Annotated[str | None, typer.Option(help="Learning rates: '1e-3,1e-2' or a log grid 'LOW:HIGH:N'. "
                                           "Default: each optimizer's own.")] = None,
    seeds: Annotated[int, typer.Option(min=1, help="Number of seeds (0..N-1) per configuration.")] = 1,
    steps: Annotated[int, typer.Option(min=1, help="Optimizer steps per run.")] = 1000,
    epochs: Annotated[int | None, typer.Option(min=1, help="Network problems: epochs per run, replacing --steps "
                                               "(steps = epochs × ceil(n_train / batch size)).")] = None,
    batch_size: Annotated[str | None, typer.Option("--batch-size", help="Batch sizes, comma-separated, "
                                                   "for problems that have one (noisy-quadratic).")] = None,
    schedule: Annotated[str, typer.Option("--schedule", help="Learning-rate schedules, comma-separated (a "
                                          "sweep axis): constant, cosine, linear, step, warmup-cosine, "
                                          "warmup-linear, warmup-constant, one-cycle, e.g. 'warmup-cosine(warmup=0.05, "
                                          "min_lr=1e-5)'. See docs/recipes.md.")] = "constant",
    clip_norm: Annotated[float | None, typer.Option("--clip-norm", help="Clip the gradient the optimizer "
                                                    "sees to this L2 norm (off by default).")] = None,
    clip_value: Annotated[float | None, typer.Option("--clip-value", help="Clip each gradient coordinate "
                                                     "to [-V, V] (off by default).")] = None,
    label_smoothing: Annotated[float, typer.Option("--label-smoothing", help="Label smoothing of the "
                                                   "cross-entropy, network problems only (default 0).")] = 0.0,
    lr_scaling: Annotated[str | None, typer.Option("--lr-scaling", help="Scale each run's learning rate with "
                                                   "its batch size B: linear (lr × B/B_base, Goyal et al. "
                                                   "2017; --recipe linear-warmup adds their warm-up) or sqrt "
                                                   "(lr × √(B/B_base)). "
                                                   "See docs/recipes.md.")] = None,
    base_batch_size: Annotated[int | None, typer.Option("--base-batch-size", min=1, help="B_base of "
                                                        "--lr-scaling and --recipe: the batch size at which the "
                                                        "lr is the given one (default: the smallest).")] = None,
    recipe: Annotated[str | None, typer.Option("--recipe", help="A named batch-size recipe, setting "
                                               "--lr-scaling and --schedule: linear-warmup (alias goyal: "
                                               "lr × B/B_base reached by a linear warm-up over 5% of the "
                                               "steps, then constant; Goyal et al. 2017) or sqrt-warmup "
                                               "(lr × √(B/B_base), same warm-up). Parameter: "
                                               "'linear-warmup(warmup=0.1)' (fraction or steps). See "
                                               "docs/recipes.md.")] = None,
    noise_scale_every: Annotated[int, typer.Option("--noise-scale-every", min=0, help="Network problems: "
                                                   "estimate the gradient noise scale B_simple every N steps "
                                                   "(0: off). See docs/recipes.md.")] = 0,
    engine: Annotated[str, typer.Option(help="auto (batched where supported), loop or batched.")] = "auto",
    device: Annotated[str, typer.Option(help="auto, cpu, cuda, cuda:N or mps. auto: the CPU for analytic "
                                        "problems (tiny tensors), CUDA or MPS for networks when present.")] = "auto",
    dtype: Annotated[str, typer.Option(help="float64 or float32.")] = "float64",
    record_every: Annotated[int | None, typer.Option(min=1, help="Record every N steps "
                                                     "(default: about 1000 rows per run).")] = None,
    target: Annotated[float | None, typer.Option(help="Override the problems' targets for 'steps to "
                                                 "target' (first recorded step with loss − f* ≤ TARGET); "
                                                 "stored with the runs. Not part of the run id: complete "
                                                 "runs in --out are recounted from their recorded steps.")]
    = None,
    out: Annotated[Path | None, typer.Option(help="Results directory (default: results/run-DATE-TIME). "
                                             "Re-running into the same directory skips finished runs.")] = None,
    force: Annotated[bool, typer.Option(help="Re-run runs already complete in --out.")] = False,
    all_lrs: Annotated[bool, typer.Option("--all-lrs", help="Show every learning rate, not only the "
                                          "best per optimizer.")] = False,
    json_out: Annotated[bool, typer.Option("--json", help="Print a machine-readable summary.")] = False,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="Print nothing but errors.")] = False,
    report: Annotated[bool, typer.Option("--report", help="Write a report (figures, tables, index.html, "
                                         "report.md) into OUT/report after the run; see 'optbench report'.")] = False,
    deterministic: Annotated[bool, typer.Option("--deterministic", help="Bitwise-reproducible runs for CI: "
                                                "CPU, float64, torch deterministic algorithms, one "
                                                "thread (see docs/ci.md).")] = False,
    suite: Annotated[Path | None, typer.Option(help="Run every sweep of a suite file (problems/NAME.toml, "
                                               "see docs/suites.md); options given here override it.")] = None,
    workers: Annotated[int, typer.Option(min=1, help="Processes running independent runs (CPU); one per "
                                         "GPU with --device cuda.")] = 1,
    memory_limit: Annotated[str | None, typer.Option("--memory-limit", help="Peak memory for recording "
                                                     "(e.g. 1GiB, 512MiB; default: $OPTBENCH_MEMORY_LIMIT or "
                                                     "1GiB): larger sweeps are written in slices of runs.")] = None,
    executor: ExecutorOption = "local",
    scheduler: SchedulerOption = None,
    scheduler_file: SchedulerFileOption = None,
) -> None:
    """Run optimizers on problems and print a comparison; results go to a directory others can read."""
    from optbench.api import run as run_sweeps
    from optbench.errors import UsageError

    if memory_limit is not None:  # through the environment: suites, re-runs and worker processes all see it
        import os

        from optbench.sweep.memory import ENV, parse_size

        parse_size(memory_limit)
        os.environ[ENV] = memory_limit
    if recipe is not None:
        _check_recipe_options(ctx, recipe, suite)
    runs_on = open_executor(ctx, executor, workers, scheduler, scheduler_file)
    options = sweep_options()
    if suite is not None:
        for name in options:
            if name in NOT_WITH_SUITE and _given(ctx, name):
                raise UsageError(f"--{name.replace('_', '-')} cannot be combined with --suite: "
                                 f"{NOT_WITH_SUITE[name]}.")
    # without --suite every option (defaults included) sets its Sweep field; with one, only those given here
    values = {field: ctx.params[name] for name, field in options.items() if suite is None or _given(ctx, name)}
    outcome = run_sweeps(values.pop("problems", None), values.pop("optimizers", None), suite=suite,
                         out=out or default_out_dir(), force=force, workers=workers, deterministic=deterministic,
                         progress=SweepProgress(quiet or json_out), executor=runs_on,
                         command="optbench " + " ".join(shlex.quote(a) for a in sys.argv[1:]), **values)
    print_outcome(outcome, target=target, all_lrs=all_lrs, json_out=json_out, quiet=quiet)
    _maybe_report(outcome, report, quiet or json_out)


# Sweep fields whose `optbench run` option has another name than their suite key
_OPTION_OF_FIELD = {"problems": "problem", "optimizers": "opt"}
# `run` options that set a Sweep field but cannot apply to a suite: why, in one clause
NOT_WITH_SUITE = {"problem": "the suite lists the problems", "opt": "the suite lists the optimizers",
                  "recipe": "write recipe = NAME in the suite's [[sweep]] tables"}


def sweep_options() -> dict[str, str]:
    """{``run`` option (parameter name): Sweep field}, one per field of :class:`optbench.sweep.spec.Sweep`. Given
    with --suite, each overrides every sweep of the suite (or is refused: NOT_WITH_SUITE); generated from the
    dataclass so that a new field cannot be forgotten."""
    from optbench.suite import sweep_key, sweep_settings

    return {_OPTION_OF_FIELD.get(f.name, sweep_key(f.name)): f.name for f in sweep_settings()}


def _given(ctx: typer.Context, name: str) -> bool:
    source = ctx.get_parameter_source(name)
    return source is not None and source.name == "COMMANDLINE"


def _check_recipe_options(ctx: typer.Context, recipe: str, suite: Path | None) -> None:
    """--recipe sets --lr-scaling and --schedule: either given explicitly beside it (even 'constant') is a
    conflict; a suite names its recipes per sweep."""
    from optbench.errors import UsageError
    from optbench.recipes import get_recipe

    resolved = get_recipe(recipe)  # unknown names fail here, with the nearest ones
    if suite is not None:
        raise UsageError(f"--recipe cannot be combined with --suite: write recipe = {resolved.label!r} in the "
                         "suite's [[sweep]] tables.")
    for option in ("lr_scaling", "schedule"):
        if _given(ctx, option):
            flag = "--" + option.replace("_", "-") + f" {ctx.params[option]}"
            raise UsageError(f"{flag} conflicts with --recipe {resolved.label}, which sets --lr-scaling "
                             f"{resolved.lr_scaling} and --schedule {resolved.schedule!r}: give one or the other.")


def _maybe_report(outcome, report: bool, quiet: bool) -> None:
    if not report:
        return
    from optbench.cli.progress import PhaseProgress
    from optbench.report import build_report

    with PhaseProgress("report", quiet) as progress:
        index = build_report([outcome.out_dir], outcome.out_dir / "report", progress=progress)
    if not quiet:
        common.err_console.print(f"report → {index}")


def print_outcome(outcome, *, target, all_lrs, json_out, quiet) -> None:
    if quiet and not json_out:
        return  # before the imports: -q prints nothing, and needs none of them
    from optbench.analysis.summary import aggregate
    from optbench.results import load_results, load_summary
    from optbench.targets import mixed_targets_warning, with_target

    summary = load_summary(outcome.out_dir)
    if target is not None:  # this sweep's runs are stored at it; others in the directory are recounted
        summary = with_target(load_results(outcome.out_dir, columns=["run_id", "step", "loss"]), summary, target)
    elif not json_out and (warning := mixed_targets_warning(summary)):
        common.err_console.print(f"[yellow]Warning:[/] {warning}", markup=True)
    table = aggregate(summary, best_lr_only=not all_lrs)
    if json_out:
        from optbench.cli.tables import summary_records

        print(json.dumps({"out_dir": str(outcome.out_dir), "runs": outcome.runs_total,
                          "skipped": outcome.runs_skipped, "wall_time_s": round(outcome.wall_time_s, 4),
                          "engines": outcome.engines, "summary": summary_records(table)}, indent=2))
        return
    from optbench.cli.tables import render_summary
    from optbench.formatting import plural

    render_summary(table, common.console)
    skipped = f", {outcome.runs_skipped} already complete" if outcome.runs_skipped else ""
    engines = ", ".join(f"{n} {e}" for e, n in outcome.engines.items())
    common.console.print(f"{plural(outcome.runs_total, 'run')}{skipped} ({engines or 'nothing to run'}) in "
                  f"{outcome.wall_time_s:.2f} s → {outcome.out_dir}")
