"""Batch size × learning rate: a table per (problem, optimizer) of one metric, as CSV, Markdown and heatmap.

Each cell is the median over seeds (for steps to target: over the seeds that reached it, as in the
comparison table). The best cell is framed, cells where most seeds diverged are hatched, and the best
learning rate of each batch size is traced next to the linear (lr ∝ B) and square-root (lr ∝ √B)
scaling rules anchored at the smallest batch size.

When the runs carry gradient-noise-scale estimates (``optbench run --noise-scale-every N``, summary column
``noise_scale``), the predicted critical batch size, the median B_simple over the runs of the grid that did not
diverge (McCandlish et al. 2018), is drawn on the batch-size axis next to the measured one: the smallest
batch size whose best value over learning rates achieves 90% of the improvement from the smallest batch size
to the best one (``CRITICAL_FRACTION``; on a log scale for losses and steps), i.e. where larger batches stop
paying off.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from optbench.report.style import DIVERGED_COLOR, fmt_num, pyplot, safe_name, save

METRICS = {  # name: (column title, higher is better)
    "final_loss": ("final loss", False),
    "best_loss": ("best loss", False),
    "steps_to_target": ("steps to target", False),
    "test_acc": ("test accuracy", True),
}
CRITICAL_FRACTION = 0.9  # measured critical batch size: the first to achieve this fraction of the gain


@dataclass
class Grid:
    problem: str
    optimizer: str
    metric: str
    values: pd.DataFrame  # index: batch size, columns: lr
    diverged: pd.DataFrame  # fraction of seeds that diverged, same shape
    f_min: float
    noise_scale: float = float("nan")  # predicted critical batch size: median B_simple of the runs (or NaN)

    @property
    def higher_is_better(self) -> bool:
        return METRICS[self.metric][1]

    def best_cell(self):
        """(batch size, lr) of the best cell among those where most seeds did not diverge, or None."""
        v = self.values.where(self.diverged < 0.5)
        stacked = v.stack().dropna()
        if stacked.empty:
            return None
        return stacked.idxmax() if self.higher_is_better else stacked.idxmin()

    def best_lr_per_batch(self) -> pd.Series:
        v = self.values.where(self.diverged < 0.5)
        v = v[v.notna().any(axis=1)]  # batch sizes where nothing reached / everything diverged have no best
        return v.idxmax(axis=1) if self.higher_is_better else v.idxmin(axis=1)

    def measured_critical_batch(self):
        """The smallest batch size whose best value over learning rates achieves ``CRITICAL_FRACTION`` of the
        improvement from the smallest batch size to the best one; None with fewer than two batch sizes."""
        v = self.values.where(self.diverged < 0.5)
        best = (v.max(axis=1) if self.higher_is_better else v.min(axis=1)).dropna()
        if len(best) < 2:
            return None
        m = best.to_numpy(dtype=float)
        if self.metric != "test_acc":
            m = m - self.f_min if self.metric in ("final_loss", "best_loss") and self.f_min == self.f_min else m
            m = np.log(m) if (m > 0).all() else m
        gain = (m - m[0]) if self.higher_is_better else (m[0] - m)
        if not gain.max() > 0:
            return int(best.index[0])
        return int(best.index[np.argmax(gain >= CRITICAL_FRACTION * gain.max())])


def with_test_acc(summary, steps):
    """The summary plus ``test_acc``: each run's last evaluated test accuracy (when the problem has one)."""
    if "test_acc" not in steps.columns:
        return summary
    last = steps.dropna(subset=["test_acc"]).sort_values("step").groupby("run_id")["test_acc"].last()
    return summary.assign(test_acc=summary["run_id"].map(last))


def sweeps_both(summary) -> bool:
    return summary["batch_size"].nunique() > 1 and summary["lr"].nunique() > 1


def grids(summary, metric: str) -> list[Grid]:
    """Every (problem, optimizer) whose runs sweep both batch size and learning rate."""
    out = []
    for (problem, label), g in summary.groupby(["family", "optimizer_label"], sort=True):
        if not sweeps_both(g) or metric not in g.columns:
            continue
        g = g.assign(batch_size=g["batch_size"].astype("int64"), div=(g["status"] == "diverged").astype(float))
        cells = g.groupby(["batch_size", "lr"])
        values = cells[metric].median().unstack("lr").sort_index().sort_index(axis=1)
        diverged = cells["div"].mean().unstack("lr").reindex_like(values)
        noise = g.loc[g["status"] != "diverged", "noise_scale"].astype(float) if "noise_scale" in g.columns \
            else pd.Series(dtype=float)
        noise = noise[np.isfinite(noise)]
        out.append(Grid(problem, label, metric, values, diverged, float(g["f_min"].iloc[0]),
                        float(noise.median()) if len(noise) else float("nan")))
    return out


