"""Batched rules of ten classes that keep per-tensor statistics: factored row/column second moments (CAME,
optbench's paper-faithful Adafactor, Adalite), per-tensor gradient norms or reductions (NovoGrad, AdaNorm, Aida,
AdaShift), per-column alignments (AdaTAM), a per-tensor rotating low-rank basis (Alice) and per-group 8-bit
moments (FlashAdamW).

Same contract as :mod:`optbench.engines.batched_rules` (registered into its ``RULES`` table; ``x`` and ``g`` are
``[K, P]``, float hyperparameters ``[K, 1]`` tensors, integer ones too (Aida's ``k``, AdaShift's ``keep_num``,
Alice's ``rank``: they may differ inside a group), booleans and strings shared by the group). Each rule follows the
code path the loop engine's class object takes on a CPU (pytorch_optimizer's ``foreach`` path where the class has
one and enables it there, else its per-parameter loop), operation for operation; the Python-float step factors
the classes compute per step (Aida's rectification, AdaShift's window weights and bias correction) are computed
here as the same Python floats, one per configuration. ``tests/test_rules_factored.py`` checks each rule against
its paper's update written by hand, and every option branch against the class (batched == loop to 1e-8 in
float64, on analytic problems, an MLP and a CNN).

Every rule needs ``LAYERS``: the statistics are per parameter tensor, and a tensor with ``ndim ≥ 2`` (a weight
matrix, a convolution kernel) takes the class's matrix path: its ``[K, n]`` columns are reshaped to
``[K, *shape]`` (or the class's ``[shape[0], rest]`` matrix) and the row and column statistics reduce over the same
dimensions as the class's on the tensor itself. On an analytic problem the layout is one 1-D tensor.

Alice also needs ``SEEDS`` (its basis completion draws ``torch.randperm`` from torch's global generator), which
only the analytic engine provides: on networks it runs on the loop engine. FlashAdamW's 8-bit state is declared
in float64 slots (``Rule`` declares slots of the parameters' dtype, and these are bytes).
"""

from __future__ import annotations

import functools
import math

import torch

from optbench.engines.batched_rules import LAYERS, SEEDS, _rule
from optbench.engines.step_rng import step_seed


def _tensors(x, layout):
    """Column slices ``[K, size]`` of ``x`` per parameter tensor of the layout (views), with each tensor's shape."""
    return list(zip(x.split(layout.sizes, dim=-1), layout.shapes))


def _rms(values: torch.Tensor) -> torch.Tensor:
    """RMS of each row of ``[K, n]``: ``‖·‖₂/√n``, ``[K, 1]`` (the classes' ``x.norm(2)/math.sqrt(x.numel())``)."""
    return torch.linalg.vector_norm(values, dim=-1, keepdim=True) / math.sqrt(values.shape[-1])


def _decay(p, g, hp, lr):
    """pytorch_optimizer's ``apply_weight_decay``: decoupled p ← p(1 − λ(1 if fixed_decay else lr)), or coupled
    g ← g + λp (``grad.add_(p, alpha=λ)``); returns the gradient."""
    wd = hp["weight_decay"]
    if hp["weight_decouple"]:
        p.mul_(1.0 - wd * (1.0 if hp.get("fixed_decay", False) else lr))
        return g
    return torch.addcmul(g, wd, p)


def _batched_shape(values: torch.Tensor, shape) -> torch.Tensor:
    """``[K, n]`` columns of one parameter tensor as ``[K, *shape]``."""
    return values.reshape(values.shape[0], *shape)


# ---- CAME -------------------------------------------------------------------------------------------------

def _came_inverse_root(row: torch.Tensor, col: torch.Tensor) -> torch.Tensor:
    """``CAME.approximate_sq_grad``: (R/mean(R))^(−½) ⊗ C^(−½), the factored inverse root of R ⊗ C / ΣR."""
    r_factor = (row / row.mean(dim=-1, keepdim=True)).rsqrt().unsqueeze(-1)
    c_factor = col.unsqueeze(-2).rsqrt()
    return r_factor * c_factor


@_rule("came", needs=[LAYERS])
class _CAME:
    """CAME (pytorch_optimizer.CAME; Luo et al. 2023, "CAME: Confidence-guided Adaptive Memory Efficient
    Optimization", Algorithm 1), parameter tensor by parameter tensor. With (β₁, β₂, β₃), ε₁, ε₂, d the clip
    threshold: for a matrix G (factored, over the last two dimensions)
    R ← β₂R + (1 − β₂)(G² + ε₁)1_m/m, C ← β₂C + (1 − β₂)1_nᵀ(G² + ε₁)/n, V = R ⊗ C / mean(R),
    U = G/√V, Û = U/max(1, RMS(U)/d), M ← β₁M + (1 − β₁)Û, residual S = (Û − M)² + ε₂,
    R' ← β₃R' + (1 − β₃)S1/m, C' ← β₃C' + (1 − β₃)1ᵀS/n, X ← X − η M/√(R' ⊗ C' / mean(R')).
    A vector (a bias, every analytic problem's parameter) keeps the full v ← β₂v + (1 − β₂)(g² + ε₁),
    U = g/√v, and steps with the clipped momentum alone: x ← x − ηM (no confidence factor). Decay first: decoupled
    x ← x(1 − λη) (η unscaled with ``fixed_decay``) or coupled g ← g + λx. ``ams_bound``: V̂ ← max(V̂, √V) and
    U = g/√(V̂/β₂). Deviations from the paper: the paper's row/column statistics are sums with V = RC/(1ᵀR); the
    library's are means (the same V); the paper has no weight decay, no AMSBound and no unfactored vector path
    (the library's, as Adafactor's); ``ams_bound`` keeps the running maximum of √V (the reciprocal of the inverse
    root the class holds), not of V, so its U = g·(β₂/max √V)^½ scales with a fourth root of V."""

    slots = staticmethod(lambda hp: 2 + int(hp["ams_bound"]))  # exp_avg, exp_avg_sq on a vector (, exp_avg_sq_hat)

    @staticmethod
    def init(x, hp):
        return {"m": torch.zeros_like(x), "vhat": torch.zeros_like(x), "moments": None}

    @staticmethod
    def _moments(x, layout):
        moments = []
        k = x.shape[0]
        for (_, shape) in _tensors(x, layout):
            if len(shape) >= 2:
                row = x.new_zeros(k, *shape[:-1])
                col = x.new_zeros(k, *shape[:-2], shape[-1])
                moments.append({"row": row, "col": col, "res_row": row.clone(), "res_col": col.clone()})
            else:
                moments.append({"v": x.new_zeros(k, math.prod(shape))})
        return moments

    @classmethod
    def step(cls, x, g, state, hp, t):
        layout = state["layout"]
        if state["moments"] is None:
            state["moments"] = cls._moments(x, layout)
        lr, beta1, beta2, beta3 = hp["lr"], hp["beta1"], hp["beta2"], hp["beta3"]
        columns = zip(_tensors(x, layout), _tensors(g, layout), _tensors(state["m"], layout),
                      _tensors(state["vhat"], layout), state["moments"])
        for (p, shape), (grad, _), (m, _), (vhat, _), moments in columns:
            grad = _decay(p, grad, hp, lr)
            update = grad * grad + hp["eps1"]
            factored = len(shape) >= 2
            if factored:
                square = _batched_shape(update, shape)
                row = _ema(moments["row"], beta2, square.mean(dim=-1))
                col = _ema(moments["col"], beta2, square.mean(dim=-2))
                moments["row"], moments["col"] = row, col
                update = _came_inverse_root(row, col).reshape(update.shape)
            else:
                moments["v"] = v = _ema(moments["v"], beta2, update)
                update = v.rsqrt()
            if hp["ams_bound"]:
                vhat.copy_(torch.maximum(vhat, 1.0 / update))
                update = (vhat / beta2).rsqrt()
            update = update * grad
            update = update / (_rms(update) / hp["clip_threshold"]).clamp(min=1.0)
            m.lerp_(update, 1.0 - beta1)
            if factored:
                residual = _batched_shape((update - m).pow(2) + hp["eps2"], shape)
                row = _ema(moments["res_row"], beta3, residual.mean(dim=-1))
                col = _ema(moments["res_col"], beta3, residual.mean(dim=-2))
                moments["res_row"], moments["res_col"] = row, col
                update = _came_inverse_root(row, col).reshape(update.shape) * m
            else:
                update = m
            p.copy_(torch.addcmul(p, -lr, update))


