"""Batched rules of methods with per-tensor statistics: optbench's paper-faithful LAMB (``lamb-paper``) and
pytorch_optimizer's StableAdamW, SCION, SCIONLight, StableSPAM, SGDSaI, TAM, RACS, ROSE and ScalableShampoo.

Same contract as :mod:`optbench.engines.batched_rules` (registered into its ``RULES`` table): ``x`` and ``g`` are
``[K, P]``, float hyperparameters ``[K, 1]`` tensors (integer ones too), strings and booleans shared by the group.
Every rule here takes a statistic per parameter tensor (a norm, an RMS, a largest entry, row and column scales,
an orthogonalised matrix, a Shampoo preconditioner), so every rule needs ``LAYERS`` and reduces one tensor at a
time over the layout, in the class's order; on an analytic problem the layout is one 1-D tensor. Each follows the
code path the loop engine's class object takes on a CPU (the ``foreach`` path where the class enables it there,
else the per-parameter loop), operation for operation; ``tests/test_engine_contract.py`` checks each against the
class to 1e-8 in float64 on analytic problems and on small networks, and ``tests/test_rules_pertensor.py``
against its paper's formula written independently in plain torch, and every option branch against the class.

Two rules call the library where the class's arithmetic cannot be reproduced otherwise: SCION orthogonalises a
weight matrix with the library's bfloat16 Newton–Schulz iteration (per configuration, on the operands the class
gives it), and ScalableShampoo keeps one of the library's ``PreConditioner`` objects per configuration and
tensor (blockwise statistics and coupled Schur–Newton inverse roots); everything else is batched over K.
"""

from __future__ import annotations

import math
from typing import cast

import torch

from optbench.engines.batched_rules import ACCUMULATED, LAYERS, _rule, _zeros, adam_moments


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

    init = staticmethod(adam_moments)

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
    large-scale vision-language models", its StableAdamW algorithm), foreach path, per parameter tensor: with the
    debiased decays β̂₁ = β₁(1 − β₁^(t−1))/(1 − β₁ᵗ) and β̂₂ likewise, m ← β̂₁m + (1 − β̂₁)g, v ← β̂₂v + (1 − β̂₂)g² (so m
    and v are the bias-corrected averages, m = g at t = 1); the update-clipping RMS of the tensor,
    R = max(1, √mean(g²/max(v, ε²))), gives η_t = η/R; decoupled decay x ← x(1 − λη_t) (coupled with
    ``weight_decouple=False``: g ← g + λx first, the decay then not scaled); x ← x − η_t·m/(√v + ε).
    Deviations from the paper: the authors' reference code (Wortsman's unfused StableAdamW) decays with the
    unclipped rate, x(1 − ηλ), and clips at RMS/d with a threshold d, where the library decays with η_t and fixes
    d = 1 (the update itself, with ε² inside the RMS, is the same); coupled decay is a library option.
    ``kahan_sum`` only acts on float16/bfloat16 parameters (Kahan-compensated update); the engines run float32 or
    float64, where the class keeps no compensation buffer and the flag has no effect."""

    slots = staticmethod(lambda hp: 2)  # exp_avg, exp_avg_sq (kahan_comp is None outside float16/bfloat16)

    init = staticmethod(adam_moments)

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


# ---- SCION and SCIONLight ------------------------------------------------------------------------------

SCION_BIAS_EPS = 1e-8  # BiasRMS.lmo's eps, added to the RMS of a vector's direction
SCION_NEWTON_SCHULZ_STEPS = 5  # Spectral() and SpectralConv()'s num_steps (the Auto norm builds them so)


def _scion_directions(d: torch.Tensor, layout, hp) -> list[torch.Tensor]:
    """SCION's ``Auto`` linear minimisation oracle of each parameter tensor's ``[K, n]`` columns of ``d``, times
    ``scale``, in the dtype the class gets it in: a vector (ndim ≤ 1) d/(RMS(d) + 1e-8) (``BiasRMS``); a matrix
    m × n NS₅(d)·√(m/n) (``Spectral``), a kernel m × n × k… NS₅(d as m × (n·k…))·√(m/n)/(k…) (``SpectralConv``),
    with NS₅ the library's ``zero_power_via_newton_schulz_5`` (5 steps, bfloat16 by default, so those directions
    are bfloat16 as the class's). Tensors of one shape are orthogonalised as one stacked batch per
    configuration, as the class's ``_spectral_directions`` does, so that each configuration's bfloat16 iteration
    sees the same operands as the class's."""
    from pytorch_optimizer.optimizer import scion  # looked up per call: a test may patch the iteration's dtype

    parts = _tensors(d, layout)
    K = d.shape[0]
    out: list[torch.Tensor | None] = [None] * len(parts)
    by_shape: dict[tuple[int, ...], list[int]] = {}
    for i, (part, shape) in enumerate(parts):
        if len(shape) <= 1:
            rms = torch.sqrt(torch.mean(part.pow(2), dim=-1, keepdim=True))
            out[i] = part / (rms + SCION_BIAS_EPS) * hp["scale"]
        elif len(shape) <= 4:
            by_shape.setdefault(shape, []).append(i)
        else:
            raise NotImplementedError(f"SCION's Auto norm has no oracle for a {len(shape)}-D tensor")
    scales = hp["scale"][:, 0].tolist()
    for shape, indices in by_shape.items():
        shape_scale = math.sqrt(shape[0] / shape[1])
        if len(shape) > 2:
            shape_scale = shape_scale / math.prod(shape[2:])
        rows: list[list[torch.Tensor]] = [[] for _ in indices]
        for k in range(K):
            matrices = [parts[i][0][k].reshape(shape[0], -1) for i in indices]
            matrix = matrices[0] if len(matrices) == 1 else torch.stack(matrices)
            result = scion.zero_power_via_newton_schulz_5(matrix, SCION_NEWTON_SCHULZ_STEPS)
            results = [result] if len(matrices) == 1 else list(result.unbind())
            results = [update.reshape(shape) for update in results]
            # the class scales with foreach ops, which round a Python scalar to a bfloat16 tensor's dtype first
            # (Tensor.mul_ does not): the same calls, so that the bfloat16 products are the class's
            torch._foreach_mul_(results, [shape_scale] * len(results))
            torch._foreach_mul_(results, scales[k])
            for j, update in enumerate(results):
                rows[j].append(update.reshape(-1))
        for j, i in enumerate(indices):
            out[i] = torch.stack(rows[j])
    return [cast(torch.Tensor, direction) for direction in out]


