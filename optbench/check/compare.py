"""CI regression checks: compare a new results set with a baseline, per configuration and metric.

A configuration is (problem, optimizer_label, lr, batch_size, steps); its runs over seeds are compared on
the metrics of :data:`METRICS` (losses, steps to target, divergence, test accuracy, and optimizer state
bytes per parameter, which must not change at all: memory is deterministic). Two modes:

``exact`` (the default for deterministic CPU runs, which ``optbench baseline`` and ``optbench check --suite``
    make): seed by seed, ``|new − base| ≤ atol + rtol·|base|``. With ``rtol = atol = 0`` this is bitwise.
    The defaults (rtol :data:`FLOAT64_RTOL` = 1e-9, atol 0 on losses; steps to target and divergence must
    match exactly) absorb what another machine does to a deterministic float64 run (measured: at most
    3.9e-11 relative, docs/ci.md) and nothing an optimizer change can cause: an update rounded to float32
    moves losses by ~1.4e-7, a lost bias correction by percents. Better and worse both fail: accepting a
    change is ``optbench baseline``. The losses of a diverged run are not compared (see
    :func:`per_run_metrics`); ``diverged`` is.

``statistical`` (noisy runs, or other seeds): the seed medians must agree within
    ``atol + rtol·|median_base| + z·√(se_base² + se_new²)``, where ``se`` is the standard error of a
    median estimated from the median absolute deviation (1.2533 · 1.4826 · MAD / √n; the standard deviation
    when the MAD is 0 but the values vary). The relative part of the losses is the same 1e-9: where seeds do
    not matter (fixed start, no noise: se = 0) a configuration is held to what float64 reproduces, which is
    where a subtle change shows; the noise part (z = 4) keeps another draw of seeds from raising a false
    alarm on noisy problems. Divergence compares the fraction of diverged seeds within z binomial standard
    errors. ``test = "rank"`` replaces the band by a two-sided Mann–Whitney U test across seeds: a metric
    fails when p < alpha (1e-3) and the medians differ by more than ``atol + rtol·|median_base|``.

Tolerances are set per suite (the ``[check]`` table of a suite file) and per metric
(``[check.metrics.final_loss] rtol = 0.05``); see :class:`Tolerances` and docs/ci.md. This module is
pandas and numpy only: it reads summaries (``optbench.results.load_summary``), never a run in memory.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field, replace
from typing import Any

from optbench.errors import UsageError
from optbench.formatting import fmt_g

KEY = ["problem", "optimizer_label", "lr", "batch_size", "steps"]
METRICS = ("final_loss", "best_loss", "steps_to_target", "diverged", "test_acc", "state_bytes_per_param")
# measured only by newer versions or some engines: not checked when the baseline lacks them
OPTIONAL_METRICS = frozenset({"test_acc", "state_bytes_per_param"})
HIGHER_IS_BETTER = frozenset({"test_acc"})
MODES = ("exact", "statistical")
TESTS = ("band", "rank")
DIRECTIONS = ("both", "worse")

# What a deterministic CPU float64 run of problems/ci.toml reproduces across machines, measured with
# benchmarks/bench_check_reproducibility.py (docs/ci.md): other SIMD kernels move losses by at most 3.9e-11
# relative, a one-ulp change of the start point by 2.4e-11 (runs that do not diverge), 2 threads and
# non-deterministic algorithms by nothing. 1e-9 is 25x the largest of these and 140x below the 1.4e-7 that
# an update rounded to float32 causes.
FLOAT64_RTOL = 1e-9
LOSS_METRICS = ("final_loss", "best_loss")

# Defaults per mode and metric: (rtol, atol). See the module docstring for why these values.
DEFAULTS: dict[str, dict[str, tuple[float, float]]] = {
    "exact": {"final_loss": (FLOAT64_RTOL, 0.0), "best_loss": (FLOAT64_RTOL, 0.0), "steps_to_target": (0.0, 0.0),
              "diverged": (0.0, 0.0), "test_acc": (1e-6, 0.0), "state_bytes_per_param": (0.0, 0.0)},
    "statistical": {"final_loss": (FLOAT64_RTOL, 0.0), "best_loss": (FLOAT64_RTOL, 0.0),
                    "steps_to_target": (0.02, 0.0), "diverged": (0.0, 0.0), "test_acc": (0.01, 0.0),
                    "state_bytes_per_param": (0.0, 0.0)},
}
VERDICT_COLUMNS = [
    *KEY, "metric", "seeds_baseline", "seeds_new", "baseline", "new", "low", "high", "change_rel",
    "direction", "passed", "verdict", "detail",
]


@dataclass(frozen=True)
class MetricTolerance:
    """The allowed difference for one metric: ``atol + rtol·|baseline|`` (plus noise in statistical mode)."""

    rtol: float
    atol: float
    direction: str = "both"  # "both": any change beyond the band fails; "worse": only regressions fail
    enabled: bool = True


@dataclass(frozen=True)
class Tolerances:
    """How ``compare`` decides. Unset ``rtol``/``atol`` take :data:`DEFAULTS` of the mode and metric;
    ``metrics`` holds per-metric overrides: ``{"final_loss": {"rtol": 0.05}, "test_acc": {"enabled": False}}``.
    """

    mode: str = "exact"
    rtol: float | None = None
    atol: float | None = None
    z: float = 4.0  # statistical: standard errors of the median difference allowed on top of rtol
    test: str = "band"  # statistical: "band" (median band) or "rank" (Mann-Whitney U across seeds)
    alpha: float = 1e-3  # statistical, test = "rank": significance level
    direction: str = "both"
    metrics: dict[str, dict[str, Any]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise UsageError(f"check mode {self.mode!r}: valid modes are {', '.join(MODES)}.")
        if self.test not in TESTS:
            raise UsageError(f"check test {self.test!r}: valid tests are {', '.join(TESTS)}.")
        if self.direction not in DIRECTIONS:
            raise UsageError(f"check direction {self.direction!r}: valid are {', '.join(DIRECTIONS)}.")
        for name, value in (("rtol", self.rtol), ("atol", self.atol), ("z", self.z), ("alpha", self.alpha)):
            if value is not None and not (isinstance(value, (int, float)) and value >= 0):
                raise UsageError(f"check {name} = {value!r}: expected a number >= 0.")
        for metric, over in self.metrics.items():
            if metric not in METRICS:
                raise UsageError(f"[check.metrics.{metric}]: unknown metric; valid: {', '.join(METRICS)}.")
            if not isinstance(over, dict):
                raise UsageError(f"[check.metrics.{metric}]: expected a table, got {over!r}.")
            for key, value in over.items():
                if key not in ("rtol", "atol", "direction", "enabled"):
                    raise UsageError(f"[check.metrics.{metric}] {key}: unknown key; valid: rtol, atol, "
                                     "direction, enabled.")
                if key in ("rtol", "atol") and not (isinstance(value, (int, float)) and not isinstance(
                        value, bool) and value >= 0):
                    raise UsageError(f"[check.metrics.{metric}] {key} = {value!r}: expected a number >= 0.")
                if key == "direction" and value not in DIRECTIONS:
                    raise UsageError(f"[check.metrics.{metric}] direction = {value!r}: valid are "
                                     f"{', '.join(DIRECTIONS)}.")
                if key == "enabled" and not isinstance(value, bool):
                    raise UsageError(f"[check.metrics.{metric}] enabled = {value!r}: expected true or false.")

    @classmethod
    def from_dict(cls, data: dict[str, Any], **overrides: Any) -> Tolerances:
        """From a suite's ``[check]`` table (unknown keys are errors); ``overrides`` that are not None win."""
        allowed = {"mode", "rtol", "atol", "z", "test", "alpha", "direction", "metrics", "baseline", "branches"}
        unknown = sorted(set(data) - allowed)
        if unknown:
            raise UsageError(f"[check] {unknown[0]}: unknown key; valid keys: {', '.join(sorted(allowed))}.")
        values = {k: v for k, v in data.items() if k not in ("baseline", "branches")}
        values.update({k: v for k, v in overrides.items() if v is not None})
        return cls(**values)

    def for_metric(self, metric: str) -> MetricTolerance:
        rtol, atol = DEFAULTS[self.mode][metric]
        tol = MetricTolerance(self.rtol if self.rtol is not None else rtol,
                              self.atol if self.atol is not None else atol, self.direction)
        return replace(tol, **self.metrics.get(metric, {}))

    def describe(self) -> str:
        parts = [f"mode {self.mode}"]
        if self.mode == "statistical":
            extra = f"alpha {self.alpha:g}" if self.test == "rank" else f"z {self.z:g}"
            parts.append(f"test {self.test} ({extra})")
        for metric in METRICS:
            tol = self.for_metric(metric)
            if tol.enabled:
                parts.append(f"{metric} rtol {tol.rtol:g} atol {tol.atol:g}"
                             + (" (worse only)" if tol.direction == "worse" else ""))
        return "; ".join(parts)


