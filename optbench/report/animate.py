"""The race: optimizers' trajectories on a 2-D landscape, as an animation (GIF, MP4) or a static figure.

Speed comes from drawing the contour background once: each frame restores that background, updates the
data of the moving artists (path, fading trail, head, step counter), draws only them (blitting) and copies
the canvas buffer. Frames are then encoded in one pass: Pillow with one shared palette for GIF, raw RGB
piped to ffmpeg for MP4.
"""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from optbench.report.figures import ANIMATED, STATIC, figure
from optbench.report.style import DIVERGED_MARKER, FIG_SIZE, OptStyle, fit_legend, pyplot

TRAIL_FRAMES = 12  # length of the fading trail, in frames
GRID = 240  # contour grid resolution per axis
LAST_FRAME_HOLD_MS = 1500


@dataclass
class Track:
    """One trajectory: recorded steps and coordinates, label and style."""

    label: str
    steps: np.ndarray  # [T] int
    xy: np.ndarray  # [T, 2]
    style: OptStyle
    diverged: bool = False


def find_ffmpeg() -> str | None:
    """The ffmpeg executable: imageio-ffmpeg's bundled binary, else ``ffmpeg`` on PATH, else None."""
    try:
        import imageio_ffmpeg

        return imageio_ffmpeg.get_ffmpeg_exe()
    except Exception:  # not installed, or its binary is missing for this platform
        return shutil.which("ffmpeg")


def require_ffmpeg() -> str:
    from optbench.errors import UsageError

    exe = find_ffmpeg()
    if exe is None:
        raise UsageError("MP4 needs ffmpeg, which was not found: install it with 'pip install imageio-ffmpeg' "
                         "(or 'apt-get install ffmpeg'), or use --format gif, which needs only Pillow.")
    return exe


def frame_steps(tracks: list[Track], frames: int) -> np.ndarray:
    """The step shown by each frame: every recorded step, or an even subsample to the frame budget."""
    all_steps = np.unique(np.concatenate([t.steps for t in tracks]))
    if len(all_steps) <= frames:
        return all_steps
    return all_steps[np.unique(np.round(np.linspace(0, len(all_steps) - 1, frames)).astype(int))]


def landscape_grid(problem, xs: np.ndarray, ys: np.ndarray) -> np.ndarray:
    """Loss of a 2-D problem at every (xs[j], ys[i]): ``Z[i, j]`` (``np.meshgrid`` order), float64.

    With numpy (``problem.numpy_loss``, every registered analytic problem: a report needs no torch); a
    problem without a numpy form (a user's) is evaluated with its torch loss."""
    X, Y = np.meshgrid(np.asarray(xs, dtype=np.float64), np.asarray(ys, dtype=np.float64))
    points = np.stack([X, Y], axis=-1)
    numpy_loss = getattr(problem, "numpy_loss", None)
    Z = numpy_loss(points) if numpy_loss is not None else None
    if Z is None:
        import torch

        with torch.no_grad():
            Z = problem.loss(torch.from_numpy(points)).numpy()
    return np.asarray(Z, dtype=np.float64)


def landscape(problem, n: int = GRID):
    """Loss on an n×n grid over the problem's plot bounds: (X, Y, Z, log_scale, floor)."""
    (x_lo, x_hi), (y_lo, y_hi) = problem.bounds[0], problem.bounds[1]
    xs, ys = np.linspace(x_lo, x_hi, n), np.linspace(y_lo, y_hi, n)
    X, Y = np.meshgrid(xs, ys)
    Z = landscape_grid(problem, xs, ys)
    bounded = problem.f_min is not None
    floor = float(problem.f_min) if bounded else float(np.nanmin(Z))
    return X, Y, Z, bounded, floor


