"""Across problems: Dolan–Moré performance profiles (as AlgoPerf scores) and COCO-style ECDFs.

Each optimizer is taken at its best configuration (lr, batch size) on each problem; an instance is a
(problem, seed) pair, so random starts and noise count as instances.

- Performance profile (Dolan & Moré 2002, "Benchmarking optimization software with performance profiles"):
  with t(p, s) the steps optimizer s needs to reach problem p's target (∞ when never), the ratio
  r(p, s) = t(p, s) / min_s t(p, s) and ρ_s(τ) = share of instances with r(p, s) ≤ τ. With ``report --metric``
  ``steps_to_result``, ``examples_to_result`` or ``seconds_to_result``, t(p, s) is that time to result
  (:mod:`optbench.time_to_result`; never = ∞ too) and the best configurations are ranked by it.
- ECDF (Hansen et al. 2021, COCO): for 51 targets f* + 10^k, k = 2 … −8, the share of (run, target) pairs
  reached by each step count. Problems without a known minimum are left out of it.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from optbench.censoring import censor
from optbench.formatting import plural
from optbench.report.data import ReportData, best_configs, runs_of
from optbench.report.figures import STATIC, figure
from optbench.report.style import FIG_SIZE, fit_legend, layered, pyplot, save

ECDF_TARGETS = 10.0 ** np.linspace(2, -8, 51)


def applies(data: ReportData) -> bool:
    s = data.summary
    return s["family"].nunique() > 1 or s["seed"].nunique() > 1


def best_runs(data: ReportData) -> pd.DataFrame:
    """Summary rows of each (problem, optimizer)'s best configuration, every seed."""
    parts = [runs_of(data.summary, c["problem"], c["optimizer_label"], c["lr"], c["batch_size"])
             for _, c in best_configs(data.table_all, metric=data.rank_metric).iterrows()]
    return pd.concat(parts, ignore_index=True)


def performance_ratios(runs: pd.DataFrame, metric: str = "steps_to_target") -> pd.DataFrame:
    """Instances × optimizers of r(p, s) on ``metric`` (steps to target, or a time-to-result column: steps,
    examples or seconds to result); instances no optimizer solved are dropped."""
    if metric not in runs:
        runs = runs.assign(**{metric: np.nan})
    t = runs.pivot_table(index=["family", "seed"], columns="optimizer_label", values=metric,
                         aggfunc="first", dropna=False).astype(float)
    t = t.reindex(columns=sorted(runs["optimizer_label"].unique()))
    t = pd.DataFrame(censor(t.to_numpy().ravel()).reshape(t.shape), index=t.index, columns=t.columns)
    floor = 1 if metric != "seconds_to_result" else float(np.nanmin(t.to_numpy()[t.to_numpy() > 0], initial=np.inf))
    # never reached: ∞ (optbench.censoring); reached at step 0 counts as 1 step (seconds: as the fastest time)
    t = t.clip(lower=floor if np.isfinite(floor) else 1)
    best = t.min(axis=1)
    solved = np.isfinite(best)
    return t[solved].div(best[solved], axis=0)


