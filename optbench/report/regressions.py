"""Loss curves of a regressed configuration, baseline against new, for the ``--markdown`` report.

matplotlib is imported here only (Agg backend, no display). Each figure shows, per side, the median over
seeds of ``loss − f*`` (the loss itself when the problem has no known minimum) on a log axis, with the
spread between the smallest and largest seed shaded.
"""

from __future__ import annotations

from pathlib import Path

from optbench.check.compare import KEY, config_label


def _safe(text: str) -> str:
    keep = "".join(c if c.isalnum() or c in "-_.=" else "_" for c in text)
    return "_".join(filter(None, keep.split("_")))[:120]


def _missing(value) -> bool:
    import pandas as pd

    return value is None or bool(pd.isna(value))


def regression_figure(base_steps, new_steps, base_summary, new_summary, key: tuple, path: str | Path) -> Path:
    """Draw one configuration's loss curves (baseline vs new) from step tables; returns the PNG's path."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    from optbench.check.compare import per_run_metrics

    path = Path(path)
    fig, ax = plt.subplots(figsize=(6.4, 3.6), dpi=110)
    log = True
    for name, steps, summary, color in (("baseline", base_steps, base_summary, "#555555"),
                                        ("new", new_steps, new_summary, "#d62728")):
        runs = per_run_metrics(summary).assign(run_id=summary["run_id"].astype(str).to_numpy())
        mask = np.ones(len(runs), bool)
        for col, value in zip(KEY, key, strict=True):
            mask &= (runs[col].isna() if _missing(value) else (runs[col] == value).fillna(False)).to_numpy(bool)
        ids = set(runs.loc[mask, "run_id"])
        f_min = summary.loc[summary["run_id"].astype(str).isin(ids), "f_min"].astype(float)
        shift = float(f_min.iloc[0]) if len(f_min) and np.isfinite(f_min.iloc[0]) else 0.0
        df = steps[steps["run_id"].astype(str).isin(ids)]
        if df.empty:
            continue
        curve = (df.assign(gap=df["loss"].astype(float) - shift).pivot_table(
            index="step", columns="run_id", values="gap", aggfunc="first").sort_index())
        med = curve.median(axis=1)
        ax.plot(curve.index, med, color=color, label=f"{name} (median of {curve.shape[1]})", lw=1.6)
        if curve.shape[1] > 1:
            ax.fill_between(curve.index, curve.min(axis=1), curve.max(axis=1), color=color, alpha=0.15, lw=0)
        log &= bool((curve.to_numpy()[np.isfinite(curve.to_numpy())] > 0).all())
    if log:
        ax.set_yscale("log")
    ax.set_xlabel("step")
    ax.set_ylabel("loss − f*")
    ax.set_title(config_label(dict(zip(KEY, key, strict=True))), fontsize=9)
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
    return path


def regression_figures(base_dir, new_dir, base_summary, new_summary, keys: list[tuple],
                       out_dir: str | Path) -> dict[tuple, Path]:
    """One PNG per regressed configuration under ``out_dir``; {} when matplotlib is not installed."""
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        return {}
    from optbench.results import load_results

    if not keys:
        return {}
    cols = ["run_id", "step", "loss"]
    base_steps, new_steps = load_results(base_dir, columns=cols), load_results(new_dir, columns=cols)
    out = {}
    for key in keys:
        name = _safe(config_label(dict(zip(KEY, key, strict=True)))) + ".png"
        out[key] = regression_figure(base_steps, new_steps, base_summary, new_summary, key, Path(out_dir) / name)
    return out
