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
from typing import Any

from optbench import __version__
from optbench.devices import problem_device
from optbench.errors import SpecError, UsageError
from optbench.spec import format_spec

ENGINES = ("auto", "loop", "batched")
DTYPES = ("float64", "float32")
MAX_RECORDED_ROWS = 1000  # default record interval keeps about this many rows per run
SAMPLED_ORACLES = "one-sample-per-step"  # identity of closure-calling runs on noisy analytic problems (Run.identity)
LR_SCALINGS = {"linear": 1.0, "sqrt": 0.5}  # lr = base lr × (B / B_base)^power (Goyal et al. 2017; √ rule)


@dataclass(frozen=True)
class Run:
    problem: Any  # a problem object (optbench.problems)
    optimizer: Any  # an OptimizerConfig with its learning rate applied
    seed: int
    steps: int
    record_every: int
    dtype: str = "float64"
    device: str = "cpu"
    schedule: str = "constant"  # a schedule spec label (optbench.schedules)
    clip_norm: float | None = None  # clip the gradient the optimizer sees to this norm (per run)
    clip_value: float | None = None  # clip each gradient coordinate to [-v, v]
    label_smoothing: float = 0.0  # network problems only
    lr_scaling: str | None = None  # "linear" or "sqrt": the lr was scaled from base_batch_size (LR_SCALINGS)
    base_batch_size: int | None = None
    noise_scale_every: int = 0  # network problems: estimate the gradient noise scale every N steps (0: off)
    recipe_name: str | None = None  # the named recipe (optbench.recipes) that set lr_scaling and the schedule;
    # recorded, not part of the identity or label: the settings it expands to already are
    target: float | None = None  # steps to target counts loss − f* ≤ target (None: the problem's own target);
    # recorded, not part of the identity: it does not change the trajectory (optbench.targets)

    @property
    def resolved_target(self) -> float:
        return self.problem.target if self.target is None else self.target

    @functools.cached_property
    def recipe(self) -> dict[str, Any]:
        """The non-default training-recipe settings; empty for the defaults, so run ids stay as before."""
        from optbench.schedules import get_schedule

        schedule = get_schedule(self.schedule)
        recipe: dict[str, Any] = {} if schedule.is_constant else {"schedule": schedule.resolved}
        for key in ("clip_norm", "clip_value", "label_smoothing", "lr_scaling", "base_batch_size",
                    "noise_scale_every"):
            if getattr(self, key):
                recipe[key] = getattr(self, key)
        return recipe

    @property
    def identity(self) -> dict[str, Any]:
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
            **({"recipe": self.recipe} if self.recipe else {}),
            **({"oracles": SAMPLED_ORACLES} if self.sees_sampled_oracles else {}),
        }

    @property
    def sees_sampled_oracles(self) -> bool:
        """An optimizer that calls its closure (loss values, several evaluations per step) on a noisy analytic
        problem: its oracles follow the per-step sample model (optbench.problems.analytic), which changed its
        numbers, so its identity says so and results computed before are not resumed as if they were equal.
        Every other run keeps its run id."""
        return bool(self.optimizer.entry.needs_closure and getattr(self.problem, "kind", "") == "analytic"
                    and self.problem.is_noisy)

    @functools.cached_property
    def run_id(self) -> str:
        return _hash_identity(json.dumps(self.identity, sort_keys=True, default=repr))

    @functools.cached_property
    def optimizer_label(self) -> str:
        from optbench.schedules import recipe_label

        label = format_spec(self.optimizer.name, {k: v for k, v in self.optimizer.given.items() if k != "lr"})
        label += recipe_label(self.schedule, self.clip_norm, self.clip_value, self.label_smoothing)
        if self.lr_scaling:
            label += f"+{self.lr_scaling}-scaling(base_batch_size={self.base_batch_size})"
        return label + (f"+noise-scale(every={self.noise_scale_every})" if self.noise_scale_every else "")


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
    schedules: Sequence[str] = ("constant",)  # schedule specs, a sweep axis (optbench.schedules)
    clip_norm: float | None = None
    clip_value: float | None = None
    label_smoothing: float = 0.0
    epochs: int | None = None  # network problems: a budget of epochs, steps = epochs × ceil(n_train / batch)
    lr_scaling: str | None = None  # LR_SCALINGS: each run's lr = base lr × (B / base_batch_size)^power
    base_batch_size: int | None = None  # default: the smallest batch size of the sweep
    noise_scale_every: int = 0  # network problems: gradient noise scale every N steps (optbench.noise_scale)
    recipe: str | None = None  # a named recipe (optbench.recipes): sets lr_scaling and the schedule
    target: float | None = None  # steps to target: loss − f* ≤ target; None: each problem's own (optbench.targets)

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
        from optbench.problems.nets import BUFFERS

        if self.recipe is not None:
            import dataclasses

            from optbench.recipes import get_recipe

            recipe = get_recipe(self.recipe)
            lr_scaling, schedules = recipe.apply(self.lr_scaling, self.schedules)
            plain = dataclasses.replace(self, recipe=None, lr_scaling=lr_scaling, schedules=schedules)
            return [[dataclasses.replace(run, recipe_name=recipe.label) for run in block]
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
        schedules = self.check_recipe(problems)
        base_batch = self._check_lr_scaling(problems)
        blocks = []
        seeds = [int(seed) for seed in self.seeds]
        for problem in problems:
            device = problem_device(self.device, problem)
            budget = self._budget(problem, record_every)
            for opt in self.optimizers:
                configs = [opt.with_hyperparams(lr=lr) for lr in self.lrs] if self.lrs else [opt]
                if self.lr_scaling:
                    factor = (problem.batch_size / base_batch) ** LR_SCALINGS[self.lr_scaling]
                    configs = [c.with_hyperparams(lr=c.lr * factor) for c in configs]
                for config in configs:
                    for schedule in schedules:
                        blocks.append([Run(problem, config, seed, *budget, self.dtype, device, schedule,
                                           self.clip_norm, self.clip_value, self.label_smoothing, self.lr_scaling,
                                           base_batch if self.lr_scaling else None, self.noise_scale_every,
                                           target=target)
                                       for seed in seeds])
        return blocks

    def _check_lr_scaling(self, problems) -> int | None:
        """Validate the lr-scaling rule and the noise-scale interval; returns the resolved base batch size."""
        if self.noise_scale_every < 0:
            raise UsageError(f"--noise-scale-every {self.noise_scale_every} must be >= 0 (0: off).")
        if self.noise_scale_every and any(p.kind != "network" for p in problems):
            raise UsageError("--noise-scale-every applies to network problems only.")
        if self.lr_scaling is None:
            if self.base_batch_size is not None:
                raise UsageError("--base-batch-size needs --lr-scaling linear or sqrt.")
            return None
        if self.lr_scaling not in LR_SCALINGS:
            raise UsageError(f"Unknown --lr-scaling {self.lr_scaling!r}; valid: {', '.join(LR_SCALINGS)}.")
        without = sorted({p.name for p in problems if not p.has_batch_size})
        if without:
            raise UsageError(f"--lr-scaling needs problems with a batch size; {', '.join(without)} has none.")
        no_lr = [o.name for o in self.optimizers if o.lr is None]
        if no_lr:
            raise UsageError(f"--lr-scaling needs a learning rate; {', '.join(no_lr)} has none.")
        if self.base_batch_size is not None and self.base_batch_size < 1:
            raise UsageError(f"--base-batch-size {self.base_batch_size} must be at least 1.")
        return self.base_batch_size or min(p.batch_size for p in problems)

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

    def check_recipe(self, problems) -> list[str]:
        """Validate schedules, clipping and label smoothing; returns canonical schedule labels."""
        from optbench.schedules import get_schedule

        schedules = [get_schedule(s) for s in (self.schedules or ("constant",))]
        labels = list(dict.fromkeys(s.label for s in schedules))
        for name, value in (("--clip-norm", self.clip_norm), ("--clip-value", self.clip_value)):
            if value is not None and not value > 0:
                raise UsageError(f"{name} {value!r} must be > 0.")
        if not 0 <= self.label_smoothing < 1:
            raise UsageError(f"--label-smoothing {self.label_smoothing!r} must be in [0, 1).")
        if self.label_smoothing and any(p.kind == "analytic" for p in problems):
            raise UsageError("--label-smoothing applies to network (classification) problems only.")
        if any(not s.is_constant for s in schedules):
            without = [o.name for o in self.optimizers if "lr" not in o.entry.params]
            if without:
                raise UsageError(f"--schedule needs a learning rate; {', '.join(without)} has none.")
            for s in schedules:  # fail before any work: bad warm-up lengths, min_lr above the lr
                for lr in (self.lrs or [o.lr for o in self.optimizers]):
                    if lr is not None:
                        from optbench.schedules import lr_sequence

                        lr_sequence(s, self.steps, lr)
        return labels
