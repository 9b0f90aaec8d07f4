"""Learning-rate sensitivity: final (or best) loss against learning rate per optimizer, divergence shown."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from optbench.formatting import is_missing
from optbench.report.data import ReportData, has_bs
from optbench.report.figures import STATIC, figure
from optbench.report.style import DIVERGED_COLOR, DIVERGED_MARKER, FIG_SIZE, fit_legend, pyplot, safe_name, save  # noqa: E501

# escaped runs: a down arrow (no optimizer's marker; left the box, unbounded below) in a colour no optimizer has
ESCAPED_MARKER, ESCAPED_COLOR = r"$\downarrow$", "#E6007E"


def sensitivity(data: ReportData, family: str, out: Path, *, formats, dpi: int, metric: str = "final_loss",
                title: str | None = None) -> list[Path]:
    """Median over seeds of ``metric`` against lr, log–log; one panel per batch size.

    A configuration where most seeds diverged is drawn as an X on a grey 'diverged' band at the top of the
    axis, one where some seeds diverged as a hollow marker: divergent runs are never dropped silently. On a
    problem without a minimum, a configuration where most seeds escaped (left the escape box, status
    ``escaped``) keeps its point, the loss where its runs left the box, marked by a down arrow beneath it
    (``ESCAPED_MARKER``): that loss says where a run stopped, not how good it is.
    """
    from matplotlib import transforms

    metric = metric if metric in ("final_loss", "best_loss") else "final_loss"
    t = data.table_all[data.table_all["family"] == family].copy()
    if not applies(t):
        return []
    plt = pyplot()
    f_min = float(t["f_min"].iloc[0])
    t["y"] = t[metric] - (f_min if not is_missing(f_min) else 0.0)
    finite = t["y"][np.isfinite(t["y"])]
    bounded = not is_missing(f_min) or bool(len(finite) and (finite > 0).all())  # log axis where the values allow
    batch_sizes = list(dict.fromkeys(t["batch_size"].tolist()))
    batch_sizes = sorted(batch_sizes, key=lambda b: -1 if not has_bs(b) else int(b))
    n = len(batch_sizes)
    ncols = min(n, 4)
    nrows = -(-n // ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(FIG_SIZE[0] if n == 1 else 3.0 * ncols + 0.8,
                                                     FIG_SIZE[1] if n == 1 else 2.9 * nrows + 1.0),
                             dpi=dpi, sharey=True, squeeze=False)
    ok_y = t.loc[t["diverged"] * 2 < t["seeds"], "y"]
    ok_y = ok_y[np.isfinite(ok_y)]
    if bounded:
        ok_y = ok_y[ok_y > 0]
        y_lo = float(ok_y.min()) / 3 if len(ok_y) else 1e-8
        y_hi = float(ok_y.max()) * 3 if len(ok_y) else 1.0
        decades = max(np.log10(y_hi / y_lo), 1.0)
        band_lo = y_hi * 10 ** (0.03 * decades)  # the 'diverged' band: about a seventh of the axis, any range
        top = band_lo * 10 ** (0.15 * decades)
    else:
        y_lo = float(ok_y.min()) if len(ok_y) else -1.0
        y_hi = float(ok_y.max()) if len(ok_y) else 1.0
        span = max(y_hi - y_lo, 1e-3)
        y_lo, band_lo, top = y_lo - 0.05 * span, y_hi + 0.1 * span, y_hi + 0.4 * span
        y_hi = band_lo
    any_div = bool((t["diverged"] > 0).any() or (~np.isfinite(t["y"])).any())
    if not any_div:
        top = y_hi
    handles: dict[str, Any] = {}  # optimizer label → its legend line
    any_escaped = False
    for ax, bs in zip(axes.flat, batch_sizes):
        g = t[(t["batch_size"].isna()) if not has_bs(bs) else (t["batch_size"] == bs).fillna(False)]
        if any_div:
            ax.axhspan(band_lo, top, color=DIVERGED_COLOR, alpha=0.35, linewidth=0)
        labels = sorted(g["optimizer_label"].unique())
        for k, label in enumerate(labels):
            st = data.styles[label]
            r = g[g["optimizer_label"] == label].sort_values("lr")
            diverged = (r["diverged"] * 2 >= r["seeds"]) | ~np.isfinite(r["y"])
            partial = (r["diverged"] > 0) & ~diverged
            ok = r[~diverged]
            (line,) = ax.plot(ok["lr"], ok["y"], color=st.color, marker=st.marker, markersize=6,
                              markeredgecolor="black", markeredgewidth=0.5, linewidth=1.6, label=data.short(label))
            handles.setdefault(label, line)
            if partial.any():
                p = r[partial]
                ax.plot(p["lr"], p["y"], linestyle="none", marker=st.marker, markersize=11,
                        markerfacecolor="none", markeredgecolor="red", markeredgewidth=1.2)
            escaped = (r["escaped"] * 2 >= r["seeds"]) & (r["escaped"] > 0) & ~diverged
            if escaped.any():
                e = r[escaped]
                # beneath the point, in points (the same offset on linear and log axes)
                offset = transforms.offset_copy(ax.transData, fig=fig, y=-11, units="points")
                ax.plot(e["lr"], e["y"], linestyle="none", marker=ESCAPED_MARKER, markersize=13,
                        color=ESCAPED_COLOR, zorder=4, gid="escaped", transform=offset, clip_on=False)
                any_escaped = True
            if diverged.any():
                d = r[diverged]
                # staggered inside the band so that optimizers diverging at the same lr stay visible
                frac = (k + 0.5) / len(labels)
                y = band_lo * (top / band_lo) ** (0.15 + 0.7 * frac) if bounded else \
                    band_lo + (top - band_lo) * (0.15 + 0.7 * frac)
                ax.plot(d["lr"], np.full(len(d), y), linestyle="none", marker=DIVERGED_MARKER, markersize=9,
                        color=st.color, markeredgecolor="black", markeredgewidth=0.6)
        ax.set_xscale("log")
        if bounded:
            ax.set_yscale("log")
        ax.set_ylim(y_lo, top)
        ax.set_xlabel("learning rate")
        if has_bs(bs) and n > 1:
            ax.set_title(f"batch size {int(bs)}", fontsize=10)
    for ax in axes.flat[n:]:
        ax.set_visible(False)
    what = "final" if metric == "final_loss" else "best"
    for ax in axes[:, 0]:
        ax.set_ylabel(f"{what} loss − f*" if not is_missing(f_min) else f"{what} loss")
    seeds = int(t["seeds"].max())
    note = f" (median over {seeds} seeds)" if seeds > 1 else ""
    fig.suptitle(f"{title or family}: learning-rate sensitivity{note}", fontsize=11)
    from matplotlib.lines import Line2D

    keys = [Line2D([], [], linestyle="none", marker=DIVERGED_MARKER, markersize=8, color="#777777",
                   markeredgecolor="black", label="diverged (most seeds; grey band)"),
            Line2D([], [], linestyle="none", marker="o", markersize=9, markerfacecolor="none", markeredgecolor="red",
                   label="some seeds diverged")]
    keys = keys if any_div else []
    if any_escaped:
        keys.append(Line2D([], [], linestyle="none", marker=ESCAPED_MARKER, markersize=11, color=ESCAPED_COLOR,
                           label="escaped (left the box there)"))
    fit_legend(fig, list(handles.values()) + keys, max_cols=3 if n == 1 else 5)
    return save(fig, out / f"sensitivity_{safe_name(family)}", formats, dpi)


def applies(table) -> bool:
    """A sensitivity curve needs several learning rates: some optimizer at some batch size has more than one
    (tuned results hold one configuration per optimizer, which would draw one point each)."""
    if table.empty:
        return False
    counts = table.groupby(["optimizer_label", "batch_size"], dropna=False)["lr"].nunique()
    return bool((counts > 1).any())


@figure("sensitivity", doc="the metric against the learning rate, per problem", needs=STATIC)
def sensitivity_section(report) -> list:
    from optbench.report.page import Section

    files = []
    for problem in report.data.families:
        files += sensitivity(report.data, problem, report.fig_dir, formats=report.static, dpi=report.dpi,
                             metric=report.metric, title=report.title_for(problem))
    return [Section("Learning-rate sensitivity", files)]
