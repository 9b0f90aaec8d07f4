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
    from optbench.engines.capabilities import batched_network_pays, choose_engine, get_engine
    from optbench.engines.grouping import group_key
    from optbench.sweep import memory

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
    budget = memory.rows_budget_bytes(memory.rows_budget_limit())
    for group in groups.values():
        first = group[0]
        if (engine == "auto" and first.problem.kind != "analytic"
                and not batched_network_pays(first.optimizer, first.device, len(group))):
            items.extend(("loop", [run]) for run in group)  # too few configurations for batching to pay
            continue
        size = get_engine("batched", first.problem.kind).max_group
        fit = memory.runs_per_item(first.steps, first.record_every, first.problem.dim, budget)
        if fit < min(size, len(group)):  # the recorded rows would not fit: slices of runs, one chunk each
            items.extend(("batched", group[part]) for part in memory.slices(len(group), fit))
            continue
        for i in range(0, len(group), size):
            items.append(("batched", group[i: i + size]))
    return items


def plan_round(runs: Sequence[Run], engine: str) -> list[tuple[str, list[int]]]:
    """A tuning round as (engine, indices into ``runs``) work items. The round's runs are trials of one problem
    and optimizer from one seed (each its own hyperparameters, perhaps its own schedule); ``engine`` is
    :func:`optbench.engines.capabilities.choose_engine`'s decision for the study, as for ``run``:

    - ``batched``: the whole round, in items of the engine's ``max_group`` (schedules may differ within one);
    - ``loop`` on an analytic problem: the whole round on the ``trials`` engine (side by side, or one shared
      optimizer object: :mod:`optbench.engines.trials`), equal to one loop run each;
    - ``loop`` otherwise: one run per item."""
    from optbench.engines.capabilities import get_engine

    n = len(runs)
    if engine == "loop" and runs[0].problem.kind == "analytic" and n > 1:
        engine = "trials"
    size = get_engine(engine, runs[0].problem.kind).max_group
    return [(engine, list(range(i, min(i + size, n)))) for i in range(0, n, size)]


def execute(engine: str, runs: list[Run], progress: Callable[[int], None] | None = None, *,
            measure_cost: bool = True):
    """Run one work item on its engine (:func:`optbench.engines.capabilities.get_engine`); returns its
    GroupTrace (without cost metrics when ``measure_cost`` is False: tuning compares losses)."""
    from optbench.engines.capabilities import get_engine

    return get_engine(engine, runs[0].problem.kind).run(runs, progress, measure_cost=measure_cost)
