"""Batched rules of thirteen Adam-family pytorch_optimizer classes: AdaBelief, Yogi, AdamP, LaProp, QHAdam, DiffGrad,
PAdam, AdaMod, AdamC, EXAdam, AdaSmooth, RAdam (``po.radam``) and AdaMax (``po.adamax``).

Same contract as :mod:`optbench.engines.batched_rules` (registered into its ``RULES`` table): ``x`` and ``g`` are
``[K, P]``, float hyperparameters ``[K, 1]`` tensors (integer ones too: ``n_sma_threshold``), strings and booleans
shared by the group. Each rule follows the code path the loop engine's class object takes on a CPU, operation for
operation: the ``foreach`` path where the class enables it by default (``foreach=None`` and dense real tensors:
every class here but AdamP and EXAdam, whose default ``foreach=False`` takes the per-parameter loop, and
AdaBelief, which leaves its foreach path for the loop with ``rectify`` or ``ams_bound``). A fused kernel called with
a Python scalar is called with the scalar as a ``[K, 1]`` column, which rounds as the class does on a CPU (as in
:mod:`optbench.engines.rules_misc`): ``a.add_(b, alpha=s)`` is ``torch.addcmul(a, s, b)``, ``a.addcmul_(b, c,
value=s)`` is ``torch.addcmul(a, s·b, c)``, ``a.addcdiv_(b, c, value=s)`` is ``a + s·b/c``.

Every option of the registry entries is reproduced. The classes' own keyword-only group options that optbench
cannot set (``adanorm``, ``adam_debias``, ``cautious``, ``use_gc``, AdamC's ``normalized``) take their defaults.
All rules are elementwise except AdamP, whose projection tests the cosine similarity of the gradient and the weights
per output channel and per tensor: ``LAYERS``, tensor by tensor (an analytic problem's ``[d]`` vector is 1-D and is
never projected). The shared helpers mirror ``BaseOptimizer``: ``apply_weight_decay`` (:func:`_decay`),
``apply_ams_bound`` (:func:`_ams_bound`) and ``get_rectify_step_size`` (:func:`_rectify`).
"""

from __future__ import annotations

import math

import torch

from optbench.engines.batched_rules import LAYERS, _rule, _zeros, adam_moments

AMS_BOUND_EPS = 1e-15  # BaseOptimizer.apply_ams_bound's exp_avg_sq_eps, under the square root of the denominator



def _decay(x, g, hp, lr, ratio=None):
    """``BaseOptimizer.apply_weight_decay`` (and its foreach twin): decoupled x ← x(1 − λ·(1 if fixed_decay else
    lr)·ratio), or coupled g ← g + λx (``grad.add_(p, alpha=λ)``); returns the gradient."""
    wd = hp["weight_decay"]
    if hp["weight_decouple"]:
        factor = wd * (1.0 if hp["fixed_decay"] else lr)
        x.mul_(1.0 - (factor if ratio is None else factor * ratio))
        return g
    return torch.addcmul(g, wd, x)


def _ams_bound(v, state, hp, eps, floor=AMS_BOUND_EPS):
    """``BaseOptimizer.apply_ams_bound``: √(v + floor) + ε, with v ← the running maximum ``state['vmax']`` under
    ``ams_bound``."""
    if hp["ams_bound"]:
        torch.maximum(state["vmax"], v, out=state["vmax"])
        v = state["vmax"]
    return (v + floor).sqrt() + eps


def _rectify(hp, t, lr, degenerated_to_sgd):
    """``BaseOptimizer.get_rectify_step_size`` (is_rectify=True): ρ∞ = 2/(1 − β₂) − 1, ρ_t = ρ∞ − 2tβ₂ᵗ/(1 − β₂ᵗ);
    where ρ_t ≥ threshold the step size is η·r_t, r_t = √((1 − β₂ᵗ)(ρ_t − 4)/(ρ∞ − 4)·(ρ_t − 2)/ρ_t·ρ∞/(ρ∞ − 2)),
    elsewhere η (``degenerated_to_sgd``) or −η (no step). Returns the step size and the rectified mask, ``[K, 1]``."""
    beta2 = hp["beta2"]
    n_sma_max = 2.0 / (1.0 - beta2) - 1.0
    beta2_t = beta2 ** t
    n_sma = n_sma_max - 2 * t * beta2_t / (1.0 - beta2_t)
    rectified = n_sma >= hp["n_sma_threshold"]
    rt = ((1.0 - beta2_t) * (n_sma - 4) / (n_sma_max - 4) * (n_sma - 2) / n_sma * n_sma_max / (n_sma_max - 2)).sqrt()
    rt = torch.where(rectified, rt, 1.0 if degenerated_to_sgd else -1.0)
    return lr * rt, rectified


