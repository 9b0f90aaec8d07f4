"""Learning-rate schedules: a spec such as ``warmup-cosine(warmup=0.05, min_lr=1e-5)`` → the learning rate
of every update.

The sequence comes from torch's own ``torch.optim.lr_scheduler`` classes, driven on a one-parameter dummy
optimizer, so both engines use exactly the values torch would produce: the loop engine sets each
``param_group["lr"]`` before update ``t``, the batched engine sets ``hp["lr"]`` from the same floats.
``lr_sequence(schedule, steps, base_lr)[t]`` is the learning rate of update ``t`` (t = 0 … steps−1), i.e.
the value after ``t`` calls of ``scheduler.step()``, as in a training loop that steps the scheduler after
every optimizer step. The formula of each is in :data:`SCHEDULE_DOCS` (what ``optbench list schedules``
prints).

``warmup`` and step ``milestones`` are integers (steps) or fractions in (0, 1) of the step budget.
``min_lr`` is an absolute learning rate (it must not exceed the base learning rate). ``one-cycle`` does not
cycle momentum (``cycle_momentum=False``): a schedule changes the learning rate only.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from optbench.errors import SpecError
from optbench.params import Param, nonnegative, validate_kwargs
from optbench.registry import Registry
from optbench.spec import Spec, format_spec, parse_spec

CONSTANT = "constant"


def _is_budget_amount(v: Any) -> bool:
    """An integer number of steps (>= 0) or a fraction of the budget in (0, 1)."""
    if isinstance(v, bool):
        return False
    if isinstance(v, int):
        return v >= 0
    return isinstance(v, float) and 0 < v < 1


def _warmup() -> Param:
    return Param(0.05, "warm-up length: steps (an integer) or a fraction of the budget in (0, 1)",
                 _is_budget_amount, "an integer >= 0 or a fraction in (0, 1)", (int, float))


def _min_lr() -> Param:
    return nonnegative("final (minimum) learning rate, absolute", 0.0)


# name → its parameters; the torch scheduler each builds is in ``_scheduler``
SCHEDULE_PARAMS: Registry[dict[str, Param]] = Registry("schedule")
for _name, _params in {
    "constant": {},
    "cosine": {"min_lr": _min_lr()},
    "linear": {"min_lr": _min_lr()},
    "step": {"milestones": Param((0.5, 0.75), "steps (integers) or budget fractions where the lr is "
                                 "multiplied by gamma", lambda v: len(v) >= 1 and all(map(_is_budget_amount, v)),
                                 "a tuple of integers >= 0 or fractions in (0, 1)", (tuple, list)),
             "gamma": Param(0.1, "factor applied at each milestone", lambda v: 0 < v <= 1, "in (0, 1]")},
    "warmup-cosine": {"warmup": _warmup(), "min_lr": _min_lr()},
    "warmup-linear": {"warmup": _warmup(), "min_lr": _min_lr()},
    "warmup-constant": {"warmup": _warmup()},
    "one-cycle": {"pct_start": Param(0.3, "fraction of the budget spent increasing the lr",
                                     lambda v: 0 < v < 1, "in (0, 1)"),
                  "div_factor": Param(25.0, "initial lr = lr / div_factor", lambda v: v >= 1, ">= 1"),
                  "final_div_factor": Param(1e4, "final lr = initial lr / final_div_factor",
                                            lambda v: v >= 1, ">= 1"),
                  "anneal": Param("cos", "'cos' or 'linear' annealing", lambda v: v in ("cos", "linear"),
                                  "'cos' or 'linear'", (str,))},
}.items():
    SCHEDULE_PARAMS.register(_name, _params)

# what each schedule does to the lr η of update t of T (W: warm-up steps), for `optbench list schedules`
SCHEDULE_DOCS = {
    "constant": "η at every step",
    "cosine": "min_lr + (η − min_lr)(1 + cos(πt/T))/2 (torch CosineAnnealingLR)",
    "linear": "η + (min_lr − η)t/T (torch LinearLR)",
    "step": "η · gamma^(milestones passed) (torch MultiStepLR; milestones in steps or budget fractions)",
    "warmup-cosine": "η(t+1)/(W+1) for the first W steps, then cosine to min_lr over the remaining T − W",
    "warmup-linear": "η(t+1)/(W+1) for the first W steps, then linear to min_lr over the remaining T − W",
    "warmup-constant": "η(t+1)/(W+1) for the first W steps, then η (Goyal et al. 2017's warm-up)",
    "one-cycle": "η/div_factor up to η over pct_start·T, then annealed to η/(div_factor·final_div_factor) "
                 "(torch OneCycleLR, the lr only: no momentum cycling)",
}


@dataclass(frozen=True)
class Schedule:
    """A validated schedule: ``params`` has every parameter (defaults filled), ``given`` what was set."""

    name: str
    params: dict[str, Any]
    given: dict[str, Any]

    @property
    def label(self) -> str:
        """Canonical text, e.g. ``warmup-cosine(warmup=0.05)``; ``parse`` of it gives the same schedule."""
        return format_spec(self.name, self.given)

    @property
    def resolved(self) -> str:
        """Text with every parameter, for run identities (``cosine`` and ``cosine(min_lr=0.0)`` agree)."""
        return format_spec(self.name, self.params)

    @property
    def is_constant(self) -> bool:
        return self.name == CONSTANT


def list_schedules() -> list[str]:
    return SCHEDULE_PARAMS.names()


def get_schedule(spec: str | Spec | Schedule | None) -> Schedule:
    """Resolve ``"cosine(min_lr=1e-5)"`` (or None → constant); bad names and values raise SpecError."""
    if isinstance(spec, Schedule):
        return spec
    if spec is None:
        spec = CONSTANT
    if isinstance(spec, str):
        return _schedule_from_text(spec)  # every run of a sweep asks for its schedule: parse each text once
    return _resolve(spec)


@lru_cache(maxsize=256)
def _schedule_from_text(text: str) -> Schedule:
    return _resolve(parse_spec(text))


def _resolve(spec: Spec) -> Schedule:
    params = validate_kwargs(f"schedule {spec.name!r}", spec.kwargs, SCHEDULE_PARAMS.get(spec.name))
    given = {k: tuple(v) if isinstance(v, list) else v for k, v in spec.kwargs.items()}
    if isinstance(given.get("warmup"), int):
        params["warmup"] = given["warmup"]  # validate_kwargs turns ints into floats; a step count stays one
    return Schedule(spec.name, params, given)


def budget_steps(amount: int | float, steps: int) -> int:
    """An integer is a number of steps; a fraction in (0, 1) is that share of the budget (rounded)."""
    if isinstance(amount, float):
        return int(round(amount * steps))
    return int(amount)


def _scheduler(schedule: Schedule, opt, steps: int, base_lr: float):
    from torch.optim import lr_scheduler as lrs

    p, name = schedule.params, schedule.name
    min_lr = float(p.get("min_lr", 0.0))
    if min_lr > base_lr:
        raise SpecError(f"schedule {schedule.label!r}: min_lr={min_lr!r} exceeds the learning rate {base_lr!r}.")
    if name == "cosine":
        return lrs.CosineAnnealingLR(opt, T_max=steps, eta_min=min_lr)
    if name == "linear":
        return lrs.LinearLR(opt, start_factor=1.0, end_factor=min_lr / base_lr, total_iters=steps)
    if name == "step":
        milestones = sorted({budget_steps(m, steps) for m in p["milestones"]})
        return lrs.MultiStepLR(opt, milestones=milestones, gamma=p["gamma"])
    if name == "one-cycle":
        if steps < 2:
            raise SpecError(f"schedule {schedule.label!r} needs at least 2 steps.")
        return lrs.OneCycleLR(opt, max_lr=base_lr, total_steps=steps, pct_start=p["pct_start"],
                              anneal_strategy=p["anneal"], div_factor=p["div_factor"],
                              final_div_factor=p["final_div_factor"], cycle_momentum=False)
    # warmup-*: linear warm-up (t+1)/(W+1), then constant or the decay over the remaining steps
    warmup = budget_steps(p["warmup"], steps)
    if warmup >= steps:
        raise SpecError(f"schedule {schedule.label!r}: warm-up of {warmup} steps leaves nothing of a "
                        f"{steps}-step budget.")
    if name == "warmup-constant":  # LinearLR holds end_factor = 1 after total_iters
        return lrs.LinearLR(opt, start_factor=1.0 / (warmup + 1), end_factor=1.0, total_iters=max(warmup, 1))
    rest = steps - warmup
    decay = (lrs.CosineAnnealingLR(opt, T_max=rest, eta_min=min_lr) if name == "warmup-cosine"
             else lrs.LinearLR(opt, start_factor=1.0, end_factor=min_lr / base_lr, total_iters=rest))
    if warmup == 0:
        return decay
    warm = lrs.LinearLR(opt, start_factor=1.0 / (warmup + 1), end_factor=1.0, total_iters=warmup)
    return lrs.SequentialLR(opt, [warm, decay], milestones=[warmup])


@lru_cache(maxsize=256)
def _sequence(resolved: str, steps: int, base_lr: float) -> tuple[float, ...]:
    import warnings

    import torch

    schedule = get_schedule(resolved)
    if schedule.is_constant:
        return (base_lr,) * steps
    opt = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=base_lr)
    scheduler = _scheduler(schedule, opt, steps, base_lr)
    group = opt.param_groups[0]
    out = [0.0] * steps
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "scheduler.step() before optimizer.step()": there is no step here
        for t in range(steps):
            out[t] = float(group["lr"])
            if t + 1 < steps:
                scheduler.step()
    if not all(math.isfinite(v) and v >= 0 for v in out):
        raise SpecError(f"schedule {schedule.label!r} gives a non-finite or negative learning rate.")
    return tuple(out)


def lr_sequence(schedule: str | Schedule | None, steps: int, base_lr: float) -> tuple[float, ...]:
    """The learning rate of updates 0 … steps−1 under ``schedule`` with base learning rate ``base_lr``."""
    if base_lr is None or not base_lr > 0:
        raise SpecError(f"A schedule needs an optimizer with a learning rate > 0 (got {base_lr!r}).")
    return _sequence(get_schedule(schedule).resolved, int(steps), float(base_lr))


def lr_factors(schedule: str | Schedule | None, steps: int) -> list[float]:
    """The multiplier of a base learning rate of 1 at each update (``min_lr`` then is a factor too)."""
    return list(lr_sequence(schedule, steps, 1.0))


def is_budget_amount(schedule_name: str, key: str) -> bool:
    """Whether a schedule parameter is a step count or a fraction of the budget (``warmup``)."""
    return SCHEDULE_PARAMS[schedule_name][key].check is _is_budget_amount
