"""Batched rules of pytorch_optimizer's Schedule-Free SGD and Schedule-Free RAdam (Defazio et al. 2024).

Same contract as :mod:`optbench.engines.batched_rules` (registered into its ``RULES`` table; ``x`` and ``g`` are
``[K, d]``, float hyperparameters ``[K, 1]`` tensors). Both are ``REPORTED`` rules, like Schedule-Free AdamW
there: they train at y (``x`` here), keep the base sequence z, and report x = y + (1 − 1/β)(z − y), which is
what the class's ``eval()`` puts into the parameters (``p.lerp_(z, 1 − 1/β)``) and what the loop engine records.
Each mirrors the class's foreach code path (the one it takes for dense real tensors) operation for operation:
the per-step scalars the class computes as Python floats (warm-up, ρ_t and r_t, lr_max, the averaging weight c_t)
are float64 ``[K, 1]`` tensors whatever the run's dtype, rounded to it where they meet a parameter-sized tensor, as
a Python float is. Every option of both classes is reproduced.

Defazio, Yang, Mehta, Mishchenko, Khaled & Cutkosky 2024, "The Road Less Scheduled" (arXiv:2405.15682).
"""

from __future__ import annotations

import torch

from optbench.engines.batched_rules import REPORTED, _rule


def _scalars(x) -> torch.dtype:
    """The dtype of the per-step scalars the classes keep as Python floats: float64 (MPS has none: float32)."""
    return torch.float32 if x.device.type == "mps" else torch.float64


def _averaging_weight(lr, state, hp, t):
    """The class's c_t: η_max ← max(η_max, η_t), w_t = t^r η_max^p, W ← W + w_t, c_t = w_t/W (0 while W = 0)."""
    state["lr_max"] = lr_max = torch.maximum(lr, state["lr_max"])
    weight = (t ** hp["r"].to(lr.dtype)) * lr_max ** hp["weight_lr_power"].to(lr.dtype)
    state["weight_sum"] = weight_sum = state["weight_sum"] + weight
    return torch.where(weight_sum != 0, weight / weight_sum, torch.zeros_like(weight))


def _schedule_free_update(x, u, z, lr, checkpoint, beta):
    """``_apply_schedule_free_update`` of the library (after its weight decay): y ← lerp(y, z, c_t),
    y ← y + η_t(β(1 − c_t) − 1)u, z ← z − η_t u. The scalars are float64 ``[K, 1]`` columns (the class's Python
    floats), each rounded to the run's dtype where it meets a tensor, as a Python float does."""
    x.lerp_(z, checkpoint.to(x.dtype))
    x.add_((lr * (beta.to(lr.dtype) * (1.0 - checkpoint) - 1.0)).to(x.dtype) * u)
    z.sub_(lr.to(x.dtype) * u)


def _init(x):
    column = torch.zeros_like(x[:, :1], dtype=_scalars(x))  # lr_max and weight_sum: Python floats in the class
    return {"z": x.clone(), "v": torch.zeros_like(x), "weight_sum": column.clone(), "lr_max": column - 1.0}


@_rule("schedulefree-sgd", needs=[REPORTED])
class _ScheduleFreeSGD:
    """Schedule-Free SGD (pytorch_optimizer.ScheduleFreeSGD; Defazio et al. 2024, Algorithm 1 with SGD as the
    base method), training at y with base sequence z and momentum β (``momentum``): at step t,
    η_t = η·min(1, t/warmup_steps), η_max = max(η_max, η_t), c_t = t^r η_max^p / Σ_{i≤t} i^r η_max,i^p
    (p = weight_lr_power); u = g + λy (coupled decay at y, as the class; the paper decays at y too);
    y ← (1 − c_t)y + c_t z + η_t(β(1 − c_t) − 1)u, z ← z − η_t u. Reported: x = y + (1 − 1/β)(z − y).
    The paper writes the same recursion with x_t = (1 − c_t)x_{t−1} + c_t z_t, y_t = (1 − β)z_t + βx_t;
    the library keeps y and z only (x recovered by ``eval()``), as this rule does. ``eps`` is unused by the class."""

    slots = staticmethod(lambda hp: 1)  # z

    @staticmethod
    def init(x, hp):
        return _init(x)

    @staticmethod
    def step(x, g, state, hp, t):
        warmup = hp["warmup_steps"].to(_scalars(x))
        lr = hp["lr"].to(warmup.dtype) * torch.where(t < warmup, t / warmup, torch.ones_like(warmup))
        checkpoint = _averaging_weight(lr, state, hp, t)
        u = g + hp["weight_decay"] * x
        _schedule_free_update(x, u, state["z"], lr, checkpoint, hp["momentum"])

    @staticmethod
    def reported(x, state, hp):
        return torch.lerp(x, state["z"], 1.0 - 1.0 / hp["momentum"])


