"""The problem registry: typed entries and lookup by spec (the seeded randomness they share: optbench.randomness)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from optbench.errors import SpecError
from optbench.params import Param, validate_kwargs
from optbench.registry import Registry
from optbench.spec import Spec, parse_spec


@dataclass(frozen=True)
class ProblemEntry:
    """A registered problem: how to build it from validated kwargs, its parameters and its doc."""

    name: str
    build: Callable[..., Any]
    params: dict[str, Param]
    doc: str
    kind: str = "analytic"  # "analytic" or "network"
    has_batch_size: bool = False
    tags: tuple[str, ...] = field(default_factory=tuple)


# The modules whose ``register_problem`` calls fill the registry, imported on its first lookup. A new problem
# module is added here; the network modules are optional at import time (their imports may be missing).
PROBLEM_MODULES = ("optbench.problems.analytic", "optbench.problems.nets", "optbench.problems.lm")
OPTIONAL_PROBLEM_MODULES = ("optbench.problems.nets", "optbench.problems.lm")


def _import_problem_modules() -> None:
    import importlib

    for module in PROBLEM_MODULES:
        try:
            importlib.import_module(module)
        except ImportError:
            if module not in OPTIONAL_PROBLEM_MODULES:
                raise


PROBLEMS: Registry[ProblemEntry] = Registry("problem", load=_import_problem_modules)


def register_problem(entry: ProblemEntry) -> ProblemEntry:
    return PROBLEMS.register(entry.name, entry)


def list_problems() -> list[ProblemEntry]:
    return sorted(PROBLEMS.values(), key=lambda e: (e.kind, e.name))


def get_problem_entry(name: str) -> ProblemEntry:
    return PROBLEMS.get(name)


def get_problem(spec: str | Spec, **overrides: Any):
    """Build a problem from a spec such as ``"valley(kappa=100)"``; raises SpecError on bad input."""
    if isinstance(spec, str):
        spec = parse_spec(spec)
    if ":" in spec.name:  # a user problem, file.py:factory or pkg.mod:factory
        from optbench.problems.user import get_user_problem

        return get_user_problem(spec, overrides)
    entry = get_problem_entry(spec.name)
    kwargs = {**spec.kwargs, **overrides}
    if "batch_size" in kwargs and not entry.has_batch_size:
        raise SpecError(
            f"Problem {entry.name!r} has no batch size; batch size applies to problems with data or "
            f"gradient noise that depends on it: {', '.join(n for n, e in PROBLEMS.items() if e.has_batch_size)}."
        )
    config = validate_kwargs(f"problem {entry.name!r}", kwargs, entry.params)
    return entry.build(spec=Spec(entry.name, dict(kwargs)), config=config)
