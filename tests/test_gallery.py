"""The gallery (optbench.gallery, ``optbench gallery``) and the side-by-side loop trials it tunes with
(optbench.engines.trials): equal to the loop engine for every registered optimizer, skips read from the
registry's capabilities, ranking, equal budgets in the written results, resume, and one real subprocess."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest

from optbench.optimizers import list_optimizers

OPTBENCH = shutil.which("optbench") or str(Path(sys.executable).parent / "optbench")
ROSENBROCK = "rosenbrock(start=(-2.0, 2.0))"


def _runnable_names() -> list[str]:
    """Every registered optimizer the gallery would tune on a 2-D analytic problem (static: no torch import)."""
    return [e.name for e in list_optimizers()
            if not e.unsupported and not e.matrix_only and (e.max_dim or 2) >= 2 and "lr" in e.params]


@pytest.mark.parametrize("name", _runnable_names())
def test_side_by_side_trials_equal_loop_runs(name, one_thread):
    """run_trials reproduces run_loop run by run, bitwise (clipped, from a fixed start, two learning rates) for every
    registered optimizer, to 1e-10 for the classes whose trials stack (engines.stacked). Classes that draw from
    torch's global generator are no exception: each trial draws what it draws alone (engines.step_rng)."""
    import torch

    from optbench.engines.loop import run_loop
    from optbench.engines.trials import run_trials
    from optbench.optimizers import get_optimizer
    from optbench.problems import get_problem

    warnings.filterwarnings("ignore")
    problem, base = get_problem(ROSENBROCK), get_optimizer(name)
    lr = base.lr or 1e-3
    configs = [base.with_hyperparams(lr=lr * 0.3), base.with_hyperparams(lr=lr * 3.0)]
    from optbench.engines.recipe import Recipe

    kw = dict(recipe=Recipe(clip_norm=1.0), dtype=torch.float64)
    trace = run_trials(problem, configs, 10_000, 12, 4, **kw)
    for k, config in enumerate(configs):
        one = run_loop(problem, config, 10_000, 12, 4, measure_cost=False, **kw)
        assert trace.status[k] == one.status[0]
        assert np.array_equal(trace.steps, one.steps)
        if config.entry.shared_layout:  # one object for the trials: x − η(x − P) rounds differently
            np.testing.assert_allclose(trace.loss[:, k], one.loss[:, 0], rtol=1e-10, err_msg=name)
            np.testing.assert_allclose(trace.end_loss[k:k + 1], one.end_loss, rtol=1e-10, err_msg=name)
            np.testing.assert_allclose(trace.coords[:, k], one.coords[:, 0], rtol=1e-10, atol=1e-14, err_msg=name)
            continue
        assert np.array_equal(trace.loss[:, k], one.loss[:, 0], equal_nan=True), name
        assert np.array_equal(trace.end_loss[k:k + 1], one.end_loss), name
        assert np.array_equal(trace.coords[:, k], one.coords[:, 0], equal_nan=True), name


@pytest.mark.parametrize("name", ["adabelief", "madgrad", "kron"])  # stacked, groups, side by side
def test_side_by_side_trials_end_runs_as_the_loop_does(name, one_thread):
    """A diverging trial stops where run_loop stops it, its later rows unrecorded; the other keeps going."""
    import torch

    from optbench.engines.loop import run_loop
    from optbench.engines.trials import run_trials
    from optbench.optimizers import get_optimizer
    from optbench.problems import get_problem

    problem = get_problem(ROSENBROCK)
    configs = [get_optimizer(f"{name}(lr=1e4)"), get_optimizer(f"{name}(lr=1e-3)")]
    trace = run_trials(problem, configs, 10_000, 40, 1, dtype=torch.float64)
    loop = run_loop(problem, configs[0], 10_000, 40, 1, dtype=torch.float64, measure_cost=False)
    assert trace.status == [loop.status[0], "done"] and loop.status[0] == "diverged"
    assert trace.end_step[0] == loop.end_step[0] < 40
    np.testing.assert_allclose(trace.loss[:, 0], loop.loss[:, 0], rtol=0 if name == "kron" else 1e-10)
    assert np.isfinite(trace.loss[:, 1]).all()


