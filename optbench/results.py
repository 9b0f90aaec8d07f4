"""The results store: a tidy long table of recorded steps, a per-run summary, and a JSON manifest.

Layout of a results directory::

    manifest.json              sweep config, environment (versions, device, git revision), timings
    steps/<chunk>.parquet      one row per (run, recorded step): STEP_COLUMNS (+ x0..x2, test_* columns)
    summary/<chunk>.parquet    one row per run: SUMMARY_COLUMNS

Each chunk holds whole runs and is written atomically (temporary file, then rename), the summary before
the steps: a run is complete exactly when its steps chunk exists. An interrupted sweep never leaves a
half-written table, and re-running skips complete runs (by ``run_id``, a hash of the run's full config and
the optbench version).
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Iterable
from pathlib import Path
from typing import Any

# One row per (run, recorded step). Coordinates x0, x1, x2 follow for problems of dimension <= 3;
# network problems add test_loss and test_acc (NaN between evaluations).
STEP_COLUMNS = (
    "run_id",  # str: content hash of the run's configuration
    "problem",  # str: problem spec label, e.g. "valley(kappa=100.0)"
    "problem_name",  # str: registry name, e.g. "valley"
    "optimizer",  # str: registry name or user reference, e.g. "adam"
    "optimizer_label",  # str: name and the hyperparameters set explicitly, except lr
    "lr",  # float: learning rate (NaN when the optimizer has none)
    "batch_size",  # Int64: batch size, <NA> for problems without one
    "seed",  # int
    "step",  # int: 0 is the start, t is after t updates
    "loss",  # float: exact loss (analytic) or training mini-batch loss (networks)
    "grad_norm",  # float: norm of the exact gradient
    "wall_time_s",  # float: seconds since the run (or its batched group) started
    "status",  # str: final status of the run: done, diverged or escaped
)
COORD_COLUMNS = ("x0", "x1", "x2")

SUMMARY_COLUMNS = (
    "run_id", "problem", "problem_name", "optimizer", "optimizer_label", "lr", "batch_size", "seed",
    "steps",  # int: step budget
    "final_step",  # int: last step reached (smaller than steps when the run diverged or escaped)
    "final_loss", "best_loss", "best_step",
    "dist_to_min",  # float: distance from the final point to the nearest global minimum (NaN if none)
    "steps_to_target",  # Int64: first recorded step with loss − f* ≤ target (<NA> when never reached)
    "f_min",  # float: the problem's minimum value (NaN if unbounded)
    "target",  # float: the target steps_to_target was counted at (--target, else the problem's; optbench.targets)
    "status", "engine", "wall_time_s",
    "hparams",  # str: JSON of every resolved hyperparameter
    "dim",  # int: problem dimension
)

MANIFEST = "manifest.json"
STEPS_DIR, SUMMARY_DIR = "steps", "summary"


def make_output_dir(path: str | Path, option: str = "--out", shown: str | Path | None = None) -> Path:
    """Create the output directory ``path`` (and its parents); a path that cannot be created is a usage
    error naming the option and ``shown`` (default: ``path``), not a traceback."""
    from optbench.errors import UsageError

    path = Path(path)
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UsageError(f"{option} {str(shown or path)!r}: cannot create this directory "
                         f"({exc.strerror or exc}); choose a writable location.") from None
    return path


def atomic_write_bytes(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_table(path: Path, table) -> None:
    """Write a pyarrow table as Parquet atomically.

    The file is encoded in memory and written with :func:`atomic_write_bytes`: Arrow's own file output
    costs ~1 ms more per file, a quarter of a small chunk's write.
    """
    import pyarrow as pa
    import pyarrow.parquet as pq

    # dictionary-encode only the string columns: floats would waste time on a failed dictionary;
    # no column statistics: nothing reads them (results are read whole), and they cost a third of the write
    strings = [f.name for f in table.schema if pa.types.is_dictionary(f.type) or pa.types.is_string(f.type)]
    buffer = pa.BufferOutputStream()
    pq.write_table(table, buffer, compression="lz4", use_dictionary=strings, write_statistics=False,
                   write_batch_size=1 << 17)
    atomic_write_bytes(path, buffer.getvalue())


def write_manifest(directory: Path, manifest: dict[str, Any]) -> None:
    atomic_write_bytes(Path(directory) / MANIFEST, json.dumps(manifest, indent=2, default=str).encode())


def read_manifest(directory: str | Path) -> dict[str, Any]:
    path = Path(directory) / MANIFEST
    if not path.exists():
        return {}
    return json.loads(path.read_text())


def write_chunk(directory: Path, chunk_id: str, steps_table, summary_table) -> None:
    """Write one chunk: the summary first, then the steps (whose presence marks the runs complete)."""
    atomic_write_table(Path(directory) / SUMMARY_DIR / f"{chunk_id}.parquet", summary_table)
    atomic_write_table(Path(directory) / STEPS_DIR / f"{chunk_id}.parquet", steps_table)


def _check_dir(path: Path) -> None:
    from optbench.errors import UsageError

    if not path.exists():
        raise UsageError(f"Results directory {str(path)!r} does not exist.")
    if not (path / STEPS_DIR).is_dir():
        raise UsageError(
            f"{str(path)!r} is not an optbench results directory (no {STEPS_DIR}/ folder); "
            "create one with 'optbench run ... --out DIR'."
        )


def _complete_chunks(path: Path) -> list[str]:
    return sorted(p.stem for p in (path / STEPS_DIR).glob("*.parquet"))


def _read(paths: Iterable[Path], columns=None):
    import pandas as pd
    import pyarrow.parquet as pq

    tables = [pq.read_table(p, columns=columns).to_pandas() for p in paths]
    if not tables:
        return None
    return pd.concat(tables, ignore_index=True) if len(tables) > 1 else tables[0]


def complete_run_ids(path: str | Path) -> set[str]:
    """Run ids whose results are fully on disk."""
    path = Path(path)
    if not (path / STEPS_DIR).is_dir():
        return set()
    ids: set[str] = set()
    for chunk in _complete_chunks(path):
        summary = path / SUMMARY_DIR / f"{chunk}.parquet"
        if summary.exists():
            import pyarrow.parquet as pq

            ids.update(pq.read_table(summary, columns=["run_id"]).column("run_id").to_pylist())
    return ids


def load_results(*paths: str | Path, columns: list[str] | None = None):
    """Load the tidy step table of one or more results directories as a pandas DataFrame.

    One row per (run, recorded step); columns as in ``STEP_COLUMNS`` plus ``x0``..``x2`` for problems of
    dimension <= 3 (NaN for higher-dimensional ones when mixed). Several directories are concatenated;
    a run present in several (same ``run_id``) is kept once.
    """
    import pandas as pd

    frames = []
    for p in paths:
        p = Path(p)
        _check_dir(p)
        chunks = _complete_chunks(p)
        df = _read([p / STEPS_DIR / f"{c}.parquet" for c in chunks], columns)
        if df is not None:
            frames.append(df)
    if not frames:
        return pd.DataFrame(columns=list(columns or STEP_COLUMNS))
    df = pd.concat(frames, ignore_index=True) if len(frames) > 1 else frames[0]
    if len(paths) > 1 or df.duplicated(["run_id", "step"]).any():
        df = df.drop_duplicates(["run_id", "step"], keep="first").reset_index(drop=True)
    return df


def load_summary(*paths: str | Path):
    """Load the per-run summary (``SUMMARY_COLUMNS``) of complete runs in one or more directories."""
    import pandas as pd

    frames = []
    for p in paths:
        p = Path(p)
        _check_dir(p)
        chunks = _complete_chunks(p)
        df = _read([p / SUMMARY_DIR / f"{c}.parquet" for c in chunks if (p / SUMMARY_DIR / f"{c}.parquet").exists()])
        if df is not None:
            frames.append(df)
    if not frames:
        return pd.DataFrame(columns=list(SUMMARY_COLUMNS))
    df = pd.concat(frames, ignore_index=True) if len(frames) > 1 else frames[0]
    from optbench.targets import fill_default_targets

    return fill_default_targets(df.drop_duplicates("run_id", keep="first").reset_index(drop=True))
