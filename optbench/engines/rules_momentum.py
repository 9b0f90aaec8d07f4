"""Batched rules of pytorch_optimizer's momentum-SGD family and sign methods: Tiger, SignSGD, SGDW, QHM, AggMo,
PID, PNM, AdaPNM, SGDP, AdaDelta, Kate, VSGD and MSVAG.

Same contract as :mod:`optbench.engines.batched_rules` (registered into its ``RULES`` table): ``x`` and ``g`` are
``[K, P]``, float hyperparameters ``[K, 1]`` tensors, booleans shared by the group. Each rule follows the code path
the loop engine's class object takes on a CPU, operation for operation: the ``foreach`` path where the class
enables it by default (every class here except QHM and SGDP, whose ``foreach`` defaults to ``False`` and which run
their per-parameter loop). Where the class calls a fused kernel with a Python scalar, the rule calls the same
kernel with the scalar as a ``[K, 1]`` column (as :mod:`optbench.engines.rules_misc` does): ``a.add_(b, alpha=s)``
is ``torch.addcmul(a, s, b)``, ``a.addcmul_(b, c, value=s)`` is ``torch.addcmul(a, s·b, c)``, ``a.lerp_(b, s)`` is
``torch.lerp`` with the column. Scalars the class computes as Python floats from the step count (bias corrections,
MSVAG's ρ, VSGD's ρ₁, ρ₂) are computed here in float64 whatever the run's dtype, as Python does.

Every rule is elementwise except SGDP, whose projection works per parameter tensor (``LAYERS``: a tensor with
ndim > 1 is viewed as [rows, rest] and as one row). On an analytic problem the layout is one 1-D tensor.
``tests/test_rules_momentum.py`` checks each rule against its paper's update written by hand, and the class on the
branches the registry defaults do not reach.
"""

from __future__ import annotations

import math

import torch
from torch.nn.functional import cosine_similarity

from optbench.engines.batched_rules import LAYERS, _rule, _zeros, adam_moments


def _decay(x, g, hp, fixed_decay=None):
    """pytorch_optimizer's ``apply_weight_decay(_foreach)``: decoupled x ← x(1 − λ(1 if fixed_decay else η)), or
    coupled g ← g + λx (``grad.add_(p, alpha=λ)``); returns the gradient. ``fixed_decay`` overrides the group's
    flag (classes that pass ``False``)."""
    wd = hp["weight_decay"]
    fixed = hp["fixed_decay"] if fixed_decay is None else fixed_decay
    if hp["weight_decouple"]:
        x.mul_(1.0 - wd * (1.0 if fixed else hp["lr"]))
        return g
    return torch.addcmul(g, wd, x)


def _f64(value):
    """A ``[K, 1]`` hyperparameter column in float64 (the class's Python-float arithmetic on it)."""
    return value.to(torch.float64)


def _sign_step(x, direction, hp):
    """x ← x − η·sign(direction) (``foreach_add_(params, sign, alpha=−η)``: η·(±1) is exact, so no fused rounding)."""
    x.sub_(hp["lr"] * direction.sign())


# ---- sign methods -------------------------------------------------------------------------------------------

@_rule("tiger")
class _Tiger:
    """Tiger (pytorch_optimizer.Tiger; Su 2023, "Tiger: A Tight-fisted Optimizer", github.com/bojone/tiger):
    m ← βm + (1 − β)g, x ← x − η·sign(m), with decoupled decay x ← x(1 − λη) first (λ unscaled with
    ``fixed_decay``; ``weight_decouple=False``: coupled, g ← g + λx). Tiger is Lion with β₁ = β₂ = β (the update's
    interpolation and the stored momentum are the same average). Deviations from the paper: none at the defaults
    (the paper's decay is decoupled and scaled by η); the coupled and fixed decays are the library's options."""

    slots = staticmethod(lambda hp: 1)  # exp_avg

    @staticmethod
    def init(x, hp):
        return {"m": _zeros(x)}

    @staticmethod
    def step(x, g, state, hp, t):
        g = _decay(x, g, hp)
        state["m"].lerp_(g, 1.0 - hp["beta"])
        _sign_step(x, state["m"], hp)


