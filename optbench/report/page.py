"""The report's pages: a self-contained index.html (figures beside it, opens from disk) and report.md."""

from __future__ import annotations

import html
import math
import re
from dataclasses import dataclass, field
from pathlib import Path

from optbench.analysis.summary import ranking_note
from optbench.censoring import format_steps
from optbench.formatting import is_missing
from optbench.report.style import fmt_num

SUMMARY_HEAD = ["#", "optimizer", "lr", "batch", "final loss", "best loss", "dist to min", "steps to target",
                "status"]


@dataclass
class Section:
    title: str
    figures: list[Path] = field(default_factory=list)  # shown (png, svg, gif) or linked (pdf, mp4, csv)
    tables: list[tuple[str, Path, str]] = field(default_factory=list)  # (caption, CSV file, Markdown table)
    note: str = ""


def _micro(v) -> str:
    return fmt_num(v * 1e6, 3) if not is_missing(v) else "—"


def _ratio(v) -> str:
    return f"{v:.2f}×" if not is_missing(v) else "—"


def _plain(v) -> str:
    return fmt_num(v, 3) if not is_missing(v) else "—"


# the cost columns 'optbench run' shows when its results have them (optbench.cost)
COST_COLUMNS = [("state_bytes_per_param", _plain, "state B/param"), ("train_step_time_s", _micro, "step µs"),
                ("overhead_vs_sgd", _ratio, "vs sgd")]


def summary_rows(table, display: dict[str, str] | None = None,
                 metric: str | None = None) -> dict[str, tuple[str, list[str], list[list[str]]]]:
    """Per problem: (target text, header, rows) formatted as 'optbench run' prints them; configurations named by
    their ``display`` labels (optbench.labels; default: computed from the table); ``metric``: the time-to-result
    column the rows were ranked by (None: the table's own rule)."""
    from optbench.labels import display_labels

    if display is None:
        display = display_labels(table["optimizer_label"]) if len(table) else {}
    out = {}
    for problem, g in table.groupby("problem", sort=False):
        target, f_min = g["target"].iloc[0], g["f_min"].iloc[0]
        target_text = (f"loss ≤ {fmt_num(target)}" if math.isnan(f_min)
                       else f"loss − f* ≤ {fmt_num(target)}, f* = {fmt_num(f_min)}")
        has_bs = g["batch_size"].notna().any()
        show_lrs = "lrs_tried" in g and (g["lrs_tried"] > 1).any()
        head = [h for h in SUMMARY_HEAD if has_bs or h != "batch"]
        cost = [(c, fmt, h) for c, fmt, h in COST_COLUMNS if c in g and g[c].notna().any()]
        head += [h for _, _, h in cost]
        from optbench.time_to_result import result_columns

        results = result_columns(g)
        from optbench.time_to_result import result_target_text

        if result := result_target_text(g):
            target_text += f"; result target: {result}"
        head += [h for h, _ in results]
        seeds = int(g["seeds"].max())
        rows = []
        for _, r in g.iterrows():
            lr = fmt_num(r["lr"], 3)
            steps = format_steps(r["steps_to_target"], r["reached"], r["seeds"])
            cells = [str(int(r["rank"])), display.get(str(r["optimizer_label"]), str(r["optimizer_label"])), lr]
            if has_bs:
                cells.append("—" if is_missing(r["batch_size"])
                             else str(int(r["batch_size"])))
            cells += [fmt_num(r["final_loss"]), fmt_num(r["best_loss"]), fmt_num(r["dist_to_min"]), steps,
                      str(r["status"])]
            cells += [fmt(r[c]) for c, fmt, _ in cost]
            cells += [text(r) for _, text in results]
            rows.append(cells)
        caption = f"target: {target_text}; {ranking_note(f_min, metric)}"
        if show_lrs:
            caption += f"; best of {int(g['lrs_tried'].max())} learning rates per optimizer"
        if seeds > 1:
            caption += f"; medians over {seeds} seeds"
        out[problem] = (caption, head, rows)
    return out


def md_table(head: list[str], rows: list[list[str]], left: tuple[str, ...] = ("optimizer", "status")) -> str:
    """A Markdown table; columns named in ``left`` are left-aligned, the others (numbers) right-aligned."""
    def esc(s: str) -> str:
        return s.replace("|", "\\|")

    lines = ["| " + " | ".join(map(esc, head)) + " |", "|" + "|".join("---:" if h not in left
                                                                       else "---" for h in head) + "|"]
    lines += ["| " + " | ".join(map(esc, r)) + " |" for r in rows]
    return "\n".join(lines) + "\n"


def html_table(head: list[str], rows: list[list[str]], bold=None) -> str:
    out = ["<table><thead><tr>" + "".join(f"<th>{html.escape(h)}</th>" for h in head) + "</tr></thead><tbody>"]
    for r in rows:
        cells = []
        for c in r:
            text = html.escape(c)
            if c.startswith("**") and c.endswith("**"):
                text = f"<b>{html.escape(c[2:-2])}</b>"
            cls = ' class="div"' if "diverged" in c else ""
            cells.append(f"<td{cls}>{text}</td>")
        out.append("<tr>" + "".join(cells) + "</tr>")
    return "".join(out) + "</tbody></table>"


