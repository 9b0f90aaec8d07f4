"""The training recipe of a run as one value: lr schedule, gradient clipping, label smoothing, lr scaling with
the batch size and the gradient-noise-scale probe.

:class:`Recipe` is what :class:`optbench.sweep.spec.Run` holds and what every engine and the tuner take.
Adding a knob is one field here (with its identity/label/validation lines below) and its use site in the
engines that implement it (docs/DEVELOPING.md lists the files). Its suite key and ``optbench run`` option
come from the field (:func:`optbench.suite.sweep_keys`, :func:`optbench.cli.run.sweep_options`).

:class:`StepRecipe` is the per-step part shared by every step loop over a real optimizer object (the loop
and network engines): the step's scheduled learning rate, then the clipped gradient.

    lr scaling      η_B = η₀ · (B / B₀)^p        p = 1 (linear, Goyal et al. 2017), p = ½ (square root)
    clip by norm    g ← g · min(1, c / ‖g‖₂)     (torch.nn.utils.clip_grad_norm_, over all parameters)
    clip by value   g ← clamp(g, −v, v)          (torch.nn.utils.clip_grad_value_)
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from optbench.errors import UsageError

LR_SCALINGS = {"linear": 1.0, "sqrt": 0.5}  # lr = base lr × (B / B_base)^power (Goyal et al. 2017; √ rule)
CONSTANT = "constant"


@dataclass(frozen=True)
class Recipe:
    """A run's training-recipe settings; the defaults are plain training (no schedule, no clipping, …)."""

    schedule: str = CONSTANT  # a schedule spec label (optbench.schedules)
    clip_norm: float | None = None  # clip the gradient the optimizer sees to this L2 norm
    clip_value: float | None = None  # clip each gradient coordinate to [-v, v]
    label_smoothing: float = 0.0  # cross-entropy label smoothing, network problems only
    lr_scaling: str | None = None  # "linear" or "sqrt": the lr was scaled from base_batch_size (LR_SCALINGS)
    base_batch_size: int | None = None  # B₀ of lr_scaling
    noise_scale_every: int = 0  # network problems: estimate the gradient noise scale every N steps (0: off)

    def identity(self) -> dict[str, Any]:
        """The non-default settings, in field order (the schedule resolved); empty for the defaults, so run ids
        of plain runs are those of runs from before recipes existed. This dict is part of
        :attr:`Run.identity`: every field enters it, so a new knob changes the run ids of the runs using it."""
        from optbench.schedules import get_schedule

        schedule = get_schedule(self.schedule)
        identity: dict[str, Any] = {} if schedule.is_constant else {"schedule": schedule.resolved}
        for key in self.field_names():
            if key != "schedule" and getattr(self, key):
                identity[key] = getattr(self, key)
        return identity

    def settings(self) -> frozenset[str]:
        """The names of the non-default settings (what an engine must implement: engines.capabilities)."""
        return frozenset(self.identity())

    def label(self) -> str:
        """The suffix the recipe adds to an optimizer label: ``+cosine+clip-norm=1.0+linear-scaling(…)``; ''
        for the defaults."""
        from optbench.schedules import get_schedule

        parts = []
        sched = get_schedule(self.schedule)
        if not sched.is_constant:
            parts.append(sched.label)
        for key in self.field_names():
            value = getattr(self, key)
            if key in ("schedule", "base_batch_size") or value is None or value is False or value == 0:
                continue  # the schedule above, the base batch size with its rule below; defaults add nothing
            if key == "lr_scaling":
                parts.append(f"{value}-scaling(base_batch_size={self.base_batch_size})")
            elif key == "noise_scale_every":
                parts.append(f"noise-scale(every={value})")
            else:  # clip-norm=1.0, clip-value=0.5, label-smoothing=0.1, and any new knob alike
                parts.append(f"{key.replace('_', '-')}={value!r}")
        return "".join("+" + p for p in parts)

    def replace(self, **changes: Any) -> Recipe:
        return dataclasses.replace(self, **changes)

    @classmethod
    def field_names(cls) -> tuple[str, ...]:
        return tuple(f.name for f in dataclasses.fields(cls))

    def validate(self, problems: Sequence[Any], optimizers: Sequence[Any], *, lrs: Sequence[float] | None = None,
                 steps: int = 1, schedules: Sequence[str] | None = None) -> list[str]:
        """Check the settings against the problems and optimizers they will run on, before any work; returns
        the canonical labels of ``schedules`` (default: this recipe's one schedule). Each bad value is a
        ``UsageError`` naming the option and what to do."""
        from optbench.schedules import get_schedule, lr_sequence

        resolved = [get_schedule(s) for s in (schedules or (self.schedule,))]
        labels = list(dict.fromkeys(s.label for s in resolved))
        for name, value in (("--clip-norm", self.clip_norm), ("--clip-value", self.clip_value)):
            if value is not None and not value > 0:
                raise UsageError(f"{name} {value!r} must be > 0.")
        if not 0 <= self.label_smoothing < 1:
            raise UsageError(f"--label-smoothing {self.label_smoothing!r} must be in [0, 1).")
        if self.label_smoothing and any(p.kind == "analytic" for p in problems):
            raise UsageError("--label-smoothing applies to network (classification) problems only.")
        if any(not s.is_constant for s in resolved):
            without = [o.name for o in optimizers if "lr" not in o.entry.params]
            if without:
                raise UsageError(f"--schedule needs a learning rate; {', '.join(without)} has none.")
            for s in resolved:  # fail before any work: bad warm-up lengths, min_lr above the lr
                for lr in (lrs or [o.lr for o in optimizers]):
                    if lr is not None:
                        lr_sequence(s, steps, lr)
        if self.noise_scale_every < 0:
            raise UsageError(f"--noise-scale-every {self.noise_scale_every} must be >= 0 (0: off).")
        if self.noise_scale_every and any(p.kind != "network" for p in problems):
            raise UsageError("--noise-scale-every applies to network problems only.")
        return labels

    def resolve_lr_scaling(self, problems: Sequence[Any], optimizers: Sequence[Any]) -> int | None:
        """Validate the lr-scaling rule; returns the base batch size B₀ (given, else the smallest batch size of
        ``problems``), or None without lr scaling."""
        if self.lr_scaling is None:
            if self.base_batch_size is not None:
                raise UsageError("--base-batch-size needs --lr-scaling linear or sqrt.")
            return None
        if self.lr_scaling not in LR_SCALINGS:
            raise UsageError(f"Unknown --lr-scaling {self.lr_scaling!r}; valid: {', '.join(LR_SCALINGS)}.")
        without = sorted({p.name for p in problems if not p.has_batch_size})
        if without:
            raise UsageError(f"--lr-scaling needs problems with a batch size; {', '.join(without)} has none.")
        no_lr = [o.name for o in optimizers if o.lr is None]
        if no_lr:
            raise UsageError(f"--lr-scaling needs a learning rate; {', '.join(no_lr)} has none.")
        if self.base_batch_size is not None and self.base_batch_size < 1:
            raise UsageError(f"--base-batch-size {self.base_batch_size} must be at least 1.")
        return self.base_batch_size or min(p.batch_size for p in problems)

    def lr_factor(self, batch_size: int | None, base_batch_size: int | None) -> float:
        """(B / B₀)^p of the lr-scaling rule (1 without one); B₀ from :meth:`resolve_lr_scaling`."""
        if not self.lr_scaling:
            return 1.0
        if batch_size is None or base_batch_size is None:
            raise ValueError("internal: lr scaling of a problem without a batch size")
        return (batch_size / base_batch_size) ** LR_SCALINGS[self.lr_scaling]