@_rule("signsgd")
class _SignSGD:
    """SignSGD / Signum (pytorch_optimizer.SignSGD; Bernstein, Wang, Azizzadenesheli & Anandkumar 2018,
    "signSGD: Compressed Optimisation for Non-Convex Problems", Algorithms 1 and 3): with momentum β > 0 (Signum)
    m ← βm + (1 − β)g, x ← x − η·sign(m); with β = 0 (signSGD) x ← x − η·sign(g). Decay first: decoupled
    x ← x(1 − λη) (the class passes fixed_decay=False), or coupled g ← g + λx with ``weight_decouple=False``.
    arXiv:1802.04434. Deviations from the paper: none at the defaults (weight_decay = 0; the decay options are the
    library's)."""

    slots = staticmethod(lambda hp: int(hp["momentum"] > 0))  # momentum_buffer

    @staticmethod
    def init(x, hp):
        return {"m": _zeros(x)}

    @staticmethod
    def step(x, g, state, hp, t):
        g = _decay(x, g, hp, fixed_decay=False)
        momentum = hp["momentum"]
        if bool((momentum > 0).any()):
            state["m"].lerp_(g, 1.0 - momentum)
            g = torch.where(momentum > 0, state["m"], g)
        _sign_step(x, g, hp)


# ---- momentum SGD ----------------------------------------------------------------------------------------

@_rule("sgdw")
class _SGDW:
    """SGDW (pytorch_optimizer.SGDW; Loshchilov & Hutter 2019, "Decoupled Weight Decay Regularization",
    Algorithm 1, SGD with momentum): x ← x(1 − λη) (decoupled; coupled g ← g + λx with ``weight_decouple=False``);
    with momentum μ > 0, b ← g at the first step, then b ← μb + (1 − τ)g (τ = dampening), d = g + μb (Nesterov)
    or b; with μ = 0, d = g; x ← x − ηd. arXiv:1711.05101. Deviations from the paper: the decay is λη with η the lr
    (the paper's is η_tλ, η_t the schedule multiplier, separate from the lr α); η multiplies the buffer when it is
    applied (the paper accumulates αg in it: the same at a constant lr); dampening (the library's, 0 by default) is
    skipped at the first step, b₁ = g, as in torch.optim.SGD."""

    slots = staticmethod(lambda hp: int(hp["momentum"] > 0))  # momentum_buffer

    @staticmethod
    def init(x, hp):
        return {"buf": None}

    @staticmethod
    def step(x, g, state, hp, t):
        g = _decay(x, g, hp, fixed_decay=False)
        momentum = hp["momentum"]
        d = g
        if bool((momentum > 0).any()):
            if state["buf"] is None:
                buf = g.clone()
            else:
                buf = torch.addcmul(state["buf"] * momentum, 1.0 - hp["dampening"], g)
            state["buf"] = buf
            with_momentum = torch.addcmul(g, momentum, buf) if hp["nesterov"] else buf
            d = torch.where(momentum > 0, with_momentum, g)
        x.copy_(torch.addcmul(x, -hp["lr"], d))


@_rule("qhm")
class _QHM:
    """QHM (pytorch_optimizer.QHM; Ma & Yarats 2019, "Quasi-hyperbolic momentum and Adam for deep learning",
    eq. (QHM)): b ← βb + (1 − β)g, x ← x − η(νb + (1 − ν)g), applied as x ← x − ηνb, then x ← x − η(1 − ν)g.
    Decay first (coupled g ← g + λx by default; decoupled x ← x(1 − λη) with ``weight_decouple``, λ unscaled with
    ``fixed_decay``). arXiv:1810.06801. Deviations from the paper: none at the defaults (weight_decay = 0; decay is
    the library's).
    The class's ``foreach`` defaults to False: the rule follows its per-parameter loop."""

    slots = staticmethod(lambda hp: 1)  # momentum_buffer

    @staticmethod
    def init(x, hp):
        return {"buf": _zeros(x)}

    @staticmethod
    def step(x, g, state, hp, t):
        g = _decay(x, g, hp)
        buf = state["buf"]
        buf.lerp_(g, 1.0 - hp["momentum"])
        lr, nu = hp["lr"], hp["nu"]
        x.copy_(torch.addcmul(x, -lr * nu, buf))
        x.copy_(torch.addcmul(x, -lr * (1.0 - nu), g))


