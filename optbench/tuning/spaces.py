"""Search spaces: what a tuning study varies for each optimizer.

By default only the learning rate is searched, log-uniformly over ``[1e-5, 10]`` (six decades around
every registered default, wide enough to contain both the best rate and rates that diverge; DeepOBS and
Crowded Valley both tune lr on a log scale over a comparably wide range). An lr-free optimizer
(``OptimizerEntry.lr_free``: Prodigy, D-Adaptation, AdamG) estimates its own step size and its ``lr`` is a
multiplier of it, searched log-uniformly over ``[0.1, 10]`` by default (``LR_FREE_MULTIPLIER``). Other
hyperparameters are opt-in with ``--space``::

    --space 'momentum=0.5:0.99'               uniform on [0.5, 0.99]
    --space 'lr=1e-4:1:log,beta2=0.9:0.9999'  lr log-uniform on [1e-4, 1]; beta2 uniform
    --space 'eps=1e-10:1e-6:log'

``beta1``/``beta2`` address the two halves of a ``betas`` pair. A key applies to every optimizer of the
study that has that hyperparameter (others are tuned without it); a key that none of them has is an
error. A hyperparameter the optimizer spec fixes (``adam(lr=1e-3)``) is not searched.

With a schedule (``optbench tune --schedule warmup-cosine``) the schedule's numeric parameters are
searchable too, for every optimizer of the study: ``--space 'warmup=0:0.3,min_lr=0:1e-5'``. A plain key
names the schedule's parameter when no optimizer of the study has a hyperparameter of that name;
``schedule.KEY`` always names the schedule's (a plain key that both have is rejected as ambiguous).
Inside a study these dimensions are called ``schedule.KEY``. A parameter the ``--schedule`` spec fixes
(``warmup-cosine(warmup=0.1)``) is not searchable. ``warmup`` (steps or a fraction of the budget in
the schedule spec) is searched as a fraction of the budget when HIGH < 1 (``warmup=0:0.3``; a sampled
0 is no warm-up) and as a whole number of steps otherwise (``warmup=0:20``, LOW and HIGH integers,
``suggest_int``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from optbench.errors import SpecError, UsageError


@dataclass(frozen=True)
class Dim:
    """One searched hyperparameter: ``low``..``high``, log-uniform when ``log``; whole numbers when
    ``integer`` (a warm-up searched in steps)."""

    name: str
    low: float
    high: float
    log: bool = False
    integer: bool = False

    def __str__(self) -> str:
        return f"{self.name}={self.low:g}:{self.high:g}{':log' if self.log else ''}"


DEFAULT_LR = Dim("lr", 1e-5, 10.0, log=True)
# lr-free methods (Prodigy, D-Adaptation, AdamG: OptimizerEntry.lr_free) estimate their step size; their lr is a
# multiplier of it (1 = the method's own), searched over a decade either side
LR_FREE_MULTIPLIER = Dim("lr", 0.1, 10.0, log=True)
_BETA_KEYS = {"beta1": 0, "beta2": 1}
SCHEDULE_PREFIX = "schedule."  # a study's name for a schedule parameter's dimension: schedule.warmup


def parse_space(text: str | None) -> dict[str, Dim]:
    """Parse ``'key=LOW:HIGH[:log],...'``; an empty text is the default space (lr only)."""
    dims: dict[str, Dim] = {}
    for part in (text or "").split(","):
        part = part.strip()
        if not part:
            continue
        key, eq, bounds = part.partition("=")
        key = key.strip()
        pieces = bounds.split(":")
        if not eq or not key.removeprefix(SCHEDULE_PREFIX).isidentifier() or len(pieces) not in (2, 3) or (
                len(pieces) == 3 and pieces[2].strip() not in ("log", "lin")):
            raise SpecError(f"Bad search-space entry {part!r}: write key=LOW:HIGH or key=LOW:HIGH:log, "
                            "e.g. 'momentum=0.5:0.99' or 'lr=1e-4:1:log'.")
        try:
            low, high = float(pieces[0]), float(pieces[1])
        except ValueError:
            raise SpecError(f"Bad bounds in search-space entry {part!r}: LOW and HIGH must be numbers.") from None
        log = len(pieces) == 3 and pieces[2].strip() == "log"
        if not (math.isfinite(low) and math.isfinite(high) and low < high) or (log and low <= 0):
            raise SpecError(f"Bad bounds in search-space entry {part!r}: need LOW < HIGH"
                            f"{' and LOW > 0 for a log scale' if log else ''}.")
        if key in dims:
            raise SpecError(f"Search-space key {key!r} is given twice.")
        dims[key] = Dim(key, low, high, log)
    return dims


def space_for(optimizer, dims: dict[str, Dim]) -> list[Dim]:
    """The dimensions searched for one optimizer config: lr (default range unless overridden) plus the
    opt-in keys it has and does not fix in its spec."""
    params, given = optimizer.entry.params, optimizer.given
    out = []
    if "lr" in params and "lr" not in given:
        out.append(dims.get("lr", LR_FREE_MULTIPLIER if optimizer.entry.lr_free else DEFAULT_LR))
    for key, dim in dims.items():
        if key == "lr":
            continue
        base = "betas" if key in _BETA_KEYS else key
        if (base in params and base not in given) or key.startswith(SCHEDULE_PREFIX):
            out.append(dim)
    return out


def study_space(optimizer, dims: dict[str, Dim], protocol=None) -> list[Dim]:
    """:func:`space_for`, with a grid protocol's own lr range (so the stored trials fit their distribution).
    Every process computes a study's name from this (``optbench.tuning.parallel`` too)."""
    space = space_for(optimizer, dims)
    grid = getattr(protocol, "lr_grid", None)
    if grid is not None:
        space = [Dim("lr", min(grid), max(grid), log=True) if d.name == "lr" else d for d in space]
    return space