def _scion_step(x, g, d, layout, hp):
    """The SCION step from direction source ``d`` (the momentum average; SCIONLight: the gradient)."""
    lr = hp["lr"]
    directions = _scion_directions(d, layout, hp)
    if hp["constraint"]:
        x.mul_(1.0 - lr)
    for (p, _), direction in zip(_tensors(x, layout), directions):
        p.copy_(torch.addcmul(p, -lr, direction.to(p.dtype)))  # p.add_(update, alpha=−η)


def _scion_decay(x, g, hp):
    """Decay with λ and the unscaled lr (none under ``constraint``, whose step shrinks x itself): decoupled
    x ← x(1 − λη), or coupled g ← g + λx; returns the gradient."""
    if hp["constraint"]:
        return g
    wd = hp["weight_decay"]
    if hp["weight_decouple"]:
        x.mul_(1.0 - wd * hp["lr"])
        return g
    return torch.addcmul(g, wd, x)


@_rule("scion", needs=[LAYERS])
class _SCION:
    """SCION (pytorch_optimizer.SCION, its ``Auto`` norm; Pethick et al. 2025, "Training Deep Learning Models with
    Norm-Constrained LMOs", Algorithm 1 uSCG, and SCG with ``constraint``), per parameter tensor, with α =
    ``momentum`` (the weight of the new gradient) and ρ = ``scale``: decay (decoupled x ← x(1 − λη), or coupled
    g ← g + λx; none with ``constraint``); d ← (1 − α)d + αg (d₀ = 0); the oracle direction s = ρ·lmo(d) of the
    tensor's norm (:func:`_scion_directions`: RMS-normalised for a vector, the spectral polar factor √(m/n)·UVᵀ
    by Newton–Schulz for a matrix, per output channel / kernel volume for a convolution kernel); with
    ``constraint`` (SCG) x ← (1 − η)x − ηs, else (uSCG) x ← x − ηs. An analytic problem's vector is one tensor:
    x ← x − ηρ·d/(RMS(d) + 1e-8). Deviations from the paper: the polar factor is 5 quintic Newton–Schulz steps
    in bfloat16 (the class's default; the rule calls the same function), not the exact UVᵀ; the vector oracle
    adds ε = 1e-8 to the RMS; a kernel's spectral scale is divided by its kernel volume; weight decay is a
    library addition (the paper's SCG shrinks x through the constraint)."""

    slots = staticmethod(lambda hp: 1)  # d

    @staticmethod
    def init(x, hp):
        return {"d": _zeros(x)}

    @staticmethod
    def step(x, g, state, hp, t):
        g = _scion_decay(x, g, hp)
        d = state["d"]
        d.lerp_(g, hp["momentum"])
        _scion_step(x, g, d, state["layout"], hp)


