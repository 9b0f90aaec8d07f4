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