AGGMO_BETAS = 3  # the class's default betas (0.0, 0.9, 0.99): one batched group holds one tuple length


@_rule("aggmo")
class _AggMo:
    """AggMo (pytorch_optimizer.AggMo; Lucas, Sun, Zemel & Grosse 2019, "Aggregated Momentum: Stability Through
    Passive Damping", Algorithm 1): for each of the K damping coefficients β⁽ⁱ⁾, v⁽ⁱ⁾ ← β⁽ⁱ⁾v⁽ⁱ⁾ + g and
    x ← x − (η/K)v⁽ⁱ⁾, one buffer after the other. Decay first (coupled g ← g + λx by default; decoupled
    x ← x(1 − λη) with ``weight_decouple``, λ unscaled with ``fixed_decay``). arXiv:1804.00325. Deviations from the
    paper: none (its v⁽ⁱ⁾ ← β⁽ⁱ⁾v⁽ⁱ⁾ − ∇f, x ← x + (γ/K)Σv⁽ⁱ⁾ is this update with the signs flipped, the sum taken
    one buffer at a time; decay is the library's, off by default).
    Refused: a number of betas other than three (the default's: one batched group holds one tuple length) and
    repeated betas (the class keys its buffers by β, so equal betas share one buffer, stepped twice)."""

    slots = staticmethod(lambda hp: len(set(hp["betas"])))  # one momentum buffer per distinct beta

    @staticmethod
    def refuses(hp):
        betas = tuple(hp["betas"])
        if len(betas) != AGGMO_BETAS:
            return f"its batched rule takes {AGGMO_BETAS} betas, not {len(betas)}"
        if len(set(betas)) != len(betas):
            return "repeated betas share one momentum buffer in the class (its buffers are keyed by beta)"
        return None

    @staticmethod
    def init(x, hp):
        return {"bufs": [_zeros(x) for _ in range(AGGMO_BETAS)]}

    @staticmethod
    def step(x, g, state, hp, t):
        g = _decay(x, g, hp)
        step_size = -hp["lr"] / AGGMO_BETAS
        for i, buf in enumerate(state["bufs"]):
            buf.mul_(hp[f"beta{i + 1}"]).add_(g)
            x.copy_(torch.addcmul(x, step_size, buf))


@_rule("pid")
class _PID:
    """PID (pytorch_optimizer.PID; An, Wang, Sun, Xu, Dai & Zhang 2018, "A PID Controller Approach for Stochastic
    Optimization of Deep Networks", Algorithm 1): with momentum μ > 0, the integral I ← μI + (1 − τ)g (τ =
    dampening), the derivative D ← μD + (1 − μ)(g − g_prev) (D ← μD at the first step, no previous gradient),
    g_prev ← g, and x ← x − η(g + K_i·I + K_d·D) (K_i = ``integral``, K_d = ``derivative``); with μ = 0,
    x ← x − ηg (no state). Decay first (coupled g ← g + λx by default, so g_prev holds the decayed gradient;
    decoupled with ``weight_decouple``, λ unscaled with ``fixed_decay``). Deviations from the paper: the update is
    the authors' code's (github.com/tensorboy/PIDOptimizer), the gradient (the P term) plus K_i·I plus K_d·D, all
    scaled by η, where the paper writes the I term as the SGD-momentum step with η inside it; at step 1 D stays 0
    (no previous gradient)."""

    slots = staticmethod(lambda hp: 3 * int(hp["momentum"] > 0))  # grad_buffer, i_buffer, d_buffer

    @staticmethod
    def init(x, hp):
        return {"prev": _zeros(x), "i": _zeros(x), "d": _zeros(x)}

    @staticmethod
    def step(x, g, state, hp, t):
        g = _decay(x, g, hp)
        momentum = hp["momentum"]
        d = g
        if bool((momentum > 0).any()):
            i_buf, d_buf, prev = state["i"], state["d"], state["prev"]
            i_buf.copy_(torch.addcmul(i_buf * momentum, 1.0 - hp["dampening"], g))
            d_buf.mul_(momentum)
            if t > 1:
                d_buf.copy_(torch.addcmul(d_buf, 1.0 - momentum, g - prev))
            prev.copy_(g)
            pid = torch.addcmul(torch.addcmul(g, hp["integral"], i_buf), hp["derivative"], d_buf)
            d = torch.where(momentum > 0, pid, g)
        x.copy_(torch.addcmul(x, -hp["lr"], d))