class ConfigMismatch(UsageError):
    """The new results and the baseline do not cover the same configurations (or seeds, in exact mode)."""

    def __init__(self, missing: list[str], extra: list[str], seeds: list[str]):
        self.missing, self.extra, self.seeds = missing, extra, seeds
        lines = ["The new results and the baseline do not cover the same configurations."]
        if missing:
            lines.append(f"In the baseline but missing from the new results ({len(missing)}):")
            lines += [f"  - {m}" for m in missing]
        if extra:
            lines.append(f"In the new results but not in the baseline ({len(extra)}); refresh the baseline "
                         "with 'optbench baseline' to add them:")
            lines += [f"  - {m}" for m in extra]
        if seeds:
            lines.append("Seeds differ (exact mode compares seed by seed; use --mode statistical to compare "
                         "other seeds):")
            lines += [f"  - {m}" for m in seeds]
        super().__init__("\n".join(lines))


def config_label(row: Any) -> str:
    """``problem / optimizer_label lr=… [batch_size=…] steps=…`` for one configuration."""
    text = f"{row['problem']} / {row['optimizer_label']}"
    if row["lr"] is not None and not _isnan(row["lr"]):
        text += f" lr={float(row['lr']):g}"
    if row["batch_size"] is not None and not _isnan(row["batch_size"]):
        text += f" batch_size={int(row['batch_size'])}"
    return text + f" steps={int(row['steps'])}"


