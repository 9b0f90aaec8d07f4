"""Output people can read (issue #14, second part): heatmaps whose lines never cover a value and whose panels share
one colour scale, tune's progress, checks whose labels differ only in how a path was spelled, race frames."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

LRS = [1e-3, 3.2e-3, 1e-2, 3.2e-2, 0.1, 0.32, 1.0]
BATCHES = [1, 4, 16, 64, 256]


def _summary(optimizers=("sgd", "adam"), scaled=True, noise_scale=True) -> pd.DataFrame:
    """A bs × lr summary whose best lr moves two columns per batch size (traces cross the cells diagonally), with
    linear-scaled runs of the first optimizer from three base lrs (a recipe traced on its heatmap)."""
    rows = []
    for k, name in enumerate(optimizers):
        for b_i, b in enumerate(BATCHES):
            for lr in LRS:
                best = LRS[min(2 * b_i, len(LRS) - 1)] * (1 + k)
                for seed in range(2):
                    rows.append({"family": "noisy-quadratic", "problem": f"noisy-quadratic(batch_size={b})",
                                 "optimizer": name, "optimizer_label": name, "batch_size": b, "lr": lr, "seed": seed,
                                 "status": "done", "f_min": 0.0, "hparams": json.dumps({"lr": lr}), "recipe": "{}",
                                 "final_loss": (1 + k) * (0.01 + np.log(lr / best) ** 2) * (1 + 0.01 * seed),
                                 "noise_scale": 30.0 if noise_scale else np.nan})
    if scaled:
        for b in BATCHES:
            for base in (0.01, 0.032, 0.1):
                lr = base * b / 4
                rows.append({**rows[0], "optimizer_label": f"{optimizers[0]}+linear-scaling(base_batch_size=4)",
                             "batch_size": b, "lr": lr, "hparams": json.dumps({"lr": lr}),
                             "recipe": json.dumps({"lr_scaling": "linear", "base_batch_size": 4}),
                             "recipe_name": "linear-warmup", "final_loss": 0.05 + abs(np.log(base / 0.032))})
    return pd.DataFrame(rows)


def _heatmap_figures(monkeypatch, summary, **kwargs):
    """Every heatmap the report code draws from ``summary``, as open figures (saving is skipped)."""
    from optbench.report import grids as g

    figures = []
    monkeypatch.setattr(g, "save", lambda fig, stem, formats, dpi: figures.append(fig) or [])
    found = g.grids(summary, "final_loss")
    comps = g.rule_comparisons(summary, found)
    compared = {(c.tuned.problem, c.rule) for c in comps}  # the scaled runs: drawn in the comparison instead
    for grid in [grid for grid in found if (grid.problem, grid.optimizer) not in compared]:
        g.heatmap(grid, Path("."), formats=["png"], dpi=60, rules=[c for c in comps if c.tuned is grid], **kwargs)
    return found, comps, figures


def _line_pieces(line):
    """A line's drawn pieces in display coordinates (NaN breaks a line into pieces)."""
    xy = line.get_transform().transform(np.column_stack(line.get_data()).astype(float))
    pieces, current = [], []
    for p in xy:
        if np.isfinite(p).all():
            current.append(p)
        elif current:
            pieces.append(np.array(current))
            current = []
    return pieces + ([np.array(current)] if current else [])


def test_heatmap_lines_and_edge_labels_never_cover_a_cell_value(monkeypatch):
    from matplotlib.path import Path as MplPath

    found, comps, figures = _heatmap_figures(monkeypatch, _summary())
    assert comps, "the synthetic summary should hold a recipe to trace"
    checked = 0
    for fig in figures:
        fig.canvas.draw()
        renderer = fig.canvas.get_renderer()
        ax = fig.axes[0]
        values = [t for t in ax.texts if t.get_text()]
        assert len(values) == len(LRS) * len(BATCHES)  # one text per cell, nothing else written over the cells
        cells = ax.get_window_extent(renderer)
        for text in values:
            box = text.get_window_extent(renderer)
            for line in ax.lines:
                if line.get_linestyle() in ("None", "none", "", " "):
                    continue
                for piece in _line_pieces(line):
                    assert len(piece) < 2 or not MplPath(piece).intersects_bbox(box, filled=False), \
                        (text.get_text(), line.get_label())
                    checked += 1
        for other in fig.axes[1:]:  # the colour bar and the right-hand axis of off-grid recipe lrs
            for label in other.get_yticklabels():
                if label.get_text():
                    assert not label.get_window_extent(renderer).overlaps(cells), label.get_text()
    assert checked > 100


