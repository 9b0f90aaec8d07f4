"""optbench's exceptions. Library code raises these; only ``optbench.cli`` turns them into
messages and exit codes (usage errors exit 2, internal failures exit 1)."""

from __future__ import annotations

import difflib
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
    """A dataset is missing, incomplete or does not match its checksum."""


def suggest(name: str, choices: Iterable[str]) -> str:
    """Return ' Did you mean X?' for the nearest choices, or '' when nothing is close."""
    close = difflib.get_close_matches(name, list(choices), n=3, cutoff=0.6)
    if not close:
        return ""
    return " Did you mean " + " or ".join(repr(c) for c in close) + "?"


def unknown_name(kind: str, name: str, choices: Iterable[str]) -> UsageError:
    """The standard error for an unknown registry name: names it, suggests, lists the valid ones."""
    choices = sorted(choices)
    return SpecError(
        f"Unknown {kind} {name!r}.{suggest(name, choices)} Valid {kind}s: {', '.join(choices)}."
    )
