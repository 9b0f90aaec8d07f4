"""Batch size × learning rate drawn: a table per (problem, optimizer) of one metric, as CSV, Markdown and heatmap
(the grids, the critical batch size and the rule comparisons as data: :mod:`optbench.analysis.grids`).

Each cell is the median over seeds; for steps to target the censored median (a seed that never reached the
target counts as +∞, optbench.censoring), shown with the share of seeds that reached it where some did not:
``5.27e+03 (2/3)``, ``never (1/3)``. The best cell is framed, cells where most seeds diverged are hatched, and
the best learning rate of each batch size is traced next to the linear (lr ∝ B) and square-root (lr ∝ √B)
scaling rules anchored at the smallest batch size. Best cells, the best lr per batch size and the measured
critical batch size are chosen among the cells where most seeds did not diverge and, for steps to target,
every seed reached the target (:meth:`Grid.eligible`): a cell resting on some of its seeds promises a time
the others never achieved.

When the runs carry gradient-noise-scale estimates (``optbench run --noise-scale-every N``, summary column
``noise_scale``), the predicted critical batch size, the median B_simple over the runs of the grid that did not
diverge (McCandlish et al. 2018), is drawn on the batch-size axis next to the measured one: the smallest
batch size whose best value over learning rates achieves 90% of the improvement from the smallest batch size
to the best one (``CRITICAL_FRACTION``; on a log scale for losses and steps), i.e. where larger batches stop
paying off.

When the results also hold runs whose lr followed a scaling rule (``optbench run --recipe linear-warmup`` or
``--lr-scaling``) for the same optimizer, :func:`rule_comparisons` sets per-batch-size tuning (the best cell of
the grid at each batch size) against the rule (η₀·(B/B₀)^p from the base lr that is best at B₀), as a table, a
loss-against-batch-size figure and the rule's lr traced on the grid's heatmap.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from optbench.analysis.grids import (
    CENSORED,
    CRITICAL_FRACTION,
    MAJORITY_DIVERGED,
    METRICS,
    RULE_TOLERANCE,
    Grid,
    RuleComparison,
    comparison_table,
    grids,
    rule_comparisons,
)
from optbench.analysis.summary import with_test_acc
from optbench.censoring import format_steps
from optbench.formatting import is_missing
from optbench.report.figures import figure
from optbench.report.style import DIVERGED_COLOR, fmt_num, pyplot, safe_name, save


def file_stem(out: Path, *parts: str) -> Path:
    """``out/grid_<problem>_<optimizer>_<metric>``: safe names without dots, which ``with_suffix`` would take for
    the start of a suffix (labels such as ``warmup=0.05`` lost their tail and collided)."""
    return out / "_".join(safe_name(p).replace(".", "_") for p in parts)


def write_tables(grid: Grid, out: Path) -> tuple[Path, Path, str]:
    """CSV (numbers) and Markdown (formatted, best in bold, diverged marked); returns paths and the Markdown."""
    stem = file_stem(out, "grid", grid.problem, grid.optimizer, grid.metric)
    csv = stem.with_suffix(".csv")
    grid.values.to_csv(csv, float_format="%.10g")
    best = grid.best_cell()
    lines = ["| batch size \\ lr | " + " | ".join(fmt_num(c, 3) for c in grid.values.columns) + " |",
             "|---:|" + "---:|" * len(grid.values.columns)]
    for bs in grid.values.index:
        cells = []
        for lr in grid.values.columns:
            frac = grid.diverged.loc[bs, lr]
            text = "diverged" if frac >= MAJORITY_DIVERGED else grid.cell_text(bs, lr, lambda x: fmt_num(x, 3))
            if 0 < frac < MAJORITY_DIVERGED:
                text += f" ({frac:.0%} div.)"
            if best is not None and (bs, lr) == best:
                text = f"**{text}**"
            cells.append(text)
        lines.append(f"| {bs} | " + " | ".join(cells) + " |")
    md_text = "\n".join(lines) + "\n"
    md = stem.with_suffix(".md")
    md.write_text(f"{grid.problem}, {grid.optimizer}: {METRICS[grid.metric][0]} ({grid_caption(grid)})\n\n"
                  f"{md_text}")
    if grid.reached is not None:  # the counts behind the censored medians, for readers of the CSV
        grid.reached.to_csv(stem.with_name(stem.name + "_reached.csv"))
    return csv, md, md_text


def grid_caption(grid: Grid) -> str:
    """What a grid's cells are and how its best cell was chosen."""
    if grid.metric not in CENSORED:
        return "median over seeds; bold: best"
    return ("censored median over seeds: a seed that never reached the target counts as ∞; (r/n): r of n seeds "
            "reached it, 'never': the median seed did not; bold: best among the cells where every seed reached "
            "the target, as are the best lr per batch size and the measured critical batch size")


