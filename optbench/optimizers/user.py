"""User optimizers named as ``package.module:Class`` or ``path/to/file.py:Class``.

Only the module the user names is imported. Its hyperparameters are read from the class's constructor
signature (keyword arguments with defaults), so specs like ``my_opt.py:MyAdam(lr=1e-3)`` are validated
like registry entries. Failures inside the user's code are reported as the user's error, with their
traceback.
"""

from __future__ import annotations

import importlib
import importlib.util
import inspect
import sys
import traceback
from pathlib import Path
from typing import Any

from optbench.errors import SpecError, UserCodeError
from optbench.optimizers.registry import OptimizerEntry
from optbench.params import Param, positive

_CACHE: dict[str, OptimizerEntry] = {}


def _import_user_module(ref: str):
    if ref.endswith(".py") or "/" in ref or "\\" in ref:
        path = Path(ref).expanduser()
        if not path.is_file():
            raise SpecError(f"Optimizer file {ref!r} does not exist (expected path/to/file.py:ClassName).")
        module_name = f"optbench_user_{abs(hash(str(path.resolve())))}"
        if module_name in sys.modules:
            return sys.modules[module_name]
        spec = importlib.util.spec_from_file_location(module_name, path)
        if spec is None or spec.loader is None:
            raise SpecError(f"Cannot import {ref!r} as a Python file.")
        module = importlib.util.module_from_spec(spec)
        sys.modules[module_name] = module
        try:
            spec.loader.exec_module(module)
        except Exception as exc:
            del sys.modules[module_name]
            raise UserCodeError(f"Importing your optimizer file {ref!r} failed: {exc!r}",
                                traceback.format_exc()) from None
        return module
    try:
        return importlib.import_module(ref)
    except ModuleNotFoundError as exc:
        if exc.name and ref.startswith(exc.name):
            raise SpecError(f"Cannot import module {ref!r}: it is not installed or not on PYTHONPATH.") from None
        raise UserCodeError(f"Importing your module {ref!r} failed: {exc!r}", traceback.format_exc()) from None
    except Exception as exc:
        raise UserCodeError(f"Importing your module {ref!r} failed: {exc!r}", traceback.format_exc()) from None


def _param_from_default(name: str, default: Any) -> Param:
    if name == "lr" and isinstance(default, (int, float)) and not isinstance(default, bool):
        return positive("learning rate", float(default))
    if isinstance(default, (bool, int, float, str, tuple, list)) or default is None:
        return Param(default, "(from the class signature)")
    return Param(default, "(from the class signature; not settable from a spec)", lambda v: False,
                 "left at its default (not a literal)")


def user_optimizer_entry(ref: str) -> OptimizerEntry:
    """The registry entry for a user class ``module:Class`` or ``file.py:Class``."""
    if ref in _CACHE:
        return _CACHE[ref]
    module_ref, _, class_name = ref.rpartition(":")
    module = _import_user_module(module_ref)
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
    entry = OptimizerEntry(ref, f"{module.__name__}:{class_name}", "user", params,
                           (inspect.getdoc(cls) or "").split("\n")[0], needs_closure=True)
    _CACHE[ref] = entry
    return entry
