"""The gallery: every registered optimizer that can run on a 2-D analytic problem, tuned on Rosenbrock and
Rastrigin with equal budgets, its best trajectory drawn on the function's contours, and an index ranking them.

What pytorch_optimizer's ``examples/visualize_optimizers.py`` does one optimizer at a time, as one resumable
job (``optbench gallery``):

1. **Plan** (:func:`plan_gallery`): every entry of the optimizer registry, unless its capabilities say it
   cannot run here (:func:`skip_reason`: ``unsupported``, ``matrix_only``, ``max_dim`` below the problem's
   dimension, nothing to tune); skipped ones are listed with that reason, never run wrongly.
2. **Tune** one study per function × optimizer with the same protocol, trials and steps for all (the
   default space: lr log-uniform in [1e-5, 10], the multiplier range [0.1, 10] for lr-free methods), the
   gradient clipped to norm 1 as the peer clips it, every trial from the function's fixed start. Trials run
   as one tensor computation where the optimizer has a batched rule, else side by side on the loop engine
   (:mod:`optbench.engines.trials`). Studies live in ``OUT/tuning.journal``: a study already complete is not
   tuned again, an interrupted one continues where its last finished round ended.
3. **Re-run** each study's best configuration once from the same start (``run_sweep``, record every step,
   seed ``TUNE_SEED`` as the trials): the results files hold the trajectory, its final loss and distance to
   the minimum, which the ranking reads. Runs already complete are skipped.
4. **Draw** one figure per function × optimizer (:func:`optbench.report.gallery.draw_trajectories`) and the index
   (``OUT/index.html``, ``OUT/index.md``, ``OUT/gallery.json``), each written atomically.

With ``workers > 1`` steps 3 and 4 of a study run in the worker that tuned it, as soon as its tuning ends
(:func:`_finish_in_worker`: its run's chunk and its figure, both atomic); this process then finds those runs
complete and those figures drawn, and does steps 3 and 4 only for what is missing (the studies complete
before this call, a study whose every trial failed). The files are the same either way.
"""

from __future__ import annotations

import functools
import json
import time
from collections.abc import Set as AbstractSet
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from optbench.errors import UsageError

_worker_canvases = None  # a tuning worker's figure canvases, kept across its studies (_finish_in_worker)

# the peer's functions and starts (pytorch_optimizer's visualize_optimizers.py)
DEFAULT_PROBLEMS = ("rosenbrock(start=(-2.0, 2.0))", "rastrigin(start=(-2.0, 3.5))")
DEFAULT_TRIALS = 600  # per function × optimizer, the same for every optimizer (the budget measured against the peer)
DEFAULT_DTYPE = "float32"  # the peer's (torch's default); float64 on request
DEFAULT_STEPS = 200  # per trial and per re-run
CLIP_NORM = 1.0  # every trial's gradient clipped to this norm, as the peer does
MAX_ROUND, TPE_ROUNDS = 64, 10  # trials per round: about TPE_ROUNDS rounds whatever the budget, at most MAX_ROUND


