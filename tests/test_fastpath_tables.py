"""Result tables and files of the numpy path without copies (issue #19 item 1), with the same values.

The numpy path records run-major, so the steps table takes its float columns as views of the recorded
buffers; summaries take per-run minima and steps to target without row-sized temporaries; Parquet stores
floats byte-stream-split. Each shortcut is checked here against the general computation it replaces.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from optbench import Sweep
from optbench.engines.recorder import GroupTrace
from optbench.results import STEPS_DIR, SUMMARY_DIR, write_chunk
from optbench.sweep.plan import execute, plan_groups
from optbench.sweep.tables import _first_minima, trace_tables
from optbench.targets import first_steps_within


def _group(lrs, steps=40, record_every=1, problem="rosenbrock(noise=0.1)"):
    runs = Sweep([problem], ["adam"], lrs=lrs, seeds=[0, 1, 2], steps=steps, record_every=record_every,
                 engine="batched").expand()
    ((engine, group),) = plan_groups(runs, "batched")
    return engine, group, execute(engine, group)


def _row_major(trace: GroupTrace) -> GroupTrace:
    """The same trace with every recorded array copied C-contiguous ([R, K]), as the torch path holds them."""
    copy = {name: np.ascontiguousarray(getattr(trace, name)) for name in ("loss", "grad_norm", "wall_time_s")}
    coords = None if trace.coords is None else np.ascontiguousarray(trace.coords)
    return GroupTrace(steps=trace.steps, coords=coords, status=trace.status, end_step=trace.end_step,
                      end_loss=trace.end_loss, end_grad_norm=trace.end_grad_norm, end_x=trace.end_x,
                      end_wall_time_s=trace.end_wall_time_s, cost=trace.cost, **copy)


def _same_table(a: pa.Table, b: pa.Table) -> bool:
    """Equal schemas and columns; float columns compared by their bits (``Table.equals`` fails on NaN)."""
    if a.schema != b.schema:
        return False
    for name in a.column_names:
        x, y = a.column(name).combine_chunks(), b.column(name).combine_chunks()
        if pa.types.is_floating(x.type) and x.null_count == y.null_count == 0:
            if not np.array_equal(x.to_numpy().view(np.uint64), y.to_numpy().view(np.uint64)):
                return False
        elif not x.equals(y):
            return False
    return True


@pytest.mark.parametrize("lrs, record_every", [
    ([1e-3, 1e-2], 1),  # every run ends on the last grid row: the column views
    ([1e-3, 1e-2], 7),  # the last step off the record interval
    ([1e-3, 3.0, 30.0], 1),  # runs that diverge or escape early: the general path
])
def test_tables_from_views_equal_tables_from_copies(lrs, record_every):
    engine, group, trace = _group(lrs, record_every=record_every)
    assert not trace.loss.flags.c_contiguous and trace.loss.T.flags.c_contiguous  # recorded run-major
    steps, summary = trace_tables(group, trace, engine)
    ref_steps, ref_summary = trace_tables(group, _row_major(trace), engine)
    assert _same_table(steps, ref_steps)
    assert _same_table(summary, ref_summary)


def test_the_common_case_takes_the_recorded_buffers_without_a_copy():
    engine, group, trace = _group([1e-3, 1e-2])
    steps, _ = trace_tables(group, trace, engine)
    assert len(set(trace.end_step.tolist())) == 1  # no run stopped early
    for column, recorded in (("loss", trace.loss), ("grad_norm", trace.grad_norm), ("x0", trace.coords[..., 0])):
        values = np.frombuffer(steps.column(column).chunk(0).buffers()[1], dtype=np.float64)
        assert np.shares_memory(values, recorded), column


def _general_minima(run_idx, step, loss, K):
    """The per-run first minimum the unequal-length path computes, run by run in Python."""
    best_loss, best_step = np.full(K, np.nan), np.zeros(K, np.int64)
    for k in range(K):
        rows = np.flatnonzero(run_idx == k)
        finite = [i for i in rows if np.isfinite(loss[i])]
        if finite:
            i = min(finite, key=lambda j: (loss[j], j))
            best_loss[k], best_step[k] = loss[i], step[i]
    return best_loss, best_step


@pytest.mark.parametrize("counts", [[6, 6, 6, 6], [2, 1, 3, 6], [1, 1, 1, 1]])
def test_first_minima_of_equal_and_unequal_runs(counts):
    rng = np.random.default_rng(0)
    K = len(counts)
    run_idx = np.repeat(np.arange(K, dtype=np.int32), counts)
    step = np.concatenate([np.arange(c, dtype=np.int64) * 10 for c in counts])
    loss = rng.choice([0.5, 1.0, 2.0, np.nan, np.inf, -np.inf], size=len(run_idx))  # ties, NaN and infinities
    loss[run_idx == K - 1] = np.nan  # a run without a finite loss
    got_loss, got_step = _first_minima(run_idx, step, loss, K)
    want_loss, want_step = _general_minima(run_idx, step, loss, K)
    np.testing.assert_array_equal(got_loss, want_loss)
    np.testing.assert_array_equal(got_step, want_step)


def test_steps_to_target_with_shared_and_per_run_targets_agree():
    rng = np.random.default_rng(1)
    K, rows = 5, 30
    run_idx = np.repeat(np.arange(K), rows)
    step = np.tile(np.arange(rows), K)
    loss = np.abs(rng.standard_normal(K * rows)).astype(np.float32)
    shared = first_steps_within(run_idx, step, loss, np.zeros(K), np.full(K, 0.1), K)
    # the same values per run, but not all equal: the per-row path
    per_run = first_steps_within(run_idx, step, loss, np.r_[np.zeros(K - 1), 1e-30], np.full(K, 0.1), K)
    assert shared == per_run and any(s is not None for s in shared)


def test_steps_to_target_over_several_slices_of_rows():
    K, rows = 3, 30_000  # 90,000 rows: two slices of 65,536
    run_idx = np.repeat(np.arange(K), rows)
    step = np.tile(np.arange(rows) * 2, K)
    loss = np.ones(K * rows)
    loss[rows + 5] = loss[rows + 7] = 0.05  # run 1: rows 5 and 7
    loss[2 * rows + 20_000] = 0.05  # run 2: row 20,000, in the second slice
    assert first_steps_within(run_idx, step, loss, np.zeros(K), np.full(K, 0.1), K) == [None, 10, 40_000]


def test_written_chunk_reads_back_as_built_with_floats_byte_stream_split(tmp_path):
    engine, group, trace = _group([1e-3, 1e-2, 3.0])
    steps, summary = trace_tables(group, trace, engine)
    write_chunk(tmp_path, "chunk", steps, summary)
    for folder, table in ((STEPS_DIR, steps), (SUMMARY_DIR, summary)):
        path = tmp_path / folder / "chunk.parquet"
        assert _same_table(pq.read_table(path), table)
        columns = pq.ParquetFile(path).metadata.row_group(0)
        for i in range(columns.num_columns):
            column = columns.column(i)
            if column.physical_type == "DOUBLE":
                assert "BYTE_STREAM_SPLIT" in column.encodings, column.path_in_schema


def test_rows_after_every_run_of_a_block_ended_are_nan():
    """The recorded buffers are not filled in advance: rows never observed (every run of the block ended, the
    block stopped at the next check) are NaN, as an unreached row always was, and the wall clock 0."""
    from optbench.engines.batched_numpy import SYNC_EVERY

    engine, group, trace = _group([30.0, 100.0], steps=3 * SYNC_EVERY)
    assert set(trace.status) == {"diverged"} and trace.end_step.max() < SYNC_EVERY
    unobserved = trace.steps > SYNC_EVERY - 1  # the block stops after the step of the first check
    assert unobserved.any() and not unobserved.all()
    for recorded in (trace.loss, trace.grad_norm, trace.coords):
        assert np.isnan(recorded[unobserved]).all()
        assert not np.isnan(recorded[~unobserved]).all()
    assert (trace.wall_time_s[unobserved] == 0).all()
    steps, summary = trace_tables(group, trace, engine)
    ref_steps, ref_summary = trace_tables(group, _row_major(trace), engine)
    assert _same_table(steps, ref_steps) and _same_table(summary, ref_summary)
