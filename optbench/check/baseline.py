"""Recording a suite's baseline and checking results against one: the orchestration behind ``optbench baseline``
and ``optbench check`` (and :func:`optbench.api.baseline` / :func:`optbench.api.check`), printing nothing.

A suite check runs the suite deterministically (CPU, float64, one thread; optbench.determinism), with each
optimizer's hyperparameter-branch variants added to its noise-free analytic sweeps (optbench.check.branches),
and compares it with the stored baseline (optbench.check.compare). Two directories compare directly. The mode
(exact: seed by seed; statistical: seed medians) is the caller's, else the suite's ``[check] mode``, else exact
when both sides ran deterministically. See docs/ci.md.
"""

from __future__ import annotations

import shutil
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from optbench.errors import UsageError


@dataclass
class BaselineOutcome:
    """A recorded baseline: where it is, how many runs it holds, the branch variants it added per optimizer."""

    out_dir: Path
    suite_name: str
    suite_path: Path
    runs: int
    wall_time_s: float
    size_bytes: int
    branch_variants: dict[str, list[str]] = field(default_factory=dict)


@dataclass
class CheckResult:
    """A check's verdicts: ``table`` has one row per configuration and metric (optbench.check.compare's
    VERDICT_COLUMNS), ``failed`` its regressions; ``passed`` is what ``optbench check``'s exit code says."""

    table: Any  # pandas.DataFrame
    failed: Any  # pandas.DataFrame: the rows of table that failed
    warnings: list[str]
    tolerances: Any  # optbench.check.compare.Tolerances
    baseline_dir: Path
    new_dir: Path
    suite_name: str = ""
    wall_time_s: float = 0.0
    junit: Path | None = None
    markdown: Path | None = None

    @property
    def passed(self) -> bool:
        return not len(self.failed)

    @property
    def configurations(self) -> int:
        """Configurations compared (problem × optimizer label × lr × batch size × steps)."""
        return len(self.table.drop_duplicates(["problem", "optimizer_label", "lr", "batch_size", "steps"]))


def default_baseline(suite) -> Path:
    """A suite's baseline directory: its ``[check] baseline``, else results/baselines/SUITE-NAME."""
    return Path(suite.check.get("baseline") or Path("results") / "baselines" / suite.name)


def suite_sweeps(suite_path: str | Path, opt=None):
    """Load a suite, replace its optimizers by ``opt`` (specs or configs), make it deterministic; returns
    (suite, sweeps)."""
    from optbench.determinism import deterministic_settings, enable_determinism
    from optbench.suite import load_suite

    suite = load_suite(suite_path)
    enable_determinism()  # before anything runs (the branch variants' probes)
    if not suite.sweeps:
        raise UsageError(f"{suite_path}: no [[sweep]] table: nothing to check.")
    optimizers = None
    if opt:
        from optbench.resolve import resolve_optimizers

        optimizers = resolve_optimizers(opt)
    for sweep in suite.sweeps:
        if optimizers is not None:
            sweep.optimizers = list(optimizers)
        sweep.device, sweep.dtype = deterministic_settings(sweep.problems, sweep.device, sweep.dtype,
                                                           what=f"the suite {suite.name!r} (CI checks)")
    return suite, suite.sweeps


def add_branch_variants(suite, sweeps, recorded: dict[str, list[str]] | None = None) -> dict[str, list[str]]:
    """Add each optimizer's hyperparameter-branch variants to the deterministic sweeps (no gradient noise:
    there a branch's bug shows in the last digits; in a noisy sweep the seed noise would hide it and the
    seeds multiply the cost) (optbench.check.branches), unless the suite says ``[check] branches = false``.
    ``recorded`` ({label: variant specs}, from the baseline's
    manifest) replaces the probing, so that a check runs the configurations of its baseline even when a
    change makes a branch inert. Returns {label: variant specs} for the manifest."""
    from optbench.check.branches import branch_variants
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


def run_suite_sweeps(sweeps, out_dir: Path, command: str = "", progress=None) -> set[str]:
    """Run every sweep afresh into ``out_dir``; returns the run ids that belong to this suite. ``progress``:
    run_sweep's progress factory."""
    from optbench.runner import run_sweep

    run_ids: set[str] = set()
    for sweep in sweeps:
        run_ids.update(r.run_id for r in sweep.expand())
        run_sweep(sweep, out_dir, force=True, command=command, progress_factory=progress)
    return run_ids


