"""The generic registry and every registry built on it: lookups with suggestions, duplicates refused, figures
that register themselves and the CLI help built from them, and the "how to add X" paths of docs/DEVELOPING.md
followed for real (a throwaway entry registered as documented shows up where the guide says)."""

from __future__ import annotations

import dataclasses
import re

import pytest
from click.testing import CliRunner

from optbench.errors import SpecError
from optbench.registry import Registry


def _registries():
    from optbench.optimizers import OPTIMIZERS
    from optbench.problems import PROBLEMS
    from optbench.recipes import RECIPES
    from optbench.report.figures import FIGURES
    from optbench.schedules import SCHEDULE_PARAMS
    from optbench.tuning.protocols import PROTOCOLS, PRUNERS

    return {"optimizer": OPTIMIZERS, "problem": PROBLEMS, "recipe": RECIPES, "figure": FIGURES,
            "schedule": SCHEDULE_PARAMS, "protocol": PROTOCOLS, "pruner": PRUNERS}


KINDS = ["optimizer", "problem", "recipe", "figure", "schedule", "protocol", "pruner"]


def test_register_get_names_and_the_decorator():
    reg: Registry[int] = Registry("widget")
    assert reg.register("one", 1) == 1

    @reg.register("double")
    def double(x):
        return 2 * x

    assert reg.get("double") is double and reg.get("one") == 1
    assert reg.names() == ["one", "double"] and reg.list() == [1, double]
    assert "one" in reg and "two" not in reg and len(reg) == 2 and reg.find("two") is None


def test_unknown_names_are_named_with_the_nearest_and_every_valid_one():
    reg: Registry[int] = Registry("widget")
    for i, name in enumerate(["sprocket", "gear", "cog"]):
        reg.register(name, i)
    with pytest.raises(SpecError) as info:
        reg.get("sprockt")
    assert str(info.value) == "Unknown widget 'sprockt'. Did you mean 'sprocket'? Valid widgets: cog, gear, sprocket."
    with pytest.raises(SpecError, match=r"^Unknown widget 'zzz'\. Valid widgets: cog, gear, sprocket\.$"):
        reg.get("zzz")


def test_registering_a_name_or_alias_twice_is_an_error():
    reg: Registry[int] = Registry("widget")
    reg.register("gear", 1, aliases=("cog",))
    for name in ("gear", "cog"):
        with pytest.raises(ValueError, match=f"widget '{name}' registered twice"):
            reg.register(name, 2)
    with pytest.raises(ValueError, match="registered twice"):
        reg.register("wheel", 3, aliases=("gear",))
    assert reg.get("cog") == 1 and reg.names() == ["gear"] and reg.canonical("cog") == "gear"
    reg.unregister("gear")
    assert "gear" not in reg and reg.find("cog") is None


def test_the_loader_runs_once_before_the_first_lookup():
    calls = []
    reg: Registry[int] = Registry("widget", load=lambda: calls.append(1) or reg.register("late", 7))
    assert calls == []
    assert reg.get("late") == 7 and reg.names() == ["late"] and calls == [1]


@pytest.mark.parametrize("kind", KINDS)
def test_every_registry_resolves_each_name_and_refuses_a_near_miss_with_a_suggestion(kind):
    registry = _registries()[kind]
    names = registry.names()
    assert names, kind
    assert registry.kind == kind
    for name in names:
        assert registry.get(name) is registry[name]
    near = names[0][:-1] + ("x" if names[0][-1] != "x" else "y")
    if near not in names and near not in registry.aliases():
        with pytest.raises(SpecError, match=rf"^Unknown {kind} {near!r}\..* Valid {kind}s: "):
            registry.get(near)
    with pytest.raises(ValueError, match="registered twice"):
        registry.register(names[0], registry.get(names[0]))


def test_the_public_lookups_raise_the_registry_message():
    from optbench.optimizers import get_optimizer
    from optbench.problems import get_problem
    from optbench.recipes import get_recipe
    from optbench.schedules import get_schedule
    from optbench.tuning import get_protocol

    for lookup, bad, good in [(get_optimizer, "adamm", "adam"), (get_problem, "rosenbrok", "rosenbrock"),
                              (get_recipe, "goyl", "goyal"), (get_schedule, "cosin", "cosine"),
                              (get_protocol, "randm", "random")]:
        with pytest.raises(SpecError, match=rf"Unknown \w+ '{bad}'\. Did you mean .*'{good}'"):
            lookup(bad)


def test_an_unknown_pruner_is_refused_with_the_valid_ones():
    from optbench.optimizers import get_optimizer
    from optbench.tuning.protocols import get_protocol
    from optbench.tuning.study import check_tuning

    with pytest.raises(SpecError, match=r"Unknown pruner 'hyperband'\. Valid pruners: median, none\."):
        check_tuning(get_optimizer("adam"), {}, get_protocol("tpe"), pruner="hyperband")


