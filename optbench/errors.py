"""optbench's exceptions. Library code raises these; only ``optbench.cli`` turns them into
messages and exit codes (usage errors exit 2, internal failures exit 1)."""

from __future__ import annotations

import difflib
import errno
import os
from collections.abc import Iterable


class OptbenchError(Exception):
    """Base class of every error optbench raises on purpose."""


class UsageError(OptbenchError):
    """The user asked for something invalid (a bad name, value or file). Exit code 2."""


class SpecError(UsageError):
    """A ``name(key=value, ...)`` spec could not be parsed or validated."""


class UserCodeError(UsageError):
    """The user's own code (an optimizer class they named) failed; carries their traceback text."""

    def __init__(self, message: str, user_traceback: str = ""):
        super().__init__(message)
        self.user_traceback = user_traceback


class DataError(UsageError):
    """A dataset or results file is missing, incomplete, damaged or does not match its checksum."""


class OptbenchWarning(UserWarning):
    """Something the user should know that did not stop the work (a damaged chunk set aside and re-run);
    the CLI prints each as one line."""


# What to do about an operating-system failure, by errno: the message names the path and one remedy.
_OS_ADVICE = {
    errno.ENOSPC: "no space left on the device: free some space or choose another location",
    errno.EDQUOT: "the disk quota is exceeded: free some space or choose another location",
    errno.EFBIG: "the file would be too large for this file system: choose another location",
    errno.EROFS: "the file system is read-only: choose a writable location",
    errno.EACCES: "permission denied: choose a location you can write (or read), or fix its permissions",
    errno.EPERM: "operation not permitted: choose a location you can write, or fix its permissions",
    errno.ENOENT: "no such file or directory: check the path",
    errno.ENOTDIR: "a component of the path is a file, not a directory: check the path",
    errno.EISDIR: "this is a directory where a file was expected: give a file path",
    errno.EEXIST: "it already exists: remove it or choose another name",
    errno.ENAMETOOLONG: "the file name is too long: choose a shorter path",
    errno.EMFILE: "too many open files: raise the limit (ulimit -n) or use fewer --workers",
    errno.ENOMEM: "out of memory: use a smaller sweep",
    errno.EIO: "an input/output error on the device: check the disk",
}


def os_error_message(exc: OSError) -> str | None:
    """One sentence for an operating-system failure (disk full, permissions, read-only file system, ...)
    naming the path; None for kinds with no advice (they stay internal errors)."""
    advice = _OS_ADVICE.get(exc.errno or -1)
    if advice is None:
        return None
    paths = [str(p) for p in (exc.filename, exc.filename2) if p is not None]
    where = " → ".join(repr(p) for p in paths) if paths else "a file"
    return f"Cannot write or read {where}: {advice} ({exc.strerror or os.strerror(exc.errno or 0)})."


def suggest(name: str, choices: Iterable[str]) -> str:
    """Return ' Did you mean X?' for the nearest choices, or '' when nothing is close."""
    close = difflib.get_close_matches(name, list(choices), n=3, cutoff=0.6)
    if not close:
        return ""
    return " Did you mean " + " or ".join(repr(c) for c in close) + "?"


def unknown_name(kind: str, name: str, choices: Iterable[str], sort: bool = True) -> UsageError:
    """The standard error for an unknown registry name: names it, suggests, lists the valid ones (sorted, or in
    the given order)."""
    choices = sorted(choices) if sort else list(choices)
    return SpecError(
        f"Unknown {kind} {name!r}.{suggest(name, choices)} Valid {kind}s: {', '.join(choices)}."
    )