def _isnan(value: Any) -> bool:
    try:
        return value is None or bool(value != value)
    except (TypeError, ValueError):  # pandas NA
        return True


def per_run_metrics(summary, test_acc=None):
    """One row per run: KEY, seed, hparams and the values of :data:`METRICS`.

    ``steps_to_target`` of a run that never reached the target counts as ``steps + 1`` (censored at the
    budget); ``diverged`` is 1.0 or 0.0, and the losses of a diverged run are NaN: they are the blow-up's
    values, which depend on the last bits of everything before (a one-ulp change of the start point moved
    one by a factor 3.4e4), so ``diverged`` compares such a run, not its losses; ``test_acc`` is the last
    recorded test accuracy (networks) taken from the summary's column when present, else from ``test_acc``
    (a Series indexed by run_id), else NaN.
    """
    import numpy as np

    from optbench.censoring import censor

    missing = [c for c in (*KEY, "seed", "final_loss", "best_loss", "steps_to_target", "status") if c not in summary]
    if missing:
        raise UsageError(f"The results summary lacks columns {', '.join(missing)}: not an optbench results set?")
    df = summary.copy()
    df["problem"] = df["problem"].astype(str)
    df["optimizer_label"] = df["optimizer_label"].astype(str)
    df["lr"] = df["lr"].astype(float).round(12)  # lr grids: 1e-2 written from '1e-4:1:5' is not bitwise 0.01
    df["batch_size"] = df["batch_size"].astype("Int64")
    df["steps"] = df["steps"].astype(int)
    df["seed"] = df["seed"].astype(int)
    df["steps_to_target"] = censor(df["steps_to_target"], at=df["steps"] + 1)  # optbench.censoring, at the budget
    df["diverged"] = (df["status"].astype(str) == "diverged").astype(float)
    for metric in LOSS_METRICS:
        df[metric] = df[metric].astype(float).where(df["diverged"] == 0.0)
    if "test_acc" not in df:
        df["test_acc"] = df["run_id"].map(test_acc).astype(float) if test_acc is not None else np.nan
    if "state_bytes_per_param" not in df:
        df["state_bytes_per_param"] = np.nan
    df["state_bytes_per_param"] = df["state_bytes_per_param"].astype(float)
    if "hparams" not in df:
        df["hparams"] = ""
    df["target"] = df["target"].astype(float) if "target" in df else np.nan  # what steps_to_target counted
    return df[[*KEY, "seed", "hparams", "target", *METRICS]].reset_index(drop=True)