@_rule("scionlight", needs=[LAYERS, ACCUMULATED])
class _SCIONLight:
    """SCIONLight (pytorch_optimizer.SCIONLight; Pethick et al. 2025, the memory-free variant of SCION's
    Algorithm 1): SCION's step (:class:`_SCION`) with the oracle taken of the parameters' ``.grad`` buffer d,
    x ← x − ηρ·lmo(d) (x ← (1 − η)x − ηρ·lmo(d) with ``constraint``), which the class keeps as its momentum:
    after the step it scales d by 1 − α (α = ``momentum``; not at all for α = 1, as the class skips the
    product there), and the next backward pass adds the new gradient to it, d ← (1 − α)d + g. The engines keep
    that buffer (``ACCUMULATED``: the loop engine keeps ``.grad`` between steps for ``accumulates_grad``
    entries; this rule's buffer is ``state["grad_buffer"]``); coupled decay adds λx to d itself, as the class does
    in place. Deviations from the paper: SCION's, and the momentum as a sum d ← (1 − α)d + g (the paper's
    average is α-weighted: d ← (1 − α)d + αg), so d is 1/α times the paper's in a steady state, which the
    scale-free oracles ignore."""

    @staticmethod
    def init(x, hp):
        return {"grad_buffer": None}

    @staticmethod
    def step(x, g, state, hp, t):
        g = _scion_decay(x, g, hp)
        _scion_step(x, g, g, state["layout"], hp)
        momentum = hp["momentum"]
        state["grad_buffer"] = g * torch.where(momentum != 1.0, 1.0 - momentum, 1.0)


# ---- StableSPAM -----------------------------------------------------------------------------------------

@_rule("stablespam", needs=[LAYERS])
class _StableSPAM:
    """StableSPAM (pytorch_optimizer.StableSPAM, its per-parameter path, the default ``foreach=False``; Huang et al.
    2025, "Stable-SPAM: How to Train in 4-Bit More Stably than 16-Bit Adam", Algorithm 1), per parameter tensor,
    with t the step count and s the moment step count (reset to 1, with m and v zeroed, every
    ``update_proj_gap`` = T steps: s = t until t = T, then 1, 2, …): decoupled decay x ← x(1 − λη); spike
    clipping with the tensor's largest |g|, M ← θM + (1 − θ)max|g|, M̂ = M/(1 − θᵗ), g ← g·M̂/max|g| where
    |g| > M̂; adaptive gradient-norm scaling with the clipped gradient's norm n = ‖g‖ (a tensor with n = 0
    skips the rest of its step), μ ← γ₁μ + (1 − γ₁)n, ν ← γ₂ν + (1 − γ₂)n², g ← g/n · (μ/(1 − γ₁ᵗ))/(√(ν/(1 − γ₂ᵗ))
    + ε) (γ₁ = β₁ when ``gamma1`` = −1); then Adam, m ← β₁m + (1 − β₁)g, v ← β₂v + (1 − β₂)g²,
    x ← x − η/(1 − β₁ˢ) · m/(√v/√(1 − β₂ˢ) + ε). Deviations from the paper: not checked line by line against its
    text (the formulas above are the paper's AdaClip, AdaGN and momentum reset as the library, after the authors'
    code, implements them); ``gamma1 = −1`` and the weight decay are library options. ``t_max`` (a cosine decay
    of β₁ and γ₁ by a torch LR scheduler's recursive formula) is refused: the registry default (None) has none."""

    slots = staticmethod(lambda hp: 2)  # exp_avg, exp_avg_sq (and three scalars per tensor)

    @staticmethod
    def refuses(hp):
        if hp.get("t_max") is not None:
            return "t_max (StableSPAM's cosine decay of the momentum coefficients) is not reproduced"
        return None

    @staticmethod
    def init(x, hp):
        column = torch.zeros_like(x[:, :1])
        return {"m": _zeros(x), "v": _zeros(x), "s": column.clone(), "m_max": None, "m_norm": None, "v_norm": None}

    @staticmethod
    def step(x, g, state, hp, t):
        layout = state["layout"]
        lr, beta1, beta2, eps = hp["lr"], hp["beta1"], hp["beta2"], hp["eps"]
        theta, gamma2 = hp["theta"], hp["gamma2"]
        gamma1 = torch.where(hp["gamma1"] == -1.0, beta1, hp["gamma1"])
        if state["m_max"] is None:
            per_tensor = torch.zeros(x.shape[0], len(layout.sizes), dtype=x.dtype, device=x.device)
            state["m_max"], state["m_norm"], state["v_norm"] = (per_tensor.clone() for _ in range(3))
        m, v = state["m"], state["v"]
        reset = (t % hp["update_proj_gap"]) == 0  # [K, 1]
        if bool(reset.any()):
            m.masked_fill_(reset, 0.0)
            v.masked_fill_(reset, 0.0)
        state["s"] = s = torch.where(reset, 1.0, state["s"] + 1.0)
        step_size = lr / (1.0 - beta1 ** s)
        bc2_sq = (1.0 - beta2 ** s).sqrt()
        theta_t = 1.0 - theta ** t
        x.mul_(1.0 - hp["weight_decay"] * lr)
        max_grad = _per_tensor(g, layout, lambda part: part.abs().amax(-1))
        m_max = state["m_max"]
        m_max.lerp_(max_grad, (1.0 - theta).expand_as(m_max))
        m_max_hat = layout.spread(m_max / theta_t)
        spread_max = layout.spread(max_grad)
        g = torch.where(g.abs() > m_max_hat, g / spread_max * m_max_hat, g)
        grad_norm = layout.norms(g)
        active = grad_norm != 0
        m_norm, v_norm = state["m_norm"], state["v_norm"]
        m_norm.copy_(torch.where(active, m_norm.lerp(grad_norm, (1.0 - gamma1).expand_as(m_norm)), m_norm))
        v_norm.copy_(torch.where(active, v_norm.lerp(grad_norm.pow(2), (1.0 - gamma2).expand_as(v_norm)), v_norm))
        m_norm_hat = m_norm / (1.0 - gamma1 ** t)
        v_norm_hat = v_norm / (1.0 - gamma2 ** t)
        c_norm = m_norm_hat / (v_norm_hat.sqrt() + eps)
        scaled = g / layout.spread(grad_norm) * layout.spread(c_norm)
        moving = layout.spread(active).expand_as(x)
        m.copy_(torch.where(moving, m.lerp(scaled, (1.0 - beta1).expand_as(m)), m))
        v.copy_(torch.where(moving, torch.addcmul(v * beta2, (1.0 - beta2) * scaled, scaled), v))
        denom = v.sqrt() / bc2_sq + eps
        x.copy_(torch.where(moving, x + -step_size * m / denom, x))