def test_plan_skips_exactly_what_the_capabilities_rule_out():
    """Every registered optimizer is either tuned on both problems or skipped with the reason its entry gives."""
    from optbench.gallery import plan_gallery, resolve_problems
    from optbench.optimizers.registry import get_optimizer_entry

    problems = resolve_problems(None)
    pairs, skipped = plan_gallery(problems)
    tuned = {o.name for _, o in pairs}
    assert len(pairs) == 2 * len(tuned)
    assert tuned | {s.optimizer for s in skipped} == {e.name for e in list_optimizers()}
    for s in skipped:
        entry = get_optimizer_entry(s.optimizer)
        capability = (f"unsupported: {entry.unsupported}", f"meant for matrices: {entry.matrix_only}")
        no_lr = "lr" not in entry.params and s.reason.startswith("nothing to tune")
        assert s.reason in capability or (entry.max_dim is not None and entry.max_dim < 2) or no_lr, s
    by_name = {s.optimizer: s.reason for s in skipped}
    assert by_name["lomo"].startswith("unsupported:") and by_name["muon"].startswith("meant for matrices:")
    assert {"adam", "adabelief", "prodigy", "schedulefreeadamw", "sophiah"} <= tuned
    entries = {e.name: e for e in list_optimizers()}
    assert any(entries[n].needs_closure for n in tuned) and any(entries[n].create_graph for n in tuned)


def test_plan_rejects_bad_input_before_any_work():
    from optbench.errors import SpecError, UsageError
    from optbench.gallery import plan_gallery, resolve_problems

    with pytest.raises(UsageError, match="2-D analytic"):
        resolve_problems("rosenbrock(dim=3)")
    with pytest.raises(UsageError, match="2-D analytic"):
        resolve_problems("rastrigin(dim=3)")
    with pytest.raises(SpecError, match="adamm"):
        plan_gallery(resolve_problems(None), "adamm")
    with pytest.raises(UsageError, match="twice"):
        plan_gallery(resolve_problems(None), "adam,adam")


def test_ranking_orders_by_final_loss_and_leaves_failures_unranked():
    from optbench.gallery import GalleryEntry, rank_entries

    def entry(opt, loss, status="done", problem="p"):
        return GalleryEntry(problem, problem, opt, ["lr"], 5, 10, {"lr": 0.1}, loss, final_loss=loss,
                            dist_to_min=0.0, status=status)

    entries = [entry("c", 3.0), entry("a", 0.5), entry("d", float("nan")), entry("b", 0.5),
               entry("e", 0.1, "diverged"), entry("f", 9.0, problem="q")]
    rank_entries(entries)
    assert {e.optimizer: e.rank for e in entries} == {"a": 1, "b": 2, "c": 3, "d": None, "e": None, "f": 1}


def test_gallery_equal_budgets_resume_and_index(tmp_path, one_thread):
    """A batched (adam) and a loop-only (adabelief) optimizer: every study holds exactly the budget of trials
    of the same steps, the re-runs have those steps, the index ranks both per problem and links the figures;
    a second call tunes nothing, re-runs nothing and keeps the figures."""
    import optuna

    from optbench.gallery import INDEX_JSON, run_gallery
    from optbench.results import load_summary
    from optbench.tuning.study import open_storage

    out = tmp_path / "g"
    kw = dict(optimizers="adam,adabelief", trials=6, steps=20, batch=4, log=lambda _: None)
    first = run_gallery(out, **kw)
    assert first.studies_tuned == 4 and first.studies_complete_before == 0

    store, _ = open_storage(None, out)
    studies = store.get_all_studies()
    assert len(studies) == 4
    for s in studies:  # the budget, from the written journal: 6 evaluated trials of 20 steps per study
        trials = optuna.load_study(study_name=s.study_name, storage=store).get_trials(deepcopy=False)
        assert sum(t.state.name in ("COMPLETE", "FAIL") for t in trials) == 6, s.study_name
        assert "|steps=20|" in s.study_name
    summary = load_summary(out)
    assert len(summary) == 4 and set(summary["steps"]) == {20} and set(summary["seed"]) == {10_000}
    data = json.loads((out / INDEX_JSON).read_text())
    assert {(e["trials"], e["steps"]) for e in data["entries"]} == {(6, 20)}
    for problem in ("rosenbrock", "rastrigin"):
        ranks = sorted(e["rank"] for e in data["entries"] if e["problem_name"] == problem)
        assert ranks == [1, 2]
        rows = sorted((e for e in data["entries"] if e["problem_name"] == problem), key=lambda e: e["rank"])
        assert rows[0]["final_loss"] <= rows[1]["final_loss"]
    md, page = (out / "index.md").read_text(), (out / "index.html").read_text()
    for e in data["entries"]:
        assert (out / e["figure"]).stat().st_size > 10_000
        assert e["figure"] in md and e["figure"] in page
        row = summary.set_index("run_id").loc[e["run_id"]]
        assert e["final_loss"] == row["final_loss"] and e["dist_to_min"] == row["dist_to_min"]

    stamps = {e["figure"]: os.stat(out / e["figure"]).st_mtime_ns for e in data["entries"]}
    second = run_gallery(out, **kw)
    assert second.studies_tuned == 0 and second.studies_complete_before == 4
    assert len(load_summary(out)) == 4  # nothing re-run twice
    assert {e["figure"]: os.stat(out / e["figure"]).st_mtime_ns for e in data["entries"]} == stamps
    assert [(e.optimizer, e.final_loss) for e in second.entries] == [(e.optimizer, e.final_loss)
                                                                     for e in first.entries]


