"""Reporter timings: the 200-frame, 5-trajectory race (600×600 px) as GIF and MP4, ours against matplotlib's
FuncAnimation with PillowWriter / FFMpegWriter on the same scene, and a full report of a 1000-run sweep.

    python benchmarks/bench_report.py            # about 2 minutes on 2 cores (the reference GIF takes ~30 s)
    python benchmarks/bench_report.py --no-reference

Ours: background drawn once, moving artists blitted, frames encoded in one pass (see optbench/report/animate).
Times are the best of ``--repeat`` after a warm-up (first torch and matplotlib calls excluded).
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path


def sweep(out: Path, problems: str, opts: str, lrs: list[float], seeds: int, steps: int) -> Path:
    from optbench.optimizers import get_optimizer
    from optbench.problems import get_problem
    from optbench.runner import run_sweep
    from optbench.spec import parse_spec_list
    from optbench.sweep.spec import Sweep

    s = Sweep([get_problem(p) for p in parse_spec_list(problems)], [get_optimizer(o) for o in parse_spec_list(opts)],
              lrs=lrs, seeds=list(range(seeds)), steps=steps, device="cpu")
    run_sweep(s, out)
    return out


def race_inputs(results: Path):
    from optbench.problems import get_problem
    from optbench.report.build import Builder

    b = Builder([results], results / "r", formats=["gif"], figures=["race"], frames=200, fps=20, dpi=100,
                title=None, all_lrs=False, metric="final_loss")
    from optbench.report.data import load

    b.data = load([results])
    from optbench.report.animate import tracks_of

    tracks = tracks_of(b, "rosenbrock")
    return get_problem("rosenbrock"), tracks


def ours(problem, tracks, out: Path, fmt: str) -> float:
    from optbench.report.animate import race

    t = time.perf_counter()
    race(problem, tracks, out / f"ours_{fmt}", fmt=fmt, frames=200, fps=20, dpi=100, title="rosenbrock")
    return time.perf_counter() - t


def reference(problem, tracks, out: Path, fmt: str) -> float:
    """The plain way: FuncAnimation redraws the whole figure each frame, the writer encodes as it goes."""
    import matplotlib.animation as animation

    from optbench.report.animate import Scene, find_ffmpeg, frame_steps

    t = time.perf_counter()
    shown = frame_steps(tracks, 200)
    scene = Scene(problem, tracks, title="rosenbrock", dpi=100)
    for a in scene.artists():
        a.set_animated(False)
    anim = animation.FuncAnimation(scene.fig, lambda k: scene.set_frame(k, shown), frames=len(shown), blit=False)
    if fmt == "gif":
        anim.save(out / "ref.gif", writer=animation.PillowWriter(fps=20))
    else:
        import matplotlib

        matplotlib.rcParams["animation.ffmpeg_path"] = find_ffmpeg()
        anim.save(out / "ref.mp4", writer=animation.FFMpegWriter(fps=20))
    scene.close()
    return time.perf_counter() - t


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--no-reference", action="store_true", help="skip the slow FuncAnimation baselines")
    args = ap.parse_args()
    from optbench.report import build_report
    from optbench.report.animate import find_ffmpeg

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        five = sweep(tmp / "five", "rosenbrock", "adam,sgd-momentum,nag,rmsprop,lion", [3e-3], 1, 1000)
        problem, tracks = race_inputs(five)
        assert len(tracks) == 5
        ours(problem, tracks, tmp, "gif")  # warm-up: first torch call, fonts, palettes
        rows = []
        formats = ["gif"] + (["mp4"] if find_ffmpeg() else [])
        for fmt in formats:
            best = min(ours(problem, tracks, tmp, fmt) for _ in range(args.repeat))
            ref = None if args.no_reference else reference(problem, tracks, tmp, fmt)
            rows.append((f"race {fmt.upper()}, 200 frames × 5 trajectories, 600×600 px", best, ref))

        big = sweep(tmp / "big", "rosenbrock,valley(kappa=100),beale,himmelblau", "adam,sgd-momentum,nag,rmsprop,lion",
                    [10 ** (-3 + 2 * i / 9) for i in range(10)], 5, 500)
        from optbench.results import load_summary

        n_runs = len(load_summary(big))
        t = time.perf_counter()
        build_report([big], tmp / "report", formats=["png", "gif"])
        full = time.perf_counter() - t
        n_files = len(list((tmp / "report" / "figures").iterdir()))
        rows.append((f"full report, {n_runs} runs (4 problems; {n_files} figures incl. 4 GIF races)", full, None))

    print(f"{'what':<72} {'ours (s)':>9} {'FuncAnimation (s)':>18} {'ratio':>7}")
    for what, t_ours, t_ref in rows:
        ref = f"{t_ref:.2f}" if t_ref else "—"
        ratio = f"{t_ref / t_ours:.1f}×" if t_ref else "—"
        print(f"{what:<72} {t_ours:>9.2f} {ref:>18} {ratio:>7}")


if __name__ == "__main__":
    main()
