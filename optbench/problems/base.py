"""The problem registry: typed entries and lookup by spec (the seeded randomness they share: optbench.randomness)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

from optbench.errors import SpecError
from optbench.params import Param, validate_kwargs
from optbench.registry import Registry
from optbench.spec import Spec, parse_spec


@runtime_checkable
class Problem(Protocol):
    """What the runner, the engines, the result tables and the report read of every problem (registered or a
    user's ``AnalyticTask`` / ``TrainingTask``); :class:`AnalyticProtocol` and :class:`TrainingProtocol` add
    what their engines read. ``tests/test_user_problem.py`` checks every registered problem and both user
    shapes against these protocols (:func:`protocol_members`)."""

    name: str  # registry name (or ``file.py:factory``)
    spec: Any  # the Spec it was built from; ``str(spec) == label``
    label: str  # canonical spec text with non-default parameters: rebuilds the problem (workers, reports)
    config: dict[str, Any]  # resolved parameters (JSON-serialisable): part of every run's identity
    kind: str  # "analytic" or "network": which engines and recorder run it
    dim: int  # number of parameters (coordinates are recorded when ≤ 3)
    f_min: float | None  # known minimum of the loss (None: unknown; steps to target count loss ≤ target)
    target: float  # steps to target: loss − f_min ≤ target
    has_batch_size: bool  # takes --batch-size (and --lr-scaling)
    batch_size: int | None
    unbounded: bool  # the loss has no lower bound (the report says so)

    def distance_to_minimum(self, x: Any) -> Any: ...  # [K, d] end points → [K] distances (NaN: unknown)
    def blowup_level(self) -> float: ...  # a loss above it counts as diverged
    def describe(self) -> str: ...  # one line for `optbench list` and reports


@runtime_checkable
class AnalyticProtocol(Problem, Protocol):
    """An analytic landscape on R^d (loop and batched analytic engines)."""

    minima: Any  # [M, d] known minimisers
    bounds: Any  # plot box ((lo, hi) per coordinate)
    start: Any
    is_noisy: bool
    escape_box: Any

    def loss(self, x: Any) -> Any: ...  # [..., d] → [...]
    def grad(self, x: Any) -> Any: ...
    def loss_and_grad(self, x: Any) -> Any: ...
    def start_points(self, seeds: Any, *, dtype: Any, device: Any) -> Any: ...
    def noise_std(self, *, dtype: Any, device: Any) -> Any: ...
    def noise_stream(self, seeds: Any, *, dtype: Any, device: Any) -> Any: ...
    def sampled_loss(self, *args: Any, **kwargs: Any) -> Any: ...


@runtime_checkable
class TrainingProtocol(Problem, Protocol):
    """A model trained on data (loop and batched network engines, time to result)."""

    n_train: int
    eval_every: int
    precision: str
    input_shape: Any
    architecture: Any

    def device_data(self, device: Any) -> Any: ...
    def make_model(self, seed: int, device: Any, dtype: Any) -> Any: ...
    def init_params(self, *args: Any, **kwargs: Any) -> Any: ...
    def build_model(self, *args: Any, **kwargs: Any) -> Any: ...
    def steps_per_epoch(self) -> int: ...


def protocol_members(protocol: type) -> tuple[str, ...]:
    """The attribute and method names a problem protocol lists (its own and its bases')."""
    names: list[str] = []
    for klass in reversed(protocol.__mro__):
        if klass is Protocol or not getattr(klass, "_is_protocol", False):
            continue
        for name in (*klass.__dict__.get("__annotations__", {}), *klass.__dict__):
            if not name.startswith("_") and name not in names:
                names.append(name)
    return tuple(names)


# model features the engines must know about (engines.capabilities): running statistics updated in the
# forward pass, random masks, on-device data augmentation, more than one optimizer parameter group
# (here, not in problems.nets: the sweep expansion checks them without importing the network modules)
BUFFERS, DROPOUT, AUGMENTATION, PARAM_GROUPS = "batchnorm-buffers", "dropout", "augmentation", "param-groups"


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


# The modules whose ``register_problem`` calls fill the registry, imported on its first lookup or listing. A new
# problem module is added here; the network modules are optional at import time (their imports may be missing).
# A lookup imports the first module alone first: an analytic sweep never imports the network modules.
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
    entry = PROBLEMS.peek(name)
    if entry is None:
        import importlib

        importlib.import_module(PROBLEM_MODULES[0])  # the analytic problems register themselves
        entry = PROBLEMS.peek(name)
    return entry if entry is not None else PROBLEMS.get(name)  # else every module: the name or suggestions


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
