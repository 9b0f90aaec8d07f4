"""What a sweep is: :class:`Run` (one trajectory, its identity and ``run_id``) and :class:`Sweep` (the axes
it varies), expanded into runs with their ids.

A run is (problem, optimizer with hyperparameters, seed, steps, record interval, dtype, device type, training
recipe); its ``run_id`` hashes all of that with the optbench version.
"""

from __future__ import annotations

import functools
import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, cast

from optbench import __version__
from optbench.devices import problem_device
from optbench.engines.recipe import PLAIN, Recipe
from optbench.errors import SpecError, UsageError
from optbench.problems.base import AnalyticProtocol, Problem
from optbench.spec import format_spec

ENGINES = ("auto", "loop", "batched")
DTYPES = ("float64", "float32")
MAX_RECORDED_ROWS = 1000  # default record interval keeps about this many rows per run
NOISE_RNG = "numpy-pcg64"  # identity of runs on noisy analytic problems (Run.identity, optbench.problems.rng)
SAMPLED_ORACLES = "one-sample-per-step"  # identity of closure-calling runs on noisy analytic problems (Run.identity)


@dataclass(frozen=True)
class Run:
    problem: Problem  # a problem object (optbench.problems)
    optimizer: Any  # an OptimizerConfig with its learning rate applied
    seed: int
    steps: int
    record_every: int
    dtype: str = "float64"
    device: str = "cpu"
    recipe: Recipe = PLAIN  # schedule, clipping, label smoothing, lr scaling, noise scale (engines.recipe)
    recipe_name: str | None = None  # the named recipe (optbench.recipes) that set lr_scaling and the schedule;
    # recorded, not part of the identity or label: the settings it expands to already are
    target: float | None = None  # steps to target counts loss − f* ≤ target (None: the problem's own target);
    # recorded, not part of the identity: it does not change the trajectory (optbench.targets)

    @property
    def resolved_target(self) -> float:
        return self.problem.target if self.target is None else self.target

    @property
    def identity(self) -> dict[str, Any]:
        recipe = self.recipe.identity()
        source = getattr(self.optimizer.entry, "source_sha", "")  # a user file's code: edits re-run
        problem_source = getattr(self.problem, "source_sha", "")  # a user problem's module (optbench.problems.user)
        return {
            **({"optimizer_source": source} if source else {}),
            **({"problem_source": problem_source} if problem_source else {}),
            "problem": self.problem.name,
            "problem_config": self.problem.config,
            "optimizer": self.optimizer.name,
            "hyperparams": self.optimizer.hyperparams,
            "seed": self.seed,
            "steps": self.steps,
            "record_every": self.record_every,
            "dtype": self.dtype,
            "device_type": self.device.split(":")[0],
            "optbench": __version__,
            **({"recipe": recipe} if recipe else {}),
            **({"oracles": SAMPLED_ORACLES} if self.sees_sampled_oracles else {}),
            **({"noise_rng": NOISE_RNG} if self.draws_analytic_noise else {}),
        }

    @property
    def draws_analytic_noise(self) -> bool:
        """A run on a noisy analytic problem: its gradient noise comes from numpy's PCG64 streams
        (optbench.problems.rng) since both batched paths share them; before, from torch's generator. Its
        identity says so, so results computed before are re-run, never mixed with new ones. Every other run
        keeps its run id."""
        return getattr(self.problem, "kind", "") == "analytic" and bool(cast(AnalyticProtocol, self.problem).is_noisy)

    @property
    def sees_sampled_oracles(self) -> bool:
        """An optimizer that calls its closure (loss values, several evaluations per step) on a noisy analytic
        problem: its oracles follow the per-step sample model (optbench.problems.analytic), which changed its
        numbers, so its identity says so and results computed before are not resumed as if they were equal.
        Every other run keeps its run id."""
        return bool(self.optimizer.entry.needs_closure and getattr(self.problem, "kind", "") == "analytic"
                    and getattr(self.problem, "is_noisy", False))

    @functools.cached_property
    def run_id(self) -> str:
        return _hash_identity(json.dumps(self.identity, sort_keys=True, default=repr))

    @functools.cached_property
    def optimizer_label(self) -> str:
        given = {k: v for k, v in self.optimizer.given.items() if k != "lr"}
        return format_spec(self.optimizer.name, given) + self.recipe.label()


def _hash_identity(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:16]


_SEED_SLOT = "\x00optbench-seed\x00"


