"""Rich rendering of the comparison table, shared by ``run`` and ``show``."""

from __future__ import annotations

import json
import math
from typing import Any

from rich.table import Table

from optbench.censoring import format_steps
from optbench.cli.common import fmt_float, fmt_int
from optbench.summary import ranking_note

_STATUS_STYLE = {"done": "green", "diverged": "red", "escaped": "yellow"}


def _style_status(status: str) -> str:
    for key, style in _STATUS_STYLE.items():
        if status.startswith(key) and "," not in status:
            return f"[{style}]{status}[/]"
    return status


def render_summary(table, console, title_extra: str = "", metric: str | None = None) -> None:
    """One rich table per problem, best first; ``metric``: the time-to-result column it was ranked by."""
    from optbench.time_to_result import result_columns

    if table.empty:
        console.print("No complete runs.")
        return
    for problem, g in table.groupby("problem", sort=False):
        target = g["target"].iloc[0]
        f_min = g["f_min"].iloc[0]
        if math.isnan(f_min):
            target_text = f"loss ≤ {fmt_float(target)}"
        else:
            target_text = f"loss − f* ≤ {fmt_float(target)}, f* = {fmt_float(f_min)}"
        from optbench.time_to_result import result_target_text

        if result := result_target_text(g):
            target_text += f"; result: {result}"
        t = Table(title=f"[bold]{problem}[/]  (target: {target_text}){title_extra}", title_justify="left")
        has_bs = g["batch_size"].notna().any()
        show_lrs = "lrs_tried" in g and (g["lrs_tried"] > 1).any()
        t.add_column("#", justify="right")
        t.add_column("optimizer", no_wrap=True)
        t.add_column("lr", justify="right", no_wrap=True)
        if has_bs:
            t.add_column("batch", justify="right")
        t.add_column("final loss", justify="right")
        t.add_column("best loss", justify="right")
        t.add_column("dist to min", justify="right")
        t.add_column("steps to target", justify="right")
        t.add_column("status")
        cost = _cost_columns(g)
        for _, header in cost:
            t.add_column(header, justify="right")
        results = result_columns(g)
        for header, _ in results:
            t.add_column(header, justify="right")
        seeds = int(g["seeds"].max())
        for _, r in g.iterrows():
            lr = fmt_float(r["lr"], 3)
            steps = format_steps(r["steps_to_target"], r["reached"], r["seeds"], fmt_int)
            cells = [str(int(r["rank"])), str(r["optimizer_label"]), lr]
            if has_bs:
                cells.append(fmt_int(r["batch_size"]))
            cells += [fmt_float(r["final_loss"]), fmt_float(r["best_loss"]), fmt_float(r["dist_to_min"]),
                      steps, _style_status(str(r["status"]))]
            cells += [fmt(r[c]) for (c, fmt), _ in cost]
            cells += [text(r) for _, text in results]
            t.add_row(*cells)
        notes = [ranking_note(f_min, metric)]
        if show_lrs:
            notes.append(f"best of {int(g['lrs_tried'].max())} learning rates per optimizer (--all-lrs: all)")
        if seeds > 1:
            notes.append(f"medians over {seeds} seeds")
        if notes:
            t.caption = "; ".join(notes)
            t.caption_justify = "left"
        console.print(t)


def _cost_columns(g) -> list[tuple[tuple[str, Any], str]]:
    """The cost columns (optbench.cost) with values in this table: ((column, formatter), header)."""
    def micro(v):
        return fmt_float(v * 1e6, 3) if v == v else "—"

    def ratio(v):
        return f"{v:.2f}×" if v == v else "—"

    def plain(v):
        return fmt_float(v, 3) if v == v else "—"

    wanted = [(("state_bytes_per_param", plain), "state B/param"), (("train_step_time_s", micro), "step µs"),
              (("overhead_vs_sgd", ratio), "vs sgd")]
    return [w for w in wanted if w[0][0] in g and g[w[0][0]].notna().any()]


def summary_records(table) -> list[dict[str, Any]]:
    """JSON-ready rows of the comparison table (NaN as null)."""
    records = json.loads(table.to_json(orient="records"))
    return records
