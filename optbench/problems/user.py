"""User problems named as ``package.module:factory`` or ``path/to/file.py:factory``, as user optimizers are.

The factory is any callable (a function or a class); its keyword arguments with defaults are the problem's
hyperparameters, so ``my_task.py:make_task(width=64)`` is validated like a registry entry (an unknown key is
a :class:`~optbench.errors.SpecError` that suggests the valid ones). Called with them, it returns one of two
shapes:

- :class:`AnalyticTask`: a batched loss on ℝᵈ (``loss(x)`` maps ``[..., d]`` points to ``[...]`` losses),
  with an optional closed-form gradient, minima, plot bounds and a start. It becomes an
  :class:`~optbench.problems.analytic.AnalyticProblem`: both engines, the sample model of ``noise=σ``, the
  ``start`` option, steps to target and, in two dimensions, contour races, exactly as the built-in landscapes.
- :class:`TrainingTask`: a model factory, training and test data, a loss, test metrics, a default batch size
  and a target. It becomes a network problem trained by the loop engine (the batched network engine assumes
  cross-entropy and is not used), with the options every network problem has (``batch_size``, ``eval_every``,
  ``precision``, ``compile``, ``train_size``, ``test_size``). The model is initialised by its own
  constructor under a seed derived from the run seed (so batch norm, embeddings and custom inits keep their
  meaning); each evaluation records ``test_loss`` and ``test_<name>`` for every metric, the example-weighted
  mean over the test set.

A run's identity includes a hash of the module's source file and, for training tasks, a fingerprint of the
data, so editing the file (or its data) re-runs the runs that used it. Failures inside the user's code
(importing it, the factory, the loss, the gradient, the model, the metrics) are reported as
:class:`~optbench.errors.UserCodeError` naming the reference, with the user's traceback.
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from optbench.errors import SpecError, UserCodeError, suggest
from optbench.params import Param, validate_kwargs
from optbench.problems.analytic import AnalyticProblem
from optbench.problems.analytic import _common_params as analytic_params
from optbench.problems.nets import NetworkProblem
from optbench.problems.nets import _common_params as network_params
from optbench.spec import Spec
from optbench.usercode import import_user_module, source_sha, user_traceback

EXPECTED = "path/to/file.py:factory or package.module:factory"


@dataclass(frozen=True)
class AnalyticTask:
    """A user landscape. ``loss`` maps points ``[..., d]`` to losses ``[...]`` (in the points' dtype);
    ``grad`` (optional, else autograd) maps ``[..., d]`` to ``[..., d]``. ``f_min`` defaults to the loss at the
    first minimum (None without minima: then steps to target counts ``loss ≤ target``). ``start`` defaults to
    the centre of ``bounds``."""

    loss: Callable[[Any], Any]
    dim: int
    bounds: tuple[tuple[float, float], ...]
    start: tuple[float, ...] | None = None
    grad: Callable[[Any], Any] | None = None
    minima: tuple[tuple[float, ...], ...] = ()
    f_min: float | None = None
    target: float = 1e-6
    formula: str = ""


@dataclass(frozen=True)
class TrainingTask:
    """A user training problem. ``model()`` builds the module; ``train`` and ``test`` are ``(inputs, targets)``
    tensor pairs (inputs of any dtype: floating inputs follow the run's precision, integer ones such as token
    ids are passed as they are); ``loss(outputs, targets)`` is the mean loss of a batch (default: cross-entropy);
    ``metrics`` maps a name to ``fn(outputs, targets)``, the batch mean of a test metric (recorded as
    ``test_<name>``). ``target`` is the steps-to-target threshold on the training mini-batch loss (``loss −
    f_min ≤ target``); ``result_target`` the time-to-result target, e.g. ``"test_acc>=0.9"`` (default: the
    training-loss target; :mod:`optbench.time_to_result`)."""

    model: Callable[[], Any]
    train: tuple[Any, Any]
    test: tuple[Any, Any]
    loss: Callable[[Any, Any], Any] | None = None
    metrics: dict[str, Callable[[Any, Any], Any]] = field(default_factory=dict)
    batch_size: int = 128
    target: float = 0.1
    result_target: str | None = None
    f_min: float = 0.0
    description: str = ""


class _Guard:
    """Calls into the user's code; their exceptions become :class:`UserCodeError` naming the reference."""

    def __init__(self, ref: str):
        self.ref = ref

    def wrap(self, fn: Callable[..., Any], what: str) -> Callable[..., Any]:
        ref = self.ref

        def guarded(*args: Any, **kwargs: Any):
            try:
                return fn(*args, **kwargs)
            except UserCodeError:
                raise
            except (Exception, SystemExit) as exc:
                raise UserCodeError(f"Your problem {ref!r} failed in {what}: {exc!r}", user_traceback(exc)) from None

        return guarded


# ---- loading --------------------------------------------------------------------------------------------
_FACTORIES: dict[tuple[str, str], tuple[Callable[..., Any], dict[str, Param], str, str]] = {}
_TASKS: dict[tuple, Any] = {}


def _factory(ref: str) -> tuple[Callable[..., Any], dict[str, Param], str, str]:
    """(factory, its hyperparameters, source hash, first doc line) of ``module:factory``."""
    module_ref, _, name = ref.rpartition(":")
    if not module_ref or not name:
        raise SpecError(f"Problem reference {ref!r}: expected {EXPECTED}.")
    module = import_user_module(module_ref, "problem", EXPECTED)  # imported again when the file changed
    key = (ref, source_sha(module))
    if key in _FACTORIES:
        return _FACTORIES[key]
    factory = getattr(module, name, None)
    if not callable(factory):
        names = [n for n, v in vars(module).items() if callable(v) and not n.startswith("_")
                 and getattr(v, "__module__", None) == module.__name__]
        raise SpecError(f"{module_ref!r} has no factory {name!r}.{suggest(name, names)} "
                        f"Callables there: {', '.join(names) or 'none'}.")
    params: dict[str, Param] = {}
    try:
        signature = inspect.signature(factory)
    except (TypeError, ValueError):
        signature = None
    for pname, p in (signature.parameters.items() if signature else ()):
        if p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD):
            continue
        if p.default is p.empty:
            raise SpecError(f"Problem factory {ref!r}: parameter {pname!r} has no default; every parameter of a "
                            "factory needs one (specs set them by name).")
        params[pname] = Param(p.default, "(from the factory signature)",
                              types=(type(p.default),) if isinstance(p.default, (bool, str)) else ())
    entry = (factory, params, source_sha(module), (inspect.getdoc(factory) or "").split("\n")[0])
    _FACTORIES[key] = entry
    return entry


