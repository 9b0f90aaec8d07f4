"""Steps to target: the first *recorded* step of a run with ``loss − f* ≤ target`` (``loss ≤ target`` where
the problem has no known minimum f*).

Runs record every ``record_every`` steps (and their last step), so steps to target is the first recorded
step at or below the target, not the first optimizer step: with ``record_every = 10`` a run that gets
there at step 37 counts 40. The target a run was counted at is stored with it (summary column ``target``,
and ``target`` in the manifest's sweep record; ``None`` there: each problem's own target). It is not part
of the run's identity (``run_id``): it does not change the trajectory. So:

- a re-run into a directory with another ``--target`` recomputes the stored ``steps_to_target`` of its
  complete runs from their recorded steps (:func:`retarget_stored_runs`), and the summary states the target
  of the latest sweep that asked for them;
- ``show --target`` and ``report --target`` recompute from the recorded steps in memory
  (:func:`with_target`), leaving the files as they are.

Every path goes through :func:`first_steps_within`, so the numbers agree bitwise whichever way they were
computed (the comparison is done in the dtype of the recorded losses, as the run itself did it).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, overload

from optbench.errors import OptbenchError, UsageError


@overload
def check_target(target: float) -> float: ...
@overload
def check_target(target: None) -> None: ...
@overload
def check_target(target: float | None) -> float | None: ...


def check_target(target: float | None) -> float | None:
    """A target must be a finite number (negative is fine: saddles count ``loss ≤ target``)."""
    if target is None:
        return None
    if isinstance(target, bool) or not isinstance(target, (int, float)) or not math.isfinite(target):
        raise UsageError(f"--target {target!r} must be a finite number.")
    return float(target)


def first_steps_within(run_idx, step, loss, f_min, target, n_runs: int) -> list[int | None]:
    """Per run k: the smallest recorded ``step`` whose ``loss − f_min[k] ≤ target[k]``, None when never.

    ``run_idx[i]`` is the run of row i; ``f_min`` (0 where f* is unknown) and ``target`` hold one value per
    run. The gap and the comparison are computed in the dtype of ``loss``, as a run computes them.
    """
    import numpy as np

    loss = np.asarray(loss)
    dtype = loss.dtype if np.issubdtype(loss.dtype, np.floating) else np.float64
    run_idx = np.asarray(run_idx)
    f_min = np.asarray(f_min, dtype=np.float64).astype(dtype)
    target = np.asarray(target, dtype=np.float64).astype(dtype)
    loss = loss.astype(dtype, copy=False)
    if f_min.size and (f_min == f_min[0]).all() and (target == target[0]).all():
        # one f* and one target for every run (a sweep of one problem): scalars of the same dtype, the same bits
        # per row, over slices of rows, so the gaps never take a row-sized array of fresh memory
        rows = 1 << 16
        hits = np.concatenate([np.flatnonzero(loss[i:i + rows] - f_min[0] <= target[0]) + i
                               for i in range(0, len(loss), rows)] or [np.zeros(0, np.int64)])
    else:
        hits = np.flatnonzero(loss - f_min[run_idx] <= target[run_idx])
    out: list[int | None] = [None] * n_runs
    if not hits.size:
        return out
    hit_runs, hit_steps = run_idx[hits], np.asarray(step)[hits]
    order = np.lexsort((hit_steps, hit_runs))
    runs_hit, first = np.unique(hit_runs[order], return_index=True)
    for k, s in zip(runs_hit.tolist(), hit_steps[order][first].tolist()):
        out[k] = int(s)
    return out


def with_target(steps, summary, target: float):
    """The summary (a DataFrame) with ``steps_to_target`` recounted at ``target`` from the recorded steps
    (a DataFrame with run_id, step, loss) and ``target`` set to it."""
    import numpy as np

    target = check_target(target)
    out = summary.copy()
    ids = out["run_id"].astype(str).to_numpy()
    position = {run_id: k for k, run_id in enumerate(ids)}
    rows = steps[steps["run_id"].astype(str).isin(position)]
    run_idx = rows["run_id"].astype(str).map(position).to_numpy()
    f_min = out["f_min"].astype(float).fillna(0.0).to_numpy()
    reached = first_steps_within(run_idx, rows["step"].to_numpy(), rows["loss"].to_numpy(), f_min,
                                 np.full(len(out), target), len(out))
    import pandas as pd

    out["steps_to_target"] = pd.array(reached, dtype="Int64")
    out["target"] = target
    return out


def retarget_stored_runs(out_dir: str | Path, targets: dict[str, float]) -> int:
    """Recount ``steps_to_target`` of the complete runs ``targets`` names ({run_id: target}) whose stored
    target differs, from their recorded steps, and rewrite those summary chunks (atomically). Returns how
    many runs were recounted."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.parquet as pq

    from optbench.results import STEPS_DIR, SUMMARY_DIR, atomic_write_table

    out = Path(out_dir)
    recounted = 0
    for steps_path in sorted((out / STEPS_DIR).glob("*.parquet")):
        summary_path = out / SUMMARY_DIR / steps_path.name
        if not summary_path.exists():
            continue
        parquet = pq.ParquetFile(summary_path)
        has_target = "target" in parquet.schema_arrow.names
        head = parquet.read(columns=["run_id", "target"] if has_target else ["run_id"])
        ids = [str(i) for i in head.column("run_id").to_pylist()]
        stored = (np.asarray(head.column("target").to_pylist(), dtype=np.float64) if has_target
                  else np.full(len(ids), np.nan))
        wanted = np.array([targets.get(i, s) for i, s in zip(ids, stored)], dtype=np.float64)
        stale = np.array([i in targets for i in ids]) & ~(wanted == stored)
        if not stale.any():  # the common re-run: same target, only two columns read
            continue
        table = pq.read_table(summary_path)
        position = {run_id: k for k, run_id in enumerate(ids)}
        steps = pq.read_table(steps_path, columns=["run_id", "step", "loss"])
        row_ids = [str(i) for i in steps.column("run_id").to_pylist()]
        run_idx = np.array([position.get(i, -1) for i in row_ids], dtype=np.int64)
        keep = run_idx >= 0
        f_min = np.nan_to_num(np.asarray(table.column("f_min").to_pylist(), dtype=np.float64), nan=0.0)
        reached = first_steps_within(run_idx[keep], steps.column("step").to_numpy()[keep],
                                     steps.column("loss").to_numpy()[keep], f_min, wanted, len(ids))
        old = table.column("steps_to_target").to_pylist()
        new_steps = [reached[k] if stale[k] else old[k] for k in range(len(ids))]
        table = _replace_column(table, "steps_to_target", pa.array(new_steps, pa.int64()))
        table = _replace_column(table, "target", pa.array(wanted, pa.float64()))
        atomic_write_table(summary_path, table)
        recounted += int(stale.sum())
    return recounted


