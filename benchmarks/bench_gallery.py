"""The gallery against the peer job it reproduces, side by side on the same optimizers (two tables).

The peer: pytorch_optimizer's ``examples/visualize_optimizers.py`` tunes each optimizer's lr with TPE, one
trial at a time, each trial a fresh optimizer object on a 2-D float32 point, 200 steps with the gradient
clipped to norm 1, from (-2, 2) on Rosenbrock and (-2, 3.5) on Rastrigin, objective the final loss; then draws
each best trajectory. Reproduced as the plain loop of ``bench_tune.peer_study`` (its budget: 600 trials per
study), with the optimizer class built from the registry entry (library defaults, as the peer) and the same
search space as optbench's on both sides (lr log-uniform in [1e-5, 10]; lr-free methods their multiplier in
[0.1, 10]).

1. **Speed**: ``optbench gallery --opt SUBSET --trials N --steps 200 --dtype float32 --workers W`` (installed
   script, start-up, re-runs, figures and index included) against the peer on the same optimizers at the same
   budget, both measured in full: wall seconds and CPU seconds (this process and its children: on a shared
   machine the wall time measures the neighbours too). ``--peer-trials M`` < N times the peer on its first M
   trials of every study and extrapolates linearly to N instead (TPE's cost per ask grows with the trials, so
   that underestimates the peer).
2. **What a trial costs** (``--only costs``): CPU microseconds per trial-step of one trial, 200 steps on
   Rosenbrock in float32 with clipping, three ways: the peer's loop (fresh optimizer, autograd,
   ``clip_grad_norm_``; n/a for classes whose ``step()`` needs optbench's closure, which the peer's loop cannot
   run: SPSA, the forward gradient), optbench's loop engine one run at a time, and as a gallery round of K = 32
   trials in one pass (:func:`trial_path`: the batched engine for an optimizer with a batched rule, else
   ``engines.trials.run_trials``: one shared object where ``engines.stacked`` measured the class to allow it,
   else side by side, else one run at a time).
3. **The whole catalogue by path** (``--only by-path``): a sample of optimizers grouped by how the gallery runs
   their rounds (batched rule, shared object in each layout, side by side, one run at a time), one gallery per
   group against the peer on the same optimizers, and the whole gallery's speed-up estimated by weighting each
   group's CPU seconds per optimizer with the number of the gallery's optimizers that run that way.
4. **Search quality at equal budget**: the best trial loss per optimizer × function, median over sampler seeds,
   the gallery's tuner (``tune_one`` with the gallery's settings) against the peer's loop, both at
   ``--quality-trials`` trials. ``--record FILE`` keeps every study's result as one JSON line and reuses the
   ones already there (a peer study costs 30–75 s): a long quality run can stop and continue, and the medians
   are read from every recorded seed asked for.

5. **Phases** (``--only phases``): CPU seconds of each phase of one in-process gallery on ``--opt``.

    python benchmarks/bench_gallery.py [--opt adam,lion,...] [--peer-trials 100] [--seeds 3] [--workers 2]
"""

from __future__ import annotations

import argparse
import math
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

from bench_tune import FUNCTIONS, rastrigin, rosenbrock  # noqa: E402

# batched rules (torch.optim's, pytorch_optimizer's) and loop-only classes: Adam-like, sign-based, Nesterov-like,
# lr-free, schedule-free, Hessian (create_graph: evaluated one trial at a time)
SUBSET = "adam,lion,adopt,adabelief,adan,ranger,prodigy,schedulefreesgd,sophiah"
STEPS, TRIALS = 200, 600


def peer_trajectory(fn, start, name: str, lr: float, steps: int = STEPS):
    """One peer trial: a fresh library optimizer on a float32 2-D point, gradients clipped to norm 1."""
    import torch

    from optbench.optimizers import get_optimizer

    entry = get_optimizer(name).entry
    x = torch.tensor(start, requires_grad=True)
    kwargs = {**entry.fixed, "lr": lr}
    optimizer = entry.resolve_class()([x], **kwargs)
    path = [x.detach().clone()]
    for _ in range(steps):
        optimizer.zero_grad()
        fn(x).backward(create_graph=entry.create_graph)
        torch.nn.utils.clip_grad_norm_(x, 1.0)
        optimizer.step()
        path.append(x.detach().clone())
    return torch.stack(path), float(fn(x.detach()))