def suggest(trial, dim: Dim):
    """Ask an Optuna trial for one dimension's value."""
    if dim.integer:
        return trial.suggest_int(dim.name, int(dim.low), int(dim.high), log=dim.log)
    return trial.suggest_float(dim.name, dim.low, dim.high, log=dim.log)


def schedule_keys(schedule) -> list[str]:
    """The parameters of a schedule that a search can vary: the numeric ones its spec does not fix."""
    from optbench.schedules import SCHEDULE_PARAMS

    return [k for k, p in SCHEDULE_PARAMS[schedule.name].items()
            if k not in schedule.given and set(p.accepted_types()) <= {int, float}]


def _schedule_dim(schedule, key: str, dim: Dim) -> Dim:
    """The dimension ``schedule.KEY`` of a searched schedule parameter, with its range checked."""
    from optbench.schedules import SCHEDULE_PARAMS, get_schedule, is_budget_amount
    from optbench.spec import Spec

    where = f"--space key {dim.name!r}"
    if schedule.is_constant:
        raise SpecError(f"{where} names a schedule parameter; give a --schedule that has it "
                        "(e.g. --schedule warmup-cosine).")
    params = SCHEDULE_PARAMS[schedule.name]
    if key not in params:
        raise SpecError(f"{where}: schedule {schedule.name!r} has no parameter {key!r}; searchable: "
                        f"{', '.join(schedule_keys(schedule)) or 'none'}.")
    if key in schedule.given:
        raise SpecError(f"{where}: --schedule {schedule.label!r} fixes {key}; drop it from one of them.")
    if key not in schedule_keys(schedule):
        raise SpecError(f"{where}: the schedule parameter {key} is not a number and cannot be searched.")
    integer = False
    if is_budget_amount(schedule.name, key):
        if dim.low < 0:
            raise SpecError(f"Bad bounds in {where}: a warm-up cannot be negative.")
        integer = dim.high >= 1  # steps; below 1, a fraction of the budget
        if integer and not (float(dim.low).is_integer() and float(dim.high).is_integer()):
            raise SpecError(f"Bad bounds in {where}: give whole steps (e.g. {key}=0:20) or fractions of the "
                            f"budget below 1 (e.g. {key}=0:0.3).")
    else:
        for value in (dim.low, dim.high):
            try:
                get_schedule(Spec(schedule.name, {**schedule.given, key: value}))
            except SpecError as exc:
                raise SpecError(f"Bad bounds in {where}: {exc}") from None
    return Dim(SCHEDULE_PREFIX + key, dim.low, dim.high, dim.log, integer)


def resolve_space(dims: dict[str, Dim], schedule=None) -> dict[str, Dim]:
    """The space with the schedule's parameters as ``schedule.KEY`` dimensions (idempotent): a prefixed
    key, or a plain key the schedule can search unless ``schedule.KEY`` is given too."""
    from optbench.schedules import get_schedule

    sched = get_schedule(schedule)
    searchable = schedule_keys(sched)
    out: dict[str, Dim] = {}
    for key, dim in dims.items():
        bare = key.removeprefix(SCHEDULE_PREFIX)
        if key.startswith(SCHEDULE_PREFIX) or (key in searchable and SCHEDULE_PREFIX + key not in dims):
            dim = _schedule_dim(sched, bare, dim)
        out[dim.name] = dim
    return out