# ---- positive-negative momentum ------------------------------------------------------------------------------

def _pn_momentum(pos, neg, beta0):
    """((1 + β₀)m_t − β₀m_{t−1}) / √((1 + β₀)² + β₀²), in the class's operations."""
    noise_norm = ((1.0 + beta0) ** 2 + beta0 ** 2).sqrt()
    return torch.addcmul(pos * (1.0 + beta0), -beta0, neg) * (1.0 / noise_norm)


def _pn_buffers(state, t):
    """(m_t's buffer, m_{t−1}'s buffer): the two alternate, the class swaps them at even steps."""
    first, second = state["m_a"], state["m_b"]
    return (first, second) if t % 2 == 1 else (second, first)


@_rule("pnm")
class _PNM:
    """PNM (pytorch_optimizer.PNM; Xie, Yuan, Zhu & Sugiyama 2021, "Positive-Negative Momentum: Manipulating
    Stochastic Gradient Noise to Improve Generalization", Algorithm 2, stochastic PNM), with (β₁, β₀) = ``betas``:
    two momenta updated at alternate steps, m_t ← β₁²m_{t−2} + (1 − β₁²)g (the buffer last updated two steps ago),
    x ← x − η((1 + β₀)m_t − β₀m_{t−1}) / √((1 + β₀)² + β₀²). Decay first (decoupled x ← x(1 − λη) by default, λ
    unscaled with ``fixed_decay``; coupled g ← g + λx without ``weight_decouple``). arXiv:2103.17182. Deviations
    from the paper: none at the defaults (weight_decay = 0; the decay options are the library's; ``eps`` is accepted
    and unused)."""

    slots = staticmethod(lambda hp: 2)  # pos_momentum, neg_momentum

    @staticmethod
    def init(x, hp):
        return {"m_a": _zeros(x), "m_b": _zeros(x)}

    @staticmethod
    def step(x, g, state, hp, t):
        g = _decay(x, g, hp)
        pos, neg = _pn_buffers(state, t)
        beta1 = hp["beta1"]
        pos.lerp_(g, 1.0 - beta1 ** 2)
        x.copy_(torch.addcmul(x, -hp["lr"], _pn_momentum(pos, neg, hp["beta2"])))


AMS_BOUND_EPS = 1e-15  # BaseOptimizer.apply_ams_bound(_foreach)'s exp_avg_sq_eps


