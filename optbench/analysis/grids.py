"""Batch size × learning rate as data (pandas and numpy only; the heatmaps and tables are drawn in
:mod:`optbench.report.grids`).

A :class:`Grid` holds, per (problem family, optimizer configuration) whose runs sweep both batch size and lr, one
metric per cell: the median over seeds; for steps to target (and the other censored metrics) the censored
median — a seed that never reached the target counts as +∞ (optbench.censoring) — with how many seeds reached
it. Best cells, the best lr per batch size and the measured critical batch size are chosen among the
:meth:`Grid.eligible` cells: most seeds did not diverge (a diverged fraction below ``MAJORITY_DIVERGED``) and,
for steps to target, every seed reached the target — a cell resting on some of its seeds promises a time the
others never achieved.

Critical batch size. Measured: the smallest batch size whose best value over learning rates achieves
``CRITICAL_FRACTION`` (90%) of the improvement from the smallest batch size to the best one (on a log scale for
losses and steps), i.e. where larger batches stop paying off. Predicted (runs with
``--noise-scale-every N``): the median gradient-noise scale B_simple over the grid's runs that did not diverge
(McCandlish et al. 2018, "An Empirical Model of Large-Batch Training", arXiv:1812.06162).

:func:`rule_comparisons` sets per-batch-size tuning (the best cell at each batch size) against runs whose lr
followed a scaling rule η_B = η₀·(B/B₀)^p (``--recipe``, ``--lr-scaling``; Goyal et al. 2017 for p = 1, the
square-root rule for p = ½) from the base lr that is best at B₀.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from optbench.censoring import censored_cells, format_steps
from optbench.formatting import is_missing

MAJORITY_DIVERGED = 0.5  # a cell whose diverged fraction of seeds is at least this counts as diverged


METRICS = {  # name: (column title, higher is better)
    "final_loss": ("final loss", False),
    "best_loss": ("best loss", False),
    "steps_to_target": ("steps to target", False),
    "test_acc": ("test accuracy", True),
    "steps_to_result": ("steps to result", False),  # time to result (optbench.time_to_result)
    "examples_to_result": ("examples to result", False),
    "seconds_to_result": ("seconds to result", False),
}


CENSORED = ("steps_to_target", "steps_to_result", "examples_to_result", "seconds_to_result")  # never = +∞


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
    reached: pd.DataFrame | None = None  # steps to target: how many seeds reached it, same shape (else None)
    seeds: pd.DataFrame | None = None  # steps to target: how many seeds the cell has

    @property
    def higher_is_better(self) -> bool:
        return METRICS[self.metric][1]

    def eligible(self) -> pd.DataFrame:
        """Cells that may be chosen as best: most seeds did not diverge and, for steps to target, every seed
        reached the target (fully successful)."""
        ok = self.diverged < MAJORITY_DIVERGED
        if self.reached is not None:
            ok &= self.reached == self.seeds
        return ok

    def cell_text(self, bs, lr, fmt) -> str:
        """A cell's value as text; for steps to target with the share of seeds that reached it, or 'never'."""
        v = self.values.loc[bs, lr]
        if self.reached is None or self.seeds is None or not self.seeds.loc[bs, lr]:
            return fmt(v)
        return format_steps(v, int(self.reached.loc[bs, lr]), int(self.seeds.loc[bs, lr]), fmt)

    def best_cell(self):
        """(batch size, lr) of the best :meth:`eligible` cell, or None."""
        v = self.values.where(self.eligible())
        stacked = v.stack().dropna()
        if stacked.empty:
            return None
        return stacked.idxmax() if self.higher_is_better else stacked.idxmin()

    def best_lr_per_batch(self) -> pd.Series:
        """The best lr of each batch size among its :meth:`eligible` cells (batch sizes without one are left out)."""
        v = self.values.where(self.eligible())
        v = v[v.notna().any(axis=1)]  # batch sizes where nothing reached / everything diverged have no best
        return v.idxmax(axis=1) if self.higher_is_better else v.idxmin(axis=1)

    def measured_critical_batch(self):
        """The smallest batch size whose best value over learning rates achieves ``CRITICAL_FRACTION`` of the
        improvement from the smallest batch size to the best one, over :meth:`eligible` cells only; None with
        fewer than two batch sizes that have one."""
        v = self.values.where(self.eligible())
        best = (v.max(axis=1) if self.higher_is_better else v.min(axis=1)).dropna()
        if len(best) < 2:
            return None
        m = best.to_numpy(dtype=float)
        if self.metric != "test_acc":
            m = m - self.f_min if self.metric in ("final_loss", "best_loss") and not is_missing(self.f_min) else m
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
        values, reached, seeds = seed_medians(g, ["batch_size", "lr"], metric, "lr")
        diverged = cells["div"].mean().unstack("lr").reindex_like(values)
        noise = g.loc[g["status"] != "diverged", "noise_scale"].astype(float) if "noise_scale" in g.columns \
            else pd.Series(dtype=float)
        noise = noise[np.isfinite(noise)]
        out.append(Grid(problem, label, metric, values, diverged, float(g["f_min"].iloc[0]),
                        float(noise.median()) if len(noise) else float("nan"), reached, seeds))
    return out


