"""The training recipe as one value: every field enters the run identity and the label, defaults change
nothing, the engines declare only settings that exist, and each engine is looked up, not branched on."""

from __future__ import annotations

import dataclasses

import pytest

from optbench.engines import batched, network
from optbench.engines.capabilities import ENGINES, choose_engine, engine_supports, get_engine
from optbench.engines.recipe import PLAIN, Recipe
from optbench.errors import UsageError
from optbench.optimizers import get_optimizer
from optbench.problems import get_problem
from optbench.sweep.spec import Run, Sweep

# a non-default value of every Recipe field; a new field without one fails test_the_samples_cover_every_field
SAMPLES = {
    "schedule": "cosine",
    "clip_norm": 1.0,
    "clip_value": 0.5,
    "label_smoothing": 0.1,
    "lr_scaling": "sqrt",
    "base_batch_size": 8,
    "noise_scale_every": 4,
}


def test_the_samples_cover_every_field():
    assert set(SAMPLES) == set(Recipe.field_names())


def test_defaults_add_nothing():
    """Plain runs keep the run ids and labels they had before recipes existed."""
    assert Recipe() == PLAIN and PLAIN.identity() == {} and PLAIN.label() == "" and not PLAIN.settings()
    problem, opt = get_problem("valley"), get_optimizer("adam")
    assert "recipe" not in Run(problem, opt, 0, 10, 1).identity
    assert Run(problem, opt, 0, 10, 1, recipe=Recipe("constant")).run_id == Run(problem, opt, 0, 10, 1).run_id


@pytest.mark.parametrize("field", sorted(SAMPLES))
def test_every_field_enters_identity_label_and_run_id(field):
    """A knob that changed the trajectory but not the run id would resume other runs' results as its own."""
    recipe = Recipe(**{field: SAMPLES[field]})
    assert field in recipe.identity() and recipe.settings() == {field}
    if field != "base_batch_size":  # written with its rule: '+sqrt-scaling(base_batch_size=8)'
        assert recipe.label().startswith("+")
    problem, opt = get_problem("valley"), get_optimizer("adam")
    assert Run(problem, opt, 0, 10, 1, recipe=recipe).run_id != Run(problem, opt, 0, 10, 1).run_id


def test_labels_and_identity_keep_their_format():
    recipe = Recipe("warmup-cosine(warmup=0.05)", 1.0, 0.5, 0.1, "linear", 4, 2)
    assert recipe.label() == ("+warmup-cosine(warmup=0.05)+clip-norm=1.0+clip-value=0.5+label-smoothing=0.1"
                              "+linear-scaling(base_batch_size=4)+noise-scale(every=2)")
    assert list(recipe.identity()) == ["schedule", "clip_norm", "clip_value", "label_smoothing", "lr_scaling",
                                       "base_batch_size", "noise_scale_every"]
    assert recipe.identity()["schedule"] == "warmup-cosine(min_lr=0.0, warmup=0.05)"


@pytest.mark.parametrize("changes, message", [
    ({"clip_norm": -1.0}, "--clip-norm -1.0 must be > 0"),
    ({"clip_value": 0.0}, "--clip-value 0.0 must be > 0"),
    ({"label_smoothing": 1.0}, r"--label-smoothing 1.0 must be in \[0, 1\)"),
    ({"label_smoothing": 0.1}, "network"),
    ({"noise_scale_every": -2}, "--noise-scale-every -2 must be >= 0"),
    ({"noise_scale_every": 3}, "network problems only"),
])
def test_validate_names_the_bad_value(changes, message):
    with pytest.raises(UsageError, match=message):
        PLAIN.replace(**changes).validate([get_problem("valley")], [get_optimizer("sgd")])


