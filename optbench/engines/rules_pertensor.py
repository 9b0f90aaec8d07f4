"""Batched rules of methods with per-tensor statistics: optbench's paper-faithful LAMB (``lamb-paper``) and
pytorch_optimizer's StableAdamW, SCION, SCIONLight, StableSPAM, SGDSaI, TAM, RACS and ROSE.

Same contract as :mod:`optbench.engines.batched_rules` (registered into its ``RULES`` table): ``x`` and ``g`` are
``[K, P]``, float hyperparameters ``[K, 1]`` tensors, strings and booleans shared by the group. Every rule here
takes a statistic per parameter tensor (a norm, an RMS, a maximum, a row or column scale, an orthogonalised
matrix), so every rule needs ``LAYERS`` and reduces one tensor at a time over the layout, in the class's order;
on an analytic problem the layout is one 1-D tensor. Each follows the code path the loop engine's class object
takes on a CPU (the ``foreach`` path where the class enables it there, else the per-parameter loop), operation
for operation; ``tests/test_engine_contract.py`` checks each against the class to 1e-8 in float64 on analytic
problems and on small networks, and ``tests/test_rules_pertensor.py`` against its paper's formula written
independently in plain torch.
"""

from __future__ import annotations

import torch

from optbench.engines.batched_rules import LAYERS, _rule


def _zeros(x):
    return torch.zeros_like(x)


def _tensors(x, layout):
    """Column slices ``[K, size]`` of ``x`` per parameter tensor of the layout (views), with each tensor's shape."""
    return list(zip(x.split(layout.sizes, dim=-1), layout.shapes))


def _per_tensor(values: torch.Tensor, layout, reduce) -> torch.Tensor:
    """``reduce`` (a ``[K, n] -> [K]`` reduction) of each parameter tensor's columns: ``[K, L]``."""
    if layout.single:
        return reduce(values)[:, None]
    return torch.stack([reduce(part) for part in values.split(layout.sizes, dim=-1)], dim=-1)


# ---- LAMB, as in the paper ------------------------------------------------------------------------------

@_rule("lamb-paper", needs=[LAYERS])
class _LambPaper:
    """LAMB as printed (optbench.optimizers.paper.LambPaper; You et al. 2020, "Large Batch Optimization for Deep
    Learning: Training BERT in 76 minutes", Algorithm 2 with φ(z) = z), parameter tensor by parameter tensor:
    m ← β₁m + (1 − β₁)g, v ← β₂v + (1 − β₂)g², r = (m/(1 − β₁ᵗ))/(√(v/(1 − β₂ᵗ)) + ε), u = r + λx, and with
    the norms of that tensor x ← x − η·‖x‖/‖u‖·u (ratio 1 where ‖x‖ = 0 or ‖u‖ = 0, as the authors' code).
    Deviations from the paper: none (the class is written from it; the ratio's 0/0 convention is the one the
    paper leaves open)."""

    slots = staticmethod(lambda hp: 2)  # exp_avg, exp_avg_sq

    @staticmethod
    def init(x, hp):
        return {"m": _zeros(x), "v": _zeros(x)}

    @staticmethod
    def step(x, g, state, hp, t):
        lr, beta1, beta2 = hp["lr"], hp["beta1"], hp["beta2"]
        layout = state["layout"]
        m, v = state["m"], state["v"]
        m.copy_(torch.addcmul(m * beta1, 1 - beta1, g))  # m.mul_(β₁).add_(g, alpha=1 − β₁)
        v.mul_(beta2).addcmul_((1 - beta2) * g, g)
        r = (m / (1 - beta1 ** t)) / ((v / (1 - beta2 ** t)).sqrt() + hp["eps"])
        update = torch.addcmul(r, hp["weight_decay"], x)  # r.add(x, alpha=λ)
        weight_norm, update_norm = layout.norms(x), layout.norms(update)
        trust = torch.where((weight_norm > 0) & (update_norm > 0), weight_norm / update_norm, 1.0)
        x.sub_(update * (lr * layout.spread(trust)))


# ---- StableAdamW ----------------------------------------------------------------------------------------

@_rule("stableadamw", needs=[LAYERS])
class _StableAdamW:
    """StableAdamW (pytorch_optimizer.StableAdamW; Wortsman et al. 2023, "Stable and low-precision training for
    large-scale vision-language models", Algorithm 1), foreach path, per parameter tensor: with the debiased
    decays β̂₁ = β₁(1 − β₁^(t−1))/(1 − β₁ᵗ) and β̂₂ likewise, m ← β̂₁m + (1 − β̂₁)g, v ← β̂₂v + (1 − β̂₂)g² (so m
    and v are the bias-corrected averages, m = g at t = 1); the update-clipping RMS of the tensor,
    R = max(1, √mean(g²/max(v, ε²))), gives η_t = η/R; decoupled decay x ← x(1 − λη_t) (coupled with
    ``weight_decouple=False``: g ← g + λx first, the decay then not scaled); x ← x − η_t·m/(√v + ε).
    Deviations from the paper: none in the update (the paper's Algorithm 1 has the same debiased β̂ and RMS
    clip; its ε inside the RMS is ε², as here); coupled decay is a library option. ``kahan_sum`` only acts on
    float16/bfloat16 parameters (Kahan-compensated update); the engines run float32 or float64, where the class
    keeps no compensation buffer and the flag has no effect."""

    slots = staticmethod(lambda hp: 2)  # exp_avg, exp_avg_sq (kahan_comp is None outside float16/bfloat16)

    @staticmethod
    def init(x, hp):
        return {"m": _zeros(x), "v": _zeros(x)}

    @staticmethod
    def step(x, g, state, hp, t):
        lr, beta1, beta2, wd, eps = hp["lr"], hp["beta1"], hp["beta2"], hp["weight_decay"], hp["eps"]
        layout = state["layout"]
        if not hp["weight_decouple"]:
            g = torch.addcmul(g, wd, x)  # grad.add_(p, alpha=λ)
        b1n, b2n = beta1 ** t, beta2 ** t
        beta1_comp = 1.0 - (b1n - beta1) / (b1n - 1.0)
        beta2_hat = (b2n - beta2) / (b2n - 1.0)
        m, v = state["m"], state["v"]
        m.lerp_(g, beta1_comp)
        v.mul_(beta2_hat).addcmul_((1.0 - beta2_hat) * g, g)
        eps_p2 = eps * eps
        ratio = g.pow(2) / v.clip(min=eps_p2)
        rms = _per_tensor(ratio, layout, lambda r: r.mean(-1).sqrt().clip(min=1.0))
        step_size = -lr / layout.spread(rms)
        if hp["weight_decouple"]:
            x.mul_(1.0 + wd * step_size)
        denom = (v.sqrt() + eps) / step_size
        x.add_(m / denom)