def _moments(g, state, hp):
    """m ← lerp(m, g, 1 − β₁) (``exp_avg.lerp_``), v ← β₂v + (1 − β₂)g² (``mul_(β₂).addcmul_(g, g, value=1 − β₂)``)."""
    beta2 = hp["beta2"]
    state["m"].lerp_(g, 1.0 - hp["beta1"])
    v = state["v"].mul_(beta2)
    v.addcmul_((1.0 - beta2) * g, g)


# ---- AdaBelief ------------------------------------------------------------------------------------------

@_rule("adabelief")
class _AdaBelief:
    """AdaBelief (pytorch_optimizer.AdaBelief; Zhuang et al. 2020, "AdaBelief Optimizer: Adapting Stepsizes by the
    Belief in Observed Gradients", Algorithm 2): m ← β₁m + (1 − β₁)g, s ← β₂s + (1 − β₂)(g − m)² + ε,
    x ← x − η/(1 − β₁ᵗ) · m/(√s/√(1 − β₂ᵗ) + ε) (= η m̂/(√ŝ + ε)). Decay first: decoupled x ← x(1 − λη) (the
    default; η unscaled with ``fixed_decay``) or coupled g ← g + λx. ``ams_bound``: s in the denominator is its
    running maximum. ``rectify`` (RAdam's rectification, :func:`_rectify`): where ρ_t ≥ ``n_sma_threshold``,
    x ← x − η r_t/(1 − β₁ᵗ) · m/(√s + ε) (r_t carries √(1 − β₂ᵗ)); below it, x ← x − η/(1 − β₁ᵗ) · m with
    ``degenerated_to_sgd``, else no step. Deviations from the paper: none at the defaults (ε = 1e-16 is the
    library's default); rectify, AMSBound and the decay variants are the authors' options."""

    slots = staticmethod(lambda hp: 2 + int(hp["ams_bound"]))  # exp_avg, exp_avg_var (, max_exp_avg_var)

    @staticmethod
    def init(x, hp):
        state = {"m": _zeros(x), "v": _zeros(x)}
        if hp["ams_bound"]:
            state["vmax"] = _zeros(x)
        return state

    @staticmethod
    def step(x, g, state, hp, t):
        lr, beta1, beta2, eps = hp["lr"], hp["beta1"], hp["beta2"], hp["eps"]
        bias_correction1 = 1.0 - beta1 ** t
        if hp["rectify"]:
            step_size, rectified = _rectify(hp, t, lr, hp["degenerated_to_sgd"])
        else:
            step_size, rectified = lr, None
        step_size = step_size / bias_correction1
        g = _decay(x, g, hp, lr)
        m, s = state["m"], state["v"]
        m.lerp_(g, 1.0 - beta1)
        residual = g - m
        s.mul_(beta2)
        s.addcmul_((1.0 - beta2) * residual, residual)
        s.add_(eps)
        if rectified is None:  # the foreach path, or the per-parameter one under ams_bound: the same operations
            denominator = _ams_bound(s, state, hp, 0.0, 0.0) / (1.0 - beta2 ** t).sqrt() + eps
            x.add_(-step_size * m / denominator)
            return
        denominator = _ams_bound(s, state, hp, 0.0, 0.0) + eps
        adaptive = x + -step_size * m / denominator
        sgd = torch.where(step_size > 0, torch.addcmul(x, -step_size, m), x)
        x.copy_(torch.where(rectified, adaptive, sgd))


# ---- Yogi -----------------------------------------------------------------------------------------------

@_rule("yogi")
class _Yogi:
    """Yogi (pytorch_optimizer.Yogi; Zaheer et al. 2018, "Adaptive Methods for Nonconvex Optimization", NeurIPS,
    Algorithm 2): m ← β₁m + (1 − β₁)g, v ← v − (1 − β₂)·sign(v − g²)·g², x ← x − η m/(√v + ε). Decay first
    (decoupled by default, coupled g ← g + λx). Deviations from the paper: m₀ = v₀ = ``initial_accumulator``
    (1e-6) where Algorithm 2 starts from m₀ = v₀ = 0, and bias corrections as Adam's,
    x ← x − η/(1 − β₁ᵗ) · m/(√v/√(1 − β₂ᵗ) + ε)."""

    slots = staticmethod(lambda hp: 2)  # exp_avg, exp_avg_sq

    @staticmethod
    def init(x, hp):
        return {"m": _zeros(x) + hp["initial_accumulator"], "v": _zeros(x) + hp["initial_accumulator"]}

    @staticmethod
    def step(x, g, state, hp, t):
        lr, beta1, beta2 = hp["lr"], hp["beta1"], hp["beta2"]
        step_size = lr / (1.0 - beta1 ** t)
        g = _decay(x, g, hp, lr)
        m, v = state["m"], state["v"]
        m.lerp_(g, 1.0 - beta1)
        grad_p2 = g * g
        signs = (v - grad_p2).sign()
        v.addcmul_(-(1.0 - beta2) * signs, grad_p2)
        denominator = v.sqrt() / (1.0 - beta2 ** t).sqrt() + hp["eps"]
        x.add_(-step_size * m / denominator)