@dataclass(frozen=True)
class ColorScale:
    """The colour range of heatmaps: ``shared`` when it spans several grids (every heatmap of a problem uses
    it, so one colour means one value across them), else the grid's own range."""

    vmin: float
    vmax: float
    log: bool
    shared: int = 1  # how many grids the range was taken over


def _shown_values(grid: Grid) -> np.ndarray:
    """The values a heatmap colours: the gap above f* for losses (when f* is known), NaN where most seeds
    diverged or the value is not finite (never reached)."""
    v = grid.values.to_numpy(dtype=float)
    div = grid.diverged.to_numpy(dtype=float) >= MAJORITY_DIVERGED
    loss_like = grid.metric in ("final_loss", "best_loss")
    shown = v - grid.f_min if loss_like and not is_missing(grid.f_min) else v.copy()
    return np.where(div | ~np.isfinite(shown), np.nan, shown)


def color_scale(grids: list[Grid]) -> ColorScale | None:
    """One colour range over ``grids`` (the heatmaps of one problem and metric): log for losses and steps when
    every value is positive, linear otherwise (accuracy); None when no grid has a finite value."""
    finite = np.concatenate([s[np.isfinite(s)] for s in map(_shown_values, grids)] or [np.array([])])
    if not len(finite):
        return None
    log = grids[0].metric != "test_acc" and bool((finite > 0).all())
    return ColorScale(float(finite.min()), float(finite.max()), log, len(grids))


def heatmap(grid: Grid, out: Path, *, formats, dpi: int, style=None, rules=(), scale: ColorScale | None = None,
            title: str | None = None) -> list[Path]:
    """The table as an annotated heatmap (:func:`heatmap_figure`), saved in each format."""
    fig = heatmap_figure(grid, dpi=dpi, rules=rules, scale=scale, title=title)
    return save(fig, file_stem(out, "grid", grid.problem, grid.optimizer, grid.metric), formats, dpi)


