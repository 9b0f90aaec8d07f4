"""User optimizers named as ``package.module:Class`` or ``path/to/file.py:Class``.

Only the module the user names is imported. Its hyperparameters are read from the class's constructor
signature (keyword arguments with defaults), so specs like ``my_opt.py:MyAdam(lr=1e-3)`` are validated
like registry entries. Failures inside the user's code (importing it, constructing the optimizer, or a
``step``) are reported as the user's error, with their traceback trimmed to their own frames.

A class whose ``step(closure)`` requires the closure (like ``torch.optim.LBFGS``) is called with one;
otherwise the engine sets ``.grad`` and calls ``step()``, as a training loop would. A file's run identity
includes a hash of its source, so editing the file and re-running into the same directory re-runs it.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from optbench.errors import SpecError, UserCodeError
from optbench.optimizers.registry import USER_DEVIATIONS, OptimizerEntry
from optbench.params import Param, positive
from optbench.usercode import import_user_module, source_sha, user_traceback

if TYPE_CHECKING:
    import torch

__all__ = ["UserOptimizerEntry", "user_optimizer_entry", "user_traceback"]

_CACHE: dict[str, OptimizerEntry] = {}


@dataclass(frozen=True)
class UserOptimizerEntry(OptimizerEntry):
    """A user class: errors raised by its constructor or ``step`` become :class:`UserCodeError`."""

    source_sha: str = ""  # sha256 of the user's file ("" for installed modules); part of the run identity

    def build(self, params: Any, hyperparams: dict[str, Any], dtype: Any = None, seed: int | None = None):
        try:
            opt = super().build(params, hyperparams, dtype=dtype, seed=seed)
        except (Exception, SystemExit) as exc:  # sys.exit() in user code is their error, not our exit code
            raise UserCodeError(f"Constructing your optimizer {self.name!r} failed: {exc!r}",
                                user_traceback(exc)) from None
        step = opt.step

        def checked_step(*args: Any, **kwargs: Any):
            try:
                return step(*args, **kwargs)
            except (Exception, SystemExit) as exc:
                raise UserCodeError(f"Your optimizer {self.name!r} failed in step(): {exc!r}",
                                    user_traceback(exc)) from None

        opt.step = checked_step
        return opt


def _needs_closure(cls: type[torch.optim.Optimizer]) -> bool:
    """True when ``step`` takes a closure without a default (it must re-evaluate the loss itself)."""
    try:
        params = list(inspect.signature(cls.step).parameters.values())[1:]
    except (TypeError, ValueError):
        return False
    return bool(params) and params[0].default is inspect.Parameter.empty and params[0].kind in (
        inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)


def _param_from_default(name: str, default: Any) -> Param:
    if name == "lr" and isinstance(default, (int, float)) and not isinstance(default, bool):
        return positive("learning rate", float(default))
    if isinstance(default, (bool, int, float, str, tuple, list)) or default is None:
        return Param(default, "(from the class signature)")
    return Param(default, "(from the class signature; not settable from a spec)", lambda v: False,
                 "left at its default (not a literal)")


def _cache_key(ref: str) -> str:
    """What a cached entry is valid for: a module reference as given; a file reference as spelled (the entry's
    name and label) and the file it names now (resolved path and content hash), so a relative path from another
    directory, or an edited file, is loaded afresh."""
    from optbench.usercode import file_sha, is_file_ref

    module_ref, _, class_name = ref.rpartition(":")
    if not is_file_ref(module_ref):
        return ref
    path = Path(module_ref).expanduser()
    if not path.is_file():
        return ref  # import_user_module raises the error
    return f"{ref}|{path.resolve()}@{file_sha(path)}"


def user_optimizer_entry(ref: str) -> OptimizerEntry:
    """The registry entry for a user class ``module:Class`` or ``file.py:Class``."""
    key = _cache_key(ref)
    if key in _CACHE:
        return _CACHE[key]
    module_ref, _, class_name = ref.rpartition(":")
    module = import_user_module(module_ref)
    cls = getattr(module, class_name, None)
    if cls is None:
        names = [n for n, v in vars(module).items() if inspect.isclass(v)]
        raise SpecError(f"{module_ref!r} has no class {class_name!r}; classes there: {', '.join(names) or 'none'}.")
    import torch

    if not (inspect.isclass(cls) and issubclass(cls, torch.optim.Optimizer)):
        raise SpecError(f"{ref!r} is not a torch.optim.Optimizer subclass.")
    params: dict[str, Param] = {}
    for name, p in inspect.signature(cls.__init__).parameters.items():
        if name in ("self", "params") or p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD):
            continue
        if p.default is p.empty:
            params[name] = Param(None, "(required by the class)")
        else:
            params[name] = _param_from_default(name, p.default)
    sha = source_sha(module) if module_ref.endswith(".py") else ""
    entry = UserOptimizerEntry(ref, f"{module.__name__}:{class_name}", "user", params,
                               (inspect.getdoc(cls) or "").split("\n")[0], needs_closure=_needs_closure(cls),
                               deviations=USER_DEVIATIONS, source_sha=sha)
    _CACHE[key] = entry
    return entry