class Scene:
    """A figure with a static landscape and moving artists for each track."""

    def __init__(self, problem, tracks: list[Track], *, title: str, dpi: int, size=(6.0, 6.0)):
        from matplotlib import colors, ticker
        from matplotlib.collections import LineCollection

        plt = pyplot()
        self.plt, self.tracks = plt, tracks
        self.fig, ax = plt.subplots(figsize=size, dpi=dpi)
        self.ax = ax
        X, Y, Z, bounded, floor = landscape(problem)
        levels: np.ndarray | Sequence[float]
        if bounded:  # log-spaced levels of loss − f*: detail near the minimum and on the walls alike
            gap = np.maximum(Z - floor, 0)
            hi = float(np.nanmax(gap))
            lo = max(float(np.nanmin(gap[gap > 0])) if (gap > 0).any() else hi * 1e-6, hi * 1e-7)
            levels = np.logspace(np.log10(lo), np.log10(hi), 24)
            cf = ax.contourf(X, Y, np.clip(gap, lo, hi), levels=levels, norm=colors.LogNorm(lo, hi),
                             cmap="viridis", extend="neither")
            ax.contour(X, Y, np.clip(gap, lo, hi), levels=levels[::2], colors="white", linewidths=0.4, alpha=0.35)
            cbar = self.fig.colorbar(cf, ax=ax, shrink=0.85, pad=0.02)
            cbar.set_label("loss − f*")
            cbar.ax.yaxis.set_major_locator(ticker.LogLocator(numticks=8))
        else:  # unbounded below (saddles): log levels of a shifted loss would mislead, use linear ones
            levels = ticker.MaxNLocator(24).tick_values(float(np.nanmin(Z)), float(np.nanmax(Z)))
            cf = ax.contourf(X, Y, Z, levels=levels, cmap="viridis")
            ax.contour(X, Y, Z, levels=levels[::2], colors="white", linewidths=0.4, alpha=0.35)
            cbar = self.fig.colorbar(cf, ax=ax, shrink=0.85, pad=0.02)
            cbar.set_label("loss (unbounded below)")
        cf.set_rasterized(True)
        minima = np.asarray(problem.minima_points, dtype=np.float64).reshape(-1, problem.dim)  # no torch
        if len(minima):
            ax.plot(minima[:, 0], minima[:, 1], linestyle="none", marker="*", markersize=15, color="white",
                    markeredgecolor="black", markeredgewidth=0.8, zorder=3, label="global minimum")
        (x_lo, x_hi), (y_lo, y_hi) = problem.bounds[0], problem.bounds[1]
        ax.set_xlim(x_lo, x_hi)
        ax.set_ylim(y_lo, y_hi)
        ax.set_aspect("auto")
        ax.grid(False)
        ax.set_xlabel("x₀")
        ax.set_ylabel("x₁")
        ax.set_title(title)
        starts = np.array([t.xy[0] for t in tracks])
        ax.plot(starts[:, 0], starts[:, 1], linestyle="none", marker="o", markersize=7, markerfacecolor="white",
                markeredgecolor="black", markeredgewidth=1.0, zorder=3, label="start")
        handles = [ax.plot([], [], color=t.style.color, marker=t.style.marker, markeredgecolor="black",
                           linewidth=1.8, label=t.label)[0] for t in tracks]
        extra = [h for h in ax.get_lines() if h.get_label() in ("global minimum", "start")]
        fit_legend(self.fig, handles + extra, max_cols=3, fontsize=8.5)  # as many columns as fit the width
        self.paths, self.trails, self.heads = [], [], []
        for t in tracks:
            (path,) = ax.plot([], [], color=t.style.color, linewidth=1.3, alpha=0.8, animated=True, zorder=4)
            trail = LineCollection([], animated=True, zorder=5, capstyle="round")
            ax.add_collection(trail)
            # not clipped: a run that left the view waits on its edge, and its whole marker stays visible there
            (head,) = ax.plot([], [], linestyle="none", marker=t.style.marker, markersize=9, color=t.style.color,
                              markeredgecolor="black", markeredgewidth=1.0, animated=True, zorder=6, clip_on=False)
            self.paths.append(path)
            self.trails.append(trail)
            self.heads.append(head)
        self.counter = ax.text(0.02, 0.98, "", transform=ax.transAxes, va="top", ha="left", fontsize=10,
                               animated=True, zorder=7, family="monospace",
                               bbox=dict(boxstyle="round,pad=0.3", facecolor="white", alpha=0.85, linewidth=0))
        # the moving artists take no part in the layout: an unclipped head without data yet has a marker-sized
        # extent at the figure's origin, which constrained layout took for a decoration of the axes and reserved
        # space for, leaving an empty band (a sixth of the figure) between the axes and the legend
        for artist in self.artists():
            artist.set_in_layout(False)
        self.rgb = [np.array(self._to_rgb(t.style.color)) for t in tracks]
        self.lo = np.array([x_lo, y_lo])
        self.hi = np.array([x_hi, y_hi])

    @staticmethod
    def _to_rgb(color):
        from matplotlib.colors import to_rgb

        return to_rgb(color)

    def artists(self):
        return [*self.paths, *self.trails, *self.heads, self.counter]

    def set_frame(self, k: int, shown: np.ndarray) -> None:
        """Show the state at frame k: the step ``shown[k]``, the trail over the previous frames."""
        step = shown[k]
        lo = max(0, k - TRAIL_FRAMES)
        for i, t in enumerate(self.tracks):
            last = int(np.searchsorted(t.steps, step, side="right")) - 1
            self.paths[i].set_data(t.xy[: last + 1, 0], t.xy[: last + 1, 1])
            idx = np.searchsorted(t.steps, shown[lo: k + 1], side="right") - 1
            pts = t.xy[np.unique(idx)]
            if len(pts) > 1:
                segs = np.stack([pts[:-1], pts[1:]], axis=1)
                fade = np.linspace(0.15, 1.0, len(segs))
                rgba = np.column_stack([np.tile(self.rgb[i], (len(segs), 1)), fade])
                # matplotlib's stubs take sequences; arrays of segments, colours and widths are what it accepts
                self.trails[i].set_segments(segs)  # type: ignore[arg-type]
                self.trails[i].set_color(rgba)  # type: ignore[arg-type]
                self.trails[i].set_linewidth(1.0 + 2.5 * fade)  # type: ignore[arg-type]
            else:
                self.trails[i].set_segments([])
            head = t.xy[last]
            outside = not np.all((head >= self.lo) & (head <= self.hi))
            head = np.clip(head, self.lo, self.hi)  # a run that left the view waits on its edge, as an X
            self.heads[i].set_data(head[:1], head[1:])
            ended = t.diverged and last == len(t.steps) - 1
            self.heads[i].set_marker(DIVERGED_MARKER if t.diverged and (ended or outside) else t.style.marker)
        self.counter.set_text(f"step {int(step):>{len(str(int(shown[-1])))}d} / {int(shown[-1])}")

    def close(self) -> None:
        self.plt.close(self.fig)