def peer_study(fn_name: str, name: str, n_trials: int, seed: int = 0):
    """The peer's ``study.optimize`` with Optuna's default TPE; returns (best loss, best lr, seconds)."""
    import optuna

    from optbench.optimizers import get_optimizer

    low, high = (0.1, 10.0) if get_optimizer(name).entry.lr_free else (1e-5, 10.0)
    fn, (start, _) = {"rosenbrock": rosenbrock, "rastrigin": rastrigin}[fn_name], FUNCTIONS[fn_name]

    def objective(trial):
        try:
            loss = peer_trajectory(fn, start, name, trial.suggest_float("lr", low, high, log=True))[1]
        except (RuntimeError, ValueError):
            return float("inf")
        return loss if math.isfinite(loss) else float("inf")

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    t0, c0 = time.perf_counter(), time.process_time()
    study = optuna.create_study(sampler=optuna.samplers.TPESampler(seed=seed))
    study.optimize(objective, n_trials=n_trials)
    peer_study.cpu_s = time.process_time() - c0
    return study.best_value, study.best_params["lr"], time.perf_counter() - t0


def peer_plot_seconds(names: list[str]) -> float:
    """The peer's plots of every best trajectory (lr fixed at 0.01: the time does not depend on it)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    t0, c0 = time.perf_counter(), time.process_time()
    with tempfile.TemporaryDirectory() as out:
        for fn_name, (start, _) in FUNCTIONS.items():
            fn = {"rosenbrock": rosenbrock, "rastrigin": rastrigin}[fn_name]
            xs, ys = np.meshgrid(np.linspace(-4.5, 4.5, 250), np.linspace(-4.5, 4.5, 250))
            z = (1 - xs) ** 2 + 100 * (ys - xs**2) ** 2 if fn_name == "rosenbrock" else (
                20 + xs**2 - 10 * np.cos(2 * np.pi * xs) + ys**2 - 10 * np.cos(2 * np.pi * ys))
            for name in names:
                path = peer_trajectory(fn, start, name, 0.01)[0].numpy()
                fig, ax = plt.subplots(figsize=(8, 8))
                ax.contour(xs, ys, z, 90, cmap="jet")
                ax.plot(path[:, 0], path[:, 1], color="r", marker="x")
                fig.savefig(Path(out) / f"{fn_name}_{name}.png")
                plt.close(fig)
    peer_plot_seconds.cpu_s = time.process_time() - c0
    return time.perf_counter() - t0


def children_cpu_s() -> float:
    import resource

    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def gallery_seconds(names: str, workers: int, trials: int) -> tuple[float, float, Path]:
    """``optbench gallery`` end to end in a fresh directory (the installed script, as a user runs it):
    (wall s, CPU s of the command and its worker processes, the directory)."""
    out = Path(tempfile.mkdtemp(prefix="bench-gallery-"))
    exe = shutil.which("optbench")
    t0, c0 = time.perf_counter(), children_cpu_s()
    subprocess.run([exe, "gallery", "--opt", names, "--trials", str(trials), "--steps", str(STEPS), "--dtype",
                    "float32", "--workers", str(workers), "--out", str(out / "g"), "-q"], check=True)
    return time.perf_counter() - t0, children_cpu_s() - c0, out


def gallery_phases(names: list[str], trials: int) -> None:
    """``--only phases``: CPU seconds of each phase of one in-process gallery (one worker) on ``names``: planning
    and imports, tuning, re-runs, figures, index; per optimizer and, for the figures, per figure."""
    import optbench.gallery as G

    spent: dict[str, float] = {}
    for phase in ("plan_gallery", "_tune", "_rerun_best", "_draw_figures", "write_index"):
        def timed(*a, _f=getattr(G, phase), _p=phase, **k):
            c0 = time.process_time()
            try:
                return _f(*a, **k)
            finally:
                spent[_p] = spent.get(_p, 0.0) + time.process_time() - c0
        setattr(G, phase, timed)
    out = Path(tempfile.mkdtemp(prefix="bench-phases-"))
    c0 = time.process_time()
    G.run_gallery(out / "g", optimizers=names, trials=trials, steps=STEPS, dtype="float32", workers=1)
    total = time.process_time() - c0
    shutil.rmtree(out, ignore_errors=True)
    n = len(names)
    print(f"\nphases: {n} optimizers × 2 functions, {trials} trials × {STEPS} steps, one worker (CPU s)")
    print("| phase | CPU s | per optimizer |")
    print("|---|---:|---:|")
    for phase, label in (("plan_gallery", "planning and imports"), ("_tune", "tuning"), ("_rerun_best", "re-runs"),
                         ("_draw_figures", f"figures ({2 * n}: {spent.get('_draw_figures', 0) / (2 * n):.3f} s each)"),
                         ("write_index", "index")):
        print(f"| {label} | {spent.get(phase, 0.0):.2f} | {spent.get(phase, 0.0) / n:.3f} |")
    print(f"| all | {total:.2f} | {total / n:.3f} |", flush=True)


def gallery_best(fn_name: str, name: str, trials: int, seed: int) -> tuple[float, float]:
    """The gallery's tuner on one study (its settings: tpe, clip 1, float32, its round size); (best loss, s)."""
    from optbench.engines.recipe import Recipe
    from optbench.gallery import CLIP_NORM, round_size
    from optbench.optimizers import get_optimizer
    from optbench.problems import get_problem
    from optbench.tuning import get_protocol, parse_space, tune_one

    with tempfile.TemporaryDirectory() as d:
        t0 = time.perf_counter()
        r = tune_one(get_problem(FUNCTIONS[fn_name][1]), get_optimizer(name), protocol=get_protocol("tpe"),
                     trials=trials, dims=parse_space(""), steps=STEPS, out_dir=d, batch=round_size(trials),
                     loop_batch=round_size(trials),
                     seed=seed, dtype="float32", recipe=Recipe(clip_norm=CLIP_NORM))
        return (r.best_value if r.best_value is not None else math.inf), time.perf_counter() - t0


