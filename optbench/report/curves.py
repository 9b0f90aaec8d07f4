"""Loss curves: loss (− f*) against step and against wall time, median over seeds with a min–max band."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from optbench.formatting import is_missing
from optbench.report.data import ReportData, best_configs, has_bs, runs_of
from optbench.report.figures import STATIC, figure
from optbench.report.style import DIVERGED_MARKER, FIG_WIDE, fit_legend, fmt_num, pyplot, safe_name, save

FLOOR = 1e-16  # gaps below this are drawn at it (log axes cannot show 0); the figure says so where it happens
FLOOR_MARKER = "v"  # where a curve first reaches the floor


def config_label(label: str, lr, batch_size=None) -> str:
    text = f"{label}, lr={fmt_num(lr, 3)}"
    if has_bs(batch_size):
        text += f", bs={int(batch_size)}"
    return text


def _series(steps, run_ids, f_min: float):
    """Per step: median, min and max over seeds of the loss gap, and the median wall time."""
    d = steps[steps["run_id"].isin(run_ids)]
    y = d["loss"] - (f_min if not is_missing(f_min) else 0.0)
    d = d.assign(y=y.where(np.isfinite(y)))
    loss = d.pivot_table(index="step", columns="run_id", values="y", aggfunc="first", dropna=False)
    wall = d.groupby("step")["wall_time_s"].median()
    return loss.index.to_numpy(), loss.median(axis=1), loss.min(axis=1), loss.max(axis=1), wall.reindex(loss.index)


def loss_curves(data: ReportData, family: str, out: Path, *, formats, dpi: int, all_lrs: bool,
                title: str | None = None) -> list[Path]:
    """One figure per problem: two panels (against step, against wall time), one colour per optimizer."""
    plt = pyplot()
    summary, steps = data.summary, data.steps
    f_min = float(summary.loc[summary["family"] == family, "f_min"].iloc[0])
    bounded = not is_missing(f_min)
    fig, (ax_s, ax_t) = plt.subplots(1, 2, figsize=FIG_WIDE, dpi=dpi, sharey=True)
    best = best_configs(data.table_all, family, data.rank_metric)
    seeds = int(summary.loc[summary["family"] == family, "seed"].nunique())
    handles = []
    floored = False
    lowest = np.inf  # a problem without known f* (networks) still gets a log axis when its losses are > 0
    for _, cfg in best.iterrows():
        label, st = cfg["optimizer_label"], data.styles[cfg["optimizer_label"]]
        configs = [cfg]
        if all_lrs:
            others = data.table_all[(data.table_all["family"] == family)
                                    & (data.table_all["optimizer_label"] == label)]
            configs += [r for _, r in others.iterrows() if (r["lr"], r["batch_size"]) != (cfg["lr"], cfg["batch_size"])]
        for j, c in enumerate(configs):
            runs = runs_of(summary, c["problem"], label, c["lr"], c["batch_size"])
            x, med, lo, hi, wall = _series(steps, runs["run_id"], f_min)
            main = j == 0
            below = (med < FLOOR).to_numpy() if bounded else np.zeros(len(med), bool)
            if bounded:
                med, lo, hi = (s.clip(lower=FLOOR) for s in (med, lo, hi))
            lowest = min(lowest, float(lo.min())) if lo.notna().any() else lowest
            kw = dict(color=st.color, linewidth=1.8 if main else 0.8, alpha=1.0 if main else 0.45)
            for ax, xs in ((ax_s, x), (ax_t, wall.to_numpy())):
                (line,) = ax.plot(xs, med, marker=st.marker if main else None, markevery=0.1, markersize=5,
                                  markeredgecolor="black", markeredgewidth=0.5, **kw)
                if main and seeds > 1:
                    ax.fill_between(xs, lo, hi, color=st.color, alpha=0.15, linewidth=0)
                diverged = (runs["status"] == "diverged").any()
                if diverged:
                    ok = med.notna().to_numpy()
                    if ok.any():
                        k = np.flatnonzero(ok)[-1]
                        ax.plot(xs[k], med.iloc[k], marker=DIVERGED_MARKER, markersize=9, color=st.color,
                                markeredgecolor="black", linestyle="none")
                if below.any():  # below the floor: drawn on it, and its first arrival there marked
                    k = int(np.flatnonzero(below)[0])
                    ax.plot(xs[k], FLOOR, marker=FLOOR_MARKER, markersize=9, color=st.color, markeredgecolor="black",
                            linestyle="none", clip_on=False, zorder=5)
                    floored = True
            if main:
                text = config_label(data.short(label), c["lr"], c["batch_size"])
                if (runs["status"] == "diverged").any():
                    text += " (diverged)"
                line.set_label(text)
                handles.append(line)
    for ax in (ax_s, ax_t):
        if bounded or lowest > 0:
            ax.set_yscale("log")
        else:
            ax.set_yscale("symlog", linthresh=1e-2)
        if floored:
            ax.axhline(FLOOR, color="#555555", linestyle=":", linewidth=1.0, zorder=0)
    keys = []
    if floored:
        from matplotlib.lines import Line2D

        ax_s.annotate(f"floor {FLOOR:g}: lower values drawn here", (0.01, FLOOR), xycoords=("axes fraction", "data"),
                      xytext=(0, 3), textcoords="offset points", fontsize=8, color="#555555")
        keys.append(Line2D([], [], linestyle="none", marker=FLOOR_MARKER, markersize=8, color="#777777",
                           markeredgecolor="black", label=f"reached the floor (loss − f* < {FLOOR:g})"))
    ax_s.set_xlabel("step")
    ax_t.set_xlabel("wall time (s)")
    ax_s.set_ylabel("loss − f*" if bounded else "loss")
    band = f"median over {seeds} seeds, band: min–max" if seeds > 1 else "one seed"
    which = "best lr per optimizer" + ("; thin: other lrs" if all_lrs else "")
    fig.suptitle(f"{title or family}: loss ({which}; {band})", fontsize=11)
    fit_legend(fig, handles + keys, max_cols=3)
    return save(fig, out / f"curves_{safe_name(family)}", formats, dpi)


@figure("curves", doc="loss or test accuracy against step, per problem", needs=STATIC)
def curves_section(report) -> list:
    from optbench.report.page import Section

    files = []
    for problem in report.data.families:
        files += loss_curves(report.data, problem, report.fig_dir, formats=report.static, dpi=report.dpi,
                             all_lrs=report.all_lrs, title=report.title_for(problem))
    return [Section("Loss curves", files)]
