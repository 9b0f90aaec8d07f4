"""The gallery's figures and index (``optbench gallery``, :mod:`optbench.gallery`): one trajectory on the
function's contours per function × optimizer, and the ranking per function as Markdown and HTML.

A figure shows the contours of log₁₀(f − f* + 10⁻³) over the problem's plot bounds (widened to keep the whole
trajectory in view, at most to twice their width), the trajectory of the best configuration with every step
marked, the start (white circle), the global minimum (gold star) and the end (black-edged diamond); the title
names the optimizer, its tuned values and the final loss with the distance to the minimum.
"""

from __future__ import annotations

import html
import math
from pathlib import Path

import numpy as np

from optbench.formatting import fmt_num

LOG_FLOOR = 1e-3  # log10(f - f* + LOG_FLOOR): the valley floor stays visible without -inf
GRID = 220  # contour grid points per axis
MAX_WIDEN = 0.5  # the view may grow by this share of the plot bounds' width on each side
CANVASES_KEPT = 4  # figures (one per view) kept open while a gallery's trajectories are drawn
VIEW_STEP = 0.125  # a widened side of the view is a multiple of this share of the bounds' width
DPI = 90


def view_bounds(bounds, path: np.ndarray) -> tuple[tuple[float, float], tuple[float, float]]:
    """The plot bounds, widened to include the finite points of ``path`` [T, 2] (with a margin of 5 % of their
    width), by at most ``MAX_WIDEN`` of their width on each side (a trajectory that leaves further is cut at the
    frame). A widened side is rounded out to a multiple of ``VIEW_STEP`` of the width, so that trajectories
    leaving the bounds alike share a view (and its drawn contours: :func:`draw_trajectories`)."""
    out = []
    finite = path[np.isfinite(path).all(axis=1)] if len(path) else path
    for axis, (lo, hi) in enumerate(bounds[:2]):
        width = hi - lo
        if len(finite):
            lo = max(min(lo, _snap_out(lo, float(finite[:, axis].min()) - 0.05 * width, width, -1)),
                     lo - MAX_WIDEN * width)
            hi = min(max(hi, _snap_out(hi, float(finite[:, axis].max()) + 0.05 * width, width, 1)),
                     hi + MAX_WIDEN * width)
        out.append((lo, hi))
    return out[0], out[1]


def _snap_out(edge: float, value: float, width: float, direction: int) -> float:
    """``value`` moved outward (``direction`` −1: down, +1: up) from ``edge`` to the next multiple of
    ``VIEW_STEP``·``width`` beyond ``edge``; ``edge`` itself when ``value`` is inside."""
    beyond = (value - edge) * direction
    if beyond <= 0:
        return edge
    return edge + direction * math.ceil(beyond / (VIEW_STEP * width)) * VIEW_STEP * width


def tuned_text(entry) -> str:
    """``lr=0.01234`` (``lr×=2.5`` for an lr-free method's multiplier), or why nothing was tuned."""
    if not entry.best_params:
        return "every trial failed"
    parts = []
    for key, value in entry.best_params.items():
        name = "lr multiplier" if key == "lr" and entry.lr_free else key
        parts.append(f"{name}={fmt_num(value)}")
    return ", ".join(parts)