class Stamp:
    """The step counter, drawn by Pillow onto each grabbed frame: a matplotlib Text costs 2–5 ms a frame
    to lay out and rasterize, more than all the moving lines together; Pillow takes about 0.1 ms."""

    def __init__(self, scene: Scene):
        from matplotlib import font_manager
        from PIL import ImageFont

        fig, ax = scene.fig, scene.ax
        self.height = int(fig.bbox.height)
        x, y = ax.transAxes.transform((0.02, 0.98))
        self.xy = (int(x), int(self.height - y))
        path = font_manager.findfont(font_manager.FontProperties(family="DejaVu Sans Mono"))
        self.font = ImageFont.truetype(path, max(8, round(scene.counter.get_fontsize() * fig.dpi / 72)))

    def __call__(self, image, text: str) -> None:
        from PIL import ImageDraw

        draw = ImageDraw.Draw(image)
        left, top, right, bottom = draw.textbbox(self.xy, text, font=self.font)
        pad = 4
        draw.rounded_rectangle((left - pad, top - pad, right + pad, bottom + pad), radius=4,
                               fill=(255, 255, 255, 230))
        draw.text(self.xy, text, font=self.font, fill=(0, 0, 0, 255))


def render_frames(scene: Scene, shown: np.ndarray) -> list:
    """Draw the background once, then blit the moving artists frame by frame; returns RGBA Pillow images."""
    from PIL import Image

    canvas = scene.fig.canvas
    canvas.draw()
    background = canvas.copy_from_bbox(scene.fig.bbox)
    moving = [*scene.paths, *scene.trails, *scene.heads]
    stamp = Stamp(scene)
    frames = []
    for k in range(len(shown)):
        canvas.restore_region(background)
        scene.set_frame(k, shown)
        for a in moving:
            scene.ax.draw_artist(a)
        image = Image.fromarray(np.array(canvas.buffer_rgba()))  # copied: the canvas buffer is reused
        stamp(image, scene.counter.get_text())
        frames.append(image)
    return frames