def test_protocols_build_their_samplers_without_dispatching_on_the_name():
    from optbench.tuning.protocols import PROTOCOLS, Protocol
    from optbench.tuning.spaces import Dim

    seen = []
    proto = Protocol("tpe-copy", "a renamed copy", 10, lambda seed, dims: seen.append((seed, dims)) or "sampler")
    dims = [Dim("lr", 1e-5, 1.0, log=True)]
    assert proto.make_sampler(3, dims) == "sampler" and seen == [(3, dims)]  # the name plays no part
    assert type(PROTOCOLS.get("random").make_sampler(0, dims)).__name__ == "SlotRandomSampler"
    assert type(PROTOCOLS.get("tpe").make_sampler(0, dims)).__name__ == "BatchTPESampler"
    with pytest.raises(SpecError, match="searches the learning rate only"):
        PROTOCOLS.get("grid").make_sampler(0, [*dims, Dim("momentum", 0.0, 0.9)])
    assert "median pruner" not in PROTOCOLS.get("tpe").doc  # its default is --pruner none
    assert all(type(p.make_pruner()).__name__ == "NopPruner" for p in PROTOCOLS.list())


def test_protocols_pickle_for_worker_processes():
    import pickle

    from optbench.tuning.protocols import PROTOCOLS
    from optbench.tuning.spaces import Dim

    dims = [Dim("lr", 1e-5, 1.0, log=True)]
    for protocol in PROTOCOLS.list():
        copy = pickle.loads(pickle.dumps(protocol))
        assert copy.name == protocol.name and type(copy.make_sampler(0, dims)) is type(protocol.make_sampler(0, dims))


def test_pruner_none_leaves_the_protocols_own_and_another_replaces_it(monkeypatch):
    import optuna

    from optbench.optimizers import get_optimizer
    from optbench.problems import get_problem
    from optbench.tuning import parse_space, tune_one
    from optbench.tuning.protocols import Protocol, random_sampler

    made = []
    created = optuna.create_study
    monkeypatch.setattr(optuna, "create_study", lambda **kw: made.append(type(kw["pruner"]).__name__) or created(**kw))
    own = Protocol("random-own-pruner", "random search with its own pruner", 4, random_sampler,
                   make_pruner=lambda: optuna.pruners.PercentilePruner(25.0))
    for pruner in ("none", "median"):
        tune_one(get_problem("rosenbrock"), get_optimizer("adam"), protocol=own, trials=4, dims=parse_space(""),
                 steps=5, batch=4, storage=None, out_dir=".", persist=lambda trials: None, existing=[], pruner=pruner)
    assert made == ["PercentilePruner", "MedianPruner"]


# ---- figures: registered in their own modules; --figures and its help come from the registry ---------------

def _help(*args: str) -> str:
    from optbench.cli.app import command

    result = CliRunner().invoke(command(), [*args, "--help"], terminal_width=100, prog_name="optbench")
    assert result.exit_code == 0, result.output
    return " ".join(result.output.split())


def _figures_in_help(text: str, lead: str) -> list[str]:
    listed = text.split(lead, 1)[1].split(". [default: all]", 1)[0]
    return [item.split(" (", 1)[0] for item in listed.split("; ")]


FIGURE_HELP = [(("report",), "allow it): "), (("tune",), "'optbench report --figures'): ")]


@pytest.mark.parametrize("args, lead", FIGURE_HELP, ids=["report", "tune"])
def test_figure_help_lists_exactly_the_registered_figures(args, lead):
    from optbench.report.figures import FIGURES

    assert _figures_in_help(_help(*args), lead) == FIGURES.names()


def test_every_registered_figure_is_accepted_by_figures_and_all_means_every_one():
    from optbench.report import choose_figures, validate
    from optbench.report.figures import FIGURES

    for name in FIGURES.names():
        assert validate(["png"], [name], "final_loss", 10, 10, 100)[1] == [name]
    assert choose_figures(["all"]) == choose_figures(None) == FIGURES.names()
    assert choose_figures([" Curves ", "curves", "grids"]) == ["curves", "grids"]
    with pytest.raises(SpecError, match=r"Unknown figure 'curvez'\. Did you mean 'curves'\?"):
        choose_figures(["curvez"])


def test_figures_are_registered_by_their_own_modules():
    from optbench.report.figures import FIGURE_MODULES, FIGURES

    assert {FIGURES.get(n).draw.__module__ for n in FIGURES.names()} == set(FIGURE_MODULES)


