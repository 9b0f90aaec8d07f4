"""Time to result of a network run: steps, examples and training seconds until it first meets a target.

A **result target** is ``METRIC>=VALUE`` or ``METRIC<=VALUE`` on a recorded metric: ``loss`` (the training
mini-batch loss minus f*, as steps to target counts it), ``test_loss``, ``test_acc`` or a user task's
``test_<name>``. Each run's own target is its problem's (a :class:`~optbench.problems.user.TrainingTask`'s
``result_target``), else the training-loss target steps to target uses (``loss<=TARGET``: then
``steps_to_result`` equals ``steps_to_target``).

From the first *recorded* row that meets the target (test metrics exist at evaluations only, so the
resolution is ``eval_every``, as in AlgoPerf, which also scores at evaluations):

- ``steps_to_result``: its step;
- ``examples_to_result``: training examples consumed by then (step column ``examples``: full epochs × n plus
  the batches of the current epoch; the last batch of an epoch is smaller when the batch size does not divide n);
- ``seconds_to_result``: training seconds by then (step column ``train_time_s``): wall-clock time of the steps
  with every evaluation (test set, noise-scale probe) left out, read after synchronising the device. A
  batched group of K runs shares one clock; each run gets 1/K of it, as ``step_time_s`` does.

All three are <NA> when the run never met the target: aggregations censor them (never = ∞,
:mod:`optbench.censoring`), like steps to target. ``examples_per_s`` is a run's throughput over its whole
budget: examples at its last step / its training seconds (a cost column, :mod:`optbench.cost`).
``show``/``report --result-target`` recount at other targets from the recorded rows
(:func:`with_result_target`) without touching the files.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from optbench.errors import UsageError
from optbench.formatting import is_missing

RESULT_COLUMNS = ("steps_to_result", "examples_to_result", "seconds_to_result")  # censored: <NA> = never
TIME_METRICS = RESULT_COLUMNS  # usable as --metric (ranking, profiles, bs × lr grids), lower is better
_TARGET_RE = re.compile(r"^\s*([A-Za-z_][A-Za-z0-9_]*)\s*(>=|<=)\s*([-+0-9.eEinfINF]+)\s*$")


@dataclass(frozen=True)
class ResultTarget:
    """``metric op value``; ``loss`` means the training mini-batch loss − f* (f* = 0 when unknown)."""

    metric: str
    op: str  # ">=" or "<="
    value: float

    def __str__(self) -> str:
        return f"{self.metric}{self.op}{self.value:g}"

    def met(self, values):
        """Boolean array: where ``values`` meet the target (NaN never does)."""
        import numpy as np

        values = np.asarray(values, dtype=np.float64)
        with np.errstate(invalid="ignore"):
            return values >= self.value if self.op == ">=" else values <= self.value


def check_metric(metric: str | None) -> str | None:
    """A ranking metric must be one of :data:`TIME_METRICS` (None: the comparison table's own rule)."""
    if metric is not None and metric not in TIME_METRICS:
        from optbench.errors import suggest

        raise UsageError(f"Unknown ranking metric {metric!r}.{suggest(metric, TIME_METRICS)} Valid: "
                         f"{', '.join(TIME_METRICS)} (default: the comparison table's own rule).")
    return metric


def parse_result_target(text: str, metrics: Iterable[str] | None = None) -> ResultTarget:
    """``"test_acc>=0.9"`` → ResultTarget; ``metrics`` (if given) lists the valid metric names besides
    ``loss``, ``test_loss`` and ``test_acc``."""
    match = _TARGET_RE.match(str(text))
    if not match:
        raise UsageError(f"Result target {text!r}: expected METRIC>=VALUE or METRIC<=VALUE, e.g. test_acc>=0.9 "
                         "or test_loss<=0.3.")
    metric, op, raw = match.groups()
    try:
        value = float(raw)
    except ValueError:
        raise UsageError(f"Result target {text!r}: {raw!r} is not a number.") from None
    if not math.isfinite(value):
        raise UsageError(f"Result target {text!r}: the value must be finite.")
    known = {"loss", "test_loss", "test_acc", *(metrics or ())}
    if metrics is not None and metric not in known:
        from optbench.errors import suggest

        raise UsageError(f"Result target {text!r}: unknown metric {metric!r}.{suggest(metric, known)} "
                         f"Valid: {', '.join(sorted(known))}.")
    return ResultTarget(metric, op, value)


def parse_result_targets(text: str | None) -> list[ResultTarget]:
    """A comma-separated list of result targets (``--result-target``)."""
    if not text:
        return []
    return [parse_result_target(part) for part in str(text).split(",") if part.strip()]


def examples_seen(steps, n_train: int, batch_size: int):
    """Training examples consumed after each of ``steps`` updates (per-epoch permutations, smaller last batch)."""
    import numpy as np

    per_epoch = -(-n_train // batch_size)
    steps = np.asarray(steps, dtype=np.int64)
    return (steps // per_epoch) * n_train + (steps % per_epoch) * batch_size


def first_hits(target: ResultTarget, values, f_min: float = 0.0):
    """Per run (column of ``values`` ``[R, K]``, rows in step order, NaN past a run's end): the first row that
    meets ``target``, -1 when none does. ``loss`` values are gaps to ``f_min``."""
    import numpy as np

    values = np.asarray(values, dtype=np.float64)
    if target.metric == "loss":
        values = values - (0.0 if is_missing(f_min) else f_min)
    met = target.met(values)
    return np.where(met.any(axis=0), met.argmax(axis=0), -1)


def run_target(problem, resolved_target: float) -> ResultTarget:
    """A run's own result target: its problem's (a user task's ``result_target``, or the evaluation target a
    built-in workload states at its reference size, e.g. ``test_acc>=0.94`` for the airbench-sized ResNet),
    else ``loss<=`` its steps-to-target threshold."""
    own = getattr(problem, "result_target", None)
    if own is not None:
        return own
    stated = getattr(problem, "eval_target", None)  # optbench.problems.nets.EvalTarget
    if stated is not None:
        return ResultTarget(stated.column, ">=" if stated.higher_is_better else "<=", float(stated.value))
    return ResultTarget("loss", "<=", float(resolved_target))


def trace_results(runs, trace) -> dict[str, list]:
    """The summary columns of time to result for the K runs of a network GroupTrace (rows past a run's end
    step are ignored); empty / <NA> for analytic problems."""
    import numpy as np

    K = len(runs)
    out: dict[str, list] = {"result_target": [""] * K, "steps_to_result": [None] * K,
                            "examples_to_result": [None] * K, "seconds_to_result": [math.nan] * K}
    if runs[0].problem.kind == "analytic":
        return out
    steps = trace.steps
    examples = examples_seen(steps, runs[0].problem.n_train, runs[0].problem.batch_size)
    seconds = trace.wall_time_s / K  # the K runs of a work item share its clock
    for k, run in enumerate(runs):
        target = run_target(run.problem, run.resolved_target)
        alive = steps <= trace.end_step[k]
        column = trace.loss[:, k] if target.metric == "loss" else trace.extra.get(target.metric)
        out["result_target"][k] = str(target)
        if column is not None:
            column = column if column.ndim == 1 else column[:, k]
            row = int(first_hits(target, np.where(alive, column, np.nan)[:, None], run.problem.f_min)[0])
            if row >= 0:
                out["steps_to_result"][k] = int(steps[row])
                out["examples_to_result"][k] = int(examples[row])
                out["seconds_to_result"][k] = float(seconds[row, k])
    return out


def with_result_target(steps, summary, target: ResultTarget):
    """The summary (a DataFrame) with the time-to-result columns recounted at ``target`` from the recorded rows
    (a DataFrame with run_id, step, examples, train_time_s and the target's metric), ``result_target`` set to
    it. Runs without those rows (analytic problems, or results written before them) get <NA>."""
    import numpy as np
    import pandas as pd

    out = summary.copy()
    needed = {"run_id", "step", "examples", "train_time_s"} | ({"loss"} if target.metric == "loss"
                                                                 else {target.metric})
    for c in RESULT_COLUMNS:
        out[c] = pd.array([None] * len(out), dtype="Int64" if c != "seconds_to_result" else "Float64")
    out["result_target"] = str(target)
    if not needed <= set(steps.columns):
        return out
    rows = steps[steps["run_id"].astype(str).isin(set(out["run_id"].astype(str)))]
    rows = rows.dropna(subset=["examples"]).sort_values(["run_id", "step"])
    f_min = out.set_index(out["run_id"].astype(str))["f_min"].astype(float)
    found: dict[str, tuple[int, int, float]] = {}
    for run_id, g in rows.groupby(rows["run_id"].astype(str), sort=False):
        values = g["loss" if target.metric == "loss" else target.metric].to_numpy(dtype=np.float64)
        row = int(first_hits(target, values[:, None], float(f_min.get(run_id, 0.0)))[0])
        if row >= 0:
            found[run_id] = (int(g["step"].iloc[row]), int(g["examples"].iloc[row]),
                             float(g["train_time_s"].iloc[row]))
    ids = out["run_id"].astype(str)
    for i, c in enumerate(RESULT_COLUMNS):
        values = [found[r][i] if r in found else None for r in ids]
        out[c] = pd.array(values, dtype="Int64" if c != "seconds_to_result" else "Float64")
    return out


def result_columns(table) -> list[tuple[str, Callable[[Any], str]]]:
    """The time-to-result and throughput columns of a comparison table (``summary.aggregate``) that hold values,
    as (header, row → text): censored medians shown as steps to target are ('72', '72 (2/3)', 'never (1/3)')."""
    from optbench.censoring import format_steps
    from optbench.formatting import fmt_num

    out: list[tuple[str, Callable[[Any], str]]] = []
    if result_target_text(table):
        def censored(column, fmt):
            return lambda r: format_steps(r[column], r["result_reached"], r["seeds"], fmt)

        out += [("steps→result", censored("steps_to_result", lambda v: str(int(v)))),
                ("examples→result", censored("examples_to_result", lambda v: str(int(v)))),
                ("s→result", censored("seconds_to_result", lambda v: fmt_num(v, 3)))]
    if "examples_per_s" in table and table["examples_per_s"].notna().any():
        out.append(("examples/s", lambda r: str(int(round(r["examples_per_s"]))) if r["examples_per_s"] == r[
            "examples_per_s"] else "—"))
    if "peak_rss_bytes" in table and table["peak_rss_bytes"].notna().any():
        out.append(("RSS MiB", lambda r: fmt_num(r["peak_rss_bytes"] / 2**20, 3)))
    if "peak_memory_bytes" in table and table["peak_memory_bytes"].notna().any():
        out.append(("CUDA MiB", lambda r: fmt_num(r["peak_memory_bytes"] / 2**20, 3)))
    return out


def result_target_text(table) -> str:
    """The result targets of a comparison table's rows, for its title ('' when it has none)."""
    if "result_target" not in table:
        return ""
    targets = [t for t in dict.fromkeys(", ".join(table["result_target"].astype(str)).split(", ")) if t]
    return ", ".join(targets)