def heatmap_figure(grid: Grid, *, dpi: int, rules=(), scale: ColorScale | None = None, title: str | None = None):
    """The table as an annotated heatmap, best cell framed, diverged cells hatched, scaling rules traced;
    ``rules`` (RuleComparison of this grid) add the lr each recipe ran with at each batch size.

    ``scale``: the colour range (:func:`color_scale` of every grid of the problem, so that the heatmaps compare;
    the colour bar says so); None: this grid's own range. ``title``: the optimizer as shown (a display label).
    No line covers a value: every traced line is cut where it passes a cell's text (:func:`_cut_lines_at_texts`),
    and where a recipe's lr leaves the grid its lr is written outside the axes, on the right."""
    from matplotlib import colors, patheffects
    from matplotlib.patches import Rectangle

    plt = pyplot()
    v = grid.values.to_numpy(dtype=float)
    div = grid.diverged.to_numpy(dtype=float) >= MAJORITY_DIVERGED
    lrs, bss = grid.values.columns.to_numpy(dtype=float), grid.values.index.to_numpy()
    lrs_index = list(grid.values.columns)
    eligible = grid.eligible().to_numpy(dtype=bool)
    loss_like = grid.metric in ("final_loss", "best_loss")
    shown = _shown_values(grid)
    own = scale is None
    scale = scale or color_scale([grid])
    norm: colors.Normalize | None
    if scale is None or scale.vmin == scale.vmax:
        norm = None
    elif scale.log:
        norm = colors.LogNorm(scale.vmin, scale.vmax)
    else:
        norm = colors.Normalize(scale.vmin, scale.vmax)
    cmap = plt.get_cmap("viridis" if grid.higher_is_better else "viridis_r").with_extremes(bad="white")
    nr, nc = v.shape
    min_width = 5.5 if is_missing(grid.noise_scale) else 7.5  # room for the critical-batch legend
    if grid.reached is not None:
        min_width = max(min_width, 6.5)  # room for the title's line on censoring
    fig, ax = plt.subplots(figsize=(max(min_width, 0.7 * nc + 2.6), max(3.0, 0.55 * nr + 1.9)), dpi=dpi)
    im = ax.imshow(np.ma.masked_invalid(shown), cmap=cmap, norm=norm, aspect="auto", origin="lower")
    cbar = fig.colorbar(im, ax=ax, pad=0.02)
    if isinstance(norm, colors.LogNorm):  # 1-2-5 ticks with plain labels: readable where a range spans < a decade
        from matplotlib import ticker

        cbar.ax.yaxis.set_major_locator(ticker.LogLocator(subs=(1.0, 2.0, 5.0)))
        cbar.ax.yaxis.set_major_formatter(ticker.FuncFormatter(lambda x, _: fmt_num(x, 2)))
        cbar.ax.yaxis.set_minor_formatter(ticker.NullFormatter())
    unit = "− f*" if loss_like and not is_missing(grid.f_min) and grid.f_min != 0 else ""
    which = "this grid's own scale" if own or scale is None or scale.shared == 1 else \
        f"one scale for the {scale.shared} grids of {grid.problem}"
    cbar.set_label(f"{METRICS[grid.metric][0]} {unit}".strip() + f" ({which})", fontsize=8)
    texts = []
    for i in range(nr):
        for j in range(nc):
            if div[i, j]:
                ax.add_patch(Rectangle((j - 0.5, i - 0.5), 1, 1, facecolor=DIVERGED_COLOR, hatch="xx",
                                       edgecolor="white", linewidth=0))
                texts.append(ax.text(j, i + 0.22, "div.", ha="center", va="center", fontsize=7.5, color="black",
                                     zorder=10))
                continue
            text = grid.cell_text(bss[i], lrs_index[j], lambda x: fmt_num(x, 2))
            size = 7.5 if len(text) <= 8 else 6.5
            if not np.isfinite(shown[i, j]):  # '—' (no value) or 'never' (censored median ∞)
                texts.append(ax.text(j, i + 0.22, text, ha="center", va="center", fontsize=size, color="#444444",
                                     zorder=10))
                continue
            rgba = cmap(norm(shown[i, j]) if norm is not None else im.norm(shown[i, j]))
            dark = 0.299 * rgba[0] + 0.587 * rgba[1] + 0.114 * rgba[2] < MAJORITY_DIVERGED
            if not eligible[i, j]:  # some seeds never reached the target: coloured by its value, not a candidate
                ax.add_patch(Rectangle((j - 0.5, i - 0.5), 1, 1, fill=False, hatch="//", edgecolor="#bbbbbb",
                                       linewidth=0, zorder=2))
            # values sit in the upper part of the cell, the traced lines' markers at its centre
            texts.append(ax.text(j, i + 0.22, text, ha="center", va="center", fontsize=size, zorder=10,
                                 color="white" if dark else "black"))
    best = grid.best_cell()
    if best is not None:
        i, j = list(bss).index(best[0]), list(lrs).index(best[1])
        ax.add_patch(Rectangle((j - 0.5, i - 0.5), 1, 1, fill=False, edgecolor="red", linewidth=2.2, zorder=5))
    per_bs = grid.best_lr_per_batch()
    log_lrs = np.log(lrs)
    step = np.diff(log_lrs).mean() if nc > 1 else 1.0
    ys = np.arange(nr)

    def col_of(lr):  # lr → column position, extrapolated on the log grid
        return (np.log(lr) - log_lrs[0]) / step

    if len(per_bs) >= 2:
        rows = np.array([list(bss).index(b) for b in per_bs.index])
        cols = np.array([list(lrs).index(lr) for lr in per_bs.to_numpy()])
        ax.plot(cols, rows, color="red", marker="o", markersize=5, linewidth=1.5, zorder=6,
                label="best lr per batch size")
        b0, lr0 = per_bs.index[0], per_bs.iloc[0]
        for power, ls, name in ((1.0, "--", "linear: lr ∝ B"), (0.5, ":", "square root: lr ∝ √B")):
            ax.plot(col_of(lr0 * (bss / b0) ** power), ys, color="black", linestyle=ls, linewidth=1.3, zorder=6,
                    label=name)
    stroke = [patheffects.withStroke(linewidth=3.4, foreground="black")]
    off_grid: dict[int, list[str]] = {}  # row → where a recipe's lr left the grid, written right of the axes
    for k, rule in enumerate(rules):  # white with a black edge: visible on every colour of the map
        pos = col_of(rule.lr_at(bss))
        marker = "DsPo"[k % 4]
        ax.plot(pos, ys, color="white", marker=marker, markersize=4.5, linewidth=2.0, zorder=8,
                linestyle=("-", "--", "-.", ":")[k % 4], markeredgecolor="black", path_effects=stroke,
                label=f"{rule.name}: lr = {rule.formula} (η₀ = {fmt_num(rule.base_lr, 2)}, B₀ = "
                      f"{rule.base_batch_size})")
        for row in np.nonzero((pos > nc - 0.5) | (pos < -0.5))[0]:
            arrow = "→" if pos[row] > nc - 0.5 else "←"
            who = f"{rule.name} " if len(rules) > 1 else ""
            off_grid.setdefault(int(row), []).append(f"{arrow} {who}lr {fmt_num(rule.lr_at(bss)[row], 2)}")
    _critical_batch_marks(ax, grid, bss)
    handles, labels = ax.get_legend_handles_labels()
    if handles:
        # below the axes, outside: constrained layout reserves the room, so the rotated lr ticks and the
        # axis label never collide with it, whatever the number of rows
        fig.legend(handles, labels, loc="outside lower center",
                   ncol=2 if not is_missing(grid.noise_scale) or rules else 3, fontsize=8, frameon=False)
    ax.set_xlim(-0.5, nc - 0.5)
    ax.set_ylim(-0.5, nr - 0.5)
    ax.set_xticks(range(nc), [fmt_num(x, 2) for x in lrs], rotation=45, ha="right")
    ax.set_yticks(range(nr), [str(b) for b in bss])
    if off_grid:  # outside the axes, where no cell is: a tick label of a right-hand axis (the layout makes room)
        right = ax.secondary_yaxis("right")
        right.set_yticks(sorted(off_grid), ["; ".join(off_grid[r]) for r in sorted(off_grid)], fontsize=7)
        right.tick_params(length=0)
    ax.set_xlabel("learning rate")
    ax.set_ylabel("batch size")
    ax.grid(False)
    for side in ("top", "right"):
        ax.spines[side].set_visible(True)
    censored = ("\nmedian with never = ∞; (r/n): r of n seeds reached; hatched: not all, never best"
                if grid.metric in CENSORED else "")
    ax.set_title(f"{grid.problem} · {title or grid.optimizer}: {METRICS[grid.metric][0]} (red frame: best)"
                 f"{censored}", fontsize=10 if not censored else 9)
    _cut_lines_at_texts(fig, ax, texts)
    return fig


