"""The comparison table: per (problem, optimizer configuration, learning rate, batch size), aggregated
over seeds. ``optbench run``, ``optbench show`` and the reporter print the same rows.

Columns: problem, optimizer_label, lr, batch_size, seeds, final_loss (median over seeds), best_loss
(median), dist_to_min (median), steps_to_target (median over seeds that reached it), reached (how many
seeds reached the target), status (counts), and rank within the problem (best first: runs that finished
before those that diverged, then by final loss). Cost columns (optbench.cost): state_bytes_per_param,
step_time_s, train_step_time_s (medians), peak_memory_bytes (max) and overhead_vs_sgd (median of each
run's train step time over plain SGD's on the same problem, batch size and engine; NaN without SGD runs).
"""

from __future__ import annotations

from collections import Counter
from typing import Any

GROUP = ["problem", "optimizer_label", "lr", "batch_size"]


def recompute_target(steps, summary, target: float):
    """Steps to target under another target: first recorded step with loss − f* ≤ target."""
    f_min = summary.set_index("run_id")["f_min"].fillna(0.0)
    df = steps[["run_id", "step", "loss"]].copy()
    df["run_id"] = df["run_id"].astype(str)
    df["gap"] = df["loss"] - df["run_id"].map(f_min)
    hit = df[df["gap"] <= target].groupby("run_id")["step"].min()
    out = summary.copy()
    out["steps_to_target"] = out["run_id"].map(hit).astype("Int64")
    out["target"] = target
    return out


def aggregate(summary, best_lr_only: bool = False):
    """Aggregate the per-run summary over seeds; optionally keep the best learning rate per optimizer."""
    import numpy as np
    import pandas as pd

    df = summary.copy()
    for c in ("problem", "optimizer_label", "status"):
        df[c] = df[c].astype(str)
    df["batch_size"] = df["batch_size"].astype("Int64")
    df["_ok"] = df["status"] != "diverged"
    from optbench.cost import AGGREGATE_COLUMNS, add_cost_columns, aggregate_cost

    df = add_cost_columns(df)  # state_bytes_per_param, step times, peak memory, overhead_vs_sgd
    # one pass of numpy per group (pandas' per-group overhead was ~4 ms: 4 s for a 1000-row table)
    codes = df.groupby(GROUP, dropna=False, sort=False).ngroup().to_numpy()
    order = np.argsort(codes, kind="stable")
    starts = np.flatnonzero(np.r_[True, np.diff(codes[order]) != 0])
    ends = np.r_[starts[1:], len(order)]
    col = {c: df[c].to_numpy()[order] for c in ("final_loss", "best_loss", "dist_to_min", "target", "f_min",
                                                 "wall_time_s", *AGGREGATE_COLUMNS)}
    col["steps_to_target"] = df["steps_to_target"].astype("float64").to_numpy()[order]  # <NA> → NaN
    status, ok = df["status"].to_numpy()[order], df["_ok"].to_numpy()[order]
    keys = df[GROUP].to_numpy()[order]
    rows: list[dict[str, Any]] = []
    for a, b in zip(starts, ends):
        reached = col["steps_to_target"][a:b]
        reached = reached[~np.isnan(reached)]
        # as value_counts: most frequent first, ties in order of appearance (most_common sorts stably)
        counts = Counter(status[a:b].tolist()).most_common()
        text = ", ".join(f"{n} {c}" for n, c in counts) if len(counts) > 1 else f"{counts[0][0]}"
        if b - a > 1 and len(counts) == 1:
            text = f"{counts[0][0]} ×{b - a}"
        key = keys[a]
        rows.append({
            "problem": key[0], "optimizer_label": key[1], "lr": key[2], "batch_size": key[3],
            "seeds": int(b - a),
            "final_loss": float(np.median(col["final_loss"][a:b])),
            "best_loss": float(np.median(col["best_loss"][a:b])),
            "dist_to_min": float(np.median(col["dist_to_min"][a:b])),
            "steps_to_target": float(np.median(reached)) if len(reached) else np.nan,
            "reached": int(len(reached)),
            "diverged": int((~ok[a:b]).sum()),
            "status": text,
            "target": float(col["target"][a]),
            "f_min": float(col["f_min"][a]),
            "wall_time_s": float(np.max(col["wall_time_s"][a:b])),
            **aggregate_cost({c: col[c][a:b] for c in AGGREGATE_COLUMNS}),
        })
    table = pd.DataFrame(rows)
    if table.empty:
        return table
    # best first: fewer diverged seeds, then lower median final loss (NaN last), then fewer steps to target
    table["_loss_key"] = table["final_loss"].where(np.isfinite(table["final_loss"]), np.inf)
    table["_steps_key"] = table["steps_to_target"].fillna(np.inf)
    table = table.sort_values(["problem", "diverged", "_loss_key", "_steps_key"], kind="stable")
    if best_lr_only:
        table["lrs_tried"] = table.groupby(["problem", "optimizer_label", "batch_size"], dropna=False)[
            "lr"].transform("count")
        table = table.drop_duplicates(["problem", "optimizer_label", "batch_size"], keep="first")
    table["rank"] = table.groupby("problem").cumcount() + 1
    return table.drop(columns=["_loss_key", "_steps_key"]).reset_index(drop=True)