def test_protocol_and_pruner_help_come_from_their_registries():
    from optbench.tuning.protocols import PROTOCOLS, PRUNERS

    text = _help("tune")
    protocols = text.split("How the trial budget is spent: ", 1)[1].split(". See", 1)[0]
    assert [p.split(" (")[0] for p in protocols.split(", ")] == PROTOCOLS.names()
    assert ", ".join(PRUNERS.names()) + " (median reads" in text


@pytest.mark.parametrize("what, kind", [("figures", "figure"), ("protocols", "protocol"), ("pruners", "pruner"),
                                        ("recipes", "recipe"), ("schedules", "schedule")])
def test_list_shows_exactly_each_registry(what, kind):
    import json

    from optbench.cli.app import command

    result = CliRunner().invoke(command(), ["list", what, "--json"])
    assert result.exit_code == 0, result.output
    assert [row["name"] for row in json.loads(result.output)] == _registries()[kind].names()


def test_every_command_module_is_registered():
    from optbench.cli.app import COMMANDS, SUBAPPS, command

    assert set(command().commands) == {name for name, _, _ in COMMANDS + SUBAPPS}


# ---- the guide's recipes, done for real ---------------------------------------------------------------------

@pytest.fixture
def throwaway_figure():
    from optbench.report.figures import FIGURES, STATIC, figure
    from optbench.report.page import Section

    drawn = []

    @figure("final-losses", doc="a throwaway test figure", needs=STATIC,
            applies=lambda data: not data.summary.empty)
    def final_losses(report):
        drawn.append(report.data.summary["final_loss"].tolist())
        return [Section("Final losses (throwaway)", note=f"{len(drawn[-1])} runs")]

    yield drawn
    FIGURES.unregister("final-losses")


def test_a_figure_added_as_the_guide_says_is_drawn_and_offered_by_the_cli(throwaway_figure, tmp_path):
    from optbench.optimizers import get_optimizer
    from optbench.problems import get_problem
    from optbench.report import build_report
    from optbench.runner import run_sweep
    from optbench.sweep.spec import Sweep

    assert "final-losses" in _figures_in_help(_help("report"), "allow it): ")
    results = tmp_path / "res"
    run_sweep(Sweep([get_problem("rosenbrock")], [get_optimizer("adam")], lrs=[1e-2], seeds=[0], steps=5,
                    engine="loop"), results)
    index = build_report([results], tmp_path / "report", formats=["png"], figures=["final-losses"])
    assert len(throwaway_figure) == 1 and len(throwaway_figure[0]) == 1
    assert "Final losses (throwaway)" in index.read_text()
    from optbench.cli.app import command

    result = CliRunner().invoke(command(), ["report", str(results), "--out", str(tmp_path / "r2"), "--figures",
                                 "final-losses", "--format", "png", "-q"])
    assert result.exit_code == 0, result.output
    assert len(throwaway_figure) == 2


def test_a_problem_and_an_optimizer_added_as_the_guide_says_are_listed_and_resolved():
    from optbench.cli.app import command
    from optbench.optimizers import OPTIMIZERS, get_optimizer, register_optimizer
    from optbench.problems import PROBLEMS, get_problem, register_problem

    rosenbrock = PROBLEMS.get("rosenbrock")
    register_problem(dataclasses.replace(rosenbrock, name="rosenbrock-copy"))
    register_optimizer(dataclasses.replace(OPTIMIZERS.get("adam"), name="adam-copy"))
    try:
        assert get_problem("rosenbrock-copy(b=50)").config["b"] == 50
        assert get_optimizer("adam-copy(lr=0.5)").lr == 0.5
        for what, name in (("problems", "rosenbrock-copy"), ("optimizers", "adam-copy")):
            result = CliRunner().invoke(command(), ["list", what, "--json"])
            assert result.exit_code == 0 and f'"name": "{name}"' in result.output, result.output[-500:]
    finally:
        PROBLEMS.unregister("rosenbrock-copy")
        OPTIMIZERS.unregister("adam-copy")


def test_a_protocol_and_a_recipe_added_as_the_guide_says_are_resolved_and_offered():
    from optbench.recipes import RECIPES, get_recipe
    from optbench.tuning.protocols import PROTOCOLS, Protocol, get_protocol, random_sampler

    PROTOCOLS.register("random-tiny", Protocol("random-tiny", "random search, 5 trials", 5, random_sampler,
                                               fixed_trials=5))
    RECIPES.register("linear-copy", dataclasses.replace(RECIPES.get("linear-warmup"), name="linear-copy",
                                                        aliases=()))
    try:
        assert get_protocol("random-tiny").budget(None) == 5
        assert re.search(r"random-tiny \(5 trials\)", _help("tune"))
        assert get_recipe("linear-copy(warmup=0.1)").label == "linear-copy(warmup=0.1)"
    finally:
        PROTOCOLS.unregister("random-tiny")
        RECIPES.unregister("linear-copy")