class TrajectoryCanvas:
    """One figure of ``problem``'s contours over one view, on which trajectories are drawn in turn: the
    contours, colour bar and minima are drawn once, and each :meth:`draw` adds a trajectory, its markers, legend
    and title, saves, and takes them off again (the gallery draws a figure per optimizer, mostly on the same
    view of each function)."""

    def __init__(self, problem, view):
        import torch

        from optbench.report.style import pyplot

        self.plt = pyplot()
        self.problem, self.view = problem, view
        (x_lo, x_hi), (y_lo, y_hi) = view
        xs, ys = np.meshgrid(np.linspace(x_lo, x_hi, GRID), np.linspace(y_lo, y_hi, GRID))
        grid = torch.from_numpy(np.stack([xs, ys], axis=-1))
        with torch.no_grad():
            z = problem.loss(grid).numpy()
        f_min = problem.f_min if problem.f_min is not None else float(np.nanmin(z))
        logz = np.log10(np.maximum(z - f_min, 0.0) + LOG_FLOOR)
        self.fig, ax = self.plt.subplots(figsize=(6.0, 5.6), dpi=DPI)
        filled = ax.contourf(xs, ys, logz, levels=30, cmap="viridis", alpha=0.9)
        ax.contour(xs, ys, logz, levels=15, colors="white", linewidths=0.4, alpha=0.5)
        bar = self.fig.colorbar(filled, ax=ax, shrink=0.85)
        bar.set_label(f"log₁₀(f − f* + {LOG_FLOOR:g})")
        ax.grid(False)
        ax.set_xlim(x_lo, x_hi)
        ax.set_ylim(y_lo, y_hi)
        ax.set_xlabel("x₀")
        ax.set_ylabel("x₁")
        # lay the figure out once, with a title of the two lines every figure's title has, then keep that
        # layout: the per-figure artists sit inside the axes, so laying out again would place nothing elsewhere
        # and costs most of a figure's drawing time (measuring every tick label)
        ax.set_title("optimizer\nfinal loss", fontsize=10)
        self.fig.canvas.draw()
        self.fig.set_layout_engine("none")
        self.ax = ax
        self.background = None  # the pixels of the figure without its per-figure artists (PNG figures)

    def draw(self, path: np.ndarray, entry, dest: Path) -> Path:
        """Draw ``path`` [T, 2] of ``entry`` into ``dest`` (png or svg by its suffix), written atomically."""
        import io

        from optbench.results import atomic_write_bytes

        ax, problem = self.ax, self.problem
        added = []
        finite = path[np.isfinite(path).all(axis=1)]
        if len(finite):
            added += ax.plot(finite[:, 0], finite[:, 1], "-", color="#D55E00", lw=1.4, zorder=3)
            added += ax.plot(finite[:, 0], finite[:, 1], ".", color="#D55E00", ms=3.5, zorder=3)
            added += ax.plot(*finite[0], "o", ms=9, mfc="white", mec="black", zorder=5, label="start")
            added += ax.plot(*finite[-1], "D", ms=8, mfc="#D55E00", mec="black", zorder=5, label="end")
        for m in problem.minima_points:
            added += ax.plot(m[0], m[1], "*", ms=15, mfc="gold", mec="black", zorder=4,
                             label="minimum" if m is problem.minima_points[0] else None)
        legend = ax.legend(loc="best", fontsize=8, framealpha=0.8)
        status = "" if entry.status == "done" else f" · {entry.status}"
        ax.set_title(f"{entry.optimizer} on {problem.name}: {tuned_text(entry)}\n"
                     f"final loss {fmt_num(entry.final_loss)} · distance to minimum {fmt_num(entry.dist_to_min)} · "
                     f"{entry.steps} steps{status}", fontsize=10)
        buffer = io.BytesIO()
        try:
            if dest.suffix == ".png" and self.blit:
                self._blit_png(added + [legend, ax.title], buffer)
            else:
                self.fig.savefig(buffer, format=dest.suffix.lstrip("."), dpi=DPI)
        finally:
            for artist in added:
                artist.remove()
            legend.remove()
        atomic_write_bytes(dest, buffer.getvalue())
        return dest

    blit = True  # PNG: draw only the per-figure artists over the kept background (False: savefig, the same bytes)

    def _blit_png(self, artists, buffer) -> None:
        """The PNG ``savefig`` would write, made by drawing only ``artists`` (trajectory, markers, legend, title)
        over the pixels of the rest of the figure, rendered once per canvas: a third of a full redraw's time.
        The same pixels and the same file as ``savefig`` (the same PNG writer and metadata): every per-figure
        artist lies above the contours and the layout is fixed, so drawing them last changes nothing."""
        from matplotlib import image

        canvas = self.fig.canvas
        if self.background is None:
            title = self.ax.title.get_text()
            self.ax.title.set_text("")
            hidden = [a for a in artists[:-1] if a.get_visible()]
            for artist in hidden:
                artist.set_visible(False)
            canvas.draw()
            self.background = canvas.copy_from_bbox(self.fig.bbox)
            for artist in hidden:
                artist.set_visible(True)
            self.ax.title.set_text(title)
        canvas.restore_region(self.background)
        for artist in sorted(artists[:-2], key=lambda a: a.get_zorder()):
            self.ax.draw_artist(artist)
        self.ax.draw_artist(artists[-2])  # the legend, then the title: above everything, as savefig draws them
        self.ax.draw_artist(artists[-1])
        image.imsave(buffer, canvas.buffer_rgba(), format="png", origin="upper", dpi=self.fig.dpi)

    def close(self) -> None:
        self.plt.close(self.fig)


