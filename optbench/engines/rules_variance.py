"""Batched rules of pytorch_optimizer's MARS, Adai and AdamS: methods whose step depends on more than the
coordinate's own gradient history (the previous gradient, or a mean over the whole model).

Same contract as :mod:`optbench.engines.batched_rules` (registered into its ``RULES`` table; ``x`` and ``g`` are
``[K, P]``, float hyperparameters ``[K, 1]`` tensors). Each mirrors the class's foreach code path (the one it
takes for dense real tensors; MARS's non-foreach path for ``mars_type='shampoo'``) operation for operation, and
every option of the three classes is reproduced.

- MARS treats each parameter tensor on its own (its correction is normalised by the tensor's norm, and vectors
  get an AdamW step unless ``optimize_1d``): ``LAYERS``, one tensor at a time.
- Adai and AdamS divide by a mean of the second moment over every parameter of the model: ``JOINT`` (all tensors
  in one step) and ``LAYERS`` (the mean is summed tensor by tensor, in the class's order). On an analytic problem
  the model is the one ``[d]`` vector, so the mean is over a row.
"""

from __future__ import annotations

import math
from typing import cast

import torch

from optbench.engines.batched_rules import JOINT, LAYERS, _rule

AMS_BOUND_EPS = 1e-15  # BaseOptimizer.apply_ams_bound's exp_avg_sq_eps, under the square root of every denominator
# MARS's shampoo type orthogonalises with zero_power_via_newton_schulz_5's defaults: 5 steps of these coefficients
# (in batched_rules_modern.NEWTON_SCHULZ_DTYPE["newton_schulz"], bfloat16, as Muon), with the group's eps as the
# lower bound of the norm
MARS_NEWTON_SCHULZ = ((3.4445, -4.7750, 2.0315),) * 5


def _tensors(x, layout):
    """Column slices ``[K, size]`` of ``x`` per parameter tensor of the layout (views), with each tensor's shape."""
    return list(zip(x.split(layout.sizes, dim=-1), layout.shapes))


def _cautious(update: torch.Tensor, grad: torch.Tensor) -> torch.Tensor:
    """``BaseOptimizer.apply_cautious`` on one parameter tensor's ``[K, n]`` columns: the mask of coordinates
    where update and gradient agree in sign, rescaled by n/(Σ mask + 1) per configuration."""
    mask = (update * grad > 0).to(grad.dtype)
    mask = mask * (mask.shape[-1] / (mask.sum(-1, keepdim=True) + 1))
    return update * mask


def _model_sum(values: torch.Tensor, layout, divisor) -> torch.Tensor:
    """Σ over parameter tensors of (Σ of the tensor's values)/divisor, per configuration ``[K, 1]``: the class's
    ``torch.stack([v.sum() / divisor for v in tensors]).sum()``."""
    parts = [part.sum(-1, keepdim=True) / divisor for part in values.split(layout.sizes, dim=-1)]
    return parts[0] if len(parts) == 1 else torch.cat(parts, dim=-1).sum(-1, keepdim=True)