def coverage(new_runs, base_runs, mode: str) -> ConfigMismatch | None:
    """The configurations (and, in exact mode, seeds) one side has and the other lacks; None when equal."""
    new_keys = _keys(new_runs)
    base_keys = _keys(base_runs)
    missing = [config_label(dict(zip(KEY, k, strict=True))) for k in sorted(base_keys - new_keys, key=str)]
    extra = [config_label(dict(zip(KEY, k, strict=True))) for k in sorted(new_keys - base_keys, key=str)]
    seeds = []
    if mode == "exact":
        new_seeds, base_seeds = _per_config(new_runs, "seed"), _per_config(base_runs, "seed")
        for key in sorted(new_keys & base_keys, key=str):
            a, b = base_seeds.get(key, ()), new_seeds.get(key, ())
            if a != b:
                seeds.append(f"{config_label(dict(zip(KEY, key, strict=True)))}: baseline seeds {list(a)}, "
                             f"new seeds {list(b)}")
    if missing or extra or seeds:
        return ConfigMismatch(missing, extra, seeds)
    return None


def _check_targets(new_runs, base_runs) -> None:
    """Steps to target compare only when both sides counted them at the same target (optbench.targets)."""
    new_targets, base_targets = _per_config(new_runs, "target"), _per_config(base_runs, "target")
    for key in sorted(base_targets, key=str):
        a, b = base_targets[key], new_targets.get(key, base_targets[key])
        if not all(math.isnan(x) for x in a + b) and set(a) != set(b):
            def text(targets):
                return ", ".join(f"{t:g}" for t in sorted(set(targets)))

            raise UsageError(f"{config_label(dict(zip(KEY, key, strict=True)))}: the baseline counts steps to "
                             f"target at target {text(a)} and the new results at {text(b)}, so they do not "
                             "compare; re-run at the baseline's target (--target) or record a new baseline.")


def _per_config(runs, column: str) -> dict[tuple, tuple]:
    """{configuration key: sorted values of ``column``} (a dict: keys may hold <NA>, which indexes mishandle)."""
    out: dict[tuple, list] = {}
    for row in runs[[*KEY, column]].itertuples(index=False, name=None):
        out.setdefault(row[:-1], []).append(row[-1])
    return {k: tuple(sorted(v, key=str)) for k, v in out.items()}


def _keys(runs) -> set[tuple]:
    return set(runs[KEY].drop_duplicates().itertuples(index=False, name=None))


