"""Steps to target over seeds: a seed that never reached the target is right-censored, not missing.

A run's ``steps_to_target`` is <NA> when it never reached the target within its budget: its true value is
larger than the budget, perhaps infinite. Dropping such seeds (pandas' ``median`` skips NaN) turns the seeds
(5274, never, never) into "5274 steps", and that number then wins comparisons against configurations whose
every seed got there. The one rule optbench applies wherever it aggregates steps to target over seeds (the
comparison table and its ranking, best configurations, batch-size × lr grids, performance profiles, ``check``):

- a seed that never reached the target counts as +∞ (:func:`censor`);
- the **censored median** is the median with never = +∞ (:func:`censored_median`). It is finite exactly when
  more than half of the seeds reached the target (for an even count the two middle values are averaged, so
  half the seeds reaching still gives ∞). (5274, never, never) → ∞; (400, 600, never) → 600;
- the **success fraction** is the share of seeds that reached the target (:func:`reached_count` / seeds);
- a configuration is **fully successful** when every seed reached the target. Choices that promise "this
  configuration reaches the target in N steps" (best cells of a grid, the best lr per batch size, the
  measured critical batch size) are made among fully successful configurations only.

Shown as text (:func:`format_steps`): ``600`` (every seed), ``600 (2/3)`` (censored median finite, some
seeds never), ``never (1/3)`` (censored median ∞), ``never`` (no seed). Reference: this is the usual
treatment of right-censored run times in optimizer benchmarking (Hansen et al. 2021, COCO: "Anytime
performance assessment in blackbox optimization benchmarking", unsuccessful runs count as ∞ in run-length
distributions; Dolan & Moré 2002 set r(p, s) = ∞ for failures).
"""

from __future__ import annotations

import math

from optbench.formatting import is_missing

NEVER = math.inf  # the value of a seed, or of a censored median, that never reached the target


def censor(values, at: float = NEVER):
    """``values`` as a float array with every missing value (NaN, None, pandas <NA>: never reached) replaced by
    ``at``: +∞ by default; ``check`` censors at the budget (steps + 1), a finite stand-in with the same order.
    ``at`` may be an array of the same length."""
    import numpy as np
    import pandas as pd

    if isinstance(values, np.ndarray) and values.dtype.kind == "f":
        out = values  # the fast path: the comparison table aggregates thousands of groups
    else:
        out = pd.Series(values).astype("Float64").to_numpy(dtype=float, na_value=np.nan)
    return np.where(np.isnan(out), np.asarray(at, dtype=float), out)


def censored_median(values) -> float:
    """Median over seeds with never = +∞; +∞ unless more than half of the seeds reached the target."""
    import numpy as np

    v = censor(values)
    return float(np.median(v)) if len(v) else NEVER


def reached_count(values) -> int:
    """How many seeds reached the target (values that are not missing)."""
    import numpy as np

    return int(np.isfinite(censor(values)).sum())


def censored_cells(df, keys: list[str], column: str = "steps_to_target"):
    """Per group of ``keys``: ``median`` (censored median of ``column``), ``reached`` and ``seeds`` (counts)."""
    import numpy as np

    d = df[keys].copy()
    d["_v"] = censor(df[column])
    d["_hit"] = np.isfinite(d["_v"]).astype(int)
    cells = d.groupby(keys, sort=True)
    out = cells["_v"].median().rename("median").to_frame()  # ∞ is a value here, never skipped
    out["reached"] = cells["_hit"].sum()
    out["seeds"] = cells["_hit"].size()
    return out


def format_steps(median, reached: int, seeds: int, fmt=lambda v: str(int(v))) -> str:
    """A censored median as text: '600', '600 (2/3)', 'never (1/3)' or 'never'; ``fmt`` formats a number."""
    missing = is_missing(median) or median == NEVER
    text = "never" if missing else fmt(median)
    if 0 < reached < seeds:
        text += f" ({int(reached)}/{int(seeds)})"
    return text