@_rule("adapnm")
class _AdaPNM:
    """AdaPNM (pytorch_optimizer.AdaPNM; Xie et al. 2021, Algorithm 3), with (β₁, β₂, β₀) = ``betas``: the
    positive-negative momenta of PNM (m_t ← β₁²m_{t−2} + (1 − β₁²)g), v ← β₂v + (1 − β₂)g², v_max ← max(v_max, v)
    (AMSGrad, ``ams_bound``; v itself without), x ← x − η/(1 − β₁ᵗ) · ((1 + β₀)m_t − β₀m_{t−1})/√((1 + β₀)² + β₀²)
    / ((√(v_max + 1e-15) + ε)/√(1 − β₂ᵗ)). Decay first (decoupled x ← x(1 − λη) by default, λ unscaled with
    ``fixed_decay``; coupled g ← g + λx without ``weight_decouple``). Deviations from the paper: ε is added to
    √v_max before the bias correction (the paper's ε is added to √v̂, so the library's is ε/√(1 − β₂ᵗ) after it),
    and 1e-15 is added under the root; the decay options are the library's (weight_decay = 0 by default)."""

    slots = staticmethod(lambda hp: 3 + int(hp["ams_bound"]))  # exp_avg, neg_exp_avg, exp_avg_sq (, max)

    @staticmethod
    def init(x, hp):
        return {"m_a": _zeros(x), "m_b": _zeros(x), "v": _zeros(x), "vmax": _zeros(x)}

    @staticmethod
    def step(x, g, state, hp, t):
        beta1, beta2 = hp["beta1"], hp["beta2"]
        step_size = (_f64(hp["lr"]) / (1.0 - _f64(beta1) ** t)).to(x.dtype)
        bias_correction2_sq = (1.0 - _f64(beta2) ** t).sqrt().to(x.dtype)
        g = _decay(x, g, hp)
        pos, neg = _pn_buffers(state, t)
        pos.lerp_(g, 1.0 - beta1 ** 2)
        v = state["v"]
        v.mul_(beta2)
        v.copy_(torch.addcmul(v, (1.0 - beta2) * g, g))
        if hp["ams_bound"]:
            torch.maximum(state["vmax"], v, out=state["vmax"])
            v = state["vmax"]
        denominator = ((v + AMS_BOUND_EPS).sqrt() + hp["eps"]) / bias_correction2_sq
        x.add_(-step_size * _pn_momentum(pos, neg, hp["beta3"]) / denominator)  # addcdiv_(…, value=−step)


# ---- scale-invariant projection -------------------------------------------------------------------------------

def _abs_cosine(g3, p3, eps):
    """|cos(g, x)| along the last dimension, ``[K, rows]``, with torch's ``cosine_similarity`` (the class's) called
    once per distinct ε of the group (it takes a float)."""
    values = eps.unique().tolist()
    result = cosine_similarity(g3, p3, dim=-1, eps=values[0]).abs()
    for value in values[1:]:
        result = torch.where(eps == value, cosine_similarity(g3, p3, dim=-1, eps=value).abs(), result)
    return result


def _sgdp_projection(p, grad, update, shape, hp):
    """pytorch_optimizer.optimizer.adamp.projection on one parameter tensor's ``[K, n]`` columns (ndim > 1):
    the channel view ([rows, rest]) first, then the layer view ([1, n]); where max |cos(g, x)| over the view's
    rows is below δ/√(row length), the radial component along x/(‖row of x‖ + ε) is removed from the update.
    Returns the update and the ``[K, 1]`` mask of projected configurations."""
    rows = shape[0]
    eps = hp["eps"]
    projected, done = update, torch.zeros_like(hp["delta"], dtype=torch.bool)
    for view_rows in (rows, 1):
        p3 = p.reshape(p.shape[0], view_rows, -1)
        g3 = grad.reshape(p.shape[0], view_rows, -1)
        cosine = _abs_cosine(g3, p3, eps)  # [K, rows]
        take = (cosine.amax(dim=-1, keepdim=True) < hp["delta"] / math.sqrt(p3.shape[-1])) & ~done
        if bool(take.any()):
            p_n = p3 / (torch.linalg.vector_norm(p3, dim=-1, keepdim=True) + eps[:, :, None])
            radial = (p_n * update.reshape(p3.shape)).sum(dim=-1, keepdim=True)
            moved = (update.reshape(p3.shape) - p_n * radial).reshape(update.shape)
            projected = torch.where(take, moved, projected)
        done = done | take
    return projected, done


