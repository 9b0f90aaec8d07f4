"""--executor dask: scaling of a network sweep over Dask workers, and the executor's per-item overhead.

1. A network sweep (an MLP on MNIST-shaped synthetic data, loop engine: one run per work item, 16 runs) on a
   ``LocalCluster`` of 2 worker processes (one thread each) against 1: wall time, speed-up.
2. Per-item overhead: the same tiny analytic items (one loop run of a few steps each) run by the local
   runner in this process, by the local pool (``--workers 2``) and by Dask (1 and 2 workers); the overhead
   is (wall − serial wall) / items.

Configurations are interleaved over ``--repeats`` repeats; medians are printed. Every timed sweep writes into
a fresh directory (the client writes every chunk, as in real use). Run on an idle machine for the scaling
goal (≥ 1.8× for 2 workers on 2 cores); state the load (``uptime``) with the numbers.

    python benchmarks/bench_dask.py [--repeats 3] [--runs 16] [--steps 40] [--items 48]
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import platform
import statistics
import subprocess
import tempfile
import time
from pathlib import Path


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--runs", type=int, default=16, help="network runs (4 learning rates × runs/4 seeds)")
    ap.add_argument("--steps", type=int, default=40, help="steps per network run")
    ap.add_argument("--items", type=int, default=48, help="tiny analytic items for the overhead")
    args = ap.parse_args()

    root = Path(tempfile.mkdtemp(prefix="optbench-bench-dask-"))
    os.environ["OPTBENCH_DATA"] = str(root / "data")  # before the clusters start: their workers inherit it
    os.environ["OMP_NUM_THREADS"] = "1"
    import warnings

    import torch

    from optbench.errors import OptbenchWarning

    warnings.simplefilter("ignore", OptbenchWarning)  # 'not the official MNIST': synthetic data, on purpose

    torch.set_num_threads(1)
    from distributed import LocalCluster

    from optbench.data.synthetic import write_dataset
    from optbench.executors.dask import DaskExecutor
    from optbench.optimizers import get_optimizer
    from optbench.problems import get_problem
    from optbench.runner import run_sweep
    from optbench.sweep.spec import Sweep

    write_dataset("mnist", root / "data" / "mnist", n_train=6000, n_test=500, gz=False)
    net = Sweep([get_problem("mnist-mlp(widths=(256, 128), batch_size=128, train_size=6000, test_size=500)")],
                [get_optimizer("adam")], lrs=[1e-4, 3e-4, 1e-3, 3e-3], seeds=list(range(max(1, args.runs // 4))),
                steps=args.steps, engine="loop", device="cpu", dtype="float32")
    tiny = Sweep([get_problem("rosenbrock")], [get_optimizer("sgd")],
                 lrs=[1e-4 * (1 + i) for i in range(max(1, args.items // 2))], seeds=[0, 1], steps=5, engine="loop")
    n_net, n_tiny = len(net.expand()), len(tiny.expand())
    clusters = {n: LocalCluster(n_workers=n, threads_per_worker=1, processes=True, host="127.0.0.1",
                                dashboard_address=":0") for n in (1, 2)}
    executors = {n: DaskExecutor(scheduler=c.scheduler_address) for n, c in clusters.items()}
    for executor in executors.values():  # imports and the dataset loaded on every worker before timing
        executor.client.run(exec, "import optbench.engines.network, optbench.engines.loop")
    counter = iter(range(10**6))

    def timed(sweep, **kw) -> float:
        out = root / f"out{next(counter)}"
        t0 = time.perf_counter()
        run_sweep(sweep, out, **kw)
        return time.perf_counter() - t0

    warm = dataclasses.replace(net, steps=2, seeds=[100, 101])  # each worker reads the data once
    for n in (1, 2):
        timed(warm, executor=executors[n])
    configs = {
        "network: dask 1 worker": lambda: timed(net, executor=executors[1]),
        "network: dask 2 workers": lambda: timed(net, executor=executors[2]),
        "tiny: local, this process": lambda: timed(tiny),
        "tiny: local --workers 2": lambda: timed(tiny, workers=2),
        "tiny: dask 1 worker": lambda: timed(tiny, executor=executors[1]),
        "tiny: dask 2 workers": lambda: timed(tiny, executor=executors[2]),
    }
    times: dict[str, list[float]] = {k: [] for k in configs}
    for _ in range(args.repeats):  # interleaved: the machine's load drifts the same way for every config
        for name, fn in configs.items():
            times[name].append(fn())
    med = {k: statistics.median(v) for k, v in times.items()}
    load = subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()
    print(f"# {platform.processor() or platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}; "
          f"{args.repeats} interleaved repeats, medians; {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}")
    print(f"# load after: {load}")
    print("| sweep | items | median wall s | all (s) | note |\n|---|---|---|---|---|")
    speedup = med["network: dask 1 worker"] / med["network: dask 2 workers"]
    serial = med["tiny: local, this process"]
    for name, value in med.items():
        items = n_net if name.startswith("network") else n_tiny
        note = ""
        if name == "network: dask 2 workers":
            note = f"{speedup:.2f}× vs 1 worker"
        elif name.startswith("tiny") and name != "tiny: local, this process":
            note = f"{1e3 * (value - serial) / items:+.1f} ms per item vs this process"
        print(f"| {name} | {items} | {value:.2f} | {', '.join(f'{t:.2f}' for t in times[name])} | {note} |")
    for executor in executors.values():
        executor.close()
    for cluster in clusters.values():
        cluster.close()


if __name__ == "__main__":
    main()