def test_sweep_takes_flat_settings_and_gives_them_back():
    sweep = Sweep.build([get_problem("valley")], [get_optimizer("sgd")], clip_norm=2.0, steps=5)
    assert sweep.recipe == Recipe(clip_norm=2.0) and sweep.setting("clip_norm") == 2.0 and sweep.steps == 5
    assert sweep.with_settings(clip_value=0.5).recipe == Recipe(clip_norm=2.0, clip_value=0.5)
    with pytest.raises(UsageError, match="'warp' is not a sweep setting"):
        sweep.with_settings(warp=1)
    assert {r.recipe for r in sweep.expand()} == {Recipe(clip_norm=2.0)}
    assert {r.recipe.schedule for r in Sweep([get_problem("valley")], [get_optimizer("sgd")],
                                             recipe=Recipe("cosine")).expand()} == {"cosine"}
    with pytest.raises(UsageError, match="schedule is given twice"):
        Sweep([get_problem("valley")], [get_optimizer("sgd")], schedules=["linear"],
              recipe=Recipe("cosine")).expand()


def test_engines_declare_only_recipe_settings_that_exist():
    fields = set(Recipe.field_names())
    assert fields >= batched.RECIPE and fields >= network.BATCHED_RECIPE


@pytest.mark.parametrize("field", sorted(SAMPLES))
def test_the_batched_engine_takes_a_setting_only_if_it_implements_it(field):
    """A setting the batched engine does not implement sends the run to the loop engine (auto) or is refused
    (batched), naming the setting: never silently dropped."""
    problem, opt = get_problem("noisy-quadratic"), get_optimizer("adam")
    recipe = Recipe(**{field: SAMPLES[field]})
    if field in batched.RECIPE:
        assert engine_supports("batched", problem, opt, recipe) and choose_engine("auto", problem, opt, recipe) \
            == "batched"
    else:
        assert choose_engine("auto", problem, opt, recipe) == "loop"
        with pytest.raises(UsageError, match=field):
            choose_engine("batched", problem, opt, recipe)


def test_every_engine_is_registered_once_per_track():
    # loop and batched on both tracks (--engine), and the tuner's trials engine for analytic rounds
    assert set(ENGINES) == {(name, track) for name in ("loop", "batched") for track in ("analytic", "network")} | {
        ("trials", "analytic")}
    for (name, track), engine in ENGINES.items():
        assert engine.name == name and engine.track == track and engine.max_group >= 1
        assert get_engine(name, "analytic" if track == "analytic" else "network") is engine
    assert ENGINES[("loop", "analytic")].max_group == 1
    with pytest.raises(ValueError, match="not an engine"):
        get_engine("warp", "analytic")


def test_execute_runs_the_looked_up_engine():
    """plan.execute is a lookup: a batched analytic work item equals the loop engine run by run."""
    import numpy as np

    from optbench.sweep.plan import execute, plan_groups

    problem = get_problem("rosenbrock")
    runs = Sweep([problem], [get_optimizer("adam")], lrs=[1e-3, 1e-2], steps=20,
                 recipe=Recipe(clip_norm=1.0)).expand()
    ((engine, group),) = plan_groups(runs, "auto")
    assert engine == "batched" and group == runs
    together = execute(engine, group)
    for k, run in enumerate(runs):
        alone = execute("loop", [dataclasses.replace(run)])
        np.testing.assert_allclose(together.loss[:, k], alone.loss[:, 0], rtol=1e-10)


def test_a_tuning_round_is_planned_by_the_sweep_planner():
    """plan_round: a batched round is one batched item (schedules may differ); an analytic loop round is one
    trials item, equal run by run to the loop engine; a network loop round is one loop item per run."""
    import numpy as np

    from optbench.sweep.plan import execute, plan_round
    from optbench.sweep.spec import Run

    problem = get_problem("rosenbrock")
    configs = [get_optimizer(f"adabelief(lr={lr})") for lr in (1e-3, 1e-2, 0.1)]
    runs = [Run(problem, c, 0, 20, 5) for c in configs]
    assert plan_round(runs, "loop") == [("trials", [0, 1, 2])]
    assert plan_round(runs, "batched") == [("batched", [0, 1, 2])]
    trace = execute("trials", runs, measure_cost=False)
    for k, run in enumerate(runs):
        one = execute("loop", [run], measure_cost=False)
        np.testing.assert_allclose(trace.loss[:, k], one.loss[:, 0], rtol=1e-10)
    from types import SimpleNamespace

    net = SimpleNamespace(kind="classification")  # plan_round reads the problem's kind only
    assert plan_round([Run(net, c, 0, 2, 1) for c in configs[:2]], "loop") == [("loop", [0]), ("loop", [1])]
