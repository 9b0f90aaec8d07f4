"""The results store: a tidy long table of recorded steps, a per-run summary, and a JSON manifest.

Layout of a results directory::

    manifest.json              sweep config, environment (versions, device, git revision), timings
    steps/<chunk>.parquet      one row per (run, recorded step): STEP_COLUMNS (+ x0..x2, test_* columns)
    summary/<chunk>.parquet    one row per run: SUMMARY_COLUMNS

Each chunk holds whole runs and is written atomically (temporary file, then rename), the summary before
the steps: a run is complete exactly when its steps chunk exists. An interrupted sweep never leaves a
half-written table, and re-running skips complete runs (by ``run_id``, a hash of the run's full config and
the optbench version).

Faults: before skipping a chunk's runs, a re-run verifies the chunk (both Parquet footers readable, the
steps rows holding exactly the summary's runs); a damaged chunk is renamed ``<chunk>.parquet.damaged``
and its runs run again. Temporaries are named ``.<file>.<pid>.<random>.tmp`` so that those left by a
killed process (whose pid is gone) can be removed. ``manifest.json`` is read, changed and written under an
exclusive lock (``.manifest.lock``, ``flock``), so concurrent sweeps into one directory keep every record; a
damaged manifest is set aside as ``manifest.json.damaged`` and started afresh. Files are created with the
mode the umask gives (0666 & ~umask), like any other file the user writes.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import tempfile
import time
import warnings
from collections.abc import Callable, Iterable, Iterator
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


def current_umask() -> int:
    """The process umask, read without changing it where Linux allows (≥ 4.7)."""
    with contextlib.suppress(OSError, ValueError):
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    umask = os.umask(0o022)  # elsewhere: read it by setting it, and put it back at once
    os.umask(umask)
    return umask


def file_mode() -> int:
    """The mode a new file gets from the umask (0666 & ~umask): ``mkstemp`` alone would give 0600,
    making results private to their owner in a shared directory."""
    return 0o666 & ~current_umask()


_TEMPORARY = re.compile(r"^\.(?P<name>.+)\.(?P<pid>\d+)\.[^.]+\.tmp$")
STALE_UNOWNED_TMP_S = 3600  # a temporary without a pid in its name (older optbench) is stale after an hour


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically: a temporary in the same directory, fsync, then rename.
    The temporary's name carries this process's id (see :func:`remove_stale_temporaries`)."""
    _atomic_write(path, lambda f: f.write(data))


def _atomic_write(path: Path, write) -> None:
    """:func:`atomic_write_bytes` with ``write(file)`` writing the contents."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.{os.getpid()}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            os.fchmod(f.fileno(), file_mode())
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as exc:
        Path(tmp).unlink(missing_ok=True)
        if isinstance(exc, OSError) and exc.filename is None:  # a failed write() names no file: name it
            exc.filename = str(path)
        raise


def _alive(pid: int) -> bool:
    """Whether process ``pid`` can still write: it exists and has not exited. A zombie (exited, not yet reaped:
    a killed worker whose parent died too waits for init to reap it) writes nothing more."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's live process
        return True
    try:  # Linux: the state follows the command name's closing parenthesis in /proc/PID/stat
        state = Path(f"/proc/{pid}/stat").read_bytes().rsplit(b")", 1)[1].split()[0]
    except (OSError, IndexError):
        return True  # no /proc (another system): os.kill said it exists
    return state not in (b"Z", b"X")


def remove_stale_temporaries(directory: Path) -> list[Path]:
    """Delete the temporaries that a killed writer left in ``directory``, ``steps/`` and ``summary/``:
    those whose writing process no longer exists (temporaries of live writers, e.g. a concurrent sweep
    into the same directory, are kept). Returns the removed paths."""
    removed = []
    for folder in (directory, directory / STEPS_DIR, directory / SUMMARY_DIR):
        if not folder.is_dir():
            continue
        for tmp in folder.glob(".*.tmp"):
            match = _TEMPORARY.match(tmp.name)
            try:
                stale = (not _alive(int(match["pid"])) if match
                         else time.time() - tmp.stat().st_mtime > STALE_UNOWNED_TMP_S)
                if stale:
                    tmp.unlink()
                    removed.append(tmp)
            except FileNotFoundError:  # removed meanwhile (its writer renamed it, or another cleaner)
                continue
    return removed


def _probe(folder: Path) -> None:
    """Create ``folder`` if needed, then write and remove a small file in it (raises OSError)."""
    import errno

    if folder.exists() and not folder.is_dir():
        raise NotADirectoryError(errno.ENOTDIR, os.strerror(errno.ENOTDIR), str(folder))
    folder.mkdir(parents=True, exist_ok=True)
    fd, probe = tempfile.mkstemp(dir=folder, prefix=f".probe.{os.getpid()}.", suffix=".tmp")
    try:
        os.write(fd, b"optbench")
    finally:
        os.close(fd)
        os.unlink(probe)


