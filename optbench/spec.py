"""The spec grammar shared by problems and optimizers.

A spec list is comma-separated specs; a spec is ``name`` or ``name(key=value, ...)`` where every
value is a Python literal (numbers, strings, tuples, lists, booleans, None). Values are parsed with
:func:`ast.literal_eval`, never evaluated. Names are registry names (``sgd-momentum``) or references
to user classes (``pkg.module:Class``, ``path/to/file.py:Class``).

    >>> parse_spec_list("adam(lr=3e-3),sgd-momentum(momentum=0.8)")
    [Spec(name='adam', kwargs={'lr': 0.003}), Spec(name='sgd-momentum', kwargs={'momentum': 0.8})]
"""

from __future__ import annotations

import ast
import re
from dataclasses import dataclass, field
from typing import Any

from optbench.errors import SpecError

_NAME_RE = re.compile(r"^[A-Za-z0-9_./~\\][A-Za-z0-9_.\-/\\~]*(:[A-Za-z_][A-Za-z0-9_]*)?$")
_OPEN, _CLOSE = "([{", ")]}"


@dataclass(frozen=True)
class Spec:
    """A parsed spec: a name and keyword arguments with literal values."""

    name: str
    kwargs: dict[str, Any] = field(default_factory=dict)

    def __str__(self) -> str:
        return format_spec(self.name, self.kwargs)

    def __hash__(self) -> int:
        return hash(str(self))


def format_value(value: Any) -> str:
    """Canonical literal text for a value: floats with repr, tuples kept as tuples."""
    if isinstance(value, bool) or value is None:
        return repr(value)
    if isinstance(value, float):
        return repr(value)
    if isinstance(value, (list, tuple)):
        inner = ", ".join(format_value(v) for v in value)
        if isinstance(value, tuple):
            return f"({inner},)" if len(value) == 1 else f"({inner})"
        return f"[{inner}]"
    return repr(value)


def format_spec(name: str, kwargs: dict[str, Any]) -> str:
    """Canonical text of a spec: keys sorted, values as literals. ``parse_spec`` inverts it."""
    if not kwargs:
        return name
    args = ", ".join(f"{k}={format_value(kwargs[k])}" for k in sorted(kwargs))
    return f"{name}({args})"


def split_top_level(text: str) -> list[str]:
    """Split on commas that are outside brackets and quotes."""
    parts, depth, quote, start, escaped = [], 0, "", 0, False
    for i, ch in enumerate(text):
        if quote:
            # a backslash escapes the next character only (so '\\' ends with a real closing quote)
            if escaped:
                escaped = False
            elif ch == "\\":
                escaped = True
            elif ch == quote:
                quote = ""
        elif ch in "'\"":
            quote = ch
        elif ch in _OPEN:
            depth += 1
        elif ch in _CLOSE:
            depth -= 1
            if depth < 0:
                raise SpecError(f"Unbalanced {ch!r} at position {i} in {text!r}.")
        elif ch == "," and depth == 0:
            parts.append(text[start:i])
            start = i + 1
    if quote:
        raise SpecError(f"Unclosed quote in {text!r}.")
    if depth != 0:
        raise SpecError(f"Unclosed bracket in {text!r}.")
    parts.append(text[start:])
    return parts


def parse_spec(text: str) -> Spec:
    """Parse one ``name`` or ``name(key=value, ...)``."""
    text = text.strip()
    if not text:
        raise SpecError("Empty spec: expected a name such as 'adam' or 'adam(lr=1e-3)'.")
    if "(" not in text:
        name, args = text, ""
    else:
        open_at = text.index("(")
        name = text[:open_at].strip()
        if not text.endswith(")"):
            raise SpecError(f"Spec {text!r} must end with ')' after its arguments.")
        args = text[open_at + 1 : -1]
    if not _NAME_RE.match(name):
        raise SpecError(
            f"Bad name {name!r} in spec {text!r}: expected a registry name like 'sgd-momentum' "
            "or a class reference like 'pkg.module:Class' or 'path/to/file.py:Class'."
        )
    return Spec(name, _parse_kwargs(args, text))


def _parse_kwargs(args: str, text: str) -> dict[str, Any]:
    if not args.strip():
        return {}
    try:
        call = ast.parse(f"f({args})", mode="eval").body
    except SyntaxError:
        raise SpecError(
            f"Cannot parse the arguments of {text!r}: write them as key=value with Python literals, "
            "e.g. adam(lr=3e-3, betas=(0.9, 0.99))."
        ) from None
    if not (isinstance(call, ast.Call) and isinstance(call.func, ast.Name) and call.func.id == "f"):
        # e.g. "adam(lr=1)(x=2)" or "adam(lr=1) + g(x=2)": balanced, but not one argument list
        raise SpecError(f"Cannot parse the arguments of {text!r}: expected one (key=value, ...) list.")
    if call.args:
        raise SpecError(f"Arguments in {text!r} must be named (key=value); got a positional value.")
    kwargs: dict[str, Any] = {}
    for kw in call.keywords:
        if kw.arg is None:
            raise SpecError(f"'**' is not allowed in spec {text!r}.")
        if kw.arg in kwargs:
            raise SpecError(f"Key {kw.arg!r} is given twice in {text!r}.")
        try:
            kwargs[kw.arg] = ast.literal_eval(kw.value)
        except (ValueError, TypeError, SyntaxError):
            raise SpecError(
                f"Value of {kw.arg!r} in {text!r} is not a literal (numbers, strings, tuples, True/False/None)."
            ) from None
    return kwargs


def parse_spec_list(text: str) -> list[Spec]:
    """Parse a comma-separated list of specs; rejects empty items and duplicates."""
    specs = [parse_spec(part) for part in split_top_level(text)]
    seen: set[str] = set()
    for spec in specs:
        key = str(spec)
        if key in seen:
            raise SpecError(f"Spec {key!r} is listed twice in {text!r}.")
        seen.add(key)
    return specs


def parse_float_list(text: str, what: str) -> list[float]:
    """Parse ``1e-3,1e-2`` or a log grid ``logspace(1e-4, 1, 10)`` / ``1e-4:1:10`` into floats."""
    text = text.strip()
    grid = re.fullmatch(r"(?:logspace\((.*)\)|([^,]*:[^,]*:[^,]*))", text)
    try:
        if grid:
            lo_s, hi_s, n_s = (grid.group(1) or grid.group(2)).replace(":", ",").split(",")
            lo, hi, n = float(lo_s), float(hi_s), int(n_s)
            if lo <= 0 or hi <= 0 or n < 1:
                raise ValueError
            if n == 1:
                return [lo]
            import math

            a, b = math.log10(lo), math.log10(hi)
            inner = [10 ** (a + (b - a) * i / (n - 1)) for i in range(1, n - 1)]
            return [lo, *inner, hi]  # the endpoints exactly as typed: they end up in labels
        return [float(v) for v in text.split(",")]
    except ValueError:
        raise SpecError(
            f"Bad {what} {text!r}: give comma-separated numbers like '1e-3,1e-2' "
            "or a log grid 'LOW:HIGH:N' such as '1e-4:1:10'."
        ) from None