def compare(new_summary, baseline_summary, tolerances: Tolerances | None = None, *, new_test_acc=None,
            baseline_test_acc=None):
    """Compare two results summaries; returns one row per (configuration, metric): :data:`VERDICT_COLUMNS`.

    ``passed`` is the verdict; ``direction`` says whether the new value is "better", "worse" or the "same"
    (lower losses, steps and divergence are better; higher test accuracy is). Raises
    :class:`ConfigMismatch` (a UsageError) when the two sets do not cover the same configurations, or, in
    exact mode, the same seeds. A metric that is NaN on both sides for every seed (test accuracy of
    analytic problems) is not checked.
    """
    import pandas as pd

    tol = tolerances or Tolerances()
    new_runs = per_run_metrics(new_summary, new_test_acc)
    base_runs = per_run_metrics(baseline_summary, baseline_test_acc)
    if new_runs.empty or base_runs.empty:
        raise UsageError("Nothing to compare: the " + ("new results" if new_runs.empty else "baseline")
                         + " hold no complete runs.")
    mismatch = coverage(new_runs, base_runs, tol.mode)
    if mismatch is not None:
        raise mismatch
    if tol.for_metric("steps_to_target").enabled:
        _check_targets(new_runs, base_runs)
    rows = []
    new_groups = dict(list(new_runs.groupby(KEY, dropna=False, sort=False)))
    for key, base in base_runs.groupby(KEY, dropna=False, sort=True):
        new = new_groups[key]
        for metric in METRICS:
            mt = tol.for_metric(metric)
            if not mt.enabled or (base[metric].isna().all() and new[metric].isna().all()):
                continue
            if metric in OPTIONAL_METRICS and base[metric].isna().all():
                continue  # the baseline predates (or its engine lacks) this measurement
            if tol.mode == "exact":
                row = _exact(base, new, metric, mt)
            elif metric == "diverged":
                row = _fraction(base, new, metric, mt, tol.z)
            elif tol.test == "rank":
                row = _rank(base, new, metric, mt, tol.alpha)
            else:
                row = _band(base, new, metric, mt, tol.z)
            rows.append({**dict(zip(KEY, key, strict=True)), "metric": metric, "seeds_baseline": len(base),
                         "seeds_new": len(new), **row})
    table = pd.DataFrame(rows, columns=VERDICT_COLUMNS)
    return _verdicts(table, tol)


def _direction(metric: str, base: float, new: float) -> str:
    if _same(base, new):
        return "same"
    if _isnan(new) or (not _isnan(base) and (new > base) != (metric in HIGHER_IS_BETTER)):
        return "worse"
    return "better" if not _isnan(base) else "worse"


def _same(a: float, b: float) -> bool:
    return (_isnan(a) and _isnan(b)) or a == b


def _rel(base: float, new: float) -> float:
    if _same(base, new):
        return 0.0
    if _isnan(base) or _isnan(new) or math.isinf(base) or math.isinf(new) or base == 0:
        return math.inf if not (_isnan(base) or _isnan(new)) else math.nan
    return (new - base) / abs(base)


def _within(base: float, new: float, allowed: float) -> bool:
    if _same(base, new):
        return True
    if _isnan(base) or _isnan(new) or math.isinf(base) or math.isinf(new):
        return False
    return abs(new - base) <= allowed


def _exact(base, new, metric: str, mt: MetricTolerance) -> dict[str, Any]:
    pairs = list(base[["seed", metric]].merge(new[["seed", metric]], on="seed", suffixes=("_b", "_n"))
                 .itertuples(index=False, name=None))
    checked = []  # (failed, |relative change|, seed, base, new): the worst seed sorts last
    for seed, b, n in pairs:
        allowed = mt.atol + mt.rtol * (abs(b) if math.isfinite(b) else 0.0)
        rel = abs(_rel(b, n))
        checked.append((not _within(b, n, allowed), rel if rel == rel else math.inf, seed, b, n))
    failed, _, seed, b, n = max(checked, key=lambda c: (c[0], c[1]))
    b_med, n_med = _median(base[metric]), _median(new[metric])
    allowed = mt.atol + (mt.rtol * abs(b_med) if math.isfinite(b_med) else 0.0)
    changed = sum(not _same(x, y) for _, x, y in pairs)
    detail = "bitwise equal" if not changed else f"seed {seed}: {fmt_g(b)} → {fmt_g(n)}"
    if changed and len(pairs) > 1:
        detail += f" ({changed}/{len(pairs)} seeds changed)"
    return {"baseline": b_med, "new": n_med, "low": b_med - allowed, "high": b_med + allowed,
            "change_rel": _rel(b, n), "direction": _direction(metric, b, n), "passed": not failed,
            "detail": detail}