def draw_trajectory(problem, path: np.ndarray, entry, dest: Path) -> Path:
    """Draw ``path`` [T, 2] (the coordinates at every step) of ``entry`` on ``problem``'s contours into ``dest``
    (png or svg by its suffix), written atomically: one :class:`TrajectoryCanvas` for one figure."""
    canvas = TrajectoryCanvas(problem, view_bounds(problem.bounds, path))
    try:
        return canvas.draw(path, entry, dest)
    finally:
        canvas.close()


class Canvases:
    """The canvases of the last ``CANVASES_KEPT`` views drawn (problem × view, most recently used kept): a
    gallery draws most figures of a function on the same few views, so their contours are drawn once."""

    def __init__(self):
        self.open: dict = {}

    def draw(self, problem, path: np.ndarray, entry, dest: Path) -> Path:
        """:func:`draw_trajectory`'s figure of ``path`` [T, 2] of ``entry`` into ``dest``, on a kept canvas."""
        key = (problem.label, view_bounds(problem.bounds, path))
        canvas = self.open.pop(key, None) or TrajectoryCanvas(problem, key[1])
        self.open[key] = canvas  # most recently used last
        try:
            return canvas.draw(path, entry, dest)
        finally:
            if len(self.open) > CANVASES_KEPT:
                self.open.pop(next(iter(self.open))).close()

    def close(self) -> None:
        for canvas in self.open.values():
            canvas.close()
        self.open.clear()


def draw_trajectories(problem, items) -> None:
    """Draw each ``(path, entry, dest)`` of ``items`` on ``problem``'s contours (:func:`draw_trajectory`'s
    figures), drawing the contours once per distinct view (the last few kept open: :class:`Canvases`)."""
    canvases = Canvases()
    try:
        for path, entry, dest in items:
            canvases.draw(problem, path, entry, dest)
    finally:
        canvases.close()


def _rows(outcome, problem_label: str) -> list:
    entries = [e for e in outcome.entries if e.problem == problem_label]
    return sorted(entries, key=lambda e: (e.rank is None, e.rank or 0, e.optimizer))


def _budget_line(outcome) -> str:
    s = outcome.settings
    clip = f", gradients clipped to norm {s['clip_norm']:g}" if s.get("clip_norm") else ""
    free = sorted({e.optimizer for e in outcome.entries if e.gradient_free})
    if clip and free:  # they form their direction from loss values: no gradient to clip
        clip += f" (not {', '.join(free)}: gradient-free, they never see a gradient)"
    return (f"Every optimizer: protocol {s['protocol']}, {s['trials']} trials × {s['steps']} steps per function "
            f"(equal budgets; lr log-uniform in [1e-5, 10], lr-free methods their multiplier in [0.1, 10]){clip}, "
            f"{s['dtype']}. Ranked by the final loss of the best configuration re-run from the same start.")