def assign_run_ids(seed_block: Sequence[Run]) -> None:
    """Fill the cached ``run_id`` of runs that differ only in their seed, serialising their identity once.

    The identity JSON is built once with a placeholder for the seed; each seed's text is that template
    with the placeholder replaced, hashed as :attr:`Run.run_id` would hash it (equal ids, tested). A
    1000-seed configuration thus costs one ``json.dumps`` and 1000 SHA-256 digests.
    """
    import dataclasses

    if not seed_block or any(type(r.seed) is not int for r in seed_block):  # json writes a bool differently
        return
    first = seed_block[0]
    slot = json.dumps(_SEED_SLOT)
    text = json.dumps({**dataclasses.replace(first, seed=0).identity, "seed": _SEED_SLOT}, sort_keys=True,
                      default=repr)
    if text.count(slot) != 1:
        return
    head, tail = text.split(slot)
    for run in seed_block:
        run.__dict__["run_id"] = _hash_identity(f"{head}{run.seed}{tail}")


@dataclass
class Sweep:
    """Everything a sweep varies. ``lrs=None`` keeps each optimizer's own learning rate."""

    problems: Sequence[Any]
    optimizers: Sequence[Any]
    lrs: Sequence[float] | None = None
    seeds: Sequence[int] = (0,)
    steps: int = 1000
    batch_sizes: Sequence[int] | None = None
    record_every: int | None = None
    engine: str = "auto"
    device: str = "auto"  # "auto": CPU for analytic problems, the accelerator (if any) for networks
    dtype: str = "float64"
    schedules: Sequence[str] | None = None  # schedule specs, a sweep axis (optbench.schedules); None: recipe's
    epochs: int | None = None  # network problems: a budget of epochs, steps = epochs × ceil(n_train / batch)
    recipe: Recipe = PLAIN  # every run's recipe; lr_scaling scales each run's lr from recipe.base_batch_size
    # (default: the smallest batch size of the sweep), the schedule is each run's from ``schedules``
    recipe_name: str | None = None  # a named recipe (optbench.recipes): sets lr_scaling and the schedule
    target: float | None = None  # steps to target: loss − f* ≤ target; None: each problem's own (optbench.targets)

    def __post_init__(self) -> None:
        """Problems and optimizers may be given as spec strings or objects (optbench.resolve)."""
        from optbench.resolve import resolve_optimizers, resolve_problems

        self.problems = resolve_problems(self.problems)
        self.optimizers = resolve_optimizers(self.optimizers)

    @classmethod
    def build(cls, problems: Sequence[Any], optimizers: Sequence[Any], **settings: Any) -> Sweep:
        """A sweep from flat settings, as the command line and suite files give them: the fields of
        :class:`Recipe` (``clip_norm=1.0``, …) go into ``recipe``, the rest are Sweep fields."""
        return cls(problems, optimizers).with_settings(**settings)

    def with_settings(self, **settings: Any) -> Sweep:
        """A copy with flat settings replaced (Sweep fields, and Recipe fields but ``schedule``, which is the
        ``schedules`` axis); an unknown name is a ``UsageError`` listing the valid ones."""
        import dataclasses

        own = {f.name for f in dataclasses.fields(self)} - {"recipe"}
        of_recipe = set(Recipe.field_names()) - {"schedule"}
        unknown = sorted(set(settings) - own - of_recipe)
        if unknown:
            raise UsageError(f"{unknown[0]!r} is not a sweep setting; valid: {', '.join(sorted(own | of_recipe))}.")
        recipe = self.recipe.replace(**{k: v for k, v in settings.items() if k in of_recipe})
        return dataclasses.replace(self, **{k: v for k, v in settings.items() if k in own}, recipe=recipe)

    def setting(self, name: str) -> Any:
        """A flat setting's value (a Sweep field, or a field of its recipe), as :meth:`with_settings` takes it."""
        return getattr(self.recipe if name in Recipe.field_names() and name != "schedule" else self, name)

    @property
    def schedule_axis(self) -> list[str]:
        """The schedule specs the sweep varies (``schedules``, else the recipe's one schedule)."""
        return list(self.schedules or (self.recipe.schedule,))

    def expand(self) -> list[Run]:
        """Every run of the sweep, in order (problem, optimizer, lr, schedule, seed), run ids filled in."""
        runs = []
        for seed_block in self._seed_blocks():
            assign_run_ids(seed_block)
            runs.extend(seed_block)
        return runs

    def _seed_blocks(self) -> list[list[Run]]:
        """The runs of the sweep as blocks that differ only in their seed."""
        from optbench.optimizers.registry import check_lr_override
        from optbench.problems import get_problem
        from optbench.problems.base import BUFFERS

        if self.recipe_name is not None:
            import dataclasses

            from optbench.recipes import get_recipe

            named = get_recipe(self.recipe_name)
            lr_scaling, schedules = named.apply(self.recipe.lr_scaling, self.schedules)
            plain = dataclasses.replace(self, recipe_name=None, recipe=self.recipe.replace(lr_scaling=lr_scaling),
                                        schedules=schedules)
            return [[dataclasses.replace(run, recipe_name=named.label) for run in block]
                    for block in plain._seed_blocks()]
        if self.steps < 1:
            raise UsageError(f"--steps {self.steps} must be at least 1.")
        from optbench.targets import check_target

        target = check_target(self.target)
        if self.engine not in ENGINES:
            raise UsageError(f"Unknown engine {self.engine!r}; valid engines: {', '.join(ENGINES)}.")
        if self.dtype not in DTYPES:
            raise UsageError(f"Unknown dtype {self.dtype!r}; valid dtypes: {', '.join(DTYPES)}.")
        record_every = self.record_every or max(1, -(-self.steps // MAX_RECORDED_ROWS))
        if record_every < 1:
            raise UsageError(f"--record-every {record_every} must be at least 1.")
        problems = list(self.problems)
        if self.batch_sizes:
            without = [p.name for p in problems if not p.has_batch_size]
            if without:
                raise UsageError(f"--batch-size does not apply to {', '.join(sorted(set(without)))}: "
                                 "only problems with a batch size take it (e.g. noisy-quadratic).")
            problems = [get_problem(p.spec, batch_size=b) for p in problems for b in self.batch_sizes]
        for opt in self.optimizers:
            check_lr_override(opt, list(self.lrs) if self.lrs else None)
            for p in problems:
                if opt.entry.max_dim is not None and p.dim > opt.entry.max_dim:
                    raise SpecError(f"Optimizer {opt.name!r} handles problems up to dimension "
                                    f"{opt.entry.max_dim}; {p.label} has {p.dim}.")
                if opt.entry.schedule_free and BUFFERS in getattr(p, "features", ()):
                    raise SpecError(f"Optimizer {opt.name!r} is schedule-free: its reported point needs BatchNorm "
                                    f"statistics recomputed there, which optbench does not do; {p.label} has "
                                    "BatchNorm. Use a model without it.")
        recipe = self.recipe
        if self.schedules and recipe.schedule != PLAIN.schedule:
            raise UsageError(f"The schedule is given twice (recipe schedule {recipe.schedule!r} and schedules "
                             f"{list(self.schedules)!r}); give it once, as schedules.")
        schedules = recipe.validate(problems, self.optimizers, lrs=self.lrs, steps=self.steps,
                                    schedules=self.schedule_axis)
        base_batch = recipe.resolve_lr_scaling(problems, self.optimizers)
        recipe = recipe.replace(base_batch_size=base_batch)
        blocks = []
        seeds = [int(seed) for seed in self.seeds]
        for problem in problems:
            device = problem_device(self.device, problem)
            budget = self._budget(problem, record_every)
            for opt in self.optimizers:
                configs = [opt.with_hyperparams(lr=lr) for lr in self.lrs] if self.lrs else [opt]
                if recipe.lr_scaling:
                    factor = recipe.lr_factor(problem.batch_size, base_batch)
                    configs = [c.with_hyperparams(lr=c.lr * factor) for c in configs]
                for config in configs:
                    for run_recipe in [recipe.replace(schedule=schedule) for schedule in schedules]:
                        blocks.append([Run(problem, config, seed, *budget, self.dtype, device, run_recipe,
                                           target=target)
                                       for seed in seeds])
        return blocks

    def _budget(self, problem, record_every: int) -> tuple[int, int]:
        """(steps, record interval) of a problem's runs: ``steps``, or ``epochs`` of a network problem."""
        if self.epochs is None:
            return self.steps, record_every
        if self.epochs < 1:
            raise UsageError(f"--epochs {self.epochs} must be at least 1.")
        if problem.kind != "network":
            raise UsageError(f"--epochs applies to network problems; {problem.label} is {problem.kind}: "
                             "use --steps.")
        steps = self.epochs * problem.steps_per_epoch()
        return steps, self.record_every or max(1, -(-steps // MAX_RECORDED_ROWS))
