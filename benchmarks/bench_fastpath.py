"""Analytic batched sweeps against the same computation written by hand, and time per configuration in K.

Issue #19 items 1–2. In one process, interleaved (every repetition runs each measurement once, in turn),
medians of the repetitions:

1. the 1000-configuration sweep (100 log-spaced lrs in [1e-4, 0.1] × 10 seeds, ``rosenbrock(noise=0.1)``,
   adam, 1000 steps, every step recorded) through optbench — engine (``sweep.plan.execute``), tables
   (``sweep.tables.trace_tables``) and Parquet write (``results.write_chunk``) timed separately — against a
   hand-vectorised numpy loop with the same recording (loss, gradient norm and both coordinates of every run
   at every step, divergence check) and a bare torch loop (``[1000, 2]`` tensors, no recording);
2. the whole sweep end to end through the ``optbench`` CLI (a subprocess, ``-q``);
3. engine time per configuration-step for K = 100 … 100,000 (fewer steps for large K), on the path
   ``--engine batched`` picks (numpy on a CPU) and on the torch path (``run_batched``).

    python benchmarks/bench_fastpath.py              # all three tables
    python benchmarks/bench_fastpath.py --repeat 5 --skip-cli --k 100,1000,100000

State the machine load (``uptime``) with the numbers: the script prints it before and after.
"""

from __future__ import annotations

import argparse
import functools
import math
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

PROBLEM = "rosenbrock(noise=0.1)"
LRS = [10 ** (-4 + 3 * i / 99) for i in range(100)]
SEEDS = list(range(10))
STEPS = 1000


def _uptime() -> str:
    try:
        return subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()
    except OSError:
        return f"load average {os.getloadavg()}"


def _sweep_runs(lrs, seeds, steps, problem=PROBLEM, optimizer="adam", record_every=1):
    from optbench import Sweep, get_optimizer, get_problem

    return Sweep([get_problem(problem)], [get_optimizer(optimizer)], lrs=lrs, seeds=seeds, steps=steps,
                 record_every=record_every, engine="batched").expand()


def optbench_parts(out: Path, steps: int = STEPS) -> dict[str, tuple[float, float]]:
    """(wall, CPU) seconds of engine, tables and Parquet write of the 1000 × 1000 sweep through optbench's
    own functions."""
    from optbench.results import write_chunk
    from optbench.sweep.plan import execute, plan_groups
    from optbench.sweep.tables import trace_tables
    from optbench.sweep.writer import chunk_id

    runs = _sweep_runs(LRS, SEEDS, steps)
    ((engine, group),) = plan_groups(runs, "batched")
    t0, c0 = time.perf_counter(), time.process_time()
    trace = execute(engine, group)
    t1, c1 = time.perf_counter(), time.process_time()
    steps_table, summary = trace_tables(group, trace, engine)
    t2, c2 = time.perf_counter(), time.process_time()
    write_chunk(out, chunk_id(group), steps_table, summary)
    t3, c3 = time.perf_counter(), time.process_time()
    return {"engine": (t1 - t0, c1 - c0), "tables": (t2 - t1, c2 - c1), "write": (t3 - t2, c3 - c2),
            "compute": (t3 - t0, c3 - c0)}


