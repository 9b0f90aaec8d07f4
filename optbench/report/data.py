"""What the figures read: the results of one or more directories, and the configurations each shows."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from optbench.report.style import OptStyle, palette

if TYPE_CHECKING:
    import pandas as pd


@dataclass
class ReportData:
    steps: pd.DataFrame  # load_results: one row per (run, recorded step)
    summary: pd.DataFrame  # load_summary: one row per run
    table: pd.DataFrame  # aggregate(summary, best_lr_only=not all_lrs): the table 'optbench run' printed
    table_all: pd.DataFrame  # aggregate(summary): every (problem, optimizer, lr, batch size)
    styles: dict[str, OptStyle]
    rank_metric: str | None = None  # a time-to-result column ranking the configurations (None: the table's rule)
    display: dict[str, str] | None = None  # full optimizer label → its short display label (optbench.labels)

    def __post_init__(self):
        if self.display is None:
            from optbench.labels import display_labels

            self.display = display_labels(self.summary["optimizer_label"])

    def short(self, label: str) -> str:
        """The display label of a full optimizer label (figures and pages show it; the data keep the full one)."""
        assert self.display is not None  # set in __post_init__
        return self.display.get(str(label), str(label))

    @property
    def families(self) -> list[str]:
        """Problems up to batch size (each batch size is its own problem in the results), in results order."""
        return list(dict.fromkeys(self.summary["family"]))


def load(dirs: list[Path], *, all_lrs: bool = False, target: float | None = None,
         metric: str | None = None, result_target: str | None = None) -> ReportData:
    """``target``: recount steps to target at it from the recorded steps (default: as stored). ``metric``: a
    time-to-result column (optbench.time_to_result.TIME_METRICS) ranks every configuration and drives the
    performance profile; other metrics leave the ranking to the comparison table's rule."""
    from optbench.analysis.summary import aggregate
    from optbench.results import load_results, load_summary
    from optbench.time_to_result import TIME_METRICS

    rank_metric = metric if metric in TIME_METRICS else None

    summary = load_summary(*dirs)
    steps = load_results(*dirs)
    if target is not None:
        from optbench.targets import with_target

        summary = with_target(steps, summary, target)
    if result_target is not None:
        from optbench.time_to_result import parse_result_target, with_result_target

        summary = with_result_target(steps, summary, parse_result_target(result_target))
    for df in (summary, steps):
        for c in ("problem", "optimizer_label", "status", "run_id"):
            df[c] = df[c].astype(str)
        df["batch_size"] = df["batch_size"].astype("Int64")
    families = {p: family(p) for p in summary["problem"].unique()}
    table = aggregate(summary, best_lr_only=not all_lrs, metric=rank_metric)
    table_all = aggregate(summary, metric=rank_metric)
    for df in (summary, steps, table, table_all):
        df["family"] = df["problem"].map(families)
    return ReportData(steps, summary, table, table_all, palette(summary["optimizer_label"]), rank_metric)


def family(problem: str) -> str:
    """The problem's spec label without its batch size: 'noisy-quadratic(batch_size=4, dim=10)' → ..."""
    from optbench.spec import format_spec, parse_spec

    spec = parse_spec(problem)
    if "batch_size" not in spec.kwargs:
        return problem
    return format_spec(spec.name, {k: v for k, v in spec.kwargs.items() if k != "batch_size"})


def best_configs(table_all, family: str | None = None, metric: str | None = None):
    """The best (lr, batch size) of each optimizer on each problem family, ranked by the comparison table's own
    rule (``summary.rank``: on problems without a minimum, by steps to target, never = ∞)."""
    from optbench.analysis.summary import rank

    t = table_all if family is None else table_all[table_all["family"] == family]
    t = rank(t, within=(), metric=metric)
    t = t.sort_values("family", kind="stable", key=lambda s: s.map({f: i for i, f in enumerate(s.unique())}))
    return t.drop_duplicates(["family", "optimizer_label"], keep="first").reset_index(drop=True)


def runs_of(summary, problem: str, label: str, lr: float, batch_size):
    """Summary rows of one configuration (every seed)."""
    import pandas as pd

    m = (summary["problem"] == problem) & (summary["optimizer_label"] == label)
    lrs = summary["lr"].astype(float)
    m &= lrs.isna() if pd.isna(lr) else np.isclose(lrs, float(lr), rtol=1e-9, atol=0)
    bs = summary["batch_size"]
    m &= bs.isna() if pd.isna(batch_size) else (bs == int(batch_size)).fillna(False)
    return summary[m.astype(bool)]


def has_bs(value) -> bool:
    import pandas as pd

    return value is not None and not pd.isna(value)
