"""A work item's GroupTrace as result tables: the steps table (one row per run and recorded step) and the
summary table (one row per run), as pyarrow tables (schema: docs/results.md)."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from optbench.sweep.spec import Run


def trace_tables(runs: list[Run], trace, engine: str):
    """Turn a GroupTrace of these runs into (steps table, summary table) as pyarrow tables.

    Each run keeps its recorded rows strictly before its end step, then one row at its end step; rows
    are ordered by run, then step. Per-run strings are dictionary-encoded. Columns are built from numpy
    buffers (:mod:`optbench.columns`), so writing results never imports pandas.
    """
    import numpy as np
    import pyarrow as pa

    from optbench import columns as arrow

    K = len(runs)
    end = trace.end_step
    before_end = trace.steps[None, :] < end[:, None]  # [K, R]
    kept = before_end.sum(axis=1)
    counts = kept + 1
    if (kept == kept[0]).all() and before_end[:, : kept[0]].all():
        # every run keeps the same leading grid rows (the common case: no run stopped early): slices only
        m = int(kept[0])

        def col(grid_values, end_values):
            if m < len(grid_values) and _same_bits(grid_values[m], end_values):
                # every run ends on grid row m (no run stopped between recorded steps): the column is the first
                # m + 1 rows, run by run; a view, without a copy, of run-major buffers (engines.batched_numpy)
                return grid_values[: m + 1].T.reshape(-1)
            return np.concatenate([grid_values[:m].T, end_values[:, None]], axis=1).reshape(-1)
    else:
        keep = np.concatenate([before_end, np.ones((K, 1), bool)], axis=1)  # [K, R + 1]

        def col(grid_values, end_values):
            return np.concatenate([grid_values.T, end_values[:, None]], axis=1)[keep]

    run_idx = np.repeat(np.arange(K, dtype=np.int32), counts)
    loss = col(trace.loss, trace.end_loss)
    step = col(np.broadcast_to(trace.steps[:, None], (len(trace.steps), K)), end).astype(np.int64, copy=False)
    configs = _RunConfigs(runs)

    def per_run(values, dtype):
        return arrow.numeric(np.repeat(np.asarray(values, dtype=dtype), counts))

    batch_size = configs.values("batch_size")
    columns = {
        "run_id": arrow.dictionary(run_idx, [r.run_id for r in runs]),
        "problem": configs.dictionary("problem", run_idx),
        "problem_name": configs.dictionary("problem_name", run_idx),
        "optimizer": configs.dictionary("optimizer", run_idx),
        "optimizer_label": configs.dictionary("optimizer_label", run_idx),
        "lr": per_run(configs.values("lr"), np.float64),
        "batch_size": pa.nulls(len(run_idx), pa.int64()) if batch_size[0] is None else per_run(batch_size, np.int64),
        "seed": per_run([r.seed for r in runs], np.int64),
        "step": arrow.numeric(step),
        "loss": arrow.numeric(loss),
        "grad_norm": arrow.numeric(col(trace.grad_norm, trace.end_grad_norm)),
        "wall_time_s": arrow.numeric(col(trace.wall_time_s, trace.end_wall_time_s)),
        "status": _row_codes(trace.status, run_idx),
    }
    if trace.coords is not None:
        for i in range(trace.coords.shape[-1]):
            columns[f"x{i}"] = arrow.numeric(col(trace.coords[..., i], trace.end_x[:, i]))
    for name, values in trace.extra.items():
        # extra metrics (e.g. test accuracy) at the end row: the last recorded value of that run
        last = np.array([values[min(np.searchsorted(trace.steps, e, side="right") - 1, len(values) - 1), k]
                         for k, e in enumerate(end)])
        columns[name] = arrow.numeric(col(values, last), np.float64)
    if runs[0].problem.kind != "analytic":  # time to result (optbench.time_to_result), exact at every row
        from optbench.time_to_result import examples_seen

        problem: Any = runs[0].problem  # a network problem (problems.base.TrainingProtocol)
        columns["examples"] = arrow.numeric(examples_seen(step, problem.n_train, problem.batch_size), np.int64)
        columns["train_time_s"] = arrow.numeric(col(trace.wall_time_s, trace.end_wall_time_s) / K, np.float64)
    steps_table = arrow.table(columns)
    summary = summarize_trace(runs, trace, run_idx, step, loss, engine, configs)
    return steps_table, summary


def _same_bits(a, b) -> bool:
    """Whether two arrays hold the same dtype, shape and bytes (NaN payloads and signed zeros included)."""
    import numpy as np

    a, b = np.asarray(a), np.asarray(b)
    return (a.dtype == b.dtype and a.shape == b.shape
            and bool((np.ascontiguousarray(a).view(np.uint8) == np.ascontiguousarray(b).view(np.uint8)).all()))


def _row_codes(values, run_idx):
    """A per-run string column repeated over each run's rows, dictionary-encoded (one value: zero indices)."""
    import numpy as np

    from optbench import columns as arrow

    indices, uniq = arrow.codes(values)
    return arrow.dictionary(np.zeros(len(run_idx), np.int32) if len(uniq) == 1 else indices[run_idx], uniq)