def round_size(trials: int) -> int:
    """Trials asked for and evaluated together by default: ``trials // 10`` (at least 8, at most 64), so that a
    small budget still gets about ten TPE updates (in rounds of 64, 100 trials would be two)."""
    return max(8, min(MAX_ROUND, trials // TPE_ROUNDS))
INDEX_JSON, INDEX_HTML, INDEX_MD = "gallery.json", "index.html", "index.md"
FIGURES_DIR = "figures"


@dataclass(frozen=True)
class Skipped:
    """An optimizer the gallery does not tune, and why (from its registry capabilities)."""

    optimizer: str
    reason: str


@dataclass
class GalleryEntry:
    """One function × optimizer of the gallery: its study and the re-run of its best configuration."""

    problem: str  # problem label, e.g. rosenbrock(start=(-2.0, 2.0))
    problem_name: str
    optimizer: str
    searched: list[str]
    trials: int  # trials the verdict was read from
    steps: int
    best_params: dict[str, float] | None
    best_trial_loss: float | None
    lr_free: bool = False
    gradient_free: bool = False  # the clip of the protocol does not reach it (OptimizerEntry.gradient_free)
    final_loss: float | None = None  # of the re-run of the best configuration
    dist_to_min: float | None = None
    status: str = "all trials failed"
    engine: str = ""
    run_id: str = ""
    figure: str = ""  # path relative to the gallery directory
    rank: int | None = None  # 1 = lowest final loss on this problem


@dataclass
class GalleryOutcome:
    out_dir: Path
    entries: list[GalleryEntry]
    skipped: list[Skipped]
    studies_tuned: int  # studies that needed trials in this call
    studies_complete_before: int
    tune_s: float
    total_s: float
    index_html: Path
    index_md: Path
    protocol: str = "tpe"
    settings: dict[str, Any] = field(default_factory=dict)


def skip_reason(entry, problem, dims, protocol) -> str | None:
    """Why the gallery cannot tune registry ``entry`` on ``problem`` (a 2-D analytic problem), or None."""
    from optbench.optimizers import get_optimizer
    from optbench.tuning.study import check_tuning

    if entry.unsupported:
        return f"unsupported: {entry.unsupported}"
    if entry.matrix_only:
        return f"meant for matrices: {entry.matrix_only}"
    if entry.max_dim is not None and entry.max_dim < problem.dim:
        return f"practical up to dimension {entry.max_dim}, below {problem.dim}"
    if "lr" not in entry.params and not set(dims) & set(entry.params):
        return "nothing to tune: it has no lr hyperparameter, the gallery's search space"
    try:
        check_tuning(get_optimizer(entry.name), dims, protocol)
    except UsageError as exc:
        return str(exc)
    return None


def resolve_problems(specs) -> list:
    """Problem specs (default: the peer's Rosenbrock and Rastrigin starts) → 2-D analytic problems."""
    from optbench.problems import get_problem
    from optbench.spec import parse_spec_list

    problems = [get_problem(s) for s in (parse_spec_list(specs) if isinstance(specs, str) else
                                         list(specs or DEFAULT_PROBLEMS))]
    for p in problems:
        if p.kind != "analytic" or p.dim != 2:
            raise UsageError(f"The gallery draws 2-D analytic problems; {p.label!r} is "
                             f"{'a ' + p.kind + ' problem' if p.kind != 'analytic' else f'{p.dim}-D'}: "
                             "give e.g. --problems rosenbrock,rastrigin,beale.")
    if len({p.label for p in problems}) != len(problems):
        raise UsageError("--problems lists a problem twice; give each once.")
    return problems


def plan_gallery(problems, names=None, *, dims=None, protocol=None) -> tuple[list[tuple[Any, Any]], list[Skipped]]:
    """The (problem, optimizer config) pairs to tune and the optimizers skipped with their reasons.

    ``names``: optimizer names (or specs) to limit the gallery to (default: every registered optimizer);
    an unknown name is a ``SpecError`` listing the alternatives, and a named optimizer that cannot run here
    is skipped with its reason as any other."""
    from optbench.optimizers import get_optimizer, list_optimizers
    from optbench.optimizers.registry import get_optimizer_entry
    from optbench.spec import Spec, parse_spec_list
    from optbench.tuning import get_protocol, parse_space
    from optbench.tuning.spaces import resolve_space

    protocol = protocol or get_protocol("tpe")
    dims = resolve_space(dims if dims is not None else parse_space(""), None)
    if names is None:
        specs = [Spec(e.name, {}) for e in list_optimizers()]
    else:
        specs = parse_spec_list(names) if isinstance(names, str) else [s if isinstance(s, Spec) else
                                                                        parse_spec_list(s)[0] for s in names]
        if len({(s.name, tuple(sorted(s.kwargs.items()))) for s in specs}) != len(specs):
            raise UsageError("--opt lists an optimizer twice; give each once.")
    entries = [get_optimizer_entry(s.name) for s in specs]  # unknown names fail here, before any work
    pairs: list[tuple[Any, Any]] = []  # (problem, optimizer config)
    skipped: list[Skipped] = []
    for spec, entry in zip(specs, entries):
        if entry.unsupported:  # get_optimizer refuses it: its reason is the skip reason
            skipped.append(Skipped(spec.name, f"unsupported: {entry.unsupported}"))
            continue
        config = get_optimizer(spec)
        reasons = {r for r in (skip_reason(entry, p, dims, protocol) for p in problems) if r is not None}
        if reasons:
            skipped.append(Skipped(config.label, "; ".join(sorted(reasons))))
            continue
        pairs.extend((p, config) for p in problems)
    return pairs, skipped


def run_gallery(out_dir: str | Path, *, problems=None, optimizers=None, trials: int = DEFAULT_TRIALS,
                steps: int = DEFAULT_STEPS, workers: int = 1, batch: int | None = None, dtype: str = DEFAULT_DTYPE,
                clip_norm: float | None = CLIP_NORM, sampler_seed: int = 0, figure_format: str = "png",
                progress_factory=None, log=print, command: str = "") -> GalleryOutcome:
    """Tune, re-run and draw the gallery into ``out_dir`` (see the module docstring).

    ``progress_factory(trials_to_run, studies)``: returns an object with ``begin_study(i, n)`` (each study
    tuned in this process, i counting the complete ones too), ``advance(n_trials, n_failed)`` (every round),
    ``study_done()`` (each study that ends, complete ones first) and ``close()``, such as
    ``cli.progress.TrialProgress``; ``log(text)``: one line per phase."""
    from optbench.formatting import plural
    from optbench.results import check_writable
    from optbench.tuning import get_protocol, parse_space
    from optbench.tuning.study import TUNE_SEED

    batch = round_size(trials) if batch is None else batch
    if trials < 1 or steps < 1 or workers < 1 or batch < 1:
        raise UsageError(f"--trials, --steps, --workers and --batch must be at least 1 (got {trials}, {steps}, "
                         f"{workers}, {batch}).")
    if figure_format not in ("png", "svg"):
        raise UsageError(f"Unknown figure format {figure_format!r}; valid: png, svg.")
    t0 = time.perf_counter()
    problems = resolve_problems(problems)
    protocol, dims = get_protocol("tpe"), parse_space("")
    pairs, skipped = plan_gallery(problems, optimizers, dims=dims, protocol=protocol)
    if not pairs:
        raise UsageError("No optimizer of --opt can run on these problems: "
                         + "; ".join(f"{s.optimizer}: {s.reason}" for s in skipped))
    out = check_writable(out_dir)
    from optbench.engines.recipe import Recipe

    options = dict(batch=batch, loop_batch=batch, seed=sampler_seed, engine="auto", dtype=dtype,
                   recipe=Recipe(clip_norm=clip_norm))

    finished = _finished_studies(pairs, out, protocol, dims, trials, steps, dtype, clip_norm)
    todo = [i for i in range(len(pairs)) if i not in finished]
    if finished:
        log(f"{len(finished)} of {len(pairs)} studies already complete in {out}: not tuned again")
    log(f"tuning {plural(len(todo), 'study', 'studies')} ({plural(len(pairs) // len(problems), 'optimizer')} × "
        f"{plural(len(problems), 'problem')}, {plural(len(skipped), 'optimizer')} skipped): tpe, {trials} trials × "
        f"{steps} steps each")
    results: dict[int, Any] = dict(finished)
    t_tune = time.perf_counter()
    progress = progress_factory(trials * len(todo), len(pairs)) if progress_factory is not None else None
    if progress is not None:
        for _ in finished:
            progress.study_done()
    folders = figure_folders(problems)
    after_study = functools.partial(_finish_in_worker, out=out, steps=steps, dtype=dtype, clip_norm=clip_norm,
                                    seed=TUNE_SEED, folders=folders, ext=figure_format)
    try:
        _tune(pairs, todo, results, out, protocol, dims, trials, steps, workers, len(finished), progress, options,
              after_study)
    finally:
        if progress is not None:
            progress.close()
    tune_s = time.perf_counter() - t_tune
    drawn = {results[i].after for i in todo if results[i].after}  # (run id, figure) drawn by the workers

    log("re-running each best configuration once (trajectories)")
    entries = _rerun_best(out, pairs, results, steps, dtype, clip_norm, TUNE_SEED, command)
    rank_entries(entries)
    log(f"drawing {len(entries)} figures and the index")
    _draw_figures(out, entries, problems, figure_format, drawn)
    settings = {"protocol": protocol.name, "trials": trials, "steps": steps, "clip_norm": clip_norm, "dtype": dtype,
                "batch": batch, "sampler_seed": sampler_seed, "workers": workers,
                "problems": [p.label for p in problems], "command": command}
    outcome = GalleryOutcome(out, entries, skipped, len(todo), len(finished), tune_s, 0.0, out / INDEX_HTML,
                             out / INDEX_MD, protocol.name, settings)
    outcome.total_s = time.perf_counter() - t0
    write_index(outcome, problems)
    return outcome


def _tune(pairs, todo: list[int], results: dict[int, Any], out: Path, protocol, dims, trials: int, steps: int,
          workers: int, complete: int, progress, options: dict[str, Any], after_study=None) -> None:
    """Tune the studies ``todo`` (indices into ``pairs``) into ``results``: in ``workers`` processes (each
    running ``after_study`` as a study ends), or in turn in this one with the journal opened once."""
    from optbench.tuning.study import open_storage, tune_one

    if todo and workers > 1 and len(todo) > 1:
        from optbench.report.style import pyplot
        from optbench.tuning.parallel import tune_parallel

        pyplot()  # matplotlib imported once, here, before the workers fork (they draw the figures)
        tuned = tune_parallel([pairs[i] for i in todo], workers=workers, protocol=protocol, trials=trials, dims=dims,
                              steps=steps, storage=None, out_dir=out,
                              progress=progress.advance if progress is not None else None,
                              study_done=progress.study_done if progress is not None else None,
                              after_study=after_study, **options)
        results.update(zip(todo, tuned))
    elif todo:
        journal = open_storage(None, out)
        for n, i in enumerate(todo, start=complete + 1):
            if progress is not None:
                progress.begin_study(n, len(pairs))
            problem, optimizer = pairs[i]
            results[i] = tune_one(problem, optimizer, protocol=protocol, trials=trials, dims=dims, steps=steps,
                                  out_dir=out, journal=journal,
                                  progress=progress.advance if progress is not None else None, **options)
            if progress is not None:
                progress.study_done()


def _finished_studies(pairs, out: Path, protocol, dims, trials: int, steps: int, dtype: str,
                      clip_norm: float | None) -> dict[int, Any]:
    """Results of the studies of ``pairs`` that ``OUT/tuning.journal`` already holds with their whole budget."""
    if not (out / "tuning.journal").exists():
        return {}
    import optuna

    from optbench.engines.recipe import Recipe
    from optbench.tuning.spaces import study_space
    from optbench.tuning.study import open_storage, study_name, summarize

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    store, _ = open_storage(None, out)
    names = {s.study_name for s in store.get_all_studies()}
    done = {}
    for i, (problem, optimizer) in enumerate(pairs):
        space = study_space(optimizer, dims, protocol)
        name = study_name(problem, optimizer, protocol, steps, space, dtype, Recipe(clip_norm=clip_norm))
        if name not in names:
            continue
        study = optuna.load_study(study_name=name, storage=store)
        result = summarize(study.get_trials(deepcopy=False), problem, optimizer, protocol, protocol.budget(trials),
                           space, name, 0, 0.0)
        if result.trials_used >= result.budget:
            done[i] = result
    return done


def _entry(problem, optimizer, result, steps: int) -> GalleryEntry:
    """The gallery entry of a study's result, before its re-run."""
    return GalleryEntry(problem.label, problem.name, optimizer.label, list(result.dims), result.trials_used, steps,
                        result.best_params, result.best_value, lr_free=optimizer.entry.lr_free,
                        gradient_free=optimizer.entry.gradient_free)


def _best_sweep(problem, configs: list, steps: int, dtype: str, clip_norm, seed: int):
    """The sweep re-running ``configs`` (best configurations) on ``problem``, every step recorded."""
    from optbench.sweep.spec import Sweep

    return Sweep.build([problem], configs, seeds=[seed], steps=steps, record_every=1, dtype=dtype,
                       clip_norm=clip_norm)


def _finish_in_worker(problem, optimizer, result, *, out: Path, steps: int, dtype: str, clip_norm, seed: int,
                      folders: dict[str, str], ext: str) -> tuple[str, str] | None:
    """Steps 3 and 4 for one study, in the tuning worker as its tuning ends (``tune_parallel``'s
    ``after_study``): re-run its best configuration, write the run's chunk as ``run_sweep`` would, draw its
    figure; returns (run id, figure) for the parent to skip both, or None where it has nothing to skip (every
    trial failed, or that run's chunk already exists: the parent reads it as it would have)."""
    global _worker_canvases
    from optbench.results import STEPS_DIR, write_chunk
    from optbench.sweep import plan
    from optbench.sweep.tables import trace_tables
    from optbench.sweep.writer import chunk_id

    if result.best_config is None:
        return None
    sweep = _best_sweep(problem, [result.best_config], steps, dtype, clip_norm, seed)
    [(engine, group)] = plan.plan_groups(sweep.expand(), sweep.engine)
    if (out / STEPS_DIR / f"{chunk_id(group)}.parquet").exists():
        return None
    steps_table, summary_table = trace_tables(group, plan.execute(engine, group), engine)
    write_chunk(out, chunk_id(group), steps_table, summary_table)
    entry = _entry(problem, optimizer, result, steps)
    row = summary_table.slice(0, 1).to_pylist()[0]
    entry.run_id = group[0].run_id
    entry.final_loss, entry.dist_to_min = float(row["final_loss"]), float(row["dist_to_min"])
    entry.status, entry.engine = str(row["status"]), str(row["engine"])
    entry.figure = _figure_name(entry, folders[problem.label], ext)
    import numpy as np

    path = np.column_stack([steps_table.column("x0").to_numpy(), steps_table.column("x1").to_numpy()])
    if _worker_canvases is None:
        from optbench.report.gallery import Canvases

        _worker_canvases = Canvases()
    _worker_canvases.draw(problem, path, entry, out / entry.figure)
    return entry.run_id, entry.figure


def _rerun_best(out: Path, pairs, results: dict[int, Any], steps: int, dtype: str, clip_norm, seed: int,
                command: str) -> list[GalleryEntry]:
    """Re-run every study's best configuration once (one sweep per problem; finished runs are skipped) and
    read the verdicts from the results files."""
    from optbench.results import load_summary
    from optbench.runner import run_sweep

    entries, best = [], []
    by_problem: dict[str, tuple[Any, list]] = {}
    for i, (problem, optimizer) in enumerate(pairs):
        r = results[i]
        entry = _entry(problem, optimizer, r, steps)
        entries.append(entry)
        best.append(r.best_config)
        if r.best_config is not None:
            by_problem.setdefault(problem.label, (problem, []))[1].append(r.best_config)
    run_ids = {}
    for problem, configs in by_problem.values():
        sweep = _best_sweep(problem, configs, steps, dtype, clip_norm, seed)
        run_ids.update({(problem.label, run.optimizer.label): run.run_id for run in sweep.expand()})
        run_sweep(sweep, out, command=command)
    for entry, config in zip(entries, best):
        if config is not None:
            entry.run_id = run_ids[(entry.problem, config.label)]
    if not by_problem:
        return entries
    summary = load_summary(out).set_index("run_id")
    for entry in entries:
        if entry.run_id and entry.run_id in summary.index:
            row = summary.loc[entry.run_id]
            entry.final_loss, entry.dist_to_min = float(row["final_loss"]), float(row["dist_to_min"])
            entry.status, entry.engine = str(row["status"]), str(row["engine"])
    return entries


def rank_entries(entries: list[GalleryEntry]) -> None:
    """Rank the entries of each problem by the re-run's final loss (ties by distance to the minimum, then
    name); runs that diverged or whose every trial failed come last, unranked."""
    import math

    by_problem: dict[str, list[GalleryEntry]] = {}
    for e in entries:
        by_problem.setdefault(e.problem, []).append(e)
    for group in by_problem.values():
        ranked = [e for e in group if e.status == "done" and e.final_loss is not None and math.isfinite(e.final_loss)]
        ranked.sort(key=lambda e: (e.final_loss, e.dist_to_min if e.dist_to_min == e.dist_to_min else math.inf,
                                   e.optimizer))
        for n, e in enumerate(ranked, start=1):
            e.rank = n


def _figure_name(entry: GalleryEntry, folder: str, ext: str) -> str:
    from optbench.report.style import safe_name

    return f"{FIGURES_DIR}/{folder}/{safe_name(entry.optimizer)}.{ext}"


def figure_folders(problems) -> dict[str, str]:
    """The figures' folder per problem label: its name, or its whole label where names repeat."""
    from optbench.report.style import safe_name

    names = [p.name for p in problems]
    return {p.label: p.name if names.count(p.name) == 1 else safe_name(p.label) for p in problems}


def _draw_figures(out: Path, entries: list[GalleryEntry], problems, ext: str,
                  drawn: AbstractSet[tuple[str, str]] = frozenset()) -> None:
    """One figure per re-run, from the results files; a figure already drawn for the same run is kept (drawn
    by a tuning worker in this call, ``drawn``: (run id, figure), or by an earlier call, as its index says)."""
    from optbench.report.gallery import draw_trajectories
    from optbench.results import load_results

    previous = {}
    if (out / INDEX_JSON).exists():
        try:
            previous = {(e["problem"], e["optimizer"]): (e.get("run_id"), e.get("figure"))
                        for e in json.loads((out / INDEX_JSON).read_text())["entries"]}
        except (OSError, ValueError, KeyError, TypeError):
            previous = {}
    folders = figure_folders(problems)
    todo = []
    for e in entries:
        if not e.run_id:
            continue
        e.figure = _figure_name(e, folders[e.problem], ext)
        done = (e.run_id, e.figure) in drawn or previous.get((e.problem, e.optimizer)) == (e.run_id, e.figure)
        if done and (out / e.figure).exists():
            continue
        todo.append(e)
    if not todo:
        return
    steps = load_results(out)
    steps = steps[steps["run_id"].isin({e.run_id for e in todo})].sort_values(["run_id", "step"])
    paths = {rid: g[["x0", "x1"]].to_numpy() for rid, g in steps.groupby("run_id")}
    for problem in problems:
        draw_trajectories(problem, [(paths[e.run_id], e, out / e.figure) for e in todo if e.problem == problem.label])


def write_index(outcome: GalleryOutcome, problems) -> None:
    """``gallery.json`` (every entry, the skipped optimizers, the settings), ``index.md`` and ``index.html``."""
    from optbench.report.gallery import index_html, index_markdown
    from optbench.results import atomic_write_bytes

    data = {"settings": outcome.settings, "entries": [asdict(e) for e in outcome.entries],
            "skipped": [asdict(s) for s in outcome.skipped],
            "tuning_wall_time_s": round(outcome.tune_s, 3), "total_wall_time_s": round(outcome.total_s, 3)}
    atomic_write_bytes(outcome.out_dir / INDEX_JSON, json.dumps(data, indent=1, default=str).encode())
    atomic_write_bytes(outcome.out_dir / INDEX_MD, index_markdown(outcome, problems).encode())
    atomic_write_bytes(outcome.out_dir / INDEX_HTML, index_html(outcome, problems).encode())