def check_writable(directory: str | Path, option: str = "--out") -> Path:
    """Fail now, before any compute, when results cannot be written into ``directory`` (and its
    ``steps/`` and ``summary/``): create them and write and remove a probe file in each. Returns it."""
    from optbench.errors import UsageError, os_error_message

    directory = make_output_dir(directory, option)
    for folder in (directory, directory / STEPS_DIR, directory / SUMMARY_DIR):
        try:
            _probe(folder)
        except OSError as exc:
            exc.filename = exc.filename or str(folder)
            raise UsageError(f"{option} {str(directory)!r}: cannot write results there. "
                             f"{os_error_message(exc) or exc}") from None
    return directory


def check_file_writable(path: str | Path, option: str) -> None:
    """Fail now, before any compute, when the output file ``path`` of ``option`` (``--junit``, ``--csv``,
    …) cannot be written: it must not be a directory, and its folder must take a new file."""
    from optbench.errors import UsageError, os_error_message

    path = Path(path)
    if path.is_dir():
        raise UsageError(f"{option} {str(path)!r} is a directory; give a file path.")
    try:
        _probe(path.parent)
        if path.exists() and not os.access(path, os.W_OK):
            raise PermissionError(13, "Permission denied", str(path))
    except OSError as exc:
        exc.filename = exc.filename or str(path.parent)
        raise UsageError(f"{option} {str(path)!r}: cannot write this file. {os_error_message(exc) or exc}") from None


STREAM_TABLE_BYTES = 8 << 20  # atomic_write_table: larger tables are encoded straight into the file


def atomic_write_table(path: Path, table) -> None:
    """Write a pyarrow table as Parquet atomically.

    A small table is encoded in memory and written with :func:`atomic_write_bytes`: Arrow's own file output
    costs ~1 ms more per file, a quarter of a small chunk's write. A large one (over STREAM_TABLE_BYTES) is
    encoded straight into the temporary file: the in-memory buffer would grow by doubling to twice the file's
    size, fresh memory that costs more than the file output (the file's bytes are the same either way).
    """
    import pyarrow as pa
    import pyarrow.parquet as pq

    # dictionary-encode only the string columns: floats would waste time on a failed dictionary;
    # no column statistics: nothing reads them (results are read whole), and they cost a third of the write;
    # floats byte-stream-split (each value's 8 bytes stored as 8 streams, so lz4 finds the repeats in signs,
    # exponents and leading mantissa bytes of a trajectory): a 1000-run × 1001-row steps chunk takes 24.0 MB
    # instead of 33.0 MB (raw floats do not compress under lz4), at the same encode and read time, and every
    # Parquet reader reads it back to the same table (BYTE_STREAM_SPLIT: Parquet format 2.8)
    strings = [f.name for f in table.schema if pa.types.is_dictionary(f.type) or pa.types.is_string(f.type)]
    floats = [f.name for f in table.schema if pa.types.is_floating(f.type)]
    options = {"compression": "lz4", "use_dictionary": strings, "write_statistics": False,
               "write_batch_size": 1 << 17, "use_byte_stream_split": floats or False}
    if table.nbytes > STREAM_TABLE_BYTES:
        _atomic_write(path, lambda f: pq.write_table(table, f, **options))
        return
    buffer = pa.BufferOutputStream()
    pq.write_table(table, buffer, **options)
    atomic_write_bytes(path, buffer.getvalue())


def write_manifest(directory: Path, manifest: dict[str, Any]) -> None:
    """Replace the manifest whole. Prefer :func:`update_manifest`, which is safe with concurrent writers."""
    atomic_write_bytes(Path(directory) / MANIFEST, json.dumps(manifest, indent=2, default=str).encode())


def read_manifest(directory: str | Path) -> dict[str, Any]:
    """The manifest of a results directory ({} when there is none); a damaged one is a DataError naming it."""
    from optbench.errors import DataError

    path = Path(directory) / MANIFEST
    if not path.exists():
        return {}
    try:
        manifest = json.loads(path.read_bytes())
        if not isinstance(manifest, dict):
            raise ValueError("not a JSON object")
    except ValueError as exc:  # JSONDecodeError and UnicodeDecodeError are ValueErrors
        raise DataError(f"{str(path)!r} is damaged ({type(exc).__name__}: {exc}); the results themselves are "
                        "intact: run the same 'optbench run' command into this directory to set it aside and "
                        "start a new manifest, or delete it.") from None
    return manifest


