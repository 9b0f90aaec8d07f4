"""The problem registry: typed entries, lookup by spec, and the seeded randomness every problem shares."""

from __future__ import annotations

import hashlib
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


def derive_seed(seed: int, stream: str) -> int:
    """A stable 63-bit seed for one named random stream of a run (start point, noise, directions)."""
    digest = hashlib.sha256(f"{int(seed)}:{stream}".encode()).digest()
    return int.from_bytes(digest[:8], "little") & ((1 << 63) - 1)


class NoiseStream:
    """Standard-normal draws of shape ``[K, d]`` per step, one independent stream per run seed.

    Each run's stream comes from its own CPU generator, filled in fixed blocks of ``block`` steps, so a
    run sees the same sequence whether it runs alone (K = 1, the loop engine) or among many (the batched
    engine). This is what makes a run's seed fix its noise, whichever engine runs it.
    """

    def __init__(self, seeds: list[int], dim: int, *, stream: str = "noise", dtype=None, device=None,
                 block: int = 256):
        import torch

        self.dim, self.block = dim, block
        self.dtype = dtype or torch.float64
        self.device = device
        self.generators = [torch.Generator().manual_seed(derive_seed(s, stream)) for s in seeds]
        self._buffer = None
        self._pos = block

    def next(self):
        import torch

        if self._pos == self.block:
            blocks = [torch.randn(self.block, self.dim, generator=g, dtype=torch.float64)
                      for g in self.generators]
            self._buffer = torch.stack(blocks, dim=1).to(device=self.device, dtype=self.dtype)
            self._pos = 0
        out = self._buffer[self._pos]
        self._pos += 1
        return out