# ---- AdamP ----------------------------------------------------------------------------------------------

def _abs_cosine(a, b, eps):
    """|cos(a, b)| along the last dimension, as ``torch.nn.functional.cosine_similarity`` (each norm clamped to at
    least ε) computes it: ``[K, rows, n] -> [K, rows]``, with a per-configuration ε ``[K, 1, 1]``."""
    a_norm = torch.linalg.vector_norm(a, dim=-1, keepdim=True).clamp_min(eps)
    b_norm = torch.linalg.vector_norm(b, dim=-1, keepdim=True).clamp_min(eps)
    return ((a / a_norm) * (b / b_norm)).sum(-1).abs()


def _project(p, grad, update, shape, hp):
    """AdamP's ``projection`` on one tensor with ndim > 1 (``[K, n]`` columns; the update is returned, projected where
    it applies) and the tensor's decay ratio ``[K, 1]``: per output channel (rows of the ``[shape[0], n/shape[0]]``
    view) if max |cos(g, x)| < δ/√(n/shape[0]), else for the whole tensor if |cos(g, x)| < δ/√n, the radial component
    is removed, u ← u − x̂ (x̂·u) with x̂ = x/(‖x‖ + ε), and the decay ratio is ``wd_ratio`` (1 otherwise)."""
    K, n = p.shape
    rows = shape[0]
    eps = hp["eps"][:, :, None]
    delta = hp["delta"]
    channel = _abs_cosine(grad.reshape(K, rows, -1), p.reshape(K, rows, -1), eps).amax(-1)[:, None] \
        < delta / math.sqrt(n // rows)
    layer = _abs_cosine(grad.reshape(K, 1, n), p.reshape(K, 1, n), eps) < delta / math.sqrt(n)
    projected = []
    for view_rows in (rows, 1):
        view = p.reshape(K, view_rows, -1)
        unit = view / (torch.linalg.vector_norm(view, dim=-1, keepdim=True) + eps)
        moved = update.reshape(K, view_rows, -1)
        radial = (unit * moved).sum(-1, keepdim=True)
        projected.append((moved - unit * radial).reshape(K, n))
    update = torch.where(channel, projected[0], torch.where(layer, projected[1], update))
    ratio = torch.where(channel | layer, hp["wd_ratio"], 1.0)
    return update, ratio


@_rule("adamp", needs=[LAYERS])
class _AdamP:
    """AdamP (pytorch_optimizer.AdamP; Heo et al. 2021, "AdamP: Slowing Down the Slowdown for Momentum Optimizers on
    Scale-invariant Weights", ICLR, Algorithm 2), the per-parameter path (the class's default ``foreach=False``):
    m ← β₁m + (1 − β₁)g, v ← β₂v + (1 − β₂)g², u = m·√(1 − β₂ᵗ)/(√v + ε) (Nesterov: lerp(m, g, 1 − β₁) for m);
    on every parameter tensor with ndim > 1 whose gradient is nearly orthogonal to the weights (per output channel,
    max |cos(g, x)| < δ/√(channel size), else for the whole tensor, |cos(g, x)| < δ/√size: a scale-invariant
    weight), u ← u − x̂(x̂·u) with x̂ = x/(‖x‖ + ε) per channel or per tensor, and the tensor's decay is scaled by
    ``wd_ratio``; then decoupled decay x ← x(1 − λη·ratio) (η unscaled with ``fixed_decay``) and
    x ← x − η/(1 − β₁ᵗ)·u. 1-D tensors (biases, an analytic problem's vector) are never projected.
    Deviations from the paper: bias corrections of m and v (as the authors' code); coupled decay
    (``weight_decouple=False``) adds λx to the gradient after the moments and the update used it, so it has no
    effect; the channel test comes first and the whole-tensor one only when it fails (the authors' code)."""

    slots = staticmethod(lambda hp: 2)  # exp_avg, exp_avg_sq

    init = staticmethod(adam_moments)

    @staticmethod
    def step(x, g, state, hp, t):
        lr, beta1, beta2 = hp["lr"], hp["beta1"], hp["beta2"]
        step_size = lr / (1.0 - beta1 ** t)
        layout = state["layout"]
        _moments(g, state, hp)
        m, v = state["m"], state["v"]
        inverse = (v.sqrt() + hp["eps"]).reciprocal() * (1.0 - beta2 ** t).sqrt()
        perturb = (m.lerp(g, 1.0 - beta1) if hp["nesterov"] else m) * inverse
        ratios = None
        if layout.has_matrices:
            updates, ratio_list = [], []
            parts = zip(x.split(layout.sizes, dim=-1), g.split(layout.sizes, dim=-1),
                        perturb.split(layout.sizes, dim=-1), layout.shapes)
            for p, grad, update, shape in parts:
                if len(shape) > 1:
                    update, ratio = _project(p, grad, update, shape, hp)
                else:
                    ratio = torch.ones_like(lr)
                updates.append(update)
                ratio_list.append(ratio)
            perturb = torch.cat(updates, dim=-1)
            ratios = layout.spread(torch.cat(ratio_list, dim=-1))
        if hp["weight_decouple"]:
            _decay(x, g, hp, lr, ratios)
        x.addcmul_(-step_size, perturb)


# ---- LaProp ---------------------------------------------------------------------------------------------

@_rule("laprop")
class _LaProp:
    """LaProp (pytorch_optimizer.LaProp; Ziyin, Wang & Ueda 2020, "LaProp: Separating Momentum and Adaptivity in
    Adam", Algorithm 1): v ← β₂v + (1 − β₂)g², m ← β₁m + (1 − β₁)·g/(√(v/(1 − β₂ᵗ)) + ε), x ← x − η m/(1 − β₁ᵗ):
    the gradient is normalised before the momentum. The library's form: the learning rate enters the momentum,
    m ← β₁m + (1 − β₁)η_t·g·√(1 − β₂ᵗ)/(√(v + 1e-15) + ε), and the step is x ← x − m/c_t with c_t = ℓ_t/η_t,
    ℓ_t ← β₁ℓ_{t−1} + (1 − β₁)η_t (ℓ₀ = 0; c_t = 1 when η_t = 0), which is 1 − β₁ᵗ under a constant lr and
    follows a schedule. ``centered`` (after ``steps_before_using_centered`` steps): v − μ² in place of v with
    μ ← lerp(μ, g, 1 − β₂); ``ams_bound``: the running maximum of it. Decay after the step: decoupled
    x ← x(1 − λη) (η unscaled with ``fixed_decay``). Deviations from the paper: ε is added before the bias
    correction of v (with 1e-15 under the root), the step −1/c_t is rounded to float32 (the class makes a float32
    tensor of it), and coupled decay (``weight_decouple=False``) adds λx to the gradient after the step used it,
    so it has no effect."""

    slots = staticmethod(lambda hp: 2 + int(hp["centered"]) + int(hp["ams_bound"]))

    @staticmethod
    def init(x, hp):
        state = {"m": _zeros(x), "v": _zeros(x), "lr_avg": _zeros(hp["lr"])}
        if hp["centered"]:
            state["mean"] = _zeros(x)
        if hp["ams_bound"]:
            state["vmax"] = _zeros(x)
        return state

    @staticmethod
    def step(x, g, state, hp, t):
        lr, beta1, beta2, eps = hp["lr"], hp["beta1"], hp["beta2"], hp["eps"]
        bias_correction2_sq = (1.0 - beta2 ** t).sqrt()
        state["lr_avg"] = lr_avg = state["lr_avg"] * beta1 + (1.0 - beta1) * lr
        bias_correction1 = torch.where(lr != 0.0, lr_avg / torch.where(lr != 0.0, lr, 1.0), 1.0)
        step_size = (-1.0 / bias_correction1).to(torch.float32).to(x.dtype)
        v = state["v"].mul_(beta2)
        v.addcmul_((1.0 - beta2) * g, g)
        second = v
        if hp["centered"]:
            mean = state["mean"]
            mean.lerp_(g, 1.0 - beta2)
            second = torch.where(t > hp["steps_before_using_centered"], v - mean.pow(2), v)
        denominator = _ams_bound(second, state, hp, eps) / bias_correction2_sq
        m = state["m"].mul_(beta1)
        m.add_((1.0 - beta1) * lr * g / denominator)
        x.addcmul_(m, step_size)
        if hp["weight_decouple"]:
            _decay(x, g, hp, lr)


# ---- QHAdam ---------------------------------------------------------------------------------------------

@_rule("qhadam")
class _QHAdam:
    """QHAdam (pytorch_optimizer.QHAdam; Ma & Yarats 2019, "Quasi-hyperbolic momentum and Adam for deep learning",
    ICLR, Algorithm 1): with Adam's debiased moments m̂, v̂ and ν₁, ν₂ = ``nus``,
    x ← x − η ((1 − ν₁)g + ν₁m̂) / (√((1 − ν₂)g² + ν₂v̂) + ε). Decay first (coupled g ← g + λx by default,
    decoupled x ← x(1 − λη)). The library keeps the debiased averages directly: w ← βw + 1 (w₀ = 0, so
    w_t = Σ_{i<t} βⁱ = (1 − βᵗ)/(1 − β)), m̂ ← lerp(m̂, g, 1/w_t), v̂ ← lerp(v̂, g², 1/w_t), equal to the paper's
    m/(1 − β₁ᵗ). Deviations from the paper: none in the formula; w is a float32 tensor of shape [1] per parameter
    tensor (so 1/w_t is float32-accurate)."""

    # exp_avg, exp_avg_sq, plus two float32 [1] weights per tensor: 8 bytes, 1/dim float64 slots on a [dim] vector
    dim_slots = staticmethod(lambda hp, dim: 2 + 1 / dim)

    @staticmethod
    def init(x, hp):
        weight = torch.zeros_like(hp["lr"], dtype=torch.float32)
        return {"m": _zeros(x), "v": _zeros(x), "w1": weight, "w2": weight.clone()}

    @staticmethod
    def step(x, g, state, hp, t):
        lr, nu1, nu2 = hp["lr"], hp["nus0"], hp["nus1"]
        g = _decay(x, g, hp, lr)
        # float32 weights: the class multiplies a float32 tensor by the Python β (rounded to float32), adds 1
        state["w1"] = state["w1"] * hp["beta1"].to(torch.float32) + 1.0
        state["w2"] = state["w2"] * hp["beta2"].to(torch.float32) + 1.0
        m, v = state["m"], state["v"]
        m.lerp_(g, state["w1"].reciprocal().to(x.dtype))
        grad_p2 = g * g
        v.lerp_(grad_p2, state["w2"].reciprocal().to(x.dtype))
        # ν = 1 leaves these exact (x·1 + 0·y), as the class's skipped branches do
        rms = torch.addcmul(v * nu2, 1.0 - nu2, grad_p2).sqrt() + hp["eps"]
        average = torch.addcmul(m * nu1, 1.0 - nu1, g)
        x.add_(-lr * average / rms)


# ---- DiffGrad -------------------------------------------------------------------------------------------

@_rule("diffgrad")
class _DiffGrad:
    """diffGrad (pytorch_optimizer.DiffGrad; Dubey et al. 2020, "diffGrad: An Optimization Method for Convolutional
    Neural Networks", IEEE TNNLS, Algorithm 1): with Adam's moments, the friction ξ = sigmoid(|g_{t−1} − g_t|)
    (g₀ = 0) and x ← x − η ξ m̂/(√v̂ + ε). The library's form: x ← x − η√(1 − β₂ᵗ)/(1 − β₁ᵗ) · ξm/(√(v + 1e-15) + ε).
    Decay first (decoupled by default, coupled g ← g + λx: the decayed gradient enters ξ and is stored as g_{t−1}).
    ``ams_bound``: the running maximum of v. ``rectify`` (:func:`_rectify`): where ρ_t ≥ ``n_sma_threshold`` the
    step is η r_t/(1 − β₁ᵗ)·ξm/(√(v + 1e-15) + ε); below it x ← x − η/(1 − β₁ᵗ)·m (no friction) with
    ``degenerated_to_sgd``, else no step. Deviations from the paper: ε is added before the bias correction of v
    (so it is ε/√(1 − β₂ᵗ) after it), with 1e-15 under the root."""

    slots = staticmethod(lambda hp: 3 + int(hp["ams_bound"]))  # exp_avg, exp_avg_sq, previous_grad (, max)

    @staticmethod
    def init(x, hp):
        state = {"m": _zeros(x), "v": _zeros(x), "prev": _zeros(x)}
        if hp["ams_bound"]:
            state["vmax"] = _zeros(x)
        return state

    @staticmethod
    def step(x, g, state, hp, t):
        lr, beta1, beta2 = hp["lr"], hp["beta1"], hp["beta2"]
        if hp["rectify"]:
            step_size, rectified = _rectify(hp, t, lr, hp["degenerated_to_sgd"])
        else:
            step_size, rectified = lr * (1.0 - beta2 ** t).sqrt(), None
        step_size = step_size / (1.0 - beta1 ** t)
        g = _decay(x, g, hp, lr)
        _moments(g, state, hp)
        m, v = state["m"], state["v"]
        denominator = _ams_bound(v, state, hp, hp["eps"])  # the rectify-off branch keeps vmax up to date too
        friction = (state["prev"] - g).abs().sigmoid() * m
        adaptive = x + -step_size * friction / denominator
        if rectified is None:
            x.copy_(adaptive)
        else:
            sgd = torch.where(step_size > 0, torch.addcmul(x, -step_size, m), x)
            x.copy_(torch.where(rectified, adaptive, sgd))
        state["prev"].copy_(g)


# ---- PAdam ----------------------------------------------------------------------------------------------

def _power(base, exponent):
    """``base.pow_(p)`` for a per-configuration Python exponent ``[K, 1]``: torch computes p = 0.5 as √, p = 2 as a
    square and p = 1 as a copy, other exponents with ``pow``."""
    out = base.pow(exponent)
    out = torch.where(exponent == 0.5, base.sqrt(), out)
    out = torch.where(exponent == 2.0, base * base, out)
    return torch.where(exponent == 1.0, base, out)


@_rule("padam")
class _PAdam:
    """Padam (pytorch_optimizer.PAdam; Chen, Zhou, Tang, Yang, Cao & Gu 2020, "Closing the Generalization Gap of
    Adaptive Gradient Methods in Training Deep Neural Networks", IJCAI, Algorithm 1): m ← β₁m + (1 − β₁)g,
    v ← β₂v + (1 − β₂)g², v̂ ← max(v̂, v), x ← x − η m/v̂^p with p = ``partial`` ∈ (0, ½]. The library's form:
    x ← x − η√(1 − β₂ᵗ)/(1 − β₁ᵗ) · m/(√v + ε)^(2p). Decay first (coupled g ← g + λx by default, decoupled
    x ← x(1 − λη)). Deviations from the paper: no running maximum of v (Adam's v, not AMSGrad's v̂); bias
    corrections of m and v; ε added to √v before the power."""

    slots = staticmethod(lambda hp: 2)  # exp_avg, exp_avg_sq

    init = staticmethod(adam_moments)

    @staticmethod
    def step(x, g, state, hp, t):
        lr, beta1, beta2 = hp["lr"], hp["beta1"], hp["beta2"]
        step_size = lr * (1.0 - beta2 ** t).sqrt() / (1.0 - beta1 ** t)
        g = _decay(x, g, hp, lr)
        _moments(g, state, hp)
        denominator = _power(state["v"].sqrt() + hp["eps"], hp["partial"] * 2)
        x.add_(-step_size * state["m"] / denominator)


# ---- AdaMod ---------------------------------------------------------------------------------------------

@_rule("adamod")
class _AdaMod:
    """AdaMod (pytorch_optimizer.AdaMod; Ding, Ren, Luo & Sun 2019, "An Adaptive and Momental Bound Method for
    Stochastic Learning", arXiv:1910.12249, Algorithm 1): with Adam's moments, the step sizes η_t = α/(√v̂ + ε),
    their average s ← β₃s + (1 − β₃)η_t, η̂ = min(η_t, s) and x ← x − η̂ m̂ (β₃ = betas[2]). Decay first
    (decoupled by default, coupled g ← g + λx). The library's form: η_t = α√(1 − β₂ᵗ)/((1 − β₁ᵗ)(√v + ε)) and
    x ← x − min(η_t, s)·m. Deviations from the paper: the bias correction of m is inside η_t, so s averages it
    too, and ε is added before the bias correction of v (both as the authors' code)."""

    slots = staticmethod(lambda hp: 3)  # exp_avg, exp_avg_sq, exp_avg_lr

    @staticmethod
    def init(x, hp):
        return {"m": _zeros(x), "v": _zeros(x), "lr_avg": _zeros(x)}

    @staticmethod
    def step(x, g, state, hp, t):
        lr, beta1, beta2 = hp["lr"], hp["beta1"], hp["beta2"]
        step_size = lr * (1.0 - beta2 ** t).sqrt() / (1.0 - beta1 ** t)
        g = _decay(x, g, hp, lr)
        _moments(g, state, hp)
        update = step_size / (state["v"].sqrt() + hp["eps"])
        state["lr_avg"].lerp_(update, 1.0 - hp["beta3"])
        x.sub_(torch.minimum(update, state["lr_avg"]) * state["m"])


# ---- AdamC ----------------------------------------------------------------------------------------------

@_rule("adamc")
class _AdamC:
    """AdamC (pytorch_optimizer.AdamC; Defazio 2025, "Why Gradients Rapidly Increase Near the End of Training",
    arXiv:2506.02285): AdamW whose decay on normalised layers is λη_t²/η_max (the correction), elsewhere λη_t:
    x ← x(1 − λη) (η unscaled with ``fixed_decay``; coupled g ← g + λx with ``weight_decouple=False``), Adam's
    moments, x ← x − η/(1 − β₁ᵗ) · m/((√(v + 1e-15) + ε)/√(1 − β₂ᵗ)) (``ams_bound``: the running maximum of v).
    Which layers are normalised is the class's parameter-group key ``normalized``, which optbench (one group of
    parameters) cannot set, so every tensor takes the uncorrected decay λη, as the class does by default.
    Deviations from the paper: ε is added before the bias correction of v, with 1e-15 under the root."""

    slots = staticmethod(lambda hp: 2 + int(hp["ams_bound"]))  # exp_avg, exp_avg_sq (, max_exp_avg_sq)

    @staticmethod
    def init(x, hp):
        state = {"m": _zeros(x), "v": _zeros(x)}
        if hp["ams_bound"]:
            state["vmax"] = _zeros(x)
        return state

    @staticmethod
    def step(x, g, state, hp, t):
        lr, beta1, beta2 = hp["lr"], hp["beta1"], hp["beta2"]
        g = _decay(x, g, hp, lr)
        _moments(g, state, hp)
        denominator = _ams_bound(state["v"], state, hp, hp["eps"]) / (1.0 - beta2 ** t).sqrt()
        update = state["m"] / (1.0 - beta1 ** t)
        x.add_(-lr * update / denominator)


# ---- EXAdam ---------------------------------------------------------------------------------------------

@_rule("exadam")
class _EXAdam:
    """EXAdam (pytorch_optimizer.EXAdam; Adly 2024, "EXAdam: The Power of Adaptive Cross-Moments", arXiv:2412.20302,
    Algorithm 1), the per-parameter path (the class's default ``foreach=False``): with Adam's moments m, v,
    the cross-moment factors d₁ = 1 + β₂ᵗ·v/(v + ε), d₂ = 1 + β₁ᵗ·m²/(m² + ε), m̃ = d₁m/(1 − β₁ᵗ),
    ṽ = d₂v/(1 − β₂ᵗ), the gradient term g̃ = d₁g/(1 − β₁ᵗ), and x ← x − η(m̃ + g̃)/(√ṽ + ε). Decay first
    (decoupled by default, coupled g ← g + λx, which then enters g̃ too). β₂ᵗ and β₁ᵗ are computed as
    1 − (1 − βᵗ), as the class does. Deviations from the paper: none known in the update; the decay is the
    official code's addition, and the class steps with η as given (the dynamic step size growing with t that
    some versions of the paper describe is not applied; a schedule may supply one)."""

    slots = staticmethod(lambda hp: 2)  # exp_avg, exp_avg_sq

    init = staticmethod(adam_moments)

    @staticmethod
    def step(x, g, state, hp, t):
        lr, eps = hp["lr"], hp["eps"]
        bias_correction1, bias_correction2 = 1.0 - hp["beta1"] ** t, 1.0 - hp["beta2"] ** t
        g = _decay(x, g, hp, lr)
        _moments(g, state, hp)
        m, v = state["m"], state["v"]
        d1 = (v / (v + eps)) * (1.0 - bias_correction2) + 1.0
        m_p2 = m * m
        d2 = (m_p2 / (m_p2 + eps)) * (1.0 - bias_correction1) + 1.0
        update = m / bias_correction1 * d1
        update = update + d1 * (g / bias_correction1)
        denominator = (d2 * (v / bias_correction2)).sqrt() + eps
        x.addcmul_(-lr, update / denominator)


# ---- AdaSmooth ------------------------------------------------------------------------------------------

@_rule("adasmooth")
class _AdaSmooth:
    """AdaSmooth (pytorch_optimizer.AdaSmooth; Lu 2022, "AdaSmooth: An Adaptive Learning Rate Method based on
    Effective Ratio", arXiv:2204.00825, Algorithm 1 with the AdaDelta-style second moment): the effective ratio
    e_t = |Σ Δx|/Σ|Δx| of the parameter moves, c_t = (ρ₂ − ρ₁)e_t + (1 − ρ₂) with (ρ₁, ρ₂) = betas,
    v ← c_t²g² + (1 − c_t²)v, x ← x − η g/√(v + ε). Decay first (coupled g ← g + λx by default, decoupled
    x ← x(1 − λη)); Δx is the change of x since the previous step's point after its decay (at the first step,
    the decay alone). Deviations from the paper: the sums run over every step so far, not over a window of M
    steps; ε is added to Σ|Δx| (e_t = |Σ Δx|/(Σ|Δx| + ε), so e₁ = 0 without decay)."""

    slots = staticmethod(lambda hp: 4)  # prev_param, s, n, exp_avg_sq

    @staticmethod
    def init(x, hp):
        return {"prev": x.clone(), "s": _zeros(x), "n": _zeros(x), "v": _zeros(x)}

    @staticmethod
    def step(x, g, state, hp, t):
        lr, eps = hp["lr"], hp["eps"]
        g = _decay(x, g, hp, lr)
        diff = x - state["prev"]
        state["s"].add_(diff)
        state["n"].add_(diff.abs())
        weight = state["s"].abs() / (state["n"] + eps)
        weight = weight * (hp["beta2"] - hp["beta1"]) + (1.0 - hp["beta2"])
        weight = weight * weight
        state["v"].lerp_(g * g, weight)
        update = lr / (state["v"] + eps).sqrt() * g
        state["prev"].copy_(x)
        x.add_(-update)


# ---- RAdam (pytorch_optimizer) --------------------------------------------------------------------------

@_rule("po.radam")
class _RAdam:
    """RAdam (pytorch_optimizer.RAdam; Liu et al. 2020, "On the Variance of the Adaptive Learning Rate and Beyond",
    ICLR, Algorithm 2): with Adam's moments, ρ∞ = 2/(1 − β₂) − 1, ρ_t = ρ∞ − 2tβ₂ᵗ/(1 − β₂ᵗ); when the variance is
    tractable, x ← x − η r_t m̂/√v̂ with r_t = √((ρ_t − 4)(ρ_t − 2)ρ∞/((ρ∞ − 4)(ρ∞ − 2)ρ_t)), else x ← x − η m̂.
    The library's form (:func:`_rectify`): where ρ_t ≥ ``n_sma_threshold`` (5),
    x ← x − η r_t√(1 − β₂ᵗ)/(1 − β₁ᵗ) · m/(√v + ε); below it x ← x − η/(1 − β₁ᵗ)·m with ``degenerated_to_sgd``,
    else (the default) no step. Decoupled decay x ← x(1 − λη) (η unscaled with ``fixed_decay``) on the steps that
    move. Deviations from the paper: the threshold is ρ_t ≥ 5 (the paper's ρ_t > 4); by default the steps with
    ρ_t < 5 (the first five at β₂ = 0.999) do not move at all, where the paper takes the momentum step; ε is added
    to √v; coupled decay (``weight_decouple=False``) is never applied (the class passes no gradient to it)."""

    slots = staticmethod(lambda hp: 2)  # exp_avg, exp_avg_sq

    init = staticmethod(adam_moments)

    @staticmethod
    def step(x, g, state, hp, t):
        lr = hp["lr"]
        step_size, rectified = _rectify(hp, t, lr, hp["degenerated_to_sgd"])
        step_size = step_size / (1.0 - hp["beta1"] ** t)
        moves = rectified | (step_size > 0)
        if hp["weight_decouple"]:
            wd = hp["weight_decay"] * (1.0 if hp["fixed_decay"] else lr)
            x.mul_(torch.where(moves, 1.0 - wd, 1.0))
        _moments(g, state, hp)
        m = state["m"]
        adaptive = x + -step_size * m / (state["v"].sqrt() + hp["eps"])
        sgd = torch.where(moves, torch.addcmul(x, -step_size, m), x)
        x.copy_(torch.where(rectified, adaptive, sgd))


# ---- AdaMax (pytorch_optimizer) -------------------------------------------------------------------------

@_rule("po.adamax")
class _AdaMax:
    """AdaMax (pytorch_optimizer.AdaMax; Kingma & Ba 2015, "Adam: A Method for Stochastic Optimization", ICLR,
    section 7.1, Algorithm 2): m ← β₁m + (1 − β₁)g, u ← max(β₂u, |g|), x ← x − η/(1 − β₁ᵗ) · m/u. Decay first
    (coupled g ← g + λx by default, decoupled x ← x(1 − λη)). Deviations from the paper: ε inside the maximum,
    u ← max(β₂u, |g| + ε) (as torch.optim.Adamax)."""

    slots = staticmethod(lambda hp: 2)  # exp_avg, exp_inf

    @staticmethod
    def init(x, hp):
        return {"m": _zeros(x), "u": _zeros(x)}

    @staticmethod
    def step(x, g, state, hp, t):
        lr, beta1 = hp["lr"], hp["beta1"]
        step_size = lr / (1.0 - beta1 ** t)
        g = _decay(x, g, hp, lr)
        state["m"].lerp_(g, 1.0 - beta1)
        u = state["u"].mul_(hp["beta2"])
        torch.maximum(u, g.abs() + hp["eps"], out=u)
        x.add_(-step_size * state["m"] / u)
