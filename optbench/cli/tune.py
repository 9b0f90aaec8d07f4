"""``optbench tune``: tune every optimizer with the same trial budget, re-run the best configurations
over fresh seeds, and print the comparison (the re-runs land in the results directory)."""

from __future__ import annotations

import shlex
import sys
import time
from pathlib import Path
from typing import Annotated

import typer

from optbench.cli.common import console, err_console, errors_handled, fmt_float


@errors_handled
def tune(
    ctx: typer.Context,
    problem: Annotated[str | None, typer.Option("--problem", "-p", help="Problem specs, comma-separated.")] = None,
    opt: Annotated[str | None, typer.Option("--opt", "-o", help="Optimizer specs, comma-separated; "
                                            "hyperparameters set in a spec are not searched.")] = None,
    trials: Annotated[int | None, typer.Option(min=1, help="Trial budget per (problem, optimizer), the same "
                                               "for every optimizer (default: the protocol's).")] = None,
    protocol: Annotated[str, typer.Option(help="tpe, random, random-small (25), random-large (50) or grid "
                                          "(DeepOBS lr grid, 36). See docs/tuning.md.")] = "tpe",
    space: Annotated[str | None, typer.Option(help="Extra searched hyperparameters: "
                                              "'momentum=0.5:0.99,lr=1e-4:1:log'. Default: lr in "
                                              "[1e-5, 10], log-uniform.")] = None,
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
    workers: Annotated[int, typer.Option(min=1, help="Processes tuning independent studies in parallel "
                                         "(one study per problem × optimizer).")] = 1,
    sampler_seed: Annotated[int, typer.Option("--sampler-seed", help="Seed of the sampler.")] = 0,
    suite: Annotated[Path | None, typer.Option(help="Take problems, optimizers and the [tune] table from a "
                                               "suite file; command-line options win.")] = None,
    out: Annotated[Path | None, typer.Option(help="Results directory (default: results/tune-DATE-TIME).")] = None,
    force: Annotated[bool, typer.Option(help="Re-run re-runs already complete in --out.")] = False,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="Print nothing but errors.")] = False,
) -> None:
    """Tune each optimizer's hyperparameters with one Optuna study per problem, with equal budgets."""
    from optbench.errors import UsageError
    from optbench.optimizers import get_optimizer
    from optbench.problems import get_problem
    from optbench.results import read_manifest, write_manifest
    from optbench.runner import DTYPES, ENGINES, Sweep, run_sweep
    from optbench.spec import parse_spec_list
    from optbench.tuning import get_protocol, parse_space, tune_one
    from optbench.tuning.spaces import check_space

    def given(name: str) -> bool:
        source = ctx.get_parameter_source(name)
        return source is not None and source.name == "COMMANDLINE"

    seed_list = list(range(seeds))
    if suite is not None:
        from optbench.suite import load_suite

        conf = load_suite(suite).tune
        problem = problem or (",".join(conf["problems"]) if "problems" in conf else None)
        opt = opt or (",".join(conf["optimizers"]) if "optimizers" in conf else None)
        trials = trials if given("trials") else conf.get("trials", trials)
        protocol = protocol if given("protocol") else conf.get("protocol", protocol)
        space = space if given("space") else conf.get("space", space)
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
    dims = parse_space(space)
    check_space(optimizers, dims)
    budget = proto.budget(trials)
    out_dir = out or Path("results") / time.strftime("tune-%Y%m%d-%H%M%S")
    out_dir.mkdir(parents=True, exist_ok=True)

    if clip_norm is not None and not (clip_norm > 0):
        raise UsageError(f"--clip-norm must be positive (got {clip_norm:g}).")
    pairs = [(prob, optimizer) for prob in problems for optimizer in optimizers]
    options = dict(batch=batch, seed=sampler_seed, engine=engine, dtype=dtype, pruner=pruner, clip_norm=clip_norm)
    t0 = time.perf_counter()
    progress = _RoundProgress(budget * len(pairs), quiet)
    try:
        if workers > 1 and len(pairs) > 1:
            from optbench.tuning.parallel import tune_parallel

            if not quiet:
                err_console.print(f"tuning {len(pairs)} studies in {min(workers, len(pairs))} processes: "
                                  f"{proto.name}, {budget} trials each", highlight=False)
            results = tune_parallel(pairs, workers=workers, protocol=proto, trials=budget, dims=dims, steps=steps,
                                    storage=storage, out_dir=out_dir, progress=progress.advance, **options)
        else:
            results = []
            for prob, optimizer in pairs:
                if not quiet:
                    progress.print(f"tuning {optimizer.label} on {prob.label}: {proto.name}, {budget} trials")
                results.append(tune_one(prob, optimizer, protocol=proto, trials=budget, dims=dims, steps=steps,
                                        storage=storage, out_dir=out_dir, progress=progress.advance, **options))
    finally:
        progress.close()
    tune_s = time.perf_counter() - t0

    command = "optbench " + " ".join(shlex.quote(a) for a in sys.argv[1:])
    outcomes = []
    for prob in problems:
        best = [r.best_config for r in results if r.problem == prob.label and r.best_config is not None]
        if best:
            sweep = Sweep([prob], best, seeds=seed_list, steps=steps, engine=engine, dtype=dtype, clip_norm=clip_norm)
            outcomes.append(run_sweep(sweep, out_dir, force=force, command=command))
    manifest = read_manifest(out_dir)
    manifest.setdefault("tuning", []).append({
        "command": command, "protocol": proto.name, "protocol_doc": proto.doc, "budget": budget,
        "steps": steps, "clip_norm": clip_norm, "batch": batch, "workers": workers,
        "rerun_seeds": seed_list, "storage": storage or str(out_dir / "tuning.journal"),
        "tuning_wall_time_s": round(tune_s, 4), "studies": [r.record() for r in results]})
    write_manifest(out_dir, manifest)
    if quiet:
        return
    _print(results, out_dir, proto, budget, seed_list, tune_s, time.perf_counter() - t0)