def _median_se(values) -> float:
    """Standard error of the median from the MAD (normal approximation): 1.2533 · 1.4826 · MAD / √n.

    Values on a grid (steps to target, recorded every N steps) can have MAD 0 while they vary: then the
    standard deviation stands in for 1.4826 · MAD, so that a draw of other seeds is not held to equality.
    """
    import numpy as np

    v = np.asarray(values, dtype=float)
    v = v[np.isfinite(v)]
    if len(v) < 2:
        return 0.0
    spread = 1.4826 * float(np.median(np.abs(v - np.median(v)))) or float(np.std(v, ddof=1))
    return 1.2533 * spread / math.sqrt(len(v))


def _median(values) -> float:
    """Median of the non-NaN values (NaN when there are none: every seed diverged)."""
    import numpy as np

    v = np.asarray(values, dtype=float)
    v = v[~np.isnan(v)]
    return float(np.median(v)) if len(v) else math.nan


def _band(base, new, metric: str, mt: MetricTolerance, z: float) -> dict[str, Any]:
    b, n = _median(base[metric]), _median(new[metric])
    noise = z * math.sqrt(_median_se(base[metric]) ** 2 + _median_se(new[metric]) ** 2)
    allowed = mt.atol + (mt.rtol * abs(b) if math.isfinite(b) else 0.0) + noise
    detail = f"median of {len(new)} vs {len(base)} seeds; noise allowance ±{fmt_g(noise)}"
    return {"baseline": b, "new": n, "low": b - allowed, "high": b + allowed, "change_rel": _rel(b, n),
            "direction": _direction(metric, b, n), "passed": _within(b, n, allowed), "detail": detail}


def _fraction(base, new, metric: str, mt: MetricTolerance, z: float) -> dict[str, Any]:
    """Fraction of diverged seeds: allowed difference atol + z binomial standard errors (pooled)."""
    b, n = float(base[metric].mean()), float(new[metric].mean())
    pooled = (base[metric].sum() + new[metric].sum()) / (len(base) + len(new))
    allowed = mt.atol + z * math.sqrt(pooled * (1 - pooled) * (1 / len(base) + 1 / len(new)))
    return {"baseline": b, "new": n, "low": max(0.0, b - allowed), "high": min(1.0, b + allowed),
            "change_rel": _rel(b, n), "direction": _direction(metric, b, n), "passed": _within(b, n, allowed),
            "detail": f"{int(new[metric].sum())}/{len(new)} diverged (baseline {int(base[metric].sum())}/{len(base)})"}


def mann_whitney_p(x, y) -> float:
    """Two-sided p-value of the Mann–Whitney U test (normal approximation with tie and continuity
    corrections). Identical samples give 1; fewer than 3 values on a side cannot reach small p."""
    import numpy as np
    import pandas as pd

    x, y = np.asarray(x, float), np.asarray(y, float)
    n1, n2 = len(x), len(y)
    ranks = pd.Series(np.concatenate([x, y])).rank(method="average").to_numpy()
    u = ranks[:n1].sum() - n1 * (n1 + 1) / 2
    _, counts = np.unique(np.concatenate([x, y]), return_counts=True)
    n = n1 + n2
    var = n1 * n2 / 12 * ((n + 1) - float((counts**3 - counts).sum()) / (n * (n - 1)))
    if var <= 0:
        return 1.0
    zscore = (abs(u - n1 * n2 / 2) - 0.5) / math.sqrt(var)
    return float(min(1.0, math.erfc(max(zscore, 0.0) / math.sqrt(2))))


