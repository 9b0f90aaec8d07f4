"""Rich rendering of the comparison table, shared by ``run`` and ``show``.

A number is never cut: columns get widths computed here, never narrower than their longest number. When the
terminal is too narrow, lower-priority columns are dropped (named in the caption), labels wrap, and below the
width of the essential columns each configuration is printed as a block of ``name value`` pairs (stacked).
Configurations are named by their display labels (optbench.labels), with a key to their full labels below.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from optbench.analysis.summary import ranking_note
from optbench.censoring import format_steps
from optbench.formatting import fmt_int, fmt_num, is_missing
from optbench.time_to_result import result_columns

if TYPE_CHECKING:
    from rich.console import JustifyMethod

_STATUS_STYLE = {"done": "green", "diverged": "red", "escaped": "yellow"}
# columns dropped first when the table does not fit, in this order; the others are essential
DROP_ORDER = ("RSS MiB", "CUDA MiB", "examples/s", "examples→result", "vs sgd", "step µs", "state B/param",
              "dist to min", "best loss")
LABEL_MIN_WIDTH = 12  # a label column narrower than this wraps too often to read; go stacked instead
LABEL_COMFORTABLE_WIDTH = 24  # labels keep this much before the table goes down to LABEL_MIN_WIDTH


def _status_style(status: str) -> str:
    for key, style in _STATUS_STYLE.items():
        if status.startswith(key) and "," not in status:
            return style
    return ""


@dataclass
class _Column:
    header: str
    cells: list[str]
    kind: str = "number"  # number: never broken; label: may fold; text: wraps at spaces
    justify: JustifyMethod = "right"
    styles: list[str] = field(default_factory=list)

    @property
    def natural(self) -> int:
        return max([len(self.header), *map(len, self.cells)])

    def minimum(self, label_width: int = LABEL_MIN_WIDTH) -> int:
        header_word = max(map(len, self.header.split())) if self.header.strip() else 1
        if self.kind == "number":
            return max([header_word, *map(len, self.cells)])
        if self.kind == "label":
            return min(self.natural, max(label_width, header_word))
        words = [len(w) for c in self.cells for w in c.split()]
        return min(self.natural, max([9, header_word, *words]))


def fit_widths(columns: list[_Column], width: int, label_width: int = LABEL_MIN_WIDTH) -> list[int] | None:
    """Column widths that fit ``width`` terminal cells (rich's box: 3 cells per column + 1), each at least its
    minimum (labels: ``label_width``); the room left goes to the labels, then to the status column, then to headers
    that would otherwise wrap. None: no fit."""
    room = width - (3 * len(columns) + 1)
    widths = [c.minimum(label_width) for c in columns]
    if sum(widths) > room:
        return None
    spare = room - sum(widths)
    order = {"label": 0, "text": 1, "number": 2}
    for i in sorted(range(len(columns)), key=lambda i: order[columns[i].kind]):
        grow = min(spare, columns[i].natural - widths[i])
        widths[i] += grow
        spare -= grow
    return widths


def _columns(g, display: dict[str, str]) -> list[_Column]:
    has_bs = g["batch_size"].notna().any()
    rows = list(g.iterrows())
    cols = [_Column("#", [str(int(r["rank"])) for _, r in rows]),
            _Column("optimizer", [display.get(str(r["optimizer_label"]), str(r["optimizer_label"])) for _, r in rows],
                    kind="label", justify="left"),
            _Column("lr", [fmt_num(r["lr"], 3) for _, r in rows])]
    if has_bs:
        cols.append(_Column("batch", [fmt_int(r["batch_size"]) for _, r in rows]))
    cols += [_Column("final loss", [fmt_num(r["final_loss"]) for _, r in rows]),
             _Column("best loss", [fmt_num(r["best_loss"]) for _, r in rows]),
             _Column("dist to min", [fmt_num(r["dist_to_min"]) for _, r in rows]),
             _Column("steps to target", [format_steps(r["steps_to_target"], r["reached"], r["seeds"], fmt_int)
                                         for _, r in rows]),
             _Column("status", [str(r["status"]) for _, r in rows], kind="text", justify="left",
                     styles=[_status_style(str(r["status"])) for _, r in rows])]
    for (c, fmt), header in _cost_columns(g):
        cols.append(_Column(header, [fmt(r[c]) for _, r in rows]))
    for header, text in result_columns(g):  # time to result, throughput, memory (optbench.time_to_result)
        cols.append(_Column(header, [text(r) for _, r in rows]))
    return cols


def _count_range(counts, noun: str) -> str:
    """'7 learning rates', or '3–7 learning rates' where the configurations of a table differ."""
    from optbench.formatting import plural

    lo, hi = int(counts.min()), int(counts.max())
    return plural(hi, noun) if lo == hi else f"{lo}–{plural(hi, noun)}"


def render_summary(table, console, title_extra: str = "", metric: str | None = None) -> None:
    """One table per problem, best first, fitted to the console's width (module docstring); then the key from
    display labels to full labels. ``metric``: the time-to-result column it was ranked by."""
    from rich.text import Text

    from optbench.labels import display_labels, label_key
    from optbench.time_to_result import result_target_text

    if table.empty:
        console.print("No complete runs.")
        return
    display = display_labels(table["optimizer_label"])
    for problem, g in table.groupby("problem", sort=False):
        target = g["target"].iloc[0]
        f_min = g["f_min"].iloc[0]
        if math.isnan(f_min):
            target_text = f"loss ≤ {fmt_num(target)}"
        else:
            target_text = f"loss − f* ≤ {fmt_num(target)}, f* = {fmt_num(f_min)}"
        if result := result_target_text(g):
            target_text += f"; result: {result}"
        title = Text.assemble((str(problem), "bold"), f"  (target: {target_text}){title_extra}")
        show_lrs = "lrs_tried" in g and (g["lrs_tried"] > 1).any()
        seeds = int(g["seeds"].max())
        notes = [ranking_note(f_min, metric)]
        if show_lrs:  # counted per configuration: a range where they differ (a recipe's few base lrs)
            notes.append(f"best of {_count_range(g['lrs_tried'], 'learning rate')} per optimizer (--all-lrs: all)")
        if seeds > 1:
            notes.append(f"medians over {_count_range(g['seeds'], 'seed')}")
        columns, dropped, widths = _fit(_columns(g, display), console.width)
        if widths is None:
            _render_stacked(console, title, _columns(g, display), notes)
            continue
        if dropped:
            notes.append(f"not shown at {console.width} columns: {', '.join(dropped)} (wider terminal or --json)")
        _render_table(console, title, columns, widths, notes)
    key = label_key(display)
    if key:
        console.print("labels (short = full, as in the data):")
        for short, full in key:
            console.print(Text(f"  {short}\n      =\u00a0{full}"), overflow="fold")


def _fit(columns: list[_Column], width: int):
    """(columns kept, headers dropped, widths): labels first keep a comfortable width while lower-priority columns
    (DROP_ORDER) go, then they narrow to the minimum; widths None: not even the essential columns fit."""
    for label_width in (LABEL_COMFORTABLE_WIDTH, LABEL_MIN_WIDTH):
        kept, dropped = list(columns), []
        widths = fit_widths(kept, width, label_width)
        for header in DROP_ORDER:
            if widths is not None:
                break
            if any(c.header == header for c in kept):
                kept = [c for c in kept if c.header != header]
                dropped.append(header)
                widths = fit_widths(kept, width, label_width)
        if widths is not None:
            return kept, dropped, widths
    return columns, [], None


def _render_table(console, title, columns: list[_Column], widths: list[int], notes: list[str]) -> None:
    from rich.table import Table
    from rich.text import Text

    t = Table(title=title, title_justify="left", caption="; ".join(notes), caption_justify="left")
    for c, w in zip(columns, widths):
        t.add_column(c.header, justify=c.justify, width=w,
                     overflow="fold" if c.kind == "label" else "ellipsis")
    for i in range(len(columns[0].cells)):
        t.add_row(*[Text(wrap_label(c.cells[i], w) if c.kind == "label" else c.cells[i],
                         style=c.styles[i] if c.styles else "") for c, w in zip(columns, widths)])
    console.print(t)


def wrap_label(label: str, width: int) -> str:
    """A label broken into lines of at most ``width`` after its '+' and ',' separators (a part longer than a line
    is folded by rich)."""
    import re

    lines, line = [], ""
    for piece in re.findall(r"[^+,]+[+,]?\s*|[+,]\s*", label):
        if line and len(line) + len(piece.rstrip()) > width:
            lines.append(line.rstrip())
            line = ""
        line += piece
    lines.append(line.rstrip())
    return "\n".join(lines)


def _render_stacked(console, title, columns: list[_Column], notes: list[str]) -> None:
    """Too narrow for a table: each configuration as its label line and 'name value' pairs, which wrap between
    pairs, never inside a number."""
    from rich.text import Text

    console.print(title)
    for i in range(len(columns[0].cells)):
        rank, label = columns[0].cells[i], columns[1].cells[i]
        console.print(Text(f"{rank}. {label}", style="bold"), overflow="fold")
        pairs = [f"{c.header} {c.cells[i]}".replace(" ", "\u00a0") if c.kind == "number"
                 else f"{c.header}: {c.cells[i]}" for c in columns[2:]]
        console.print(Text("   " + " · ".join(pairs)))
    console.print(Text("; ".join(notes), style="dim"))


def _cost_columns(g) -> list[tuple[tuple[str, Any], str]]:
    """The cost columns (optbench.cost) with values in this table: ((column, formatter), header)."""
    def micro(v):
        return fmt_num(v * 1e6, 3) if not is_missing(v) else "—"

    def ratio(v):
        return f"{v:.2f}×" if not is_missing(v) else "—"

    def plain(v):
        return fmt_num(v, 3) if not is_missing(v) else "—"

    wanted = [(("state_bytes_per_param", plain), "state B/param"), (("train_step_time_s", micro), "step µs"),
              (("overhead_vs_sgd", ratio), "vs sgd")]
    return [w for w in wanted if w[0][0] in g and g[w[0][0]].notna().any()]


def summary_records(table) -> list[dict[str, Any]]:
    """JSON-ready rows of the comparison table (NaN as null), each with its ``display_label`` (optbench.labels:
    what tables and figures show) beside the full ``optimizer_label``."""
    from optbench.labels import display_labels

    records = json.loads(table.to_json(orient="records"))
    if records:
        display = display_labels(r["optimizer_label"] for r in records)
        for r in records:
            r["display_label"] = display[str(r["optimizer_label"])]
    return records
