"""Sweep and tuning throughput, side by side with a plain Optuna loop (one benchmark run, three tables).

1. Overhead of the sweep machinery per run on top of the engine: ``run_sweep`` (planning, run ids,
   results files, manifest) against the bare engine call on the same 1000-step analytic runs.
2. Tuning throughput on Rosenbrock: trials per second of ``tune_one`` with the batched engine (batch 100)
   against one trial at a time (``--batch 1``: loop engine, one ask/tell per trial).
3. The peer job: the visualization example of pytorch_optimizer tunes each optimizer's lr with 600 TPE
   trials of 200 steps (1200 for SGD) on Rosenbrock from (-2, 2) and Rastrigin from (-2, 3.5), each trial a
   fresh torch optimizer on a 2-D point with gradients clipped to norm 1, objective the final loss, then
   draws each best trajectory. Reproduced here with a plain loop (``peer_study``, written for this
   benchmark), against ``optbench tune`` (installed script, start-up included, ``--clip-norm 1 --dtype
   float32`` so both sides optimise the same objective, ``--trials 600,sgd=1200``) with ``--report``
   (trajectories, png) in the same process.

The peer side takes 450–470 s in full on this 2-core CPU; ``--peer-full`` runs all of it, the default runs
``adam`` on both functions fully and times the first 100 trials of every other study, extrapolating
linearly to its budget (TPE's cost per ask grows with the trials, so the extrapolation underestimates the
peer).

    python benchmarks/bench_tune.py [--peer-full] [--out DIR]
    python benchmarks/bench_tune.py --quality 20   # table 4 only: search quality against sequential TPE
    python benchmarks/bench_tune.py --same-objective rosenbrock/adamw --seeds 0-19   # the peer's objective
"""

from __future__ import annotations

import argparse
import json
import math
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

OPTIMIZERS = ["adam", "sgd", "adamw", "rmsprop", "lion"]
FUNCTIONS = {"rosenbrock": ((-2.0, 2.0), "rosenbrock(start=(-2.0, 2.0))"),
             "rastrigin": ((-2.0, 3.5), "rastrigin(start=(-2.0, 3.5))")}
STEPS, TRIALS, SGD_TRIALS = 200, 600, 1200
LR_LOW, LR_HIGH = 1e-5, 10.0  # optbench's default space, used on both sides


def budget(opt: str) -> int:
    return SGD_TRIALS if opt == "sgd" else TRIALS


# ---------------------------------------------------------------- the peer job, as a plain loop

def rosenbrock(p):
    x, y = p[0], p[1]
    return (1 - x) ** 2 + 100 * (y - x**2) ** 2


def rastrigin(p):
    return 20 + (p**2 - 10 * (2 * math.pi * p).cos()).sum()


def torch_optimizer(name: str, params, lr: float):
    import torch

    if name == "lion":
        from pytorch_optimizer import Lion

        return Lion(params, lr=lr)
    return {"adam": torch.optim.Adam, "sgd": torch.optim.SGD, "adamw": torch.optim.AdamW,
            "rmsprop": torch.optim.RMSprop}[name](params, lr=lr)


def trajectory(fn, start, opt: str, lr: float, steps: int = STEPS):
    """One trial: a fresh optimizer on a 2-D point, ``steps`` steps with the gradient clipped to norm 1."""
    import torch

    x = torch.tensor(start, requires_grad=True)  # float32, as in the peer
    optimizer = torch_optimizer(opt, [x], lr)
    path = [x.detach().clone()]
    for _ in range(steps):
        optimizer.zero_grad()
        fn(x).backward()
        torch.nn.utils.clip_grad_norm_(x, 1.0)
        optimizer.step()
        path.append(x.detach().clone())
    return torch.stack(path), float(fn(x.detach()))


def peer_study(fn_name: str, opt: str, n_trials: int, seed: int = 0):
    """A plain ``study.optimize`` with Optuna's default TPE; returns (best loss, best lr, seconds)."""
    import optuna

    fn, (start, _) = {"rosenbrock": rosenbrock, "rastrigin": rastrigin}[fn_name], FUNCTIONS[fn_name]

    def objective(trial):
        loss = trajectory(fn, start, opt, trial.suggest_float("lr", LR_LOW, LR_HIGH, log=True))[1]
        return loss if math.isfinite(loss) else float("inf")

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    t0 = time.perf_counter()
    study = optuna.create_study(sampler=optuna.samplers.TPESampler(seed=seed))
    study.optimize(objective, n_trials=n_trials)
    return study.best_value, study.best_params["lr"], time.perf_counter() - t0


