"""Which engine runs what: the one capability check the runner and the tuner both use.

The loop engine (real optimizer objects) is the reference and runs everything. The batched engine of a
problem kind runs a configuration only when

- the optimizer has a batched rule (``OptimizerEntry.batched``) that takes its hyperparameters
  (``Rule.refuses``: L-BFGS's rule mirrors the class without a line search only),
- the engine provides every need the rule declares (``Rule.needs`` against the engine's ``PROVIDES``:
  Hessians, per-parameter-tensor norms, a closure), and
- the engine implements every training-recipe setting of the run (``Recipe.settings()`` against the
  engine's ``RECIPE``: schedules, clipping, label smoothing, …), and
- the engine runs every model feature of the problem (``NetworkProblem.features`` against the engine's
  ``BATCHED_FEATURES``: BatchNorm running statistics, dropout, on-device augmentation, parameter groups;
  the vmap network engine runs none of them, so ``cifar10-resnet`` and any ``dropout=``/``no_decay=`` run
  train on the loop engine).

``--engine batched`` on a configuration the batched engine cannot honour is a ``UsageError`` naming the
reason; ``--engine auto`` then picks the loop engine. ``auto`` also runs a network group batched only where
that pays (:func:`batched_network_pays`, measured by ``benchmarks/bench_nets.py --per-model``): on CUDA, and on
a CPU for rules with a fused kernel (Adam, AdamW: :mod:`optbench.engines.fused`) in groups of at least
``CPU_MIN_NETWORK_GROUP`` configurations; the other rules' elementwise passes lose to K loop runs on a CPU.

Every engine is an :class:`Engine` value in :data:`ENGINES`, looked up by (name, track) with
:func:`get_engine`: it says whether it runs a configuration (``supports``: the reason it cannot, or None), how
many runs one work item holds (``max_group``) and runs a work item (``run``). The planners
(:func:`optbench.sweep.plan.plan_groups` for sweeps, :func:`optbench.sweep.plan.plan_round` for a tuning
round) and :func:`optbench.sweep.plan.execute` ask it; nothing else branches on engine names.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from optbench.engines.recipe import Recipe
from optbench.errors import UsageError

RecipeLike = Recipe | Iterable[str]  # a Recipe, or the names of its non-default settings (Recipe.settings())
ANALYTIC, NETWORK = "analytic", "network"  # the two tracks: every problem kind but analytic is a network


def track(kind: str) -> str:
    """The engine track of a problem kind (``analytic``, else ``network``)."""
    return ANALYTIC if kind == ANALYTIC else NETWORK


class Engine(Protocol):
    """What the planner and the executor know of an engine."""

    @property
    def name(self) -> str: ...  # "loop" or "batched" (--engine); "trials" (the tuner's rounds)
    @property
    def track(self) -> str: ...  # ANALYTIC or NETWORK
    @property
    def max_group(self) -> int: ...  # runs one work item holds (bounded memory)
    def supports(self, problem: Any, optimizer: Any, recipe: RecipeLike) -> str | None: ...  # why not, or None
    def run(self, runs: Sequence[Any], progress: Callable[[int], None] | None = None,
            measure_cost: bool = True) -> Any: ...  # GroupTrace; measure_cost False: no cost metrics (tuning)


@dataclass(frozen=True)
class LoopEngine:
    """Real optimizer objects, one run per work item: the reference, which runs every configuration."""

    track: str
    name: str = "loop"
    max_group: int = 1

    def supports(self, problem, optimizer, recipe: RecipeLike) -> str | None:
        return None

    def run(self, runs, progress=None, measure_cost=True):
        import torch

        (run,) = runs
        device, dtype = torch.device(run.device), getattr(torch, run.dtype)
        if self.track == ANALYTIC:
            from optbench.engines.loop import run_loop

            return run_loop(run.problem, run.optimizer, run.seed, run.steps, run.record_every, device=device,
                            dtype=dtype, progress=progress, recipe=run.recipe, measure_cost=measure_cost)
        from optbench.engines.network import run_network

        return run_network(run.problem, run.optimizer, run.seed, run.steps, run.record_every, device=device,
                           dtype=dtype, progress=progress, recipe=run.recipe)


@dataclass(frozen=True)
class TrialsEngine:
    """Loop-engine runs of one analytic problem from one seed, as a tuning round: side by side, or one shared
    optimizer object where the class allows it (:func:`optbench.engines.trials.run_trials`, equal to one loop
    run each); no cost metrics, so ``run`` sweeps never use it."""

    track: str = ANALYTIC
    name: str = "trials"
    max_group: int = 1 << 16

    def supports(self, problem, optimizer, recipe: RecipeLike) -> str | None:
        return None if problem.kind == ANALYTIC else f"{problem.label} is not an analytic problem"

    def run(self, runs, progress=None, measure_cost=False):
        import torch

        first = runs[0]
        if measure_cost or any((r.seed, r.steps, r.record_every) != (first.seed, first.steps, first.record_every)
                               for r in runs):
            raise ValueError("the trials engine runs one seed, step count and record grid, without costs")
        from optbench.engines.trials import run_trials

        return run_trials(first.problem, [r.optimizer for r in runs], first.seed, first.steps, first.record_every,
                          device=torch.device(first.device), dtype=getattr(torch, first.dtype), recipe=first.recipe,
                          schedules=[r.recipe.schedule for r in runs])


@dataclass(frozen=True)
class BatchedEngine:
    """K configurations of one batched rule as one tensor computation (``engines.batched``, or
    ``engines.network.run_network_batched`` with ``torch.func.vmap``)."""

    track: str
    name: str = "batched"

    @property
    def max_group(self) -> int:
        if self.track == ANALYTIC:
            from optbench.engines.grouping import MAX_GROUP  # torch-free: planning an analytic sweep

            return MAX_GROUP
        from optbench.engines.network import MAX_NET_GROUP

        return MAX_NET_GROUP

    def supports(self, problem, optimizer, recipe: RecipeLike) -> str | None:
        return batched_unsupported_reason(problem, optimizer, recipe)

    def run(self, runs, progress=None, measure_cost=True):
        """One work item; an analytic item may mix schedules (a tuning round searching schedule parameters):
        each run then follows its own, and the rest of the recipe is the first run's."""
        first = runs[0]
        optimizers, seeds = [r.optimizer for r in runs], [r.seed for r in runs]
        schedules = [r.recipe.schedule for r in runs]
        mixed = len(set(schedules)) > 1
        if self.track == ANALYTIC:
            from optbench.engines import batched_numpy

            # the numpy path where it applies (CPU, float64, a ported rule): no torch import (engines.batched_numpy)
            if batched_numpy.supports(first.problem, first.optimizer.entry.batched, first.recipe.settings(),
                                      first.device, first.dtype):
                recipe = first.recipe
                return batched_numpy.run_batched_numpy(
                    first.problem, optimizers, seeds, first.steps, first.record_every, progress=progress,
                    schedule=schedules if mixed else recipe.schedule, clip_norm=recipe.clip_norm,
                    clip_value=recipe.clip_value, measure_cost=measure_cost)
        import torch

        device, dtype = torch.device(first.device), getattr(torch, first.dtype)
        if self.track == ANALYTIC:
            from optbench.engines.batched import run_batched

            return run_batched(first.problem, optimizers, seeds, first.steps, first.record_every, device=device,
                               dtype=dtype, progress=progress, recipe=first.recipe,
                               schedules=schedules if mixed else None, measure_cost=measure_cost)
        from optbench.engines.network import run_network_batched

        return run_network_batched(first.problem, optimizers, seeds, first.steps, first.record_every,
                                   device=device, progress=progress)