def _cut_lines_at_texts(fig, ax, texts, pad_px: float = 2.0) -> None:
    """Cut every line of ``ax`` where it passes through one of ``texts`` (padded by ``pad_px``), so that no line
    covers a value; markers stay. The layout is computed first and then frozen, so the texts' boxes are the
    ones saved. Segments are clipped against each box exactly (Liang–Barsky) in display coordinates."""
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    boxes = [t.get_window_extent(renderer).padded(pad_px) for t in texts if t.get_text()]
    fig.set_layout_engine("none")  # what was measured is what is saved
    to_display = ax.transData.transform
    for line in ax.lines:
        if line.get_transform() != ax.transData or line.get_linestyle() in ("None", "none", "", " "):
            continue
        xy = np.column_stack([np.asarray(a, dtype=float) for a in line.get_data()])
        if len(xy) < 2:
            continue
        points = to_display(xy)
        pieces, cut_any = [], False
        for k in range(len(xy) - 1):  # the affine transform keeps the parameter t: cut in pixels, build in data
            keep = [(0.0, 1.0)]
            for box in boxes:
                cut = _segment_in_box(points[k], points[k + 1], box)
                if cut is not None:
                    cut_any = True
                    keep = [part for lo, hi in keep for part in ((lo, min(hi, cut[0])), (max(lo, cut[1]), hi))
                            if part[1] - part[0] > 1e-9]
            pieces += [(k, lo, hi) for lo, hi in keep]
        if not cut_any:
            continue
        path: list[np.ndarray] = []
        marks: list[int] = []
        for k, lo, hi in pieces:  # NaN between pieces: matplotlib breaks the line there
            start, end = xy[k] + (xy[k + 1] - xy[k]) * lo, xy[k] + (xy[k + 1] - xy[k]) * hi
            if not (path and np.array_equal(path[-1], start)):
                path += [np.array([np.nan, np.nan])] * bool(path) + [start]
            if lo == 0.0:  # an original vertex: its marker stays
                marks.append(len(path) - 1)
            path.append(end)
            if hi == 1.0 and k == len(xy) - 2:
                marks.append(len(path) - 1)
        data = np.array(path)
        line.set_data(data[:, 0], data[:, 1])
        line.set_markevery(sorted(set(marks)))