def performance_profile(data: ReportData, out: Path, *, formats, dpi: int, title: str | None = None) -> list[Path]:
    plt = pyplot()
    runs = best_runs(data)
    metric = data.rank_metric or "steps_to_target"
    ratios = performance_ratios(runs, metric)
    n_all = runs.groupby(["family", "seed"]).ngroups
    fig, ax = plt.subplots(figsize=FIG_SIZE, dpi=dpi)
    finite = ratios.to_numpy()[np.isfinite(ratios.to_numpy())]
    tau_max = max(2.0, float(finite.max()) * 1.5) if len(finite) else 2.0
    taus = np.concatenate([[1.0], np.sort(np.unique(finite)), [tau_max]])
    curves = {label: [(r <= tau).mean() if len(r) else 0.0 for tau in taus]
              for label, r in ((label, ratios[label].to_numpy()) for label in ratios.columns)}
    for (label, rho), lines in zip(curves.items(), layered(list(curves.values()), max(1, len(taus) // 8))):
        st = data.styles[label]
        ax.step(taus, rho, where="post", color=st.color, label=data.short(label), marker=st.marker, markersize=5,
                markeredgecolor="black", markeredgewidth=0.5, clip_on=False, **lines)  # equal curves stay visible
    ax.set_xscale("log", base=2)
    ax.set_xlim(1, tau_max)
    ax.set_ylim(-0.02, 1.02)
    ax.set_xlabel(f"τ: {metric.replace('_', ' ')} relative to the best optimizer")
    ax.set_ylabel("share of instances within τ of the best")
    left = n_all - len(ratios)
    note = f"; {left} of {n_all} instances solved by none left out" if left else ""
    ax.set_title(f"{title + ': ' if title else ''}performance profile over {len(ratios)} instances "
                 f"(problem × seed){note}", fontsize=10, wrap=True)  # wrapped to the figure's width
    fit_legend(fig, ax.get_lines(), max_cols=3)
    return save(fig, out / "profile", formats, dpi)


def first_hits(steps: pd.DataFrame, runs: pd.DataFrame) -> pd.DataFrame:
    """Per run and ECDF target: first recorded step with loss − f* ≤ target (NaN when never)."""
    f_min = runs.set_index("run_id")["f_min"]
    d = steps[steps["run_id"].isin(runs["run_id"])][["run_id", "step", "loss"]].sort_values(["run_id", "step"])
    d = d.assign(gap=(d["loss"] - d["run_id"].map(f_min)).where(lambda s: np.isfinite(s), np.inf))
    d["gap"] = d.groupby("run_id")["gap"].cummin()
    rows = {}
    for run_id, g in d.groupby("run_id", sort=False):
        gaps, st = g["gap"].to_numpy(), g["step"].to_numpy()
        # gaps are non-increasing: the first index at or below each target
        idx = np.searchsorted(-gaps, -ECDF_TARGETS, side="left")
        rows[run_id] = np.where(idx < len(st), st[np.minimum(idx, len(st) - 1)], np.nan)
    return pd.DataFrame.from_dict(rows, orient="index", columns=ECDF_TARGETS)


def ecdf(data: ReportData, out: Path, *, formats, dpi: int, title: str | None = None) -> list[Path]:
    plt = pyplot()
    runs = best_runs(data)
    runs = runs[runs["f_min"].notna()]
    fig, ax = plt.subplots(figsize=FIG_SIZE, dpi=dpi)
    hits = first_hits(data.steps, runs)
    budget = int(runs["steps"].max()) if len(runs) else 1
    grid = np.unique(np.round(np.logspace(0, np.log10(max(budget, 2)), 200)))
    curves = {}
    for label in sorted(runs["optimizer_label"].unique()):
        h = hits.loc[runs.loc[runs["optimizer_label"] == label, "run_id"]].to_numpy().ravel()
        h = np.where(h == 0, 1, h)  # already below a target at the start: counts at step 1
        curves[label] = [(h <= x).sum() / len(h) for x in grid]
    for (label, share), lines in zip(curves.items(), layered(list(curves.values()), 25)):
        st = data.styles[label]
        ax.step(grid, share, where="post", color=st.color, label=data.short(label), marker=st.marker, markersize=5,
                markeredgecolor="black", markeredgewidth=0.5, clip_on=False, **lines)  # equal curves stay visible
    ax.set_xscale("log")
    ax.set_ylim(-0.02, 1.02)
    ax.set_xlabel("steps")
    ax.set_ylabel("share of (run, target) pairs reached")
    dropped = sorted(set(data.summary.loc[data.summary["f_min"].isna(), "family"]))
    n_problems = runs["family"].nunique()
    note = f"; without known f*, left out: {', '.join(dropped)}" if dropped else ""
    ax.set_title(f"{title + ': ' if title else ''}ECDF of steps to 51 targets f* + 10^[2…−8] "
                 f"({plural(n_problems, 'problem')}, {plural(runs['seed'].nunique(), 'seed')}{note})", fontsize=9.5,
                 wrap=True)
    fit_legend(fig, ax.get_lines(), max_cols=3)
    return save(fig, out / "ecdf", formats, dpi)


@figure("profiles", doc="performance profile and ECDF across problems or seeds", needs=STATIC, applies=applies)
def profiles_section(report) -> list:
    from optbench.report.page import Section

    data = report.data
    files = performance_profile(data, report.fig_dir, formats=report.static, dpi=report.dpi, title=report.title)
    if data.summary["f_min"].notna().any():
        files += ecdf(data, report.fig_dir, formats=report.static, dpi=report.dpi, title=report.title)
    return [Section("Across problems", files,
                    note="Each optimizer at its best configuration per problem; instances: problem × seed.")]
