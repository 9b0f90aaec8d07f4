"""Which configurations one batched group can hold (both batched engines and both analytic paths).

Configurations share a group when they use the same rule and the same non-float settings: float
hyperparameters (learning rates, betas, ε …) vary along the group's first axis, everything else (booleans,
strings, None) is one value for the whole group. Torch-free, so planning a sweep imports no engine.
"""

from __future__ import annotations

from typing import Any

MAX_GROUP = 4096  # configurations per batched analytic work item (bounded memory per group)


def is_float_like(value: Any) -> bool:
    """A hyperparameter that becomes a per-configuration column: a number or a tuple of numbers (not bool)."""
    if isinstance(value, bool) or value is None or isinstance(value, str):
        return False
    if isinstance(value, (int, float)):
        return True
    return isinstance(value, tuple) and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in value)


def group_key(optimizer) -> tuple:
    """Configurations can share a batch when they use the same rule and the same non-float settings."""
    fixed = tuple(sorted((k, repr(v)) for k, v in optimizer.hyperparams.items() if not is_float_like(v)))
    return (optimizer.entry.name, fixed)