PLAIN = Recipe()


class StepRecipe:
    """The per-step recipe of a loop over a real optimizer object (loop and network engines): each step's
    scheduled lr on every param group and the clipped gradient, in torch's own utilities."""

    def __init__(self, recipe: Recipe, opt, optimizer, steps: int):
        from optbench.schedules import get_schedule, lr_sequence

        self.opt, self.base_lr = opt, optimizer.lr
        self.lrs = None if get_schedule(recipe.schedule).is_constant else lr_sequence(recipe.schedule, steps,
                                                                                      optimizer.lr)
        self.group_lrs = [g.get("lr") for g in opt.param_groups]  # as the class set them at construction
        self.clip_norm, self.clip_value = recipe.clip_norm, recipe.clip_value
        self.clips = recipe.clip_norm is not None or recipe.clip_value is not None

    def set_lr(self, t: int) -> None:
        """Set update ``t``'s scheduled lr (no-op for a constant schedule)."""
        if self.lrs is None:
            return
        set_scheduled_lr(self.opt, self.lrs[t], self.base_lr, self.group_lrs)

    def clip_(self, params) -> None:
        """Clip the ``.grad`` of ``params`` in place: by total norm, then by value (no-op without clipping)."""
        import torch

        if self.clip_norm is not None:
            torch.nn.utils.clip_grad_norm_(params, self.clip_norm)
        if self.clip_value is not None:
            torch.nn.utils.clip_grad_value_(params, self.clip_value)


def set_scheduled_lr(opt, lr: float, base_lr: float | None, group_lrs: list[float] | None) -> None:
    """Set the step's scheduled ``lr`` on every param group, as torch's schedulers do: each group's lr at
    construction (``group_lrs``) times the schedule's factor ``lr / base_lr``. That is ``lr`` itself for a group
    built with the configured lr (set exactly, not through the factor), and keeps what a class does to its
    groups' lrs: Muon's AdamW group of its own lr, GrokFastAdamW's lr / (1 + λ)."""
    if group_lrs is None or not base_lr:
        for group in opt.param_groups:
            group["lr"] = lr
        return
    for group, group_lr in zip(opt.param_groups, group_lrs):
        group["lr"] = lr if group_lr is None or group_lr == base_lr else group_lr * (lr / base_lr)
