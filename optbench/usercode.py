"""Loading the user's own code (``package.module:name`` or ``path/to/file.py:name``) and reporting its failures
as the user's: :class:`~optbench.errors.UserCodeError` with their traceback trimmed to their own frames.

Shared by user optimizers (:mod:`optbench.optimizers.user`) and user problems (:mod:`optbench.problems.user`).
Only the module the user names is imported. :func:`source_sha` hashes the module's source file, which enters
the identity of every run that uses it: editing the file re-runs them.
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import sys
import traceback
from pathlib import Path

from optbench.errors import SpecError, UserCodeError

_OURS = (str(Path(__file__).resolve().parent), str(Path(importlib.__file__).resolve().parent), "<frozen ")


def user_traceback(exc: BaseException) -> str:
    """The traceback of ``exc`` from the first frame outside optbench, torch and importlib: the user's."""
    import torch

    ours = (*_OURS, str(Path(torch.__file__).resolve().parent))
    tb = exc.__traceback__
    while tb is not None and tb.tb_frame.f_code.co_filename.startswith(ours):
        tb = tb.tb_next
    return "".join(traceback.format_exception(type(exc), exc, tb if tb is not None else exc.__traceback__))


def is_file_ref(module_ref: str) -> bool:
    return module_ref.endswith(".py") or "/" in module_ref or "\\" in module_ref


def import_user_module(ref: str, kind: str = "optimizer", expected: str = "path/to/file.py:ClassName"):
    """The module of ``ref`` (a file path or a dotted module name); ``kind`` names what it holds in messages."""
    if is_file_ref(ref):
        path = Path(ref).expanduser()
        if not path.is_file():
            raise SpecError(f"{kind.capitalize()} file {ref!r} does not exist (expected {expected}).")
        module_name = f"optbench_user_{abs(hash(str(path.resolve())))}"
        sha = _file_sha(path)
        cached = sys.modules.get(module_name)
        if cached is not None and getattr(cached, _SHA, None) == sha:
            return cached  # (an edited file is imported again: its runs must run the code their id names)
        spec = importlib.util.spec_from_file_location(module_name, path)
        if spec is None or spec.loader is None:
            raise SpecError(f"Cannot import {ref!r} as a Python file.")
        module = importlib.util.module_from_spec(spec)
        setattr(module, _SHA, sha)
        sys.modules[module_name] = module
        try:
            spec.loader.exec_module(module)
        except (Exception, SystemExit) as exc:  # sys.exit() in user code is their error
            del sys.modules[module_name]
            raise UserCodeError(f"Importing your {kind} file {ref!r} failed: {exc!r}",
                                user_traceback(exc)) from None
        return module
    try:
        return importlib.import_module(ref)
    except ModuleNotFoundError as exc:
        if exc.name and (ref == exc.name or ref.startswith(exc.name + ".")):
            raise SpecError(f"Cannot import module {ref!r}: it is not installed or not on PYTHONPATH.") from None
        raise UserCodeError(f"Importing your module {ref!r} failed: {exc!r}", user_traceback(exc)) from None
    except (Exception, SystemExit) as exc:  # sys.exit() in user code is their error
        raise UserCodeError(f"Importing your module {ref!r} failed: {exc!r}", user_traceback(exc)) from None


_SHA = "__optbench_source_sha__"  # set on modules imported from a file: the hash of the source they ran


def _file_sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()[:16]


file_sha = _file_sha  # sha256 (16 hex digits) of a file's bytes: what a file-imported module records


def source_sha(module) -> str:
    """sha256 (16 hex digits) of the module's source file as it was imported, or "" when it has none."""
    if hasattr(module, _SHA):
        return getattr(module, _SHA)
    source = getattr(module, "__file__", None)
    if not source or not Path(source).is_file():
        return ""
    return _file_sha(Path(source))