def record_baseline(suite: str | Path, out: str | Path | None = None, *, opt=None, command: str = "",
                    progress: Callable[[int, int], Any] | None = None) -> BaselineOutcome:
    """Record (or refresh) the baseline of a suite: a deterministic run of it, written to a hidden folder beside
    ``out`` and moved into place only once complete (nothing half-written on a crash); only what an optbench
    store holds is replaced. ``opt`` replaces the suite's optimizers (its labels are recorded)."""
    from optbench.results import (
        MANIFEST,
        STEPS_DIR,
        SUMMARY_DIR,
        load_summary,
        make_output_dir,
        read_manifest,
        write_manifest,
    )

    suite_obj, sweeps = suite_sweeps(suite, opt)
    variants = add_branch_variants(suite_obj, sweeps)
    out_dir = Path(out) if out is not None else default_baseline(suite_obj)
    make_output_dir(out_dir.parent, shown=out_dir)  # out_dir itself only once the baseline is complete
    t0 = time.perf_counter()
    tmp = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", dir=out_dir.parent))
    try:
        run_suite_sweeps(sweeps, tmp, command, progress)
        manifest = read_manifest(tmp)
        manifest["baseline"] = {"suite": str(suite), "suite_name": suite_obj.name, "check": suite_obj.check,
                                "optimizers": _opt_text(opt), "branch_variants": variants,
                                "created": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
        write_manifest(tmp, manifest)
        out_dir.mkdir(parents=True, exist_ok=True)
        for name in (STEPS_DIR, SUMMARY_DIR):
            shutil.rmtree(out_dir / name, ignore_errors=True)
            (tmp / name).rename(out_dir / name)
        (tmp / MANIFEST).replace(out_dir / MANIFEST)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    size = sum(p.stat().st_size for p in out_dir.rglob("*") if p.is_file())
    return BaselineOutcome(out_dir, suite_obj.name, Path(suite), len(load_summary(out_dir)),
                           time.perf_counter() - t0, size, variants)


def _opt_text(opt) -> str | None:
    """``opt`` as the baseline's manifest records it: the spec text as typed (labels for config objects)."""
    if opt is None or isinstance(opt, str):
        return opt or None
    return ",".join(o if isinstance(o, str) else o.label for o in opt)


def run_check(new: str | Path | None = None, against: str | Path | None = None, *, suite: str | Path | None = None,
              opt=None, out: str | Path | None = None, mode: str | None = None, rtol: float | None = None,
              atol: float | None = None, test: str | None = None, tolerances=None,
              junit: str | Path | None = None, markdown: str | Path | None = None, command: str = "",
              progress: Callable[[int, int], Any] | None = None) -> CheckResult:
    """Compare ``new`` results with ``against`` (two directories), or run ``suite`` deterministically into
    ``out`` (default results/check/SUITE-NAME) and compare it with its baseline (``against``, default the
    suite's). ``tolerances`` (a :class:`~optbench.check.compare.Tolerances` or a ``[check]``-style dict)
    replaces the suite's and the baseline's ``[check]`` table; ``mode``/``rtol``/``atol``/``test`` override.
    Configurations missing on one side raise :class:`~optbench.check.compare.ConfigMismatch` (a UsageError)
    before any work. Writes ``junit``/``markdown`` when given."""
    from optbench.check.compare import Tolerances, compare, environment_differences, hparam_changes, regressions
    from optbench.results import check_file_writable, load_summary, read_manifest

    junit = Path(junit) if junit is not None else None
    markdown = Path(markdown) if markdown is not None else None
    for option, path in (("--junit", junit), ("--markdown", markdown)):  # before any compute
        if path is not None:
            check_file_writable(path, option)
    if tolerances is not None and not isinstance(tolerances, (Tolerances, dict)):
        raise UsageError(f"tolerances={tolerances!r}: give a Tolerances or a dict like a suite's [check] table.")
    t0 = time.perf_counter()
    check_table: dict[str, Any] = tolerances if isinstance(tolerances, dict) else {}
    suite_name = ""
    if suite is not None:
        if new is not None:
            raise UsageError("Give either NEW_RESULTS (with --against) or --suite, not both.")
        suite_obj, sweeps = suite_sweeps(suite, opt)
        suite_name, check_table = suite_obj.name, check_table or suite_obj.check
        base_dir = Path(against) if against is not None else default_baseline(suite_obj)
        base_summary, base_manifest = load_summary(base_dir), read_manifest(base_dir)  # a missing one: exit 2
        add_branch_variants(suite_obj, sweeps, base_manifest.get("baseline", {}).get("branch_variants"))
        # a baseline of other configurations is a usage error before any work
        plan_mode = tolerances.mode if isinstance(tolerances, Tolerances) and mode is None else mode
        check_planned_configurations(sweeps, base_summary, base_manifest, check_table, plan_mode)
        new_dir = Path(out) if out is not None else Path("results") / "check" / suite_obj.name
        run_ids = run_suite_sweeps(sweeps, new_dir, command, progress)
        new_summary = load_summary(new_dir)
        new_summary = new_summary[new_summary["run_id"].astype(str).isin(run_ids)].reset_index(drop=True)
    else:
        if new is None or against is None:
            raise UsageError("Give NEW_RESULTS --against BASELINE_RESULTS, or --suite SUITE.")
        if opt:
            raise UsageError("--opt applies with --suite (it replaces the suite's optimizers); to compare "
                             "existing results give both directories.")
        new_dir, base_dir = Path(new), Path(against)
        new_summary = load_summary(new_dir)
    base_summary = load_summary(base_dir)
    renamed = same_file_labels(new_summary, base_summary)
    new_summary = new_summary.assign(optimizer_label=new_summary["optimizer_label"].astype(str).replace(renamed))
    base_manifest, new_manifest = read_manifest(base_dir), read_manifest(new_dir)
    if isinstance(tolerances, Tolerances):
        import dataclasses

        given: dict[str, Any] = {k: v for k, v in (("mode", mode), ("rtol", rtol), ("atol", atol), ("test", test))
                                 if v is not None}
        tol = dataclasses.replace(tolerances, **given)
    else:
        if not check_table:
            check_table = base_manifest.get("baseline", {}).get("check", {}) or {}
        if mode is None and "mode" not in check_table:
            both = all(m.get("environment", {}).get("deterministic") for m in (base_manifest, new_manifest))
            mode = "exact" if both else "statistical"
        tol = Tolerances.from_dict(check_table, mode=mode, rtol=rtol, atol=atol, test=test)
    table = compare(new_summary, base_summary, tol, new_test_acc=final_test_accuracy(new_dir),
                    baseline_test_acc=final_test_accuracy(base_dir))
    warnings = [f"environments differ ({d}): bitwise equality is not expected; consider --mode statistical "
                "or a baseline recorded on the CI machine" for d in [
                    "; ".join(environment_differences(new_manifest, base_manifest))] if d]
    warnings += hparam_changes(new_summary, base_summary)
    warnings += [f"{new!r} and the baseline's {base!r} name the same file: compared as one configuration"
                 for new, base in renamed.items()]
    failed = regressions(table)
    result = CheckResult(table, failed, warnings, tol, base_dir, new_dir, suite_name)
    if junit:
        from optbench.check.output import write_junit

        write_junit(junit, table, suite_name=f"optbench check{': ' + suite_name if suite_name else ''}",
                    properties={"baseline": base_dir, "new": new_dir, "tolerances": tol.describe()},
                    time_s=time.perf_counter() - t0)
        result.junit = junit
    if markdown:
        write_markdown_summary(markdown, result, base_summary, new_summary)
        result.markdown = markdown
    result.wall_time_s = time.perf_counter() - t0
    return result


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


def check_planned_configurations(sweeps, base_summary, base_manifest, check_table, mode) -> None:
    """Compare the configurations the suite will run (and, in exact mode, their seeds) with the baseline's before
    running anything; labels that name one file in two spellings are the same configuration."""
    import pandas as pd

    from optbench.check.compare import coverage, per_run_metrics

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


def final_test_accuracy(directory: Path):
    """Last test accuracy per run when the results hold a network track (test_acc column), else None."""
    import pyarrow.parquet as pq

    from optbench.check.compare import last_test_accuracy
    from optbench.results import STEPS_DIR, load_results

    chunks = sorted((Path(directory) / STEPS_DIR).glob("*.parquet"))
    if not chunks or not any("test_acc" in pq.read_schema(c).names for c in chunks):
        return None
    return last_test_accuracy(load_results(directory, columns=["run_id", "step", "test_acc"]))




def write_markdown_summary(path: Path, result: CheckResult, base_summary, new_summary) -> None:
    """The Markdown summary (PR comment), with the loss curves of regressions beside it (optbench.report
    draws them; without matplotlib the summary says so)."""
    from optbench.check.compare import KEY
    from optbench.check.output import markdown_summary, write_markdown
    from optbench.report.regressions import regression_figures

    failed, warnings = result.failed, result.warnings
    keys = list(failed[KEY].drop_duplicates().itertuples(index=False, name=None)) if len(failed) else []
    figures = regression_figures(result.baseline_dir, result.new_dir, base_summary, new_summary, keys,
                                 path.parent / f"{path.stem}-figures")
    if keys and not figures:
        warnings = [*warnings, "loss-curve figures need matplotlib (pip install matplotlib)"]
    write_markdown(path, markdown_summary(result.table, baseline=str(result.baseline_dir), new=str(result.new_dir),
                                          tolerances=result.tolerances.describe(), warnings=warnings,
                                          figures=figures, base_dir=path.parent, suite_name=result.suite_name))