def write_tables(grid: Grid, out: Path) -> tuple[Path, Path, str]:
    """CSV (numbers) and Markdown (formatted, best in bold, diverged marked); returns paths and the Markdown."""
    stem = out / f"grid_{safe_name(grid.problem)}_{safe_name(grid.optimizer)}_{grid.metric}"
    csv = stem.with_suffix(".csv")
    grid.values.to_csv(csv, float_format="%.10g")
    best = grid.best_cell()
    lines = ["| batch size \\ lr | " + " | ".join(fmt_num(c, 3) for c in grid.values.columns) + " |",
             "|---:|" + "---:|" * len(grid.values.columns)]
    for bs, row in grid.values.iterrows():
        cells = []
        for lr, v in row.items():
            frac = grid.diverged.loc[bs, lr]
            text = "diverged" if frac >= 0.5 else fmt_num(v, 3)
            if 0 < frac < 0.5:
                text += f" ({frac:.0%} div.)"
            if best is not None and (bs, lr) == best:
                text = f"**{text}**"
            cells.append(text)
        lines.append(f"| {bs} | " + " | ".join(cells) + " |")
    md_text = "\n".join(lines) + "\n"
    md = stem.with_suffix(".md")
    md.write_text(f"{grid.problem}, {grid.optimizer}: {METRICS[grid.metric][0]} (median over seeds; "
                  f"bold: best)\n\n{md_text}")
    return csv, md, md_text