# ---- SGD-SaI --------------------------------------------------------------------------------------------

@_rule("sgdsai", needs=[LAYERS])
class _SGDSaI:
    """SGD-SaI (pytorch_optimizer.SGDSaI, its foreach path; Xu et al. 2024, "No More Adam: Learning Rate Scaling
    at Initialization is All You Need", arXiv:2412.11768, Algorithm 1), per parameter tensor: at the first step
    each tensor's gradient signal-to-noise ratio is fixed, s = ‖g₁‖/(σ(g₁) + ε) with σ the (unbiased) standard
    deviation of the tensor's entries, for a tensor with ndim > 1 and more than one row; s = ‖g₁‖ for the others
    (vectors, so every analytic problem, and single-row matrices: σ taken as 0), and also where σ = 0. Then
    with μ = ``momentum``: b ← μb + (1 − μ)g (μ = 0: b = g); decay, decoupled x ← x(1 − λη) or coupled g ← g + λx
    (the class adds it to g after b has been formed, so coupled decay reaches the step only without momentum);
    x ← x − η·s·b. Deviations from the paper: the coupled decay's placement (above); not otherwise checked line
    by line against the paper's text (the catalogue's reference for it, arXiv:2411.10438, is MARS's)."""

    slots = staticmethod(lambda hp: int(hp["momentum"] > 0))  # momentum_buffer (gsnr is a scalar per tensor)

    @staticmethod
    def init(x, hp):
        return {"buf": _zeros(x), "gsnr": None}

    @staticmethod
    def step(x, g, state, hp, t):
        layout = state["layout"]
        lr, momentum, wd = hp["lr"], hp["momentum"], hp["weight_decay"]
        if state["gsnr"] is None:
            ratios = []
            for part, shape in _tensors(g, layout):
                norm = torch.linalg.vector_norm(part, dim=-1)
                if len(shape) > 1 and shape[0] != 1:
                    sigma = part.std(dim=-1).nan_to_num_()
                    ratios.append(torch.where(sigma != 0.0, norm / (sigma + hp["eps"][:, 0]), norm))
                else:
                    ratios.append(norm)
            state["gsnr"] = layout.spread(torch.stack(ratios, dim=-1))
        with_momentum = momentum > 0.0
        buf = state["buf"]
        buf.lerp_(g, (1.0 - momentum).expand_as(buf))
        if hp["weight_decouple"]:
            x.mul_(1.0 - wd * lr)
            source = torch.where(with_momentum, buf, g)
        else:
            source = torch.where(with_momentum, buf, torch.addcmul(g, wd, x))
        x.copy_(torch.addcmul(x, -lr, source * state["gsnr"]))


