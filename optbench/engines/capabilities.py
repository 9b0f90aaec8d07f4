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
reason; ``--engine auto`` then picks the loop engine. ``auto`` also runs a network group batched only where
that pays (:func:`batched_network_pays`, measured by ``benchmarks/bench_nets.py --per-model``): on CUDA, and on
a CPU for rules with a fused kernel (Adam, AdamW: :mod:`optbench.engines.fused`) in groups of at least
``CPU_MIN_NETWORK_GROUP`` configurations; the other rules' elementwise passes lose to K loop runs on a CPU.
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
    from optbench.engines.batched_rules import RULES, missing_needs

    loop_only = getattr(problem, "loop_only", None)  # e.g. a user training task with its own loss
    if loop_only:
        return f"{problem.label} runs on the loop engine only: {loop_only}"
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


def choose_engine(requested: str, problem, optimizer, recipe: Iterable[str] = (), device: str = "cpu",
                  group_size: int | None = None) -> str:
    """The engine (``loop`` or ``batched``) for a run, given ``--engine requested`` (``auto``, ``loop`` or
    ``batched``) and, for ``auto`` on networks, the number of configurations batched with it (None: enough to
    pay, :func:`batched_network_pays`); ``batched`` that cannot be honoured raises ``UsageError`` with the
    reason."""
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
    if reason is not None or (problem.kind == "network" and not batched_network_pays(optimizer, device, group_size)):
        return "loop"
    return "batched"