def test_heatmaps_of_one_problem_share_one_colour_scale_by_default(monkeypatch, tmp_path):
    from optbench.report import build as b
    from optbench.report import grids as g

    summary = _summary(scaled=False)
    drawn = []
    monkeypatch.setattr(g, "save", lambda fig, stem, formats, dpi: drawn.append(fig) or [])

    class Data:
        steps = pd.DataFrame({"run_id": []})
        display = {"sgd": "sgd", "adam": "adam"}

        def short(self, label):
            return label

    for scale in ("shared", "each"):
        drawn.clear()
        builder = b.Builder([tmp_path], tmp_path, formats=["png"], figures=["grids"], frames=2, fps=1, dpi=50,
                            title=None, all_lrs=False, metric="final_loss", heatmap_scale=scale)
        builder.data, builder.fig_dir, builder.table_dir = Data(), tmp_path, tmp_path
        builder.data.summary = summary
        (section,) = g.grids_section(builder)
        norms = {(fig.axes[0].images[0].norm.vmin, fig.axes[0].images[0].norm.vmax) for fig in drawn}
        assert len(drawn) == 2
        labels = [fig.axes[1].get_ylabel() for fig in drawn]
        if scale == "shared":
            assert len(norms) == 1  # one colour range for both optimizers' heatmaps
            values = g.color_scale(g.grids(summary, "final_loss"))
            assert norms == {(values.vmin, values.vmax)}
            assert all("one scale for the 2 grids" in label for label in labels)
            assert "share one colour scale" in section.note
        else:
            assert len(norms) == 2
            assert all("own scale" in label for label in labels)


def test_heatmap_and_rule_titles_use_display_labels():
    from optbench.report import grids as g

    summary = _summary()
    found = g.grids(summary, "final_loss")
    comps = g.rule_comparisons(summary, found)
    caption = g.comparison_caption(comps[0], label=lambda full: "SHORT")
    assert caption.startswith("noisy-quadratic, SHORT:")


# ---- tune: one progress class, study i/N and trials done/total, phases of --report, plurals -----------------

def _terminal():
    import io

    from rich.console import Console

    buf = io.StringIO()
    return buf, Console(file=buf, force_terminal=True, width=100, color_system=None)


def test_trial_progress_says_which_study_and_how_many_trials(monkeypatch):
    from optbench.cli.progress import TrialProgress

    monkeypatch.delenv("CI", raising=False)
    buf, console = _terminal()
    with TrialProgress(10, 2, quiet=False, console=console, delay_s=0) as progress:
        progress.begin_study(1, 2)
        progress.advance(3, failed=1)
        progress.bar.refresh()
    text = buf.getvalue()
    assert "study 1/2" in text and "3/10 trials" in text and "failed 1" in text
    buf, console = _terminal()
    with TrialProgress(10, 2, quiet=False, console=console, delay_s=0) as progress:  # processes in parallel
        progress.advance(4)
        progress.study_done()
        progress.bar.refresh()
    assert "studies 1/2 done" in buf.getvalue() and "4/10 trials" in buf.getvalue()
    for quiet, ci in ((True, ""), (False, "1")):  # -q and CI: nothing at all, as the run bar
        monkeypatch.setenv("CI", ci)
        buf, console = _terminal()
        with TrialProgress(10, 2, quiet=quiet, console=console, delay_s=0) as progress:
            progress.begin_study(1, 2)
            progress.advance(5)
        assert buf.getvalue() == "" and progress.bar is None


def test_a_long_first_step_still_shows_the_bar(monkeypatch):
    """The bar appears when its delay has passed even if no further update comes (a timer starts it)."""
    from optbench.cli.progress import LiveBar, PhaseProgress, SweepBar, TrialProgress

    monkeypatch.delenv("CI", raising=False)
    for make in (lambda c: PhaseProgress("report", console=c, delay_s=60),
                 lambda c: SweepBar(100, 4, False, console=c, delay_s=60),
                 lambda c: TrialProgress(10, 1, False, console=c, delay_s=60)):
        buf, console = _terminal()
        progress = make(console)
        assert isinstance(progress, LiveBar)  # one set of rules for every wait
        (progress("loading results", 0, 3) if isinstance(progress, PhaseProgress) else progress.advance(0))
        assert progress.bar is None and progress.timer is not None  # before the delay: nothing, a timer waits
        progress.timer.cancel()
        progress._start_later()  # what the timer does once the delay has passed
        progress.bar.refresh()
        progress.close()
        assert "0/" in buf.getvalue()


