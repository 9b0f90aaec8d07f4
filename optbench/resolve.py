"""Problems and optimizers as the Python API and ``Sweep`` take them: spec strings (``"adam(lr=0.01)"``, or one
comma-separated string), parsed ``Spec`` values, or the objects ``get_problem`` / ``get_optimizer`` return,
alone or in a list. Anything else is a :class:`~optbench.errors.SpecError` naming the bad value."""

from __future__ import annotations

from typing import Any

from optbench.errors import SpecError
from optbench.spec import Spec


def _items(value: Any, what: str) -> list[Any]:
    from optbench.spec import parse_spec_list

    if isinstance(value, str):
        return list(parse_spec_list(value))  # one comma-separated string: empty items and duplicates fail here
    if isinstance(value, Spec) or _is_problem(value) or _is_optimizer(value):
        return [value]
    try:
        items = list(value)
    except TypeError:
        raise SpecError(f"{what}: expected spec strings or objects, got {type(value).__name__} {value!r}.") from None
    out: list[Any] = []
    for item in items:  # a list of strings: each may itself be comma-separated
        out.extend(parse_spec_list(item) if isinstance(item, str) else [item])
    return out


def _is_problem(value: Any) -> bool:
    return not isinstance(value, (str, Spec)) and hasattr(value, "label") and hasattr(value, "kind")


def _is_optimizer(value: Any) -> bool:
    return not isinstance(value, (str, Spec)) and hasattr(value, "entry") and hasattr(value, "label")


def resolve_problems(value: Any) -> list[Any]:
    """Problem specs or objects → problem objects (see the module docstring)."""
    from optbench.problems import get_problem

    out = []
    for index, item in enumerate(_items(value, "problems")):
        if isinstance(item, Spec):
            out.append(get_problem(item))
        elif _is_problem(item):
            out.append(item)
        else:
            raise SpecError(f"problems[{index}] = {item!r}: expected a problem spec such as 'rosenbrock' or an "
                            "object from optbench.get_problem; see 'optbench list problems'.")
    return out


def resolve_optimizers(value: Any) -> list[Any]:
    """Optimizer specs or configs → optimizer configs (see the module docstring)."""
    from optbench.optimizers import get_optimizer

    out = []
    for index, item in enumerate(_items(value, "optimizers")):
        if isinstance(item, Spec):
            out.append(get_optimizer(item))
        elif _is_optimizer(item):
            out.append(item)
        else:
            raise SpecError(f"optimizers[{index}] = {item!r}: expected an optimizer spec such as 'adam(lr=0.01)' "
                            "or an object from optbench.get_optimizer; see 'optbench list optimizers'.")
    return out