# ---- TAM ------------------------------------------------------------------------------------------------

NORMALIZE_EPS = 1e-12  # torch.nn.functional.normalize's default lower bound of the norm


def _normalize_dim0(values: torch.Tensor, layout) -> torch.Tensor:
    """``torch.nn.functional.normalize(·, p=2, dim=0)`` of each parameter tensor (a vector: by its norm; a matrix:
    each column by its norm; a kernel: each fibre along the output channels), as ``[K, P]`` columns."""
    K = values.shape[0]
    parts = []
    for part, shape in _tensors(values, layout):
        view = part.reshape(K, *shape)
        norm = torch.linalg.vector_norm(view, dim=1, keepdim=True).clamp_min(NORMALIZE_EPS)
        parts.append((view / norm).reshape(K, -1))
    return parts[0] if len(parts) == 1 else torch.cat(parts, dim=-1)


@_rule("tam", needs=[LAYERS])
class _TAM:
    """TAM (pytorch_optimizer.TAM, its foreach path; Malviya et al. 2024, "Torque-Aware Momentum",
    arXiv:2412.18790), per parameter tensor: with n(·) the normalisation along the tensor's first dimension
    (``normalize(·, dim=0)``: a vector by its norm, a matrix column by column), the alignment
    c = n(b)⊙n(g) (elementwise), s ← ρs + (1 − ρ)c (ρ = ``decay_rate``, s₀ = 0), d = ((1 + s)/2 + ε)·g,
    b ← μb + d (b₀ = g₁, so the first step has b = μg₁ + d), decoupled decay x ← x(1 − λη) (λ unscaled with
    ``fixed_decay``), x ← x − ηb. Deviations from the paper: the paper damps the new gradient by the cosine
    between momentum and gradient, (1 + cos)/2; the library's alignment is the elementwise product of the
    normalised tensors, not summed into a cosine, so each coordinate gets its own small c (≈ 1/rows);
    ``weight_decouple=False`` adds λx to the gradient after the class has used it, so coupled decay has no
    effect (reproduced)."""

    slots = staticmethod(lambda hp: 2)  # s, momentum_buffer

    @staticmethod
    def init(x, hp):
        return {"s": _zeros(x), "buf": None}

    @staticmethod
    def step(x, g, state, hp, t):
        layout = state["layout"]
        if state["buf"] is None:
            state["buf"] = g.clone()
        buf, s = state["buf"], state["s"]
        correlation = _normalize_dim0(buf, layout) * _normalize_dim0(g, layout)
        s.lerp_(correlation, (1.0 - hp["decay_rate"]).expand_as(s))
        d = ((s + 1.0) / 2.0 + hp["eps"]) * g
        buf.mul_(hp["momentum"]).add_(d)
        if hp["weight_decouple"]:
            x.mul_(1.0 - hp["weight_decay"] * (1.0 if hp["fixed_decay"] else hp["lr"]))
        x.copy_(torch.addcmul(x, -hp["lr"], buf))


# ---- RACS -----------------------------------------------------------------------------------------------

def _as_matrix_shape(shape) -> tuple[int, int]:
    """RACS's and ROSE's matrix view of a parameter tensor: a vector (or scalar) as one column (n × 1), a tensor
    with ndim > 2 as rows × (the product of the rest)."""
    if len(shape) < 2:
        return math.prod(shape), 1
    return shape[0], math.prod(shape[1:])


