"""The comparison table: per (problem, optimizer configuration, learning rate, batch size), aggregated
over seeds. ``optbench run``, ``optbench show`` and the reporter print the same rows.

Columns: problem, optimizer_label, lr, batch_size, seeds, final_loss (median over seeds), best_loss
(median), dist_to_min (median), steps_to_target (censored median over seeds: a seed that never reached the
target counts as +∞, optbench.censoring; NaN where that median is ∞, i.e. unless more than half the seeds
reached it), reached (how many seeds reached the target), diverged and escaped (how many seeds ended so),
status (counts), and rank within the problem (best first, :func:`rank`). Cost columns (optbench.cost,
aggregated by optbench.analysis.cost): state_bytes_per_param, step_time_s, train_step_time_s (medians),
peak_memory_bytes (max) and overhead_vs_sgd (median of each run's train step time over plain SGD's on the
same problem, batch size and engine; NaN without SGD runs), peak_rss_bytes (max) and examples_per_s
(median). Time to result (network runs, optbench.time_to_result): result_target, steps_to_result,
examples_to_result and seconds_to_result (censored medians over seeds, NaN where that median is ∞) and
result_reached (how many seeds met the result target).
"""

from __future__ import annotations

from collections import Counter
from typing import Any

from optbench.formatting import is_missing

GROUP = ["problem", "optimizer_label", "lr", "batch_size"]


def aggregate(summary, best_lr_only: bool = False, metric: str | None = None):
    """Aggregate the per-run summary over seeds; optionally keep the best learning rate per optimizer.
    ``metric`` (a time-to-result column, optbench.time_to_result.TIME_METRICS) ranks by it (:func:`rank`)."""
    import numpy as np
    import pandas as pd

    from optbench.censoring import NEVER, censor, censored_median, reached_count

    df = summary.copy()
    for c in ("problem", "optimizer_label", "status"):
        df[c] = df[c].astype(str)
    df["batch_size"] = df["batch_size"].astype("Int64")
    df["_ok"] = df["status"] != "diverged"
    from optbench.analysis.cost import AGGREGATE_COLUMNS, add_cost_columns, aggregate_cost

    df = add_cost_columns(df)  # state_bytes_per_param, step times, peak memory, overhead_vs_sgd
    from optbench.time_to_result import RESULT_COLUMNS, check_metric

    check_metric(metric)
    for c in RESULT_COLUMNS:  # summaries written before time to result lack them: never measured
        if c not in df:
            df[c] = np.nan
    if "result_target" not in df:
        df["result_target"] = ""
    df["result_target"] = df["result_target"].fillna("").astype(str)
    # one pass of numpy per group (pandas' per-group overhead was ~4 ms: 4 s for a 1000-row table)
    codes = df.groupby(GROUP, dropna=False, sort=False).ngroup().to_numpy()
    order = np.argsort(codes, kind="stable")
    starts = np.flatnonzero(np.r_[True, np.diff(codes[order]) != 0])
    ends = np.r_[starts[1:], len(order)]
    col = {c: df[c].to_numpy()[order] for c in ("final_loss", "best_loss", "dist_to_min", "target", "f_min",
                                                 "wall_time_s", *AGGREGATE_COLUMNS)}
    col["steps_to_target"] = censor(df["steps_to_target"])[order]  # never reached: +∞
    for c in RESULT_COLUMNS:
        col[c] = censor(df[c])[order]
    result_target = df["result_target"].to_numpy()[order]
    status, ok = df["status"].to_numpy()[order], df["_ok"].to_numpy()[order]
    keys = df[GROUP].to_numpy()[order]
    rows: list[dict[str, Any]] = []
    for a, b in zip(starts, ends):
        to_target = col["steps_to_target"][a:b]
        steps_median = censored_median(to_target)
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
            "steps_to_target": steps_median if steps_median != NEVER else np.nan,
            "reached": reached_count(to_target),
            "diverged": int((~ok[a:b]).sum()),
            "escaped": int((status[a:b] == "escaped").sum()),
            "status": text,
            "target": float(col["target"][a]),
            "f_min": float(col["f_min"][a]),
            "wall_time_s": float(np.max(col["wall_time_s"][a:b])),
            **aggregate_cost({c: col[c][a:b] for c in AGGREGATE_COLUMNS}),
            "result_target": ", ".join(dict.fromkeys(t for t in result_target[a:b] if t)),
            **{c: _finite_or_nan(censored_median(col[c][a:b])) for c in RESULT_COLUMNS},
            "result_reached": reached_count(col["steps_to_result"][a:b]),
        })
    table = pd.DataFrame(rows)
    if table.empty:
        return table
    table = rank(table, metric=metric)
    if best_lr_only:
        table["lrs_tried"] = table.groupby(["problem", "optimizer_label", "batch_size"], dropna=False)[
            "lr"].transform("count")
        table = table.drop_duplicates(["problem", "optimizer_label", "batch_size"], keep="first")
    table["rank"] = table.groupby("problem").cumcount() + 1
    return table.reset_index(drop=True)


