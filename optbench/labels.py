"""Short display labels for a set of configurations shown together, and the key back to their full labels.

A run's ``optimizer_label`` (``sweep.spec.Run.optimizer_label``) is its whole identity as text: the optimizer spec
plus the recipe parts, ``sgd-momentum(momentum=0.8164881154026615)+warmup-constant(warmup=0.05)+
linear-scaling(base_batch_size=4)``. The data keeps it, at full precision. What a table or a legend shows is
:func:`display_labels` of the labels shown together: the optimizer name, plus only the parts and parameters
whose values differ between those configurations, numbers to 4 significant digits (more only where two
configurations would otherwise read the same). :func:`label_key` lists the pairs that differ, so that every
short label can be looked up. Standard library only: every layer may use it.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

DIGITS = 4  # significant digits of the numbers in a display label

_CALL = re.compile(r"^(?P<name>[^()]+)\((?P<args>.*)\)$", re.S)


def _split(text: str, sep: str) -> list[str]:
    """Split on ``sep`` outside brackets and quotes."""
    parts, depth, quote, start = [], 0, "", 0
    for i, ch in enumerate(text):
        if quote:
            if ch == quote:
                quote = ""
        elif ch in "'\"":
            quote = ch
        elif ch in "([{":
            depth += 1
        elif ch in ")]}":
            depth -= 1
        elif ch == sep and depth == 0:
            parts.append(text[start:i])
            start = i + 1
    parts.append(text[start:])
    return parts


def parse_label(label: str) -> list[tuple[str, dict[str, str]]]:
    """``'adam(eps=1e-08)+cosine+clip-norm=1.0'`` → ``[('adam', {'eps': '1e-08'}), ('cosine', {}),
    ('clip-norm', {'': '1.0'})]``: the label's parts, each a name and its parameters as text."""
    out = []
    for part in _split(label, "+"):
        part = part.strip()
        call = _CALL.match(part)
        if call:
            kwargs = {}
            for arg in _split(call["args"], ","):
                key, _, value = arg.partition("=")
                kwargs[key.strip()] = value.strip()
            out.append((call["name"].strip(), kwargs))
        elif "=" in part and "(" not in part:
            name, _, value = part.partition("=")
            out.append((name.strip(), {"": value.strip()}))
        else:
            out.append((part, {}))
    return out


def short_number(text: str, digits: int = DIGITS) -> str:
    """A parameter value's text with floats at ``digits`` significant digits; integers and text unchanged."""
    if re.fullmatch(r"[+-]?\d+", text):
        return text
    try:
        value = float(text)
    except ValueError:
        return text
    return f"{value:.{digits}g}"


def _features(parts) -> dict[tuple, str]:
    """Part presence and parameter values, keyed by (part, parameter); the first part is the optimizer."""
    out: dict[tuple, str] = {}
    optimizer = parts[0][0] if parts else ""
    for i, (name, kwargs) in enumerate(parts):
        part = ("optimizer", optimizer) if i == 0 else ("part", name)
        out[part] = "present"
        for key, value in kwargs.items():
            out[part + (key,)] = value  # not out[(*part, key)]: mypy reads that as 3.11's out[*part, key]
    return out


def _render(parts, varying: set[tuple], digits: int) -> str:
    optimizer = parts[0][0]
    text = []
    for i, (name, kwargs) in enumerate(parts):
        part = ("optimizer", optimizer) if i == 0 else ("part", name)
        if i > 0 and part not in varying:
            continue
        shown = [(k, short_number(v, digits)) for k, v in kwargs.items() if (*part, k) in varying]
        if shown and shown[0][0] == "" and len(shown) == 1:
            text.append(f"{name}={shown[0][1]}")
        elif shown:
            text.append(f"{name}({', '.join(f'{k}={v}' for k, v in shown)})")
        else:
            text.append(name)
    return "+".join(text)


def display_labels(labels: Iterable[str]) -> dict[str, str]:
    """{full label: display label} for configurations shown together (see the module docstring).

    Distinct full labels get distinct display labels: where two would read the same, their numbers get more
    digits, and as a last resort they keep their full labels.
    """
    unique = list(dict.fromkeys(map(str, labels)))
    parsed = {label: parse_label(label) for label in unique}
    features = {label: _features(p) for label, p in parsed.items()}
    keys = {k for f in features.values() for k in f}
    varying = set()
    for key in keys:
        holders = [f for f in features.values() if key[:2] in f]  # configurations that have the part
        values = {f.get(key) for f in holders}
        if key[0] == "part" and len(key) == 2:
            values = {f.get(key) for f in features.values()}  # a part some configurations lack
        if len(values) > 1:
            varying.add(key)
    out: dict[str, str] = {}
    for digits in (DIGITS, 6, 10, 17):
        out = {label: _render(parsed[label], varying, digits) if parsed[label] else label for label in unique}
        if len(set(out.values())) == len(unique):
            return out
    seen: dict[str, int] = {}
    for text in out.values():
        seen[text] = seen.get(text, 0) + 1
    return {label: (label if seen[text] > 1 else text) for label, text in out.items()}


def label_key(mapping: dict[str, str]) -> list[tuple[str, str]]:
    """(display label, full label) for every configuration whose display label is not its full label, sorted."""
    return sorted((short, full) for full, short in mapping.items() if short != full)


_NUMBER = re.compile(r"(\d+(?:\.\d+)?(?:[eE][+-]?\d+)?)")


def natural_key(text: str) -> tuple:
    """Sort key that orders the numbers inside a text as numbers: ``batch_size=4`` before ``batch_size=16``."""
    pieces = _NUMBER.split(str(text))
    return tuple((0, float(p), "") if i % 2 else (1, 0.0, p) for i, p in enumerate(pieces))


def natural_order(values) -> dict:
    """{value: its position} in :func:`natural_key` order (for ``sort_values(key=...)``)."""
    return {v: i for i, v in enumerate(sorted(set(values), key=natural_key))}


def resolved_label(label: str, root=None) -> str:
    """The label with the file path of a user optimizer resolved: ``./opt.py:MyAdam(lr=0.001)+cosine`` →
    ``/abs/dir/opt.py:MyAdam(lr=0.001)+cosine`` (relative paths from ``root``, default the working directory).
    Labels that name no file (registry names, ``pkg.mod:Class``) come back unchanged. Two spellings of one file
    (``opt.py``, ``./opt.py``, ``sub/../opt.py``) resolve to the same label; the run ids stay those of the
    spelling as typed."""
    import os
    from pathlib import Path

    parts = _split(label, "+")
    name, paren, rest = parts[0].partition("(")
    ref, colon, cls = name.rpartition(":")
    if not colon or not (ref.endswith(".py") or "/" in ref or "\\" in ref):
        return label
    path = Path(ref).expanduser()
    if not path.is_absolute():
        path = Path(root or Path.cwd()) / path
    return "+".join([f"{os.path.normpath(path.resolve())}:{cls}{paren}{rest}", *parts[1:]])
