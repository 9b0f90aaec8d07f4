"""Which engine runs what: the one capability check the runner and the tuner both use.

The loop engine (real optimizer objects) is the reference and runs everything. The batched engine of a
problem kind runs a configuration only when

- the optimizer has a batched rule (``OptimizerEntry.batched``),
- the engine provides every need the rule declares (``Rule.needs`` against the engine's ``PROVIDES``:
  Hessians, per-parameter-tensor norms, a closure), and
- the engine implements every training-recipe setting of the run (``Run.recipe`` keys against the
  engine's ``RECIPE``: schedules, clipping, label smoothing, …), and
- the engine runs every model feature of the problem (``NetworkProblem.features`` against the engine's
  ``BATCHED_FEATURES``: BatchNorm running statistics, dropout, on-device augmentation, parameter groups;
  the vmap network engine runs none of them, so ``cifar10-resnet`` and any ``dropout=``/``no_decay=`` run
  train on the loop engine).

``--engine batched`` on a configuration the batched engine cannot honour is a ``UsageError`` naming the
reason; ``--engine auto`` then picks the loop engine. ``auto`` also keeps networks on a CPU on the loop
engine, where ``vmap`` over K copies is slower than K loops.
"""

from __future__ import annotations

from collections.abc import Iterable

from optbench.errors import UsageError


def _batched_engine(kind: str) -> tuple[frozenset[str], frozenset[str], frozenset[str]]:
    """(needs it provides, recipe keys it implements, model features it runs) of a problem kind's batched
    engine."""
    if kind == "analytic":
        from optbench.engines import batched

        return batched.PROVIDES, batched.RECIPE, frozenset()
    from optbench.engines import network  # every other kind is the network track (as runner.execute)

    return network.BATCHED_PROVIDES, network.BATCHED_RECIPE, network.BATCHED_FEATURES


def batched_unsupported_reason(problem, optimizer, recipe: Iterable[str] = ()) -> str | None:
    """Why the batched engine cannot run ``optimizer`` on ``problem`` with these recipe settings (the keys
    of ``Run.recipe``), or None when it can, reproducing the loop engine."""
    loop_only = getattr(problem, "loop_only", None)  # e.g. a user training task with its own loss
    if loop_only:
        return f"{problem.label} runs on the loop engine only: {loop_only}"
    if problem.kind == "analytic":
        from optbench.engines import batched_numpy

        # what the numpy path runs, the torch path runs too (tested): answered without importing torch
        if batched_numpy.supports(problem, optimizer.entry.batched, recipe):
            return None
    from optbench.engines.batched_rules import RULES, missing_needs

    provides, implements, runs_features = _batched_engine(problem.kind)
    rule = RULES.get(optimizer.entry.batched) if optimizer.entry.batched else None
    if rule is None:
        return f"{optimizer.name!r} has no batched rule"
    features = sorted(set(getattr(problem, "features", ())) - runs_features)
    if features:
        return f"it does not run models with {', '.join(features)}"
    missing = missing_needs(rule, provides)
    if missing:
        return (f"the {optimizer.name!r} rule needs {'; '.join(missing)}, which it does not provide for "
                f"{problem.kind} problems")
    unimplemented = sorted(set(recipe) - implements)
    if unimplemented:
        return f"it does not implement {', '.join(unimplemented)} for {problem.kind} problems"
    return None


def engine_supports(engine: str, problem, optimizer, recipe: Iterable[str] = ()) -> bool:
    """Whether ``engine`` runs ``optimizer`` on ``problem`` as the loop engine would (``loop`` and ``auto``,
    which falls back to it, always do)."""
    if engine in ("loop", "auto"):
        return True
    if engine == "batched":
        return batched_unsupported_reason(problem, optimizer, recipe) is None
    raise ValueError(f"engine_supports: not an engine: {engine!r}")


def choose_engine(requested: str, problem, optimizer, recipe: Iterable[str] = (), device: str = "cpu") -> str:
    """The engine (``loop`` or ``batched``) for a run, given ``--engine requested`` (``auto``, ``loop`` or
    ``batched``); ``batched`` that cannot be honoured raises ``UsageError`` with the reason."""
    if requested not in ("auto", "loop", "batched"):
        raise ValueError(f"choose_engine: not an engine: {requested!r}")
    if requested == "loop":
        return "loop"
    reason = batched_unsupported_reason(problem, optimizer, recipe)
    if requested == "batched":
        if reason is not None:
            raise UsageError(f"The batched engine does not support {optimizer.name!r} on {problem.label}: "
                             f"{reason}; use --engine loop or auto.")
        return "batched"
    if reason is not None or (problem.kind == "network" and not str(device).startswith("cuda")):
        return "loop"
    return "batched"