def _finite_or_nan(value: float) -> float:
    return value if value != float("inf") else float("nan")


def ranking_note(f_min, metric: str | None = None) -> str:
    """The table caption's short statement of how a problem's rows are ranked (the rule: :func:`rank`)."""
    if metric is not None:
        return f"ranked by {metric.replace('_', ' ')} (median over seeds, never = ∞; fewer diverged seeds first)"
    if is_missing(f_min):
        return "no minimum: ranked by steps to target (median over seeds, never = ∞), not by the final loss of " \
               "runs that escaped"
    return "ranked by median final loss (fewer diverged seeds first)"


def rank(table, within: tuple[str, ...] = ("problem",), metric: str | None = None):
    """Rows of the comparison table best first (stable), within each of ``within``; the one ranking rule of the
    comparison table (:func:`aggregate`) and of the reporter's best configurations (``report.data.best_configs``).

    A problem with a known minimum (``f_min``) ranks by fewer diverged seeds, then lower
    median final loss (NaN and ±inf last), then fewer steps to target, then more seeds reaching it.

    A problem without a minimum (``f_min`` NaN: saddles, unbounded below) has no final loss to compare: a run
    that leaves the escape box stops there (status ``escaped``), so its final loss says where it crossed the
    box, set by the size of its last step, and a slower run that escapes later with a larger step shows a lower
    one. Such a problem ranks by fewer diverged seeds, then fewer steps to its target
    (``loss ≤ target``) as the censored median over seeds (never = +∞, optbench.censoring), then more seeds
    reaching the target, then lower median best loss (how far down a run got: it separates configurations none
    of whose seeds reached the target, e.g. one that escaped uphill from one still descending).

    With ``metric`` (a time-to-result column: ``steps_to_result``, ``examples_to_result``, ``seconds_to_result``)
    every problem ranks by fewer diverged seeds, then that column's censored median (never = +∞), then more
    seeds meeting the result target, then lower median final loss.
    """
    import numpy as np

    if metric is not None:
        final = table["final_loss"].where(np.isfinite(table["final_loss"]), np.inf)
        keys = {"_rank_diverged": table["diverged"], "_rank_1": table[metric].fillna(np.inf),
                "_rank_2": -table["result_reached"], "_rank_3": final}
        return table.assign(**keys).sort_values([*within, *keys], kind="stable").drop(columns=list(keys))

    unbounded = table["f_min"].isna()
    loss = table["final_loss"].where(np.isfinite(table["final_loss"]), np.inf)
    best = table["best_loss"].where(np.isfinite(table["best_loss"]), np.inf)
    steps = table["steps_to_target"].fillna(np.inf)  # NaN: the censored median is never
    fewer_missed = -table["reached"]
    keys = {"_rank_diverged": table["diverged"],
            "_rank_1": loss.where(~unbounded, steps),
            "_rank_2": steps.where(~unbounded, fewer_missed),
            "_rank_3": fewer_missed.where(~unbounded, best)}
    from optbench.labels import natural_order

    def numbers_as_numbers(column):  # 'batch_size=4' before 'batch_size=16'
        return column.map(natural_order(column)) if column.name in within else column

    ranked = table.assign(**keys).sort_values([*within, *keys], kind="stable", key=numbers_as_numbers)
    return ranked.drop(columns=list(keys))


def last_test_accuracy(steps):
    """Last recorded test accuracy per run (a Series indexed by run_id, as text) from a step table with
    ``test_acc``; None when the table has no such column."""
    if steps is None or "test_acc" not in steps:
        return None
    df = steps[["run_id", "step", "test_acc"]].dropna(subset=["test_acc"])
    df = df.assign(run_id=df["run_id"].astype(str)).sort_values(["run_id", "step"])
    return df.groupby("run_id")["test_acc"].last()


def with_test_acc(summary, steps):
    """The per-run summary plus ``test_acc``: each run's last evaluated test accuracy (when the problem has one)."""
    last = last_test_accuracy(steps)
    if last is None:
        return summary
    return summary.assign(test_acc=summary["run_id"].astype(str).map(last))
