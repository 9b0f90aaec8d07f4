"""Named batch-size recipes (optbench.recipes): expansion to lr scaling + warm-up, suite key, CLI usage errors,
what is recorded, and the report's per-batch-size-tuned vs recipe comparison checked against load_summary."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from optbench.engines.recipe import LR_SCALINGS
from optbench.errors import SpecError, UsageError
from optbench.optimizers import get_optimizer
from optbench.problems import get_problem
from optbench.recipes import RECIPES, get_recipe, list_recipes
from optbench.runner import run_sweep
from optbench.schedules import budget_steps, get_schedule, lr_sequence
from optbench.sweep.spec import Sweep

PROBLEM = "noisy-quadratic(dim=4)"
STEPS = 40


def _sweep(**kw):
    kw = {"lrs": [0.01, 0.1], "batch_sizes": [2, 8, 32], "steps": STEPS, **kw}
    return Sweep.build([get_problem(PROBLEM)], [get_optimizer("sgd")], **kw)


def test_registry_entries_are_complete():
    for entry in list_recipes():
        assert entry.lr_scaling in LR_SCALINGS
        assert "η₀" in entry.doc and "warm-up" in entry.doc and entry.reference
        recipe = get_recipe(entry.name)
        assert recipe.label == entry.name
        assert get_schedule(recipe.schedule).name == "warmup-constant"
        assert recipe.params["warmup"] == 0.05  # Goyal et al.: 5 of 90 epochs
    assert get_recipe("goyal").entry is RECIPES["linear-warmup"]


@pytest.mark.parametrize("name, power", [("linear-warmup", 1.0), ("goyal", 1.0), ("sqrt-warmup", 0.5)])
def test_each_run_gets_the_scaled_lr_and_the_warmup(name, power):
    runs = _sweep(recipe_name=name, base_batch_size=8).expand()
    assert len(runs) == 2 * 3
    warmup = budget_steps(0.05, STEPS)
    for run in runs:
        b = run.problem.batch_size
        base = 0.01 if math.isclose(run.optimizer.lr, 0.01 * (b / 8) ** power) else 0.1
        assert run.optimizer.lr == pytest.approx(base * (b / 8) ** power, rel=1e-14)  # η_B = η₀·(B/B₀)^p
        assert run.recipe.schedule == "warmup-constant(warmup=0.05)" and run.recipe_name == get_recipe(name).label
        seq = lr_sequence(run.recipe.schedule, run.steps, run.optimizer.lr)
        eta = run.optimizer.lr
        np.testing.assert_allclose(seq[:warmup], [eta * (t + 1) / (warmup + 1) for t in range(warmup)], rtol=1e-12)
        np.testing.assert_allclose(seq[warmup:], eta, rtol=1e-12)


def test_same_runs_as_the_explicit_settings():
    named = _sweep(recipe_name="goyal(warmup=10)").expand()
    explicit = _sweep(lr_scaling="linear", schedules=["warmup-constant(warmup=10)"]).expand()
    assert [r.run_id for r in named] == [r.run_id for r in explicit]  # the name is not part of the identity
    assert [r.optimizer_label for r in named] == [r.optimizer_label for r in explicit]
    assert named[0].optimizer_label == "sgd+warmup-constant(warmup=10)+linear-scaling(base_batch_size=2)"
    assert {r.recipe_name for r in named} == {"linear-warmup(warmup=10)"}
    assert {r.recipe_name for r in explicit} == {None}


@pytest.mark.parametrize("kw, message", [
    (dict(lr_scaling="sqrt"), r"--lr-scaling sqrt conflicts with recipe 'linear-warmup'"),
    (dict(schedules=["cosine"]), r"--schedule 'cosine' conflicts with recipe 'linear-warmup'"),
    (dict(schedules=["constant", "cosine"]), r"conflicts with recipe"),
])
def test_conflicting_settings(kw, message):
    with pytest.raises(UsageError, match=message):
        _sweep(recipe_name="linear-warmup", **kw).expand()


@pytest.mark.parametrize("spec, message", [
    ("goyl", r"Unknown recipe 'goyl'\. Did you mean 'goyal'"),
    ("linear-warmpu", r"Did you mean 'linear-warmup'"),
    ("linear-warmup(warmup=1.5)", r"warmup=1\.5 is out of range"),
    ("sqrt-warmup(decay=1)", r"Unknown key 'decay'"),
])
def test_bad_recipe_specs(spec, message):
    with pytest.raises(SpecError, match=message):
        get_recipe(spec)


def test_recorded_in_summary_and_manifest(tmp_path):
    out = tmp_path / "r"
    run_sweep(_sweep(recipe_name="linear-warmup", batch_sizes=[2, 8], lrs=[0.05]), out)
    from optbench.results import load_summary

    summary = load_summary(out)
    assert set(summary["recipe_name"]) == {"linear-warmup"}
    assert sorted(summary["lr"]) == pytest.approx([0.05, 0.2])
    record = json.loads((out / "manifest.json").read_text())["sweeps"][-1]
    assert (record["recipe"], record["lr_scaling"], record["base_batch_size"]) == ("linear-warmup", "linear", 2)
    assert record["schedules"] == ["warmup-constant(warmup=0.05)"]
    again = run_sweep(_sweep(lr_scaling="linear", schedules=["warmup-constant(warmup=0.05)"], batch_sizes=[2, 8],
                             lrs=[0.05]), out)
    assert again.runs_skipped == again.runs_total == 2  # identical runs are not run twice


# ---- suite files ----

SUITE = """[[sweep]]
problems = ["noisy-quadratic(dim=4)"]
optimizers = ["sgd"]
lr = [0.01]
batch_size = [4, 16]
steps = 20
{extra}
"""


def test_suite_recipe_key(tmp_path):
    from optbench.suite import load_suite

    path = tmp_path / "s.toml"
    path.write_text(SUITE.format(extra='recipe = "goyal(warmup=3)"\nbase_batch_size = 2'))
    (sweep,) = load_suite(path).sweeps
    assert sweep.recipe_name == "linear-warmup(warmup=3)"
    runs = sweep.expand()
    assert {r.problem.batch_size: r.optimizer.lr for r in runs} == pytest.approx({4: 0.02, 16: 0.08})
    assert {r.recipe.schedule for r in runs} == {"warmup-constant(warmup=3)"}


@pytest.mark.parametrize("extra, message", [
    ('recipe = "goyl"', r"recipe: Unknown recipe 'goyl'\. Did you mean 'goyal'"),
    ("recipe = 3", r"recipe: expected a recipe name"),
    ('recipe = "linear-warmup(warmup=2.0)"', r"recipe: recipe 'linear-warmup': warmup=2\.0 is out of range"),
    ('recipe = "linear-warmup"\nlr_scaling = "sqrt"', r"recipe: 'linear-warmup' sets lr_scaling = 'linear'.*"
                                                       r"remove the lr_scaling key"),
    ('schedule = "cosine"\nrecipe = "sqrt-warmup"', r"recipe: 'sqrt-warmup' sets .*remove the schedule key"),
])
def test_suite_bad_recipe_names_file_line_and_key(tmp_path, extra, message):
    from optbench.suite import load_suite

    path = tmp_path / "s.toml"
    path.write_text(SUITE.format(extra=extra))
    line = 1 + SUITE.format(extra=extra).splitlines().index(next(ln for ln in SUITE.format(extra=extra).splitlines()
                                                                 if ln.startswith("recipe")))
    with pytest.raises(UsageError, match=rf"^{path}:{line}: \[\[sweep\]\] #1: {message}"):
        load_suite(path)


def test_shipped_batch_size_suite_has_both_studies():
    from optbench.suite import load_suite

    suite = load_suite(Path(__file__).resolve().parents[1] / "problems" / "batch-size.toml")
    grid, *recipes = suite.sweeps
    assert grid.recipe_name is None and len(grid.lrs) > 5
    assert {s.recipe_name for s in recipes} >= {"linear-warmup"}
    assert all(s.recipe.base_batch_size in s.batch_sizes and s.batch_sizes == grid.batch_sizes for s in recipes)


# ---- command line ----

def _cli(*args):
    from cli_invoke import invoke

    return invoke(*args)


RUN = ["run", "-p", PROBLEM, "-o", "sgd", "--lr", "0.01", "--batch-size", "2,8", "--steps", "10"]


@pytest.mark.parametrize("args, message", [
    (["--recipe", "goyl"], "Unknown recipe 'goyl'. Did you mean 'goyal'?"),
    (["--recipe", "goyal", "--lr-scaling", "sqrt"], "--lr-scaling sqrt conflicts with --recipe linear-warmup"),
    (["--recipe", "goyal", "--schedule", "constant"], "--schedule constant conflicts with --recipe linear-warmup"),
])
def test_cli_usage_errors(tmp_path, args, message):
    r = _cli(*RUN, "--out", str(tmp_path / "r"), *args)
    assert r.exit_code == 2, r.stderr
    assert message in " ".join(r.stderr.split())
    assert "Traceback" not in r.stderr and not (tmp_path / "r").exists()


def test_cli_suite_recipe_error_names_file_line_and_key(tmp_path):
    path = tmp_path / "s.toml"
    path.write_text(SUITE.format(extra='recipe = "goyl"'))
    r = _cli("run", "--suite", str(path), "--out", str(tmp_path / "r"))
    assert r.exit_code == 2  # the message is printed as text: rich markup must not eat "[[sweep]]"
    assert "s.toml:7: [[sweep]] #1: recipe: Unknown recipe 'goyl'. Did you mean 'goyal'?" in " ".join(r.stderr.split())


def test_cli_recipe_with_suite_is_a_usage_error(tmp_path):
    path = tmp_path / "s.toml"
    path.write_text(SUITE.format(extra=""))
    r = _cli("run", "--suite", str(path), "--recipe", "linear-warmup", "--out", str(tmp_path / "r"))
    assert r.exit_code == 2 and "--recipe cannot be combined with --suite" in " ".join(r.stderr.split())


# ---- the report: per-batch-size tuned vs recipe ----

B0, BATCHES, LRS, SEEDS = 2, [2, 8], [0.05, 0.3], [0, 1]


@pytest.fixture(scope="module")
def comparison_report(tmp_path_factory):
    """A 2 batch sizes × 2 lrs grid of sgd and the linear-warmup recipe from the same lrs, then the report."""
    from optbench.report import build_report

    root = tmp_path_factory.mktemp("named")
    common = dict(seeds=SEEDS, steps=STEPS, batch_sizes=BATCHES, device="cpu")
    problem = [get_problem(PROBLEM)]
    run_sweep(Sweep(problem, [get_optimizer("sgd")], lrs=LRS, **common), root / "r")
    run_sweep(Sweep(problem, [get_optimizer("sgd")], lrs=LRS, recipe_name="linear-warmup", **common), root / "r")
    build_report([root / "r"], root / "report", formats=["png"], figures=["grids"])
    return root / "r", root / "report"


def _expected(results: Path):
    """Tuned (best median final loss over the lrs at each B) and recipe (median per B and base lr) from
    load_summary, computed independently of the reporter."""
    from optbench.results import load_summary

    s = load_summary(results)
    plain = s[s["recipe_name"] == ""]
    rule = s[s["recipe_name"] == "linear-warmup"]
    cells = plain.groupby(["batch_size", "lr"])["final_loss"].median()
    tuned = {int(b): (float(cells[b].idxmin()), float(cells[b].min())) for b in BATCHES}
    rule_cells = rule.assign(base=(rule["lr"] * B0 / rule["batch_size"]).round(12))
    recipe = {(int(b), float(base)): float(v)
              for (b, base), v in rule_cells.groupby(["batch_size", "base"])["final_loss"].median().items()}
    assert (s["status"] == "done").all()  # the table below has no diverged cells to account for
    return tuned, recipe


def test_comparison_files_exist(comparison_report):
    _, report = comparison_report
    stem = "noisy-quadratic_dim_4"
    assert (report / "figures" / f"rule_{stem}_final_loss.png").stat().st_size > 10_000
    assert (report / "figures" / f"grid_{stem}_sgd_final_loss.png").is_file()  # the tuned grid, rule line drawn
    assert (report / "tables" / f"rule_{stem}_sgd_linear-warmup_final_loss.csv").is_file()
    # the recipe's own bs × lr grid is left out: the comparison shows every base lr
    assert not list((report / "figures").glob("grid_*linear-scaling*"))
    md = (report / "report.md").read_text()
    assert "## Batch size: tuned per batch size vs lr-scaling recipe" in md
    assert ("| batch size | tuned lr | tuned final loss | linear-warmup lr | linear-warmup final loss | × tuned "
            "| × at B₀ |") in md
    assert "rule_noisy-quadratic_dim_4_final_loss.png" in (report / "index.html").read_text()


def test_comparison_table_equals_load_summary(comparison_report):
    results, report = comparison_report
    tuned, recipe = _expected(results)
    table = pd.read_csv(report / "tables" / "rule_noisy-quadratic_dim_4_sgd_linear-warmup_final_loss.csv")
    assert set(table["recipe"]) == {"linear-warmup"} and set(table["base_batch_size"]) == {B0}
    t = table[table["kind"] == "tuned"].set_index("batch_size")
    for b, (lr, value) in tuned.items():
        assert t.loc[b, "lr"] == lr and t.loc[b, "final_loss"] == pytest.approx(value, rel=1e-15)
    r = table[table["kind"] == "rule"]
    assert len(r) == len(recipe) == len(BATCHES) * len(LRS)
    for _, row in r.iterrows():
        b, base = int(row["batch_size"]), float(row["base_lr"])
        assert row["final_loss"] == pytest.approx(recipe[(b, base)], rel=1e-15)
        assert row["lr"] == pytest.approx(base * b / B0, rel=1e-12)
        assert row["vs_tuned"] == pytest.approx(recipe[(b, base)] / tuned[b][1], rel=1e-12)  # f* = 0
        assert row["vs_base"] == pytest.approx(recipe[(b, base)] / recipe[(B0, base)], rel=1e-12)
    chosen = min(LRS, key=lambda base: recipe[(B0, base)])  # η₀: the best at B₀
    assert set(r.loc[r["chosen"], "base_lr"]) == {chosen}
    from optbench.report import grids
    from optbench.report.data import load

    summary = load([results]).summary
    (comp,) = grids.rule_comparisons(summary, grids.grids(summary, "final_loss"))
    assert (comp.tuned.optimizer, comp.name, comp.base_lr) == ("sgd", "linear-warmup", chosen)
    np.testing.assert_allclose(comp.lr_at(BATCHES), [chosen * b / B0 for b in BATCHES])  # the heatmap's line
    # the Markdown row of the largest batch size: tuned lr and value, the recipe's lr, value and ratio
    md = (report / "report.md").read_text()
    from optbench.formatting import fmt_num

    b = BATCHES[-1]
    row = (f"| {b} | {fmt_num(tuned[b][0], 3)} | {fmt_num(tuned[b][1], 3)} | {fmt_num(chosen * b / B0, 3)} | "
           f"{fmt_num(recipe[(b, chosen)], 3)} | {recipe[(b, chosen)] / tuned[b][1]:.2f}× | "
           f"{recipe[(b, chosen)] / recipe[(B0, chosen)]:.2f}× |")
    assert row in md
