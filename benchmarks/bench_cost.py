"""What measuring cost costs: run time with ``measure_cost=True`` over ``measure_cost=False``.

Timing (three ``perf_counter`` reads per step into a preallocated array) and state-memory accounting (one
walk of ``optimizer.state`` per run; for the batched engine one probe optimizer, memoized) must add under
2% to a run. Runs alternate on/off (in both orders) so drift in machine load hits both; the table shows
the fastest of the repeats (least disturbed by other processes) and the median.

On a shared machine the end-to-end difference is within run-to-run noise, so the script also measures the
instrumentation directly: the per-step cost of the timer (``clock`` ×3 + ``record``) over 100 000
iterations, and the one-off state accounting (``state_bytes_per_param`` or the batched probe), divided by
the run's own measured time per step.

    python benchmarks/bench_cost.py [--steps 2000] [--repeats 7]
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from optbench.cost import _PROBES, StepTimer, probe_state_bytes_per_param
from optbench.engines.batched import run_batched
from optbench.engines.loop import run_loop
from optbench.optimizers import get_optimizer
from optbench.problems import get_problem

CASES = [  # (engine, problem, optimizer, K)
    ("loop", "valley(kappa=100)", "adam", 1),
    ("loop", "noisy-quadratic(dim=100)", "sgd-momentum", 1),
    ("batched", "valley(kappa=100)", "adam", 64),
    ("batched", "noisy-quadratic(dim=100)", "adam", 64),
]


def once(engine, problem, config, K, steps, measure):
    _PROBES.clear()  # include the probe's cost in every measured batched run
    t0 = time.perf_counter()
    if engine == "loop":
        run_loop(problem, config, 0, steps, 10, measure_cost=measure)
    else:
        run_batched(problem, [config] * K, list(range(K)), steps, 10, measure_cost=measure)
    return time.perf_counter() - t0


def timer_cost_per_step(n: int = 100_000) -> float:
    """Seconds the loop-side timing adds per step (three clock reads and one record)."""
    timer = StepTimer(n, "cpu")
    t0 = time.perf_counter()
    for t in range(n):
        start = timer.clock(t)
        mid = timer.clock(t)
        timer.record(t, start, mid, timer.clock(t))
    return (time.perf_counter() - t0) / n


def accounting_cost(engine, problem, config) -> float:
    """Seconds of the one-off state accounting of one run (or batched group)."""
    _PROBES.clear()
    t0 = time.perf_counter()
    if engine == "loop":
        from optbench.cost import state_bytes_per_param

        opt = config.entry.build([torch.nn.Parameter(torch.ones(problem.dim, dtype=torch.float64))],
                                 config.hyperparams)
        state_bytes_per_param(opt)
    else:
        probe_state_bytes_per_param(config, problem.dim, torch.float64)
    return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=2000)
    ap.add_argument("--repeats", type=int, default=7)
    args = ap.parse_args()
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, {args.steps} steps, "
          f"best and median of {args.repeats}")
    print("| engine | problem | optimizer | K | off best (s) | on best (s) | overhead (best) | overhead (median) |")
    print("|---|---|---|---:|---:|---:|---:|---:|")
    rows = []
    for engine, pspec, ospec, K in CASES:
        problem, config = get_problem(pspec), get_optimizer(ospec)
        once(engine, problem, config, K, 50, True)  # warm-up
        off, on = [], []
        for i in range(args.repeats):
            for measure in ((False, True) if i % 2 == 0 else (True, False)):
                (on if measure else off).append(once(engine, problem, config, K, args.steps, measure))
        a, b = min(off), min(on)
        m = statistics.median(on) / statistics.median(off) - 1
        print(f"| {engine} | {pspec} | {ospec} | {K} | {a:.3f} | {b:.3f} | {100 * (b / a - 1):+.1f}% "
              f"| {100 * m:+.1f}% |")
        rows.append((engine, pspec, ospec, K, a / args.steps, accounting_cost(engine, problem, config)))
    per_step = timer_cost_per_step()
    print(f"\ntimer: {per_step * 1e6:.2f} µs per step")
    print("| engine | problem | optimizer | K | step (µs) | timer share | accounting (ms) | accounting share |")
    print("|---|---|---|---:|---:|---:|---:|---:|")
    for engine, pspec, ospec, K, step_s, acc_s in rows:
        run_s = step_s * args.steps
        print(f"| {engine} | {pspec} | {ospec} | {K} | {step_s * 1e6:.0f} | {100 * per_step / step_s:.2f}% "
              f"| {acc_s * 1e3:.2f} | {100 * acc_s / run_s:.3f}% |")


if __name__ == "__main__":
    main()
