"""Run a sweep: expand it, skip the complete runs, plan work items, execute them and stream finished ones to
disk, recording the sweep in the manifest.

The pieces live beside it: :mod:`optbench.sweep.spec` (Run, Sweep, run ids), :mod:`optbench.sweep.plan`
(work items, engines), :mod:`optbench.sweep.tables` and :mod:`optbench.sweep.writer` (result tables and chunks),
:mod:`optbench.sweep.parallel` (worker processes), :mod:`optbench.sweep.manifest` (provenance) and
:mod:`optbench.sweep.memory`.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from optbench import __version__
from optbench.sweep import plan
from optbench.sweep.manifest import environment
from optbench.sweep.memory import check_memory
from optbench.sweep.spec import Sweep
from optbench.sweep.writer import ChunkWriter


@dataclass
class SweepOutcome:
    out_dir: Path
    runs_total: int
    runs_skipped: int
    runs_done: int
    wall_time_s: float
    engines: dict[str, int] = field(default_factory=dict)
    run_ids: list[str] = field(default_factory=list)  # the sweep's runs, in order (skipped ones too)


def run_sweep(sweep: Sweep, out_dir: str | Path, *, force: bool = False, command: str = "",
              progress_factory: Callable[[int, int], Any] | None = None, workers: int = 1,
              executor=None) -> SweepOutcome:
    """Run every missing run of ``sweep`` into ``out_dir`` and return counts and timings.

    ``progress_factory(total_steps, total_runs)`` may return an object with ``advance(n)`` and ``close()``, and
    optionally ``runs_finished(statuses)``, called with the statuses of each batch of runs written.
    ``workers > 1`` runs work items in that many processes (:func:`optbench.sweep.parallel.run_items_parallel`);
    ``executor`` (an :mod:`optbench.executors` executor, e.g. Dask) runs them where it says instead.
    """
    import uuid

    from optbench.results import check_writable, complete_run_ids, remove_stale_temporaries, update_manifest

    t0 = time.perf_counter()
    out = Path(out_dir)
    runs = sweep.expand()
    remove_stale_temporaries(out)  # a killed writer's hidden leftovers
    done = set() if force else complete_run_ids(out)  # verified: damaged chunks are set aside and re-run
    todo = [r for r in runs if r.run_id not in done]
    skipped = {r.run_id: r.resolved_target for r in runs if r.run_id in done}
    items = plan.plan_groups(todo, sweep.engine)
    check_memory(items)
    check_writable(out)  # before any compute: a read-only or unwritable --out fails now, not after the work
    header = {
        "optbench_version": __version__,
        "environment": environment(",".join(sorted({r.device for r in runs})) or sweep.device),
        "schema": {"steps": "one row per (run, recorded step)", "summary": "one row per run"},
    }
    recipe = sweep.recipe
    sweep_record: dict[str, Any] = {
        "id": uuid.uuid4().hex[:16],  # finds this record again under concurrent writers
        "command": command,
        "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "problems": [p.label for p in sweep.problems],
        "optimizers": [o.label for o in sweep.optimizers],
        "lrs": list(sweep.lrs) if sweep.lrs else None,
        "seeds": list(sweep.seeds),
        "steps": sweep.steps,
        "budget": ({"kind": "epochs", "value": sweep.epochs} if sweep.epochs
                   else {"kind": "steps", "value": sweep.steps}),
        "batch_sizes": list(sweep.batch_sizes) if sweep.batch_sizes else None,
        "record_every": runs[0].record_every if runs else None,
        "engine": sweep.engine, "device": sweep.device, "dtype": sweep.dtype,
        "schedules": list(dict.fromkeys(r.recipe.schedule for r in runs)) or sweep.schedule_axis,
        "clip_norm": recipe.clip_norm, "clip_value": recipe.clip_value, "label_smoothing": recipe.label_smoothing,
        **({"recipe": runs[0].recipe_name if runs else sweep.recipe_name} if sweep.recipe_name else {}),
        **({"lr_scaling": runs[0].recipe.lr_scaling if runs else recipe.lr_scaling,
            "base_batch_size": runs[0].recipe.base_batch_size if runs else None}
           if recipe.lr_scaling or sweep.recipe_name else {}),
        **({"noise_scale_every": recipe.noise_scale_every} if recipe.noise_scale_every else {}),
        "target": sweep.target,  # steps to target: loss − f* ≤ target; None: each problem's own
        "runs": len(runs), "skipped": len(runs) - len(todo),
    }
    if skipped:  # complete runs asked for at another target: recount them from their recorded steps
        from optbench.targets import retarget_stored_runs

        sweep_record["retargeted"] = retarget_stored_runs(out, skipped)

    def add_record(manifest: dict[str, Any]) -> None:
        manifest.update(header)
        manifest.setdefault("sweeps", []).append(sweep_record)

    def finish_record(manifest: dict[str, Any]) -> None:
        records = manifest.setdefault("sweeps", [])
        mine = next((r for r in records if r.get("id") == sweep_record["id"]), None)
        if mine is None:  # the manifest was set aside meanwhile: record this sweep in the new one
            add_record(manifest)
        else:
            mine.update(sweep_record)

    update_manifest(out, add_record)
    progress = progress_factory(sum(r.steps for r in todo), len(todo)) if progress_factory and todo else None
    engines: dict[str, int] = {}
    completed = 0

    def written(engine: str, statuses: list[str]) -> None:  # these runs' chunk is on disk
        nonlocal completed
        engines[engine] = engines.get(engine, 0) + len(statuses)
        completed += len(statuses)
        _report_runs(progress, statuses)

    writer = ChunkWriter(out)
    try:
        try:
            from optbench.executors.local import LocalExecutor

            executor = executor or LocalExecutor(workers)
            if executor.takes(items):
                for engine, statuses in executor.run_items(items, out, progress):
                    written(engine, statuses)
                items = []
            for i, (engine, group) in enumerate(items):
                trace = plan.execute(engine, group, progress.advance if progress else None)
                for done in writer.write(group, trace, engine, background=i + 1 < len(items)):
                    written(*done)
                del trace  # its rows live on in the chunk in flight only (memory bounded: optbench.sweep.memory)
        except BaseException:
            for done in writer.close(after_error=True):  # a Ctrl-C or a failure still flushes the finished group
                written(*done)
            raise
        for done in writer.close():
            written(*done)
    finally:
        if progress:
            progress.close()
        sweep_record.update({"completed": completed, "engines": engines,
                             "wall_time_s": round(time.perf_counter() - t0, 4),
                             "finished": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                             "interrupted": completed < len(todo)})
        update_manifest(out, finish_record)
    return SweepOutcome(out, len(runs), len(runs) - len(todo), completed, time.perf_counter() - t0, engines,
                        [r.run_id for r in runs])


def _report_runs(progress, statuses) -> None:
    if progress is not None and hasattr(progress, "runs_finished"):
        progress.runs_finished(list(statuses))
