"""Typed parameter declarations for registry entries, and validation of spec keyword arguments.

Each problem and optimizer entry declares its parameters as :class:`Param` values; a spec's kwargs are
checked against them before any work: unknown keys, wrong types and out-of-range values are rejected
with a message that names the bad value and what would be valid.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from optbench.errors import SpecError, suggest

Check = Callable[[Any], bool]


@dataclass(frozen=True)
class Param:
    """One parameter: its default, a one-line doc, and an optional range check with its description."""

    default: Any
    doc: str = ""
    check: Check | None = None
    valid: str = ""  # human description of the valid range, e.g. "> 0"
    types: tuple[type, ...] = ()  # accepted types; inferred from the default when empty

    def accepted_types(self) -> tuple[type, ...]:
        if self.types:
            return self.types
        d = self.default
        if d is None:
            return ()
        if isinstance(d, bool):
            return (bool,)
        if isinstance(d, (int, float)):
            return (int, float)
        if isinstance(d, (tuple, list)):
            return (tuple, list)
        return (type(d),)


def positive(doc: str = "", default: Any = None) -> Param:
    return Param(default, doc, lambda v: v > 0, "> 0")


def nonnegative(doc: str = "", default: Any = 0.0) -> Param:
    return Param(default, doc, lambda v: v >= 0, ">= 0")


def unit_interval(doc: str = "", default: Any = 0.0) -> Param:
    """A coefficient in [0, 1), like momentum or a decay rate."""
    return Param(default, doc, lambda v: 0 <= v < 1, "in [0, 1)")


def beta_pair(doc: str = "", default: Any = (0.9, 0.999)) -> Param:
    return Param(
        default,
        doc,
        lambda v: len(v) == 2 and all(isinstance(b, (int, float)) and 0 <= b < 1 for b in v),
        "a pair (beta1, beta2) with each in [0, 1)",
    )


def _type_name(types: tuple[type, ...]) -> str:
    names = {bool: "True/False", int: "a number", float: "a number", tuple: "a tuple", list: "a tuple",
             str: "a string"}
    return " or ".join(dict.fromkeys(names.get(t, t.__name__) for t in types))


def validate_kwargs(owner: str, kwargs: Mapping[str, Any], params: Mapping[str, Param]) -> dict[str, Any]:
    """Check ``kwargs`` against ``params`` and return them with defaults filled in.

    Raises :class:`SpecError` naming ``owner`` (e.g. "optimizer 'adam'") and the bad key or value.
    """
    out = {name: p.default for name, p in params.items()}
    for key, value in kwargs.items():
        if key not in params:
            valid = ", ".join(sorted(params)) or "none"
            raise SpecError(f"Unknown key {key!r} for {owner}.{suggest(key, params)} Valid keys: {valid}.")
        p = params[key]
        types = p.accepted_types()
        if types and value is not None:
            ok = isinstance(value, types) and not (bool not in types and isinstance(value, bool))
            if not ok:
                raise SpecError(
                    f"{owner}: {key}={value!r} has the wrong type; expected {_type_name(types)}."
                )
        if isinstance(value, float) and not math.isfinite(value):
            raise SpecError(f"{owner}: {key}={value!r} must be finite.")
        if isinstance(value, list):
            value = tuple(value)
        if p.check is not None and value is not None:
            try:
                ok = bool(p.check(value))
            except (TypeError, ValueError):
                ok = False
            if not ok:
                raise SpecError(f"{owner}: {key}={value!r} is out of range; it must be {p.valid}.")
        if isinstance(p.default, float) and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)
        out[key] = value
    return out