def index_markdown(outcome, problems) -> str:
    """The gallery's index as Markdown: one ranking table per function, then the skipped optimizers."""
    lines = ["# Optimizer gallery", "", _budget_line(outcome), ""]
    for problem in problems:
        lines += [f"## {problem.label}", "", "| rank | optimizer | tuned | final loss | distance to minimum | "
                  "status | figure |", "|---:|---|---|---:|---:|---|---|"]
        for e in _rows(outcome, problem.label):
            figure = f"[figure]({e.figure})" if e.figure else "—"
            lines.append(f"| {e.rank or '—'} | {e.optimizer} | {tuned_text(e)} | {fmt_num(e.final_loss)} | "
                         f"{fmt_num(e.dist_to_min)} | {e.status} | {figure} |")
        lines.append("")
    if outcome.skipped:
        lines += ["## Not in the gallery", "", "| optimizer | why |", "|---|---|"]
        lines += [f"| {s.optimizer} | {s.reason.replace('|', '/')} |" for s in outcome.skipped]
        lines.append("")
    return "\n".join(lines)


def index_html(outcome, problems) -> str:
    """The gallery's index as one HTML page: per function a ranking table and the figures in rank order."""
    esc = html.escape
    parts = ["<!doctype html><html><head><meta charset='utf-8'><title>Optimizer gallery</title><style>",
             "body{font-family:system-ui,sans-serif;margin:2em;max-width:1400px}"
             "table{border-collapse:collapse;margin:1em 0}td,th{border:1px solid #ccc;padding:3px 8px}"
             "td.n{text-align:right;font-variant-numeric:tabular-nums}"
             ".grid{display:flex;flex-wrap:wrap;gap:8px}.grid figure{margin:0;width:330px}"
             ".grid img{width:330px}.grid figcaption{font-size:12px}",
             "</style></head><body><h1>Optimizer gallery</h1>", f"<p>{esc(_budget_line(outcome))}</p>",
             "<p>" + " · ".join(f"<a href='#{esc(p.name)}'>{esc(p.label)}</a>" for p in problems)
             + (" · <a href='#skipped'>not in the gallery</a>" if outcome.skipped else "") + "</p>"]
    for problem in problems:
        rows = _rows(outcome, problem.label)
        parts.append(f"<h2 id='{esc(problem.name)}'>{esc(problem.label)}</h2><table><tr><th>rank</th>"
                     "<th>optimizer</th><th>tuned</th><th>final loss</th><th>distance to minimum</th><th>status</th>"
                     "</tr>")
        for e in rows:
            name = f"<a href='{esc(e.figure)}'>{esc(e.optimizer)}</a>" if e.figure else esc(e.optimizer)
            parts.append(f"<tr><td class='n'>{e.rank or '—'}</td><td>{name}</td><td>{esc(tuned_text(e))}</td>"
                         f"<td class='n'>{fmt_num(e.final_loss)}</td><td class='n'>{fmt_num(e.dist_to_min)}</td>"
                         f"<td>{esc(e.status)}</td></tr>")
        parts.append("</table><div class='grid'>")
        for e in rows:
            if e.figure:
                parts.append(f"<figure><a href='{esc(e.figure)}'><img loading='lazy' src='{esc(e.figure)}' "
                             f"alt='{esc(e.optimizer)} on {esc(problem.name)}'></a><figcaption>{e.rank or '—'}. "
                             f"{esc(e.optimizer)}: {fmt_num(e.final_loss)}</figcaption></figure>")
        parts.append("</div>")
    if outcome.skipped:
        parts.append("<h2 id='skipped'>Not in the gallery</h2><table><tr><th>optimizer</th><th>why</th></tr>")
        parts += [f"<tr><td>{esc(s.optimizer)}</td><td>{esc(s.reason)}</td></tr>" for s in outcome.skipped]
        parts.append("</table>")
    parts.append("</body></html>")
    return "\n".join(parts)