def _segment_in_box(a, b, box) -> tuple[float, float] | None:
    """The parameter interval [t0, t1] ⊂ [0, 1] of the segment a→b inside ``box`` (display units), or None."""
    t0, t1 = 0.0, 1.0
    d = b - a
    for p, q in ((-d[0], a[0] - box.x0), (d[0], box.x1 - a[0]), (-d[1], a[1] - box.y0), (d[1], box.y1 - a[1])):
        if p == 0:
            if q < 0:
                return None
            continue
        t = q / p
        if p < 0:
            t0 = max(t0, t)
        else:
            t1 = min(t1, t)
        if t0 > t1:
            return None
    return t0, t1


def batch_row(bss, b: float) -> float:
    """A batch size's position on the heatmap's row axis: log-interpolated between rows, extrapolated
    beyond them with the mean log step."""
    logs = np.log(np.asarray(bss, dtype=float))
    step = np.diff(logs).mean() if len(logs) > 1 else 1.0
    if b <= bss[0]:
        return float((np.log(b) - logs[0]) / step)
    if b >= bss[-1]:
        return float(len(bss) - 1 + (np.log(b) - logs[-1]) / step)
    return float(np.interp(np.log(b), logs, np.arange(len(bss))))


def _critical_batch_marks(ax, grid: Grid, bss) -> None:
    """Predicted (median B_simple) and measured critical batch sizes as horizontal lines on the batch axis;
    a prediction beyond the grid sits on its edge, with an arrow in its label."""
    if is_missing(grid.noise_scale):
        return
    nr, nc = len(bss), grid.values.shape[1]  # lines in data coordinates: cut where they pass a value
    measured = grid.measured_critical_batch()
    at: float
    if measured is not None:
        at = list(bss).index(measured)
        ax.plot([-0.5, nc - 0.5], [at, at], color="#ff7f0e", linestyle="-.", linewidth=2.0, zorder=7,
                label=f"measured critical batch: {measured} ({CRITICAL_FRACTION:.0%} of gain)")
    row = batch_row(bss, grid.noise_scale)
    off = " (below the grid)" if row < -0.5 else " (above the grid)" if row > nr - 0.5 else ""
    at = min(max(row, -0.45), nr - 0.55)
    ax.plot([-0.5, nc - 0.5], [at, at], color="#e377c2", linestyle="-",
            linewidth=2.4, zorder=7, label=f"predicted critical batch B_simple ≈ {fmt_num(grid.noise_scale, 3)}"
               f"{off}")


# ---- per-batch-size tuning against an lr-scaling rule (a named recipe, optbench.recipes, or --lr-scaling) ----

RULE_COLORS = ("#0072B2", "#D55E00", "#009E73", "#CC79A7")