def test_tune_output_counts_plurals_and_reports_in_phases(monkeypatch, tmp_path):
    import io

    from rich.console import Console
    from typer.testing import CliRunner

    from optbench.cli import tune as tune_cli
    from optbench.cli.app import app

    buf = io.StringIO()
    monkeypatch.setattr(tune_cli, "console", Console(file=buf, width=80, color_system=None))
    phases = []

    class Recorder:
        def __init__(self, task, quiet=False):
            self.task = task

        def __call__(self, what, done, total):
            phases.append((self.task, what, done, total))

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            pass

    monkeypatch.setattr(tune_cli, "PhaseProgress", Recorder)
    result = CliRunner().invoke(app, ["tune", "-p", "rosenbrock", "-o", "adam", "--trials", "1", "--batch", "1",
                                      "--seeds", "1", "--steps", "20", "--out", str(tmp_path / "t"), "--report",
                                      "--report-figures", "curves", "--report-format", "png"])
    assert result.exit_code == 0, result.output
    text = buf.getvalue()
    assert "1 trial each" in text and "1 trials" not in text
    assert "over 1 fresh seed " in text and "1 fresh seeds" not in text
    assert "…" not in text  # at 80 columns the tuning table wraps, never cuts a number
    assert max(map(len, text.splitlines())) <= 80
    import re

    (record,) = json.loads((tmp_path / "t" / "manifest.json").read_text())["tuning"]
    from optbench.formatting import fmt_num

    best = fmt_num(record["studies"][0]["best_params"]["lr"])
    assert re.search(rf"lr={re.escape(best)}(?![\d.e])", text)  # the best lr, whole, on one line
    assert phases and phases[0][:2] == ("report", "loading results") and phases[-1][1] == "writing pages"


# ---- check: labels that differ only in how a path was spelled --------------------------------------------------

TINY_SUITE = '''
name = "tiny"
[[sweep]]
problems = ["rosenbrock"]
optimizers = ["adam"]
lr = [1e-3]
seeds = 1
steps = 20
[check]
mode = "exact"
branches = false
'''


def test_resolved_label_equates_spellings_of_one_file(tmp_path):
    from optbench.labels import resolved_label

    spellings = ["opt.py:MyAdam(lr=0.001)+cosine", "./opt.py:MyAdam(lr=0.001)+cosine",
                 "sub/../opt.py:MyAdam(lr=0.001)+cosine", f"{tmp_path}/opt.py:MyAdam(lr=0.001)+cosine"]
    assert len({resolved_label(s, root=tmp_path) for s in spellings}) == 1
    assert resolved_label("other.py:MyAdam(lr=0.001)+cosine", root=tmp_path) != resolved_label(spellings[0], tmp_path)
    for plain in ("adam(lr=0.001)", "my_pkg.optim:MyAdam", "sgd+cosine"):
        assert resolved_label(plain, root=tmp_path) == plain


def _in_user_folder(tmp_path, monkeypatch):
    """``tmp_path`` as the working directory, holding opt/adam.py and tiny.toml; user classes imported afresh
    (the in-process cache of user entries is keyed by the spelling, which other tests reuse for other files)."""
    import optbench.optimizers.user as user
    from tests.test_check_cli import ADAM

    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(user, "_CACHE", {})
    (tmp_path / "opt").mkdir()
    (tmp_path / "opt" / "adam.py").write_text(ADAM)
    (tmp_path / "tiny.toml").write_text(TINY_SUITE)


def test_check_treats_two_spellings_of_one_file_as_one_configuration(tmp_path, monkeypatch):
    from cli_invoke import invoke

    _in_user_folder(tmp_path, monkeypatch)
    base = invoke("baseline", "--suite", "tiny.toml", "--opt", "./opt/adam.py:MyAdam", "--out", "base")
    assert base.exit_code == 0, base.stderr
    assert "'tiny': 1 run in" in base.stdout  # not '1 runs'
    r = invoke("check", "--suite", "tiny.toml", "--opt", "opt/adam.py:MyAdam", "--against", "base", "--out", "new")
    assert r.exit_code == 0, r.stdout + r.stderr
    assert "OK: 5 checks over 1 configuration within tolerance" in " ".join(r.stdout.split())
    said = " ".join(r.stderr.split())
    assert "'opt/adam.py:MyAdam' and the baseline's './opt/adam.py:MyAdam' name the same file" in said


def test_check_of_other_configurations_fails_before_running_anything(tmp_path, monkeypatch):
    from cli_invoke import invoke

    from tests.test_check_cli import ADAM

    _in_user_folder(tmp_path, monkeypatch)
    (tmp_path / "opt" / "adam2.py").write_text(ADAM)
    assert invoke("baseline", "--suite", "tiny.toml", "--opt", "opt/adam.py:MyAdam", "--out", "base",
                  "-q").exit_code == 0
    r = invoke("check", "--suite", "tiny.toml", "--opt", "opt/adam2.py:MyAdam", "--against", "base", "--out", "new")
    assert r.exit_code == 2, r.stdout + r.stderr
    assert "do not cover the same configurations" in r.stderr and "opt/adam2.py:MyAdam" in r.stderr
    assert not (tmp_path / "new").exists()  # nothing was run


# ---- terminal tables at 80 columns ------------------------------------------------------------------------------