DEVIATIONS_HEAD = ["optimizer", "reference", "differs from the paper"]


def deviation_rows(optimizers: list[str]) -> list[list[str]]:
    """One row per optimizer name (registry name or user reference, as stored in results): its reference and
    where it differs from that paper, as the registry states it. User classes are not imported."""
    from optbench.optimizers.registry import OPTIMIZERS, deviations_of

    return [[name, OPTIMIZERS[name].reference if name in OPTIMIZERS else "user class", deviations_of(name)]
            for name in sorted(set(optimizers))]


def md_grid_to_html(md: str) -> str:
    lines = [ln for ln in md.strip().splitlines() if ln.strip()]
    # cells are separated by unescaped pipes; md_table writes a pipe inside a cell as \|
    split = [[c.strip().replace("\\|", "|") for c in re.split(r"(?<!\\)\|", ln.strip()[1:-1])] for ln in lines]
    return html_table(split[0], split[2:])


CSS = """body{font-family:system-ui,-apple-system,'Segoe UI',sans-serif;max-width:1100px;margin:2em auto;
padding:0 1em;color:#222}h1{font-size:1.6em}h2{margin-top:2em;border-bottom:1px solid #ddd;padding-bottom:.2em}
table{border-collapse:collapse;margin:.6em 0 1.2em;font-size:.9em}th,td{padding:.25em .6em;
border-bottom:1px solid #e4e4e4;text-align:right}th{background:#f4f4f4}td:nth-child(2),td:last-child{text-align:left}
td.div{color:#b00020}figure{margin:1em 0}img,video{max-width:100%;height:auto;border:1px solid #eee}
figcaption,.note{color:#555;font-size:.9em}.meta{color:#555;font-size:.9em}code{background:#f4f4f4;padding:0 .2em}"""

SHOWN = {".png", ".svg", ".gif"}


def write_html(path: Path, title: str, meta: list[str], summary, sections: list[Section]) -> None:
    root = path.parent
    parts = [f"<!doctype html><html lang='en'><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
             f"<style>{CSS}</style></head><body><h1>{html.escape(title)}</h1>"]
    parts += [f"<p class='meta'>{html.escape(m)}</p>" for m in meta]
    parts.append("<h2>Summary</h2>")
    for problem, (caption, head, rows) in summary.items():
        parts.append(f"<h3>{html.escape(problem)}</h3><p class='note'>{html.escape(caption)}</p>")
        parts.append(html_table(head, rows))
    for s in sections:
        parts.append(f"<h2>{html.escape(s.title)}</h2>")
        if s.note:
            parts.append(f"<p class='note'>{html.escape(s.note)}</p>")
        by_stem: dict[str, list[Path]] = {}
        for f in s.figures:
            by_stem.setdefault(f.with_suffix("").name, []).append(f)
        for files in by_stem.values():
            rel = [f.relative_to(root).as_posix() for f in files]
            shown = next((r for r, f in zip(rel, files) if f.suffix in SHOWN), None)
            video = next((r for r, f in zip(rel, files) if f.suffix == ".mp4"), None)
            parts.append("<figure>")
            if shown:
                parts.append(f"<img src='{html.escape(shown)}' alt='{html.escape(Path(shown).stem)}' loading='lazy'>")
            elif video:
                parts.append(f"<video src='{html.escape(video)}' controls loop muted></video>")
            links = " · ".join(f"<a href='{html.escape(r)}'>{html.escape(Path(r).suffix[1:])}</a>" for r in rel)
            parts.append(f"<figcaption>{html.escape(Path(rel[0]).stem)}: {links}</figcaption></figure>")
        for caption, csv, md in s.tables:
            csv_rel = html.escape(csv.relative_to(root).as_posix())
            parts.append(f"<p class='note'>{html.escape(caption)} (<a href='{csv_rel}'>csv</a>)</p>"
                         f"{md_grid_to_html(md)}")
    parts.append("</body></html>")
    path.write_text("\n".join(parts), encoding="utf-8")


def write_markdown(path: Path, title: str, meta: list[str], summary, sections: list[Section]) -> None:
    root = path.parent
    out = [f"# {title}", ""] + [f"{m}  " for m in meta] + ["", "## Summary", ""]
    for problem, (caption, head, rows) in summary.items():
        out += [f"### {problem}", "", f"_{caption}_", "", md_table(head, rows)]
    for s in sections:
        out += [f"## {s.title}", ""]
        if s.note:
            out += [s.note, ""]
        for f in s.figures:
            rel = f.relative_to(root).as_posix()
            if f.suffix in SHOWN:
                out += [f"![{f.stem}]({rel})", ""]
            else:
                out += [f"[{f.name}]({rel})", ""]
        for caption, csv, md in s.tables:
            out += [f"{caption} ([csv]({csv.relative_to(root).as_posix()}))", "", md]
    path.write_text("\n".join(out), encoding="utf-8")