def write_comparison(comp: RuleComparison, out: Path) -> tuple[Path, str]:
    """CSV (tidy, every base lr) and a Markdown table (per batch size: tuned, the chosen base lr, the others)."""
    title = METRICS[comp.tuned.metric][0]
    stem = file_stem(out, "rule", comp.tuned.problem, comp.tuned.optimizer, comp.name, comp.tuned.metric)
    csv = stem.with_suffix(".csv")
    table = comparison_table(comp)
    table.to_csv(csv, index=False, float_format="%.17g")
    vs, vs_base = ("− tuned", "− at B₀") if comp.tuned.higher_is_better else ("× tuned", "× at B₀")
    others = [b for b in comp.values.columns if b != comp.base_lr]
    head = ["batch size", "tuned lr", f"tuned {title}", f"{comp.name} lr", f"{comp.name} {title}", vs, vs_base]
    head += [f"η₀ = {fmt_num(b, 3)}: {title}" for b in others]
    tuned = comp.tuned_best()

    def cell(b, base) -> str:
        if b not in comp.values.index or is_missing(comp.values.loc[b, base]) \
                and is_missing(comp.diverged.loc[b, base]):
            return "—"
        if comp.diverged.loc[b, base] >= MAJORITY_DIVERGED:
            return "diverged"
        if comp.reached is None or comp.seeds is None:  # set together (steps to target)
            return fmt_num(comp.values.loc[b, base], 3)
        return format_steps(comp.values.loc[b, base], int(comp.reached.loc[b, base]), int(comp.seeds.loc[b, base]),
                            lambda x: fmt_num(x, 3))

    lines = ["| " + " | ".join(head) + " |", "|" + "---:|" * len(head)]
    for b in comp.values.index.union(tuned.index):
        t_lr, t_v = (tuned.loc[b, "lr"], tuned.loc[b, "value"]) if b in tuned.index else (np.nan, np.nan)
        rule_v = comp.values.loc[b, comp.base_lr] if b in comp.values.index else np.nan
        div = b in comp.values.index and comp.diverged.loc[b, comp.base_lr] >= MAJORITY_DIVERGED
        rels = [np.nan if div else comp.relative(rule_v, ref) for ref in (t_v, comp.base_value())]
        rel_texts = ["—" if is_missing(r) else (fmt_num(r, 3) if comp.tuned.higher_is_better else f"{r:.2f}×")
                     for r in rels]
        lr_text = fmt_num(comp.lrs.loc[b, comp.base_lr], 3) if b in comp.values.index else "—"
        cells = [str(int(b)), fmt_num(t_lr, 3) if not is_missing(t_lr) else "—",
                 fmt_num(t_v, 3) if not is_missing(t_v) else "—",
                 lr_text, cell(b, comp.base_lr), *rel_texts] + [cell(b, o) for o in others]
        lines.append("| " + " | ".join(cells) + " |")
    return csv, "\n".join(lines) + "\n"


def comparison_caption(comp: RuleComparison, label=str) -> str:
    """One line on a comparison; ``label`` turns a full optimizer label into the one shown (a display label)."""
    holds, keeps, tol = comp.holds_up_to("tuned"), comp.holds_up_to("base"), f"{RULE_TOLERANCE:g}×"
    where = "" if comp.tuned.higher_is_better else (
        (f"; within {tol} of tuned up to B = {holds}" if holds is not None else
         f"; more than {tol} worse than tuned already at B₀")
        + (f"; keeps its B₀ value (within {tol}) up to B = {keeps}" if keeps is not None else ""))
    return (f"{comp.tuned.problem}, {label(comp.tuned.optimizer)}: tuned per batch size vs {comp.name} "
            f"(lr = {comp.formula}, B₀ = {comp.base_batch_size}, η₀ = {fmt_num(comp.base_lr, 3)}: best at B₀{where})")