def _common_params(shape: str, batch_size: int) -> dict[str, Param]:
    """The options every problem of the shape has (``start``, ``noise``; ``batch_size``, ``eval_every``, …)."""
    return analytic_params() if shape == "analytic" else network_params(batch_size)


def get_user_problem(spec: Spec, overrides: dict[str, Any] | None = None):
    """The problem of a user reference ``spec.name`` with ``spec.kwargs`` (and ``overrides``) applied."""
    ref = spec.name
    factory, params, sha, doc = _factory(ref)
    kwargs = {**spec.kwargs, **(overrides or {})}
    own = {k: v for k, v in kwargs.items() if k in params}
    config = validate_kwargs(f"problem {ref!r}", own, params)
    key = (ref, sha, repr(sorted(config.items())))
    if key not in _TASKS:
        task = _Guard(ref).wrap(factory, "its factory")(**config)
        if not isinstance(task, (AnalyticTask, TrainingTask)):
            raise SpecError(f"Problem factory {ref!r} returned {type(task).__name__}; it must return "
                            "optbench.AnalyticTask(...) or optbench.TrainingTask(...).")
        _TASKS[key] = task
    task = _TASKS[key]
    shape = "analytic" if isinstance(task, AnalyticTask) else "network"
    common = _common_params(shape, task.batch_size if shape == "network" else 0)
    shadowed = sorted(set(params) & set(common))
    if shadowed:
        raise SpecError(f"Problem factory {ref!r}: its parameter {shadowed[0]!r} is also an option every "
                        f"{'analytic' if shape == 'analytic' else 'training'} problem has "
                        f"({', '.join(sorted(common))}); rename it.")
    rest = {k: v for k, v in kwargs.items() if k not in params}
    unknown = sorted(set(rest) - set(common))
    if unknown:
        valid = sorted({*params, *common})
        raise SpecError(f"Unknown key {unknown[0]!r} for problem {ref!r}.{suggest(unknown[0], valid)} "
                        f"Valid keys: {', '.join(valid)}.")
    if "batch_size" in rest and shape == "analytic":
        raise SpecError(f"Problem {ref!r} is an analytic task and has no batch size.")
    config = {**config, **validate_kwargs(f"problem {ref!r}", rest, common)}
    spec = Spec(ref, dict(kwargs))
    if shape == "analytic":
        return _analytic_problem(ref, spec, config, task, sha, doc)
    return _training_problem(ref, spec, config, task, sha, doc)