def peer_plot(best: dict, out: Path) -> float:
    """Draw each best trajectory on the function's contour, one png per (function, optimizer)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    t0 = time.perf_counter()
    out.mkdir(parents=True, exist_ok=True)
    for (fn_name, opt), lr in best.items():
        fn, (start, _) = {"rosenbrock": rosenbrock, "rastrigin": rastrigin}[fn_name], FUNCTIONS[fn_name]
        path = trajectory(fn, start, opt, lr)[0].numpy()
        xs, ys = np.meshgrid(np.linspace(-4.5, 4.5, 250), np.linspace(-4.5, 4.5, 250))
        z = _grid(fn_name, xs, ys)
        fig, ax = plt.subplots(figsize=(8, 8))
        ax.contour(xs, ys, z, 90, cmap="jet")
        ax.plot(path[:, 0], path[:, 1], color="r", marker="x")
        ax.set_title(f"{fn_name} func: {opt} with {len(path) - 1} iterations, lr={lr:.6f}")
        fig.savefig(out / f"{fn_name}_{opt}.png")
        plt.close(fig)
    return time.perf_counter() - t0


def _grid(fn_name: str, xs, ys):
    import numpy as np

    if fn_name == "rosenbrock":
        return (1 - xs) ** 2 + 100 * (ys - xs**2) ** 2
    return 20 + xs**2 - 10 * np.cos(2 * np.pi * xs) + ys**2 - 10 * np.cos(2 * np.pi * ys)


# ---------------------------------------------------------------- optbench

def sweep_overhead(repeats: int = 15) -> list[dict]:
    """run_sweep vs the bare engine on the same runs (rosenbrock, 1000 steps, record every 10): median wall
    time and median CPU time of this process, alternating the order of the pair each repeat.

    Cases: one loop run; one batched group of 64 and of 1000 seeds; and a 1000-run learning-rate sweep
    (5 optimizers × 20 lrs × 10 seeds: five batched groups of 200, where chunk writes overlap the next
    group's compute).
    """
    import numpy as np
    import torch

    from optbench.engines.batched import run_batched
    from optbench.engines.loop import run_loop
    from optbench.optimizers import get_optimizer
    from optbench.problems import get_problem
    from optbench.runner import run_sweep
    from optbench.sweep.spec import Sweep

    problem = get_problem("rosenbrock")
    adam = get_optimizer("adam")
    lr_opts = [get_optimizer(n) for n in ("adam", "sgd", "rmsprop", "adagrad", "nag")]
    lrs = np.logspace(-4, 0, 20).tolist()

    def one_group(seeds):
        return (Sweep([problem], [adam], seeds=seeds, steps=1000, record_every=10, engine="batched"),
                lambda: run_batched(problem, [adam] * len(seeds), seeds, 1000, 10, dtype=torch.float64))

    def lr_sweep():
        seeds = list(range(10))

        def bare():
            for opt in lr_opts:
                configs = [opt.with_hyperparams(lr=lr) for lr in lrs for _ in seeds]
                run_batched(problem, configs, seeds * len(lrs), 1000, 10, dtype=torch.float64)

        return Sweep([problem], lr_opts, lrs=lrs, seeds=seeds, steps=1000, record_every=10, engine="batched"), bare

    cases = [("loop", 1, (Sweep([problem], [adam], seeds=[0], steps=1000, record_every=10, engine="loop"),
                          lambda: run_loop(problem, adam, 0, 1000, 10))),
             ("batched, one group", 64, one_group(list(range(64)))),
             ("batched, one group", 1000, one_group(list(range(1000)))),
             ("batched, 5 opts × 20 lrs × 10 seeds", 1000, lr_sweep())]

    def timed(fn):
        w, c = time.perf_counter(), time.process_time()
        fn()
        return time.perf_counter() - w, time.process_time() - c

    import optbench.sweep.plan as plan

    in_engine: list[float] = []  # time inside the engine during the current run_sweep call
    plain_execute = plan.execute

    def timed_execute(*args, **kwargs):
        t = time.perf_counter()
        try:
            return plain_execute(*args, **kwargs)
        finally:
            in_engine[-1] += time.perf_counter() - t

    plan.execute = timed_execute
    rows = []
    scratch = Path(tempfile.mkdtemp(prefix="optbench-overhead-"))  # removed after timing: rm is not the sweep's
    shares: list[float] = []
    for name, runs, (spec, bare) in cases:
        shares.clear()

        def sweep(spec=spec):
            in_engine.append(0.0)
            t = time.perf_counter()
            run_sweep(spec, tempfile.mkdtemp(dir=scratch))
            total = time.perf_counter() - t
            shares.append(total / in_engine[-1] - 1)

        pairs = []
        for r in range(repeats + 1):  # the first pair is a warm-up
            first, second = (sweep, bare) if r % 2 else (bare, sweep)
            a, b = timed(first), timed(second)
            if r:
                pairs.append((a, b) if first is sweep else (b, a))
        med = lambda xs: sorted(xs)[len(xs) // 2]  # noqa: E731
        s_w, e_w = med([p[0][0] for p in pairs]), med([p[1][0] for p in pairs])
        s_c, e_c = med([p[0][1] for p in pairs]), med([p[1][1] for p in pairs])
        rows.append({"engine": name, "runs": runs, "sweep_s": s_w, "engine_s": e_w, "overhead": s_w / e_w - 1,
                     "sweep_cpu_s": s_c, "engine_cpu_s": e_c, "overhead_cpu": s_c / e_c - 1,
                     "outside_engine": med(shares[1:])})
        shutil.rmtree(scratch, ignore_errors=True)
        scratch.mkdir()
    shutil.rmtree(scratch, ignore_errors=True)
    plan.execute = plain_execute
    return rows


def tuning_throughput() -> list[dict]:
    """Trials per second on Rosenbrock (200 steps), batched rounds of 100 vs one trial at a time."""
    from optbench.optimizers import get_optimizer
    from optbench.problems import get_problem
    from optbench.tuning import get_protocol, parse_space, tune_one

    rows = []
    for label, batch, trials in (("batched engine, rounds of 100", 100, 600), ("one trial at a time", 1, 100)):
        with tempfile.TemporaryDirectory() as d:
            t0 = time.perf_counter()
            res = tune_one(get_problem("rosenbrock"), get_optimizer("adam"), protocol=get_protocol("tpe"),
                           trials=trials, dims=parse_space(""), steps=STEPS, out_dir=d, batch=batch)
            wall = time.perf_counter() - t0
        rows.append({"mode": label, "trials": trials, "wall_s": wall, "trials_per_s": trials / wall,
                     "best": res.best_value})
    return rows


def optbench_job(out: Path) -> dict:
    """The peer's job with the installed CLI: one `optbench tune` command (600 trials per optimizer, 1200 for
    sgd, as the peer) that also draws the trajectories (`--report`, in the same process)."""
    exe = shutil.which("optbench")
    problems = ",".join(spec for _, spec in FUNCTIONS.values())
    timings = {}
    t0 = time.perf_counter()
    subprocess.run([exe, "tune", "-p", problems, "-o", ",".join(OPTIMIZERS), "--trials",
                    f"{TRIALS},sgd={SGD_TRIALS}", "--steps", str(STEPS), "--clip-norm", "1", "--dtype", "float32",
                    "--batch", "100", "--workers", "2", "--seeds", "1", "--out", str(out), "-q",
                    "--report", "--report-figures", "trajectories", "--report-format", "png"], check=True)
    timings["optbench tune --trials 600,sgd=1200 --report (trajectories, png)"] = time.perf_counter() - t0
    timings["total"] = time.perf_counter() - t0
    best = {}
    for entry in json.loads((out / "manifest.json").read_text())["tuning"]:
        for study in entry["studies"]:
            fn = study["problem"].split("(")[0]
            best[(fn, study["optimizer"].split("(")[0])] = study["best_value"]
    return {"timings": timings, "best": best}


# ---------------------------------------------------------------- search quality

def _replica(fn_name: str, opt: str, lrs, steps: int = STEPS):
    """Final losses of ``opt`` (adam or sgd, defaults) on rosenbrock/rastrigin from the registry's default
    start, float64, no clipping: a numpy copy of the batched engine for these runs (bit-equal on smooth
    runs; chaotic runs differ in the last digits, which moves their losses but not their statistics).
    NaN where the engine would stop the run as diverged (loss above 1e6 × the start loss)."""
    import numpy as np

    lrs = np.asarray(lrs, dtype=float)
    x = np.tile(np.array((-1.2, 1.0) if fn_name == "rosenbrock" else (2.2, -2.8)), (len(lrs), 1))
    m, v = np.zeros_like(x), np.zeros_like(x)

    def fg(x):
        if fn_name == "rosenbrock":
            a, b = x[:, 0], x[:, 1]
            return (100 * (b - a**2) ** 2 + (1 - a) ** 2,
                    np.stack([-400 * a * (b - a**2) - 2 * (1 - a), 200 * (b - a**2)], 1))
        return (20 + (x**2 - 10 * np.cos(2 * math.pi * x)).sum(1), 2 * x + 20 * math.pi * np.sin(2 * math.pi * x))

    f, g = fg(x)
    blow, alive = 1e6 * max(1.0, f[0]), np.ones(len(lrs), bool)
    with np.errstate(all="ignore"):
        for t in range(1, steps + 1):
            if opt == "adam":
                m, v = 0.9 * m + 0.1 * g, 0.999 * v + 0.001 * g * g
                x = x - (lrs / (1 - 0.9**t))[:, None] * m / (np.sqrt(v) / math.sqrt(1 - 0.999**t) + 1e-8)
            else:
                x = x - lrs[:, None] * g
            f, g = fg(x)
            alive &= (f <= blow) & np.isfinite(g).all(1)
    return np.where(alive, f, np.nan)


def search_quality(seeds: int, trials: int = TRIALS) -> dict:
    """Median best loss over ``seeds`` studies of ``trials`` trials: optbench's ``tpe`` and ``random``
    protocols (``tune_one``, rounds of 64, the engine replaced by :func:`_replica`) and sequential Optuna
    TPE (``study.optimize``, default ``TPESampler(seed)``, diverged trials returned as inf as the peer
    does), all on the same objective; one trial at a time through the real engine would take ~30 s per
    study."""
    import statistics

    import numpy as np
    import optuna

    import optbench.tuning.study as study_mod
    from optbench.optimizers import get_optimizer
    from optbench.problems import get_problem
    from optbench.tuning import get_protocol, parse_space, tune_one

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    real, rows = study_mod._evaluate, {}

    for fn_name in ("rosenbrock", "rastrigin"):
        for opt in ("adam", "sgd"):
            def replica(problem, configs, steps, **_):
                f = _replica(fn_name, opt, [c.lr for c in configs], steps)  # noqa: B023
                return np.array([steps]), f[None, :], f, ["done" if np.isfinite(v) else "diverged" for v in f]

            methods = ("tpe", "sequential TPE", "random")
            best, secs = {k: [] for k in methods}, {k: [] for k in methods}
            for seed in range(seeds):
                study_mod._evaluate = replica
                try:
                    for name in ("tpe", "random"):
                        with tempfile.TemporaryDirectory() as d:
                            t = time.perf_counter()
                            res = tune_one(get_problem(fn_name), get_optimizer(opt), protocol=get_protocol(name),
                                           trials=trials, dims=parse_space(""), steps=STEPS, out_dir=d, seed=seed)
                            best[name].append(res.best_value)
                            secs[name].append(time.perf_counter() - t)
                finally:
                    study_mod._evaluate = real
                study = optuna.create_study(sampler=optuna.samplers.TPESampler(seed=seed))
                t = time.perf_counter()
                study.optimize(lambda tr: float(np.nan_to_num(_replica(fn_name, opt, [tr.suggest_float(  # noqa: B023
                    "lr", LR_LOW, LR_HIGH, log=True)])[0], nan=math.inf)), n_trials=trials)
                best["sequential TPE"].append(study.best_value)
                secs["sequential TPE"].append(time.perf_counter() - t)
            rows[(fn_name, opt)] = {k: (statistics.median(v), statistics.median(secs[k])) for k, v in best.items()}
            rows[(fn_name, opt)]["tpe <= sequential"] = sum(a <= b for a, b in zip(best["tpe"], best["sequential TPE"]))
    return rows


def same_objective(pair: str, seeds: range) -> list[dict]:
    """optbench's ``tpe`` protocol against sequential Optuna TPE on the identical objective: the peer job's
    setting (``pair`` = function/optimizer, float32, gradients clipped to norm 1, 200 steps, 600 trials, lr
    in [1e-5, 10]), each trial evaluated by optbench's batched engine, one at a time on the sequential side
    (~30 s per study). The peer's own loop computes the same trajectories in another float32 rounding, which
    on these chaotic objectives gives other losses at each lr (rank correlation ~0.1) with the same
    distribution; here both searches draw from one objective, so only the search differs."""
    import optuna
    import torch

    from optbench.engines.batched import run_batched
    from optbench.engines.recipe import Recipe
    from optbench.optimizers import get_optimizer
    from optbench.problems import get_problem
    from optbench.tuning import get_protocol, parse_space, tune_one

    fn_name, opt_name = pair.split("/")
    problem, opt = get_problem(FUNCTIONS[fn_name][1]), get_optimizer(opt_name)
    optuna.logging.set_verbosity(optuna.logging.WARNING)

    def objective(trial):
        lr = trial.suggest_float("lr", LR_LOW, LR_HIGH, log=True)
        trace = run_batched(problem, [opt.with_hyperparams(lr=lr)], [0], STEPS, STEPS, dtype=torch.float32,
                            recipe=Recipe(clip_norm=1.0))
        return float(trace.end_loss[0]) if trace.status[0] == "done" else math.inf

    rows = []
    for seed in seeds:
        with tempfile.TemporaryDirectory() as d:
            ours = tune_one(problem, opt, protocol=get_protocol("tpe"), trials=budget(opt_name), dims=parse_space(None),
                            steps=STEPS, out_dir=d, batch=100, dtype="float32", recipe=Recipe(clip_norm=1.0),
                            seed=seed)
        study = optuna.create_study(sampler=optuna.samplers.TPESampler(seed=seed))
        study.optimize(objective, n_trials=budget(opt_name))
        rows.append({"seed": seed, "optbench": ours.best_value, "sequential": study.best_value})
        print(f"  seed {seed}: optbench {ours.best_value:.3g}, sequential TPE {study.best_value:.3g}", flush=True)
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--peer-full", action="store_true", help="run the whole peer job (~450 s)")
    ap.add_argument("--out", type=Path, default=None, help="keep the optbench results here")
    ap.add_argument("--only-overhead", action="store_true", help="table 1 only")
    ap.add_argument("--quality", type=int, metavar="SEEDS", default=0,
                    help="only table 4: search quality over SEEDS seeds (~8 s per seed)")
    ap.add_argument("--same-objective", metavar="FN/OPT", default=None,
                    help="only: optbench's tpe vs sequential Optuna TPE on one peer-job objective (~30 s per seed)")
    ap.add_argument("--seeds", default="0-9", help="sampler seeds for --same-objective, as FIRST-LAST")
    args = ap.parse_args()
    import torch

    if args.same_objective:
        import numpy as np

        first, last = (int(v) for v in args.seeds.split("-"))
        rows = same_objective(args.same_objective, range(first, last + 1))
        ours, seq = np.array([r["optbench"] for r in rows]), np.array([r["sequential"] for r in rows])
        print(f"| {args.same_objective} | seeds {args.seeds} | optbench median {np.median(ours):.3g} "
              f"(q25–q75 {np.quantile(ours, .25):.2g}–{np.quantile(ours, .75):.2g}) | sequential TPE median "
              f"{np.median(seq):.3g} ({np.quantile(seq, .25):.2g}–{np.quantile(seq, .75):.2g}) | "
              f"optbench ≤ sequential {int((ours <= seq).sum())}/{len(rows)} |")
        return

    if args.quality:
        print(f"## 4. search quality: median best loss over {args.quality} seeds, {TRIALS} trials × {STEPS} steps "
              "(lr only, default starts, float64; median seconds per study)")
        print("| function | optimizer | optbench tpe | sequential Optuna TPE | random | tpe ≤ sequential (seeds) |")
        print("|---|---|---:|---:|---:|---:|")
        for (fn_name, opt), r in search_quality(args.quality).items():
            tpe, seq, rnd = (f"{r[k][0]:.3g} ({r[k][1]:.2f} s)" for k in ("tpe", "sequential TPE", "random"))
            print(f"| {fn_name} | {opt} | {tpe} | {seq} | {rnd} | "
                  f"{r['tpe <= sequential']}/{args.quality} |")
        return

    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads")

    print("\n## 1. sweep machinery overhead (rosenbrock, 1000 steps, record every 10; medians of 15)")
    print("| engine | runs | run_sweep wall (s) | engine wall (s) | overhead (wall) | run_sweep CPU (s) | "
          "engine CPU (s) | overhead (CPU) | outside the engine, same call |\n"
          "|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    for r in sweep_overhead():
        print(f"| {r['engine']} | {r['runs']} | {r['sweep_s']:.3f} | {r['engine_s']:.3f} | {r['overhead']:+.1%} | "
              f"{r['sweep_cpu_s']:.3f} | {r['engine_cpu_s']:.3f} | {r['overhead_cpu']:+.1%} | "
              f"{r['outside_engine']:+.1%} |")
    if args.only_overhead:
        return

    print("\n## 2. tuning throughput (rosenbrock, adam, TPE, 200 steps per trial)")
    print("| mode | trials | wall (s) | trials/s | best loss |\n|---|---:|---:|---:|---:|")
    for r in tuning_throughput():
        print(f"| {r['mode']} | {r['trials']} | {r['wall_s']:.2f} | {r['trials_per_s']:.0f} | {r['best']:.3g} |")

    print("\n## 3. the peer job: 5 optimizers × 2 functions, 600 TPE trials × 200 steps (1200 for sgd)")
    out = args.out or Path(tempfile.mkdtemp(prefix="bench-tune-"))
    if out.exists():
        shutil.rmtree(out)
    ours = optbench_job(out)
    for what, s in ours["timings"].items():
        print(f"optbench {what}: {s:.2f} s")
    peer, peer_s, measured = {}, 0.0, []
    for fn_name in FUNCTIONS:
        for opt in OPTIMIZERS:
            full = args.peer_full or opt == "adam"
            n = budget(opt) if full else 100
            value, lr, seconds = peer_study(fn_name, opt, n)
            scale = budget(opt) / n
            peer[(fn_name, opt)] = (value if full else None, lr, seconds * scale, full)
            peer_s += seconds * scale
            measured.append(seconds)
    best_lrs = {k: v[1] for k, v in peer.items()}
    with tempfile.TemporaryDirectory() as d:
        plot_s = peer_plot(best_lrs, Path(d))
    peer_s += plot_s
    print(f"peer: {sum(measured):.1f} s measured, {peer_s:.1f} s for the whole job "
          f"({'all measured' if args.peer_full else 'adam full, others extrapolated from 100 trials'}; "
          f"plots {plot_s:.1f} s)")
    print("\n| function | optimizer | trials | peer best loss | optbench best loss | no worse | peer time (s) |")
    print("|---|---|---:|---:|---:|---|---:|")
    for (fn_name, opt), (value, _, seconds, full) in peer.items():
        mine = ours["best"].get((fn_name, opt))
        verdict = "—" if value is None else ("yes" if mine is not None and mine <= value else "NO")
        peer_text = f"{value:.4g}" if value is not None else "(not run in full)"
        print(f"| {fn_name} | {opt} | {budget(opt)} | {peer_text} | {mine:.4g} | {verdict} | "
              f"{seconds:.1f}{'' if full else ' (extrap.)'} |")
    total = ours["timings"]["total"]
    print(f"\nend to end: optbench {total:.1f} s, peer {peer_s:.1f} s → {peer_s / total:.0f}× faster")


if __name__ == "__main__":
    main()