@_rule("schedulefree-radam", needs=[REPORTED])
class _ScheduleFreeRAdam:
    """Schedule-Free RAdam (pytorch_optimizer.ScheduleFreeRAdam; the schedule_free repository's RAdam variant of
    Defazio et al. 2024), no warm-up: RAdam's rectification replaces it. With ρ∞ = 2/(1 − β₂) − 1,
    ρ_t = ρ∞ − 2tβ₂ᵗ/(1 − β₂ᵗ) and, while ρ_t ≥ 4, r_t = √((1 − β₂ᵗ)(ρ_t − 4)/(ρ∞ − 4)·(ρ_t − 2)/ρ_t·ρ∞/(ρ∞ − 2)):
    η_t = ηr_t/√(1 − β₂ᵗ) when ρ_t > 4; in the SGD phase (ρ_t < 4) η_t = 0 with ``silent_sgd_phase`` (only v
    moves) else η_t = 1 (the class's ``float(not silent_sgd_phase)``, not η); at ρ_t = 4 exactly η_t = 0.
    v ← β₂v + (1 − β₂)g²; u = g/(√v/√(1 − β₂ᵗ) + ε) when ρ_t > 4, else u = g; u ← u + λy; then c_t from η_t
    as Schedule-Free SGD (η_max, t^r η_max^p) and y ← lerp(y, z, c_t) + η_t(β₁(1 − c_t) − 1)u, z ← z − η_t u.
    Reported: x = y + (1 − 1/β₁)(z − y). Deviation of the library from the paper's AdamW form: no warm-up
    schedule, the rectified step size instead (as the reference implementation of the authors)."""

    slots = staticmethod(lambda hp: 2)  # z, exp_avg_sq

    @staticmethod
    def init(x, hp):
        return _init(x)

    @staticmethod
    def step(x, g, state, hp, t):
        beta1, beta2 = hp["beta1"], hp["beta2"]
        # the class's Python floats: in float64, as ρ_t = ρ∞ − 2tβ₂ᵗ/(1 − β₂ᵗ) cancels to ≈ t (in float32 ρ₅ would
        # be off by 1e-2, and r_t with it)
        beta2_64 = beta2.to(_scalars(x))
        bias_correction2_sq = (1.0 - beta2_64 ** t) ** 0.5
        # BaseOptimizer.get_rectify_step_size(is_rectify=True, n_sma_threshold=4, degenerated_to_sgd=False)
        n_sma_max = 2.0 / (1.0 - beta2_64) - 1.0
        beta2_t = beta2_64 ** t
        n_sma = n_sma_max - 2 * t * beta2_t / (1.0 - beta2_t)
        rt = ((1.0 - beta2_t) * (n_sma - 4) / (n_sma_max - 4) * (n_sma - 2) / n_sma * n_sma_max
              / (n_sma_max - 2)).clamp_min(0.0).sqrt()
        lr = hp["lr"].to(beta2_64.dtype) * torch.where(n_sma >= 4, rt, -1.0)
        sgd_phase = torch.full_like(lr, float(not hp["silent_sgd_phase"]))
        rectified = n_sma > 4.0
        lr = torch.where(lr < 0.0, sgd_phase, torch.where(rectified, lr / bias_correction2_sq, lr))
        checkpoint = _averaging_weight(lr, state, hp, t)
        v = state["v"]
        v.mul_(beta2).add_((1.0 - beta2) * g * g)
        u = torch.where(rectified, g / (v.sqrt() / bias_correction2_sq.to(x.dtype) + hp["eps"]), g)
        u = u + hp["weight_decay"] * x
        _schedule_free_update(x, u, state["z"], lr, checkpoint, beta1)

    @staticmethod
    def reported(x, state, hp):
        return torch.lerp(x, state["z"], 1.0 - 1.0 / hp["beta1"])