# ---- the analytic shape -------------------------------------------------------------------------------
def _analytic_problem(ref: str, spec: Spec, config: dict[str, Any], task: AnalyticTask, sha: str, doc: str):
    import torch

    guard = _Guard(ref)
    if not (isinstance(task.dim, int) and task.dim >= 1):
        raise SpecError(f"Problem {ref!r}: AnalyticTask.dim must be an integer >= 1, got {task.dim!r}.")
    bounds = tuple((float(lo), float(hi)) for lo, hi in task.bounds)
    if len(bounds) != task.dim:
        raise SpecError(f"Problem {ref!r}: AnalyticTask.bounds has {len(bounds)} (low, high) pairs for "
                        f"dimension {task.dim}.")
    start = tuple(float(v) for v in task.start) if task.start is not None else tuple((lo + hi) / 2
                                                                                       for lo, hi in bounds)
    minima = tuple(tuple(float(v) for v in m) for m in task.minima)
    if any(len(m) != task.dim for m in minima) or len(start) != task.dim:
        raise SpecError(f"Problem {ref!r}: AnalyticTask.start and minima must have {task.dim} coordinates.")
    loss, grad = guard.wrap(task.loss, "loss()"), guard.wrap(task.grad, "grad()") if task.grad else None
    probe = torch.tensor([start, start], dtype=torch.float64).reshape(2, 1, task.dim)
    value = loss(probe)
    if not isinstance(value, torch.Tensor) or tuple(value.shape) != (2, 1):
        raise SpecError(f"Problem {ref!r}: loss(x) must map points [..., {task.dim}] to losses [...] (a batched "
                        f"loss); for x of shape (2, 1, {task.dim}) it returned "
                        f"{tuple(value.shape) if isinstance(value, torch.Tensor) else type(value).__name__}.")
    if grad is not None:
        g = grad(probe)
        if not isinstance(g, torch.Tensor) or tuple(g.shape) != tuple(probe.shape):
            raise SpecError(f"Problem {ref!r}: grad(x) must return the shape of x, (2, 1, {task.dim}).")
    f_min = task.f_min
    if f_min is None and minima:
        f_min = float(loss(torch.tensor(minima[0], dtype=torch.float64)))
    return UserAnalyticProblem(ref, spec, config, task.dim, loss, bounds, minima,
                               None if f_min is None else float(f_min), float(task.target), start,
                               grad_fn=grad, formula=task.formula or doc, source_sha=sha)


# ---- the training shape -------------------------------------------------------------------------------
class UserData:
    """A training task's tensors on one device, with the interface of :class:`optbench.problems.nets.NetData`."""

    def __init__(self, train_x, train_y, test_x, test_y):
        self.train_x, self.train_y, self.test_x, self.test_y = train_x, train_y, test_x, test_y

    @property
    def n_train(self) -> int:
        return len(self.train_y)

    def inputs(self, x, dtype):
        return x.to(dtype) if x.is_floating_point() else x


