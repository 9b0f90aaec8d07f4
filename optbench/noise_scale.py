"""The gradient noise scale B_simple = tr(Σ)/|G|² (McCandlish et al. 2018, "An Empirical Model of
Large-Batch Training", §2.2 and appendix A), estimated from gradients at two batch sizes.

With G the true gradient and Σ the per-example gradient covariance, a mini-batch gradient G_B of batch
size B has E|G_B|² = |G|² + tr(Σ)/B. From |G_small|² and |G_big|² measured at B_small < B_big:

    |G|²  ≈ (B_big |G_big|² − B_small |G_small|²) / (B_big − B_small)
    tr(Σ) ≈ (|G_small|² − |G_big|²) / (1/B_small − 1/B_big)

Both are unbiased per pair of measurements; B_simple is the ratio of their means over ``n`` independent
pairs (as the paper does: the ratio of averages, not the average of ratios). The error bar is the
delta-method standard error of that ratio. B_simple estimates the critical batch size: above it, larger
batches give diminishing returns in steps.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class NoiseScale:
    b_simple: float  # tr(Σ)/|G|²
    stderr: float  # standard error of b_simple (delta method over the pairs)
    trace_sigma: float  # tr(Σ), per-example
    grad_sq: float  # |G|²
    pairs: int


def noise_scale_from_norms(sq_small, sq_big, b_small: int, b_big: int) -> NoiseScale:
    """B_simple from ``n`` paired squared norms |G_small|², |G_big|² (arrays of equal length n ≥ 2)."""
    small, big = np.asarray(sq_small, np.float64), np.asarray(sq_big, np.float64)
    if not b_small < b_big:
        raise ValueError(f"need b_small < b_big, got {b_small} and {b_big}")
    if small.shape != big.shape or small.size < 2:
        raise ValueError("need two equal-length arrays of at least 2 squared norms")
    g2 = (b_big * big - b_small * small) / (b_big - b_small)
    s = (small - big) / (1.0 / b_small - 1.0 / b_big)
    n = small.size
    mg, ms = g2.mean(), s.mean()
    cov = np.cov(np.stack([s, g2]), ddof=1) / n  # covariance of the two means
    ratio = ms / mg
    var = (cov[0, 0] - 2 * ratio * cov[0, 1] + ratio**2 * cov[1, 1]) / mg**2
    return NoiseScale(float(ratio), float(math.sqrt(max(var, 0.0))), float(ms), float(mg), n)


def estimate_noise_scale(sample_grad: Callable[[int, int], object], b_small: int, b_big: int,
                         pairs: int = 200) -> NoiseScale:
    """B_simple from ``sample_grad(batch_size, i)``: the flat mini-batch gradient (a tensor or array) of
    the ``i``-th independent draw at that batch size. Works for any problem that can draw batches."""
    sq_small = np.empty(pairs)
    sq_big = np.empty(pairs)
    for i in range(pairs):
        sq_small[i] = float((_flat(sample_grad(b_small, 2 * i)) ** 2).sum())
        sq_big[i] = float((_flat(sample_grad(b_big, 2 * i + 1)) ** 2).sum())
    return noise_scale_from_norms(sq_small, sq_big, b_small, b_big)


def _flat(g) -> np.ndarray:
    if hasattr(g, "detach"):
        g = g.detach().double().cpu().numpy()
    return np.asarray(g, np.float64).reshape(-1)


def analytic_sampler(problem, x, seed: int = 0):
    """``sample_grad`` for an analytic problem with batch-size-dependent gradient noise (noisy-quadratic):
    the exact gradient at ``x`` plus the problem's noise at the requested batch size."""
    import torch

    from optbench.problems import get_problem

    if not problem.has_batch_size:
        raise ValueError(f"{problem.name} has no batch size, so its gradient noise does not depend on one")
    x = torch.as_tensor(x, dtype=torch.float64)
    grad = problem.grad(x)
    stds: dict[int, torch.Tensor] = {}

    def sample(batch_size: int, i: int):
        if batch_size not in stds:
            stds[batch_size] = get_problem(problem.spec, batch_size=batch_size).noise_std(dtype=torch.float64)
        gen = torch.Generator().manual_seed(seed * 1_000_003 + i)
        return grad + stds[batch_size] * torch.randn(grad.shape, generator=gen, dtype=torch.float64)

    return sample


def true_noise_scale(problem, x) -> float:
    """tr(Σ)/|G|² from the problem's own per-example noise variance (batch size 1) and exact gradient."""
    import torch

    from optbench.problems import get_problem

    x = torch.as_tensor(x, dtype=torch.float64)
    var = get_problem(problem.spec, batch_size=1).noise_std(dtype=torch.float64) ** 2
    return float(var.sum() / (problem.grad(x) ** 2).sum())
