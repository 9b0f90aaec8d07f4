"""The Python twin of every command: ``optbench.run``, ``tune``, ``report``, ``baseline`` and ``check`` do what
``optbench run``, ``tune``, ``report``, ``baseline`` and ``check`` do (the CLI calls these same functions), print
nothing and return result objects. Mistakes raise :mod:`optbench.errors` exceptions (``UsageError``,
``SpecError``), never ``SystemExit``.

Problems and optimizers are spec strings (``"rosenbrock"``, ``"adam(lr=0.01),sgd"``), lists of them, or the
objects ``optbench.get_problem`` / ``optbench.get_optimizer`` return (optbench.resolve)::

    import optbench

    outcome = optbench.run("rosenbrock,valley(kappa=100)", ["adam", "sgd-momentum"], lrs=[1e-3, 1e-2],
                           seeds=3, steps=500, out="results/demo")
    outcome.summary          # the comparison table 'optbench run' prints (a DataFrame)
    optbench.report(outcome.out_dir).index   # report/index.html

Progress: ``progress`` is the factory ``run_sweep`` takes (``progress(total_steps, total_runs)`` returning an
object with ``advance(n)`` and ``close()``); :func:`tune` documents its own. Without one, nothing is shown.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from optbench.errors import UsageError

if TYPE_CHECKING:
    from optbench.check.baseline import BaselineOutcome, CheckResult
    from optbench.tuning.orchestrate import TuneOutcome

__all__ = ["ReportOutcome", "RunOutcome", "baseline", "check", "report", "run", "sweep_value", "tune"]


def _command(name: str) -> str:
    return f"optbench.{name}() (Python API)"


# ---- run ----------------------------------------------------------------------------------------


@dataclass
class RunOutcome:
    """What :func:`run` did (``runner.SweepOutcome``'s counts and timings) and which runs it asked for."""

    out_dir: Path
    runs_total: int
    runs_skipped: int
    runs_done: int
    wall_time_s: float
    engines: dict[str, int] = field(default_factory=dict)  # {engine: runs it ran}
    run_ids: list[str] = field(default_factory=list)  # every run of the sweep(s), in order, done here or before

    @property
    def runs(self):
        """One summary row per run of this call (optbench.columns' summary schema)."""
        from optbench.results import load_summary

        summary = load_summary(self.out_dir)
        return summary[summary["run_id"].astype(str).isin(set(self.run_ids))].reset_index(drop=True)

    @property
    def summary(self):
        """The comparison table ``optbench run`` prints for the directory: the best lr per optimizer."""
        return self.table()

    def table(self, *, all_lrs: bool = False, target: float | None = None):
        """The comparison table over seeds (optbench.analysis.summary.aggregate); ``all_lrs``: every learning rate;
        ``target``: steps to target recounted at it from the recorded steps."""
        from optbench.analysis.summary import aggregate
        from optbench.results import load_results, load_summary

        summary = load_summary(self.out_dir)
        if target is not None:
            from optbench.targets import with_target

            summary = with_target(load_results(self.out_dir, columns=["run_id", "step", "loss"]), summary, target)
        return aggregate(summary, best_lr_only=not all_lrs)


def sweep_value(name: str, value: Any) -> Any:
    """A Sweep field's value as a caller (or the command line) gives it → as ``Sweep`` takes it, validated:
    specs resolved, ``lrs`` from ``'1e-3,1e-2'`` or a log grid ``'LOW:HIGH:N'``, ``seeds`` from a count,
    ``batch_sizes`` from ``'32,128'``, ``schedules`` as canonical labels. Other fields pass unchanged."""
    from optbench.spec import parse_float_list

    if value is None:
        return None
    if name == "problems":
        from optbench.resolve import resolve_problems

        return resolve_problems(value)
    if name == "optimizers":
        from optbench.resolve import resolve_optimizers

        return resolve_optimizers(value)
    if name == "lrs":
        lrs = parse_float_list(value, "--lr") if isinstance(value, str) else [_number("lrs", v) for v in _seq(value)]
        if any(v <= 0 for v in lrs):
            raise UsageError(f"--lr {value!r}: learning rates must be > 0.")
        return lrs
    if name == "seeds":
        if isinstance(value, bool) or not isinstance(value, int):
            return [int(_number("seeds", s)) for s in _seq(value)]
        if value < 1:
            raise UsageError(f"seeds={value}: give a number of seeds >= 1 (or a list of seeds).")
        return list(range(value))
    if name == "batch_sizes":
        if isinstance(value, str):
            try:
                batch_sizes = [int(b) for b in value.split(",")]
            except ValueError:
                raise UsageError(f"--batch-size {value!r}: expected integers like '32,128'.") from None
        else:
            batch_sizes = [int(_number("batch_sizes", b)) for b in _seq(value)]
        if any(b < 1 for b in batch_sizes):
            raise UsageError(f"--batch-size {value!r}: batch sizes must be >= 1.")
        return batch_sizes
    if name == "schedules":
        from optbench.schedules import get_schedule
        from optbench.spec import parse_spec_list

        specs = parse_spec_list(value) if isinstance(value, str) else list(_seq(value))
        return [get_schedule(s).label for s in specs]
    return value


def _seq(value: Any) -> list[Any]:
    return list(value) if isinstance(value, (list, tuple, range)) else [value]


def _number(name: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise UsageError(f"{name}: {value!r} is not a number.")
    return float(value) if name == "lrs" else value


def _sweep_fields() -> tuple[str, ...]:
    """The flat settings a sweep takes: Sweep fields and Recipe fields (``optbench.suite.sweep_settings``)."""
    from optbench.suite import sweep_settings

    return ("problems", "optimizers", *(f.name for f in sweep_settings() if f.name not in ("problems", "optimizers")))


def run(problems=None, optimizers=None, *, lrs=None, seeds=None, steps: int | None = None,
        engine: str | None = None, suite: str | Path | None = None, out: str | Path | None = None,
        force: bool = False, workers: int = 1, deterministic: bool = False, progress=None, command: str | None = None,
        executor=None, **options: Any) -> RunOutcome:
    """Run optimizers on problems into ``out`` (default results/run-DATE-TIME), as ``optbench run``.

    ``lrs``: learning rates (None: each optimizer's own); ``seeds``: a count (0..N-1, default 1) or a list;
    ``steps``: default 1000; ``engine``: auto (default), loop or batched. ``options``: any other field of
    :class:`optbench.sweep.spec.Sweep` or its Recipe (``batch_sizes``, ``schedules``, ``clip_norm``, ``epochs``,
    ``recipe_name``,
    ``device``, ``dtype``, ``record_every``, ``target``, ...). With ``suite`` (a suite file), every sweep of
    it runs, and the options given here (None: not given) override them. Re-running into the same ``out``
    skips complete runs (``force``: re-run them). ``deterministic``: CPU, float64, one thread (docs/ci.md).
    """
    import time

    given = {"lrs": lrs, "seeds": seeds, "steps": steps, "engine": engine, **options}
    fields = _sweep_fields()
    unknown = sorted(set(given) - set(fields))
    if unknown:
        from optbench.errors import suggest

        raise UsageError(f"{unknown[0]!r} is not a sweep option.{suggest(unknown[0], fields)} "
                         f"Valid: {', '.join(f for f in fields if f not in ('problems', 'optimizers'))}.")
    if suite is not None and (problems is not None or optimizers is not None):
        raise UsageError("Give problems and optimizers, or a suite, not both: the suite lists them.")
    if suite is None and (not problems or not optimizers):
        raise UsageError("Give --problem and --opt, or --suite FILE.")
    values = {name: sweep_value(name, v) for name, v in given.items() if v is not None}
    out_dir = Path(out) if out is not None else Path("results") / time.strftime("run-%Y%m%d-%H%M%S")
    command = _command("run") if command is None else command
    if suite is not None:
        from optbench.suite import apply_overrides, load_suite, run_suite

        outcome = run_suite(suite, out_dir, overrides=values, deterministic=deterministic, force=force,
                            workers=workers, command=command, progress_factory=progress, executor=executor)
        sweeps = apply_overrides(load_suite(suite).sweeps, values, deterministic=deterministic)
        run_ids = list(dict.fromkeys(r.run_id for s in sweeps for r in s.expand()))
    else:
        from optbench.runner import run_sweep
        from optbench.sweep.spec import Sweep

        sweep = Sweep.build(sweep_value("problems", problems), sweep_value("optimizers", optimizers), **values)
        if deterministic:
            from optbench.determinism import deterministic_settings, enable_determinism

            sweep.device, sweep.dtype = deterministic_settings(sweep.problems, sweep.device, sweep.dtype)
            enable_determinism()
        outcome = run_sweep(sweep, out_dir, force=force, command=command, progress_factory=progress,
                            workers=workers, executor=executor)
        run_ids = list(dict.fromkeys(outcome.run_ids))  # run_sweep expanded the sweep: not a second time
    return RunOutcome(outcome.out_dir, outcome.runs_total, outcome.runs_skipped, outcome.runs_done,
                      outcome.wall_time_s, dict(outcome.engines), run_ids)


# ---- tune ---------------------------------------------------------------------------------------


def tune(problems=None, optimizers=None, *, suite: str | Path | None = None, trials: int | str | None = None,
         protocol: str | None = None, space: str | None = None, schedule: str | None = None,
         seeds: int | Sequence[int] | None = None, steps: int | None = None, batch: int | None = None,
         workers: int | None = None, storage: str | None = None, engine: str = "auto", dtype: str = "float64",
         pruner: str = "none", clip_norm: float | None = None, clip_value: float | None = None,
         label_smoothing: float = 0.0, sampler_seed: int = 0, out: str | Path | None = None, force: bool = False,
         progress=None, rerun_progress=None, while_waiting=None, command: str | None = None,
         executor=None) -> TuneOutcome:
    """Tune every optimizer on every problem with the same trial budget, re-run the best configurations over
    fresh seeds into ``out`` (default results/tune-DATE-TIME) and record the tuning in its manifest, as
    ``optbench tune`` (optbench.tuning.orchestrate).

    ``trials``: the budget per (problem, optimizer) (an int, or ``'600,sgd=1200'``; default the protocol's);
    ``protocol``: tpe (default), random, random-small, random-large or grid; ``space``: extra searched
    hyperparameters (``'momentum=0.5:0.99'``); ``schedule``: one lr schedule for every trial; ``seeds``: the
    re-runs' seeds (a count, default 5, or a list); ``steps``: per trial and re-run (default 200); ``batch``:
    trials evaluated together (default 64). With ``suite``, its ``[tune]`` table fills what is not given
    (None). ``progress(total_trials, studies)``: see :func:`optbench.tuning.orchestrate.run_tuning`.
    """
    from optbench.tuning.orchestrate import run_tuning, with_suite

    settings = with_suite(suite, {"problems": problems, "optimizers": optimizers, "trials": trials,
                                  "protocol": protocol, "space": space, "schedule": schedule, "steps": steps,
                                  "batch": batch, "workers": workers, "storage": storage, "seeds": seeds})
    return run_tuning(settings.pop("problems"), settings.pop("optimizers"), **settings, engine=engine, dtype=dtype,
                      pruner=pruner, clip_norm=clip_norm, clip_value=clip_value, label_smoothing=label_smoothing,
                      sampler_seed=sampler_seed, out=out, force=force,
                      command=_command("tune") if command is None else command, progress_factory=progress,
                      rerun_progress=rerun_progress, while_waiting=while_waiting, executor=executor)


# ---- report -------------------------------------------------------------------------------------


@dataclass
class ReportOutcome:
    """What :func:`report` wrote: ``index`` (index.html), ``markdown`` (report.md), and the figure and table
    files under ``out_dir``."""

    out_dir: Path
    index: Path
    markdown: Path
    figures: list[Path] = field(default_factory=list)
    tables: list[Path] = field(default_factory=list)


def report(dirs, out: str | Path | None = None, *, progress=None, **options: Any) -> ReportOutcome:
    """Draw the figures and write the report (HTML and Markdown) of one or more results directories (merged)
    into ``out`` (default FIRST_DIR/report), as ``optbench report``. ``options``: those of
    :func:`optbench.report.build_report` (``formats``, ``figures``, ``frames``, ``fps``, ``dpi``, ``title``,
    ``all_lrs``, ``metric``, ``target``, ``result_target``, ``heatmap_scale``); ``formats`` and ``figures``
    may be comma-separated text. ``progress(what, done, total)`` before each phase."""
    import inspect

    from optbench.report import build_report

    dir_list = [Path(dirs)] if isinstance(dirs, (str, Path)) else [Path(d) for d in dirs]
    if not dir_list:
        raise UsageError("No results directory given; pass one or more directories written by 'optbench run'.")
    accepted = [n for n, p in inspect.signature(build_report).parameters.items() if p.kind == p.KEYWORD_ONLY
                and n != "progress"]
    unknown = sorted(set(options) - set(accepted))
    if unknown:
        raise UsageError(f"{unknown[0]!r} is not a report option; valid: {', '.join(accepted)}.")
    for name in ("formats", "figures"):
        if isinstance(options.get(name), str):
            options[name] = [v for v in (p.strip() for p in options[name].split(",")) if v]
    out_dir = Path(out) if out is not None else dir_list[0] / "report"
    index = build_report(dir_list, out_dir, progress=progress, **options)
    index = Path(index)
    files = lambda sub: sorted(p for p in (index.parent / sub).rglob("*") if p.is_file())  # noqa: E731
    return ReportOutcome(index.parent, index, index.parent / "report.md", files("figures"), files("tables"))


# ---- baseline and check -------------------------------------------------------------------------


def baseline(suite: str | Path, out: str | Path | None = None, *, opt=None, progress=None,
             command: str | None = None) -> BaselineOutcome:
    """Record (or refresh) the baseline of a suite, as ``optbench baseline``: a deterministic run of it into
    ``out`` (default the suite's ``[check] baseline``, else results/baselines/SUITE-NAME), replacing what an
    optbench store holds there only once complete. ``opt`` (specs or configs) replaces the suite's optimizers."""
    from optbench.check.baseline import record_baseline

    return record_baseline(suite, out, opt=opt, command=_command("baseline") if command is None else command,
                           progress=progress)


def check(new: str | Path | None = None, baseline: str | Path | None = None, *, suite: str | Path | None = None,
          tolerances=None, opt=None, out: str | Path | None = None, mode: str | None = None,
          rtol: float | None = None, atol: float | None = None, test: str | None = None,
          junit: str | Path | None = None, markdown: str | Path | None = None, progress=None,
          command: str | None = None) -> CheckResult:
    """Compare results with a baseline, as ``optbench check``; ``result.passed`` is False where a behaviour
    changed beyond tolerance (``result.failed`` lists those checks, ``result.table`` every one).

    ``check(new_dir, baseline_dir)`` compares two results directories; ``check(suite="problems/ci.toml")`` (or a
    ``.toml`` file as ``new``) runs the suite deterministically into ``out`` and compares it with ``baseline``
    (default: the suite's). ``tolerances``: a :class:`optbench.check.compare.Tolerances` or a dict like a
    suite's ``[check]`` table (default: the suite's, else the baseline's); ``mode`` (exact or statistical),
    ``rtol``, ``atol``, ``test`` override it. Different configurations on the two sides raise ``ConfigMismatch``
    (a UsageError)."""
    from optbench.check.baseline import run_check

    if suite is None and new is not None and Path(new).suffix == ".toml" and Path(new).is_file():
        new, suite = None, new
    return run_check(new, baseline, suite=suite, opt=opt, out=out, mode=mode, rtol=rtol, atol=atol, test=test,
                     tolerances=tolerances, junit=junit, markdown=markdown,
                     command=_command("check") if command is None else command, progress=progress)
