"""Network-track throughput on this machine: prints the tables recorded in BENCHMARKS.md ('## Networks').

1. mnist-mlp (DeepOBS 784-1000-500-100-10, batch 128, Adam, float32) on MNIST-shaped synthetic data
   (60,000 + 10,000 examples written as IDX files and read by the real loader): time per epoch with the
   engine's on-device pipeline (``run_network``: uint8 data on the device, per-epoch permutation, per-batch
   normalisation) against a ``torch.utils.data.DataLoader`` loop over the same, already normalised, tensors.
2. The share of an engine epoch spent outside forward/backward/step: the engine's time per step against a
   bare loop that only runs forward, backward and ``opt.step()`` on batches prepared in advance.
3. The batched engine (``run_network_batched``, torch.func/vmap): configuration-steps per second for
   K = 1, 8, 32 configurations (learning rates × seeds), against K separate loop runs.

Epoch times are extrapolated from ``--steps`` timed steps after ``--warmup`` untimed ones; engine times are the
engines' own clocks (``wall_time_s``), which exclude evaluation.
Usage: python benchmarks/bench_nets.py [--steps 60] [--threads N]
"""

from __future__ import annotations

import argparse
import os
import platform
import tempfile
import time


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=60, help="timed steps per measurement")
    ap.add_argument("--warmup", type=int, default=5)
    ap.add_argument("--repeats", type=int, default=3, help="interleaved repeats; the best of each is reported")
    ap.add_argument("--batched-steps", type=int, default=6)
    ap.add_argument("--ks", default="1,8,32")
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    ap.add_argument("--per-model", action="store_true",
                    help="only table 4: batched K models against K loop runs, interleaved medians")
    ap.add_argument("--problem", default="mnist-mlp(width=256, depth=2)", help="network for --per-model")
    args = ap.parse_args()
    if args.per_model:
        per_model(args)
        return

    root = tempfile.mkdtemp(prefix="optbench-bench-")
    os.environ["OPTBENCH_DATA"] = root
    import torch
    import torch.nn.functional as F

    if args.threads:
        torch.set_num_threads(args.threads)
    from optbench.data.synthetic import write_dataset
    from optbench.engines.network import run_network, run_network_batched
    from optbench.optimizers import get_optimizer
    from optbench.problems import get_problem

    t0 = time.perf_counter()
    write_dataset("mnist", f"{root}/mnist", n_train=60000, n_test=10000, gz=False)
    print(f"# {platform.processor() or platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads; data written in {time.perf_counter() - t0:.1f} s")
    S, W = args.steps, args.warmup
    problem = get_problem(f"mnist-mlp(eval_every={10**9}, test_size=1000)")  # evaluation: steps 0 and S only
    opt = get_optimizer("adam(lr=1e-3)")
    data = problem.device_data("cpu")
    per_epoch = problem.steps_per_epoch()

    def engine_step_s() -> float:
        run_network(problem, opt, 0, W, W)
        trace = run_network(problem, opt, 0, S, S)  # S + 1 forward/backward passes, S updates
        return float(trace.end_wall_time_s[0]) / (S + 1)  # the engine's clock: evaluation excluded

    def bare_step_s() -> float:
        model = problem.make_model(0, "cpu", torch.float32)
        o = opt.entry.build(list(model.parameters()), opt.hyperparams)
        rows = [slice(i * 128, (i + 1) * 128) for i in range(S + W)]
        batches = [(data.inputs(data.train_x[r], torch.float32), data.train_y[r]) for r in rows]
        for i, (x, y) in enumerate(batches):
            if i == W:
                t = time.perf_counter()
            o.zero_grad(set_to_none=True)
            F.cross_entropy(model(x), y).backward()
            o.step()
        return (time.perf_counter() - t) / S

    def dataloader_step_s() -> float:
        from torch.utils.data import DataLoader, TensorDataset

        g = torch.Generator().manual_seed(0)
        x_all = data.inputs(data.train_x, torch.float32)
        loader = DataLoader(TensorDataset(x_all, data.train_y), batch_size=128, shuffle=True, generator=g)
        model = problem.make_model(0, "cpu", torch.float32)
        o = opt.entry.build(list(model.parameters()), opt.hyperparams)
        for i, (x, y) in enumerate(loader):
            if i == W:
                t = time.perf_counter()
            if i == W + S:
                break
            o.zero_grad(set_to_none=True)
            F.cross_entropy(model(x), y).backward()
            o.step()
        return (time.perf_counter() - t) / S

    # interleaved repeats, best of each: robust to other load on the machine
    reps = [(engine_step_s(), bare_step_s(), dataloader_step_s()) for _ in range(args.repeats)]
    engine, bare, loader = (min(r[i] for r in reps) for i in range(3))
    print(f"\nmnist-mlp ({problem.dim:,} parameters), batch 128, {per_epoch} steps per epoch")
    print("| pipeline | ms per step | s per epoch |")
    print("|---|---:|---:|")
    for name, s in (("optbench engine (on-device data, randperm, per-batch normalisation)", engine),
                    ("DataLoader over the same normalised tensors (shuffle=True)", loader),
                    ("bare forward/backward/step on prepared batches", bare)):
        print(f"| {name} | {1e3 * s:.2f} | {s * per_epoch:.2f} |")
    print(f"\nshare of an engine epoch outside forward/backward/step: {100 * (1 - bare / engine):.1f}%")

    small = problem
    B = args.batched_steps
    print(f"\nbatched engine, {small.label}, Adam, {B} timed steps (after 1 warm-up run)")
    print("| K | s per step | configuration-steps per s | vs K loop runs |")
    print("|---:|---:|---:|---:|")
    loop_s = engine
    for K in (int(k) for k in args.ks.split(",")):
        opts = [opt.with_hyperparams(lr=lr) for lr in torch.logspace(-4, -2, K).tolist()]
        run_network_batched(small, opts, list(range(K)), 1, 1)
        trace = run_network_batched(small, opts, list(range(K)), B, B)
        step = float(trace.end_wall_time_s.max()) / (B + 1)
        print(f"| {K} | {step:.3f} | {K / step:.1f} | {K * loop_s / step:.2f}× |")