def test_table_notes_count_learning_rates_and_seeds_per_configuration():
    from tests.test_readable import _render, _table

    table = _table(["sgd", "sgd+warmup-constant(warmup=0.05)+linear-scaling(base_batch_size=4)"], batch_sizes=(4,))
    table["lrs_tried"] = [13, 5]  # the grid's optimizer and a recipe's five base lrs
    table["seeds"] = [3, 5]
    text = " ".join(_render(table, 80).split())
    assert "best of 5–13 learning rates per optimizer" in text and "best of 13 learning rates" not in text
    assert "medians over 3–5 seeds" in text
    table["lrs_tried"], table["seeds"] = 2, 1
    text = " ".join(_render(table, 80).split())
    assert "best of 2 learning rates per optimizer" in text and "medians over" not in text


# ---- races: an optimizer that left the view stays visible ------------------------------------------------------

def test_race_head_of_a_run_that_left_the_view_is_drawn_whole_on_the_edge():
    from optbench.problems import get_problem
    from optbench.report.animate import Scene, Track, render_frames
    from optbench.report.style import palette

    problem = get_problem("saddle")
    y_hi = float(problem.bounds[1][1])
    steps = np.arange(20)
    escaping = np.column_stack([np.full(20, 0.1), np.linspace(0.0, 3 * y_hi, 20)])  # leaves through the top
    staying = np.column_stack([np.linspace(1.0, 0.5, 20), np.zeros(20)])
    styles = palette(["a", "b"])
    tracks = [Track("a", steps, escaping, styles["a"]), Track("b", steps, staying, styles["b"])]
    scene = Scene(problem, tracks, title="saddle", dpi=50)
    frames = render_frames(scene, steps)
    head = scene.heads[0]
    assert tuple(np.ravel(head.get_data())) == pytest.approx((0.1, y_hi))  # waits on the top edge
    assert not head.get_clip_on()  # the whole marker, not the half inside the axes
    # pixels of its colour just above the top edge of the axes (the half that clipping hid)
    from matplotlib.colors import to_rgb

    rgb = np.array(to_rgb(styles["a"].color)) * 255
    image = np.asarray(frames[-1].convert("RGB")).astype(float)
    x, y = scene.ax.transData.transform((0.1, y_hi))
    top = int(scene.fig.bbox.height - y)
    above = image[max(0, top - 4): top - 1, int(x) - 3: int(x) + 4]
    assert (np.abs(above - rgb).sum(axis=-1) < 60).any()
    scene.close()


# ---- performance profile and ECDF: every optimizer visible, also where curves coincide --------------------------

@pytest.fixture(scope="module")
def alike_results(tmp_path_factory):
    """Two problems × three optimizers, two of which compute the same updates (adam and adamw without weight
    decay): their curves coincide."""
    from optbench.optimizers import get_optimizer
    from optbench.problems import get_problem
    from optbench.runner import run_sweep
    from optbench.sweep.spec import Sweep

    out = tmp_path_factory.mktemp("alike")
    sweep = Sweep([get_problem("rosenbrock"), get_problem("valley(kappa=10)")],
                  [get_optimizer(s) for s in ("adam(lr=0.05)", "adamw(lr=0.05, weight_decay=0.0)", "sgd(lr=0.001)")],
                  seeds=[0, 1], steps=150)
    run_sweep(sweep, out)
    return out


@pytest.mark.parametrize("figure", ["performance_profile", "ecdf"])
def test_every_optimizer_is_visible_in_profiles_even_when_curves_coincide(alike_results, tmp_path, monkeypatch,
                                                                          figure):
    from matplotlib.colors import to_rgb

    from optbench.report import profiles
    from optbench.report.data import load

    drawn = []
    monkeypatch.setattr(profiles, "save", lambda fig, stem, formats, dpi: drawn.append(fig) or [])
    data = load([alike_results])
    getattr(profiles, figure)(data, tmp_path, formats=["png"], dpi=100)
    (fig,) = drawn
    fig.canvas.draw()
    image = np.asarray(fig.canvas.buffer_rgba())[..., :3].astype(float)
    box = fig.axes[0].bbox
    height = image.shape[0]
    body = image[int(height - box.y1) - 4: int(height - box.y0) + 4, int(box.x0) - 4: int(box.x1) + 4]  # the axes
    labels = sorted(data.summary["optimizer_label"].unique())
    assert len(labels) == 3
    for label in labels:
        rgb = np.array(to_rgb(data.styles[label].color)) * 255
        assert (np.abs(body - rgb).sum(axis=-1) < 40).sum() > 20, (figure, label)
    renderer = fig.canvas.get_renderer()
    title = fig.axes[0].title.get_window_extent(renderer)
    assert title.x0 >= 0 and title.x1 <= fig.bbox.x1 + 0.5  # the title is not cut at the figure's edge
