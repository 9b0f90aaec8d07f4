"""Output people can read (issue #14): short labels with a key, tables that never cut a number, legends inside
their figures, GIF colours equal to the report's, numbers sorted as numbers, honest counts, help as written."""

from __future__ import annotations

import io
import re

import numpy as np
import pandas as pd
import pytest

from optbench.labels import display_labels, label_key, natural_key

LONG = ["sgd", "sgd-momentum", "adam",
        "sgd+warmup-constant(warmup=0.05)+linear-scaling(base_batch_size=4)",
        "sgd-momentum+warmup-constant(warmup=0.05)+linear-scaling(base_batch_size=4)",
        "adam+warmup-constant(warmup=0.05)+linear-scaling(base_batch_size=4)",
        "adam+warmup-constant(warmup=0.05)+sqrt-scaling(base_batch_size=4)",
        "sgd-momentum(momentum=0.8164881154026615)+cosine(min_lr=9.895687569711005e-06)",
        "sgd-momentum(momentum=0.9)+cosine(min_lr=1e-05)",
        "rmsprop(alpha=0.99)+clip-norm=1.0"]


# ---- display labels ------------------------------------------------------------------------------------------

def test_display_labels_are_short_distinct_and_keyed():
    display = display_labels(LONG)
    assert set(display) == set(LONG)
    assert len(set(display.values())) == len(LONG)  # distinct configurations never read the same
    assert display["sgd"] == "sgd"
    assert display[LONG[3]] == "sgd+warmup-constant+linear-scaling"  # warmup=0.05, base_batch_size=4: shared
    assert display[LONG[7]] == "sgd-momentum(momentum=0.8165)+cosine(min_lr=9.896e-06)"
    assert display[LONG[8]] == "sgd-momentum(momentum=0.9)+cosine(min_lr=1e-05)"
    for short in display.values():
        for number in re.findall(r"\d+\.\d+(?:e-?\d+)?", short):
            assert len(re.sub(r"e.*|[^\d]", "", number).lstrip("0")) <= 4
    assert dict((s, f) for s, f in label_key(display)) == {s: f for f, s in display.items() if s != f}


def test_display_labels_keep_apart_values_equal_to_four_digits():
    a, b = "adam(beta1=0.123456)", "adam(beta1=0.1234567)"
    display = display_labels([a, b])
    assert display[a] != display[b]
    assert display_labels(["adam(beta1=0.9)"]) == {"adam(beta1=0.9)": "adam"}  # nothing differs: the name


def test_natural_sort_of_problem_sections():
    from optbench.analysis.summary import rank

    problems = [f"noisy-quadratic(batch_size={b})" for b in (1, 1024, 16, 256, 4, 64)]
    table = pd.DataFrame({"problem": problems, "diverged": 0, "final_loss": 1.0, "best_loss": 1.0,
                          "steps_to_target": np.nan, "reached": 0, "f_min": 0.0})
    order = list(dict.fromkeys(rank(table)["problem"]))
    assert order == [f"noisy-quadratic(batch_size={b})" for b in (1, 4, 16, 64, 256, 1024)]
    assert sorted(["b=10", "b=9.5", "b=1e-3"], key=natural_key) == ["b=1e-3", "b=9.5", "b=10"]


# ---- terminal tables -----------------------------------------------------------------------------------------

def _table(labels, batch_sizes=(1, 1024)):
    rows = []
    rng = np.random.default_rng(0)
    for bs in batch_sizes:
        for k, label in enumerate(labels):
            rows.append({"problem": f"noisy-quadratic(batch_size={bs})", "optimizer_label": label,
                         "lr": float(10 ** rng.uniform(-4, 0)), "batch_size": bs, "seeds": 3,
                         "final_loss": [2.323e-05, 0.006017, 1.9e-50, 123456.7, 0.08847][k % 5],
                         "best_loss": 0.006017, "dist_to_min": 2.588, "steps_to_target": float(k * 37 + 1),
                         "reached": 2, "diverged": 0, "escaped": 0, "status": "2 done, 1 diverged",
                         "target": 0.002594, "f_min": 0.0, "rank": k + 1, "lrs_tried": 13,
                         "state_bytes_per_param": 16.0, "train_step_time_s": 1.25e-5, "overhead_vs_sgd": 3.43})
    table = pd.DataFrame(rows)
    table["batch_size"] = table["batch_size"].astype("Int64")
    return table


def _render(table, width: int) -> str:
    from rich.console import Console

    from optbench.cli.tables import render_summary

    buf = io.StringIO()
    render_summary(table, Console(file=buf, width=width, color_system=None, emoji=False, highlight=False))
    return buf.getvalue()


@pytest.mark.parametrize("width", [40, 60, 80, 100, 120, 140])
def test_no_number_is_ever_cut(width):
    from optbench.formatting import fmt_num

    table = _table(LONG)
    text = _render(table, width)
    assert "…" not in text
    assert max(map(len, text.splitlines())) <= width
    flat = text.replace("\n", " ")
    for _, r in table.iterrows():  # the essential numbers, whole, in every layout
        for value in (fmt_num(r["lr"], 3), fmt_num(r["final_loss"])):
            assert re.search(rf"(?<![\d.]){re.escape(value)}(?![\d.e])", flat), (value, width)
    if width >= 140:
        assert "3.43×" in text and "not shown" not in text  # room: nothing dropped


def test_table_names_dropped_columns_and_prints_the_label_key():
    text = _render(_table(LONG), 80)
    assert "not shown at 80 columns" in " ".join(text.split())
    assert "labels (short = full" in text
    flat = re.sub(r"\s+", "", text)
    for short, full in label_key(display_labels(LONG)):  # every shortened label is in the key, with its full one
        assert re.sub(r"\s+", "", f"{short}={full}") in flat


