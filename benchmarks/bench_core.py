"""Core sweep benchmark: batched engine vs loop engine, and CLI start-up.

The goal (issue: core): 1000 configurations (100 learning rates × 10 seeds of rosenbrock(noise=0.1) with
adam) × 1000 steps complete through the CLI, start-up included, at least 100× faster per configuration
than the loop engine, and in under 3 s of wall time.

    python benchmarks/bench_core.py            # prints a table; paste it into BENCHMARKS.md

Each measurement is the median of a few repetitions; the loop engine's per-configuration time is measured
on a sample of configurations from the same sweep (the full 1000 would take minutes).
"""

from __future__ import annotations

import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def _time_command(args: list[str], repeat: int = 3) -> float:
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        subprocess.run(args, check=True, capture_output=True)
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def main() -> None:
    exe = shutil.which("optbench") or f"{sys.executable} -m optbench"
    cmd = exe.split()
    rows: list[tuple[str, str]] = []
    rows.append(("optbench --help (start-up)", f"{_time_command(cmd + ['--help']):.3f} s"))
    rows.append(("optbench list optimizers", f"{_time_command(cmd + ['list', 'optimizers']):.3f} s"))
    rows.append(("python -c 'import torch' (floor)",
                 f"{_time_command([sys.executable, '-c', 'import torch']):.3f} s"))

    sweep = ["run", "-p", "rosenbrock(noise=0.1)", "-o", "adam", "--lr", "1e-4:1e-1:100", "--seeds", "10",
             "--steps", "1000", "-q", "--force"]
    with tempfile.TemporaryDirectory() as tmp:
        batched = _time_command(cmd + sweep + ["--out", str(Path(tmp) / "b")])
        batched_coarse = _time_command(cmd + sweep + ["--record-every", "10", "--out", str(Path(tmp) / "c")])
        # loop engine: same runs, sampled (every 100th configuration) in-process after imports
        from optbench import Sweep, get_optimizer, get_problem
        from optbench.sweep.plan import execute

        s = Sweep([get_problem("rosenbrock(noise=0.1)")], [get_optimizer("adam")],
                  lrs=[10 ** (-4 + 3 * i / 99) for i in range(100)], seeds=list(range(10)), steps=1000)
        runs = s.expand()[::100]
        t0 = time.perf_counter()
        for run in runs:
            execute("loop", [run])
        loop_per_config = (time.perf_counter() - t0) / len(runs)
        batched_per_config = batched / 1000
        rows.append(("sweep 1000 configs × 1000 steps, batched, CLI total (every step recorded)",
                     f"{batched:.2f} s"))
        rows.append(("same, --record-every 10", f"{batched_coarse:.2f} s"))
        rows.append(("loop engine, per configuration (in-process, 10 sampled)", f"{loop_per_config:.3f} s"))
        rows.append(("loop engine, extrapolated to 1000 configurations", f"{loop_per_config * 1000:.0f} s"))
        rows.append(("speed-up per configuration (loop / batched CLI total)",
                     f"{loop_per_config / batched_per_config:.0f}×"))

    print(f"machine: {platform.machine()}, {platform.processor() or 'cpu'}, python {platform.python_version()}")
    width = max(len(r[0]) for r in rows)
    print(f"| {'measurement'.ljust(width)} | result |")
    print(f"|{'-' * (width + 2)}|--------|")
    for name, value in rows:
        print(f"| {name.ljust(width)} | {value} |")


if __name__ == "__main__":
    main()