def comparison_figure(comps: list[RuleComparison], out: Path, *, formats, dpi: int, label=str) -> list[Path]:
    """Per problem: one panel per optimizer, the metric against the batch size (log-log for losses and steps):
    the tuned optimum at each batch size (black), each rule at its chosen base lr (solid) and at the other
    base lrs (thin, dashed, labelled at their right end); × on the top edge: that batch size diverged. The
    panels share one y scale; ``label`` gives each panel's optimizer as shown (a display label)."""
    from matplotlib import ticker
    from matplotlib.lines import Line2D

    plt = pyplot()
    problem = comps[0].tuned.problem
    panels = list(dict.fromkeys(c.tuned.optimizer for c in comps))
    metric, title = comps[0].tuned.metric, METRICS[comps[0].tuned.metric][0]
    f_min = comps[0].tuned.f_min
    gap = metric in ("final_loss", "best_loss") and not is_missing(f_min) and f_min != 0
    shift = f_min if metric in ("final_loss", "best_loss") and not is_missing(f_min) else 0.0
    fig, axes = plt.subplots(1, len(panels), figsize=(max(6.4, 4.3 * len(panels)), 4.6), dpi=dpi, sharey=True,
                             squeeze=False)
    names = list(dict.fromkeys(c.name for c in comps))
    colors = {n: RULE_COLORS[i % len(RULE_COLORS)] for i, n in enumerate(names)}
    all_values, labels = [], []
    for ax, panel in zip(axes[0], panels):
        mine = [c for c in comps if c.tuned.optimizer == panel]
        tuned = mine[0].tuned_best().dropna(subset=["value"])
        ax.plot(tuned.index, tuned["value"] - shift, color="black", marker="o", linewidth=2.0, zorder=5)
        all_values += list(tuned["value"] - shift)
        for comp in mine:
            color = colors[comp.name]
            for base in comp.values.columns:
                ok = comp.diverged[base] < MAJORITY_DIVERGED
                v = (comp.values[base] - shift).where(ok & np.isfinite(comp.values[base]))  # ∞: never reached
                chosen = base == comp.base_lr
                ax.plot(v.index, v, color=color, marker="s" if chosen else None, markersize=5,
                        linewidth=2.0 if chosen else 0.9, linestyle="-" if chosen else "--",
                        alpha=1.0 if chosen else 0.55, zorder=4 if chosen else 3)
                all_values += list(v.dropna())
                last = v.dropna()
                if len(last):  # each line named by its base lr at its right end (placed once the scale is set)
                    labels.append((ax, last.index[-1], last.iloc[-1], f"η₀={fmt_num(base, 2)}", color, chosen))
                div = comp.diverged[base][comp.diverged[base] >= MAJORITY_DIVERGED].index
                if len(div):
                    ax.plot(div, [0.97] * len(div), linestyle="none", marker="x", markersize=7 if chosen else 5,
                            color=color, alpha=1.0 if chosen else 0.55, transform=ax.get_xaxis_transform(),
                            clip_on=False, zorder=6)
            ax.axvline(comp.base_batch_size, color="#888888", linestyle=":", linewidth=1.0, zorder=1)
            if not is_missing(comp.base_value()):  # the rule's promise: the value it reached at B₀
                ax.axhline(comp.base_value() - shift, color=color, linestyle=":", linewidth=1.1, alpha=0.8, zorder=2)
            ax.text(comp.base_batch_size, 0.02, " B₀", transform=ax.get_xaxis_transform(), fontsize=8,
                    color="#555555", ha="left", va="bottom")
        bss = sorted(set(tuned.index) | {b for c in mine for b in c.values.index})
        ax.set_xscale("log", base=2)
        ax.set_xticks(bss, [str(b) for b in bss])
        ax.xaxis.set_minor_locator(ticker.NullLocator())
        ax.set_xlabel("batch size B (log scale)")
        ax.set_title(label(panel), fontsize=10)
    finite = np.array([v for v in all_values if np.isfinite(v)])
    log_y = metric != "test_acc" and len(finite) and (finite > 0).all()
    if log_y:
        axes[0][0].set_yscale("log")
    axes[0][0].set_ylabel(f"{title} {'− f* ' if gap else ''}(median over seeds{', log scale' if log_y else ''})")
    _end_labels(labels, dpi)
    handles = [Line2D([], [], color="black", marker="o", linewidth=2.0, label="tuned: best lr of the grid at each B")]
    for name in names:
        comp = next(c for c in comps if c.name == name)
        handles.append(Line2D([], [], color=colors[name], marker="s", linewidth=2.0,
                              label=f"{name}: lr = {comp.formula}, η₀ = the best at B₀ (grey line)"))
        handles.append(Line2D([], [], color=colors[name], linestyle="--", linewidth=0.9, alpha=0.55,
                              label=f"{name}: other base lrs η₀"))
        handles.append(Line2D([], [], color=colors[name], linestyle=":", linewidth=1.1, alpha=0.8,
                              label=f"{name}: its value at B₀, which the rule aims to keep"))
    handles.append(Line2D([], [], color="#444444", marker="x", linestyle="none", label="diverged at that B"))
    fig.legend(handles=handles, loc="outside lower center", ncol=2, fontsize=8, frameon=False)
    fig.suptitle(f"{problem}: {title}, tuned per batch size vs lr-scaling recipe", fontsize=11)
    return save(fig, file_stem(out, "rule", problem, metric), formats, dpi)