def seed_medians(g, keys: list[str], metric: str, column_key: str):
    """(values, reached, seeds) as batch size × ``column_key`` frames: the median of ``metric`` over each cell's
    seeds; for steps to target the censored median (never = +∞) and the counts, else (values, None, None)."""
    if metric not in CENSORED:
        return g.groupby(keys)[metric].median().unstack(column_key).sort_index().sort_index(axis=1), None, None
    cells = censored_cells(g, keys, metric)
    frames = [cells[c].unstack(column_key).sort_index().sort_index(axis=1) for c in ("median", "reached", "seeds")]
    return frames[0], frames[1].fillna(0).astype(int), frames[2].fillna(0).astype(int)


RULE_TOLERANCE = 1.5  # a rule "holds" at a batch size while its loss gap is within this factor of the reference


@dataclass
class RuleComparison:
    """One optimizer's bs × lr grid (tuned: the best lr at each batch size) against its runs whose lr followed a
    scaling rule η_B = η₀·(B/B₀)^p from several base learning rates η₀.

    ``values``, ``lrs`` and ``diverged`` are indexed by batch size with one column per base lr: the median metric
    over seeds, the lr the runs used and the fraction of seeds that diverged. ``base_lr`` is the recipe as
    practised: the η₀ that is best at the base batch size B₀ (at the smallest batch size when B₀ was not run),
    then scaled to every other batch size.
    """

    tuned: Grid
    rule: str  # the optimizer label of the scaled runs
    name: str  # the recipe's name, or "linear scaling" / "sqrt scaling" when set with --lr-scaling
    lr_scaling: str
    base_batch_size: int
    values: pd.DataFrame
    lrs: pd.DataFrame
    diverged: pd.DataFrame
    base_lr: float
    reached: pd.DataFrame | None = None  # steps to target: seeds that reached it per cell (else None)
    seeds: pd.DataFrame | None = None

    def eligible(self) -> pd.DataFrame:
        """Rule cells that count as a result: most seeds did not diverge and, for steps to target, every seed
        reached the target (as :meth:`Grid.eligible`)."""
        ok = self.diverged < MAJORITY_DIVERGED
        if self.reached is not None:
            ok &= self.reached == self.seeds
        return ok

    @property
    def power(self) -> float:
        from optbench.engines.recipe import LR_SCALINGS

        return LR_SCALINGS[self.lr_scaling]

    @property
    def formula(self) -> str:
        return "η₀·B/B₀" if self.power == 1 else "η₀·√(B/B₀)" if self.power == 0.5 else f"η₀·(B/B₀)^{self.power}"

    def lr_at(self, batch_sizes) -> np.ndarray:
        return self.base_lr * (np.asarray(batch_sizes, dtype=float) / self.base_batch_size) ** self.power

    def tuned_best(self) -> pd.DataFrame:
        """Per batch size of the grid: the best lr and its value (NaN where every lr diverged)."""
        g = self.tuned
        v = g.values.where(g.eligible())
        best_lr = g.best_lr_per_batch().reindex(g.values.index)
        value = v.max(axis=1) if g.higher_is_better else v.min(axis=1)
        return pd.DataFrame({"lr": best_lr.astype(float), "value": value.astype(float)})

    def relative(self, value, tuned) -> float:
        """The rule against the tuned value: the ratio of the gaps above f* (losses), of the steps (steps to
        target), or the difference (accuracy); NaN when either is missing."""
        if is_missing(value) or is_missing(tuned):
            return float("nan")
        if self.tuned.higher_is_better:
            return float(value - tuned)
        f_min = self.tuned.f_min if self.tuned.metric in ("final_loss", "best_loss") and \
            not is_missing(self.tuned.f_min) else 0.0
        return float((value - f_min) / (tuned - f_min)) if tuned - f_min > 0 else float("nan")

    def base_value(self) -> float:
        """The chosen base lr's value at B₀ (at the smallest batch size when B₀ was not run); NaN if diverged."""
        at = self.base_batch_size if self.base_batch_size in self.values.index else self.values.index[0]
        if self.diverged.loc[at, self.base_lr] < MAJORITY_DIVERGED:
            return float(self.values.loc[at, self.base_lr])
        return np.nan

    def holds_up_to(self, against: str = "tuned"):
        """The largest batch size ≥ B₀ up to which the chosen base lr stays within ``RULE_TOLERANCE`` of the tuned
        value at each batch size (``against="tuned"``) or of its own value at B₀ (``"base"``: what the rule
        promises, Goyal et al.'s criterion of matching the small-batch result). None for accuracy, or when it
        fails at B₀ already."""
        if self.tuned.higher_is_better:
            return None
        tuned, base, last = self.tuned_best()["value"], self.base_value(), None
        for b in self.values.index:
            if b < self.base_batch_size:
                continue
            ref = tuned.get(b, np.nan) if against == "tuned" else base
            ok = self.diverged.loc[b, self.base_lr] < MAJORITY_DIVERGED and \
                self.relative(self.values.loc[b, self.base_lr], ref) <= RULE_TOLERANCE
            if not ok:
                break
            last = int(b)
        return last