def test_json_records_carry_display_and_full_labels():
    from optbench.cli.tables import summary_records

    records = summary_records(_table(LONG, batch_sizes=(4,)))
    by_full = {r["optimizer_label"]: r["display_label"] for r in records}
    assert by_full == display_labels(LONG)


# ---- figures ---------------------------------------------------------------------------------------------------

def test_palette_has_no_black_and_no_diverged_glyph():
    from optbench.report.style import COLORS, DIVERGED_MARKER, MARKERS, palette

    assert "#000000" not in COLORS and DIVERGED_MARKER not in MARKERS
    styles = palette([f"opt{i}" for i in range(12)])
    assert all(s.color.upper() != "#000000" and s.marker != "X" for s in styles.values())


@pytest.mark.parametrize("n", [1, 4, 7, 10])
def test_legend_inside_figure_with_every_entry(n):
    from optbench.report.style import FIG_SIZE, fit_legend, legend_inside, pyplot

    plt = pyplot()
    fig, ax = plt.subplots(figsize=FIG_SIZE, dpi=60)
    lines = [ax.plot([0, 1], [i, i + 1], label=f"{label}, lr=0.0126, bs=1024")[0] for i, label in
             enumerate(LONG[:n])]
    legend = fit_legend(fig, lines, max_cols=3)
    assert legend_inside(fig, legend)
    assert [t.get_text() for t in legend.get_texts()] == [line.get_label() for line in lines]
    plt.close(fig)


def test_gif_colours_equal_the_report_colours(tmp_path):
    from PIL import Image

    from optbench.report.animate import write_gif
    from optbench.report.style import COLORS

    # a smooth background (a landscape) and a few small patches of each optimizer's colour, as in a race
    w, h = 120, 90
    yy, xx = np.mgrid[0:h, 0:w]
    base = np.stack([xx * 2, yy * 2, 255 - xx], axis=-1).clip(0, 255).astype(np.uint8)
    frames = []
    for f in range(3):
        img = base.copy()
        for i, c in enumerate(COLORS[:7]):
            rgb = [int(c[j:j + 2], 16) for j in (1, 3, 5)]
            img[5 + 12 * i:8 + 12 * i, 10 + 20 * f:13 + 20 * f] = rgb
        frames.append(Image.fromarray(img).convert("RGBA"))
    path = tmp_path / "race.gif"
    write_gif(frames, path, fps=10, colors=COLORS[:7])
    with Image.open(path) as gif:
        for f in range(3):
            gif.seek(f)
            got = np.array(gif.convert("RGB"))
            for i, c in enumerate(COLORS[:7]):
                rgb = [int(c[j:j + 2], 16) for j in (1, 3, 5)]
                assert got[6 + 12 * i, 11 + 20 * f].tolist() == rgb, (c, f)


def test_header_counts_what_the_runs_cross():
    from optbench.report.build import sweep_shape

    rows = [{"family": "noisy-quadratic", "problem": f"nq(batch_size={b})", "batch_size": b,
             "optimizer_label": o, "lr": lr * (b if "+" in o else 1), "seed": s}
            for b in (1, 4, 16) for o in ("sgd", "sgd+linear-scaling") for lr in (0.1, 0.2) for s in (0, 1, 2)]
    text = sweep_shape(pd.DataFrame(rows))
    assert text == "1 problem at 3 batch sizes × 2 optimizer configurations × 2 learning rates × 3 seeds"
    one = pd.DataFrame([{"family": "saddle", "problem": "saddle", "batch_size": None, "optimizer_label": "adam",
                         "lr": 0.1, "seed": 0}])
    assert sweep_shape(one) == "1 problem × 1 optimizer configuration × 1 learning rate × 1 seed"


def test_sensitivity_needs_several_learning_rates():
    from optbench.report.sensitivity import applies

    one_each = pd.DataFrame({"optimizer_label": ["adam", "sgd"], "batch_size": [None, None], "lr": [0.1, 0.2]})
    assert not applies(one_each)
    assert applies(pd.concat([one_each, one_each.assign(lr=[0.3, 0.4])]))


# ---- waiting, help and messages ------------------------------------------------------------------------------

def test_phase_progress_says_what_and_how_far(monkeypatch):
    from rich.console import Console

    monkeypatch.delenv("CI", raising=False)  # bars are silent under CI

    from optbench.cli.progress import PhaseProgress

    buf = io.StringIO()
    console = Console(file=buf, force_terminal=True, width=100, color_system=None)
    with PhaseProgress("report", console=console, delay_s=0) as progress:  # the run bar's delay, here none
        progress("drawing curves", 3, 8)
    assert "report: drawing curves" in buf.getvalue() and "3/8" in buf.getvalue()
    quiet = io.StringIO()
    with PhaseProgress("report", quiet=True, console=Console(file=quiet, force_terminal=True)) as progress:
        progress("drawing curves", 3, 8)
    assert quiet.getvalue() == ""


def test_help_shows_suite_tables_and_no_flag_metavars():
    from tests.test_cli import cli

    baseline = cli("baseline", "--help")
    assert "[check]" in baseline.stdout, baseline.stdout
    report = cli("report", "--help")
    assert "<bool>" not in report.stdout and "--quiet" in report.stdout


def test_user_text_is_not_turned_into_emoji():
    from optbench.cli.common import console, err_console

    for c in (console, err_console):
        with c.capture() as cap:
            c.print("--device cuda:abc: :abc: [tune]", markup=False)
        assert ":abc:" in cap.get()
