"""Finished work items to disk: one chunk (steps + summary Parquet files) per group, named by its run ids."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from concurrent.futures import Future, ThreadPoolExecutor

from optbench.sweep.spec import Run
from optbench.sweep.tables import trace_tables


def chunk_id(group: Sequence[Run]) -> str:
    """The file name of a group's chunk: a hash of its run ids."""
    return hashlib.sha256("".join(r.run_id for r in group).encode()).hexdigest()[:16]


class ChunkWriter:
    """Writes each finished group's chunk in a background thread while the next group computes.

    Parquet encoding and compression release the GIL, so on a multi-core machine the write of group i
    overlaps the engine's work on group i + 1. At most one chunk is in flight: :meth:`write` first waits
    for the previous one; the last group (``background=False``) is written in the calling thread, as
    nothing would overlap it. Both methods yield ``(engine, statuses)`` of each group once its chunk is on
    disk, so a run counts as complete only when it is. :meth:`close` waits for the last chunk: after a
    Ctrl-C during the next group, the finished group is still written.
    """

    def __init__(self, out: Path):
        self.out = out
        self.pool: ThreadPoolExecutor | None = None
        self.pending: tuple[Future[Any], str, list[str]] | None = None  # (future, engine, statuses)

    def write(self, group: list[Run], trace, engine: str, background: bool = True):
        from concurrent.futures import ThreadPoolExecutor

        from optbench.results import write_chunk

        yield from self._finish()  # first: the tables of two groups are never held at once (sweep.memory)
        steps_table, summary_table = trace_tables(group, trace, engine)
        if not background:
            write_chunk(self.out, chunk_id(group), steps_table, summary_table)
            yield engine, list(trace.status)
            return
        if self.pool is None:
            self.pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="optbench-writer")
        future = self.pool.submit(write_chunk, self.out, chunk_id(group), steps_table, summary_table)
        self.pending = (future, engine, list(trace.status))

    def close(self, after_error: bool = False):
        """Wait for the chunk in flight. ``after_error``: another error is propagating and is the one to
        report, so a failure of this last write is not raised (that group is then not complete, and a
        re-run does it)."""
        try:
            yield from self._finish()
        except Exception:
            if not after_error:
                raise
        finally:
            if self.pool is not None:
                self.pool.shutdown(wait=True)

    def _finish(self):
        if self.pending is not None:
            future, engine, statuses = self.pending
            try:
                future.result()
            except Exception:
                self.pending = None  # that write failed: its runs are not complete
                raise
            # (a Ctrl-C while waiting keeps the chunk pending, so close() waits for it and counts it)
            self.pending = None
            yield engine, statuses