ENGINES: dict[tuple[str, str], Engine] = {(e.name, e.track): e for e in (
    LoopEngine(ANALYTIC), BatchedEngine(ANALYTIC), LoopEngine(NETWORK), BatchedEngine(NETWORK), TrialsEngine())}
ENGINE_NAMES = ("loop", "batched")  # --engine also takes "auto": batched where supported, else loop


def get_engine(name: str, kind: str) -> Engine:
    """The engine ``name`` (``loop``, ``batched``, or ``trials`` for analytic tuning rounds) of a problem kind's
    track."""
    try:
        return ENGINES[(name, track(kind))]
    except KeyError:
        raise ValueError(f"get_engine: not an engine: {name!r}") from None


def _batched_engine(kind: str) -> tuple[frozenset[str], frozenset[str], frozenset[str]]:
    """(needs it provides, recipe keys it implements, model features it runs) of a problem kind's batched
    engine."""
    if kind == ANALYTIC:
        from optbench.engines import batched

        return batched.PROVIDES, batched.RECIPE, frozenset()
    from optbench.engines import network  # every other kind is the network track (as sweep.plan.execute)

    return network.BATCHED_PROVIDES, network.BATCHED_RECIPE, network.BATCHED_FEATURES


def _settings(recipe: RecipeLike) -> frozenset[str]:
    return recipe.settings() if isinstance(recipe, Recipe) else frozenset(recipe)