def recorded(record: Path | None, side: str, fn_name: str, name: str, trials: int, seed: int, compute):
    """(best loss, seconds) of one quality study: from ``record`` (JSON lines) when it holds it, else
    ``compute()``, appended there at once."""
    import json

    key = {"side": side, "function": fn_name, "optimizer": name, "trials": trials, "seed": seed}
    if record is not None and record.exists():
        for line in record.read_text().splitlines():
            row = json.loads(line)
            if {k: row.get(k) for k in key} == key:
                return row["best"], row["seconds"]
    best, seconds = compute()
    if record is not None:
        with record.open("a") as f:
            f.write(json.dumps({**key, "best": best, "seconds": round(seconds, 3)}) + "\n")
    return best, seconds


def trial_path(name: str) -> str:
    """How the gallery runs a round of ``name``'s trials: a batched rule, one shared object in a layout
    (engines.stacked), side by side (one object per trial), or one run at a time (engines.trials' reasons)."""
    from optbench.optimizers import get_optimizer

    entry = get_optimizer(name).entry
    if entry.batched is not None:
        return "batched rule"
    if entry.shared_layout is not None:
        return f"shared ({entry.shared_layout})"
    if entry.needs_closure or entry.create_graph:
        return "one run at a time"
    return "side by side"


def trial_step_costs(name: str, trials: int = 32, spread: bool = False) -> dict[str, float]:
    """CPU µs per trial-step of ``trials`` trials (lrs spaced by 5 %) run the peer's way (NaN where the peer's loop
    cannot run the class), on optbench's loop engine one at a time, and as the gallery runs a round (the batched
    engine for a batched rule, else ``run_trials``: one shared object where the class allows it, else side by
    side)."""
    import numpy as np
    import torch

    from optbench.engines.recipe import Recipe
    from optbench.engines.trials import run_trials
    from optbench.optimizers import get_optimizer
    from optbench.problems import get_problem
    from optbench.sweep.plan import execute
    from optbench.sweep.spec import Run

    problem = get_problem(FUNCTIONS["rosenbrock"][1])
    base = get_optimizer(name)
    lrs = (np.geomspace(1e-5, 10.0, trials).tolist() if spread  # the gallery's lr space, as its search spans it
           else [(base.lr or 1e-3) * 1.05**k for k in range(trials)])
    configs = [base.with_hyperparams(lr=lr) for lr in lrs]
    runs = [Run(problem, c, 10_000, STEPS, 20, "float32", "cpu", Recipe(clip_norm=1.0)) for c in configs]
    ways = {
        "peer": lambda: [peer_trajectory(rosenbrock, FUNCTIONS["rosenbrock"][0], name, c.lr) for c in configs],
        "loop": lambda: [execute("loop", [run]) for run in runs],
        "round": (lambda: execute("batched", runs, measure_cost=False)) if base.entry.batched is not None else
        (lambda: run_trials(problem, configs, 10_000, STEPS, 20, dtype=torch.float32, recipe=Recipe(clip_norm=1.0))),
    }
    out = {}
    for way, fn in ways.items():
        c0 = time.process_time()
        try:
            fn()
        except (RuntimeError, TypeError):  # the peer's loop calls step() without a closure (torch.optim: TypeError)
            if way != "peer" or not base.entry.needs_closure:
                raise
            out[way] = math.nan
            continue
        out[way] = (time.process_time() - c0) / (trials * STEPS) * 1e6
    return out


