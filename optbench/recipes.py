"""Named training recipes for the batch-size study: an lr-scaling rule plus a gradual warm-up, by name.

A recipe expands to settings optbench already has (``Sweep.lr_scaling`` and one ``Sweep.schedules`` entry), so
``--recipe linear-warmup`` runs exactly what ``--lr-scaling linear --schedule "warmup-constant(warmup=0.05)"``
runs: the same run ids and labels. The recipe's name is recorded beside the runs (summary column
``recipe_name``, the manifest's sweep record ``recipe``) but is not part of a run's identity.

With B the run's batch size, B₀ the base batch size (``--base-batch-size``, default the smallest batch size
of the sweep), η₀ the given learning rate, T the step budget and W the warm-up length:

    target lr       η_B = η₀ · (B / B₀)^p          p = 1 (linear rule), p = ½ (square-root rule)
    lr of update t  η_t = η_B · (t + 1)/(W + 1)    for t < W,   then η_B      (schedule ``warmup-constant``)

Goyal et al. warm up over 5 of 90 epochs (5.6% of the budget), starting from η₀ and adding a constant each
iteration. Here W defaults to 5% of the budget (``warmup=0.05``; an integer is a number of steps), and the
ramp starts at η_B/(W + 1) as torch's ``LinearLR`` does; with B/B₀ = k ≫ 1, η₀ = η_B/k is near zero as well.
After the warm-up the lr stays constant, like the per-batch-size lr grid the recipe is compared with, so the
comparison isolates the rule (Goyal et al.'s later step decays are left out).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from optbench.errors import UsageError
from optbench.params import Param
from optbench.registry import Registry
from optbench.spec import Spec, format_spec, parse_spec

WARMUP_SCHEDULE = "warmup-constant"  # optbench.schedules: linear warm-up, then constant


@dataclass(frozen=True)
class RecipeEntry:
    """A registered recipe: the lr-scaling rule it applies (``optbench.engines.recipe.LR_SCALINGS``) and its doc."""

    name: str
    lr_scaling: str
    doc: str
    reference: str
    aliases: tuple[str, ...] = ()
    params: dict[str, Param] = field(default_factory=dict)


def _warmup_param() -> Param:
    from optbench.schedules import SCHEDULE_PARAMS

    return SCHEDULE_PARAMS[WARMUP_SCHEDULE]["warmup"]  # 0.05: steps (int) or a fraction of the budget


RECIPES: Registry[RecipeEntry] = Registry("recipe")
for _entry in (
    RecipeEntry(
        "linear-warmup", "linear",
        "Linear scaling rule with gradual warm-up: η_B = η₀·B/B₀, reached by a linear ramp over the first "
        "`warmup` of the budget, then constant. Meant for SGD (with or without momentum) below the critical "
        "batch size; beyond it, or past the curvature's stability limit (η < 2/λ_max for SGD), it fails.",
        "Goyal et al. 2017, Accurate, Large Minibatch SGD: Training ImageNet in 1 Hour (arXiv:1706.02677)",
        aliases=("goyal",), params={"warmup": _warmup_param()}),
    RecipeEntry(
        "sqrt-warmup", "sqrt",
        "Square-root scaling rule with gradual warm-up: η_B = η₀·√(B/B₀), the same warm-up, then constant. "
        "Keeps the gradient-noise variance per unit of lr fixed; the rule proposed for adaptive methods "
        "(Adam, RMSprop).",
        "Hoffer et al. 2017 (arXiv:1705.08741); Malladi et al. 2022, On the SDEs and Scaling Rules for "
        "Adaptive Gradient Algorithms (arXiv:2205.10287)",
        params={"warmup": _warmup_param()}),
):
    RECIPES.register(_entry.name, _entry, aliases=_entry.aliases)


@dataclass(frozen=True)
class Recipe:
    """A resolved recipe: its entry and its parameters (defaults filled in)."""

    entry: RecipeEntry
    params: dict[str, Any]

    @property
    def label(self) -> str:
        """Canonical name with the parameters that differ from the defaults: ``linear-warmup(warmup=0.1)``."""
        given = {k: v for k, v in self.params.items() if v != self.entry.params[k].default}
        return format_spec(self.entry.name, given)

    @property
    def lr_scaling(self) -> str:
        return self.entry.lr_scaling

    @property
    def schedule(self) -> str:
        """The warm-up schedule's label, with the warm-up length always written out."""
        from optbench.schedules import get_schedule

        return get_schedule(format_spec(WARMUP_SCHEDULE, {"warmup": self.params["warmup"]})).label

    def apply(self, lr_scaling: str | None, schedules: Sequence[str] | None) -> tuple[str, list[str]]:
        """(lr_scaling, schedules) of a sweep using this recipe; a scaling rule or a non-constant schedule given
        beside the recipe is a conflict (the recipe sets both)."""
        from optbench.schedules import get_schedule

        sets = f"recipe {self.label!r}, which sets --lr-scaling {self.lr_scaling} and --schedule {self.schedule!r}"
        if lr_scaling is not None:
            raise UsageError(f"--lr-scaling {lr_scaling} conflicts with {sets}: give one or the other.")
        given = [s for s in schedules if not get_schedule(s).is_constant] if schedules else []
        if given or len(schedules or ()) > 1:
            raise UsageError(f"--schedule {','.join(schedules or ())!r} conflicts with {sets}: give one or the other.")
        return self.lr_scaling, [self.schedule]


def list_recipes() -> list[RecipeEntry]:
    return RECIPES.list()


def get_recipe(spec: str | Spec | Recipe) -> Recipe:
    """Resolve ``"linear-warmup"``, ``"goyal(warmup=500)"``…; unknown names raise with the nearest ones."""
    from optbench.params import validate_kwargs

    if isinstance(spec, Recipe):
        return spec
    if isinstance(spec, str):
        spec = parse_spec(spec)
    entry = RECIPES.get(spec.name)  # a name or an alias
    params = validate_kwargs(f"recipe {entry.name!r}", spec.kwargs, entry.params)
    if isinstance(spec.kwargs.get("warmup"), int) and not isinstance(spec.kwargs["warmup"], bool):
        params["warmup"] = spec.kwargs["warmup"]  # a step count stays an integer (as in get_schedule)
    return Recipe(entry, params)
