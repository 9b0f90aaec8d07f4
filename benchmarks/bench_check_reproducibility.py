"""How much does a deterministic CPU float64 run of problems/ci.toml move when the machine changes?

The exact mode of ``optbench check`` must absorb what another machine does to the numbers and nothing
more. This script runs the CI suite (the registry optimizers and two user classes, with their
hyperparameter-branch variants) under every variation this machine can produce, and prints the largest
relative change of final_loss and best_loss against the reference run (1 thread, deterministic
algorithms, the CPU's best SIMD kernels), plus whether steps_to_target / status changed:

- 2 intra-op threads instead of 1 (``torch.set_num_threads(2)``);
- ``torch.use_deterministic_algorithms(False)``;
- other SIMD kernels: ``ATEN_CPU_CAPABILITY=default`` (scalar) and ``=avx2`` (what another CPU runs);
- a start point moved by one ulp in its first coordinate: the amplification, over a whole run, of a
  last-bit difference, which bounds what a different rounding anywhere (another BLAS, libm, compiler)
  can grow into.

    python benchmarks/bench_check_reproducibility.py     # prints a table; paste it into docs/ci.md

MKL vs OpenBLAS cannot be varied here (one torch build); the one-ulp row stands in for it.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SUITE = ROOT / "problems" / "ci.toml"
sys.path.insert(0, str(ROOT / "tests"))

WORKER = r'''
import json, math, sys
import torch
import optbench.determinism as det
from optbench.check.baseline import suite_sweeps
from optbench.results import load_summary
from optbench.runner import run_sweep

suite, out, opt, threads, algos, ulp = sys.argv[1], sys.argv[2], sys.argv[3] or None, int(sys.argv[4]), \
    sys.argv[5] == "1", sys.argv[6] == "1"
det.DETERMINISTIC_THREADS = threads
_, sweeps = suite_sweeps(__import__("pathlib").Path(suite), opt)
torch.use_deterministic_algorithms(algos)
torch.set_num_threads(threads)
if ulp:
    from optbench.problems import get_problem
    for sweep in sweeps:
        moved = []
        for p in sweep.problems:
            if p.noise_std() is None and p.kind == "analytic" and "noisy" not in p.name:
                start = list(p.config.get("start") or p.default_start)
                start[0] = math.nextafter(float(start[0]), math.inf)
                spec = p.label[:-1] + f", start={tuple(start)!r})" if "(" in p.label else \
                    f"{p.label}(start={tuple(start)!r})"
                moved.append(get_problem(spec))
            else:
                moved.append(p)
        sweep.problems = moved
for sweep in sweeps:
    run_sweep(sweep, out, force=True)
s = load_summary(out)
rows = [dict(problem=str(r.problem_name), label=str(r.optimizer_label), lr=float(r.lr), seed=int(r.seed),
             final=float(r.final_loss), best=float(r.best_loss),
             stt=None if r.steps_to_target is None or r.steps_to_target != r.steps_to_target
             else int(r.steps_to_target),
             status=str(r.status), noisy="noisy" in str(r.problem))
        for r in s.itertuples()]
json.dump(rows, open(out + ".json", "w"))
'''


def _run(tmp: Path, name: str, opt: str, threads: int = 1, algos: bool = True, ulp: bool = False,
         env: dict | None = None) -> dict:
    out = str(tmp / name)
    subprocess.run([sys.executable, "-c", WORKER, str(SUITE), out, opt, str(threads), str(int(algos)),
                    str(int(ulp))], check=True, cwd=tmp, env={**os.environ, "OMP_NUM_THREADS": str(threads),
                                                                  **(env or {})})
    rows = json.loads(Path(out + ".json").read_text())
    return {(r["problem"], r["label"], r["lr"], r["seed"]): r for r in rows}


def _rel(a: float, b: float) -> float:
    if a == b or (math.isnan(a) and math.isnan(b)):
        return 0.0
    if not (math.isfinite(a) and math.isfinite(b)) or a == 0:
        return math.inf
    return abs(b - a) / abs(a)


def _compare(ref: dict, new: dict, noisy: bool | None = None) -> tuple[float, str, int, int]:
    worst, where, discrete, n = 0.0, "", 0, 0
    for key, r in ref.items():
        if noisy is not None and r["noisy"] != noisy:
            continue
        m = new[key]
        n += 1
        for metric in ("final", "best"):
            rel = _rel(r[metric], m[metric])
            if rel > worst:
                worst, where = rel, f"{key[0]} / {key[1]} lr={key[2]:g} {metric}"
        discrete += (r["stt"] != m["stt"]) + (r["status"] != m["status"])
    return worst, where, discrete, n


def main() -> None:
    import torch
    from test_check_cli import ADAM, SGD

    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        (tmp / "opt").mkdir()
        (tmp / "opt" / "adam.py").write_text(ADAM)
        (tmp / "opt" / "sgd.py").write_text(SGD)
        print(f"torch {torch.__version__}, {torch.backends.cpu.get_cpu_capability()}, "
              f"{os.cpu_count()} CPUs, {sys.platform}\n")
        print("| optimizers | variation | runs | largest relative change (losses) | where | "
              "steps_to_target/status changes |")
        print("|---|---|---|---|---|---|")
        for opt, name in (("", "registry (adam, sgd-momentum)"), ("opt/adam.py:MyAdam,opt/sgd.py:MySGD",
                                                                   "user classes")):
            tag = "user" if opt else "reg"
            ref = _run(tmp, f"{tag}-ref", opt)
            variations = [("2 threads", dict(threads=2)), ("deterministic algorithms off", dict(algos=False)),
                          ("ATEN_CPU_CAPABILITY=default", dict(env={"ATEN_CPU_CAPABILITY": "default"})),
                          ("ATEN_CPU_CAPABILITY=avx2", dict(env={"ATEN_CPU_CAPABILITY": "avx2"})),
                          ("start moved by 1 ulp", dict(ulp=True))]
            for label, kw in variations:
                new = _run(tmp, f"{tag}-{label.split()[0]}-{len(label)}", opt, **kw)
                groups = [(None, "")] if not kw.get("ulp") else [(False, " (deterministic problems)"),
                                                                 (True, " (noisy quadratic)")]
                for noisy, suffix in groups:
                    worst, where, discrete, n = _compare(ref, new, noisy)
                    print(f"| {name} | {label}{suffix} | {n} | {worst:.3g} | {where} | {discrete} |")


if __name__ == "__main__":
    main()