class _RunConfigs:
    """The per-configuration columns of a group of runs, computed once per configuration.

    The seeds of one configuration share their problem and optimizer objects and their recipe, so labels,
    hyperparameter JSON and the like are computed once per configuration, not once per run (a batched
    group of 1000 seeds has one configuration).
    """

    def __init__(self, runs: Sequence[Run]):
        import numpy as np

        index: dict[tuple, int] = {}
        self.rows: list[dict[str, Any]] = []
        of_run = []
        for run in runs:
            key = (id(run.problem), id(run.optimizer), run.steps, run.recipe, run.recipe_name)
            if key not in index:
                index[key] = len(self.rows)
                problem, optimizer = run.problem, run.optimizer
                self.rows.append({
                    "problem": problem.label, "problem_name": problem.name, "optimizer": optimizer.name,
                    "optimizer_label": run.optimizer_label,
                    "lr": optimizer.lr if optimizer.lr is not None else np.nan,
                    "batch_size": problem.batch_size, "steps": run.steps,
                    "hparams": json.dumps(optimizer.hyperparams, sort_keys=True, default=repr),
                    "schedule": run.recipe.schedule,
                    "recipe": json.dumps(run.recipe.identity(), sort_keys=True, default=repr),
                    "recipe_name": run.recipe_name or "",  # '': no named recipe
                })
            of_run.append(index[key])
        self.of_run = np.asarray(of_run, dtype=np.int32)  # [K] configuration of each run

    def values(self, name: str) -> list[Any]:
        """The per-run values of column ``name``."""
        by_config = [row[name] for row in self.rows]
        return [by_config[i] for i in self.of_run.tolist()]

    def dictionary(self, name: str, run_idx=None):
        """Column ``name`` dictionary-encoded, one entry per run (or per row, given each row's run index)."""
        import numpy as np

        from optbench import columns as arrow

        indices, uniq = arrow.codes([row[name] for row in self.rows], self.of_run)
        if run_idx is not None:
            # one value (one problem, one optimizer...): zeros, which cost no fresh memory until read
            indices = np.zeros(len(run_idx), np.int32) if len(uniq) == 1 else indices[run_idx]
        return arrow.dictionary(indices, uniq)

    def strings(self, name: str):
        """Column ``name`` as plain strings, one per run (built directly: ``dictionary_decode`` would import
        ``pyarrow.compute``, ~50 ms, on a path that needs nothing else from it)."""
        from optbench import columns as arrow

        return arrow.strings(self.values(name))