def per_model(args) -> None:
    """4. Batched K models (``run_network_batched``) against K separate loop runs (``run_network``), per model:
    for each of ``--repeats`` interleaved rounds, every K is timed once with each engine (engine clocks,
    evaluation excluded), and the medians are reported. ``speed-up`` > 1: the batched engine trains K models in
    less time than K loop runs."""
    import statistics

    root = tempfile.mkdtemp(prefix="optbench-bench-")
    os.environ["OPTBENCH_DATA"] = root
    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    from optbench.data.synthetic import write_dataset
    from optbench.engines.network import run_network, run_network_batched
    from optbench.optimizers import get_optimizer
    from optbench.problems import get_problem

    write_dataset("mnist", f"{root}/mnist", n_train=6000, n_test=500, gz=False)
    problem = get_problem(args.problem.rstrip(")") + f", eval_every={10**9}, test_size=500)"
                          if "(" in args.problem else f"{args.problem}(eval_every={10**9}, test_size=500)")
    S = args.steps
    ks = [int(k) for k in args.ks.split(",")]
    opts = {K: [get_optimizer("adam").with_hyperparams(lr=lr) for lr in torch.logspace(-4, -2, K).tolist()]
            for K in ks}
    print(f"# {platform.processor() or platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads, load {os.getloadavg()[0]:.2f}")
    print(f"{problem.label} ({problem.dim:,} parameters), Adam, {S} timed steps, median of {args.repeats} rounds")
    run_network(problem, opts[1][0], 0, 2, 2)
    for K in ks:
        run_network_batched(problem, opts[K], list(range(K)), 2, 2)
    loop, batched = {K: [] for K in ks}, {K: [] for K in ks}
    for _ in range(args.repeats):
        for K in ks:
            loop_s = sum(float(run_network(problem, o, k, S, S).end_wall_time_s[0]) for k, o in enumerate(opts[K]))
            loop[K].append(loop_s / (S + 1))
            trace = run_network_batched(problem, opts[K], list(range(K)), S, S)
            batched[K].append(float(trace.end_wall_time_s.max()) / (S + 1))
    print("| K | K loop runs, ms per step | batched, ms per step | speed-up per model |")
    print("|---:|---:|---:|---:|")
    for K in ks:
        lo, ba = statistics.median(loop[K]), statistics.median(batched[K])
        print(f"| {K} | {1e3 * lo:.2f} | {1e3 * ba:.2f} | {lo / ba:.2f}× |")
    print(f"# load after: {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
