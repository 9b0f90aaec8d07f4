"""Colours, markers and fonts shared by every figure of a report; the only place matplotlib is set up."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from optbench.formatting import fmt_num  # noqa: F401  (re-exported for the report modules)

# Okabe–Ito (colour-blind safe) without its black, then tab10 extras: an optimizer keeps its entry across every
# figure. Black and the X marker are not in it: an X (black-edged) is the glyph that means "diverged".
COLORS = ("#0072B2", "#D55E00", "#009E73", "#CC79A7", "#E69F00", "#56B4E9", "#882255", "#8C564B",
          "#7F7F7F", "#BCBD22", "#17BECF", "#9467BD")
MARKERS = ("o", "s", "^", "D", "v", "P", "d", "<", ">", "h", "*", "p")
DIVERGED_MARKER = "X"

RC: dict[str, Any] = {
    "font.size": 10, "axes.titlesize": 11, "axes.labelsize": 10, "legend.fontsize": 9,
    "xtick.labelsize": 9, "ytick.labelsize": 9, "axes.grid": True, "grid.alpha": 0.3,
    "axes.spines.top": False, "axes.spines.right": False, "figure.constrained_layout.use": True,
    "legend.frameon": True, "legend.framealpha": 0.85, "savefig.bbox": "standard",
}
FIG_SIZE = (6.4, 4.2)  # inches: a single-column figure at paper size
FIG_WIDE = (10.0, 4.2)  # two panels side by side
DIVERGED_COLOR = "#B0B0B0"


@dataclass(frozen=True)
class OptStyle:
    color: str
    marker: str


def palette(labels) -> dict[str, OptStyle]:
    """One colour and marker per optimizer label, from the sorted order of every label in the report."""
    out = {}
    for i, label in enumerate(sorted(set(map(str, labels)))):
        out[label] = OptStyle(COLORS[i % len(COLORS)], MARKERS[(i + i // len(COLORS)) % len(MARKERS)])
    return out


def fit_legend(fig, handles, *, max_cols: int = 4, **kwargs):
    """A legend below the axes ("outside lower center") with as many columns as fit inside the figure's width:
    every entry stays visible. Fewer columns first, then a smaller font; returns the legend."""
    handles = list(handles)
    fontsize = kwargs.pop("fontsize", None) or RC["legend.fontsize"]
    legend = None
    for size in (fontsize, fontsize * 0.85, fontsize * 0.7):
        for ncol in range(max(1, min(max_cols, len(handles))), 0, -1):
            if legend is not None:
                legend.remove()
            legend = fig.legend(handles=handles, loc="outside lower center", ncol=ncol, fontsize=size, **kwargs)
            if legend_inside(fig, legend):
                return legend
    return legend


LINE_WIDTH = 1.8  # pt: a profile's or ECDF's curve
LAYER_STEP = 2.4  # pt: how much wider a curve is than the equal curve drawn over it


def layered(curves: list, every: int) -> list[dict]:
    """Line width and marker positions for curves drawn on one axes (``curves``: the y values of each, in
    drawing order). Curves that are equal everywhere (optimizers that behave alike) would hide all but the last
    drawn: within each group of equal curves the earlier are drawn wider, ``LAYER_STEP`` each, so every one
    shows as a band around the next, and their markers start at staggered offsets along the line. Other curves
    keep ``LINE_WIDTH``."""
    keys = [tuple(np.round(np.asarray(c, dtype=float), 12)) for c in curves]
    out = []
    for i, key in enumerate(keys):
        group = [j for j, k in enumerate(keys) if k == key]
        later = sum(j > i for j in group)
        out.append({"linewidth": LINE_WIDTH + LAYER_STEP * later,
                    "markevery": ((group.index(i) * every) // len(group), every)})
    return out


def legend_inside(fig, legend) -> bool:
    """Whether the legend, as drawn, lies within the figure's bounds (0.5 px of slack)."""
    fig.canvas.draw()
    box, frame = legend.get_window_extent(), fig.bbox
    return (box.x0 >= frame.x0 - 0.5 and box.x1 <= frame.x1 + 0.5 and box.y0 >= frame.y0 - 0.5
            and box.y1 <= frame.y1 + 0.5)


def pyplot():
    """matplotlib.pyplot on the Agg backend with the report's fonts (no display needed)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    plt.rcParams.update(RC)
    return plt


def save(fig, stem, formats, dpi: int) -> list:
    """Save a static figure in each format (png, svg, pdf) as ``stem.<fmt>``; returns the paths."""
    paths = []
    for fmt in formats:
        path = stem.with_name(f"{stem.name}.{fmt}")  # appended: a stem's own dot (``noise_0.1``) is no suffix
        fig.savefig(path, dpi=dpi, format=fmt)
        paths.append(path)
    import matplotlib.pyplot as plt

    plt.close(fig)
    return paths


def safe_name(text: str) -> str:
    """A file-name-safe slug of a problem or optimizer label. Dots stay only before a digit (numbers such as
    ``100.0``): in a user reference (``my_task.py:make``) ``with_suffix`` would take ``.py:make`` for a suffix,
    and two problems of one file would write one file."""
    import re

    slug = re.sub(r"[^A-Za-z0-9._-]+", "_", re.sub(r"\.(?!\d)", "_", text)).strip("_")
    return slug or "x"
