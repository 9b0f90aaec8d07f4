"""Which engine runs which runs: a sweep's runs as work items, and one work item run on its engine.

Runs that one batched rule can advance together (same problem, same rule, same non-float settings) form a
group; ``engine='auto'`` runs such groups on the batched engine and everything else on the loop engine.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from optbench.sweep.spec import Run


def plan_groups(runs: Sequence[Run], engine: str) -> list[tuple[str, list[Run]]]:
    """Split runs into (engine, runs) work items: batched groups where possible, single loop runs else.
    Which engine runs what is :func:`optbench.engines.capabilities.choose_engine` (the tuner asks it too)."""
    from optbench.engines.batched import group_key
    from optbench.engines.capabilities import choose_engine, get_engine

    groups: dict[tuple, list[Run]] = {}
    items: list[tuple[str, list[Run]]] = []
    choices: dict[tuple, tuple[str, tuple]] = {}  # the seeds of a configuration share its optimizer and problem

    def choice(run: Run) -> tuple[str, tuple]:
        """(the engine for the run, its rule's group key), once per configuration and recipe."""
        key = (id(run.optimizer), id(run.problem), run.device, run.recipe)
        if key not in choices:
            chosen = choose_engine(engine, run.problem, run.optimizer, run.recipe, run.device)
            choices[key] = (chosen, group_key(run.optimizer) if chosen == "batched" else ())
        return choices[key]

    key: tuple
    for run in runs:
        chosen, rule_key = choice(run)
        if chosen == "loop":
            items.append(("loop", [run]))
        elif run.problem.kind == "analytic":
            recipe = run.recipe
            key = (run.problem.label, run.steps, run.record_every, run.dtype, run.device, rule_key, recipe.schedule,
                   recipe.clip_norm, recipe.clip_value)
            groups.setdefault(key, []).append(run)
        else:
            key = ("network", run.problem.label, run.steps, run.record_every, run.device, rule_key)
            groups.setdefault(key, []).append(run)
    for group in groups.values():
        size = get_engine("batched", group[0].problem.kind).max_group
        for i in range(0, len(group), size):
            items.append(("batched", group[i: i + size]))
    return items


def execute(engine: str, runs: list[Run], progress: Callable[[int], None] | None = None):
    """Run one work item on its engine (:func:`optbench.engines.capabilities.get_engine`); returns its
    GroupTrace."""
    from optbench.engines.capabilities import get_engine

    return get_engine(engine, runs[0].problem.kind).run(runs, progress)