@contextlib.contextmanager
def _locked(directory: Path) -> Iterator[None]:
    """An exclusive advisory lock on ``directory/.manifest.lock`` (held by the open file; the system
    releases it when the process dies, however it dies)."""
    directory.mkdir(parents=True, exist_ok=True)
    try:
        import fcntl
    except ImportError:  # Windows: no flock; a single writer is safe, concurrent ones may lose records
        yield
        return
    # read-only is enough for flock, and lets another user of a shared directory take a lock file they do
    # not own
    fd = os.open(directory / ".manifest.lock", os.O_RDONLY | os.O_CREAT, file_mode())
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def update_manifest(directory: str | Path, change: Callable[[dict[str, Any]], None]) -> dict[str, Any]:
    """Read the manifest, apply ``change`` to it in place and write it, all under the directory's lock, so
    that concurrent writers (several sweeps into one ``--out``) never lose each other's records. A damaged
    manifest is renamed ``manifest.json.damaged`` (a warning says so) and a new one started."""
    from optbench.errors import DataError, OptbenchWarning

    directory = Path(directory)
    with _locked(directory):
        try:
            manifest = read_manifest(directory)
        except DataError:
            damaged = _set_aside(directory / MANIFEST)
            warnings.warn(f"{str(directory / MANIFEST)!r} was damaged: kept as {damaged.name!r}, a new manifest "
                          "is started (the results themselves are intact).", OptbenchWarning, stacklevel=2)
            manifest = {}
        change(manifest)
        write_manifest(directory, manifest)
    return manifest


def _set_aside(path: Path) -> Path:
    """Rename a damaged file to ``<name>.damaged`` (``.damaged-2``, … if taken); returns the new path."""
    target, n = path.with_name(path.name + ".damaged"), 1
    while target.exists():
        n += 1
        target = path.with_name(f"{path.name}.damaged-{n}")
    os.replace(path, target)
    return target


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

    tables = []
    for p in paths:
        try:
            tables.append(pq.read_table(p, columns=columns).to_pandas())
        except Exception as exc:  # pyarrow raises ArrowInvalid, OSError, ...: any unreadable chunk
            raise _damaged_error(p, exc) from None
    if not tables:
        return None
    return pd.concat(tables, ignore_index=True) if len(tables) > 1 else tables[0]


def _damaged_error(path: Path, exc: BaseException):
    from optbench.errors import DataError

    return DataError(f"Results chunk {str(path)!r} is damaged ({type(exc).__name__}: {exc}); run the same "
                     "'optbench run' command into this directory: it sets the chunk aside and runs its runs again.")


def chunk_problem(path: Path, chunk: str) -> str | None:
    """Why the chunk ``chunk`` of ``path`` is not complete and sound, or None when it is: both files must
    have a readable Parquet footer, and the steps rows must hold exactly the summary's runs."""
    import pyarrow.parquet as pq

    steps, summary = path / STEPS_DIR / f"{chunk}.parquet", path / SUMMARY_DIR / f"{chunk}.parquet"
    if not summary.exists():
        return f"{summary} is missing"
    try:
        summary_ids = pq.read_table(summary, columns=["run_id"]).column("run_id").to_pylist()
    except Exception as exc:
        return f"{summary}: {type(exc).__name__}: {exc}"
    try:
        if pq.read_metadata(steps).num_rows < len(summary_ids):
            return f"{steps} holds fewer rows than its {len(summary_ids)} runs"
        step_ids = set(pq.read_table(steps, columns=["run_id"]).column("run_id").unique().to_pylist())
    except Exception as exc:
        return f"{steps}: {type(exc).__name__}: {exc}"
    if not summary_ids or step_ids != set(summary_ids):
        return f"{steps} and {summary} hold different runs"
    return None


def quarantine_chunk(path: Path, chunk: str) -> list[Path]:
    """Set a damaged chunk's files aside as ``<chunk>.parquet.damaged`` (no longer read, kept to look at)."""
    moved = []
    for folder in (STEPS_DIR, SUMMARY_DIR):
        file = path / folder / f"{chunk}.parquet"
        if file.exists():
            moved.append(_set_aside(file))
    return moved


def complete_run_ids(path: str | Path, *, verify: bool = True) -> set[str]:
    """Run ids whose results are fully on disk. ``verify``: check each chunk first (:func:`chunk_problem`);
    a damaged one is set aside (:func:`quarantine_chunk`) with a warning naming it, so its runs run again."""
    import pyarrow.parquet as pq

    from optbench.errors import OptbenchWarning

    path = Path(path)
    if not (path / STEPS_DIR).is_dir():
        return set()
    ids: set[str] = set()
    for chunk in _complete_chunks(path):
        summary = path / SUMMARY_DIR / f"{chunk}.parquet"
        problem = chunk_problem(path, chunk) if verify else None
        if problem is not None:
            moved = quarantine_chunk(path, chunk)
            warnings.warn(f"Damaged results chunk {chunk} ({problem}): set aside as "
                          f"{', '.join(str(m) for m in moved)}; its runs run again.", OptbenchWarning, stacklevel=2)
            continue
        if summary.exists():
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