def _rank(base, new, metric: str, mt: MetricTolerance, alpha: float) -> dict[str, Any]:
    b, n = _median(base[metric]), _median(new[metric])
    p = mann_whitney_p(base[metric].dropna(), new[metric].dropna())
    allowed = mt.atol + (mt.rtol * abs(b) if math.isfinite(b) else 0.0)
    passed = p >= alpha or _within(b, n, allowed)
    return {"baseline": b, "new": n, "low": b - allowed, "high": b + allowed, "change_rel": _rel(b, n),
            "direction": _direction(metric, b, n), "passed": passed,
            "detail": f"Mann-Whitney p = {p:.2g} (alpha {alpha:g}) over {len(new)} vs {len(base)} seeds"}


def _verdicts(table, tol: Tolerances):
    if table.empty:
        return table
    worse_only = table["metric"].map(lambda m: tol.for_metric(m).direction == "worse")
    forgiven = ~table["passed"] & worse_only & (table["direction"] == "better")
    table.loc[forgiven, "passed"] = True
    table["passed"] = table["passed"].astype(bool)

    def verdict(row) -> str:
        if row["passed"]:
            return "pass" if row["direction"] == "same" or not forgiven[row.name] else "pass (better)"
        return f"FAIL ({row['direction']})"

    table["verdict"] = table.apply(verdict, axis=1)
    return table


def regressions(table):
    """The failed rows of a verdict table."""
    return table[~table["passed"]] if not table.empty else table


def hparam_changes(new_summary, baseline_summary) -> list[str]:
    """Configurations whose resolved hyperparameters differ (a changed default shows up here)."""
    if "hparams" not in new_summary or "hparams" not in baseline_summary:
        return []
    new_runs, base_runs = per_run_metrics(new_summary), per_run_metrics(baseline_summary)
    new_h = {k: v[0] for k, v in _per_config(new_runs, "hparams").items()}
    base_h = {k: v[0] for k, v in _per_config(base_runs, "hparams").items()}
    notes = []
    for key, h in base_h.items():
        if key not in new_h or new_h[key] == h:
            continue
        try:
            a, b = json.loads(h), json.loads(new_h[key])
            diff = ", ".join(f"{k}: {a.get(k)!r} → {b.get(k)!r}" for k in sorted(set(a) | set(b))
                             if a.get(k) != b.get(k))
        except (TypeError, ValueError):
            diff = f"{h} → {new_h[key]}"
        notes.append(f"{config_label(dict(zip(KEY, key, strict=True)))}: hyperparameters changed ({diff})")
    return notes


ENV_KEYS = ("optbench", "torch", "python", "platform", "machine", "threads", "deterministic")


def environment_differences(new_manifest: dict[str, Any], baseline_manifest: dict[str, Any]) -> list[str]:
    """Differences in the recorded environments that can change numbers bitwise (a warning, not a failure)."""
    a, b = baseline_manifest.get("environment", {}), new_manifest.get("environment", {})
    out = []
    for key in ENV_KEYS:
        if a.get(key) != b.get(key):
            out.append(f"{key}: baseline {a.get(key, 'unrecorded')}, new {b.get(key, 'unrecorded')}")
    return out


def last_test_accuracy(steps):
    """Last recorded test accuracy per run (a Series indexed by run_id) from a step table with ``test_acc``."""
    if steps is None or "test_acc" not in steps:
        return None
    df = steps[["run_id", "step", "test_acc"]].dropna(subset=["test_acc"])
    df = df.assign(run_id=df["run_id"].astype(str)).sort_values(["run_id", "step"])
    return df.groupby("run_id")["test_acc"].last()