class _RoundProgress:
    """A rich progress bar over tuning trials (done, failed, ETA), advanced once per round. Shown only on a
    terminal, never under -q or when the CI environment variable is set, and only for work longer than
    about a second."""

    def __init__(self, total: int, quiet: bool):
        import os

        self.total, self.done, self.failed = total, 0, 0
        self.quiet = quiet or not err_console.is_terminal or bool(os.environ.get("CI"))
        self.start, self.bar, self.task = time.perf_counter(), None, None

    def print(self, text: str) -> None:
        (self.bar.console if self.bar is not None else err_console).print(text, highlight=False)

    def advance(self, n: int, failed: int = 0) -> None:
        self.done += n
        self.failed += failed
        if self.quiet:
            return
        if self.bar is None and time.perf_counter() - self.start > 0.8 and self.done < self.total:
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

            self.bar = Progress(TextColumn("trials"), BarColumn(), MofNCompleteColumn(),
                                TextColumn("{task.fields[failed]} failed"), TimeRemainingColumn(),
                                console=err_console, transient=True)
            self.bar.start()
            self.task = self.bar.add_task("tune", total=self.total, failed=0)
        if self.bar is not None:
            self.bar.update(self.task, completed=self.done, failed=self.failed)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.stop()


def _print(results, out_dir: Path, proto, budget: int, seeds: list[int], tune_s: float, total_s: float) -> None:
    from rich.table import Table

    from optbench.cli.tables import render_summary
    from optbench.results import load_summary
    from optbench.summary import aggregate

    table = Table(title=f"tuning: protocol {proto.name}, budget {budget} trials per optimizer", title_style="bold")
    for col in ("problem", "optimizer", "searched", "best", "best trial loss", "trials"):
        table.add_column(col)
    for r in results:
        best = ", ".join(f"{k}={fmt_float(v)}" for k, v in (r.best_params or {}).items()) or "all trials failed"
        states = ", ".join(f"{k} {v}" for k, v in sorted(r.states.items()))
        table.add_row(r.problem, r.optimizer, "; ".join(r.dims), best, fmt_float(r.best_value), states)
    console.print(table)
    summary = load_summary(out_dir)
    if len(summary):
        console.print(f"Best configurations re-run over {len(seeds)} fresh seeds "
                      f"(verdicts from protocol {proto.name}, {budget} trials each):")
        render_summary(aggregate(summary, best_lr_only=False), console)
    console.print(f"tuning {tune_s:.2f} s, total {total_s:.2f} s → {out_dir}")