@_rule("racs", needs=[LAYERS])
class _RACS:
    """RACS (pytorch_optimizer.RACS, its per-parameter path, the default ``foreach=False``; Gong et al. 2025,
    "Towards Efficient Optimizer Design for LLM via Structured Fisher Approximation with a Low-Rank Extension",
    arXiv:2502.07752, Algorithm 2), per parameter tensor G viewed as an m × n matrix (a vector as one column,
    m × 1): decay first (decoupled x ← x(1 − λη), λ unscaled with ``fixed_decay``, or coupled G ← G + λx);
    row and column second moments s ← βs + (1 − β)·mean_row(G²) (s₀ = 0, length m), q ← βq + (1 − β)·mean_col(G²)
    (q₀ = 1, length n); Ĝ = G / (√(s + ε)√(q + ε)ᵀ); the norm-growth limiter φ = 1 at the first step, then
    φ = γ/max(‖Ĝ‖/(θ + ε), γ) with θ the previous ‖Ĝ‖·φ; θ ← ‖Ĝ‖φ; x ← x − ηαφ·Ĝ. On a vector the column
    statistic is one scalar, so Ĝ = g/(√(s + ε)·√(q + ε)) with s the coordinate's own EMA of g² and q that of the
    mean g². Deviations from the paper: ε sits inside the square roots; not otherwise checked line by line
    against the paper's text."""

    slots = staticmethod(lambda hp: 0)
    # s (one per row) and q (one per column): a [d] vector is d × 1, so d + 1 values (θ is a scalar)
    dim_slots = staticmethod(lambda hp, dim: (dim + 1) / dim)

    @staticmethod
    def init(x, hp):
        return {"s": None, "q": None, "theta": None}

    @staticmethod
    def step(x, g, state, hp, t):
        layout = state["layout"]
        K = x.shape[0]
        lr, beta, eps, gamma = hp["lr"], hp["beta"], hp["eps"], hp["gamma"]
        wd = hp["weight_decay"]
        if state["s"] is None:
            views = [_as_matrix_shape(shape) for shape in layout.shapes]
            state["s"] = [torch.zeros(K, m, dtype=x.dtype, device=x.device) for m, _ in views]
            state["q"] = [torch.ones(K, n, dtype=x.dtype, device=x.device) for _, n in views]
            state["theta"] = torch.zeros(K, len(views), dtype=x.dtype, device=x.device)
        if hp["weight_decouple"]:
            x.mul_(1.0 - wd * (1.0 if hp["fixed_decay"] else lr))
        else:
            g = torch.addcmul(g, wd, x)
        theta = state["theta"]
        for i, ((p, shape), (grad, _)) in enumerate(zip(_tensors(x, layout), _tensors(g, layout))):
            rows, cols = _as_matrix_shape(shape)
            grad = grad.reshape(K, rows, cols)
            s, q = state["s"][i], state["q"][i]
            squares = grad.pow(2)
            s.lerp_(squares.mean(dim=2), (1.0 - beta).expand_as(s))
            q.lerp_(squares.mean(dim=1), (1.0 - beta).expand_as(q))
            s_sq = s.add(eps).sqrt_().unsqueeze(2)
            q_sq = q.add(eps).sqrt_().unsqueeze(1)
            grad_hat = grad / (s_sq * q_sq)
            norm = torch.linalg.vector_norm(grad_hat, dim=(1, 2))[:, None]  # [K, 1]
            if t == 1:
                threshold = torch.ones_like(norm)
            else:
                threshold = gamma / torch.maximum(norm / (theta[:, i:i + 1] + eps), gamma)
            theta[:, i:i + 1] = norm * threshold
            p.copy_(torch.addcmul(p, (-lr * hp["alpha"]) * threshold, grad_hat.reshape(K, -1)))


# ---- ROSE -----------------------------------------------------------------------------------------------

