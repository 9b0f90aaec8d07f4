"""How closely the batched engine follows the loop engine as runs get longer (README "Engines").

The contract (tests/test_engine_contract.py) is 1e-8 relative in float64 over short runs; this prints the
max relative loss difference, batched against loop, at longer horizons, where the engines' 1e-16 rounding
differences grow with the sensitivity of the dynamics. Also the per-tensor norms of the layer-wise rules
on a network (LAMB, LARS) against pytorch_optimizer after 10 steps.

    python benchmarks/bench_engine_agreement.py      # prints tables; paste them into BENCHMARKS.md
"""

from __future__ import annotations

import os
import platform
import tempfile

import numpy as np
import torch

from optbench.data import store
from optbench.data.synthetic import write_dataset
from optbench.engines.batched import run_batched
from optbench.engines.loop import run_loop
from optbench.engines.network import run_network, run_network_batched
from optbench.optimizers import get_optimizer
from optbench.problems import get_problem

ANALYTIC = [("rosenbrock", "adam(lr=0.01)", {}), ("rosenbrock(noise=0.1)", "adam(lr=0.01)", {}),
            ("rosenbrock", "sgd-momentum(lr=0.001)", {}), ("rosenbrock", "sgd-momentum(lr=0.001)", {"clip_norm": 1.0}),
            ("noisy-quadratic(dim=5, batch_size=4)", "adam(lr=0.05)", {"clip_value": 0.1}),
            ("beale", "lamb(lr=0.01)", {})]
NET = "mnist-mlp(width=16, depth=2, batch_size=50, train_size=400, test_size=100, precision='{}', eval_every=50)"
NET_OPTS = ["adam(lr=0.01)", "sgd-momentum(lr=0.05)", "lamb(lr=0.01)", "lamb", "lars", "lars(lr=0.01)"]


def max_relative(a, b) -> float:
    a, b = np.asarray(a, float), np.asarray(b, float)
    finite = np.isfinite(a) & np.isfinite(b)
    return float(np.max(np.abs(a[finite] - b[finite]) / np.maximum(np.abs(b[finite]), 1e-300)))


def main() -> None:
    torch.set_num_threads(1)
    print(f"torch {torch.__version__}, {platform.processor() or platform.machine()}, float64 unless noted\n")
    horizons = (100, 1000, 5000)
    print("| analytic run | recipe | " + " | ".join(f"≤ {n}" for n in horizons) + " |\n|---|---|---|---|---|")
    for spec, opt, recipe in ANALYTIC:
        problem, config = get_problem(spec), get_optimizer(opt)
        batched = run_batched(problem, [config], [0], horizons[-1], 1, measure_cost=False, **recipe)
        loop = run_loop(problem, config, 0, horizons[-1], 1, measure_cost=False, **recipe)
        cells = [f"{max_relative(batched.loss[: n + 1, 0], loop.loss[: n + 1, 0]):.1e}" for n in horizons]
        print(f"| {opt} on {spec} | {recipe or '-'} | " + " | ".join(cells) + " |")
    root = tempfile.mkdtemp()
    write_dataset("mnist", os.path.join(root, "mnist"), n_train=1000, n_test=200)
    os.environ[store.DATA_ENV] = root
    horizons = (10, 100, 300)
    print("\n| network run (mnist-mlp width 16, depth 2, batch 50) | " + " | ".join(f"≤ {n}" for n in horizons)
          + " |\n|---|---|---|---|")
    for precision in ("float64", "float32"):
        problem = get_problem(NET.format(precision))
        for opt in NET_OPTS:
            config = get_optimizer(opt)
            batched = run_network_batched(problem, [config], [0], horizons[-1], 1)
            loop = run_network(problem, config, 0, horizons[-1], 1)
            cells = [f"{max_relative(batched.loss[: n + 1, 0], loop.loss[: n + 1, 0]):.1e}" for n in horizons]
            print(f"| {opt}, {precision} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
