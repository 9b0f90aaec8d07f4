"""Peak memory of a sweep that records every step: prints the rows of BENCHMARKS.md ('## Memory bounded by a setting').

Each sweep runs as its own ``optbench run`` process (Rosenbrock, Adam, lr 1e-3, N seeds, S steps,
``--record-every 1``, into a fresh directory); its peak resident memory is ``ru_maxrss`` of that child
(``resource.getrusage(RUSAGE_CHILDREN)`` after it alone ran), its CPU time user + system, and the chunks it
wrote are counted. ``--memory-limit`` is passed through (default: the setting's default, 1 GiB).
Usage: python benchmarks/bench_memory.py [--sizes 1024x2000,4096x10000] [--memory-limit 1GiB]
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def measure(runs: int, steps: int, limit: str | None) -> dict:
    """One sweep in a child process: its peak RSS (bytes), CPU and wall seconds, chunks written."""
    out = Path(tempfile.mkdtemp(prefix="optbench-mem-"))
    command = [sys.executable, "-c", "import sys; from optbench.cli.app import main; sys.argv[0] = 'optbench'; main()",
               "run", "--problem", "rosenbrock", "--opt", "adam", "--lr", "1e-3", "--seeds", str(runs),
               "--steps", str(steps), "--record-every", "1", "--out", str(out / "r"), "--quiet"]
    if limit:
        command += ["--memory-limit", limit]
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    subprocess.run(command, check=True)
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    chunks = len(list((out / "r" / "steps").glob("*.parquet")))
    shutil.rmtree(out)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return {"rss": after.ru_maxrss * 1024, "cpu": cpu, "wall": wall, "chunks": chunks}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", default="1024x2000,4096x10000", help="RUNSxSTEPS, comma-separated")
    ap.add_argument("--memory-limit", default=None)
    args = ap.parse_args()
    when = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    print(f"# {os.cpu_count()} cores, load {os.getloadavg()[0]:.2f}, {when}")
    print("| sweep | recorded rows | peak RSS | CPU s | wall s | chunks |")
    print("|---|---:|---:|---:|---:|---:|")
    for size in args.sizes.split(","):
        runs, steps = (int(v) for v in size.split("x"))
        # ru_maxrss of RUSAGE_CHILDREN is the largest child so far: run sizes in increasing order
        m = measure(runs, steps, args.memory_limit)
        print(f"| {runs} runs × {steps + 1:,} steps | {runs * (steps + 1) / 1e6:.1f} M | {m['rss'] / 2**20:,.0f} MiB "
              f"| {m['cpu']:.1f} | {m['wall']:.1f} | {m['chunks']} |")
    print(f"# load after: {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