def numpy_by_hand(K: int = 1000, steps: int = STEPS, noise: float = 0.1, out: Path | None = None,
                  record_every: int = 1):
    """Adam on Rosenbrock for K configurations, hand-vectorised in numpy, recording what optbench records
    (loss, gradient norm, coordinates at every ``record_every``-th step and the last) and checking for
    divergence; one noise generator, drawn for up to 256 steps at once (fewer at large K: 32 MiB a draw)."""
    import numpy as np

    t0, c0 = time.perf_counter(), time.process_time()
    lr = np.array(LRS)[np.arange(K) % len(LRS)][:, None]
    b1, b2, eps = 0.9, 0.999, 1e-8
    x = np.tile(np.array([-1.2, 1.0]), (K, 1))
    m, v = np.zeros_like(x), np.zeros_like(x)
    rows = len(range(0, steps + 1, record_every)) + (steps % record_every != 0)
    loss_rec = np.empty((rows, K))
    gn_rec = np.empty((rows, K))
    x_rec = np.empty((rows, K, 2))
    rng = np.random.default_rng(0)
    block = max(1, min(256, (1 << 22) // (2 * K)))
    row = 0
    for t in range(steps + 1):
        a, c = x[:, 0], x[:, 1]
        r = c - a * a
        loss = 100 * r * r + (1 - a) ** 2
        g = np.stack((-400 * r * a - 2 * (1 - a), 200 * r), -1)
        if t % record_every == 0 or t == steps:
            loss_rec[row] = loss
            gn_rec[row] = np.sqrt((g * g).sum(-1))
            x_rec[row] = x
            row += 1
        if not (loss <= 1e6).all():
            pass  # a diverged run would be marked here; none diverges at these settings
        if t == steps:
            break
        if t % block == 0:
            draws = rng.standard_normal((block, K, 2))
        g = g + noise * draws[t % block]
        m += (1 - b1) * (g - m)
        v *= b2
        v += (1 - b2) * g * g
        bc1, bc2 = 1 - b1 ** (t + 1), math.sqrt(1 - b2 ** (t + 1))
        x -= (lr / bc1) * m / (np.sqrt(v) / bc2 + eps)
    if out is not None:  # the same rows as a Parquet file, written as optbench writes its steps table
        _write_by_hand(out, loss_rec, gn_rec, x_rec, lr[:, 0])
    return time.perf_counter() - t0, time.process_time() - c0


def _write_by_hand(out: Path, loss, grad_norm, coords, lr) -> None:
    import numpy as np
    import pyarrow as pa
    import pyarrow.parquet as pq

    R, K = loss.shape
    run = np.repeat(np.arange(K, dtype=np.int32), R)
    columns = {"run": pa.array(run), "lr": pa.array(np.repeat(lr, R)),
               "seed": pa.array(np.repeat(np.arange(K) % 10, R)),
               "step": pa.array(np.tile(np.arange(R, dtype=np.int64), K)), "loss": pa.array(loss.T.reshape(-1)),
               "grad_norm": pa.array(grad_norm.T.reshape(-1)), "wall_time_s": pa.array(np.zeros(R * K)),
               "x0": pa.array(coords[..., 0].T.reshape(-1)), "x1": pa.array(coords[..., 1].T.reshape(-1))}
    out.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.table(columns), out / "steps.parquet", compression="lz4", use_dictionary=False,
                   write_statistics=False, use_byte_stream_split=["loss", "grad_norm", "wall_time_s", "x0", "x1"])


def torch_bare(K: int = 1000, steps: int = STEPS, noise: float = 0.1) -> float:
    """The same sweep as bare ``[K, 2]`` torch tensors: no recording (the issue's 'bare torch loop')."""
    import torch

    t0 = time.perf_counter()
    lr = torch.tensor(LRS, dtype=torch.float64).repeat_interleave(K // len(LRS))[:, None]
    b1, b2, eps = 0.9, 0.999, 1e-8
    x = torch.tensor([-1.2, 1.0], dtype=torch.float64).repeat(K, 1)
    m, v = torch.zeros_like(x), torch.zeros_like(x)
    gen = torch.Generator().manual_seed(0)
    for t in range(steps):
        a, c = x[:, 0], x[:, 1]
        r = c - a * a
        g = torch.stack((-400 * r * a - 2 * (1 - a), 200 * r), -1)
        g = g + noise * torch.randn(K, 2, generator=gen, dtype=torch.float64)
        m.lerp_(g, 1 - b1)
        v.mul_(b2).addcmul_(g, g, value=1 - b2)
        bc1, bc2 = 1 - b1 ** (t + 1), math.sqrt(1 - b2 ** (t + 1))
        x.sub_((lr / bc1) * m / (v.sqrt() / bc2 + eps))
    return time.perf_counter() - t0


def cli_end_to_end(out: Path) -> tuple[float, float]:
    """(wall, CPU = user + system) seconds of the whole sweep as one ``optbench run -q`` process. On a loaded
    machine the CPU time is what the wall time would be on an idle one (the process is single-threaded but
    for the Parquet writer, which it joins)."""
    exe = shutil.which("optbench")
    cmd = [exe] if exe else [sys.executable, "-m", "optbench"]
    args = cmd + ["run", "-p", PROBLEM, "-o", "adam", "--lr", "1e-4:1e-1:100", "--seeds", "10", "--steps",
                  str(STEPS), "--record-every", "1", "-q", "--force", "--out", str(out)]
    import resource

    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    subprocess.run(args, check=True, capture_output=True)
    wall = time.perf_counter() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return wall, (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


def _k_steps(K: int) -> int:
    """Steps for a group of K: 1000, fewer above 20,000 configurations (at least 200, so per-run set-up —
    seeds, noise streams, hyperparameter columns — is amortised as in a real sweep)."""
    return max(200, min(1000, 20_000_000 // K))


def engine_per_config_step(K: int, path: str, record_every: int = 1) -> tuple[float, float, float]:
    """(wall, CPU, user CPU) seconds per configuration-step of the engine alone for a group of K (the ``auto``
    path, numpy here, or ``torch``)."""
    from optbench.sweep.plan import execute

    steps = _k_steps(K)
    lrs = [10 ** (-4 + 3 * i / 99) for i in range(100)]
    seeds = list(range(math.ceil(K / len(lrs))))
    runs = _sweep_runs(lrs, seeds, steps, record_every=record_every)[:K]

    def engine():
        if path == "torch":
            from optbench.engines.batched import run_batched

            run_batched(runs[0].problem, [r.optimizer for r in runs], [r.seed for r in runs], steps, record_every)
        else:
            execute("batched", runs)

    return _per_config_step(engine, K)


def _import_torch_cpu() -> float:
    import resource

    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    subprocess.run([sys.executable, "-c", "import torch"], check=True)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


def _table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--k", default="100,1000,1024,1025,10000,100000")
    parser.add_argument("--skip-cli", action="store_true")
    parser.add_argument("--skip-sweep", action="store_true", help="only the K scaling")
    parser.add_argument("--skip-k", action="store_true", help="only the sweep tables")
    parser.add_argument("--k-repeat", type=int, default=None, help="repetitions of the K scaling (repeat // 2)")
    parser.add_argument("--k-record-every", type=int, default=1, help="record interval in the K scaling")
    parser.add_argument("--skip-torch-k", action="store_true", help="K scaling on the chosen path only")
    args = parser.parse_args(argv)
    print(f"machine: {platform.machine()}, {os.cpu_count()} CPUs, python {platform.python_version()}, "
          f"OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS', 'unset')}")
    print(f"before: {_uptime()}")
    print(f"python -c 'import torch': {_import_torch_cpu():.3f} s CPU (a floor the numpy path does not pay)")
    if not args.skip_sweep:
        sweep_tables(args)
    if not args.skip_k:
        k_scaling(args)
    print(f"\nafter: {_uptime()}")


def sweep_tables(args) -> None:
    samples: dict[str, list[tuple[float, float]]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        # warm-up: lazy imports (pyarrow.parquet, the optimizer registry) and first calls are not measured
        optbench_parts(Path(tmp) / "warm", steps=10)
        numpy_by_hand(steps=10, out=Path(tmp) / "warm-np")
        torch_bare(steps=10)
        for rep in range(args.repeat):
            out = Path(tmp) / f"r{rep}"
            for name, value in optbench_parts(out / "api").items():
                samples.setdefault(f"optbench {name}", []).append(value)
            samples.setdefault("numpy by hand, same recording", []).append(numpy_by_hand())
            samples.setdefault("numpy by hand + Parquet of the same rows", []).append(numpy_by_hand(out=out / "np"))
            samples.setdefault("torch bare loop, no recording", []).append((torch_bare(), math.nan))
            if not args.skip_cli:
                samples.setdefault("optbench CLI end to end (-q)", []).append(cli_end_to_end(out / "cli"))
    med = {k: (statistics.median(w for w, _ in v), statistics.median(c for _, c in v)) for k, v in samples.items()}
    rows = [[k, f"{w:.3f} s", f"{min(s for s, _ in samples[k]):.3f}–{max(s for s, _ in samples[k]):.3f}",
             "" if math.isnan(c) else f"{c:.3f} s"] for k, (w, c) in med.items()]
    print(f"\n1000 configurations × {STEPS} steps, every step recorded; median of {args.repeat} (interleaved)")
    print(_table(["measurement", "wall, median", "wall, range", "CPU time, median"], rows))
    for label, i in (("wall", 0), ("CPU", 1)):
        ratio = med["optbench compute"][i] / med["numpy by hand, same recording"][i]
        with_write = med["optbench compute"][i] / med["numpy by hand + Parquet of the same rows"][i]
        engine = med["optbench engine"][i] / med["numpy by hand, same recording"][i]
        print(f"{label}: optbench compute / numpy by hand: {ratio:.2f}× (goal ≤ 3×); / numpy by hand + Parquet: "
              f"{with_write:.2f}×; engine alone / numpy by hand: {engine:.2f}×")
    if "optbench CLI end to end (-q)" in med:
        wall, cpu = med["optbench CLI end to end (-q)"]
        print(f"CLI end to end: {wall:.3f} s wall, {cpu:.3f} s CPU (goal < 1 s)")


def _per_config_step(measure, K: int) -> tuple[float, float, float]:
    """(wall, CPU, user CPU) seconds per configuration-step of ``measure()`` for a group of K. User time leaves
    out the kernel's (system) time, most of which is providing fresh memory for the recorded rows: in the VM
    this was measured on, the same 800 MB cost 0.1–3.5 s of system time from one run to the next."""
    import resource

    steps = _k_steps(K)
    u0 = resource.getrusage(resource.RUSAGE_SELF).ru_utime
    t0, c0 = time.perf_counter(), time.process_time()
    measure()
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    user = resource.getrusage(resource.RUSAGE_SELF).ru_utime - u0
    return wall / (K * steps), cpu / (K * steps), user / (K * steps)


def k_scaling(args) -> None:
    """Engine time per configuration-step in K, beside the hand-written numpy loop at the same K, steps and
    recording: where the hand loop's time per configuration-step changes with K as much as the engine's, the
    change is numpy's (per-operation dispatch at small K, fresh memory for the recorded rows at large K), not
    the engine's."""
    ks = [int(k) for k in args.k.split(",")]
    paths = ["auto"] + ([] if args.skip_torch_k else ["torch"])
    repeat = args.k_repeat or max(1, args.repeat // 2)
    for path in paths:  # warm-up: imports (torch: seconds) and first calls are not measured
        engine_per_config_step(100, path)
    numpy_by_hand(K=100, steps=10)
    per: dict[tuple[str, int], list[tuple[float, float, float]]] = {}
    every = args.k_record_every
    for _ in range(repeat):
        for K in ks:
            for path in paths:
                per.setdefault((path, K), []).append(engine_per_config_step(K, path, every))
            by_hand = functools.partial(numpy_by_hand, K=K, steps=_k_steps(K), record_every=every)
            per.setdefault(("numpy by hand", K), []).append(_per_config_step(by_hand, K))
    columns = paths + ["numpy by hand"]
    median = {key: tuple(statistics.median(m[i] for m in v) for i in range(3)) for key, v in per.items()}
    rows = []
    for K in ks:
        row = [f"{K:,}", str(_k_steps(K))]
        for path in columns:
            row += [f"{value * 1e9:.0f} ns" for value in median[(path, K)]]
        row.append(f"{median[('auto', K)][2] / median[('numpy by hand', K)][2]:.2f}×")
        rows.append(row)
    print(f"\nengine time per configuration-step (median of {repeat}, interleaved; record every {every})")
    print(_table(["K", "steps"] + [f"{p}{' path' if p != 'numpy by hand' else ''}, {kind}"
                                   for p in columns for kind in ("wall", "CPU", "user")] + ["auto / by hand, user"],
                 rows))
    reference = 1000 if 1000 in ks else ks[0]
    for label in ("auto", "numpy by hand"):
        for i, kind in ((1, "CPU"), (2, "user CPU")):
            base = median[(label, reference)][i]
            spread = ", ".join(f"K={K:,}: {median[(label, K)][i] / base:.2f}" for K in ks)
            print(f"{label}: {kind} per configuration-step relative to K={reference:,} ({spread}); flat: 0.8–1.2")


if __name__ == "__main__":
    main()
