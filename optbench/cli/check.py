"""``optbench check`` and ``optbench baseline``: fail CI when an optimizer's behaviour changes.

check NEW --against BASELINE compares two results directories; check --suite FILE runs the suite
deterministically and compares it with the stored baseline. Exit codes: 0 behaviour holds, 1 regression,
2 usage error (including configurations missing on one side). See docs/ci.md.
"""

from __future__ import annotations

import shlex
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Annotated, Any

import typer

from optbench.cli.common import EXIT_FAILURE, console, err_console, errors_handled
from optbench.formatting import fmt_num, plural

OptOption = Annotated[str | None, typer.Option(
    "--opt", "-o", help="Replace the suite's optimizers: comma-separated specs, user classes included "
    "('my_pkg.optim:MyAdam', 'path/to/opt.py:MyAdam(lr=1e-3)'). The label is the spec as typed, so "
    "baseline and check must name the optimizer the same way; two spellings of one file path ('./opt.py', "
    "'opt.py') compare as one.")]
SuiteOption = Annotated[Path | None, typer.Option("--suite", help="Suite file (TOML), e.g. problems/ci.toml.")]


def _default_baseline(suite) -> Path:
    return Path(suite.check.get("baseline") or Path("results") / "baselines" / suite.name)


def _suite_sweeps(suite_path: Path, opt: str | None):
    """Load a suite, apply --opt, make it deterministic; returns (suite, sweeps)."""
    from optbench.determinism import deterministic_settings, enable_determinism
    from optbench.suite import load_suite

    suite = load_suite(suite_path)
    enable_determinism()  # before anything runs (the branch variants' probes)
    if not suite.sweeps:
        from optbench.errors import UsageError

        raise UsageError(f"{suite_path}: no [[sweep]] table: nothing to check.")
    optimizers = None
    if opt:
        from optbench.optimizers import get_optimizer
        from optbench.spec import parse_spec_list

        optimizers = [get_optimizer(s) for s in parse_spec_list(opt)]
    for sweep in suite.sweeps:
        if optimizers is not None:
            sweep.optimizers = list(optimizers)
        sweep.device, sweep.dtype = deterministic_settings(sweep.problems, sweep.device, sweep.dtype,
                                                           what=f"the suite {suite.name!r} (CI checks)")
    return suite, suite.sweeps


def _add_branch_variants(suite, sweeps, recorded: dict[str, list[str]] | None = None) -> dict[str, list[str]]:
    """Add each optimizer's hyperparameter-branch variants to the deterministic sweeps (no gradient noise:
    there a branch's bug shows in the last digits; in a noisy sweep the seed noise would hide it and the
    seeds multiply the cost) (optbench.check_branches), unless the suite says ``[check] branches = false``.
    ``recorded`` ({label: variant specs}, from the baseline's
    manifest) replaces the probing, so that a check runs the configurations of its baseline even when a
    change makes a branch inert. Returns {label: variant specs} for the manifest."""
    from optbench.check_branches import branch_variants
    from optbench.errors import UsageError
    from optbench.optimizers import get_optimizer

    branches = suite.check.get("branches", True)
    if not isinstance(branches, bool):
        raise UsageError(f"{suite.path}: [check] branches = {branches!r}: expected true or false.")
    chosen: dict[str, list[str]] = {}
    if not branches:
        return chosen
    for sweep in sweeps:
        if any(getattr(p, "kind", "") != "analytic" or p.noise_std() is not None for p in sweep.problems):
            continue
        configs = list(sweep.optimizers)
        for config in list(sweep.optimizers):
            if config.label not in chosen:
                if recorded is not None and config.label in recorded:
                    chosen[config.label] = list(recorded[config.label])
                else:
                    chosen[config.label] = [v.label for v in branch_variants(config)]
            labels = {c.label for c in configs}
            configs += [get_optimizer(spec) for spec in chosen[config.label] if spec not in labels]
        sweep.optimizers = configs
    return chosen


def _run_suite(sweeps, out_dir: Path, command: str, quiet: bool) -> set[str]:
    """Run every sweep afresh into ``out_dir``; returns the run ids that belong to this suite."""
    from optbench.cli.run import _Progress
    from optbench.runner import run_sweep

    run_ids: set[str] = set()
    for sweep in sweeps:
        run_ids.update(r.run_id for r in sweep.expand())
        run_sweep(sweep, out_dir, force=True, command=command,
                  progress_factory=lambda steps, runs: _Progress(steps, runs, quiet))
    return run_ids