def _expand(column: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """A ``[K, 1]`` hyperparameter column broadcastable against ``[K, …]`` (``like``'s number of dimensions)."""
    return column.reshape(column.shape[0], *([1] * (like.ndim - 1)))


def _ema(average: torch.Tensor, beta: torch.Tensor, value: torch.Tensor) -> torch.Tensor:
    """``average.mul_(β).add_(value, alpha=1 − β)`` with a ``[K, 1]`` β: ``addcmul(βa, 1 − β, value)``."""
    beta = _expand(beta, average)
    return torch.addcmul(average * beta, 1.0 - beta, value)


# ---- NovoGrad ---------------------------------------------------------------------------------------------

@_rule("novograd", needs=[LAYERS])
class _NovoGrad:
    """NovoGrad (pytorch_optimizer.NovoGrad; Ginsburg et al. 2019, "Stochastic Gradient Methods with Layer-wise
    Adaptive Moments for Training of Deep Networks", Algorithm 1), parameter tensor by parameter tensor, with
    ‖g‖ the norm of the tensor's gradient: v₁ = ‖g₁‖², v_t = β₂v_{t−1} + (1 − β₂)‖g_t‖²; ĝ = g/(√v + ε) (+ λx,
    coupled decay, or decoupled x ← x(1 − λη) first); m₁ = ĝ₁, m_t = β₁m_{t−1} + ĝ_t (+ (1 − β₁)ĝ_t with
    ``grad_averaging``); x ← x − ηm. Deviations from the paper: ε is also added at t = 1 (the paper's m₁ = g₁/√v₁);
    ``grad_averaging`` and decoupled decay are library additions, off by default; the first step never averages
    (m₁ = ĝ₁ whatever ``grad_averaging``)."""

    slots = staticmethod(lambda hp: 1)  # moments (grads_ema is a 0-d tensor per parameter)

    @staticmethod
    def init(x, hp):
        return {"m": torch.zeros_like(x), "ema": None}

    @staticmethod
    def step(x, g, state, hp, t):
        layout = state["layout"]
        lr, beta1, beta2 = hp["lr"], hp["beta1"], hp["beta2"]
        squares = [part.pow(2).sum(dim=-1, keepdim=True) for part in g.split(layout.sizes, dim=-1)]
        first = state["ema"] is None
        if first:
            state["ema"] = squares
        else:
            state["ema"] = [ema.lerp(square, 1.0 - beta2) for ema, square in zip(state["ema"], squares)]
        columns = zip(_tensors(x, layout), _tensors(g, layout), _tensors(state["m"], layout), state["ema"])
        for (p, _), (grad, _), (m, _), ema in columns:
            grad = grad / (ema.sqrt() + hp["eps"])
            grad = _decay(p, grad, hp, lr)
            if first:
                m.copy_(grad)
            else:
                if hp["grad_averaging"]:
                    grad = grad * (1.0 - beta1)
                m.copy_(m * beta1 + grad)
            p.copy_(torch.addcmul(p, -lr, m))


# ---- Adafactor, as in the paper ---------------------------------------------------------------------------

@_rule("adafactor-paper", needs=[LAYERS])
class _AdafactorPaper:
    """Adafactor as in the paper (optbench.optimizers.paper.AdafactorPaper; Shazeer & Stern 2018, "Adafactor:
    Adaptive Learning Rates with Sublinear Memory Cost", Algorithms 4 and 5 with relative steps, update clipping
    and the increasing decay), parameter tensor by parameter tensor: ρ_t = min(10⁻², 1/√t) (``lr`` given: ρ_t = lr),
    α_t = max(ε₂, RMS(X_{t−1}))ρ_t, β̂₂ₜ = 1 − t^c; a matrix (over its last two dimensions)
    R ← β̂₂ₜR + (1 − β̂₂ₜ)(G² + ε₁)1_m, C ← β̂₂ₜC + (1 − β̂₂ₜ)1_nᵀ(G² + ε₁), V̂ = RC/(1_nᵀR); a vector
    V̂ ← β̂₂ₜV̂ + (1 − β̂₂ₜ)(G² + ε₁); U = G/√V̂, Û = U/max(1, RMS(U)/d), X ← X − α_tÛ. ``beta1`` > 0 (the §7.1
    experiments' first moment): M ← β₁M + (1 − β₁)α_tÛ, X ← X − M. Deviations from the paper: none (the class is
    written from it); ``lr`` replacing ρ_t is optbench's option for learning-rate sweeps."""

    slots = staticmethod(lambda hp: 1 + int(hp["beta1"] > 0))  # exp_avg_sq on a vector (, exp_avg)

    @staticmethod
    def init(x, hp):
        return {"m": torch.zeros_like(x), "moments": None}

    @staticmethod
    def step(x, g, state, hp, t):
        layout = state["layout"]
        if state["moments"] is None:
            k = x.shape[0]
            state["moments"] = [{"row": x.new_zeros(k, *shape[:-1]), "col": x.new_zeros(k, *shape[:-2], shape[-1])}
                                if len(shape) >= 2 else {"v": x.new_zeros(k, math.prod(shape))}
                                for shape in layout.shapes]
        rho = hp["lr"] if hp["lr"] is not None else min(1e-2, 1 / math.sqrt(t))
        beta2 = 1 - t ** hp["decay_rate"]
        beta1 = hp["beta1"]
        columns = zip(_tensors(x, layout), _tensors(g, layout), _tensors(state["m"], layout), state["moments"])
        for (p, shape), (grad, _), (m, _), moments in columns:
            alpha = _rms(p).clamp(min=hp["eps2"]) * rho
            squared = grad * grad + hp["eps1"]
            if len(shape) >= 2:
                squared = _batched_shape(squared, shape)
                row = _ema(moments["row"], beta2, squared.sum(dim=-1))
                col = _ema(moments["col"], beta2, squared.sum(dim=-2))
                moments["row"], moments["col"] = row, col
                v_hat = (row.unsqueeze(-1) * col.unsqueeze(-2) / row.sum(dim=-1, keepdim=True).unsqueeze(-1))
                v_hat = v_hat.reshape(grad.shape)
            else:
                moments["v"] = v_hat = _ema(moments["v"], beta2, squared)
            u = grad / v_hat.sqrt()
            u_hat = u / (_rms(u) / hp["clip_threshold"]).clamp(min=1.0)
            update = alpha * u_hat
            if bool((beta1 > 0).any()):
                m.copy_(torch.where(beta1 > 0, torch.addcmul(m * beta1, 1 - beta1, update), m))
                update = torch.where(beta1 > 0, m, update)
            p.sub_(update)


# ---- Adalite ----------------------------------------------------------------------------------------------

def _expand3(column: torch.Tensor) -> torch.Tensor:
    """A ``[K, 1]`` column against ``[K, R, C]`` matrices."""
    return column[:, :, None]


@_rule("adalite", needs=[LAYERS])
class _Adalite:
    """Adalite (pytorch_optimizer.Adalite; no paper: the library's own method, after Adafactor's factored second
    moment and LAMB's trust ratio), parameter tensor by parameter tensor (a tensor with ndim > 2 as its
    ``[shape[0], rest]`` matrix). Decay coupled g ← g + λx first (or decoupled x ← x(1 − λη), η unscaled with
    ``fixed_decay``, just before the step); a trust ratio g ← g·max(ratio_min, ‖x‖/max(g_norm_min, ‖g‖)) (not for a
    one-element tensor); on a vector m ← m + (1 − β₁)(g − m), v ← v + (1 − β₂)((g − m)² − v) (with the new m), and
    u = m + (1 − β₁)(g − m). On a matrix the moments are rebuilt from factors: v = r cᵀ/max(ε₂, Σr) from the row
    sums r and normalised column sums c of the last v, m = (c_m s r_m) (rank one); after the same two updates
    m ← m + (1 − w)(g − m) with the importance weights w = softmax(row means of v) ⊗ softmax(column means of v), then
    u = m + (1 − β₁)(g − m), and the factors are stored: r = v1, c = vᵀ1/max(ε₂, Σv), c_m = m·softmax(column means/τ),
    r_m = softmax(row means/τ)ᵀm, s = c_mᵀ m r_mᵀ/max(ε₂, ‖c_m‖²‖r_m‖²). Then x ← x − η u/√(v/(1 − β₂ᵗ) + ε₁).
    Deviations: no paper to compare with; the first moment's importance weights use the untempered softmax and
    only the stored factors use τ, as the library does."""

    slots = staticmethod(lambda hp: 2)  # m_avg, v_avg on a vector

    @staticmethod
    def init(x, hp):
        return {"m": torch.zeros_like(x), "v": torch.zeros_like(x), "factors": None}

    @staticmethod
    def _factors(x, layout):
        k, factors = x.shape[0], []
        for shape in layout.shapes:
            if len(shape) < 2:
                factors.append(None)
                continue
            rows, cols = shape[0], math.prod(shape[1:])
            factors.append({"v0": x.new_zeros(k, rows), "v1": x.new_zeros(k, cols), "mc": x.new_zeros(k, rows, 1),
                            "mr": x.new_zeros(k, 1, cols), "mu": x.new_zeros(k, 1, 1)})
        return factors

    @classmethod
    def step(cls, x, g, state, hp, t):
        layout = state["layout"]
        if state["factors"] is None:
            state["factors"] = cls._factors(x, layout)
        lr, beta1, beta2, wd = hp["lr"], hp["beta1"], hp["beta2"], hp["weight_decay"]
        eps2 = hp["eps2"]
        columns = zip(_tensors(x, layout), _tensors(g, layout), _tensors(state["m"], layout),
                      _tensors(state["v"], layout), state["factors"])
        for (p, shape), (grad, _), (m_flat, _), (v_flat, _), factors in columns:
            matrix_shape = (shape[0], math.prod(shape[1:])) if len(shape) >= 2 else shape
            if not hp["weight_decouple"]:
                grad = torch.addcmul(grad, wd, p)
            if sum(matrix_shape) > 1:
                grad_norm = torch.linalg.vector_norm(grad, dim=-1, keepdim=True).clamp(min=hp["g_norm_min"])
                trust = (torch.linalg.vector_norm(p, dim=-1, keepdim=True) / grad_norm).clamp(min=hp["ratio_min"])
                grad = grad * trust
            if factors is None:
                m, v = m_flat, v_flat
                m.lerp_(grad, 1.0 - beta1)
                v.lerp_((grad - m).square(), 1.0 - beta2)
                v_avg = v / (1.0 - beta2 ** t)
                u = m.lerp(grad, 1.0 - beta1)
            else:
                b1, b2 = _expand3(beta1), _expand3(beta2)
                grad = grad.reshape(grad.shape[0], *matrix_shape)
                r, c = factors["v0"][:, :, None], factors["v1"][:, None, :]
                v = (r * c) / r.sum(dim=(-2, -1), keepdim=True).clamp(min=_expand3(eps2))
                m = factors["mc"] * factors["mu"] * factors["mr"]
                m = m.lerp(grad, 1.0 - b1)
                v = v.lerp((grad - m).square(), 1.0 - b2)
                v_avg = v / (1.0 - b2 ** t)
                row_mean, column_mean = v.mean(dim=-1), v.mean(dim=-2)
                importance = torch.softmax(row_mean, dim=-1)[:, :, None] * torch.softmax(column_mean, dim=-1)[:, None]
                m = m.lerp(grad, 1.0 - importance)
                u = m.lerp(grad, 1.0 - b1)
                factors["v0"] = v.sum(dim=-1)
                factors["v1"] = v.sum(dim=-2) / v.sum(dim=(-2, -1)).clamp(min=eps2[:, 0])[:, None]
                tau = hp["tau"]
                imp_c = torch.softmax(row_mean / tau, dim=-1)[:, :, None]
                imp_r = torch.softmax(column_mean / tau, dim=-1)[:, None, :]
                mc = (m * imp_r).sum(dim=-1)[:, :, None]
                mr = (m * imp_c).sum(dim=-2)[:, None, :]
                norms = mc.square().sum(dim=(-2, -1), keepdim=True) * mr.square().sum(dim=(-2, -1), keepdim=True)
                factors["mu"] = (mc.transpose(-1, -2) @ m @ mr.transpose(-1, -2)) / norms.clamp(min=_expand3(eps2))
                factors["mc"], factors["mr"] = mc, mr
            u = (u / (v_avg + _expand(hp["eps1"], v_avg)).sqrt()).reshape(p.shape)
            if hp["weight_decouple"]:
                p.mul_(1.0 - wd * (1.0 if hp["fixed_decay"] else lr))
            p.copy_(torch.addcmul(p, -lr, u))


# ---- AdaNorm ----------------------------------------------------------------------------------------------

AMS_BOUND_EPS = 1e-15  # BaseOptimizer.apply_ams_bound(_foreach)'s exp_avg_sq_eps, under every square root


def _adam_denominator(v, vmax, hp, bias_correction2_sq):
    """``apply_ams_bound_foreach`` then ``/ √(1 − β₂ᵗ)``: (√(v + 1e-15) + ε)/√(1 − β₂ᵗ), v the running maximum
    with ``ams_bound``."""
    if hp["ams_bound"]:
        vmax.copy_(torch.maximum(vmax, v))
        v = vmax
    return ((v + AMS_BOUND_EPS).sqrt() + hp["eps"]) / bias_correction2_sq


@_rule("adanorm", needs=[LAYERS])
class _AdaNorm:
    """AdaNorm (pytorch_optimizer.AdaNorm; Dubey et al. 2023, "AdaNorm: Adaptive Gradient Norm Correction based
    Optimizer for CNNs", arXiv:2210.06364, its Adam instance), parameter tensor by parameter tensor, with ‖g‖ the
    norm of the tensor's gradient: decay first (decoupled x ← x(1 − λη), η unscaled with ``fixed_decay``, or coupled
    g ← g + λx); e ← r·e + (1 − r)‖g‖ (e₀ = 0); s = g·e/‖g‖ when ‖g‖ > 0 and e > ‖g‖, else s = g;
    m ← β₁m + (1 − β₁)s, v ← β₂v + (1 − β₂)g²; x ← x − η/(1 − β₁ᵗ) · m/((√(v + 1e-15) + ε)/√(1 − β₂ᵗ))
    (``ams_bound``: v's running maximum). Deviations from the paper: ε is added before the bias correction of v
    (ε/√(1 − β₂ᵗ) after it) and 1e-15 under the root; weight decay and AMSBound are library options."""

    dim_slots = staticmethod(lambda hp, dim: 2 + int(hp["ams_bound"]) + 1 / dim)  # + exp_grad_norm, shape (1,)

    @staticmethod
    def init(x, hp):
        zeros = torch.zeros_like
        return {"m": zeros(x), "v": zeros(x), "vmax": zeros(x), "norm": None}

    @staticmethod
    def step(x, g, state, hp, t):
        layout = state["layout"]
        lr, beta1, beta2, r = hp["lr"], hp["beta1"], hp["beta2"], hp["r"]
        if hp["weight_decouple"]:
            x.mul_(1.0 - hp["weight_decay"] * (1.0 if hp["fixed_decay"] else lr))
        else:
            g = torch.addcmul(g, hp["weight_decay"], x)
        norms = layout.norms(g)  # [K, L]
        average = state["norm"] if state["norm"] is not None else torch.zeros_like(norms)
        state["norm"] = average = torch.addcmul(average * r, 1.0 - r, norms)
        rescale = (norms > 0) & (average > norms)
        multipliers = layout.spread(torch.where(rescale, average, 1.0))
        divisors = layout.spread(torch.where(rescale, norms, 1.0))
        scaled = g * multipliers / divisors
        m, v = state["m"], state["v"]
        m.lerp_(scaled, 1.0 - beta1)
        v.mul_(beta2)
        v.copy_(torch.addcmul(v, (1.0 - beta2) * g, g))
        denominator = _adam_denominator(v, state["vmax"], hp, (1.0 - beta2 ** t).sqrt())
        x.add_(-(lr / (1.0 - beta1 ** t)) * m / denominator)


# ---- AdaTAM -----------------------------------------------------------------------------------------------

def _normalize_dim0(values: torch.Tensor, shape) -> torch.Tensor:
    """``torch.nn.functional.normalize(·, p=2, dim=0)`` of one parameter tensor, for each row of ``[K, n]``:
    values over the norm along the tensor's first dimension (clamped at 1e-12)."""
    batched = _batched_shape(values, shape)
    norm = torch.linalg.vector_norm(batched, ord=2, dim=1, keepdim=True).clamp_min(1e-12)
    return (batched / norm.expand_as(batched)).reshape(values.shape)


@_rule("adatam", needs=[LAYERS])
class _AdaTAM:
    """AdaTAM (pytorch_optimizer.AdaTAM; Malviya et al. 2024, "Torque-Aware Momentum", arXiv:2412.18790, its
    adaptive (Adam) variant), parameter tensor by parameter tensor: decay first (decoupled x ← x(1 − λη), η unscaled
    with ``fixed_decay``, or coupled g ← g + λx); the alignment c = m/‖m‖ ⊙ g/‖g‖ with the norms along the tensor's
    first dimension (the whole vector for 1-D tensors, each column of a matrix; norms clamped at 1e-12),
    s ← γs + (1 − γ)c (γ = ``decay_rate``), m ← β₁m + ((1 + s)/2 + ε)g, v ← β₂v + (1 − β₂)g², x ← x − η m/(√v + ε).
    Deviations from the paper (whose alignment is one cosine per tensor, S = ⟨m, g⟩/(‖m‖‖g‖), with the same
    damping (1 + ŝ)/2 + ε): the library's alignment is coordinate-wise, the product of m and g each normalised along
    the tensor's first dimension (its sum along that dimension is each column's cosine; on a vector the terms of
    the cosine, not their sum); the AdaTAM moments are not bias-corrected."""

    slots = staticmethod(lambda hp: 3)  # s, exp_avg, exp_avg_sq

    @staticmethod
    def init(x, hp):
        zeros = torch.zeros_like
        return {"s": zeros(x), "m": zeros(x), "v": zeros(x)}

    @staticmethod
    def step(x, g, state, hp, t):
        layout = state["layout"]
        lr, beta1, beta2, eps = hp["lr"], hp["beta1"], hp["beta2"], hp["eps"]
        if hp["weight_decouple"]:
            x.mul_(1.0 - hp["weight_decay"] * (1.0 if hp["fixed_decay"] else lr))
        else:
            g = torch.addcmul(g, hp["weight_decay"], x)
        m = state["m"]
        correlation = torch.cat([_normalize_dim0(part, shape) * _normalize_dim0(grad, shape)
                                 for (part, shape), (grad, _) in zip(_tensors(m, layout), _tensors(g, layout))],
                                dim=-1)
        s = state["s"]
        s.lerp_(correlation, 1.0 - hp["decay_rate"])
        damped = ((s + 1.0) / 2.0 + eps) * g
        m.mul_(beta1).add_(damped)
        v = state["v"]
        v.mul_(beta2)
        v.copy_(torch.addcmul(v, (1.0 - beta2) * g, g))
        x.add_(-lr * m / (v.sqrt() + eps))


# ---- Aida -------------------------------------------------------------------------------------------------

@_rule("aida", needs=[LAYERS])
class _Aida:
    """Aida (pytorch_optimizer.Aida; Zhang, Niwa & Kleijn 2022, "A DNN Optimizer that Improves over AdaBelief by
    Suppression of the Adaptive Stepsize Range", arXiv:2203.13273), parameter tensor by parameter tensor: decay first
    (coupled g ← g + λx by default, or decoupled x ← x(1 − λη), η unscaled with ``fixed_decay``);
    m ← β₁m + (1 − β₁)g; K mutual projections of g and m, starting from (g, m): with the tensor's inner product,
    g ← ⟨g, m⟩/(‖g‖² + ξ) · g and m ← ⟨g, m⟩/(‖m‖² + ξ) · m (both from the same ⟨g, m⟩: the paper calls the first
    m⁽ᵏ⁾, the projection of m on g, and the second g⁽ᵏ⁾; the squared difference is the same); then
    v ← β₂v + (1 − β₂)(m_K − g_K)² + ε and x ← x − η/(1 − β₁ᵗ) · m/((√(v + 1e-15) + ε)/√(1 − β₂ᵗ))
    (``ams_bound``: v's running maximum). ``rectify`` (RAdam's): ρ_t = ρ∞ − 2tβ₂ᵗ/(1 − β₂ᵗ); with ρ_t ≥
    ``n_sma_threshold`` x ← x − η r_t/(1 − β₁ᵗ) · m/(√(v + 1e-15) + ε), r_t RAdam's rectification (with the
    √(1 − β₂ᵗ) inside), else x ← x − η/(1 − β₁ᵗ) · m (``degenerated_to_sgd``) or no step. Deviations from the
    paper (x ← x − η m̂/(√v̂ + ε), v̂ = v/(1 − β₂ᵗ), with v's own + ε as here): the root's ε is added before the bias
    correction (ε/√(1 − β₂ᵗ) after it), with 1e-15 under the root; decay, AMSBound and rectification are library
    options.
    With ``rectify`` and ``n_sma_threshold`` < 4 the class fails (a square root of a negative number where
    4 > ρ_t ≥ threshold), and so does the rule."""

    slots = staticmethod(lambda hp: 2 + int(hp["ams_bound"]))  # exp_avg, exp_avg_var (, max_exp_avg_var)

    @staticmethod
    def init(x, hp):
        zeros = torch.zeros_like
        return {"m": zeros(x), "v": zeros(x), "vmax": zeros(x), "ks": [int(k) for k in hp["k"].flatten().tolist()],
                "betas": list(zip(hp["beta1"].flatten().tolist(), hp["beta2"].flatten().tolist(),
                                  hp["n_sma_threshold"].flatten().tolist()))}

    @staticmethod
    def _rectified(state, hp, t):
        """Per configuration, the class's Python floats: (rt/(1 − β₁ᵗ) multiplier of lr, mode) with mode 2 the
        adaptive step, 1 the SGD step, 0 none."""
        factors, modes = [], []
        for beta1, beta2, threshold in state["betas"]:
            bias_correction1 = 1.0 - math.pow(beta1, t)
            n_sma_max = 2.0 / (1.0 - beta2) - 1.0
            beta2_t = beta2 ** t
            n_sma = n_sma_max - 2 * t * beta2_t / (1.0 - beta2_t)
            if n_sma >= threshold:
                rt = math.sqrt((1.0 - beta2_t) * (n_sma - 4) / (n_sma_max - 4) * (n_sma - 2) / n_sma * n_sma_max
                               / (n_sma_max - 2))
                mode = 2
            else:
                rt = 1.0 if hp["degenerated_to_sgd"] else -1.0
                mode = int(rt > 0)
            factors.append((rt, bias_correction1))
            modes.append(mode)
        return factors, modes

    @classmethod
    def step(cls, x, g, state, hp, t):
        layout = state["layout"]
        lr, beta1, beta2, eps, xi = hp["lr"], hp["beta1"], hp["beta2"], hp["eps"], hp["xi"]
        if hp["weight_decouple"]:
            x.mul_(1.0 - hp["weight_decay"] * (1.0 if hp["fixed_decay"] else lr))
        else:
            g = torch.addcmul(g, hp["weight_decay"], x)
        m, v = state["m"], state["v"]
        m.lerp_(g, 1.0 - beta1)
        ks = torch.tensor(state["ks"], device=x.device)[:, None]
        projected = []
        for (grad, _), (moment, _) in zip(_tensors(g, layout), _tensors(m, layout)):
            proj_g, proj_m = grad, moment
            for i in range(max(state["ks"])):
                product = (proj_g * proj_m).sum(dim=-1, keepdim=True)
                scale_g = product / (proj_g.square().sum(dim=-1, keepdim=True) + xi)
                scale_m = product / (proj_m.square().sum(dim=-1, keepdim=True) + xi)
                active = i < ks
                proj_g, proj_m = torch.where(active, proj_g * scale_g, proj_g), torch.where(active, proj_m * scale_m,
                                                                                            proj_m)
            projected.append(proj_m - proj_g)
        residual = projected[0] if layout.single else torch.cat(projected, dim=-1)
        v.mul_(beta2)
        v.copy_(torch.addcmul(v, (1.0 - beta2) * residual, residual) + eps)
        vmax = state["vmax"]
        if hp["ams_bound"]:
            vmax.copy_(torch.maximum(vmax, v))
            denominator = (vmax + AMS_BOUND_EPS).sqrt() + eps
        else:
            denominator = (v + AMS_BOUND_EPS).sqrt() + eps
        if not hp["rectify"]:
            step_size = lr / (1.0 - beta1 ** t)
            x.add_(-step_size * m / (denominator / (1.0 - beta2 ** t).sqrt()))
            return
        factors, modes = cls._rectified(state, hp, t)
        column = functools.partial(torch.tensor, dtype=x.dtype, device=x.device)
        rt, bias_correction1 = (column(values)[:, None] for values in zip(*factors))
        step_size = lr * rt / bias_correction1
        mode = column(modes)[:, None]
        adaptive = x + -step_size * m / denominator
        sgd = torch.addcmul(x, -step_size, m)
        x.copy_(torch.where(mode == 2, adaptive, torch.where(mode == 1, sgd, x)))


# ---- AdaShift ---------------------------------------------------------------------------------------------

@_rule("adashift", needs=[LAYERS])
class _AdaShift:
    """AdaShift (pytorch_optimizer.AdaShift; Zhou et al. 2019, "AdaShift: Decorrelation and Convergence of Adaptive
    Learning Rate Methods", arXiv:1810.00143, with φ = max), parameter tensor by parameter tensor, with
    n = ``keep_num``, W = Σ_{i<n} β₁ⁱ: while fewer than n gradients are queued (t ≤ n), m ← β₁m + g/W and no step;
    afterwards, with g_{t−n} the oldest queued gradient, m ← β₁(m − β₁ⁿ⁻¹g_{t−n}/W) + g/W (the weighted sum
    Σ_{i<n} β₁ⁱ g_{t−i}/W of the last n gradients), v ← β₂v + (1 − β₂)·max(g_{t−n}²) (the maximum over the tensor,
    so one second moment per tensor, spread over its coordinates), x ← x − η m/(√(v/(1 − β₂^(t−n))) + ε).
    Deviations from the paper (x ← x − α m_t/√v_t): the library adds ε to the root and bias-corrects v by the
    number t − n of its updates (the class's ``max(1, t − n)`` never binds once a step is taken); its block for φ is
    the whole parameter tensor (the library's default ``reduce_func=torch.max``, not settable in optbench). The
    state counts the queue full (n gradients, as from step n on): ``2 + n`` slots."""

    slots = staticmethod(lambda hp: 2 + int(hp["keep_num"]))  # exp_avg, exp_avg_sq, the queue of keep_num gradients

    @staticmethod
    def init(x, hp):
        ks = [int(k) for k in hp["keep_num"].flatten().tolist()]
        first, last = [], []
        for beta1, n in zip(hp["beta1"].flatten().tolist(), ks):
            exp_weight_sum = sum(beta1 ** i for i in range(n))
            first.append(beta1 ** (n - 1) / exp_weight_sum)
            last.append(1.0 / exp_weight_sum)
        column = functools.partial(torch.tensor, dtype=x.dtype, device=x.device)
        return {"m": torch.zeros_like(x), "v": torch.zeros_like(x), "ks": ks, "queue": [],
                "beta2s": hp["beta2"].flatten().tolist(), "first": column(first)[:, None],
                "last": column(last)[:, None], "keep": column(ks)[:, None]}

    @staticmethod
    def step(x, g, state, hp, t):
        layout = state["layout"]
        ks, queue = state["ks"], state["queue"]
        ready = (t - 1) >= state["keep"]  # [K, 1]: n gradients queued before this step
        offset = None
        if bool(ready.any()):
            offset = torch.zeros_like(x)
            for n in sorted(set(ks)):
                if t - 1 >= n:
                    offset = torch.where(state["keep"] == n, queue[-n], offset)
        queue.append(g.clone())
        del queue[:-max(ks)]
        m, v = state["m"], state["v"]
        beta1, beta2 = hp["beta1"], hp["beta2"]
        waiting = torch.addcmul(m * beta1, state["last"], g)
        if offset is None:
            m.copy_(waiting)
            return
        shifted = torch.addcmul(torch.addcmul(m, -state["first"], offset) * beta1, state["last"], g)
        m.copy_(torch.where(ready, shifted, waiting))
        squares = offset.square()
        reduced = layout.spread(torch.stack([part.amax(dim=-1) for part in squares.split(layout.sizes, dim=-1)],
                                            dim=-1))
        v.copy_(torch.where(ready, v.lerp(reduced.expand_as(v), 1.0 - beta2), v))
        bias_correction = torch.tensor([1.0 - math.pow(b, max(1, t - n)) for b, n in zip(state["beta2s"], ks)],
                                       dtype=x.dtype, device=x.device)[:, None]
        update = m / ((v / bias_correction).sqrt() + hp["eps"])
        x.copy_(torch.where(ready, torch.addcmul(x, -hp["lr"], update), x))


# ---- Alice ------------------------------------------------------------------------------------------------

ALICE_SWITCH_DTYPE = torch.float32  # Alice.switch's subspace iteration and eigh run in float32 whatever the dtype


def _alice_switch(q: torch.Tensor, u_prev: torch.Tensor, rank: int, leading_basis: int, generator) -> torch.Tensor:
    """``Alice.switch`` on one configuration's matrices: one step of subspace iteration in float32 from the previous
    basis, the ``leading_basis`` eigenvectors of largest eigenvalue, completed by random columns of the orthogonal
    complement (``torch.randperm`` from ``generator``) up to ``rank``."""
    a, u = q.to(ALICE_SWITCH_DTYPE), u_prev.to(ALICE_SWITCH_DTYPE)
    u, _ = torch.linalg.qr(a @ u)
    vals, vecs = torch.linalg.eigh(u.T @ a @ u)
    vecs = u @ vecs
    order = torch.argsort(vals, descending=True)
    u_t1 = vecs[:, order[:leading_basis]]
    if rank == leading_basis:
        return u_t1.to(q.dtype)
    u_c, _ = torch.linalg.qr(vecs, mode="complete")
    u_c = u_c[:, rank:]
    if u_c.size(1) < rank - leading_basis:
        u_c = torch.cat([u_c, vecs[:, order[leading_basis:]]], dim=1)
    indices = torch.randperm(u_c.size(1), device=q.device, generator=generator())[:rank - leading_basis]
    return torch.cat([u_t1, u_c[:, indices]], dim=1).to(q.dtype)


def _per_matrix(function, *batches: torch.Tensor) -> torch.Tensor:
    """``function`` of each configuration's matrices (fresh contiguous copies), stacked: the class's matrix products
    exactly (a batched product rounds differently, and Alice's projection residual G − Uσ cancels to rounding)."""
    return torch.stack([function(*(matrix.clone() for matrix in matrices)) for matrices in zip(*batches)])


def _batched_matrix(function, *batches: torch.Tensor) -> torch.Tensor:
    """``function`` of the ``[K, …, …]`` batches at once (batched matrix products)."""
    return function(*batches)


@_rule("alice", needs=[LAYERS, SEEDS])
class _Alice:
    """Alice (pytorch_optimizer.Alice; Gong et al. 2025, "Towards Efficient Optimizer Design for LLM via Structured
    Fisher Approximation with a Low-Rank Extension", arXiv:2502.07752), parameter tensor by parameter
    tensor, each as a matrix G ∈ ℝ^{m×n} (a vector as a column, ndim > 2 as [shape[0], rest]), r = min(rank, m),
    l = min(leading_basis, r): decay first (decoupled x ← x(1 − λη), η unscaled with ``fixed_decay``, or coupled
    g ← g + λx). At the first step and every ``update_interval`` steps the basis U ∈ ℝ^{m×r} is switched: with
    Q̃ = β₃UQUᵀ + (1 − β₃)GGᵀ, one subspace iteration from U (QR of Q̃U, eigenvectors of its Rayleigh quotient, in
    float32), the l leading eigenvectors, and r − l random columns of their orthogonal complement. Then σ = UᵀG,
    Q ← β₃Q + (1 − β₃)σσᵀ, M ← β₁M + (1 − β₁)σ, V ← β₂V + (1 − β₂)σ²; the compensation p ← max(1e-8,
    β₁p + (1 − β₁)(1ᵀG² − 1ᵀσ²)), C = √(m − r)(G − Uσ)/√p, limited in norm growth: C ← C·γ/max(‖C‖/φ, γ)
    (when φ > 0), φ ← ‖C‖; X ← X − ηα(U(M/(√V + ε)) + α_c C). Where r = m (every tensor with at most ``rank``
    rows, every analytic problem up to 256 coordinates) C = 0 and the rule is Adam in a rotating eigenbasis.
    The random columns (only where l < r: tensors with more than ``leading_basis`` rows) come from torch's global
    generator in the class, which the engines seed per run and step (:mod:`optbench.engines.step_rng`): the rule
    draws them from a generator seeded alike, one per configuration (``SEEDS``). The library's choices, to note
    against the paper (whose text this rule was not checked against beyond the update above): the compensation's
    running mean p uses β₁; the switch runs in float32 whatever the parameters' dtype; the first switch iterates
    from U = 0, whose QR is the first r coordinate axes, so with r < m the first basis is not the leading
    eigenvectors of GGᵀ (with r = m it is)."""

    # U, Q, m, v, p on a [dim] vector (a [dim, 1] matrix): U is dim × r, Q r × r (phi becomes a 0-d tensor)
    dim_slots = staticmethod(lambda hp, dim: (dim * min(hp["rank"], dim) + min(hp["rank"], dim) ** 2
                                              + 2 * min(hp["rank"], dim) + 1) / dim)

    @staticmethod
    def init(x, hp):
        def floats(name):
            return hp[name].flatten().tolist()

        return {"tensors": None, "ranks": [int(r) for r in floats("rank")],
                "leading": [int(n) for n in floats("leading_basis")],
                "intervals": [int(n) for n in floats("update_interval")], "beta3": floats("beta3")}

    @staticmethod
    def _matrix_shape(shape):
        if len(shape) < 2:
            return (math.prod(shape), 1)
        return (shape[0], math.prod(shape[1:]))

    @classmethod
    def _tensor_state(cls, x, state, layout):
        tensors = []
        for shape in layout.shapes:
            rows, cols = cls._matrix_shape(shape)
            groups = {}
            for k, rank in enumerate(state["ranks"]):
                r = min(rank, rows)
                groups.setdefault((r, min(state["leading"][k], r)), []).append(k)
            batches = []
            for (r, leading), members in groups.items():
                size = len(members)
                batches.append({"rank": r, "leading": leading, "index": torch.tensor(members, device=x.device),
                                "members": members, "U": x.new_zeros(size, rows, r), "Q": x.new_zeros(size, r, r),
                                "m": x.new_zeros(size, r, cols), "v": x.new_zeros(size, r, cols),
                                "p": x.new_zeros(size, 1, cols), "phi": x.new_zeros(size, 1, 1)})
            tensors.append(batches)
        return tensors

    @classmethod
    def step(cls, x, g, state, hp, t):
        layout = state["layout"]
        if state["tensors"] is None:
            state["tensors"] = cls._tensor_state(x, state, layout)
        first = t == 1  # the class's state is created at the first step: a switch from U = 0
        lr, wd = hp["lr"], hp["weight_decay"]
        if hp["weight_decouple"]:
            x.mul_(1.0 - wd * (1.0 if hp["fixed_decay"] else lr))
        else:
            g = torch.addcmul(g, wd, x)
        switching = [k for k, interval in enumerate(state["intervals"]) if first or t % interval == 0]
        generators: dict[int, torch.Generator] = {}

        def generator_of(k):
            def get():
                if k not in generators:
                    generators[k] = torch.Generator(device=x.device).manual_seed(step_seed(state["seeds"][k], t - 1))
                return generators[k]
            return get

        updates = torch.empty_like(x)
        columns = zip(_tensors(g, layout), _tensors(updates, layout), state["tensors"])
        for (grad_flat, shape), (update_flat, _), batches in columns:
            rows, cols = cls._matrix_shape(shape)
            for batch in batches:
                index, members = batch["index"], batch["members"]
                pick = (lambda column: column) if len(members) == x.shape[0] else (
                    lambda column, index=index: column.index_select(0, index))
                grad = pick(grad_flat).reshape(len(members), rows, cols)
                beta1, beta2, beta3 = (pick(hp[name])[:, :, None] for name in ("beta1", "beta2", "beta3"))
                u, q, m, v = batch["U"], batch["Q"], batch["m"], batch["v"]
                for i, k in enumerate(members):
                    if k in switching:
                        b3 = state["beta3"][k]
                        u_k, q_k, g_k = u[i].clone(), q[i].clone(), grad[i].clone()
                        q_t = b3 * (u_k @ q_k @ u_k.T) + (1.0 - b3) * (g_k @ g_k.T)
                        u[i] = _alice_switch(q_t, u_k, batch["rank"], batch["leading"], generator_of(k))
                # with r < m the residual G − Uσ cancels to rounding, which the compensation divides by √p ≈ 0:
                # the class's products exactly, one configuration at a time; with r = m it is 0 (√(m − r) = 0)
                product = _per_matrix if batch["rank"] < rows else _batched_matrix
                sigma = product(lambda u_k, g_k: u_k.transpose(-1, -2) @ g_k, u, grad)
                q.lerp_(product(lambda s_k: s_k @ s_k.transpose(-1, -2), sigma), 1.0 - beta3)
                m.lerp_(sigma, 1.0 - beta1)
                v.lerp_(sigma.pow(2), 1.0 - beta2)
                p = batch["p"]
                p.lerp_(grad.pow(2).sum(dim=-2, keepdim=True) - sigma.pow(2).sum(dim=-2, keepdim=True), 1.0 - beta1)
                p.clamp_min_(1e-8)
                compensation = math.sqrt(rows - batch["rank"]) * (grad - product(torch.matmul, u, sigma)) / p.sqrt()
                phi = batch["phi"]
                norm = torch.linalg.vector_norm(compensation, dim=(-2, -1), keepdim=True)
                gamma = pick(hp["gamma"])[:, :, None]
                limit = torch.where(phi > 0, gamma / torch.maximum(norm / phi, gamma), torch.ones_like(phi))
                compensation = compensation * limit
                batch["phi"] = torch.linalg.vector_norm(compensation, dim=(-2, -1), keepdim=True)
                update = product(torch.matmul, u, m / (v.sqrt() + pick(hp["eps"])[:, :, None]))
                update = torch.addcmul(update, pick(hp["alpha_c"])[:, :, None], compensation)
                update = update.reshape(len(members), rows * cols)
                if len(members) == x.shape[0]:
                    update_flat.copy_(update)
                else:
                    update_flat.index_copy_(0, index, update)
        x.copy_(torch.addcmul(x, -lr * hp["alpha"], updates))


# ---- FlashAdamW -------------------------------------------------------------------------------------------

FLASH_GROUP_SIZE = 32  # pytorch_optimizer.optimizer.flash_adamw.GROUP_SIZE: values per quantisation scale


def _flash_groups(values: torch.Tensor) -> torch.Tensor:
    """One parameter tensor's ``[K, n]`` float32 values, zero-padded to whole groups: ``[K, G, 32]``."""
    pad = (-values.shape[-1]) % FLASH_GROUP_SIZE
    if pad:
        values = torch.cat([values, values.new_zeros(values.shape[0], pad)], dim=-1)
    return values.reshape(values.shape[0], -1, FLASH_GROUP_SIZE)


def _flash_roundtrip(values: torch.Tensor, signed: bool, sqrt: bool, softsign: bool) -> torch.Tensor:
    """``dequantize_state(*quantize_state(·))`` of one parameter tensor per row: the float32 state the class
    reads at the next step after storing ``values`` as grouped 8-bit integers with float16 scales."""
    n = values.shape[-1]
    values = values.to(torch.float32)
    if sqrt:
        values = values.clamp_min(0.0).sqrt()
    groups = _flash_groups(values)
    scales = groups.abs().amax(dim=-1).clamp_min(1e-12)
    normalized = groups / scales.unsqueeze(-1)
    if softsign:
        normalized = 2.0 * normalized / (1.0 + normalized.abs())
    quant_max, quant_min = (127.0, -127.0) if signed else (255.0, 0.0)
    quantized = torch.round(normalized * quant_max).clamp_(quant_min, quant_max)
    quantized = quantized.reshape(quantized.shape[0], -1)[:, :n]  # the int8/uint8 values, exactly, in float32
    groups = _flash_groups(quantized) / quant_max
    if softsign:
        groups = groups / (2.0 - groups.abs()).clamp_min(1e-12)
    restored = (groups * scales.to(torch.float16).to(torch.float32).unsqueeze(-1)).reshape(groups.shape[0], -1)[:, :n]
    return restored.pow(2) if sqrt else restored


def _flash_bytes(hp, dim):
    """With ``quantize``: state bytes per parameter of a ``[dim]`` vector, whatever its dtype (one byte per moment
    and parameter plus two float16 scales per group of 32); else None (two moments in the parameters' dtype)."""
    if not hp["quantize"]:
        return None
    return (2 * dim + 2 * 2 * math.ceil(dim / FLASH_GROUP_SIZE)) / dim


@_rule("flashadamw", needs=[LAYERS])
class _FlashAdamW:
    """FlashAdamW (pytorch_optimizer.FlashAdamW; "FlashOptim: Optimizers for Memory-Efficient Training",
    arXiv:2602.23349): AdamW whose moments are stored in 8 bits between steps, parameter tensor by parameter
    tensor. Decoupled decay x ← x(1 − λη) (``decouple_lr``: λ/η₀ for λ, η₀ the lr at construction, so the decay
    follows a schedule without the base lr); m ← β₁m + (1 − β₁)g, v ← β₂v + (1 − β₂)g²,
    x ← x − η (m/(1 − β₁ᵗ))/(√(v/(1 − β₂ᵗ)) + ε). With ``quantize`` (the default) each moment is then stored as
    Q(·): in groups of 32 consecutive values of the flattened tensor, with s the group's largest |value| (in float32,
    kept as float16), m as round(127·φ(m/s)) with the softsign φ(z) = 2z/(1 + |z|) and v as round(255·√v/s_√v);
    the next step reads back s·φ⁻¹(q/127) and (s·q/255)². The arithmetic is in the parameters' dtype (float64
    here), the stored moments in float32 before quantisation. Refused: ``master_weight_bits`` (low-precision
    master weights; the class raises for float32 parameters, float64 ones ignore it), ``check_numerics`` (a check
    for a low-precision parameter's resolution) and ``fused`` (the class raises). Deviations from the paper: not
    checked against its text; the library's portable backend, as described."""

    slots = staticmethod(lambda hp: 2)  # exp_avg, exp_avg_sq; quantized: fixed_bytes
    fixed_bytes = staticmethod(_flash_bytes)

    @staticmethod
    def refuses(hp):
        if hp.get("master_weight_bits") is not None:
            return "master_weight_bits (low-precision master weights) is not reproduced"
        if hp.get("check_numerics"):
            return "check_numerics (the class's resolution check for low-precision parameters) is not reproduced"
        if hp.get("fused"):
            return "fused=True (the class has no fused kernels: it raises)"
        return None

    @staticmethod
    def init(x, hp):
        zeros = torch.zeros_like
        return {"m": zeros(x), "v": zeros(x), "base_lr": hp["lr"].clone()}

    @staticmethod
    def step(x, g, state, hp, t):
        layout = state["layout"]
        lr, beta1, beta2, wd = hp["lr"], hp["beta1"], hp["beta2"], hp["weight_decay"]
        if hp["decouple_lr"]:
            wd = torch.where((wd > 0.0) & (lr > 0.0), wd / state["base_lr"], wd)
        x.mul_(1.0 - wd * lr)
        m, v = state["m"], state["v"]
        m.lerp_(g, 1.0 - beta1)
        v.mul_(beta2)
        v.copy_(torch.addcmul(v, (1.0 - beta2) * g, g))
        denominator = (v / (1.0 - beta2 ** t)).sqrt() + hp["eps"]
        x.add_(-lr * (m / (1.0 - beta1 ** t)) / denominator)
        if hp["quantize"]:
            for (moment, _), (second, _) in zip(_tensors(m, layout), _tensors(v, layout)):
                moment.copy_(_flash_roundtrip(moment, signed=True, sqrt=False, softsign=True))
                second.copy_(_flash_roundtrip(second, signed=False, sqrt=True, softsign=False))