def _fingerprint(tensors) -> str:
    """sha256 (16 hex digits) of the data's dtypes, shapes and bytes: edited data re-runs."""
    import hashlib

    import torch

    h = hashlib.sha256()
    for t in tensors:
        t = t.detach().cpu().contiguous()
        h.update(f"{t.dtype}{tuple(t.shape)}".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()[:16]


def _training_problem(ref: str, spec: Spec, config: dict[str, Any], task: TrainingTask, sha: str, doc: str):
    import torch

    guard = _Guard(ref)
    tensors = (*task.train, *task.test)
    if len(task.train) != 2 or len(task.test) != 2 or not all(isinstance(t, torch.Tensor) for t in tensors):
        raise SpecError(f"Problem {ref!r}: TrainingTask.train and .test must be (inputs, targets) tensor pairs.")
    if len(task.train[0]) != len(task.train[1]) or len(task.test[0]) != len(task.test[1]):
        raise SpecError(f"Problem {ref!r}: inputs and targets must have as many examples as each other.")
    if not (isinstance(task.batch_size, int) and task.batch_size >= 1):
        raise SpecError(f"Problem {ref!r}: TrainingTask.batch_size must be an integer >= 1.")
    bad = [n for n in task.metrics if not str(n).isidentifier()]
    if bad:
        raise SpecError(f"Problem {ref!r}: metric names must be identifiers; got {bad[0]!r}.")
    from optbench.time_to_result import parse_result_target

    result_target = parse_result_target(task.result_target, [f"test_{n}" for n in task.metrics]) \
        if task.result_target else None
    full = {**config, "data": _fingerprint(tensors)}
    build_model = guard.wrap(task.model, "model()")
    loss = guard.wrap(task.loss, "loss()") if task.loss is not None else None
    metrics = {f"test_{n}": guard.wrap(fn, f"metric {n!r}") for n, fn in task.metrics.items()}
    problem = UserTrainingProblem(
        ref, spec, full, "user", 0, tuple(task.train[0].shape[1:]), build_model, "user model",
        formula=task.description or doc, target=float(task.target), f_min=float(task.f_min),
        tensors=tensors, loss_fn=loss, metric_fns=metrics, result_target=result_target, source_sha=sha)
    return problem


@dataclass(eq=False)
class UserAnalyticProblem(AnalyticProblem):
    """An :class:`AnalyticTask` as a problem; ``source_sha`` enters the run identity."""

    source_sha: str = ""


@dataclass(eq=False)
class UserTrainingProblem(NetworkProblem):
    """A :class:`TrainingTask` as a network problem (loop engine); ``source_sha`` enters the run identity."""

    tensors: tuple = ()
    loss_fn: Callable[[Any, Any], Any] | None = None
    metric_fns: dict[str, Callable[[Any, Any], Any]] = field(default_factory=dict)
    result_target: Any = None  # an optbench.time_to_result.ResultTarget, or None: the training-loss target
    source_sha: str = ""
    loop_only: str = "its loss and metrics are the user's own (the batched network engine assumes cross-entropy)"

    @property
    def metric_columns(self) -> tuple[str, ...]:
        return ("test_loss", *self.metric_fns)

    def device_data(self, device) -> UserData:
        ntr, nte = self.config["train_size"], self.config["test_size"]
        key = (str(device), ntr, nte)
        cache = self.__dict__.setdefault("_device_data", {})
        if key not in cache:
            train_x, train_y, test_x, test_y = self.tensors
            cache.clear()
            cache[key] = UserData(train_x[:ntr].to(device), train_y[:ntr].to(device),
                                  test_x[:nte].to(device), test_y[:nte].to(device))
        return cache[key]

    @property
    def n_train(self) -> int:
        n = len(self.tensors[1])
        return min(n, self.config["train_size"] or n)

    @property
    def dim(self) -> int:
        if self._dim is None:
            self._dim = sum(v.numel() for v in self.init_params(0).values())
        return self._dim

    def init_params(self, seed: int) -> dict[str, Any]:
        """The model's own initialisation, drawn on the CPU under a seed derived from the run seed, in float64
        (every device and dtype starts from the same numbers)."""
        import torch

        from optbench.randomness import derive_seed

        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(derive_seed(seed, "init"))
            model = self.build_model()
        return {n: p.detach().to(torch.float64).clone() for n, p in model.named_parameters()}

    def criterion(self, dtype, label_smoothing: float = 0.0):
        """The training loss ``(outputs, targets) -> scalar``: the task's, else cross-entropy."""
        import torch.nn.functional as F

        if self.loss_fn is None:
            return lambda out, y: F.cross_entropy(out.to(dtype), y, label_smoothing=label_smoothing)
        if label_smoothing:
            raise SpecError(f"--label-smoothing applies to cross-entropy; {self.name!r} has its own loss.")
        own = self.loss_fn
        return lambda out, y: own(out.to(dtype) if out.is_floating_point() else out, y)

    def evaluate(self, forward, data: UserData, dtype, batch: int = 1000) -> dict[str, Any]:
        """``{test_loss, test_<metric>, …}``, each a ``[1]`` array: example-weighted means over the test set."""
        import numpy as np
        import torch

        loss = self.criterion(dtype)
        totals = dict.fromkeys(self.metric_columns, 0.0)
        n = len(data.test_y)
        with torch.no_grad():
            for i in range(0, n, batch):
                x, y = data.inputs(data.test_x[i: i + batch], dtype), data.test_y[i: i + batch]
                out = forward(x)
                out = out.to(dtype) if out.is_floating_point() else out
                totals["test_loss"] += float(loss(out, y)) * len(y)
                for name, fn in self.metric_fns.items():
                    totals[name] += float(fn(out, y)) * len(y)
        return {k: np.array([v / n if n else math.nan]) for k, v in totals.items()}

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "reference": self.name, "metrics": list(self.metric_columns),
                "result_target": str(self.result_target) if self.result_target else None}