@_rule("sgdp", needs=[LAYERS])
class _SGDP:
    """SGDP (pytorch_optimizer.SGDP; Heo, Chun, Oh, Han, Yun, Kim, Uh & Ha 2021, "AdamP: Slowing Down the Slowdown
    for Momentum Optimizers on Scale-invariant Weights", Algorithm 1 with SGD), parameter tensor by parameter
    tensor: b ← μb + (1 − τ)g, d = g + μb (Nesterov) or b; for a tensor with ndim > 1, if
    max |cos(x_c, g_c)| over its output channels c is below δ/√(channel size), d ← d − (d·x̂_c)x̂_c per channel with
    x̂_c = x_c/(‖x_c‖ + ε) (else the same test and projection on the whole tensor, δ/√n), and the decay ratio is
    ``wd_ratio``; otherwise (and on vectors: biases, an analytic problem's ``[d]``) d is not projected and the ratio
    is 1. Then decoupled decay x ← x(1 − λη·ratio/(1 − μ)) (η unscaled with ``fixed_decay``) and x ← x − ηd.
    arXiv:2006.08217. Deviations from the paper: as in the authors' code (github.com/clovaai/AdamP), the decay is
    divided by 1 − μ and the channel view is tried before the whole tensor; ``weight_decouple=False`` (coupled
    decay, the library's option) adds λx to the gradient only after the update has been formed, so it has no
    effect (the rule reproduces that: no decay). The class's ``foreach`` defaults to False: the rule follows its
    per-parameter loop."""

    slots = staticmethod(lambda hp: 1)  # momentum

    @staticmethod
    def init(x, hp):
        return {"buf": _zeros(x)}

    @staticmethod
    def step(x, g, state, hp, t):
        momentum, layout, lr = hp["momentum"], state["layout"], hp["lr"]
        buf = state["buf"]
        buf.copy_(torch.addcmul(buf * momentum, 1.0 - hp["dampening"], g))
        update = buf * momentum + g if hp["nesterov"] else buf.clone()  # buf.mul(μ).add_(g)
        decay = None
        if hp["weight_decouple"]:
            decay = hp["weight_decay"] * (1.0 if hp["fixed_decay"] else lr)
        columns = zip(x.split(layout.sizes, dim=-1), g.split(layout.sizes, dim=-1),
                      update.split(layout.sizes, dim=-1), layout.shapes)
        for p, grad, d, shape in columns:
            ratio = torch.ones_like(momentum)
            if len(shape) > 1:
                projected, done = _sgdp_projection(p, grad, d, shape, hp)
                d.copy_(projected)
                ratio = torch.where(done, hp["wd_ratio"], ratio)
            if decay is not None:
                p.mul_(1.0 - decay * (ratio / (1.0 - momentum)))
            p.copy_(torch.addcmul(p, -lr, d))


# ---- adaptive step sizes --------------------------------------------------------------------------------

@_rule("po.adadelta")
class _PoAdaDelta:
    """AdaDelta (pytorch_optimizer.AdaDelta; Zeiler 2012, "ADADELTA: An Adaptive Learning Rate Method",
    Algorithm 1): v ← ρv + (1 − ρ)g², Δ = √(u + ε)/√(v + ε) · g, u ← ρu + (1 − ρ)Δ², x ← x − ηΔ. Decay first
    (coupled g ← g + λx by default; decoupled x ← x(1 − λη) with ``weight_decouple``, λ unscaled with
    ``fixed_decay``). arXiv:1212.5701. Deviations from the paper: the lr η multiplies Δ (the paper's update is
    x ← x − Δ: η = 1, the default), as in torch.optim.Adadelta; decay is the library's (off by default)."""

    slots = staticmethod(lambda hp: 2)  # square_avg, acc_delta

    @staticmethod
    def init(x, hp):
        return {"sq": _zeros(x), "acc": _zeros(x)}

    @staticmethod
    def step(x, g, state, hp, t):
        rho, eps = hp["rho"], hp["eps"]
        g = _decay(x, g, hp)
        sq, acc = state["sq"], state["acc"]
        sq.mul_(rho)
        sq.copy_(torch.addcmul(sq, (1.0 - rho) * g, g))
        delta = (acc + eps).sqrt() / (sq + eps).sqrt() * g
        acc.mul_(rho)
        acc.copy_(torch.addcmul(acc, (1.0 - rho) * delta, delta))
        x.copy_(torch.addcmul(x, -hp["lr"], delta))