def heatmap(grid: Grid, out: Path, *, formats, dpi: int, style=None) -> list[Path]:
    """The table as an annotated heatmap, best cell framed, diverged cells hatched, scaling rules traced."""
    from matplotlib import colors
    from matplotlib.patches import Rectangle

    plt = pyplot()
    v = grid.values.to_numpy(dtype=float)
    div = grid.diverged.to_numpy(dtype=float) >= 0.5
    lrs, bss = grid.values.columns.to_numpy(dtype=float), grid.values.index.to_numpy()
    loss_like = grid.metric in ("final_loss", "best_loss")
    shown = v - grid.f_min if loss_like and grid.f_min == grid.f_min else v.copy()
    shown = np.where(div | ~np.isfinite(shown), np.nan, shown)
    finite = shown[np.isfinite(shown)]
    use_log = grid.metric != "test_acc" and len(finite) and (finite > 0).all()
    norm = colors.LogNorm(finite.min(), finite.max()) if use_log and finite.min() < finite.max() else None
    cmap = plt.get_cmap("viridis" if grid.higher_is_better else "viridis_r").with_extremes(bad="white")
    nr, nc = v.shape
    min_width = 5.5 if grid.noise_scale != grid.noise_scale else 7.5  # room for the critical-batch legend
    fig, ax = plt.subplots(figsize=(max(min_width, 0.7 * nc + 2.6), max(3.0, 0.55 * nr + 1.9)), dpi=dpi)
    im = ax.imshow(np.ma.masked_invalid(shown), cmap=cmap, norm=norm, aspect="auto", origin="lower")
    cbar = fig.colorbar(im, ax=ax, pad=0.02)
    if norm is not None:  # 1-2-5 ticks with plain labels: readable where a range spans less than a decade
        from matplotlib import ticker

        cbar.ax.yaxis.set_major_locator(ticker.LogLocator(subs=(1.0, 2.0, 5.0)))
        cbar.ax.yaxis.set_major_formatter(ticker.FuncFormatter(lambda x, _: fmt_num(x, 2)))
        cbar.ax.yaxis.set_minor_formatter(ticker.NullFormatter())
    unit = "− f*" if loss_like and grid.f_min == grid.f_min and grid.f_min != 0 else ""
    cbar.set_label(f"{METRICS[grid.metric][0]} {unit}".strip())
    for i in range(nr):
        for j in range(nc):
            if div[i, j]:
                ax.add_patch(Rectangle((j - 0.5, i - 0.5), 1, 1, facecolor=DIVERGED_COLOR, hatch="xx",
                                       edgecolor="white", linewidth=0))
                ax.text(j, i + 0.22, "div.", ha="center", va="center", fontsize=7.5, color="black")
                continue
            if not np.isfinite(shown[i, j]):
                ax.text(j, i + 0.22, "—", ha="center", va="center", fontsize=8, color="#444444")
                continue
            rgba = cmap(norm(shown[i, j]) if norm is not None else im.norm(shown[i, j]))
            dark = 0.299 * rgba[0] + 0.587 * rgba[1] + 0.114 * rgba[2] < 0.5
            # values sit in the upper part of the cell, the traced lines run through its centre
            ax.text(j, i + 0.22, fmt_num(v[i, j], 2), ha="center", va="center", fontsize=7.5,
                    color="white" if dark else "black")
    best = grid.best_cell()
    if best is not None:
        i, j = list(bss).index(best[0]), list(lrs).index(best[1])
        ax.add_patch(Rectangle((j - 0.5, i - 0.5), 1, 1, fill=False, edgecolor="red", linewidth=2.2, zorder=5))
    per_bs = grid.best_lr_per_batch()
    if len(per_bs) >= 2:
        rows = np.array([list(bss).index(b) for b in per_bs.index])
        cols = np.array([list(lrs).index(lr) for lr in per_bs.to_numpy()])
        ax.plot(cols, rows, color="red", marker="o", markersize=5, linewidth=1.5, zorder=6,
                label="best lr per batch size")
        log_lrs = np.log(lrs)
        step = np.diff(log_lrs).mean() if nc > 1 else 1.0

        def col_of(lr):  # lr → column position, extrapolated on the log grid
            return (np.log(lr) - log_lrs[0]) / step

        b0, lr0 = per_bs.index[0], per_bs.iloc[0]
        ys = np.arange(nr)
        for power, ls, name in ((1.0, "--", "linear: lr ∝ B"), (0.5, ":", "square root: lr ∝ √B")):
            ax.plot(col_of(lr0 * (bss / b0) ** power), ys, color="black", linestyle=ls, linewidth=1.3, zorder=6,
                    label=name)
    _critical_batch_marks(ax, grid, bss)
    handles, labels = ax.get_legend_handles_labels()
    if handles:
        # below the axes, outside: constrained layout reserves the room, so the rotated lr ticks and the
        # axis label never collide with it, whatever the number of rows
        fig.legend(handles, labels, loc="outside lower center",
                   ncol=2 if grid.noise_scale == grid.noise_scale else 3, fontsize=8, frameon=False)
    ax.set_xlim(-0.5, nc - 0.5)
    ax.set_ylim(-0.5, nr - 0.5)
    ax.set_xticks(range(nc), [fmt_num(x, 2) for x in lrs], rotation=45, ha="right")
    ax.set_yticks(range(nr), [str(b) for b in bss])
    ax.set_xlabel("learning rate")
    ax.set_ylabel("batch size")
    ax.grid(False)
    for side in ("top", "right"):
        ax.spines[side].set_visible(True)
    missing = "; —: not reached" if grid.metric == "steps_to_target" else ""
    ax.set_title(f"{grid.problem} · {grid.optimizer}: {METRICS[grid.metric][0]} (red frame: best{missing})",
                 fontsize=10)
    stem = out / f"grid_{safe_name(grid.problem)}_{safe_name(grid.optimizer)}_{grid.metric}"
    return save(fig, stem, formats, dpi)


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
    if grid.noise_scale != grid.noise_scale:
        return
    nr = len(bss)
    measured = grid.measured_critical_batch()
    if measured is not None:
        ax.axhline(list(bss).index(measured), color="#ff7f0e", linestyle="-.", linewidth=2.0, zorder=7,
                   label=f"measured critical batch: {measured} ({CRITICAL_FRACTION:.0%} of gain)")
    row = batch_row(bss, grid.noise_scale)
    off = " (below the grid)" if row < -0.5 else " (above the grid)" if row > nr - 0.5 else ""
    ax.axhline(min(max(row, -0.45), nr - 0.55), color="#e377c2", linestyle="-",
               linewidth=2.4, zorder=7, label=f"predicted critical batch B_simple ≈ {fmt_num(grid.noise_scale, 3)}"
               f"{off}")
