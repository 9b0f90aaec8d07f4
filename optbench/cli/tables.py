"""Rich rendering of the comparison table, shared by ``run`` and ``show``."""

from __future__ import annotations

import json
import math
from typing import Any

from rich.table import Table

from optbench.cli.common import fmt_float, fmt_int

_STATUS_STYLE = {"done": "green", "diverged": "red", "escaped": "yellow"}


def _style_status(status: str) -> str:
    for key, style in _STATUS_STYLE.items():
        if status.startswith(key) and "," not in status:
            return f"[{style}]{status}[/]"
    return status


def render_summary(table, console, title_extra: str = "") -> None:
    """One rich table per problem, best first."""
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
        t = Table(title=f"[bold]{problem}[/]  (target: {target_text}){title_extra}", title_justify="left")
        has_bs = g["batch_size"].notna().any()
        show_lrs = "lrs_tried" in g and (g["lrs_tried"] > 1).any()
        t.add_column("#", justify="right")
        t.add_column("optimizer")
        t.add_column("lr" + (" (best)" if show_lrs else ""), justify="right")
        if has_bs:
            t.add_column("batch", justify="right")
        t.add_column("final loss", justify="right")
        t.add_column("best loss", justify="right")
        t.add_column("dist to min", justify="right")
        t.add_column("steps to target", justify="right")
        t.add_column("status")
        seeds = int(g["seeds"].max())
        for _, r in g.iterrows():
            lr = fmt_float(r["lr"], 3)
            if show_lrs:
                lr += f" of {int(r['lrs_tried'])}"
            steps = fmt_int(r["steps_to_target"])
            if seeds > 1 and r["reached"] and r["reached"] < r["seeds"]:
                steps += f" ({int(r['reached'])}/{int(r['seeds'])})"
            cells = [str(int(r["rank"])), str(r["optimizer_label"]), lr]
            if has_bs:
                cells.append(fmt_int(r["batch_size"]))
            cells += [fmt_float(r["final_loss"]), fmt_float(r["best_loss"]), fmt_float(r["dist_to_min"]),
                      steps, _style_status(str(r["status"]))]
            t.add_row(*cells)
        if seeds > 1:
            t.caption = f"medians over {seeds} seeds"
        console.print(t)


def summary_records(table) -> list[dict[str, Any]]:
    """JSON-ready rows of the comparison table (NaN as null)."""
    records = json.loads(table.to_json(orient="records"))
    return records