@_rule("mars", needs=[LAYERS])
class _MARS:
    """MARS (pytorch_optimizer.MARS; Yuan et al. 2024, "MARS: Unleashing the Power of Variance Reduction for
    Training Large Models", Algorithm 1 with its AdamW, Lion and Shampoo instances), parameter tensor by
    parameter tensor. A tensor with ndim ≥ 2 (every tensor with ``optimize_1d``) gets the variance-reduced
    step with η, (β₁, β₂), λ = ``weight_decay``: c = g + γβ₁/(1 − β₁)·(g − g_prev), c ← c/max(1, ‖c‖) (the
    tensor's norm); m ← β₁m + (1 − β₁)c; u = m (``cautious``: u ← u·𝟙[u·g > 0]·n/(Σ𝟙 + 1)); then
    ``adamw``: v ← β₂v + (1 − β₂)c², u ← u(1 − β₂ᵗ)^½ / ((1 − β₁ᵗ)(√(v + 1e-15) + ε)) (AMSBound: max of v);
    ``lion``: u ← sign(u); ``shampoo`` (on matrices): u ← NS₅(u/(1 − β₁))·√max(1, m/n) (m, n the first two
    dimensions; a vector falls back to ``adamw``). Every other tensor (ndim 1, the default ``optimize_1d=False``,
    so every analytic problem) gets plain AdamW on g with η₁ = η·lr_1d/η₀ (η₀ the lr at construction, so a
    schedule scales both), ``betas_1d`` and λ₁ = ``weight_decay_1d``. Then decay (decoupled x ← x(1 − λη), η
    unscaled with ``fixed_decay``, or coupled g ← g + λx, which only changes the stored g_prev), x ← x − ηu,
    g_prev ← g (zero before the first step). Deviations from the paper's Algorithm 1: the library implements
    MARS-approx, the previous step's gradient g_prev in place of the gradient at the previous point on the current
    sample (one gradient per step); the clip of c to unit norm is per parameter tensor; ε is added before the
    bias correction of v (so it is ε/√(1 − β₂ᵗ) after it); vectors take the AdamW fallback unless ``optimize_1d``
    (as the authors' code)."""

    slots = staticmethod(lambda hp: 3 + int(hp["ams_bound"]))  # exp_avg, exp_avg_sq, last_grad (, max_exp_avg_sq)

    @staticmethod
    def init(x, hp):
        zeros = torch.zeros_like
        return {"m": zeros(x), "v": zeros(x), "vmax": zeros(x), "last": zeros(x), "base_lr": hp["lr"].clone()}

    @staticmethod
    def step(x, g, state, hp, t):
        layout = state["layout"]
        mars_type = hp["mars_type"]
        lr_1d = hp["lr"] * (hp["lr_1d"] / state["base_lr"])  # group['lr'] * group['lr_1d_factor']
        columns = zip(_tensors(x, layout), _tensors(g, layout), _tensors(state["m"], layout),
                      _tensors(state["v"], layout), _tensors(state["vmax"], layout), _tensors(state["last"], layout))
        for (p, shape), (grad, _), (m, _), (v, _), (vmax, _), (last, _) in columns:
            matrix = len(shape) >= 2
            mixed = hp["optimize_1d"] or matrix
            if mixed:
                lr, beta1, beta2, wd = hp["lr"], hp["beta1"], hp["beta2"], hp["weight_decay"]
                correction = (grad - last) * (hp["gamma"] * beta1 / (1.0 - beta1)) + grad
                correction = correction / torch.linalg.vector_norm(correction, dim=-1, keepdim=True).clamp_min(1.0)
            else:
                lr, beta1, beta2, wd = lr_1d, hp["betas_1d0"], hp["betas_1d1"], hp["weight_decay_1d"]
                correction = grad
            m.lerp_(correction, 1.0 - beta1)
            update = _cautious(m, grad) if hp["cautious"] else m.clone()
            if mixed and mars_type == "lion":
                update = update.sign()
            elif mixed and mars_type == "shampoo" and matrix:
                # imported here: batched_rules_modern may be the module whose import is registering this one
                from optbench.engines import batched_rules_modern

                dtype = batched_rules_modern.NEWTON_SCHULZ_DTYPE["newton_schulz"]
                rows = shape[0]
                eps = cast(float, hp["eps"][:, :, None].to(dtype))  # [K, 1, 1]: each configuration's bound
                scaled = (update * (1.0 / (1.0 - beta1))).reshape(-1, rows, update.shape[-1] // rows)
                ortho = batched_rules_modern.newton_schulz(scaled, MARS_NEWTON_SCHULZ, dtype, eps)
                update = (ortho * math.sqrt(max(1.0, rows / shape[1]))).reshape(update.shape).to(p.dtype)
            else:
                v.mul_(beta2).add_((1.0 - beta2) * correction * correction)
                if hp["ams_bound"]:
                    torch.maximum(vmax, v, out=vmax)
                    second = vmax
                else:
                    second = v
                denominator = (second + AMS_BOUND_EPS).sqrt() + hp["eps"]
                update = update / (denominator / (1.0 - beta2 ** t).sqrt() * (1.0 - beta1 ** t))
            if hp["weight_decouple"]:
                p.mul_(1.0 - wd * (1.0 if hp["fixed_decay"] else lr))
            else:
                grad = grad + wd * p
            p.add_(-lr * update)
            last.copy_(grad)


@_rule("adai", needs=[LAYERS, JOINT])
class _Adai:
    """Adai (pytorch_optimizer.Adai; Xie, Wang, Zhang, Sato & Sugiyama 2022, "Adaptive Inertia: Disentangling the
    Effects of Adaptive Learning Rate and Momentum", Algorithm 2 with ``dampening`` τ): with β₀ = betas[0]
    (the paper's β₀, a scale, not a decay rate), v ← β₂v + (1 − β₂)g², v̂ = v/(1 − β₂ᵗ), v̄ = max(ε, mean of v̂
    over every parameter of the model); β₁ = clip(1 − β₀(v̂/v̄)^(1/(3 − 2τ)), 0, 1 − ε) per coordinate,
    β₃ = (1 − β₁)^τ, Π ← Π·β₁ (per coordinate, from 1), m ← β₁m + β₃g, x ← x − η β₀^(1 − τ) m/(1 − Π). Decay
    with λ: coupled g ← g + λx (or decoupled x ← x(1 − λη), η unscaled with ``fixed_decay``) before v, or with
    ``stable_weight_decay`` after v̄ (so the coupled term reaches m but not v). τ = 1 is the paper's Adai
    (β₃ = 1 − β₁); the τ exponent and the stable decay are the library's generalisations. The mean's ε is the
    group's ``eps``, as the clip's."""

    slots = staticmethod(lambda hp: 3)  # exp_avg, exp_avg_sq, beta1_prod

    @staticmethod
    def init(x, hp):
        return {"m": torch.zeros_like(x), "v": torch.zeros_like(x), "beta1_prod": torch.ones_like(x)}

    @staticmethod
    def _decay(x, g, hp):
        wd = hp["weight_decay"]
        if hp["weight_decouple"]:
            x.mul_(1.0 - wd * (1.0 if hp["fixed_decay"] else hp["lr"]))
            return g
        return g + wd * x

    @classmethod
    def step(cls, x, g, state, hp, t):
        beta0, beta2, dampening, eps = hp["beta1"], hp["beta2"], hp["dampening"], hp["eps"]
        stable = hp["stable_weight_decay"]
        if not stable:
            g = cls._decay(x, g, hp)
        bias_correction2 = 1.0 - beta2 ** t
        v = state["v"]
        v.mul_(beta2).add_((1.0 - beta2) * g * g)
        mean = (_model_sum(v, state["layout"], bias_correction2) / x.shape[-1]).clamp_min(eps)
        if stable:
            g = cls._decay(x, g, hp)
        scaled = (v / bias_correction2 / mean).pow(1.0 / (3.0 - 2.0 * dampening)) * beta0
        beta1 = torch.minimum((1.0 - scaled).clamp_min(0.0), 1.0 - eps)
        beta3 = (1.0 - beta1).pow(dampening)
        state["beta1_prod"].mul_(beta1)
        m = state["m"]
        m.mul_(beta1).add_(beta3 * g)
        update = m / (1.0 - state["beta1_prod"]) * beta0 ** (1.0 - dampening)
        x.add_(-hp["lr"] * update)


@_rule("adams", needs=[LAYERS, JOINT])
class _AdamS:
    """AdamS (pytorch_optimizer.AdamS; Xie, Xu, Zhang, Sato & Sugiyama 2023, "On the Overlooked Pitfalls of Weight
    Decay and How to Mitigate Them: A Gradient-Norm Perspective" (Understanding and Scheduling Weight Decay),
    Algorithm 2, stable weight decay): m ← β₁m + (1 − β₁)g, v ← β₂v + (1 − β₂)g² (AMSBound: v ← the running
    maximum); v̄ = mean of v/(1 − β₂ᵗ) over every parameter of the model; decoupled decay scaled by it,
    x ← x(1 − λη/(√v̄ + ε)) (η unscaled with ``fixed_decay``), then x ← x − η/(1 − β₁ᵗ) · m/(√(v/(1 − β₂ᵗ)) + ε).
    With ``weight_decouple=False`` the decay is coupled instead (g ← g + λx before the moments) and v̄ unused."""

    slots = staticmethod(lambda hp: 2 + int(hp["ams_bound"]))  # exp_avg, exp_avg_sq (, max_exp_avg_sq)

    @staticmethod
    def init(x, hp):
        zeros = torch.zeros_like
        return {"m": zeros(x), "v": zeros(x), "vmax": zeros(x)}

    @staticmethod
    def step(x, g, state, hp, t):
        lr, beta1, beta2, wd, eps = hp["lr"], hp["beta1"], hp["beta2"], hp["weight_decay"], hp["eps"]
        if not hp["weight_decouple"]:
            g = g + wd * x
        bias_correction1, bias_correction2 = 1.0 - beta1 ** t, 1.0 - beta2 ** t
        state["m"].lerp_(g, 1.0 - beta1)
        v = state["v"]
        v.mul_(beta2).add_((1.0 - beta2) * g * g)
        if hp["ams_bound"]:
            torch.maximum(state["vmax"], v, out=state["vmax"])
            v = state["vmax"]
        mean_square = _model_sum(v, state["layout"], bias_correction2) / x.shape[-1]
        if hp["weight_decouple"]:
            decay = wd * (1.0 if hp["fixed_decay"] else lr)
            x.mul_(torch.where(wd > 0.0, 1.0 - decay / (mean_square.sqrt() + eps), 1.0))
        x.add_(-(lr / bias_correction1) * (state["m"] / ((v / bias_correction2).sqrt() + eps)))