def _replace_column(table, name: str, values) -> Any:
    if name in table.column_names:
        return table.set_column(table.column_names.index(name), name, values)
    return table.append_column(name, values)


def fill_default_targets(summary):
    """Summaries written before the target was stored with each run lack it (or hold NaN where such chunks
    are merged with newer ones): those runs were counted at their problem's own target, filled in here."""
    if "target" in summary and not summary["target"].isna().any():
        return summary
    from optbench.problems import get_problem

    summary = summary.copy()
    if "target" not in summary:
        summary["target"] = float("nan")
    missing = summary["target"].isna()
    own = {}
    for problem in summary.loc[missing, "problem"].astype(str).unique():
        try:
            own[problem] = float(get_problem(problem).target)
        except OptbenchError:  # a problem this version no longer knows: its target stays unknown (NaN)
            own[problem] = float("nan")
    summary.loc[missing, "target"] = summary.loc[missing, "problem"].astype(str).map(own)
    return summary


def mixed_targets(summary) -> dict[str, list[float]]:
    """{problem: its stored targets} for problems whose runs were counted at more than one target."""
    out: dict[str, list[float]] = {}
    if "target" not in summary or summary.empty:
        return out
    for problem, values in summary.groupby(summary["problem"].astype(str))["target"]:
        distinct = sorted(set(values.astype(float).tolist()))
        if len(distinct) > 1:
            out[problem] = distinct
    return out


def mixed_targets_warning(summary) -> str | None:
    """One sentence when a problem's runs were counted at different targets (their steps to target do not
    compare); None otherwise."""
    mixed = mixed_targets(summary)
    if not mixed:
        return None
    parts = "; ".join(f"{p}: {', '.join(f'{t:g}' for t in ts)}" for p, ts in mixed.items())
    return (f"runs of the same problem were counted at different targets ({parts}); their steps to target do "
            "not compare: pass --target to recount them all at one.")