def batched_unsupported_reason(problem, optimizer, recipe: RecipeLike = ()) -> str | None:
    """Why the batched engine cannot run ``optimizer`` on ``problem`` with this recipe (a :class:`Recipe` or
    the names of its non-default settings, ``Recipe.settings()``), or None when it can, reproducing the loop
    engine."""
    loop_only = getattr(problem, "loop_only", None)  # e.g. a user training task with its own loss
    if loop_only:
        return f"{problem.label} runs on the loop engine only: {loop_only}"
    if problem.kind == "analytic":
        from optbench.engines import batched_numpy

        # what the numpy path runs, the torch path runs too (tested): answered without importing torch
        if batched_numpy.supports(problem, optimizer.entry.batched, _settings(recipe)):
            return None
    from optbench.engines.batched_rules import RULES, missing_needs

    provides, implements, runs_features = _batched_engine(problem.kind)
    rule = RULES.get(optimizer.entry.batched) if optimizer.entry.batched else None
    if rule is None:
        return f"{optimizer.name!r} has no batched rule"
    refused = rule.refuses(optimizer.hyperparams)  # settings of the class its rule does not mirror
    if refused:
        return refused
    features = sorted(set(getattr(problem, "features", ())) - runs_features)
    if features:
        return f"it does not run models with {', '.join(features)}"
    missing = missing_needs(rule, provides)
    if missing:
        return (f"the {optimizer.name!r} rule needs {'; '.join(missing)}, which it does not provide for "
                f"{problem.kind} problems")
    unimplemented = sorted(_settings(recipe) - implements)
    if unimplemented:
        return f"it does not implement {', '.join(unimplemented)} for {problem.kind} problems"
    return None


def engine_supports(engine: str, problem, optimizer, recipe: RecipeLike = ()) -> bool:
    """Whether ``engine`` runs ``optimizer`` on ``problem`` as the loop engine would (``loop`` and ``auto``,
    which falls back to it, always do)."""
    if engine == "auto":
        return True
    return get_engine(engine, problem.kind).supports(problem, optimizer, recipe) is None


CPU_MIN_NETWORK_GROUP = 2  # K = 1 batched (vmap) is slower than one loop run on a CPU (0.84×; K = 2…16: 1.0–1.6×)


def batched_network_pays(optimizer, device: str, group_size: int | None = None) -> bool:
    """Whether K = ``group_size`` configurations of ``optimizer``'s rule train faster per model on the batched
    network engine than as K loop runs (None: a group of at least ``CPU_MIN_NETWORK_GROUP``). Measured: on a CPU
    the fused Adam/AdamW update pays from K = 2; the generic rules' passes over ``[K, n]`` tensors do not."""
    if str(device).startswith("cuda"):
        return True
    from optbench.engines.fused import FUSED_KERNELS, HYPERPARAMETERS

    fused = optimizer.entry.batched in FUSED_KERNELS and set(optimizer.hyperparams) == HYPERPARAMETERS
    return fused and (CPU_MIN_NETWORK_GROUP if group_size is None else group_size) >= CPU_MIN_NETWORK_GROUP


def choose_engine(requested: str, problem, optimizer, recipe: RecipeLike = (),
                  device: str = "cpu", group_size: int | None = None) -> str:
    """The engine (``loop`` or ``batched``) for a run, given ``--engine requested`` (``auto``, ``loop`` or
    ``batched``) and, for ``auto`` on networks, the number of configurations batched with it (None: enough to
    pay, :func:`batched_network_pays`); ``batched`` that cannot be honoured raises ``UsageError`` with the
    reason."""
    if requested not in ("auto", *ENGINE_NAMES):
        raise ValueError(f"choose_engine: not an engine: {requested!r}")
    if requested == "loop":
        return "loop"
    reason = get_engine("batched", problem.kind).supports(problem, optimizer, recipe)
    if requested == "batched":
        if reason is not None:
            raise UsageError(f"The batched engine does not support {optimizer.name!r} on {problem.label}: "
                             f"{reason}; use --engine loop or auto.")
        return "batched"
    if reason is not None or (track(problem.kind) == NETWORK
                              and not batched_network_pays(optimizer, device, group_size)):
        return "loop"
    return "batched"