def summarize_trace(runs, trace, run_idx, step, loss, engine, configs: _RunConfigs | None = None):
    import numpy as np

    from optbench import columns as arrow
    from optbench.cost import SUMMARY_COST_COLUMNS
    from optbench.targets import first_steps_within
    from optbench.time_to_result import trace_results

    problem = runs[0].problem
    K = len(runs)
    configs = configs or _RunConfigs(runs)
    f_min = problem.f_min if problem.f_min is not None else np.nan
    # per run (rows are grouped by run, every run has at least its end row): the first minimum of the
    # finite losses, and the first step within the target
    best_loss, best_step = _first_minima(run_idx, step, loss, K)
    targets = np.array([r.resolved_target for r in runs], dtype=np.float64)
    to_target = first_steps_within(run_idx, step, loss, np.zeros(K) if problem.f_min is None
                                   else np.full(K, problem.f_min), targets, K)
    dist = np.asarray(problem.distance_to_minimum(np.asarray(trace.end_x, dtype=np.float64)), dtype=np.float64)
    results = trace_results(runs, trace)  # time to result (network runs; optbench.time_to_result)

    def same(value, dtype):
        return arrow.numeric(np.full(K, value, dtype=dtype))

    return arrow.table({
        "run_id": arrow.strings([r.run_id for r in runs]),
        "problem": configs.strings("problem"),
        "problem_name": configs.strings("problem_name"),
        "optimizer": configs.strings("optimizer"),
        "optimizer_label": configs.strings("optimizer_label"),
        "lr": arrow.numeric(configs.values("lr"), np.float64),
        "batch_size": arrow.optional_int64(configs.values("batch_size")),
        "seed": arrow.numeric([r.seed for r in runs], np.int64),
        "steps": arrow.numeric(configs.values("steps"), np.int64),
        "final_step": arrow.numeric(trace.end_step, np.int64),
        "final_loss": arrow.numeric(trace.end_loss, np.float64),
        "best_loss": arrow.numeric(best_loss),
        "best_step": arrow.numeric(best_step),
        "dist_to_min": arrow.numeric(dist, np.float64),
        "steps_to_target": arrow.optional_int64(to_target),
        "f_min": same(f_min, np.float64),
        "target": arrow.numeric(targets),
        "status": arrow.strings(list(trace.status)),
        "engine": arrow.strings([engine] * K),
        "wall_time_s": arrow.numeric(trace.end_wall_time_s, np.float64),
        "hparams": configs.strings("hparams"),
        "dim": same(problem.dim, np.int64),
        "schedule": configs.strings("schedule"),
        "recipe": configs.strings("recipe"),
        "recipe_name": configs.strings("recipe_name"),
        "result_target": arrow.strings(results["result_target"]),
        "steps_to_result": arrow.optional_int64(results["steps_to_result"]),
        "examples_to_result": arrow.optional_int64(results["examples_to_result"]),
        "seconds_to_result": arrow.numeric(results["seconds_to_result"], np.float64),
        **({"noise_scale": arrow.numeric(_last_finite(trace.extra["noise_scale"], trace.steps, trace.end_step))}
           if "noise_scale" in trace.extra else {}),
        **{c: arrow.numeric(np.asarray(trace.cost.get(c, np.full(K, np.nan)), np.float64))
           for c in SUMMARY_COST_COLUMNS},
    })


def _first_minima(run_idx, step, loss, K: int):
    """Per run: the first minimum of its finite losses and its step (NaN and 0 when none is finite).

    Rows are grouped by run. When every run has the same number of rows (no run stopped early) the rows are a
    [K, rows] array and this is an ``argmin`` per row (the first of equal minima, as the general path), with no
    fresh row-sized arrays when every loss is finite."""
    import numpy as np

    best_loss, best_step = np.full(K, np.nan), np.zeros(K, np.int64)
    rows = len(loss) // K if K else 0
    # run_idx does not decrease, so blocks of `rows` that each start and end with their own run are its rows
    if rows and rows * K == len(loss) and (run_idx[::rows] == np.arange(K)).all() \
            and (run_idx[rows - 1::rows] == np.arange(K)).all():
        losses = loss.reshape(K, rows)
        finite = np.isfinite(losses)
        if not finite.all():
            losses = np.where(finite, losses, np.inf)
        at = losses.argmin(axis=1)
        runs = np.arange(K)
        lowest = losses[runs, at]
        has_best = np.isfinite(lowest)
        best_loss[has_best] = lowest[has_best]
        best_step[has_best] = step.reshape(K, rows)[runs, at][has_best]
        return best_loss, best_step
    starts = np.searchsorted(run_idx, np.arange(K))
    finite_loss = np.where(np.isfinite(loss), loss, np.inf)
    seg_min = np.minimum.reduceat(finite_loss, starts)
    at_min = np.flatnonzero(finite_loss == seg_min[run_idx])
    runs_at_min, first = np.unique(run_idx[at_min], return_index=True)
    has_best = np.isfinite(seg_min[runs_at_min])
    best_loss[runs_at_min[has_best]] = loss[at_min[first]][has_best]
    best_step[runs_at_min[has_best]] = step[at_min[first]][has_best]
    return best_loss, best_step


def _last_finite(values, steps, end_step):
    """Per run k: the last finite ``values[:, k]`` at a recorded step ≤ its end step (NaN if none)."""
    import numpy as np

    out = np.full(values.shape[1], np.nan)
    for k in range(values.shape[1]):
        col = values[:, k][steps <= end_step[k]]
        finite = col[np.isfinite(col)]
        if finite.size:
            out[k] = finite[-1]
    return out