def test_gallery_command_end_to_end(tmp_path):
    """The installed script: two optimizers (one skipped with its reason), tiny budget, exit 0, the index
    and the figures on disk; a bad problem is one sentence and exit 2."""
    env = {**os.environ, "COLUMNS": "160"}
    out = tmp_path / "gallery"
    r = subprocess.run([OPTBENCH, "gallery", "--opt", "adam,lomo", "--trials", "4", "--steps", "10", "--out", str(out)],
                       capture_output=True, text=True, env=env, timeout=300)
    assert r.returncode == 0, r.stderr
    assert "tuning 2 studies" in r.stdout and "lomo" in r.stdout
    page = (out / "index.html").read_text()
    assert "figures/rosenbrock/adam.png" in page and "figures/rastrigin/adam.png" in page
    assert "lomo" in page and "fuses the update into backward" in page
    assert (out / "figures" / "rastrigin" / "adam.png").exists()
    bad = subprocess.run([OPTBENCH, "gallery", "--problems", "rosenbrock(dim=3)", "--out", str(tmp_path / "x")],
                         capture_output=True, text=True, env=env, timeout=120)
    assert bad.returncode == 2 and "Traceback" not in bad.stderr and "2-D analytic" in bad.stderr


def test_the_index_says_the_clip_does_not_reach_gradient_free_methods():
    """SPSA and the forward gradient never see a gradient, so the protocol's clip cannot apply to them: the
    registry says so, and the gallery's budget line names them rather than claiming every gradient was clipped."""
    from types import SimpleNamespace

    from optbench.gallery import GalleryEntry
    from optbench.optimizers import get_optimizer
    from optbench.report.gallery import _budget_line

    free = [e.name for e in list_optimizers() if e.gradient_free]
    assert sorted(free) == ["forward-grad", "spsa"]
    assert any("gradient clipping does not apply" in c for c in get_optimizer("spsa").entry.capabilities())
    entries = [GalleryEntry("f", "f", name, ["lr"], 4, 10, {"lr": 0.1}, 1.0,
                            gradient_free=get_optimizer(name).entry.gradient_free) for name in ("adam", "spsa")]
    settings = {"protocol": "tpe", "trials": 4, "steps": 10, "clip_norm": 1.0, "dtype": "float32"}
    line = _budget_line(SimpleNamespace(settings=settings, entries=entries))
    assert "gradients clipped to norm 1 (not spsa: gradient-free" in line
    assert "(not" not in _budget_line(SimpleNamespace(settings=settings, entries=entries[:1]))


def test_trajectories_on_one_view_share_a_canvas_and_each_gets_its_own_figure(tmp_path, monkeypatch):
    from types import SimpleNamespace

    from PIL import Image

    from optbench.gallery import resolve_problems
    from optbench.report import gallery as figures

    problem = resolve_problems(None)[0]
    made = []
    real = figures.TrajectoryCanvas

    class Counting(real):
        def __init__(self, *args):
            made.append(args[1])
            super().__init__(*args)

    monkeypatch.setattr(figures, "TrajectoryCanvas", Counting)
    entry = SimpleNamespace(optimizer="adam", best_params={"lr": 0.01}, lr_free=False, final_loss=0.5,
                            dist_to_min=0.1, steps=3, status="done")
    inside = [np.array([[-2.0, 2.0], [-1.5, 2.0], [-1.0, 1.5]]), np.array([[-2.0, 2.0], [0.0, 0.0], [1.0, 1.0]])]
    outside = np.array([[-2.0, 2.0], [5.0, 5.0], [np.nan, np.nan]])
    items = [(p, entry, tmp_path / f"{i}.png") for i, p in enumerate([*inside, outside])]
    figures.draw_trajectories(problem, items)
    assert len(made) == 2  # the two paths inside the plot bounds share one canvas; the one leaving gets its own
    sizes = {Image.open(dest).size for _, _, dest in items}
    assert len(sizes) == 1  # every figure has the layout of one drawn alone
    assert (tmp_path / "0.png").read_bytes() != (tmp_path / "1.png").read_bytes()
    alone = tmp_path / "alone.png"
    figures.draw_trajectory(problem, inside[1], entry, alone)
    assert Image.open(alone).size in sizes


