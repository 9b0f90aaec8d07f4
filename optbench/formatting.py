"""Number formatting shared by the terminal tables, the reports and the CI check outputs (no imports
beyond the standard library, so every layer may use it), and the one test for a missing value.

- :func:`fmt_num`: compact text for people (tables, figures, pages); '—' for a missing value.
- :func:`fmt_int`: a count, '—' when missing.
- :func:`fmt_g`: ``%.6g``, for the exact-looking values of a check's details ('nan' when missing).
- :func:`fmt_value` / :func:`fmt_change`: a check's metric value ('never', a divergence share) and its signed
  relative change.
"""

from __future__ import annotations

import math
from typing import Any


def fmt_num(value: Any, digits: int = 4) -> str:
    """Compact text for a number: ``digits`` significant digits, scientific notation below 1e-3 and from
    1e5, '—' for missing values (None, NaN), 'inf'/'-inf', and the value's own text when it is no number."""
    if value is None:
        return "—"
    try:
        v = float(value)
    except (TypeError, ValueError):
        return str(value)
    if math.isnan(v):
        return "—"
    if math.isinf(v):
        return "inf" if v > 0 else "-inf"
    if v == 0:
        return "0"
    if abs(v) >= 1e5 or abs(v) < 1e-3:
        return f"{v:.{digits - 1}e}"
    return f"{v:.{digits}g}"


def fmt_int(value: Any) -> str:
    """An integer count; '—' for missing values and for what is no number."""
    try:
        if value is None or (isinstance(value, float) and math.isnan(value)):
            return "—"
        return str(int(value))
    except (TypeError, ValueError):
        return "—"


def fmt_g(value: Any, digits: int = 6) -> str:
    """``digits`` significant digits in %g notation, 'nan' for NaN, the value's own text when it is no number."""
    try:
        v = float(value)
    except (TypeError, ValueError):
        return str(value)
    if math.isnan(v):
        return "nan"
    return f"{v:.{digits}g}"


def fmt_value(value: Any, metric: str = "", steps: Any = None) -> str:
    """A check's metric value for people: ``never`` for a censored steps-to-target, fractions for divergence."""
    try:
        v = float(value)
    except (TypeError, ValueError):
        return str(value)
    if metric == "steps_to_target" and steps is not None and not math.isnan(v) and v > float(steps):
        return "never"
    if metric == "diverged" and not math.isnan(v):
        return f"{v:.0%}"
    return fmt_num(v, 6) if 1e-3 <= abs(v) < 1e5 or not math.isfinite(v) or v == 0 else fmt_num(v, 5)


def fmt_change(value: Any) -> str:
    """A signed relative change: '+1.23%', '+5.0e-05' below 1e-4, '0', '±inf', '—' when missing."""
    try:
        v = float(value)
    except (TypeError, ValueError):
        return "—"
    if math.isnan(v):
        return "—"
    if v == 0:
        return "0"
    if math.isinf(v):
        return "+inf" if v > 0 else "-inf"
    if abs(v) < 1e-4:
        return f"{v:+.1e}"
    return f"{v:+.2%}"


def plural(count: int, noun: str, plural_form: str | None = None) -> str:
    """'1 problem', '6 problems', '1 batch size', '2 batch sizes'."""
    count = int(count)
    return f"{count} {noun if count == 1 else (plural_form or noun + 's')}"


def is_missing(value: Any) -> bool:
    """Whether a scalar is missing: None, NaN (a float or numpy scalar unequal to itself) or pandas' NA."""
    if value is None:
        return True
    try:
        return bool(value != value)
    except TypeError:  # pandas' NA: its comparisons give NA, whose truth value is undefined
        return True