def check_space(optimizers, dims: dict[str, Dim], schedule=None) -> dict[str, Dim]:
    """Every key must belong to at least one optimizer of the study or to the schedule, and not to both
    unless written ``schedule.KEY``; returns the space with the schedule's keys resolved."""
    from optbench.schedules import SCHEDULE_PARAMS, get_schedule

    sched = get_schedule(schedule)
    resolved = resolve_space(dims, sched)
    for key, dim in zip(dims, resolved.values()):
        base = "betas" if key in _BETA_KEYS else key
        owners = [o.label for o in optimizers if base in o.entry.params]
        if dim.name.startswith(SCHEDULE_PREFIX):
            if owners and not key.startswith(SCHEDULE_PREFIX):
                raise SpecError(f"--space key {key!r} is ambiguous: a hyperparameter of {', '.join(owners)} and "
                                f"a parameter of schedule {sched.name!r}; write {SCHEDULE_PREFIX + key!r} for the "
                                f"schedule's, or fix it in --schedule to search the optimizer's.")
            continue
        if owners:
            continue
        if SCHEDULE_PREFIX + key in dims:
            raise SpecError(f"Search-space key {key!r} is given twice (also as {SCHEDULE_PREFIX + key!r}).")
        if key in SCHEDULE_PARAMS[sched.name]:
            _schedule_dim(sched, key, dim)  # raises: fixed by the schedule spec, or not a number
        valid = [k for o in optimizers for k in _numeric_keys(o)] + schedule_keys(sched)
        raise SpecError(f"--space key {key!r} is not a hyperparameter of {', '.join(o.name for o in optimizers)}"
                        f"{'' if sched.is_constant else f' nor a parameter of schedule {sched.name!r}'}; valid "
                        f"keys: {', '.join(dict.fromkeys(valid))}"
                        f"{' (a schedule parameter needs --schedule)' if sched.is_constant else ''}.")
    return resolved


def _numeric_keys(optimizer) -> list[str]:
    out = []
    for key, param in optimizer.entry.params.items():
        if key == "betas":
            out += list(_BETA_KEYS)
        elif set(param.accepted_types()) <= {int, float} and param.accepted_types():
            out.append(key)
    return out


def check_schedule(optimizers, schedule, dims: dict[str, Dim], steps: int, protocol=None) -> None:
    """Fail before any trial when the schedule cannot serve every trial of the study: an optimizer
    without a learning rate, a warm-up that leaves nothing of the budget, ``min_lr`` above the lowest
    learning rate searched. ``dims`` is a resolved space; the schedule is tried at both ends of its
    searched ranges."""
    from optbench.schedules import get_schedule, lr_sequence

    sched = get_schedule(schedule)
    if sched.is_constant:
        return
    without = [o.label for o in optimizers if "lr" not in o.entry.params]
    if without:
        raise UsageError(f"--schedule needs a learning rate; {', '.join(without)} has none.")
    searched = [d for d in dims.values() if d.name.startswith(SCHEDULE_PREFIX)]
    ends = [schedule_for(sched, {d.name: int(v) if d.integer else v for d, v in zip(searched, values)})
            for values in ([d.low for d in searched], [d.high for d in searched])]
    for optimizer in optimizers:
        lr = next((d.low for d in study_space(optimizer, dims, protocol) if d.name == "lr"), optimizer.lr)
        for end in ends:
            if lr is None:
                continue
            try:
                lr_sequence(end, steps, lr)
            except SpecError as exc:
                raise UsageError(f"{str(exc).rstrip('.')} (tuning {optimizer.label} over {steps} steps from lr "
                                 f"{lr:g} up); change --schedule or --space.") from None


def schedule_for(schedule, values: dict[str, float]):
    """The :class:`optbench.schedules.Schedule` of one trial: ``schedule`` with the sampled
    ``schedule.KEY`` values set (other keys are ignored). A warm-up stays an integer number of steps
    when it was searched in steps; a fraction of the budget stays a float rounded to 4 significant digits
    (the trial runs with the rounded value), except 0: no warm-up."""
    from optbench.schedules import get_schedule, is_budget_amount
    from optbench.spec import Spec

    sched = get_schedule(schedule)
    updates: dict[str, object] = {}
    for key, value in values.items():
        if not key.startswith(SCHEDULE_PREFIX):
            continue
        key = key[len(SCHEDULE_PREFIX):]
        if is_budget_amount(sched.name, key):
            if isinstance(value, int) or value == 0:
                updates[key] = int(value)
            else:  # 4 digits of a budget fraction are finer than one step of any budget below 10^4 steps
                short = float(f"{value:.4g}")  # and keep labels readable: warmup=0.2189, not 0.21892724029154262
                updates[key] = short if 0 < short < 1 else float(value)
        else:
            updates[key] = float(value)
    return get_schedule(Spec(sched.name, {**sched.given, **updates})) if updates else sched


def apply(optimizer, values: dict[str, float]):
    """The optimizer config with sampled values applied (beta1/beta2 folded into betas; the schedule's
    ``schedule.KEY`` values are left to :func:`schedule_for`)."""
    updates: dict[str, object] = {}
    betas = list(optimizer.hyperparams.get("betas") or ())
    for key, value in values.items():
        if key.startswith(SCHEDULE_PREFIX):
            continue
        if key in _BETA_KEYS:
            betas[_BETA_KEYS[key]] = float(value)
            updates["betas"] = tuple(betas)
        else:
            updates[key] = float(value)
    return optimizer.with_hyperparams(**updates)
