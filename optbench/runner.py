"""Expand a sweep into runs, skip the complete ones, pick an engine, and stream finished runs to disk.

A run is (problem, optimizer with hyperparameters, seed, steps, record interval, dtype, device type); its
``run_id`` hashes all of that with the optbench version. Runs that one batched rule can advance together
(same problem, same rule, same non-float settings) form a group; ``engine='auto'`` runs such groups on
the batched engine and everything else on the loop engine.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from optbench import __version__
from optbench.errors import SpecError, UsageError
from optbench.spec import format_spec

ENGINES = ("auto", "loop", "batched")
DTYPES = ("float64", "float32")
MAX_RECORDED_ROWS = 1000  # default record interval keeps about this many rows per run
MAX_GROUP = 4096  # configurations per batched group (bounded memory per group)
SAMPLED_ORACLES = "one-sample-per-step"  # identity of closure-calling runs on noisy analytic problems (Run.identity)
LR_SCALINGS = {"linear": 1.0, "sqrt": 0.5}  # lr = base lr × (B / B_base)^power (Goyal et al. 2017; √ rule)


@dataclass(frozen=True)
class Run:
    problem: Any  # a problem object (optbench.problems)
    optimizer: Any  # an OptimizerConfig with its learning rate applied
    seed: int
    steps: int
    record_every: int
    dtype: str = "float64"
    device: str = "cpu"
    schedule: str = "constant"  # a schedule spec label (optbench.schedules)
    clip_norm: float | None = None  # clip the gradient the optimizer sees to this norm (per run)
    clip_value: float | None = None  # clip each gradient coordinate to [-v, v]
    label_smoothing: float = 0.0  # network problems only
    lr_scaling: str | None = None  # "linear" or "sqrt": the lr was scaled from base_batch_size (LR_SCALINGS)
    base_batch_size: int | None = None
    noise_scale_every: int = 0  # network problems: estimate the gradient noise scale every N steps (0: off)
    recipe_name: str | None = None  # the named recipe (optbench.recipes) that set lr_scaling and the schedule;
    # recorded, not part of the identity or label: the settings it expands to already are
    target: float | None = None  # steps to target counts loss − f* ≤ target (None: the problem's own target);
    # recorded, not part of the identity: it does not change the trajectory (optbench.targets)

    @property
    def resolved_target(self) -> float:
        return self.problem.target if self.target is None else self.target

    @functools.cached_property
    def recipe(self) -> dict[str, Any]:
        """The non-default training-recipe settings; empty for the defaults, so run ids stay as before."""
        from optbench.schedules import get_schedule

        schedule = get_schedule(self.schedule)
        recipe: dict[str, Any] = {} if schedule.is_constant else {"schedule": schedule.resolved}
        for key in ("clip_norm", "clip_value", "label_smoothing", "lr_scaling", "base_batch_size",
                    "noise_scale_every"):
            if getattr(self, key):
                recipe[key] = getattr(self, key)
        return recipe

    @property
    def identity(self) -> dict[str, Any]:
        source = getattr(self.optimizer.entry, "source_sha", "")  # a user file's code: edits re-run
        problem_source = getattr(self.problem, "source_sha", "")  # a user problem's module (optbench.problems.user)
        return {
            **({"optimizer_source": source} if source else {}),
            **({"problem_source": problem_source} if problem_source else {}),
            "problem": self.problem.name,
            "problem_config": self.problem.config,
            "optimizer": self.optimizer.name,
            "hyperparams": self.optimizer.hyperparams,
            "seed": self.seed,
            "steps": self.steps,
            "record_every": self.record_every,
            "dtype": self.dtype,
            "device_type": self.device.split(":")[0],
            "optbench": __version__,
            **({"recipe": self.recipe} if self.recipe else {}),
            **({"oracles": SAMPLED_ORACLES} if self.sees_sampled_oracles else {}),
        }

    @property
    def sees_sampled_oracles(self) -> bool:
        """An optimizer that calls its closure (loss values, several evaluations per step) on a noisy analytic
        problem: its oracles follow the per-step sample model (optbench.problems.analytic), which changed its
        numbers, so its identity says so and results computed before are not resumed as if they were equal.
        Every other run keeps its run id."""
        return bool(self.optimizer.entry.needs_closure and getattr(self.problem, "kind", "") == "analytic"
                    and self.problem.is_noisy)

    @functools.cached_property
    def run_id(self) -> str:
        return _hash_identity(json.dumps(self.identity, sort_keys=True, default=repr))

    @functools.cached_property
    def optimizer_label(self) -> str:
        from optbench.schedules import recipe_label

        label = format_spec(self.optimizer.name, {k: v for k, v in self.optimizer.given.items() if k != "lr"})
        label += recipe_label(self.schedule, self.clip_norm, self.clip_value, self.label_smoothing)
        if self.lr_scaling:
            label += f"+{self.lr_scaling}-scaling(base_batch_size={self.base_batch_size})"
        return label + (f"+noise-scale(every={self.noise_scale_every})" if self.noise_scale_every else "")


def _hash_identity(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:16]


_SEED_SLOT = "\x00optbench-seed\x00"


def assign_run_ids(seed_block: Sequence[Run]) -> None:
    """Fill the cached ``run_id`` of runs that differ only in their seed, serialising their identity once.

    The identity JSON is built once with a placeholder for the seed; each seed's text is that template
    with the placeholder replaced, hashed as :attr:`Run.run_id` would hash it (equal ids, tested). A
    1000-seed configuration thus costs one ``json.dumps`` and 1000 SHA-256 digests.
    """
    import dataclasses

    if not seed_block or any(type(r.seed) is not int for r in seed_block):  # json writes a bool differently
        return
    first = seed_block[0]
    slot = json.dumps(_SEED_SLOT)
    text = json.dumps({**dataclasses.replace(first, seed=0).identity, "seed": _SEED_SLOT}, sort_keys=True,
                      default=repr)
    if text.count(slot) != 1:
        return
    head, tail = text.split(slot)
    for run in seed_block:
        run.__dict__["run_id"] = _hash_identity(f"{head}{run.seed}{tail}")


@dataclass
class Sweep:
    """Everything a sweep varies. ``lrs=None`` keeps each optimizer's own learning rate."""

    problems: Sequence[Any]
    optimizers: Sequence[Any]
    lrs: Sequence[float] | None = None
    seeds: Sequence[int] = (0,)
    steps: int = 1000
    batch_sizes: Sequence[int] | None = None
    record_every: int | None = None
    engine: str = "auto"
    device: str = "auto"  # "auto": CPU for analytic problems, the accelerator (if any) for networks
    dtype: str = "float64"
    schedules: Sequence[str] = ("constant",)  # schedule specs, a sweep axis (optbench.schedules)
    clip_norm: float | None = None
    clip_value: float | None = None
    label_smoothing: float = 0.0
    epochs: int | None = None  # network problems: a budget of epochs, steps = epochs × ceil(n_train / batch)
    lr_scaling: str | None = None  # LR_SCALINGS: each run's lr = base lr × (B / base_batch_size)^power
    base_batch_size: int | None = None  # default: the smallest batch size of the sweep
    noise_scale_every: int = 0  # network problems: gradient noise scale every N steps (optbench.noise_scale)
    recipe: str | None = None  # a named recipe (optbench.recipes): sets lr_scaling and the schedule
    target: float | None = None  # steps to target: loss − f* ≤ target; None: each problem's own (optbench.targets)

    def expand(self) -> list[Run]:
        """Every run of the sweep, in order (problem, optimizer, lr, schedule, seed), run ids filled in."""
        runs = []
        for seed_block in self._seed_blocks():
            assign_run_ids(seed_block)
            runs.extend(seed_block)
        return runs

    def _seed_blocks(self) -> list[list[Run]]:
        """The runs of the sweep as blocks that differ only in their seed."""
        from optbench.optimizers.registry import check_lr_override
        from optbench.problems import get_problem
        from optbench.problems.nets import BUFFERS

        if self.recipe is not None:
            import dataclasses

            from optbench.recipes import get_recipe

            recipe = get_recipe(self.recipe)
            lr_scaling, schedules = recipe.apply(self.lr_scaling, self.schedules)
            plain = dataclasses.replace(self, recipe=None, lr_scaling=lr_scaling, schedules=schedules)
            return [[dataclasses.replace(run, recipe_name=recipe.label) for run in block]
                    for block in plain._seed_blocks()]
        if self.steps < 1:
            raise UsageError(f"--steps {self.steps} must be at least 1.")
        from optbench.targets import check_target

        target = check_target(self.target)
        if self.engine not in ENGINES:
            raise UsageError(f"Unknown engine {self.engine!r}; valid engines: {', '.join(ENGINES)}.")
        if self.dtype not in DTYPES:
            raise UsageError(f"Unknown dtype {self.dtype!r}; valid dtypes: {', '.join(DTYPES)}.")
        record_every = self.record_every or max(1, -(-self.steps // MAX_RECORDED_ROWS))
        if record_every < 1:
            raise UsageError(f"--record-every {record_every} must be at least 1.")
        problems = list(self.problems)
        if self.batch_sizes:
            without = [p.name for p in problems if not p.has_batch_size]
            if without:
                raise UsageError(f"--batch-size does not apply to {', '.join(sorted(set(without)))}: "
                                 "only problems with a batch size take it (e.g. noisy-quadratic).")
            problems = [get_problem(p.spec, batch_size=b) for p in problems for b in self.batch_sizes]
        for opt in self.optimizers:
            check_lr_override(opt, list(self.lrs) if self.lrs else None)
            for p in problems:
                if opt.entry.max_dim is not None and p.dim > opt.entry.max_dim:
                    raise SpecError(f"Optimizer {opt.name!r} handles problems up to dimension "
                                    f"{opt.entry.max_dim}; {p.label} has {p.dim}.")
                if opt.entry.schedule_free and BUFFERS in getattr(p, "features", ()):
                    raise SpecError(f"Optimizer {opt.name!r} is schedule-free: its reported point needs BatchNorm "
                                    f"statistics recomputed there, which optbench does not do; {p.label} has "
                                    "BatchNorm. Use a model without it.")
        schedules = self.check_recipe(problems)
        base_batch = self._check_lr_scaling(problems)
        blocks = []
        seeds = [int(seed) for seed in self.seeds]
        for problem in problems:
            device = problem_device(self.device, problem)
            budget = self._budget(problem, record_every)
            for opt in self.optimizers:
                configs = [opt.with_hyperparams(lr=lr) for lr in self.lrs] if self.lrs else [opt]
                if self.lr_scaling:
                    factor = (problem.batch_size / base_batch) ** LR_SCALINGS[self.lr_scaling]
                    configs = [c.with_hyperparams(lr=c.lr * factor) for c in configs]
                for config in configs:
                    for schedule in schedules:
                        blocks.append([Run(problem, config, seed, *budget, self.dtype, device, schedule,
                                           self.clip_norm, self.clip_value, self.label_smoothing, self.lr_scaling,
                                           base_batch if self.lr_scaling else None, self.noise_scale_every,
                                           target=target)
                                       for seed in seeds])
        return blocks

    def _check_lr_scaling(self, problems) -> int | None:
        """Validate the lr-scaling rule and the noise-scale interval; returns the resolved base batch size."""
        if self.noise_scale_every < 0:
            raise UsageError(f"--noise-scale-every {self.noise_scale_every} must be >= 0 (0: off).")
        if self.noise_scale_every and any(p.kind != "network" for p in problems):
            raise UsageError("--noise-scale-every applies to network problems only.")
        if self.lr_scaling is None:
            if self.base_batch_size is not None:
                raise UsageError("--base-batch-size needs --lr-scaling linear or sqrt.")
            return None
        if self.lr_scaling not in LR_SCALINGS:
            raise UsageError(f"Unknown --lr-scaling {self.lr_scaling!r}; valid: {', '.join(LR_SCALINGS)}.")
        without = sorted({p.name for p in problems if not p.has_batch_size})
        if without:
            raise UsageError(f"--lr-scaling needs problems with a batch size; {', '.join(without)} has none.")
        no_lr = [o.name for o in self.optimizers if o.lr is None]
        if no_lr:
            raise UsageError(f"--lr-scaling needs a learning rate; {', '.join(no_lr)} has none.")
        if self.base_batch_size is not None and self.base_batch_size < 1:
            raise UsageError(f"--base-batch-size {self.base_batch_size} must be at least 1.")
        return self.base_batch_size or min(p.batch_size for p in problems)

    def _budget(self, problem, record_every: int) -> tuple[int, int]:
        """(steps, record interval) of a problem's runs: ``steps``, or ``epochs`` of a network problem."""
        if self.epochs is None:
            return self.steps, record_every
        if self.epochs < 1:
            raise UsageError(f"--epochs {self.epochs} must be at least 1.")
        if problem.kind != "network":
            raise UsageError(f"--epochs applies to network problems; {problem.label} is {problem.kind}: "
                             "use --steps.")
        steps = self.epochs * problem.steps_per_epoch()
        return steps, self.record_every or max(1, -(-steps // MAX_RECORDED_ROWS))

    def check_recipe(self, problems) -> list[str]:
        """Validate schedules, clipping and label smoothing; returns canonical schedule labels."""
        from optbench.schedules import get_schedule

        schedules = [get_schedule(s) for s in (self.schedules or ("constant",))]
        labels = list(dict.fromkeys(s.label for s in schedules))
        for name, value in (("--clip-norm", self.clip_norm), ("--clip-value", self.clip_value)):
            if value is not None and not value > 0:
                raise UsageError(f"{name} {value!r} must be > 0.")
        if not 0 <= self.label_smoothing < 1:
            raise UsageError(f"--label-smoothing {self.label_smoothing!r} must be in [0, 1).")
        if self.label_smoothing and any(p.kind == "analytic" for p in problems):
            raise UsageError("--label-smoothing applies to network (classification) problems only.")
        if any(not s.is_constant for s in schedules):
            without = [o.name for o in self.optimizers if "lr" not in o.entry.params]
            if without:
                raise UsageError(f"--schedule needs a learning rate; {', '.join(without)} has none.")
            for s in schedules:  # fail before any work: bad warm-up lengths, min_lr above the lr
                for lr in (self.lrs or [o.lr for o in self.optimizers]):
                    if lr is not None:
                        from optbench.schedules import lr_sequence

                        lr_sequence(s, self.steps, lr)
        return labels


@dataclass
class SweepOutcome:
    out_dir: Path
    runs_total: int
    runs_skipped: int
    runs_done: int
    wall_time_s: float
    engines: dict[str, int] = field(default_factory=dict)


def plan_groups(runs: Sequence[Run], engine: str) -> list[tuple[str, list[Run]]]:
    """Split runs into (engine, runs) work items: batched groups where possible, single loop runs else.
    Which engine runs what is :func:`optbench.engines.capabilities.choose_engine` (the tuner asks it too)."""
    from optbench.engines.batched import group_key
    from optbench.engines.capabilities import choose_engine
    from optbench.engines.network import MAX_NET_GROUP

    groups: dict[tuple, list[Run]] = {}
    items: list[tuple[str, list[Run]]] = []
    choices: dict[tuple, tuple[str, tuple]] = {}  # the seeds of a configuration share its optimizer and problem

    def choice(run: Run) -> tuple[str, tuple]:
        """(the engine for the run, its rule's group key), once per configuration and recipe."""
        key = (id(run.optimizer), id(run.problem), run.device, run.schedule, run.clip_norm, run.clip_value,
               run.label_smoothing, run.lr_scaling, run.base_batch_size, run.noise_scale_every)
        if key not in choices:
            chosen = choose_engine(engine, run.problem, run.optimizer, run.recipe, run.device)
            choices[key] = (chosen, group_key(run.optimizer) if chosen == "batched" else ())
        return choices[key]

    for run in runs:
        chosen, rule_key = choice(run)
        if chosen == "loop":
            items.append(("loop", [run]))
        elif run.problem.kind == "analytic":
            key = (run.problem.label, run.steps, run.record_every, run.dtype, run.device, rule_key, run.schedule,
                   run.clip_norm, run.clip_value)
            groups.setdefault(key, []).append(run)
        else:
            key = ("network", run.problem.label, run.steps, run.record_every, run.device, rule_key)
            groups.setdefault(key, []).append(run)
    for group in groups.values():
        size = MAX_GROUP if group[0].problem.kind == "analytic" else MAX_NET_GROUP
        for i in range(0, len(group), size):
            items.append(("batched", group[i: i + size]))
    return items


def execute(engine: str, runs: list[Run], progress: Callable[[int], None] | None = None):
    """Run one work item; returns its GroupTrace."""
    import torch

    dtype = getattr(torch, runs[0].dtype)
    device = torch.device(runs[0].device)
    first = runs[0]
    if first.problem.kind != "analytic":
        from optbench.engines.network import run_network, run_network_batched  # the network track

        if engine == "batched":
            return run_network_batched(first.problem, [r.optimizer for r in runs], [r.seed for r in runs],
                                       first.steps, first.record_every, device=device, progress=progress)
        recipe = {k: v for k, v in first.recipe.items() if k not in ("lr_scaling", "base_batch_size")}
        return run_network(first.problem, first.optimizer, first.seed, first.steps, first.record_every,
                           device=device, dtype=dtype, progress=progress, **recipe)
    if engine == "batched":
        from optbench.engines.batched import run_batched

        return run_batched(first.problem, [r.optimizer for r in runs], [r.seed for r in runs], first.steps,
                           first.record_every, device=device, dtype=dtype, progress=progress,
                           schedule=first.schedule, clip_norm=first.clip_norm, clip_value=first.clip_value)
    from optbench.engines.loop import run_loop

    return run_loop(first.problem, first.optimizer, first.seed, first.steps, first.record_every,
                    device=device, dtype=dtype, progress=progress, schedule=first.schedule,
                    clip_norm=first.clip_norm, clip_value=first.clip_value)


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
            return np.concatenate([grid_values[:m].T, end_values[:, None]], axis=1).reshape(-1)
    else:
        keep = np.concatenate([before_end, np.ones((K, 1), bool)], axis=1)  # [K, R + 1]

        def col(grid_values, end_values):
            return np.concatenate([grid_values.T, end_values[:, None]], axis=1)[keep]

    run_idx = np.repeat(np.arange(K, dtype=np.int32), counts)
    loss = col(trace.loss, trace.end_loss)
    step = col(np.broadcast_to(trace.steps[:, None], (len(trace.steps), K)), end).astype(np.int64)
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
        "status": arrow.dictionary(*arrow.codes(trace.status, run_idx)),
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

        problem = runs[0].problem
        columns["examples"] = arrow.numeric(examples_seen(step, problem.n_train, problem.batch_size), np.int64)
        columns["train_time_s"] = arrow.numeric(col(trace.wall_time_s, trace.end_wall_time_s) / K, np.float64)
    steps_table = arrow.table(columns)
    summary = summarize_trace(runs, trace, run_idx, step, loss, engine, configs)
    return steps_table, summary


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
            key = (id(run.problem), id(run.optimizer), run.steps, *_recipe_key(run), run.recipe_name)
            if key not in index:
                index[key] = len(self.rows)
                problem, optimizer = run.problem, run.optimizer
                self.rows.append({
                    "problem": problem.label, "problem_name": problem.name, "optimizer": optimizer.name,
                    "optimizer_label": run.optimizer_label,
                    "lr": optimizer.lr if optimizer.lr is not None else np.nan,
                    "batch_size": problem.batch_size, "steps": run.steps,
                    "hparams": json.dumps(optimizer.hyperparams, sort_keys=True, default=repr),
                    "schedule": run.schedule,
                    "recipe": json.dumps(run.recipe, sort_keys=True, default=repr),
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
        from optbench import columns as arrow

        indices, uniq = arrow.codes([row[name] for row in self.rows], self.of_run)
        return arrow.dictionary(indices if run_idx is None else indices[run_idx], uniq)

    def strings(self, name: str):
        """Column ``name`` as plain strings, one per run."""
        return self.dictionary(name).dictionary_decode()


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
    starts = np.searchsorted(run_idx, np.arange(K))
    finite = np.where(np.isfinite(loss), loss, np.inf)
    seg_min = np.minimum.reduceat(finite, starts)
    at_min = np.flatnonzero(finite == seg_min[run_idx])
    runs_at_min, first = np.unique(run_idx[at_min], return_index=True)
    best_loss, best_step = np.full(K, np.nan), np.zeros(K, np.int64)
    has_best = np.isfinite(seg_min[runs_at_min])
    best_loss[runs_at_min[has_best]] = loss[at_min[first]][has_best]
    best_step[runs_at_min[has_best]] = step[at_min[first]][has_best]
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
        "engine": arrow.dictionary(np.zeros(K, np.int32), [engine]).dictionary_decode(),
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


def _recipe_key(run: Run) -> tuple:
    return (run.schedule, run.clip_norm, run.clip_value, run.label_smoothing, run.lr_scaling, run.base_batch_size,
            run.noise_scale_every)


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


def environment(device: str) -> dict[str, Any]:
    import platform
    import sys

    import torch

    env = {"optbench": __version__, "python": sys.version.split()[0], "torch": torch.__version__,
           "platform": platform.platform(), "machine": platform.machine(), "device": device,
           "threads": torch.get_num_threads(),
           "deterministic": torch.are_deterministic_algorithms_enabled()}  # optbench.determinism
    if "cuda" in device and torch.cuda.is_available():
        env["device_name"] = torch.cuda.get_device_name()
        env["cuda"] = torch.version.cuda
    revision = git_revision(Path.cwd())
    if revision:
        env["git_revision"] = revision
    return env


def git_revision(start: Path) -> str | None:
    """The commit checked out in the git work tree holding ``start``, or None outside one.

    Read from ``.git/HEAD`` and the ref it names (loose or packed) without starting ``git``: a subprocess
    costs ~10 ms, which is a tenth of a small batched sweep. Anything unusual (a worktree's ``.git`` file,
    a missing ref) falls back to ``git rev-parse HEAD``.
    """
    import re
    import subprocess

    for directory in (start, *start.parents):
        git = directory / ".git"
        if git.is_dir():
            try:
                head = (git / "HEAD").read_text().strip()
                if re.fullmatch(r"[0-9a-f]{40}", head):  # detached
                    return head
                ref = head.removeprefix("ref: ").strip()
                loose = git / ref
                if loose.is_file():
                    return loose.read_text().strip()
                packed = git / "packed-refs"
                for line in (packed.read_text().splitlines() if packed.is_file() else ()):
                    sha, _, name = line.partition(" ")
                    if name == ref:
                        return sha
            except OSError:
                pass
            break
        if git.exists():  # a worktree or submodule: .git is a file pointing elsewhere
            break
    else:
        return None
    try:
        rev = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5, cwd=start)
    except (OSError, subprocess.SubprocessError):
        return None
    return rev.stdout.strip() if rev.returncode == 0 else None


def run_sweep(sweep: Sweep, out_dir: str | Path, *, force: bool = False, command: str = "",
              progress_factory: Callable[[int, int], Any] | None = None, workers: int = 1,
              executor=None) -> SweepOutcome:
    """Run every missing run of ``sweep`` into ``out_dir`` and return counts and timings.

    ``progress_factory(total_steps, total_runs)`` may return an object with ``advance(n)`` and ``close()``, and
    optionally ``runs_finished(statuses)``, called with the statuses of each batch of runs written.
    ``workers > 1`` runs work items in that many processes (see :func:`run_items_parallel`); ``executor`` (an
    :mod:`optbench.executors` executor, e.g. Dask) runs them where it says instead.
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
    items = plan_groups(todo, sweep.engine)
    check_memory(items)
    check_writable(out)  # before any compute: a read-only or unwritable --out fails now, not after the work
    header = {
        "optbench_version": __version__,
        "environment": environment(",".join(sorted({r.device for r in runs})) or sweep.device),
        "schema": {"steps": "one row per (run, recorded step)", "summary": "one row per run"},
    }
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
        "schedules": list(dict.fromkeys(r.schedule for r in runs)) or list(sweep.schedules),
        "clip_norm": sweep.clip_norm, "clip_value": sweep.clip_value, "label_smoothing": sweep.label_smoothing,
        **({"recipe": runs[0].recipe_name if runs else sweep.recipe} if sweep.recipe else {}),
        **({"lr_scaling": runs[0].lr_scaling if runs else sweep.lr_scaling,
            "base_batch_size": runs[0].base_batch_size if runs else None}
           if sweep.lr_scaling or sweep.recipe else {}),
        **({"noise_scale_every": sweep.noise_scale_every} if sweep.noise_scale_every else {}),
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

    writer = _ChunkWriter(out)
    try:
        try:
            from optbench.executors.local import LocalExecutor

            executor = executor or LocalExecutor(workers)
            if executor.takes(items):
                for engine, statuses in executor.run_items(items, out, progress):
                    written(engine, statuses)
                items = []
            for i, (engine, group) in enumerate(items):
                trace = execute(engine, group, progress.advance if progress else None)
                for done in writer.write(group, trace, engine, background=i + 1 < len(items)):
                    written(*done)
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
    return SweepOutcome(out, len(runs), len(runs) - len(todo), completed, time.perf_counter() - t0, engines)


RECORDED_FLOATS_PER_ROW = 4  # loss, grad norm, wall time and one float of slack per run and recorded row
TIMED_FLOATS_PER_STEP = 2  # cost.StepTimer: step time and full iteration time, one float64 each per step


def recording_bytes(group: Sequence[Run]) -> int:
    """Memory the engines preallocate to record one work item: rows × runs × (floats + coordinates) for
    the recorder, and the step timer's per-step clock readings (8 bytes each)."""
    first = group[0]
    rows = first.steps // first.record_every + 2
    coords = first.problem.dim if first.problem.dim <= 3 else 0
    return 8 * (rows * len(group) * (RECORDED_FLOATS_PER_ROW + coords) + TIMED_FLOATS_PER_STEP * first.steps)


def memory_limit_bytes() -> int:
    """Half the machine's physical memory (a sane ceiling for one work item's recording buffers)."""
    import os

    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") // 2
    except (ValueError, OSError, AttributeError):  # no sysconf (Windows): assume 8 GiB
        return 8 << 30


def check_memory(items: Sequence[tuple[str, list[Run]]]) -> None:
    """Refuse, before any compute, a budget whose recording buffers would not fit (``--steps 10**12``
    would ask for terabytes): one sentence naming the steps, the record interval and the memory."""
    if not items:
        return
    engine, group = max(items, key=lambda item: recording_bytes(item[1]))
    need, limit = recording_bytes(group), memory_limit_bytes()
    if need > limit:
        first = group[0]
        raise UsageError(
            f"--steps {first.steps} (recording every {first.record_every}, {len(group)} runs at once): the "
            f"recording buffers would need about {need / 2**30:,.1f} GiB, more than half of this machine's "
            f"memory ({2 * limit / 2**30:,.1f} GiB); use fewer --steps or a larger --record-every.")


def chunk_id(group: Sequence[Run]) -> str:
    """The file name of a group's chunk: a hash of its run ids."""
    return hashlib.sha256("".join(r.run_id for r in group).encode()).hexdigest()[:16]


class _ChunkWriter:
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
        self.pool = None
        self.pending = None  # (future, engine, statuses)

    def write(self, group: list[Run], trace, engine: str, background: bool = True):
        from concurrent.futures import ThreadPoolExecutor

        from optbench.results import write_chunk

        steps_table, summary_table = trace_tables(group, trace, engine)
        yield from self._finish()
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


def _portable(run: Run) -> tuple:
    """A run as picklable values (problems and optimizer entries hold closures): specs and fields."""
    import dataclasses

    fields = {f.name: getattr(run, f.name) for f in dataclasses.fields(run) if f.name not in ("problem", "optimizer")}
    batch = run.problem.batch_size if run.problem.has_batch_size else None
    return str(run.problem.spec), batch, str(run.optimizer.spec), fields, run.run_id


def _rebuild(portable: tuple, device: str | None) -> Run:
    from optbench.optimizers import get_optimizer
    from optbench.problems import get_problem

    problem_spec, batch, optimizer_spec, fields, run_id = portable
    problem = get_problem(problem_spec)  # the spec holds a --batch-size given: the label stays the local one
    if batch is not None and problem.batch_size != batch:
        problem = get_problem(problem_spec, batch_size=batch)
    run = Run(problem, get_optimizer(optimizer_spec), **fields)
    if run.run_id != run_id:
        raise RuntimeError(f"internal: run {run_id} rebuilt in a worker as {run.run_id}")
    if device is not None:  # a device index only: run ids hash the device type, so they are unchanged
        run = Run(problem, run.optimizer, **{**fields, "device": device})
    return run


def _run_item(engine: str, portables: list[tuple], out: Path, device: str | None) -> tuple[str, list[str]]:
    """One work item in a worker process: run it and write its chunk (atomic, like the serial path)."""
    import torch

    from optbench.results import write_chunk

    torch.set_num_threads(1)  # one core per worker; N workers share the machine
    group = [_rebuild(p, device) for p in portables]
    trace = execute(engine, group)
    steps_table, summary_table = trace_tables(group, trace, engine)
    write_chunk(out, chunk_id(group), steps_table, summary_table)
    return engine, list(trace.status)


def _report_runs(progress, statuses) -> None:
    if progress is not None and hasattr(progress, "runs_finished"):
        progress.runs_finished(list(statuses))


def run_items_parallel(items, out: Path, workers: int, progress=None):
    """Run work items in ``workers`` processes (spawned: safe with torch's thread pools); yields
    (engine, statuses of its runs) as items finish, their chunks written. Each worker writes its own chunks;
    the caller writes the manifest.
    On CUDA with several devices, item i goes to device i mod (number of devices). Ctrl-C cancels the
    items not started; finished chunks are already on disk."""
    import multiprocessing
    from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait

    import torch

    ndev = torch.cuda.device_count() if items and items[0][1][0].device.startswith("cuda") else 0
    pool = ProcessPoolExecutor(max_workers=workers, mp_context=multiprocessing.get_context("spawn"),
                               initializer=die_with_parent, initargs=(os.getpid(),))
    try:
        pending = {pool.submit(_run_item, engine, [_portable(r) for r in group], out,
                               f"cuda:{i % ndev}" if ndev > 1 else None):
                   sum(r.steps for r in group) for i, (engine, group) in enumerate(items)}
        while pending:
            finished, _ = wait(pending, return_when=FIRST_COMPLETED)
            for future in finished:
                steps = pending.pop(future)
                engine, statuses = future.result()
                if progress is not None:
                    progress.advance(steps)
                yield engine, statuses
    except BaseException:  # Ctrl-C, SIGTERM or a failure: stop the workers now; finished chunks are on disk
        for process in list(getattr(pool, "_processes", {}).values()):
            process.terminate()
        raise
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


PARENT_POLL_S = 0.5  # how often a worker's watchdog checks that its parent is alive


def die_with_parent(parent_pid: int) -> None:
    """Worker initializer: end this process when ``parent_pid`` ends, however it ends (SIGKILL included),
    so no worker (each holding hundreds of MB) outlives the sweep. Linux: ``prctl(PR_SET_PDEATHSIG,
    SIGKILL)``; everywhere: a daemon thread that exits when the parent is gone (the process is
    re-parented, so ``os.getppid()`` changes)."""
    import signal
    import sys
    import threading

    if sys.platform.startswith("linux"):
        try:
            import ctypes

            PR_SET_PDEATHSIG = 1
            ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
        except (OSError, AttributeError):
            pass
    if os.getppid() != parent_pid:  # the parent died before we asked to follow it
        os._exit(1)

    def watch() -> None:
        while os.getppid() == parent_pid:
            time.sleep(PARENT_POLL_S)
        os._exit(1)

    threading.Thread(target=watch, name="optbench-parent-watchdog", daemon=True).start()


def problem_device(name: str, problem) -> str:
    """The device a problem's runs use: ``auto`` keeps analytic problems on the CPU (their tensors are
    tiny, so kernel launches would dominate on an accelerator) and sends networks to CUDA/MPS if present."""
    if name == "auto" and problem.kind == "analytic":
        return "cpu"
    return resolve_device(name)


def resolve_device(name: str) -> str:
    """'auto' → cuda if available, else mps, else cpu; validates explicit choices."""
    import torch

    if name == "auto":
        if torch.cuda.is_available():
            return "cuda"
        if getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
            return "mps"
        return "cpu"
    if name == "cpu":
        return "cpu"
    if name.startswith("cuda"):
        from optbench.executors import DEVICES_ON_WORKERS

        if DEVICES_ON_WORKERS.get() and (name == "cuda" or name[5:].isdigit() and name[4] == ":"):
            return name  # each worker's own device (optbench.executors.dask checks it there)
        if not torch.cuda.is_available():
            raise UsageError(f"--device {name}: no CUDA device is available here; use --device cpu or auto.")
        if ":" in name:
            try:
                index = int(name.split(":", 1)[1])
            except ValueError:
                raise UsageError(f"--device {name!r}: expected cuda:N with N a device index.") from None
            if not 0 <= index < torch.cuda.device_count():
                raise UsageError(f"--device {name}: there are {torch.cuda.device_count()} CUDA devices "
                                 f"(cuda:0 to cuda:{torch.cuda.device_count() - 1}).")
        return name
    if name == "mps":
        if not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
            raise UsageError("--device mps: no Apple MPS device is available here; use --device cpu or auto.")
        return "mps"
    raise UsageError(f"Unknown device {name!r}; valid: auto, cpu, cuda, cuda:N, mps.")
