"""The gallery's figures and index (``optbench gallery``, :mod:`optbench.gallery`): one trajectory on the
function's contours per function × optimizer, and the ranking per function as Markdown and HTML.

A figure shows the contours of log₁₀(f − f* + 10⁻³) over the problem's plot bounds (widened to keep the whole
trajectory in view, at most to twice their width), the trajectory of the best configuration with every step
marked, the start (white circle), the global minimum (gold star) and the end (black-edged diamond); the title
names the optimizer, its tuned values and the final loss with the distance to the minimum.
"""

from __future__ import annotations

import html
from pathlib import Path

import numpy as np

from optbench.formatting import fmt_num

LOG_FLOOR = 1e-3  # log10(f - f* + LOG_FLOOR): the valley floor stays visible without -inf
GRID = 220  # contour grid points per axis
MAX_WIDEN = 0.5  # the view may grow by this share of the plot bounds' width on each side


def view_bounds(bounds, path: np.ndarray) -> tuple[tuple[float, float], tuple[float, float]]:
    """The plot bounds, widened to include the finite points of ``path`` [T, 2], by at most ``MAX_WIDEN`` of
    their width on each side (a trajectory that leaves further is cut at the frame)."""
    out = []
    finite = path[np.isfinite(path).all(axis=1)] if len(path) else path
    for axis, (lo, hi) in enumerate(bounds[:2]):
        width = hi - lo
        if len(finite):
            lo = max(min(lo, float(finite[:, axis].min()) - 0.05 * width), lo - MAX_WIDEN * width)
            hi = min(max(hi, float(finite[:, axis].max()) + 0.05 * width), hi + MAX_WIDEN * width)
        out.append((lo, hi))
    return out[0], out[1]


def tuned_text(entry) -> str:
    """``lr=0.01234`` (``lr×=2.5`` for an lr-free method's multiplier), or why nothing was tuned."""
    if not entry.best_params:
        return "every trial failed"
    parts = []
    for key, value in entry.best_params.items():
        name = "lr multiplier" if key == "lr" and entry.lr_free else key
        parts.append(f"{name}={fmt_num(value)}")
    return ", ".join(parts)


def draw_trajectory(problem, path: np.ndarray, entry, dest: Path) -> Path:
    """Draw ``path`` [T, 2] (the coordinates at every step) of ``entry`` on ``problem``'s contours into ``dest``
    (png or svg by its suffix), written atomically."""
    import io

    import torch

    from optbench.report.style import pyplot
    from optbench.results import atomic_write_bytes

    plt = pyplot()
    (x_lo, x_hi), (y_lo, y_hi) = view_bounds(problem.bounds, path)
    xs, ys = np.meshgrid(np.linspace(x_lo, x_hi, GRID), np.linspace(y_lo, y_hi, GRID))
    grid = torch.from_numpy(np.stack([xs, ys], axis=-1))
    with torch.no_grad():
        z = problem.loss(grid).numpy()
    f_min = problem.f_min if problem.f_min is not None else float(np.nanmin(z))
    logz = np.log10(np.maximum(z - f_min, 0.0) + LOG_FLOOR)
    fig, ax = plt.subplots(figsize=(6.0, 5.6))
    filled = ax.contourf(xs, ys, logz, levels=30, cmap="viridis", alpha=0.9)
    ax.contour(xs, ys, logz, levels=15, colors="white", linewidths=0.4, alpha=0.5)
    bar = fig.colorbar(filled, ax=ax, shrink=0.85)
    bar.set_label(f"log₁₀(f − f* + {LOG_FLOOR:g})")
    ax.grid(False)
    finite = path[np.isfinite(path).all(axis=1)]
    if len(finite):
        ax.plot(finite[:, 0], finite[:, 1], "-", color="#D55E00", lw=1.4, zorder=3)
        ax.plot(finite[:, 0], finite[:, 1], ".", color="#D55E00", ms=3.5, zorder=3)
        ax.plot(*finite[0], "o", ms=9, mfc="white", mec="black", zorder=5, label="start")
        ax.plot(*finite[-1], "D", ms=8, mfc="#D55E00", mec="black", zorder=5, label="end")
    for m in problem.minima_points:
        ax.plot(m[0], m[1], "*", ms=15, mfc="gold", mec="black", zorder=4,
                label="minimum" if m is problem.minima_points[0] else None)
    ax.set_xlim(x_lo, x_hi)
    ax.set_ylim(y_lo, y_hi)
    ax.set_xlabel("x₀")
    ax.set_ylabel("x₁")
    ax.legend(loc="best", fontsize=8, framealpha=0.8)
    status = "" if entry.status == "done" else f" · {entry.status}"
    ax.set_title(f"{entry.optimizer} on {problem.name}: {tuned_text(entry)}\n"
                 f"final loss {fmt_num(entry.final_loss)} · distance to minimum {fmt_num(entry.dist_to_min)} · "
                 f"{entry.steps} steps{status}", fontsize=10)
    buffer = io.BytesIO()
    fig.savefig(buffer, format=dest.suffix.lstrip("."), dpi=90)
    plt.close(fig)
    atomic_write_bytes(dest, buffer.getvalue())
    return dest


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