@_rule("kate")
class _Kate:
    """Kate (pytorch_optimizer.Kate; Choudhury, Tupitsa, Loizou, Horváth, Takáč & Gorbunov 2024, "Remove that
    Square Root: A New Efficient Scale-Invariant Version of AdaGrad", Algorithm 1): b² ← b² + g² (+ ε),
    m² ← m² + δg² + g²/b², x ← x − η m·g/b². Decay first (decoupled x ← x(1 − λη) by default, λ unscaled with
    ``fixed_decay``; coupled g ← g + λx without ``weight_decouple``). arXiv:2403.02648. Deviations from the paper:
    ε is added to b² at every step (so b² = Σg² + tε), and the state keeps b = √b² (squared again at the next
    step); the library's δ is the paper's η; decay is the library's (off by default)."""

    slots = staticmethod(lambda hp: 2)  # m, b

    @staticmethod
    def init(x, hp):
        return {"m": _zeros(x), "b": _zeros(x)}

    @staticmethod
    def step(x, g, state, hp, t):
        g = _decay(x, g, hp)
        m, b = state["m"], state["b"]
        grad_sq = g * g
        b.mul_(b).add_(grad_sq).add_(hp["eps"])
        m.mul_(m)
        m.copy_(torch.addcmul(m, hp["delta"], grad_sq))
        m.add_(grad_sq / b).sqrt_()
        x.copy_(torch.addcmul(x, -hp["lr"], m * g / b))
        b.sqrt_()


@_rule("vsgd")
class _VSGD:
    """VSGD (pytorch_optimizer.VSGD; Chen, Kuzina, Esmaeili & Tomczak 2024, "Variational Stochastic Gradient
    Descent for Deep Neural Networks", openreview.net/forum?id=xu4ATNjcdy, Algorithm 1): the true gradient μ and
    its noise are inferred by a Gamma–Gaussian model with priors a = 2γ + 1 + 10⁻⁴, b_g⁰ = 2γ, b_ĝ⁰ = 2Kγ
    (γ = ``ps``, K = ``ghattg``): σ_g² = b_g/a, σ_ĝ² = b_ĝ/a (b⁰/(a − 1) at step 1);
    μ ← (σ_ĝ²μ + σ_g²g)/(σ_g² + σ_ĝ²), s = μ² + σ_g²σ_ĝ²/(σ_g² + σ_ĝ²);
    b_g ← (1 − ρ₁)b_g + ρ₁(b_g⁰ + s − 2μμ_prev + μ_prev²), b_ĝ ← (1 − ρ₂)b_ĝ + ρ₂(b_ĝ⁰ + s − 2gμ + g²) with
    ρᵢ = t^(−τᵢ); x ← x − η μ/(√s + ε). Decay first (decoupled x ← x(1 − λη), the class passes fixed_decay=False;
    coupled g ← g + λx without ``weight_decouple``). The update divides by √s, the root of the posterior's second
    moment of the gradient (μ² plus the posterior variance). Deviations from the paper: ε is added to √s; decay is
    the library's (off by default)."""

    slots = staticmethod(lambda hp: 3)  # mug, bg, bhg

    @staticmethod
    def _priors(hp, dtype):
        """The class's defaults pa2 = 2γ + 1 + 10⁻⁴, pbg2 = 2γ, pbhg2 = 2Kγ and the first step's σ² = b⁰/(pa2 − 1),
        Python floats there: computed in float64, then in the run's dtype."""
        ps = _f64(hp["ps"])
        pa2, pbg2, pbhg2 = 2.0 * ps + 1.0 + 1e-4, 2.0 * ps, 2.0 * _f64(hp["ghattg"]) * ps
        return [value.to(dtype) for value in (pa2, pbg2, pbhg2, pbg2 / (pa2 - 1.0), pbhg2 / (pa2 - 1.0))]

    @classmethod
    def init(cls, x, hp):
        _, pbg2, pbhg2, _, _ = cls._priors(hp, x.dtype)
        return {"mug": _zeros(x), "bg": _zeros(x) + pbg2, "bhg": _zeros(x) + pbhg2}

    @classmethod
    def step(cls, x, g, state, hp, t):
        pa2, pbg2, pbhg2, first_sg, first_shg = cls._priors(hp, x.dtype)
        rho1 = (float(t) ** -_f64(hp["tau1"])).to(x.dtype)
        rho2 = (float(t) ** -_f64(hp["tau2"])).to(x.dtype)
        g = _decay(x, g, hp, fixed_decay=False)
        bg, bhg, mug = state["bg"], state["bhg"], state["mug"]
        if t == 1:
            sg, shg = first_sg, first_shg
        else:
            sg, shg = bg / pa2, bhg / pa2
        previous = mug * mug
        cross = mug * 2.0
        mug.mul_(shg).add_(g * sg)
        sums = sg + shg
        mug.div_(sums)
        variances = sg * shg / sums
        squares = mug * mug + variances
        bg2 = (squares + pbg2 - cross * mug) + previous
        bhg2 = (squares + pbhg2 - g * 2.0 * mug) + g * g
        bg.lerp_(bg2, rho1)
        bhg.lerp_(bhg2, rho2)
        x.sub_(hp["lr"] / (squares.sqrt() + hp["eps"]) * mug)


