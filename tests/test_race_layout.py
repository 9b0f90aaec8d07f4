"""The race animation's layout: the legend sits right under the axes, with no empty band between them.

Regression: the moving heads (unclipped markers without data until the first frame) had a marker-sized extent
at the figure's origin, which constrained layout reserved space for, leaving an all-white band of ~28% of
each 600 px frame between the x label and the legend.
"""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("matplotlib")
pytest.importorskip("PIL")

from optbench import get_problem  # noqa: E402
from optbench.report.animate import Scene, Track, frame_steps, render_frames  # noqa: E402
from optbench.report.style import OptStyle  # noqa: E402

COLORS = ["#E69F00", "#009E73", "#CC79A7", "#D55E00", "#0072B2"]


def _scene(n_tracks: int) -> Scene:
    tracks = [Track(f"optimizer-{i}, lr=0.01", np.arange(6), np.linspace([-1.2, 1.0], [0.2 * i, 0.5], 6),
                    OptStyle(COLORS[i % len(COLORS)], "o")) for i in range(n_tracks)]
    return Scene(get_problem("rosenbrock"), tracks, title="rosenbrock", dpi=100)


def _longest_blank_band(frame: np.ndarray) -> int:
    """Rows in the longest run of consecutive rows that are background (white) from edge to edge."""
    blank = (frame[..., :3] >= 250).all(axis=(1, 2))
    longest = run = 0
    for row_is_blank in blank.tolist():
        run = run + 1 if row_is_blank else 0
        longest = max(longest, run)
    return longest


@pytest.mark.parametrize("n_tracks", [1, 5])
def test_legend_sits_under_the_axes(n_tracks):
    scene = _scene(n_tracks)
    try:
        frames = render_frames(scene, frame_steps(scene.tracks, 3))
        renderer = scene.fig.canvas.get_renderer()
        legend_top = scene.fig.legends[0].get_window_extent(renderer).y1
        decorations_bottom = scene.ax.xaxis.label.get_window_extent(renderer).y0
        # pixels, origin at the bottom: the legend's top a few px under the x label, not a band away
        assert 0 <= decorations_bottom - legend_top <= 15
        assert scene.ax.get_tightbbox(renderer).y0 >= 0  # nothing of the axes' extent lies off the figure
        for frame in (frames[0], frames[-1]):
            image = np.asarray(frame)
            assert _longest_blank_band(image) <= 0.05 * image.shape[0]
    finally:
        scene.close()
