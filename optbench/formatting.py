"""Number formatting shared by the terminal tables, the reports and the CI check outputs (no imports
beyond the standard library, so every layer may use it)."""

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


def plural(count: int, noun: str, plural_form: str | None = None) -> str:
    """'1 problem', '6 problems', '1 batch size', '2 batch sizes'."""
    count = int(count)
    return f"{count} {noun if count == 1 else (plural_form or noun + 's')}"
