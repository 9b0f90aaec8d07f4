"""Two checks behind BENCHMARKS.md's gallery section of 2026-12-03 that ``bench_gallery.py`` does not make.

1. **Before and after** (``ab REV``): ``optbench gallery`` on the optimizers the peer can run (600 trials,
   float32, ``--workers 2``), at git revision REV (a temporary worktree, put first on ``PYTHONPATH``) and at this
   working tree, interleaved, ``--repeats`` times; wall seconds of each, then the medians.
2. **Sampler variants** (``sampler``): the gallery's tuner (``tune_one`` exactly as ``bench_gallery.gallery_best``
   calls it) on 22 optimizer × function pairs, seeds 0…``--seeds``−1, against the peer's medians for seeds 0–4
   recorded in BENCHMARKS.md (``PEER``), with the shipped sampler or a variant: ``--local-share`` (the share of
   each round drawn around the best trials), ``--round`` (trials per round), ``--grow F`` (each round F × the
   trials finished so far). ``--pair FUNCTION/OPTIMIZER`` prints that pair's best loss per seed instead.
3. **Figures** (``figures``): milliseconds per gallery PNG on one kept canvas, drawn over the kept background
   (what the gallery does) against a full ``savefig`` of the same figure, interleaved, medians of ``--repeats``.

    python benchmarks/bench_gallery_variants.py ab 35b3afb [--repeats 2]
    python benchmarks/bench_gallery_variants.py sampler [--local-share 0.25 | --round 30 | --grow 0.6] [--seeds 5]
    python benchmarks/bench_gallery_variants.py sampler --pair rastrigin/adan --seeds 15
    python benchmarks/bench_gallery_variants.py figures [--repeats 20]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

ROOT = Path(__file__).resolve().parent.parent
# the peer's medians of the best loss, sampler seeds 0–4, 600 trials (BENCHMARKS.md: "Search quality at the
# peer's budget for the new rules" and the 2026-12-03 section; the classic five from "Sweeps and tuning", table 4)
PEER = {("rosenbrock", "adabelief"): 8.436e-06, ("rastrigin", "adabelief"): 1.048, ("rosenbrock", "came"): 1.648e-05,
        ("rastrigin", "came"): 1.743, ("rosenbrock", "dadaptadam"): 0.000155, ("rastrigin", "dadaptadam"): 1.364,
        ("rosenbrock", "mars"): 6.059, ("rastrigin", "mars"): 12.93, ("rosenbrock", "adan"): 0.0005625,
        ("rastrigin", "adan"): 0.425, ("rosenbrock", "ademamix"): 8.355e-06, ("rastrigin", "ademamix"): 0.9982,
        ("rosenbrock", "sgd"): 0.365, ("rosenbrock", "rmsprop"): 0.363, ("rosenbrock", "lion"): 0.00501,
        ("rastrigin", "adam"): 0.46, ("rastrigin", "sgd"): 12.9, ("rastrigin", "adamw"): 0.228,
        ("rastrigin", "rmsprop"): 2.87, ("rastrigin", "lion"): 5.0, ("rosenbrock", "adam"): 1.03e-05,
        ("rosenbrock", "adamw"): 6.72e-06}
CLOSURE_CLASSES = ("forward-grad", "lbfgs", "newton", "spsa")  # left out: the peer's loop has no closure


def ab(rev: str, repeats: int) -> None:
    from optbench.gallery import plan_gallery, resolve_problems

    pairs, _ = plan_gallery(resolve_problems(None))
    names = ",".join(dict.fromkeys(o.label for _, o in pairs if o.label not in CLOSURE_CLASSES))
    with tempfile.TemporaryDirectory() as tmp:
        before = Path(tmp) / "before"
        subprocess.run(["git", "-C", str(ROOT), "worktree", "add", "-q", "--detach", str(before), rev], check=True)
        try:
            seconds: dict[str, list[float]] = {"before": [], "after": []}
            for _ in range(repeats):
                for side, tree in (("before", before), ("after", ROOT)):
                    out = Path(tempfile.mkdtemp(dir=tmp))
                    t0 = time.perf_counter()
                    subprocess.run([sys.executable, "-m", "optbench", "gallery", "--opt", names, "--trials", "600",
                                    "--steps", "200", "--dtype", "float32", "--workers", "2", "--out", str(out / "g"),
                                    "-q"], check=True, cwd=tmp, env={**os.environ, "PYTHONPATH": str(tree)})
                    seconds[side].append(time.perf_counter() - t0)
                    print(f"{side}: {seconds[side][-1]:.1f} s (load {os.getloadavg()[0]:.2f})", flush=True)
        finally:
            subprocess.run(["git", "-C", str(ROOT), "worktree", "remove", "--force", str(before)], check=False)
    print(f"\n| | {' | '.join(f'repeat {i + 1}' for i in range(repeats))} | median |")
    print("|---|" + "---:|" * (repeats + 1))
    for side, values in seconds.items():
        print(f"| {side} | {' | '.join(f'{v:.1f}' for v in values)} | {statistics.median(values):.1f} |")


def sampler(args) -> None:
    import optuna
    from bench_gallery import FUNCTIONS, STEPS

    import optbench.tuning.protocols as protocols
    from optbench.engines.recipe import Recipe
    from optbench.optimizers import get_optimizer
    from optbench.problems import get_problem
    from optbench.tuning import get_protocol, parse_space, tune_one

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    if args.local_share is not None:
        protocols.LOCAL_SHARE = args.local_share
    batch = args.round
    if args.grow is not None:
        cls, batch = protocols._batch_tpe_class(), 10**6  # the round is the sampler's alone

        def next_round_size(self, study, k, fraction=args.grow):
            done = sum(map(len, self._observed(study, None)))
            if done < self._n_startup_trials:
                return min(k, self._n_startup_trials - done)
            return min(k, max(4, round(done * fraction)))

        cls.next_round_size = next_round_size

    def best(fn: str, name: str, seed: int) -> float:
        with tempfile.TemporaryDirectory() as d:
            r = tune_one(get_problem(FUNCTIONS[fn][1]), get_optimizer(name), protocol=get_protocol("tpe"), trials=600,
                         dims=parse_space(""), steps=STEPS, out_dir=d, batch=batch, loop_batch=batch, seed=seed,
                         dtype="float32", recipe=Recipe(clip_norm=1.0))
            return r.best_value

    if args.pair:
        fn, name = args.pair.split("/")
        print(args.pair, [f"{best(fn, name, s):.4g}" for s in range(args.seeds)])
        return
    wins, t0 = 0, time.perf_counter()
    print("| function | optimizer | peer median (0–4) | gallery median | no worse |\n|---|---|---:|---:|---|")
    for (fn, name), peer in PEER.items():
        median = statistics.median(best(fn, name, s) for s in range(args.seeds))
        wins += median <= peer
        print(f"| {fn} | {name} | {peer:.4g} | {median:.4g} | {'yes' if median <= peer else 'no'} |", flush=True)
    print(f"\n{wins} of {len(PEER)} no worse (strictly, plateau ties at 12.93 count as worse); "
          f"{time.perf_counter() - t0:.0f} s of tuning")


def figures(repeats: int) -> None:
    import numpy as np

    from optbench.gallery import GalleryEntry, resolve_problems
    from optbench.report.gallery import TrajectoryCanvas, view_bounds

    problem = resolve_problems(None)[0]
    path = np.cumsum(np.random.default_rng(0).normal(0, 0.02, (201, 2)), axis=0) + [-2.0, 2.0]
    entry = GalleryEntry(problem.label, problem.name, "adam", ["lr"], 600, 200, {"lr": 0.01}, 0.5, final_loss=0.5,
                         dist_to_min=0.1, status="done")
    canvas = TrajectoryCanvas(problem, view_bounds(problem.bounds, path))
    ms: dict[bool, list[float]] = {True: [], False: []}
    with tempfile.TemporaryDirectory() as d:
        for i in range(repeats + 1):
            for blit in (True, False):
                canvas.blit = blit
                t0 = time.perf_counter()
                canvas.draw(path, entry, Path(d) / f"{i}-{blit}.png")
                if i:  # the first of each: the background's one-time rendering
                    ms[blit].append(1e3 * (time.perf_counter() - t0))
    canvas.close()
    over, full = statistics.median(ms[True]), statistics.median(ms[False])
    print(f"| PNG figure | ms (median of {repeats}) |\n|---|---:|\n| over the kept background | {over:.1f} |\n"
          f"| full savefig | {full:.1f} |\n| ratio | {full / over:.2f}× |")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = ap.add_subparsers(dest="mode", required=True)
    a = sub.add_parser("ab")
    a.add_argument("rev")
    a.add_argument("--repeats", type=int, default=2)
    s = sub.add_parser("sampler")
    s.add_argument("--seeds", type=int, default=5)
    s.add_argument("--local-share", type=float, default=None)
    s.add_argument("--round", type=int, default=60)
    s.add_argument("--grow", type=float, default=None)
    s.add_argument("--pair", default=None, help="FUNCTION/OPTIMIZER: its best loss per seed")
    f = sub.add_parser("figures")
    f.add_argument("--repeats", type=int, default=20)
    args = ap.parse_args()
    if args.mode == "ab":
        ab(args.rev, args.repeats)
    elif args.mode == "sampler":
        sampler(args)
    else:
        figures(args.repeats)


if __name__ == "__main__":
    main()
