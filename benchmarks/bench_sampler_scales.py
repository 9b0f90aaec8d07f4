"""Search quality of the batch TPE sampler for several lower bounds of its local-step scales.

The setting is the peer job's (``bench_tune.py`` table 3): float32, gradients clipped to norm 1, 200 steps,
lr log-uniform in [1e-5, 10], 600 trials (1200 for sgd), rounds of 100, one study per sampler seed. For
each pair and each lower bound of ``optbench.tuning.protocols.LOCAL_SCALES`` (the upper bound stays at
20 % of the range) it prints the median best loss over the seeds, then each bound against the first:
P(this bound's best < the first's) over all pairs of seeds, and same-seed wins. The results are in
BENCHMARKS.md (Sweeps and tuning, 6).

    python benchmarks/bench_sampler_scales.py --lows 1e-4,1e-7 --seeds 0-29   # ~2 min per bound
"""

from __future__ import annotations

import argparse
import tempfile

import numpy as np

PAIRS = [("rosenbrock", "sgd"), ("rosenbrock", "adam"), ("rosenbrock", "adamw"), ("rosenbrock", "rmsprop"),
         ("rastrigin", "adam"), ("rastrigin", "adamw"), ("rastrigin", "sgd")]
SPECS = {"rosenbrock": "rosenbrock(start=(-2.0, 2.0))", "rastrigin": "rastrigin(start=(-2.0, 3.5))"}


def best_losses(low: float, fn: str, opt: str, seeds: range) -> np.ndarray:
    import optbench.tuning.protocols as protocols
    from optbench.engines.recipe import Recipe
    from optbench.optimizers import get_optimizer
    from optbench.problems import get_problem
    from optbench.tuning import get_protocol, parse_space, tune_one

    shipped = protocols.LOCAL_SCALES
    protocols.LOCAL_SCALES = (low, shipped[1])
    protocols._batch_tpe_class.cache_clear()  # the sampler class reads the constant when it samples
    try:
        out = []
        for seed in seeds:
            with tempfile.TemporaryDirectory() as d:
                result = tune_one(get_problem(SPECS[fn]), get_optimizer(opt), protocol=get_protocol("tpe"),
                                  trials=1200 if opt == "sgd" else 600, dims=parse_space(None), steps=200,
                                  out_dir=d, batch=100, dtype="float32", recipe=Recipe(clip_norm=1.0),
                                  seed=seed)
            out.append(result.best_value)
        return np.array(out)
    finally:
        protocols.LOCAL_SCALES = shipped
        protocols._batch_tpe_class.cache_clear()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--lows", default="1e-4,1e-7", help="lower bounds to compare, the first is the reference")
    ap.add_argument("--seeds", default="0-29", help="sampler seeds, FIRST-LAST")
    args = ap.parse_args()
    lows = [float(v) for v in args.lows.split(",")]
    first, last = (int(v) for v in args.seeds.split("-"))
    seeds = range(first, last + 1)
    print(f"median best loss over seeds {args.seeds}; P and wins: each bound against {lows[0]:g}")
    print("| function | optimizer | " + " | ".join(f"{low:g}" for low in lows) + " | "
          + " | ".join(f"P({low:g} < {lows[0]:g}), wins" for low in lows[1:]) + " |")
    print("|---|---|" + "---:|" * (2 * len(lows) - 1))
    for fn, opt in PAIRS:
        results = [best_losses(low, fn, opt, seeds) for low in lows]
        ref = results[0]
        cells = [f"{np.median(r):.3g}" for r in results]
        for r in results[1:]:
            p = np.mean([(a < b) + 0.5 * (a == b) for a in r for b in ref])
            cells.append(f"{p:.2f}, {int((r <= ref).sum())}/{len(ref)}")
        print(f"| {fn} | {opt} | " + " | ".join(cells) + " |", flush=True)


if __name__ == "__main__":
    main()
