"""Build a directory of outputs (a report) beside its destination, then swap it in whole.

A reader of ``out`` sees either the previous complete version or the new complete one: never a figure
folder without its ``index.html``, a truncated GIF from a full disk, or old and new figures mixed after a
kill. The staging directory ``.<name>.staging.<pid>.<random>`` lives in ``out``'s parent (the same file
system, so the swap is a rename); one left by a killed process (whose pid is gone) is removed next time.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path

_LEFTOVER = re.compile(r"^\.(?P<name>.+)\.(?:staging|old)\.(?P<pid>\d+)\.[^.]+$")


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def remove_leftovers(out: Path) -> None:
    """Delete staging and old-version directories of ``out`` left by processes that no longer exist."""
    with contextlib.suppress(OSError):
        for entry in out.parent.iterdir():
            match = _LEFTOVER.match(entry.name)
            if match and match["name"] == out.name and entry.is_dir() and not _alive(int(match["pid"])):
                shutil.rmtree(entry, ignore_errors=True)


@contextlib.contextmanager
def staged_directory(out: Path, owned: Iterable[str], option: str = "--out") -> Iterator[Path]:
    """Yield an empty staging directory; when the block succeeds, make it ``out``.

    ``owned``: the entries the build writes (``index.html``, ``figures``, …). An ``out`` holding only those
    (or nothing) is replaced whole; one that also holds other files keeps them, and each owned entry is
    replaced by its new version. On any failure the staging directory is removed and ``out`` is untouched.
    A failed write that names no file is reported against ``out``.
    """
    from optbench.errors import UsageError, os_error_message
    from optbench.results import current_umask

    out = Path(out)
    if out.exists() and not out.is_dir():
        raise UsageError(f"{option} {str(out)!r} is a file; give a directory.")
    parent = out.parent if str(out.parent) else Path(".")
    try:
        parent.mkdir(parents=True, exist_ok=True)
        remove_leftovers(out)
        stage = Path(tempfile.mkdtemp(dir=parent, prefix=f".{out.name}.staging.{os.getpid()}."))
        os.chmod(stage, 0o777 & ~current_umask())  # mkdtemp makes it 0700: the user's usual mode instead
    except OSError as exc:
        exc.filename = exc.filename or str(parent)
        raise UsageError(f"{option} {str(out)!r}: cannot write there. {os_error_message(exc) or exc}") from None
    try:
        yield stage
        _swap_in(stage, out, set(owned))
    except OSError as exc:
        if exc.filename is None:
            exc.filename = str(out)
        raise
    finally:
        shutil.rmtree(stage, ignore_errors=True)


def _swap_in(stage: Path, out: Path, owned: set[str]) -> None:
    if not out.exists():
        os.rename(stage, out)
        return
    old = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.name}.old.{os.getpid()}."))
    try:
        if {e.name for e in out.iterdir()} <= owned:  # only a previous report: two renames
            os.rename(out, old / out.name)
            os.rename(stage, out)
            return
        for entry in sorted(stage.iterdir()):  # other files live there too: replace entry by entry
            target = out / entry.name
            if target.exists() or target.is_symlink():
                os.rename(target, old / entry.name)
            os.rename(entry, target)
    finally:
        shutil.rmtree(old, ignore_errors=True)