MSVAG_RHO_MAX = 0.9999  # MSVAG.get_rho's bound


@_rule("msvag")
class _MSVAG:
    """M-SVAG (pytorch_optimizer.MSVAG; Balles & Hennig 2018, "Dissecting Adam: The Sign, Magnitude and Variance of
    Stochastic Gradients", Algorithm 1, momentum SGD with variance adaptation): m ← βm + (1 − β)g,
    v ← βv + (1 − β)g², m̃ = m/(1 − βᵗ), ṽ = v/(1 − βᵗ), ρ = (1 − β²ᵗ)(1 − β)²/((1 − β²)(1 − βᵗ)²),
    s = (ṽ − m̃²)/(1 − ρ), γ = m̃²/(m̃² + ρs), x ← x − ηγm̃ (ρ is the variance factor of the bias-corrected
    average of t samples, (1 − β)(1 + βᵗ)/((1 + β)(1 − βᵗ))). arXiv:1705.07774. Deviations from the paper: ρ is
    bounded by 0.9999
    (at β = 0 or step 1 it is 1, and s would divide by zero), γ = 0 where it is 0/0 and γ is clipped to [0, 1]."""

    slots = staticmethod(lambda hp: 2)  # exp_avg, exp_avg_sq

    init = staticmethod(adam_moments)

    @staticmethod
    def step(x, g, state, hp, t):
        beta = hp["beta"]
        beta64 = _f64(beta)
        beta_power = beta64 ** t
        rho = (1.0 - beta_power ** 2) * (1.0 - beta64) ** 2
        rho = rho / ((1.0 - beta64 ** 2) * (1.0 - beta_power) ** 2)
        rho = rho.clamp(max=MSVAG_RHO_MAX)
        one_minus_rho = (1.0 - rho).to(x.dtype)  # in float64 first: 1 − ρ cancels where ρ is near its bound
        rho = rho.to(x.dtype)
        debias = (1.0 - beta_power).to(x.dtype)
        m, v = state["m"], state["v"]
        m.lerp_(g, 1.0 - beta)
        v.mul_(beta)
        v.copy_(torch.addcmul(v, (1.0 - beta) * g, g))
        mean = m / debias
        mean_sq = mean * mean
        variance = ((v / debias - mean_sq) / one_minus_rho) * rho + mean_sq
        factor = (mean_sq / variance).nan_to_num_(nan=0.0).clamp_(0.0, 1.0)
        x.copy_(torch.addcmul(x, -hp["lr"] * mean, factor))