def _end_labels(labels, dpi: int, gap_pt: float = 8.5) -> None:
    """Write line-end labels (ax, x, y, text, colour, bold), pushed apart vertically where lines end close
    together, so none overlaps another."""
    groups: dict[tuple, list] = {}
    for item in labels:
        groups.setdefault((id(item[0]), item[1]), []).append(item)
    for items in groups.values():
        ax = items[0][0]
        ax.autoscale_view()
        pts = [ax.transData.transform((x, y))[1] * 72 / dpi for _, x, y, *_ in items]
        order = np.argsort(pts)
        placed = list(np.asarray(pts)[order])
        for i in range(1, len(placed)):  # upward sweep, then centre the group on where it started
            placed[i] = max(placed[i], placed[i - 1] + gap_pt)
        shift = (np.mean(placed) - np.mean(np.asarray(pts)[order])) if len(placed) > 1 else 0.0
        for k, j in enumerate(order):
            _, x, y, text, color, bold = items[j]
            ax.annotate(text, (x, y), xytext=(4, placed[k] - shift - pts[j]), textcoords="offset points",
                        fontsize=7.5 if bold else 7, color=color, va="center", alpha=1.0 if bold else 0.8,
                        fontweight="bold" if bold else "normal")


# ---- the figure: bs × lr heatmaps and tables, and the tuned-vs-recipe comparison -----------------------------

@figure("grids", doc="batch size × learning rate heatmaps and tables, scaling rules against tuning", needs=None)
def grids_section(report) -> list:
    """Tables always; heatmaps and comparison figures where a static format is asked for."""
    from optbench.report.page import Section

    summary = with_test_acc(report.data.summary, report.data.steps)
    found = grids(summary, report.metric)
    if not found:
        return []
    section = Section(f"Batch size × learning rate: {METRICS[report.metric][0]}",
                      note="Median over seeds; red frame / bold: best cell; hatched / 'diverged': most seeds "
                           "diverged; red line: best lr per batch size, against the linear and square-root "
                           "scaling rules." + (" Steps to target: " + grid_caption(found[0]) + "."
                                               if report.metric in CENSORED else ""))
    comps = rule_comparisons(summary, found)
    if comps:
        section.note += " White diamonds: the lr a scaling recipe used at each batch size (η₀ best at B₀)."
    compared = {(c.tuned.problem, c.rule) for c in comps}  # shown in the comparison below, every base lr
    drawn = [grid for grid in found if (grid.problem, grid.optimizer) not in compared]
    scales = {problem: color_scale([grid for grid in drawn if grid.problem == problem])
              for problem in dict.fromkeys(grid.problem for grid in drawn)} if report.heatmap_scale == "shared" \
        else {}
    if any(s is not None and s.shared > 1 for s in scales.values()):
        section.note += (" The heatmaps of one problem share one colour scale ('report --heatmap-scale each': "
                         "one scale per heatmap).")
    for grid in drawn:
        csv, _md_path, md = write_tables(grid, report.table_dir)
        shown = report.data.short(grid.optimizer)
        if report.static:
            rules = [c for c in comps if c.tuned is grid]
            section.figures += heatmap(grid, report.fig_dir, formats=report.static, dpi=report.dpi, rules=rules,
                                       scale=scales.get(grid.problem), title=shown)
        section.tables.append((f"{grid.problem}, {shown}", csv, md))
    return [section] + _rule_comparison_sections(report, comps)


def _rule_comparison_sections(report, comps) -> list:
    """Per-batch-size tuning against an lr-scaling recipe, when the results hold both."""
    from optbench.report.page import Section

    if not comps:
        return []
    title = METRICS[comps[0].tuned.metric][0]
    section = Section(
        "Batch size: tuned per batch size vs lr-scaling recipe",
        note=f"Black: the best {title} over the lr grid at each batch size (the lr tuned per batch size). "
             "Colour: the recipe's runs, lr = η₀·(B/B₀)^p (with its warm-up), solid for the base lr η₀ that is "
             "best at the base batch size B₀ (the recipe as practised: tune at B₀, then scale), dashed for the "
             "other base lrs, dotted at the recipe's own value at B₀ (which the rule aims to keep); ×: "
             f"diverged. Tables: '× tuned' is the recipe's {title} (above f*) over the tuned one, 1.00× where "
             "the rule lands on the tuned optimum; '× at B₀' over its own value at B₀.")
    for problem in dict.fromkeys(c.tuned.problem for c in comps):
        mine = [c for c in comps if c.tuned.problem == problem]
        if report.static:
            section.figures += comparison_figure(mine, report.fig_dir, formats=report.static, dpi=report.dpi,
                                                 label=report.data.short)
        for comp in mine:
            csv, md = write_comparison(comp, report.table_dir)
            section.tables.append((comparison_caption(comp, label=report.data.short), csv, md))
    return [section]
