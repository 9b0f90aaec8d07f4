"""Hyperparameter branches for CI regression checks.

An optimizer's code has branches that its defaults never run: weight decay, AMSGrad, Nesterov, dampening,
``maximize``, a centred variance... A check that runs the defaults only cannot see a bug there. So
``optbench baseline`` and ``optbench check --suite`` run each checked optimizer (a registry name or a user
class) with its defaults **and** with one *variant* per float or bool hyperparameter: that argument
alone set to a non-default value (:func:`alternative_value`):

- bool: flipped (``amsgrad=True``, ``nesterov=True``, ``maximize=True``, ``centered=True``);
- float (an ``int`` default of 0 counts, as in ``weight_decay=0``): 0 → 0.1; a tolerance-sized default
  (0 < |d| < 1e-3, like ``eps = 1e-8``) → 1e-3 with its sign, so that it changes the arithmetic (this is
  what separates ``√v + ε`` from ``√(v + ε)``); a coefficient in [0.5, 1) → 1 − 2(1 − d) (0.9 → 0.8,
  0.999 → 0.998); other values → 2d (negative ones: d / 2).

Not varied: ``lr`` (a sweep axis already), other ints (counts such as ``max_iter``), tuples, strings, and
the flags that select an implementation of the same update (``foreach``, ``fused``, ``capturable``,
``differentiable``). A value the entry's own range check refuses is skipped.

A variant must change the numbers to exercise its branch. Each one is probed (:func:`probe_losses`: a
short deterministic run on Rosenbrock); when it builds and moves the losses it is kept as is. When it is
refused by the constructor, or changes nothing (``nesterov=True`` or ``dampening`` without momentum), it is
combined with one other argument switched on (a float whose default is 0, or a flipped bool), the first
for which the pair builds and differs from that other argument alone. A variant that nothing reaches is
dropped. ``maximize=True`` climbs the loss: its runs go uphill, end ``diverged`` or at a larger loss, and
those (deterministic) numbers are compared like any others.

Variants are labelled by their spec (``adam(amsgrad=True)``, ``opt.py:MyAdam(weight_decay=0.1)``), so
they are separate configurations of the baseline; the default configuration keeps its label and run id.
"""

from __future__ import annotations

import inspect
import math
from typing import Any

from optbench.errors import SpecError

IMPLEMENTATION_FLAGS = frozenset({"foreach", "fused", "capturable", "differentiable"})
NOT_VARIED = frozenset({"lr"}) | IMPLEMENTATION_FLAGS
PROBE_PROBLEM = "rosenbrock"
PROBE_STEPS = 300
PROBE_LR = 1e-3


def alternative_value(default: Any) -> Any:
    """The non-default value a variant gives an argument whose default is ``default``; None: not varied."""
    if isinstance(default, bool):
        return not default
    if isinstance(default, int) and default != 0:
        return None  # a count (max_iter, history_size): not a switch
    if not isinstance(default, (int, float)) or not math.isfinite(default):
        return None
    d = float(default)
    if d == 0.0:
        return 0.1
    if abs(d) < 1e-3:
        return math.copysign(1e-3, d)
    if 0.5 <= d < 1.0:
        return 1.0 - 2.0 * (1.0 - d)
    return d / 2 if d < 0 else 2 * d


def _declared_int(entry: Any, name: str) -> bool:
    """True when the argument is declared an int: a registry type, or a user class's ``int`` annotation."""
    param = entry.params[name]
    if param.types and float not in param.types:
        return True
    if entry.source != "user":
        return False
    try:
        annotation = inspect.signature(entry.resolve_class().__init__).parameters[name].annotation
    except (KeyError, TypeError, ValueError):
        return False
    return annotation is int or annotation == "int"


def candidate_values(entry: Any) -> dict[str, Any]:
    """{argument: non-default value} for every float or bool argument of ``entry`` that is varied."""
    out = {}
    for name, param in entry.params.items():
        if name in NOT_VARIED or entry.fixed.get(name) is not None:
            continue
        value = alternative_value(param.default)
        if value is None or (isinstance(param.default, int) and not isinstance(param.default, bool)
                             and _declared_int(entry, name)):
            continue
        out[name] = value
    return out


def probe_losses(config: Any) -> tuple[float, ...] | None:
    """Losses of a short deterministic float64 run of ``config`` on Rosenbrock (None: it does not build)."""
    import torch

    from optbench.engines.loop import run_loop
    from optbench.problems import get_problem

    try:
        config.entry.build([torch.nn.Parameter(torch.zeros(2, dtype=torch.float64))], config.hyperparams,
                           dtype=torch.float64, seed=0)
    except Exception:  # the constructor refuses the combination (torch: nesterov needs momentum)
        return None
    if "lr" in config.entry.params and "lr" not in config.given:
        config = config.with_hyperparams(lr=PROBE_LR)
    trace = run_loop(get_problem(PROBE_PROBLEM), config, seed=0, steps=PROBE_STEPS, record_every=1,
                     measure_cost=False)
    return tuple(float(v) for v in trace.loss[:, 0]) + (float(trace.end_loss[0]),)


def _with(config: Any, values: dict[str, Any]) -> Any | None:
    try:
        return config.with_hyperparams(**values)
    except SpecError:
        return None


def branch_variants(config: Any) -> list[Any]:
    """The variants of an optimizer configuration (see the module docstring), defaults not included."""
    candidates = {k: v for k, v in candidate_values(config.entry).items() if k not in config.given}
    base = probe_losses(config)
    alone: dict[str, tuple[Any, tuple | None]] = {}
    for name, value in candidates.items():
        variant = _with(config, {name: value})
        if variant is not None:
            alone[name] = (variant, probe_losses(variant))
    switches = [n for n, (v, losses) in alone.items() if losses is not None and losses != base
                and (isinstance(config.entry.params[n].default, bool) or config.entry.params[n].default == 0)]
    variants = []
    for name, (variant, losses) in alone.items():
        if losses is not None and losses != base:
            variants.append(variant)
            continue
        for helper in switches:
            if helper == name:
                continue
            pair = _with(config, {helper: candidates[helper], name: candidates[name]})
            pair_losses = probe_losses(pair) if pair is not None else None
            if pair_losses is not None and pair_losses != alone[helper][1]:
                variants.append(pair)
                break
    return variants


def with_branch_variants(configs: list[Any]) -> list[Any]:
    """``configs`` followed by the branch variants of each (labels unique, order deterministic)."""
    out = list(configs)
    labels = {c.label for c in out}
    for config in configs:
        for variant in branch_variants(config):
            if variant.label not in labels:
                labels.add(variant.label)
                out.append(variant)
    return out
