"""Cost columns at summary time (pandas and numpy only): ``overhead_vs_sgd`` and the aggregation of each cost
column over a configuration's seeds. What they measure and how: :mod:`optbench.cost` (measurement stays with the
engines)."""

from __future__ import annotations

import math

import numpy as np

from optbench.cost import PEAK_COLUMNS, SUMMARY_COST_COLUMNS


def overhead_vs_sgd(summary):
    """Per-run ``train_step_time_s`` over the median of plain-SGD runs on the same problem, batch size and
    engine (a pandas Series aligned with ``summary``; NaN where there is no SGD run or no timing)."""
    import pandas as pd

    if "train_step_time_s" not in summary:
        return pd.Series(np.nan, index=summary.index)
    keys = [c for c in ("problem", "batch_size", "engine") if c in summary]
    df = summary[keys].astype(object).astype(str).fillna("")  # missing batch sizes must still match
    df["time"] = summary["train_step_time_s"].astype(float)
    sgd = summary["optimizer"].astype(str) == "sgd"
    if "schedule" in summary:
        sgd &= summary["schedule"].fillna("constant").astype(str) == "constant"
    base = df[sgd].groupby(keys)["time"].median().rename("base")
    joined = df.join(base, on=keys)
    return joined["time"] / joined["base"]


AGGREGATE_COLUMNS = SUMMARY_COST_COLUMNS + ("overhead_vs_sgd",)


def add_cost_columns(summary):
    """The per-run summary with every cost column (NaN for results written before they existed) and
    ``overhead_vs_sgd``."""
    df = summary.copy()
    for c in SUMMARY_COST_COLUMNS:
        if c not in df:
            df[c] = np.nan
    df["overhead_vs_sgd"] = overhead_vs_sgd(df)
    return df


def aggregate_cost(runs) -> dict[str, float]:
    """Cost columns of one comparison-table row: medians over seeds (peak memory: the maximum). ``runs``
    maps column names to the group's values (a DataFrame or a dict of arrays)."""
    out = {}
    for c in AGGREGATE_COLUMNS:
        values = np.asarray(runs[c], dtype=float) if c in runs else np.array([np.nan])
        values = values[np.isfinite(values)]
        out[c] = float(values.max() if c in PEAK_COLUMNS else np.median(values)) if len(values) else math.nan
    return out