def gif_palette(frames: list, reserved_colors=()):
    """One 256-colour palette for every frame: the report's own colours (``reserved_colors``, hex: the
    optimizers' colours, black, white, the diverged grey) exactly, the rest median-cut from the first, middle
    and last frames. A median cut alone averages a small area of an optimizer's colour into its neighbours
    (rmsprop's pink became grey, sgd-momentum's orange yellow); with its colours fixed, a GIF shows the colours
    the PNG and MP4 show."""
    from PIL import Image

    fixed = list(dict.fromkeys(tuple(int(c.lstrip("#")[i:i + 2], 16) for i in (0, 2, 4)) for c in reserved_colors))
    pick = sorted({0, len(frames) // 2, len(frames) - 1})
    w, h = frames[0].size
    sample = Image.new("RGB", (w, h * len(pick)))
    for j, i in enumerate(pick):
        sample.paste(frames[i], (0, h * j))
    cut = sample.quantize(colors=256 - len(fixed), method=Image.Quantize.MEDIANCUT).getpalette()
    assert cut is not None  # a quantized ("P") image has a palette
    rgb = [c for color in fixed for c in color] + cut[:3 * (256 - len(fixed))]
    palette = Image.new("P", (1, 1))
    palette.putpalette(rgb + [0] * (768 - len(rgb)))
    return palette


def report_colors(tracks) -> list[str]:
    """The colours a race draws with, which its GIF must reproduce exactly."""
    from optbench.report.style import DIVERGED_COLOR

    return [t.style.color for t in tracks] + ["#000000", "#FFFFFF", DIVERGED_COLOR]


def write_gif(frames: list, path: Path, fps: int, colors=()) -> None:
    """Encode with Pillow: one palette (:func:`gif_palette`, the report's ``colors`` exact), every frame mapped
    to it without dithering, saved in one pass."""
    from PIL import Image

    frames = [f.convert("RGB") for f in frames]
    palette = gif_palette(frames, colors)
    images = [f.quantize(palette=palette, dither=Image.Dither.NONE) for f in frames]
    durations = [max(20, round(1000 / fps))] * len(images)
    durations[-1] = max(durations[-1], LAST_FRAME_HOLD_MS)
    images[0].save(path, save_all=True, append_images=images[1:], duration=durations, loop=0, optimize=False)


def write_mp4(frames: list, path: Path, fps: int) -> None:
    """Pipe raw RGB frames to ffmpeg (H.264, yuv420p so that every player opens it)."""
    from optbench.errors import OptbenchError

    exe = require_ffmpeg()
    w, h = frames[0].size
    cmd = [exe, "-y", "-loglevel", "error", "-f", "rawvideo", "-pix_fmt", "rgba", "-s", f"{w}x{h}",
           "-r", str(fps), "-i", "-", "-vf", "pad=ceil(iw/2)*2:ceil(ih/2)*2", "-c:v", "libx264",
           "-preset", "veryfast", "-crf", "23", "-pix_fmt", "yuv420p", "-movflags", "+faststart", str(path)]
    proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stderr=subprocess.PIPE)
    assert proc.stdin is not None and proc.stderr is not None  # both are pipes
    try:
        for f in frames:
            proc.stdin.write(f.tobytes())
        proc.stdin.close()
    except BrokenPipeError:
        pass
    err = proc.stderr.read().decode(errors="replace")
    if proc.wait() != 0:
        raise OptbenchError(f"ffmpeg failed writing {path}: {err.strip()[-500:]}")


def race(problem, tracks: list[Track], stem: Path, *, fmt: str, frames: int, fps: int, dpi: int,
         title: str) -> Path:
    """Write the racing animation of ``tracks`` on ``problem`` as ``stem.gif`` or ``stem.mp4``."""
    shown = frame_steps(tracks, frames)
    scene = Scene(problem, tracks, title=title, dpi=dpi)
    try:
        images = render_frames(scene, shown)
    finally:
        scene.close()
    path = stem.with_name(f"{stem.name}.{fmt}")  # appended: a stem's own dot is no suffix
    if fmt == "gif":
        write_gif(images, path, fps, colors=report_colors(tracks))
    else:
        write_mp4(images, path, fps)
    return path


def trajectories(problem, tracks: list[Track], stem: Path, *, formats, dpi: int, title: str) -> list[Path]:
    """The race's last frame as a static figure (png, svg, pdf), for print."""
    from optbench.report.style import save

    shown = frame_steps(tracks, 10**9)
    scene = Scene(problem, tracks, title=title, dpi=dpi, size=FIG_SIZE[:1] * 2)
    for a in scene.artists():
        a.set_animated(False)
    scene.set_frame(len(shown) - 1, shown)
    scene.counter.set_text(f"after {int(shown[-1])} steps")
    return save(scene.fig, stem, formats, dpi)


# ---- the figures: races (animations) and trajectories (their last frame) of the 2-D problems --------------

def two_d_families(data) -> list[str]:
    """The problem families of the results that are 2-D with recorded coordinates (x0, x1)."""
    s = data.summary
    return [p for p in data.families if int(s.loc[s["family"] == p, "dim"].iloc[0]) == 2
            and {"x0", "x1"} <= set(data.steps.columns)]


def tracks_of(report, family: str) -> list[Track]:
    """Each configuration's track at its best lr (first seed) on ``family``, for races and trajectories."""
    from optbench.report.curves import config_label
    from optbench.report.data import best_configs, runs_of

    data = report.data
    steps, tracks = data.steps, []
    for _, c in best_configs(data.table_all, family, data.rank_metric).iterrows():
        runs = runs_of(data.summary, c["problem"], c["optimizer_label"], c["lr"], c["batch_size"])
        run = runs.sort_values("seed").iloc[0]
        d = steps[steps["run_id"] == run["run_id"]].sort_values("step")
        xy = d[["x0", "x1"]].to_numpy(dtype=float)
        keep = np.isfinite(xy).all(axis=1)
        diverged = run["status"] == "diverged"
        label = config_label(data.short(c["optimizer_label"]), c["lr"], c["batch_size"])
        if diverged:
            label += f" — diverged at step {int(run['final_step'])}"
        tracks.append(Track(label, d["step"].to_numpy()[keep], xy[keep], data.styles[c["optimizer_label"]],
                            diverged))
    return [t for t in tracks if len(t.steps)]


def _has_2d(data) -> bool:
    return bool(two_d_families(data))


@figure("race", doc="animation of the optimizers on each 2-D landscape", needs=ANIMATED, applies=_has_2d)
def race_section(report) -> list:
    from optbench.report.page import Section
    from optbench.report.style import safe_name

    files = []
    for problem in two_d_families(report.data):
        tracks = tracks_of(report, problem)
        for fmt in report.animated:
            files.append(race(report.problem_of(problem), tracks, report.fig_dir / f"race_{safe_name(problem)}",
                              fmt=fmt, frames=report.frames, fps=report.fps, dpi=report.dpi,
                              title=report.title_for(problem)))
    note = "Each optimizer at its best learning rate, first seed; trail: the last steps, fading."
    return [Section("Race on the landscape", files, note=note)] if files else []


@figure("trajectories", doc="the race's last frame, static", needs=STATIC, applies=_has_2d)
def trajectories_section(report) -> list:
    from optbench.report.page import Section
    from optbench.report.style import safe_name

    files = []
    for problem in two_d_families(report.data):
        files += trajectories(report.problem_of(problem), tracks_of(report, problem),
                              report.fig_dir / f"trajectories_{safe_name(problem)}", formats=report.static,
                              dpi=report.dpi, title=report.title_for(problem))
    return [Section("Trajectories", files)] if files else []