def test_workers_finish_their_studies_and_the_gallery_is_the_one_of_one_process(tmp_path, monkeypatch):
    """With --workers 2 each worker re-runs its study's best configuration and draws its figure as the study
    ends; the result is the gallery one process makes: the same entries, ranks and runs, the same figure bytes,
    and this process draws none of them again (and, called again, re-runs and redraws nothing)."""
    import hashlib

    import optbench.report.gallery as figures
    from optbench.gallery import run_gallery
    from optbench.results import load_summary

    kw = dict(optimizers="adam,adabelief,sgd", trials=8, steps=20, batch=4, log=lambda _: None)
    one = run_gallery(tmp_path / "one", workers=1, **kw)
    drawn_here = []
    real = figures.draw_trajectories
    monkeypatch.setattr(figures, "draw_trajectories",
                        lambda problem, items: (drawn_here.extend(items), real(problem, items))[1])
    two = run_gallery(tmp_path / "two", workers=2, **kw)
    assert drawn_here == []  # the workers drew every figure

    def seen(outcome):
        return [(e.problem, e.optimizer, e.best_params, e.final_loss, e.dist_to_min, e.status, e.run_id, e.figure,
                 e.rank) for e in outcome.entries]

    def pictures(folder):
        return {str(f.relative_to(folder)): hashlib.sha256(f.read_bytes()).hexdigest()
                for f in sorted((folder / "figures").rglob("*.png"))}

    assert seen(two) == seen(one) and all(e.figure for e in two.entries)
    assert pictures(tmp_path / "two") == pictures(tmp_path / "one") and len(pictures(tmp_path / "one")) == 6
    summary = load_summary(tmp_path / "two")
    assert sorted(summary["run_id"]) == sorted(load_summary(tmp_path / "one")["run_id"])  # each run once
    stamps = {f: (tmp_path / "two" / f).stat().st_mtime_ns for f in pictures(tmp_path / "two")}
    again = run_gallery(tmp_path / "two", workers=2, **kw)
    assert again.studies_tuned == 0 and drawn_here == [] and len(load_summary(tmp_path / "two")) == 6
    assert {f: (tmp_path / "two" / f).stat().st_mtime_ns for f in stamps} == stamps


def test_png_figures_drawn_over_the_kept_background_are_the_files_savefig_writes(tmp_path):
    """The PNG path draws only a figure's own artists over the contours rendered once per canvas; every file
    is byte for byte the one a full savefig of the same figure writes (trajectories inside the view, leaving
    it, with NaN steps, a diverged status, several in turn on one canvas)."""
    from types import SimpleNamespace

    from optbench.gallery import resolve_problems
    from optbench.report import gallery as figures

    problem = resolve_problems(None)[0]
    rng = np.random.default_rng(0)
    walk = np.cumsum(rng.normal(0, 0.05, (60, 2)), axis=0) + [-2.0, 2.0]
    paths = [walk, walk[::-1] * 0.5, np.array([[-2.0, 2.0], [1.0, -1.0], [np.nan, np.nan]]), walk[:1]]
    entries = [SimpleNamespace(optimizer=f"opt{i}", best_params={"lr": 10.0 ** -i}, lr_free=i == 1, steps=60,
                               final_loss=float(i), dist_to_min=0.5 * i, status="diverged" if i == 2 else "done")
               for i in range(len(paths))]
    view = figures.view_bounds(problem.bounds, walk)
    blitted, saved = figures.TrajectoryCanvas(problem, view), figures.TrajectoryCanvas(problem, view)
    saved.blit = False
    try:
        for i, (path, entry) in enumerate(zip(paths, entries)):
            a = blitted.draw(path, entry, tmp_path / f"blit{i}.png").read_bytes()
            b = saved.draw(path, entry, tmp_path / f"save{i}.png").read_bytes()
            assert a == b, i
        assert len({(tmp_path / f"blit{i}.png").read_bytes() for i in range(len(paths))}) == len(paths)
    finally:
        blitted.close()
        saved.close()