def _config_key(row) -> tuple:
    """What makes two configurations the same optimizer: problem family, name, hyperparameters but the lr."""
    import json

    hp = {k: v for k, v in json.loads(row["hparams"]).items() if k != "lr"}
    return row["family"], row["optimizer"], json.dumps(hp, sort_keys=True)


def rule_comparisons(summary, found: list[Grid]) -> list[RuleComparison]:
    """Pair every lr-scaled configuration with the grids of the same optimizer (same hyperparameters but the
    lr) that were not scaled; empty when the results hold no such pair."""
    import json

    from optbench.engines.recipe import LR_SCALINGS

    if "recipe" not in summary.columns or not found:
        return []
    settings = summary["recipe"].fillna("{}").map(json.loads)
    scaled = summary[settings.map(lambda r: r.get("lr_scaling") in LR_SCALINGS).astype(bool)]
    if scaled.empty:
        return []
    grid_keys: dict[tuple, list[Grid]] = {}
    for grid in found:
        rows = summary[(summary["family"] == grid.problem) & (summary["optimizer_label"] == grid.optimizer)]
        if not rows.empty and not settings[rows.index[0]].get("lr_scaling"):
            grid_keys.setdefault(_config_key(rows.iloc[0]), []).append(grid)
    out = []
    for (_family, label), g in scaled.groupby(["family", "optimizer_label"], sort=True):
        tuned = grid_keys.get(_config_key(g.iloc[0]), [])
        if not tuned or g["batch_size"].nunique() < 2:
            continue
        recipe = settings[g.index[0]]
        power, b0 = LR_SCALINGS[recipe["lr_scaling"]], int(recipe["base_batch_size"])
        bs = g["batch_size"].astype("int64")
        base = (g["lr"].astype(float) / (bs / b0) ** power).map(lambda x: float(f"{x:.12g}"))
        g = g.assign(batch_size=bs, base_lr=base, div=(g["status"] == "diverged").astype(float))
        names = [n for n in g.get("recipe_name", pd.Series(dtype=object)).dropna().unique() if n]
        name = names[0] if len(names) == 1 else f"{recipe['lr_scaling']} scaling"
        for grid in tuned:
            if grid.metric not in g.columns:
                continue
            cells = g.groupby(["batch_size", "base_lr"])
            values, reached, seeds = seed_medians(g, ["batch_size", "base_lr"], grid.metric, "base_lr")
            diverged = cells["div"].mean().unstack("base_lr").reindex_like(values)
            lrs = cells["lr"].median().unstack("base_lr").reindex_like(values)
            comp = RuleComparison(grid, label, name, recipe["lr_scaling"], b0, values, lrs, diverged,
                                  float(values.columns[0]), reached, seeds)
            at = b0 if b0 in values.index else values.index[0]
            ok = values.loc[at].where(comp.eligible().loc[at]).dropna()
            if len(ok):
                comp.base_lr = float(ok.idxmax() if grid.higher_is_better else ok.idxmin())
            out.append(comp)
    return out


def comparison_table(comp: RuleComparison) -> pd.DataFrame:
    """The comparison as a tidy table: one row per (batch size, tuned | rule at each base lr)."""
    tuned = comp.tuned_best()
    metric = comp.tuned.metric
    at = comp.base_batch_size if comp.base_batch_size in comp.values.index else comp.values.index[0]
    at_base = comp.values.loc[at].where(comp.diverged.loc[at] < MAJORITY_DIVERGED)  # each base lr's own value at B₀
    rows = []
    for b in comp.values.index.union(tuned.index):
        if b in tuned.index:
            rows.append({"kind": "tuned", "batch_size": int(b), "base_lr": np.nan, "lr": tuned.loc[b, "lr"],
                         metric: tuned.loc[b, "value"], "diverged_fraction": np.nan, "chosen": False,
                         "vs_tuned": np.nan, "vs_base": np.nan})
        if b not in comp.values.index:
            continue
        for base in comp.values.columns:
            value, frac = comp.values.loc[b, base], comp.diverged.loc[b, base]
            if is_missing(value) and is_missing(frac):
                continue
            kept = frac < MAJORITY_DIVERGED
            rows.append({"kind": "rule", "batch_size": int(b), "base_lr": float(base), "lr": comp.lrs.loc[b, base],
                         metric: value if kept else np.nan, "diverged_fraction": frac,
                         "chosen": bool(base == comp.base_lr),
                         "vs_tuned": comp.relative(value, tuned["value"].get(b, np.nan)) if kept else np.nan,
                         "vs_base": comp.relative(value, at_base[base]) if kept else np.nan})
    table = pd.DataFrame(rows)
    head = {"problem": comp.tuned.problem, "optimizer": comp.tuned.optimizer, "rule_config": comp.rule,
            "recipe": comp.name, "lr_scaling": comp.lr_scaling, "base_batch_size": comp.base_batch_size}
    return pd.concat([pd.DataFrame([head] * len(table)), table], axis=1)
