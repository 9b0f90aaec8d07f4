"""The gradient noise scale estimator recovers B_simple = tr(Σ)/|G|² on the noisy quadratic model, whose
per-example gradient covariance is H = diag(i^-power)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from optbench.noise_scale import analytic_sampler, estimate_noise_scale, noise_scale_from_norms, true_noise_scale
from optbench.problems import get_problem


@pytest.mark.parametrize("power, b_small, b_big, x_scale", [(1.0, 1, 16, 1.0), (2.0, 2, 64, 0.3),
                                                               (0.5, 4, 32, 2.0)])
def test_recovers_true_noise_scale(power, b_small, b_big, x_scale):
    problem = get_problem(f"noisy-quadratic(dim=30, power={power})")
    x = x_scale * torch.linspace(1.0, -0.5, 30, dtype=torch.float64)
    h = torch.arange(1, 31, dtype=torch.float64) ** -power
    truth = float(h.sum() / ((h * x) ** 2).sum())
    assert true_noise_scale(problem, x) == pytest.approx(truth, rel=1e-12)
    est = estimate_noise_scale(analytic_sampler(problem, x, seed=1), b_small, b_big, pairs=600)
    assert abs(est.b_simple - truth) < 4 * est.stderr
    assert est.stderr < 0.15 * truth  # the error bar is informative
    assert est.trace_sigma == pytest.approx(float(h.sum()), rel=0.2)


def test_error_bars_are_calibrated():
    """Over independent repetitions, about 68% of the ±1 stderr intervals cover the truth."""
    problem = get_problem("noisy-quadratic(dim=10)")
    x = torch.ones(10, dtype=torch.float64)
    truth = true_noise_scale(problem, x)
    covered = [abs((e := estimate_noise_scale(analytic_sampler(problem, x, seed=s), 1, 8, 200)).b_simple - truth)
               <= e.stderr for s in range(40)]
    assert 0.45 <= np.mean(covered) <= 0.9


def test_exact_norms_give_exact_value():
    # E|G_B|² = |G|² + tr(Σ)/B with |G|² = 2, tr(Σ) = 6: B_simple = 3
    small = np.array([2 + 6 / 1, 2 + 6 / 1 + 1e-9])
    big = np.array([2 + 6 / 4, 2 + 6 / 4])
    est = noise_scale_from_norms(small, big, 1, 4)
    assert est.b_simple == pytest.approx(3.0) and est.grad_sq == pytest.approx(2.0)
    with pytest.raises(ValueError):
        noise_scale_from_norms(small, big, 4, 1)


def _bs_lr_summary(noise_scale):
    """A batch-size × lr summary (two seeds per cell) whose best final loss stops improving after B = 32."""
    import pandas as pd

    rows = []
    best = {8: 1.0, 16: 0.3, 32: 0.1, 64: 0.09, 128: 0.088}
    for bs, loss in best.items():
        for lr, factor in ((0.01, 3.0), (0.1, 1.0), (1.0, 10.0)):
            for seed in (0, 1):
                rows.append({"family": "p", "optimizer_label": "sgd+noise-scale(every=10)", "batch_size": bs,
                             "lr": lr, "seed": seed, "final_loss": loss * factor, "f_min": 0.0,
                             "status": "diverged" if (lr == 1.0 and bs == 8) else "done",
                             "noise_scale": np.nan if lr == 1.0 else noise_scale * (1 + 0.1 * seed)})
    return pd.DataFrame(rows)


def test_report_marks_predicted_and_measured_critical_batch(tmp_path, monkeypatch):
    from optbench.report import grids as g

    summary = _bs_lr_summary(40.0)
    (grid,) = g.grids(summary, "final_loss")
    assert grid.noise_scale == pytest.approx(42.0)  # median over the runs that carry an estimate
    # log-gap improvement from B=8 (log 1.0) to the best (log 0.088): 90% of it is first reached at B=32
    assert grid.measured_critical_batch() == 32
    drawn, save = {}, g.save

    def keep(fig, stem, formats, dpi):
        drawn.update({line.get_label(): line.get_ydata()[0] for line in fig.axes[0].get_lines()})
        return save(fig, stem, formats, dpi)

    monkeypatch.setattr(g, "save", keep)
    (png,) = g.heatmap(grid, tmp_path, formats=("png",), dpi=60)
    assert png.exists() and png.stat().st_size > 5000
    predicted = [k for k in drawn if k.startswith("predicted critical batch")]
    measured = [k for k in drawn if k.startswith("measured critical batch: 32")]
    assert len(predicted) == 1 and len(measured) == 1 and "42" in predicted[0]
    bss = [8, 16, 32, 64, 128]
    assert drawn[predicted[0]] == pytest.approx(2 + np.log(42 / 32) / np.log(2))  # between rows 32 and 64
    assert drawn[predicted[0]] == pytest.approx(g.batch_row(bss, 42.0))
    assert drawn[measured[0]] == 2
    # beyond the grid: drawn on its edge, and the label says so
    (far,) = g.grids(_bs_lr_summary(5000.0), "final_loss")
    drawn.clear()
    g.heatmap(far, tmp_path, formats=("png",), dpi=60)
    (label,) = [k for k in drawn if k.startswith("predicted")]
    assert "above the grid" in label and drawn[label] == pytest.approx(len(bss) - 0.55)


def test_report_without_estimates_draws_no_marker(tmp_path, monkeypatch):
    from optbench.report import grids as g

    summary = _bs_lr_summary(40.0).drop(columns=["noise_scale"])
    (grid,) = g.grids(summary, "final_loss")
    assert np.isnan(grid.noise_scale)
    labels = []
    monkeypatch.setattr(g, "save", lambda fig, *a: labels.extend(x.get_label() for x in fig.axes[0].get_lines()))
    g.heatmap(grid, tmp_path, formats=("png",), dpi=60)
    assert labels and not any("critical" in x for x in labels)