@_rule("rose", needs=[LAYERS])
class _ROSE:
    """ROSE (pytorch_optimizer.ROSE, its per-parameter path, the default ``foreach=False``; published as code
    only, github.com/MatthewK78/Rose: no paper), stateless, per parameter tensor, computed in float64 (the class's
    ``compute_dtype``; a float32 run's parameters are rounded back after each step, as the class's are): decay
    with λ and η: coupled g ← g + λx (the default) or decoupled
    x ← x(1 − λη) (λ unscaled with ``fixed_decay``); a vector (every analytic problem) steps
    x ← x − η·g/D with its range D = |max g| − min g; a tensor with ndim ≥ 2, each row r (slice along the first
    dimension) centred with ``centralize`` (g_r ← g_r − mean g_r), has the range R_r = |max g_r| − min g_r, and
    with ``stabilize`` D_r = R̄ + τ(R_r − R̄), τ = R̄/(σ_R + R̄) (R̄, σ_R the mean and population standard deviation
    of the rows' ranges), else D_r = R_r; x ← x − η·g/D (a zero D taken as 1). ``bf16_sr`` (stochastic rounding)
    acts on bfloat16 parameters only, which the engines do not use. ``wd_schedule=True`` (the lr reference from a
    scheduler's ``initial_lr``/``max_lr``) is refused."""

    @staticmethod
    def refuses(hp):
        if hp.get("wd_schedule") is True and hp.get("weight_decay", 0.0) != 0.0:
            return "wd_schedule=True (ROSE's decay scaled by a scheduler's initial_lr) is not reproduced"
        return None

    @staticmethod
    def init(x, hp):
        return {}

    @staticmethod
    def step(x, g, state, hp, t):
        layout = state["layout"]
        K = x.shape[0]
        lr, wd = hp["lr"], hp["weight_decay"]
        wd_lr = lr  # wd_schedule=False (optbench's spec takes a boolean; True is refused)
        param = x.to(torch.float64)  # compute_dtype: x itself in a float64 run
        grad = g.to(torch.float64)
        lr64 = lr.to(torch.float64)
        if hp["weight_decouple"]:
            param.mul_(1.0 - wd.to(torch.float64) * (1.0 if hp["fixed_decay"] else wd_lr.to(torch.float64)))
        else:
            grad = torch.addcmul(grad, wd.to(torch.float64), param)  # grad.add_(param, alpha=λ)
        for (p, shape), (gp, _) in zip(_tensors(param, layout), _tensors(grad, layout)):
            if len(shape) == 0:
                p.copy_(torch.addcmul(p, -lr64, gp.sign()))
                continue
            if len(shape) == 1:
                g_min, g_max = gp.aminmax(dim=-1, keepdim=True)
                de_nom = g_max.abs() - g_min
            else:
                view = gp.reshape(K, shape[0], -1)
                if hp["centralize"]:
                    view = view - view.mean(dim=-1, keepdim=True)
                raw_scale = view.amax(dim=-1, keepdim=True).abs() - view.amin(dim=-1, keepdim=True)  # [K, rows, 1]
                if hp["stabilize"]:
                    std, mean = torch.std_mean(raw_scale, dim=(1, 2), correction=0, keepdim=True)
                    trust = mean / (std + mean).masked_fill(mean == 0.0, 1.0)
                    de_nom = torch.lerp(mean.expand_as(raw_scale), raw_scale, trust.expand_as(raw_scale))
                else:
                    de_nom = raw_scale
                gp = view
            de_nom = de_nom.masked_fill(de_nom == 0.0, 1.0)
            p.copy_(p + (-lr64) * (gp / de_nom).reshape(K, -1))  # param.addcdiv_(g, D, value=−η)
        if param is not x:
            x.copy_(param)


# ---- ScalableShampoo ------------------------------------------------------------------------------------

def _shampoo_preconditioner(shape, hp, k, dtype, device):
    """The library's ``PreConditioner`` of one parameter tensor for configuration ``k``, as the class builds it
    (the tensor is only read for its shape, dtype and device)."""
    from pytorch_optimizer.optimizer.utils.partition import PreConditionerType
    from pytorch_optimizer.optimizer.utils.preconditioner import PreConditioner

    def column(name):
        return int(hp[name][k, 0].item())

    return PreConditioner(torch.empty(shape, dtype=dtype, device=device), float(hp["beta2"][k, 0].item()),
                          column("inverse_exponent_override"), column("block_size"),
                          column("skip_preconditioning_rank_lt"), column("no_preconditioning_for_layers_with_dim_gt"),
                          hp["shape_interpretation"], PreConditionerType.ALL, float(hp["matrix_eps"][k, 0].item()),
                          hp["use_svd"])