def by_path_estimate(names: list[str], trials: int, peer_trials: int, workers: int) -> None:
    """The whole catalogue's speed-up estimated from a sample: the sample's optimizers grouped by how the gallery
    runs their rounds (:func:`trial_path`), one ``optbench gallery`` per group (its start-up, re-runs and figures
    included, so small groups read slow) against the peer on the same optimizers (first ``peer_trials`` trials
    per study, extrapolated), each group's CPU seconds per optimizer weighted by how many of the gallery's
    optimizers run that way."""
    from collections import Counter

    from optbench.gallery import plan_gallery, resolve_problems

    pairs, _ = plan_gallery(resolve_problems(None))
    counts = Counter(trial_path(n) for n in dict.fromkeys(o.name for _, o in pairs))
    groups: dict[str, list[str]] = {}
    for name in names:
        groups.setdefault(trial_path(name), []).append(name)
    print(f"\nby path: {trials} trials × {STEPS} steps per study, peer timed on {peer_trials} trials and extrapolated; "
          "CPU seconds per optimizer (both functions)")
    print("| round of trials | sample | in the gallery | peer CPU s | gallery CPU s | peer / gallery |")
    print("|---|---|---:|---:|---:|---:|")
    peer_total = ours_total = 0.0
    for path, members in sorted(groups.items()):
        _, g_cpu, out = gallery_seconds(",".join(members), workers, trials)
        shutil.rmtree(out, ignore_errors=True)
        p_cpu = 0.0
        for name in members:
            for fn_name in FUNCTIONS:
                peer_study(fn_name, name, peer_trials)
                p_cpu += peer_study.cpu_s * trials / peer_trials
        peer_each, ours_each = p_cpu / len(members), g_cpu / len(members)
        peer_total, ours_total = peer_total + counts[path] * peer_each, ours_total + counts[path] * ours_each
        print(f"| {path} | {', '.join(members)} | {counts[path]} | {peer_each:.1f} | {ours_each:.1f} | "
              f"{peer_each / ours_each:.1f}× |", flush=True)
    missing = sorted(set(counts) - set(groups))
    print(f"whole gallery ({sum(counts.values())} optimizers), estimated: peer {peer_total:.0f} s CPU, optbench "
          f"{ours_total:.0f} s CPU: {peer_total / ours_total:.1f}×" + (f" (no sample for: {', '.join(missing)})"
                                                                        if missing else ""))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--opt", default=SUBSET, help="optimizers, comma-separated, or all (the whole gallery)")
    ap.add_argument("--trials", type=int, default=TRIALS, help="trials per study, both sides")
    ap.add_argument("--peer-trials", type=int, default=None, help="peer trials timed per study, extrapolated "
                    "to --trials (default: all of them)")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--seeds", type=int, default=3, help="sampler seeds for the quality table (0: skip it)")
    ap.add_argument("--quality-trials", type=int, default=100)
    ap.add_argument("--functions", default=",".join(FUNCTIONS), help="quality: the functions, comma-separated")
    ap.add_argument("--record", type=Path, default=None, help="quality: JSON lines of every study's result, "
                    "read first and appended to (a run that stops continues from it)")
    ap.add_argument("--first-seed", type=int, default=0, help="quality: sampler seeds first-seed … first-seed + "
                    "seeds − 1")
    ap.add_argument("--only", choices=("speed", "costs", "quality", "by-path", "phases"), default=None)
    ap.add_argument("--costs-spread", action="store_true", help="costs: trials log-spaced over the gallery's lr "
                    "space [1e-5, 10] instead of the default lr × 1.05^k")
    args = ap.parse_args()
    if args.opt == "all":  # the whole catalogue: what `optbench gallery` without --opt tunes
        from optbench.gallery import plan_gallery, resolve_problems

        pairs, _ = plan_gallery(resolve_problems(None))
        args.opt = ",".join(dict.fromkeys(o.name for _, o in pairs))
    names = args.opt.split(",")
    import warnings

    warnings.filterwarnings("ignore")
    if args.only == "phases":
        gallery_phases(names, args.trials)
        return
    if args.only == "by-path":
        by_path_estimate(names, args.trials, args.peer_trials or args.trials, args.workers)
        return
    if args.only in (None, "speed"):
        from optbench.optimizers import get_optimizer_entry

        # the same optimizers on both sides: the peer's loop calls step() without a closure, so it cannot run
        # the classes that need one (L-BFGS, SPSA, the forward gradient)
        closure = [n for n in names if get_optimizer_entry(n).needs_closure]
        if closure:
            names = [n for n in names if n not in closure]
            print(f"speed: left out on both sides (the peer's loop has no closure): {', '.join(closure)}")
        trials, peer_trials = args.trials, args.peer_trials or args.trials
        g_s, g_cpu, out = gallery_seconds(",".join(names), args.workers, trials)
        print(f"optbench gallery, {len(names)} optimizers, {args.workers} workers: {g_s:.1f} s wall, "
              f"{g_cpu:.1f} s CPU", flush=True)
        shutil.rmtree(out, ignore_errors=True)
        rows, peer_wall, peer_cpu = [], 0.0, 0.0
        for name in names:
            for fn_name in FUNCTIONS:
                best, _, secs = peer_study(fn_name, name, peer_trials)
                scale = trials / peer_trials
                peer_wall, peer_cpu = peer_wall + secs * scale, peer_cpu + peer_study.cpu_s * scale
                rows.append((fn_name, name, secs * scale, peer_study.cpu_s * scale, best))
        plot_s = peer_plot_seconds(names)
        peer_wall, peer_cpu = peer_wall + plot_s, peer_cpu + peer_plot_seconds.cpu_s
        how = "in full" if peer_trials == trials else f"first {peer_trials} trials, extrapolated"
        print(f"\nspeed: {len(names)} optimizers × 2 functions, {trials} trials × {STEPS} steps per study (peer {how})")
        print("| function | optimizer | peer wall s | peer CPU s | peer best loss |")
        print("|---|---|---:|---:|---:|")
        for fn_name, name, secs, cpu, best in rows:
            print(f"| {fn_name} | {name} | {secs:.1f} | {cpu:.1f} | {best:.4g} |")
        by_path: dict[str, int] = {}
        for name in names:
            by_path[trial_path(name)] = by_path.get(trial_path(name), 0) + 1
        print("how optbench runs a round of trials: " + ", ".join(f"{k} {v}" for k, v in sorted(by_path.items())))
        print(f"\npeer plots: {plot_s:.1f} s wall, {peer_plot_seconds.cpu_s:.1f} s CPU")
        print(f"peer total: {peer_wall:.1f} s wall, {peer_cpu:.1f} s CPU")
        print(f"optbench gallery, one command, {args.workers} workers: {g_s:.1f} s wall, {g_cpu:.1f} s CPU")
        print(f"speed-up: {peer_wall / g_s:.1f}× wall, {peer_cpu / g_cpu:.1f}× CPU", flush=True)
    if args.only in (None, "costs"):
        print("\nCPU µs per trial-step (rosenbrock, float32, clip 1, 200 steps, 32 trials)")
        print("| optimizer | round of trials | peer loop | loop engine, one run at a time | gallery round "
              "| peer / round | loop / round |")
        print("|---|---|---:|---:|---:|---:|---:|")
        for name in names:
            costs = trial_step_costs(name, spread=args.costs_spread)
            peer = "n/a" if math.isnan(costs["peer"]) else f"{costs['peer']:.0f}"
            ratio = "n/a" if math.isnan(costs["peer"]) else f"{costs['peer'] / costs['round']:.1f}×"
            print(f"| {name} | {trial_path(name)} | {peer} | {costs['loop']:.0f} | {costs['round']:.1f} | {ratio} | "
                  f"{costs['loop'] / costs['round']:.1f}× |", flush=True)
    if args.only in (None, "quality") and args.seeds:
        seeds = range(args.first_seed, args.first_seed + args.seeds)
        print(f"\nquality: best trial loss, median over sampler seeds {seeds[0]}–{seeds[-1]}, {args.quality_trials} "
              "trials each side")
        print("| function | optimizer | peer median | gallery median | no worse | gallery s/study | peer s/study |")
        print("|---|---|---:|---:|---|---:|---:|")
        for name in names:
            for fn_name in args.functions.split(","):
                peer = [recorded(args.record, "peer", fn_name, name, args.quality_trials, seed,
                                 lambda f=fn_name, o=name, s=seed: peer_study(f, o, args.quality_trials, s)[::2])
                        for seed in seeds]
                ours = [recorded(args.record, "gallery", fn_name, name, args.quality_trials, seed,
                                 lambda f=fn_name, o=name, s=seed: gallery_best(f, o, args.quality_trials, s))
                        for seed in seeds]
                p_med = statistics.median(b for b, _ in peer)
                g_med = statistics.median(b for b, _ in ours)
                print(f"| {fn_name} | {name} | {p_med:.4g} | {g_med:.4g} | {'yes' if g_med <= p_med else 'no'} | "
                      f"{statistics.median(s for _, s in ours):.2f} | {statistics.median(s for _, s in peer):.2f} |",
                      flush=True)


if __name__ == "__main__":
    main()
