"""Colours, markers and fonts shared by every figure of a report; the only place matplotlib is set up."""

from __future__ import annotations

from dataclasses import dataclass

from optbench.formatting import fmt_num  # noqa: F401  (re-exported for the report modules)

# Okabe–Ito (colour-blind safe), then tab10 extras: an optimizer keeps its entry across every figure.
COLORS = ("#0072B2", "#D55E00", "#009E73", "#CC79A7", "#E69F00", "#56B4E9", "#000000", "#8C564B",
          "#7F7F7F", "#BCBD22", "#17BECF", "#9467BD")
MARKERS = ("o", "s", "^", "D", "v", "P", "X", "<", ">", "h", "*", "p")

RC = {
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
        path = stem.with_suffix(f".{fmt}")
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