@_rule("scalableshampoo", needs=[LAYERS])
class _ScalableShampoo:
    """ScalableShampoo (pytorch_optimizer.ScalableShampoo, its SGD grafting and all-dimension preconditioners, the
    catalogue's fixed ``graft_type`` and ``pre_conditioner_type``; Anil et al. 2020, "Scalable Second Order
    Optimization for Deep Learning", arXiv:2002.09018), per parameter tensor G, with c_p = 1 and c_m = η
    (``decoupled_learning_rate``, the default; else c_p = η, c_m = 1), w = 1 − β₁ with
    ``moving_average_for_momentum`` else 1: the grafted step u = c_p·G and the Shampoo step s = c_p·P(G), where P
    is the library's blockwise preconditioner (``PreConditioner``: statistics H ← β₂H + (1 − β₂)G₍ᵢ₎G₍ᵢ₎ᵀ of each
    block and (merged) dimension every ``statistics_compute_steps`` steps, inverse roots H^(−1/2k) by coupled
    Schur–Newton (or SVD with ``use_svd``) every ``preconditioning_compute_steps`` steps, identity before) and
    s = u for a tensor it does not precondition (a vector of ≤ ``block_size`` entries, so every small analytic
    problem); grafting s ← s·‖u‖/(‖s‖ + 1e-16) (norms of the tensor); decay, decoupled x ← x(1 − λη), or coupled
    λx added to both u and s; momentum M ← β₁M + s (``moving_average_for_momentum``: M ← M + w(s − M)) and the
    graft's M_u ← β₁M_u + w·u; the step direction is M (M_u before ``start_preconditioning_step``), with Nesterov
    β₁·M + s (resp. β₁M_u + u; lerp with w under the moving average); x ← x − c_m·direction. The preconditioners
    are the library's own objects, one per configuration and tensor, fed each configuration's gradient (exact by
    construction; a Python loop over configurations for the tensors it preconditions); the rest is batched.
    Deviations from the paper: the library grafts with SGD by default and, before
    ``start_preconditioning_step``, steps with the graft's momentum; ε-regularised inverse roots by Schur–Newton
    (the paper's choice); not otherwise checked line by line against the paper."""

    # optimizer.state holds the momentum tensor and two objects, the graft with its momentum and the preconditioner
    # with its statistics (optbench.cost.state_bytes counts what they hold): for a vector it does not precondition
    # (every analytic problem's: at most block_size entries) the two momenta
    slots = staticmethod(lambda hp: 2)

    @staticmethod
    def init(x, hp):
        return {"m": _zeros(x), "graft_m": _zeros(x), "pre": None}

    @staticmethod
    def step(x, g, state, hp, t):
        layout = state["layout"]
        K = x.shape[0]
        lr, beta1, wd = hp["lr"], hp["beta1"], hp["weight_decay"]
        if state["pre"] is None:
            state["pre"] = [[_shampoo_preconditioner(shape, hp, k, x.dtype, x.device) for k in range(K)]
                            for shape in layout.shapes]
        decoupled_lr = hp["decoupled_learning_rate"]
        averaged = hp["moving_average_for_momentum"]
        pre_mult = 1.0 if decoupled_lr else lr
        momentum_mult = lr if decoupled_lr else 1.0
        w = (1.0 - beta1) if averaged else torch.ones_like(beta1)
        stats_due = (t % hp["statistics_compute_steps"] == 0)[:, 0].tolist()
        roots_due = (t % hp["preconditioning_compute_steps"] == 0)[:, 0].tolist()
        graft_grad = g * pre_mult
        dead = state.setdefault("dead", [False] * K)
        shampoo_parts = []
        for (grad, shape), (graft, _), objects in zip(_tensors(g, layout), _tensors(graft_grad, layout), state["pre"]):
            if all(len(pre.pre_conditioners) == 0 for pre in objects):
                shampoo_parts.append(graft.clone())
                continue
            rows = []
            for k, pre in enumerate(objects):
                row = grad[k].reshape(shape)
                if dead[k] or not bool(torch.isfinite(row).all()):
                    # a diverged configuration (its run has ended): the inverse roots of non-finite statistics
                    # (an SVD raises on them) must not stop the others
                    dead[k] = True
                    rows.append(torch.full_like(graft[k], math.nan))
                    continue
                if stats_due[k]:
                    pre.add_statistics(row)
                if roots_due[k]:
                    if not all(bool(torch.isfinite(h).all()) for h in pre.statistics):
                        dead[k] = True
                        rows.append(torch.full_like(graft[k], math.nan))
                        continue
                    pre.compute_pre_conditioners()
                if len(pre.pre_conditioners) > 0:
                    rows.append(pre.preconditioned_grad(row).reshape(-1) * (pre_mult if decoupled_lr
                                                                              else pre_mult[k]))
                else:
                    rows.append(graft[k].clone())
            shampoo_parts.append(torch.stack(rows))
        shampoo_grad = shampoo_parts[0] if len(shampoo_parts) == 1 else torch.cat(shampoo_parts, dim=-1)
        graft_norm, shampoo_norm = layout.norms(graft_grad), layout.norms(shampoo_grad)
        shampoo_grad = shampoo_grad * layout.spread(graft_norm / (shampoo_norm + 1e-16))
        if hp["decoupled_weight_decay"]:
            x.mul_(1.0 - wd * lr)
        else:
            graft_grad = torch.addcmul(graft_grad, wd, x)
            shampoo_grad = torch.addcmul(shampoo_grad, wd, x)
        m, graft_m = state["m"], state["graft_m"]
        if averaged:
            m.lerp_(shampoo_grad, w.expand_as(m))
        else:
            m.mul_(beta1).add_(shampoo_grad)
        graft_m.copy_(torch.addcmul(graft_m * beta1, w, graft_grad))  # mul_(β₁).add_(u, alpha=w)
        preconditioning = t >= hp["start_preconditioning_step"]  # [K, 1]
        direction = torch.where(preconditioning, m, graft_m)
        if hp["nesterov"]:
            last = torch.where(preconditioning, shampoo_grad, graft_grad)
            direction = direction.lerp(last, w.expand_as(direction)) if averaged else direction * beta1 + last
        x.copy_(torch.addcmul(x, -momentum_mult if decoupled_lr else -torch.ones_like(lr), direction))