def _command() -> str:
    return "optbench " + " ".join(shlex.quote(a) for a in sys.argv[1:])


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
    from optbench.results import (
        MANIFEST,
        STEPS_DIR,
        SUMMARY_DIR,
        load_summary,
        make_output_dir,
        read_manifest,
        write_manifest,
    )

    suite_obj, sweeps = _suite_sweeps(suite, opt)
    variants = _add_branch_variants(suite_obj, sweeps)
    out_dir = out or _default_baseline(suite_obj)
    make_output_dir(out_dir.parent, shown=out_dir)  # out_dir itself only once the baseline is complete
    t0 = time.perf_counter()
    tmp = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", dir=out_dir.parent))
    try:
        _run_suite(sweeps, tmp, _command(), quiet)
        manifest = read_manifest(tmp)
        manifest["baseline"] = {"suite": str(suite), "suite_name": suite_obj.name, "check": suite_obj.check,
                                "optimizers": opt, "branch_variants": variants,
                                "created": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
        write_manifest(tmp, manifest)
        # replace only what an optbench store holds, so nothing else in the folder is touched
        out_dir.mkdir(parents=True, exist_ok=True)
        for name in (STEPS_DIR, SUMMARY_DIR):
            shutil.rmtree(out_dir / name, ignore_errors=True)
            (tmp / name).rename(out_dir / name)
        (tmp / MANIFEST).replace(out_dir / MANIFEST)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    if not quiet:
        runs = len(load_summary(out_dir))
        size = sum(p.stat().st_size for p in out_dir.rglob("*") if p.is_file())
        console.print(f"Baseline of suite {suite_obj.name!r}: {plural(runs, 'run')} in "
                      f"{time.perf_counter() - t0:.1f} s → {out_dir} ({size / 1024:.0f} KiB). Commit it; "
                      f"'optbench check --suite {suite}' compares later runs with it.")


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
    from optbench.check import Tolerances, compare, environment_differences, hparam_changes, regressions
    from optbench.errors import UsageError
    from optbench.results import check_file_writable, load_summary, read_manifest

    for option, path in (("--junit", junit), ("--markdown", markdown)):  # before any compute
        if path is not None:
            check_file_writable(path, option)
    t0 = time.perf_counter()
    check_table: dict[str, Any] = {}
    suite_name = ""
    if suite is not None:
        if new_results is not None:
            raise UsageError("Give either NEW_RESULTS (with --against) or --suite, not both.")
        suite_obj, sweeps = _suite_sweeps(suite, opt)
        suite_name, check_table = suite_obj.name, suite_obj.check
        base_dir = against or _default_baseline(suite_obj)
        base_summary, base_manifest = load_summary(base_dir), read_manifest(base_dir)  # a missing one: exit 2
        _add_branch_variants(suite_obj, sweeps, base_manifest.get("baseline", {}).get("branch_variants"))
        # a baseline of other configurations is a usage error before any work
        _check_planned_configurations(sweeps, base_summary, base_manifest, check_table, mode)
        new_dir = out or Path("results") / "check" / suite_obj.name
        run_ids = _run_suite(sweeps, new_dir, _command(), quiet)
        new_summary = load_summary(new_dir)
        new_summary = new_summary[new_summary["run_id"].astype(str).isin(run_ids)].reset_index(drop=True)
    else:
        if new_results is None or against is None:
            raise UsageError("Give NEW_RESULTS --against BASELINE_RESULTS, or --suite SUITE.")
        if opt:
            raise UsageError("--opt applies with --suite (it replaces the suite's optimizers); to compare "
                             "existing results give both directories.")
        new_dir, base_dir = new_results, against
        new_summary = load_summary(new_dir)
    base_summary = load_summary(base_dir)
    renamed = same_file_labels(new_summary, base_summary)
    new_summary = new_summary.assign(optimizer_label=new_summary["optimizer_label"].astype(str).replace(renamed))
    base_manifest, new_manifest = read_manifest(base_dir), read_manifest(new_dir)
    if not check_table:
        check_table = base_manifest.get("baseline", {}).get("check", {}) or {}
    if mode is None and "mode" not in check_table:
        both = all(m.get("environment", {}).get("deterministic") for m in (base_manifest, new_manifest))
        mode = "exact" if both else "statistical"
    tolerances = Tolerances.from_dict(check_table, mode=mode, rtol=rtol, atol=atol, test=test)
    table = compare(new_summary, base_summary, tolerances, new_test_acc=_test_acc(new_dir),
                    baseline_test_acc=_test_acc(base_dir))
    warnings = [f"environments differ ({d}): bitwise equality is not expected; consider --mode statistical "
                "or a baseline recorded on the CI machine" for d in [
                    "; ".join(environment_differences(new_manifest, base_manifest))] if d]
    warnings += hparam_changes(new_summary, base_summary)
    warnings += [f"{new!r} and the baseline's {base!r} name the same file: compared as one configuration"
                 for new, base in renamed.items()]
    failed = regressions(table)
    _print(table, failed, warnings, tolerances.describe(), base_dir, new_dir, all_rows, quiet)
    if junit:
        from optbench.check_output import write_junit

        write_junit(junit, table, suite_name=f"optbench check{': ' + suite_name if suite_name else ''}",
                    properties={"baseline": base_dir, "new": new_dir, "tolerances": tolerances.describe()},
                    time_s=time.perf_counter() - t0)
    if markdown:
        _write_markdown(markdown, table, failed, base_dir, new_dir, base_summary, new_summary,
                        tolerances.describe(), warnings, suite_name)
    if len(failed):
        raise typer.Exit(EXIT_FAILURE)


def same_file_labels(new_summary, base_summary) -> dict[str, str]:
    """{new optimizer label: the baseline's} for labels that differ only in how a user file's path is spelled
    (``./opt.py:MyAdam`` and ``opt.py:MyAdam``: ``labels.resolved_label`` is equal); the runs keep their ids."""
    from optbench.labels import resolved_label

    base_labels = set(base_summary["optimizer_label"].astype(str))
    by_file = {resolved_label(label): label for label in sorted(base_labels)}
    out = {}
    for label in sorted(set(new_summary["optimizer_label"].astype(str)) - base_labels):
        same = by_file.get(resolved_label(label))
        if same is not None:
            out[label] = same
    return out


def _check_planned_configurations(sweeps, base_summary, base_manifest, check_table, mode) -> None:
    """Compare the configurations the suite will run (and, in exact mode, their seeds) with the baseline's before
    running anything; labels that name one file in two spellings are the same configuration."""
    import pandas as pd

    from optbench.check import coverage, per_run_metrics

    runs = [run for sweep in sweeps for run in sweep.expand()]
    planned = pd.DataFrame({
        "run_id": [r.run_id for r in runs], "problem": [r.problem.label for r in runs],
        "optimizer_label": [r.optimizer_label for r in runs],
        "lr": [r.optimizer.lr if r.optimizer.lr is not None else float("nan") for r in runs],
        "batch_size": pd.array([r.problem.batch_size for r in runs], dtype="Int64"),
        "steps": [r.steps for r in runs], "seed": [r.seed for r in runs],
        "final_loss": float("nan"), "best_loss": float("nan"), "steps_to_target": float("nan"), "status": "done"})
    planned["optimizer_label"] = planned["optimizer_label"].replace(same_file_labels(planned, base_summary))
    if mode is None:  # the check's own default (the new side of --suite runs deterministically)
        mode = check_table.get("mode") or ("exact" if base_manifest.get("environment", {}).get("deterministic")
                                           else "statistical")
    mismatch = coverage(per_run_metrics(planned), per_run_metrics(base_summary), mode)
    if mismatch is not None:
        raise mismatch


def _test_acc(directory: Path):
    """Last test accuracy per run when the results hold a network track (test_acc column), else None."""
    import pyarrow.parquet as pq

    from optbench.check import last_test_accuracy
    from optbench.results import STEPS_DIR, load_results

    chunks = sorted((Path(directory) / STEPS_DIR).glob("*.parquet"))
    if not chunks or not any("test_acc" in pq.read_schema(c).names for c in chunks):
        return None
    return last_test_accuracy(load_results(directory, columns=["run_id", "step", "test_acc"]))


def _write_markdown(path: Path, table, failed, base_dir, new_dir, base_summary, new_summary, tolerances: str,
                    warnings: list[str], suite_name: str) -> None:
    from optbench.check import KEY
    from optbench.check_figures import regression_figures
    from optbench.check_output import markdown_summary, write_markdown

    keys = list(failed[KEY].drop_duplicates().itertuples(index=False, name=None)) if len(failed) else []
    figures = regression_figures(base_dir, new_dir, base_summary, new_summary, keys,
                                 path.parent / f"{path.stem}-figures")
    if keys and not figures:
        warnings = [*warnings, "loss-curve figures need matplotlib (pip install matplotlib)"]
    write_markdown(path, markdown_summary(table, baseline=str(base_dir), new=str(new_dir), tolerances=tolerances,
                                          warnings=warnings, figures=figures, base_dir=path.parent,
                                          suite_name=suite_name))


def _print(table, failed, warnings, tolerances: str, base_dir, new_dir, all_rows: bool, quiet: bool) -> None:
    from rich.table import Table

    from optbench.check import config_label
    from optbench.check_output import fmt_band
    from optbench.formatting import fmt_change, fmt_value

    for w in warnings:
        err_console.print(f"[yellow]Warning:[/] {w}", markup=True)
    shown = table if all_rows else failed
    if len(shown):
        out = Table(title=f"optbench check: {new_dir} against {base_dir}", title_justify="left")
        for name, justify in (("configuration", "left"), ("metric", "left"), ("baseline", "right"),
                              ("new", "right"), ("allowed", "left"), ("change", "right"), ("verdict", "left")):
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
