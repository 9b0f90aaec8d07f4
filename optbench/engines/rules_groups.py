"""Batched rules of seven pytorch_optimizer classes whose learning rate enters the update other than as a plain
factor of the step: MADGRAD, Ranger, AdaBound, AdaFactor, A2Grad, AccSGD and ASGD.

Same contract as :mod:`optbench.engines.batched_rules` (registered into its ``RULES`` table): ``x`` and ``g`` are
``[K, P]``, float hyperparameters ``[K, 1]`` tensors (integer ones too: Ranger's ``k``), strings and booleans
shared by the group. The learning rate is each configuration's own ``[K, 1]`` column inside the formulas
(MADGRAD's dual-averaging weight λ = (η + ε)√t, AdaBound's bounds η*·η/η₀, AdaFactor's relative step, AccSGD's
long step ηκ/c, ASGD's adapted step), so configurations that differ only in ``lr`` still step as one tensor
computation. Each rule follows the code path the loop engine's class object takes on a CPU (the ``foreach``
path, which every one of these classes takes for dense real tensors), operation for operation; the contract of
``tests/test_engine_contract.py`` checks each against the class to 1e-8 in float64, and
``tests/test_rules_groups.py`` against the update formula of its docstring, written independently in float64, and
against the class on the branches the registry defaults do not reach.

Where the class calls a fused kernel with a Python scalar, the rule calls the same kernel with the scalar as a
``[K, 1]`` column, which rounds as the class does on a CPU: ``a.add_(b, alpha=s)`` is ``torch.addcmul(a, s, b)``,
``a.addcmul_(b, c, value=s)`` is ``torch.addcmul(a, s·b, c)``, ``a.addcdiv_(b, c, value=s)`` is ``a + s·b/c`` and
``a.lerp_(b, s)`` is ``torch.lerp`` with the column (the notes of :mod:`optbench.engines.rules_misc`).

Per-parameter-tensor statistics (Ranger's gradient centralisation of matrices and kernels, AdaFactor's factored
moments of matrices and its per-tensor RMS, A2Grad's per-tensor variance) are computed one tensor at a time over
the ``LAYERS`` layout; ASGD's whole-model norms are ``JOINT``. On an analytic problem the layout is one 1-D tensor.
"""

from __future__ import annotations

import math

import torch

from optbench.engines.batched_rules import JOINT, LAYERS, _rule, _zeros


def _tensors(x, layout):
    """Column slices ``[K, size]`` of ``x`` per parameter tensor of the layout (views), with each tensor's shape."""
    return list(zip(x.split(layout.sizes, dim=-1), layout.shapes))


# ---- MADGRAD --------------------------------------------------------------------------------------------

@_rule("madgrad")
class _MADGRAD:
    """MADGRAD (pytorch_optimizer.MADGRAD; Defazio & Jelassi 2021, "Adaptivity without Compromise: A Momentumized,
    Adaptive, Dual Averaged Gradient Method for Stochastic Optimization", arXiv:2101.11075, Algorithm 1): with
    c = 1 − μ (μ = ``momentum``) and the dual-averaging weight λ_t = η√t, s ← s + λ_t g, ν ← ν + λ_t g²,
    z = x₀ − s/(∛ν + ε), x ← (1 − c)x + cz (x₀ the starting point). Deviations from the paper: the library uses
    η + ε in place of η (in λ_t and in the decay; the authors' code does the same), and with μ = 0 rebuilds x₀ each
    step as x + s/(∛ν + ε) with the previous s, ν (equal to the paper's x₀ in exact arithmetic, and what the
    authors' code does; with decoupled decay that x₀ carries the decay, x₀ ← x₀ − (η + ε)λx each step). Coupled
    decay g ← g + λx (the default, ``weight_decouple=False``) is the authors'; decoupled x ← x − (η + ε)λx_prev
    after the step is the library's. ε = 0 makes a zero ∛ν infinite (the coordinate does not move)."""

    # grad_sum_sq, s (, x0 with momentum); the class also keeps its step counter k as an int64 [1] tensor in its
    # state, 8 bytes: one float64 slot (in float32 the declaration counts 4 of its 8 bytes)
    slots = staticmethod(lambda hp: 2 + int(hp["momentum"] > 0))
    dim_slots = staticmethod(lambda hp, dim: 2 + int(hp["momentum"] > 0) + 1 / dim)

    @staticmethod
    def init(x, hp):
        return {"sum_sq": _zeros(x), "s": _zeros(x), "x0": x.clone()}

    @staticmethod
    def _rms(sum_sq, eps):
        rms = sum_sq.pow(1.0 / 3.0) + eps
        return torch.where((eps == 0.0) & (rms == 0), torch.inf, rms)

    @classmethod
    def step(cls, x, g, state, hp, t):
        momentum, eps, wd = hp["momentum"], hp["eps"], hp["weight_decay"]
        lr = torch.where(hp["lr"] != 0.0, hp["lr"] + eps, 0.0)
        lam = lr * math.pow(t, 0.5)
        decouple = hp["weight_decouple"]
        if not decouple:
            g = torch.where(wd != 0.0, torch.addcmul(g, wd, x), g)
        sum_sq, s = state["sum_sq"], state["s"]
        # μ = 0: x₀ rebuilt from the current point with the previous sums
        x0 = torch.where(momentum == 0.0, x + s / cls._rms(sum_sq, eps), state["x0"])
        sum_sq.copy_(torch.addcmul(sum_sq, lam * g, g))
        rms = cls._rms(sum_sq, eps)
        s.copy_(torch.addcmul(s, lam, g))
        old = x.clone() if decouple else None
        z = x0 - s / rms
        x.copy_(torch.where(momentum == 0.0, z, x.lerp(z, 1.0 - momentum)))
        if old is not None:
            x.copy_(torch.where(wd > 0.0, torch.addcmul(x, -lr * wd, old), x))


# ---- Ranger ---------------------------------------------------------------------------------------------

def _decay(x, g, hp, lr):
    """pytorch_optimizer's ``apply_weight_decay_foreach``: decoupled x ← x(1 − λ(1 if fixed_decay else lr)), or
    coupled g ← g + λx (``grad.add_(p, alpha=λ)``); returns the gradient."""
    wd = hp["weight_decay"]
    if hp["weight_decouple"]:
        x.mul_(1.0 - wd * (1.0 if hp["fixed_decay"] else lr))
        return g
    return torch.addcmul(g, wd, x)


def _centralized(g, layout, threshold: int):
    """``centralize_gradient`` of every parameter tensor with more than ``threshold`` dimensions: each slice along
    the first dimension (an output unit's weights or a filter) less its mean; other tensors as they are."""
    if all(len(shape) <= threshold for shape in layout.shapes):
        return g
    parts = []
    for part, shape in _tensors(g, layout):
        if len(shape) > threshold:
            view = part.reshape(part.shape[0], *shape)
            view = view - view.mean(dim=tuple(range(2, len(shape) + 1)), keepdim=True)
            part = view.reshape(part.shape)
        parts.append(part)
    return torch.cat(parts, dim=-1)


@_rule("ranger", needs=[LAYERS])
class _Ranger:
    """Ranger (pytorch_optimizer.Ranger): RAdam (Liu et al. 2020, "On the Variance of the Adaptive Learning Rate
    and Beyond", Algorithm 2) inside Lookahead (Zhang et al. 2019, arXiv:1907.08610) with gradient centralisation
    (Yong et al. 2020, arXiv:2004.01461). With ``use_gc``, a parameter tensor with more than one dimension (more
    than three with ``gc_conv_only``) has each slice along its first dimension centred, g ← g − mean(g) over the
    other dimensions; a vector (biases, every analytic problem) is left as it is. Decay (decoupled
    x ← x(1 − λη), η unscaled with ``fixed_decay``, by default; or coupled g ← g + λx); m ← β₁m + (1 − β₁)g,
    v ← β₂v + (1 − β₂)g²; ρ∞ = 2/(1 − β₂) − 1, ρ_t = ρ∞ − 2tβ₂ᵗ/(1 − β₂ᵗ); when ρ_t ≥ N (``n_sma_threshold``),
    x ← x − η r_t/(1 − β₁ᵗ) · m/(√v + ε) with r_t = √((1 − β₂ᵗ)(ρ_t − 4)(ρ_t − 2)ρ∞ / ((ρ∞ − 4)(ρ∞ − 2)ρ_t));
    else x ← x − η r/(1 − β₁ᵗ) · m with r = 1 if ``degenerated_to_sgd`` else −1. Every k steps (t mod k = 0)
    Lookahead: s ← s + α(x − s), x ← s (s starts at x₀). Deviations from the papers: RAdam rectifies from
    ρ_t > 4 and otherwise takes the momentum step x ← x − η m̂; the library's threshold is ρ_t ≥ 5 and, at the
    default ``degenerated_to_sgd=False``, its r = −1 moves the other way, x ← x + η m̂ (up the averaged gradient)
    for the first steps (five at β₂ = 0.999), where the original Ranger takes the momentum step; ε is added to
    √v before the √(1 − β₂ᵗ) factor of r_t (an effective ε/√(1 − β₂ᵗ) on the bias-corrected √v̂)."""

    slots = staticmethod(lambda hp: 3)  # exp_avg, exp_avg_sq, slow_buffer

    @staticmethod
    def refuses(hp):
        if hp["n_sma_threshold"] < 4:
            return ("n_sma_threshold below 4: the class's rectification takes math.sqrt of a negative number "
                    "(a math domain error) at the steps with max(2, threshold) < ρ_t < 4")
        return None

    @staticmethod
    def init(x, hp):
        # the Lookahead period on the host: which configurations synchronise at step t costs no device round trip
        return {"m": _zeros(x), "v": _zeros(x), "slow": x.clone(), "k": hp["k"].detach().cpu()}

    @staticmethod
    def step(x, g, state, hp, t):
        lr, beta1, beta2 = hp["lr"], hp["beta1"], hp["beta2"]
        if hp["use_gc"]:
            g = _centralized(g, state["layout"], 3 if hp["gc_conv_only"] else 1)
        g = _decay(x, g, hp, lr)
        m, v = state["m"], state["v"]
        m.lerp_(g, 1.0 - beta1)
        v.mul_(beta2)
        v.copy_(torch.addcmul(v, (1.0 - beta2) * g, g))
        bias_correction1 = 1.0 - beta1 ** t
        n_sma_max = 2.0 / (1.0 - beta2) - 1.0
        beta2_t = beta2 ** t
        n_sma = n_sma_max - 2 * t * beta2_t / (1.0 - beta2_t)
        rectified = n_sma >= hp["n_sma_threshold"]
        rt = ((1.0 - beta2_t) * (n_sma - 4) / (n_sma_max - 4) * (n_sma - 2) / n_sma * n_sma_max
              / (n_sma_max - 2)).clamp_min(0.0).sqrt()
        rt = torch.where(rectified, rt, 1.0 if hp["degenerated_to_sgd"] else -1.0)
        step_size = lr * rt / bias_correction1
        adaptive = x + -step_size * m / (v.sqrt() + hp["eps"])
        x.copy_(torch.where(rectified, adaptive, torch.addcmul(x, -step_size, m)))
        lookahead = (t % state["k"]) == 0
        if bool(lookahead.any()):
            lookahead = lookahead.to(x.device)
            slow = state["slow"]
            slow.copy_(torch.where(lookahead, slow.lerp(x, hp["alpha"]), slow))
            x.copy_(torch.where(lookahead, slow, x))


# ---- AdaBound -------------------------------------------------------------------------------------------

AMS_BOUND_EPS = 1e-15  # BaseOptimizer.apply_ams_bound_foreach's exp_avg_sq_eps, under the square root


@_rule("adabound")
class _AdaBound:
    """AdaBound (pytorch_optimizer.AdaBound; Luo, Xiong, Liu & Sun 2019, "Adaptive Gradient Methods with Dynamic
    Bound of Learning Rate", Algorithm 2): decay (decoupled x ← x(1 − λη), η unscaled with ``fixed_decay``, by
    default; or coupled g ← g + λx); m ← β₁m + (1 − β₁)g, v ← β₂v + (1 − β₂)g² (AMSBound: v̂ the running
    maximum of v); with the final rate η* = ``final_lr``·η/η₀ (η₀ the lr at construction, so a schedule scales
    the bounds too) and the bounds η_l = η*(1 − 1/(γt + 1)), η_u = η*(1 + 1/(γt)),
    x ← x − clip(η√(1 − β₂ᵗ)/(1 − β₁ᵗ) / (√(v + 1e-15) + ε), η_l, η_u) · m. Deviations from the paper: the paper
    clips α/√v_t and steps by that rate /√t times m_t, with β₁ decaying; the library (as the authors' code) clips
    the bias-corrected Adam rate and has no 1/√t factor, a constant β₁, ε and 1e-15 in the denominator, and
    γ for the paper's 1 − β₂ in the bound functions. The decoupled decay is the library's (the authors' is
    coupled L2)."""

    slots = staticmethod(lambda hp: 2 + int(hp["ams_bound"]))  # exp_avg, exp_avg_sq (, max_exp_avg_sq)

    @staticmethod
    def init(x, hp):
        return {"m": _zeros(x), "v": _zeros(x), "vmax": _zeros(x), "base_lr": hp["lr"].clone()}

    @staticmethod
    def step(x, g, state, hp, t):
        lr, beta1, beta2 = hp["lr"], hp["beta1"], hp["beta2"]
        base_lr = state["base_lr"]
        bias_correction1 = 1.0 - beta1 ** t
        bias_correction2_sq = (1.0 - beta2 ** t).sqrt()
        final_lr = torch.where(base_lr > 0.0, hp["final_lr"] * lr / base_lr, 0.0)
        gamma = hp["gamma"]
        lower, upper = final_lr * (1 - 1 / (gamma * t + 1)), final_lr * (1 + 1 / (gamma * t))
        step_size = lr * bias_correction2_sq / bias_correction1
        g = _decay(x, g, hp, lr)
        m, v = state["m"], state["v"]
        m.lerp_(g, 1.0 - beta1)
        v.mul_(beta2)
        v.copy_(torch.addcmul(v, (1.0 - beta2) * g, g))
        if hp["ams_bound"]:
            torch.maximum(state["vmax"], v, out=state["vmax"])
            v = state["vmax"]
        denominator = (v + AMS_BOUND_EPS).sqrt() + hp["eps"]
        rate = torch.minimum(torch.maximum(step_size / denominator, lower), upper)
        x.sub_(rate * m)


# ---- AdaFactor ------------------------------------------------------------------------------------------

ADAFACTOR_EPS1 = 1e-30  # AdaFactor's eps1 (its default; the registry entry does not expose it), added to g²
ADAFACTOR_EPS2 = 1e-3  # eps2, the lower bound of the parameter RMS that scales the step


def _rms(values, n: int):
    """``BaseOptimizer.get_rms`` of one tensor's ``[K, n]`` columns: ‖values‖₂/√n per configuration."""
    return torch.linalg.vector_norm(values, dim=-1, keepdim=True) / math.sqrt(n)


@_rule("adafactor", needs=[LAYERS])
class _AdaFactor:
    """AdaFactor (pytorch_optimizer.AdaFactor; Shazeer & Stern 2018, "Adafactor: Adaptive Learning Rates with
    Sublinear Memory Cost", Algorithms 4 and 5 with update clipping and relative steps), parameter tensor by
    parameter tensor. With β̂₂ₜ = min(β₂, 1 − t^c) (c = ``decay_rate``), the step size
    ρ_t = min(1e-2, 1/√t) (``warmup_init``: min(1e-6·t, 1/√t); η with ``relative_step=False``) and
    α = max(ε₂, RMS(x))·ρ_t (ρ_t alone without ``scale_parameter``; ε₂ = 1e-3, RMS(x) before the decay):
    decoupled decay x ← x(1 − λα); u = g² + ε₁ (ε₁ = 1e-30); a vector: v ← v + (1 − β̂₂ₜ)(u − v), V = v; a
    tensor with ndim ≥ 2, factored over its last two dimensions: R ← R + (1 − β̂₂ₜ)(mean of u over the last
    dimension − R), C ← C + (1 − β̂₂ₜ)(mean of u over the second-to-last − C), V = (R/mean(R))·C (outer product
    over the last two dimensions, R's mean over its last dimension); U = g/√V; Û = U/max(1, RMS(U)/d)
    (d = ``clip_threshold``); with β₁: m ← m + (1 − β₁)(αÛ − m), x ← x − m; without (betas=(None, β₂)):
    x ← x − αÛ. Deviations from the paper: β₂ caps β̂₂ₜ (the paper has 1 − t^c, with no cap; at β₂ = 0.999 it
    binds from step ≈ 5624 on); the first moment over the scaled update (β₁ = 0.9 by default; the paper's
    Adafactor has none), ``scale_parameter=False``, ``warmup_init`` and the decay are library additions; tensors
    with more than two dimensions are factored over their last two (the paper factors matrices only); the
    moments are means where the paper has sums, which gives the same V. The momentum is kept in the run's dtype
    (``OptimizerEntry.build`` passes it: the class's default is bfloat16)."""

    # exp_avg (with β₁) and exp_avg_sq: a [d] vector's state (a matrix keeps its row and column factors instead)
    slots = staticmethod(lambda hp: 1 + int(_AdaFactor._beta1(hp) is not None))

    @staticmethod
    def _beta1(hp):
        """β₁ (a ``[K, 1]`` column), or None: betas=(None, β₂) is a shared setting, not a column."""
        if "betas" in hp:  # not float-like: (None, β₂)
            return hp["betas"][0]
        return hp["beta1"]

    @staticmethod
    def init(x, hp):
        return {"m": _zeros(x), "v": _zeros(x), "row": {}, "col": {}}

    @classmethod
    def step(cls, x, g, state, hp, t):
        layout = state["layout"]
        beta1 = cls._beta1(hp)
        beta2 = hp["beta2"] if "betas" not in hp else float(hp["betas"][1])
        beta2_t = torch.minimum(torch.as_tensor(beta2, dtype=x.dtype), 1.0 - t ** hp["decay_rate"])
        weight = 1.0 - beta2_t  # the class's bias_correction2, the moments' interpolation weight
        if hp["relative_step"]:
            relative: float | torch.Tensor = min(1e-6 * t if hp["warmup_init"] else 1e-2, 1.0 / math.sqrt(t))
        else:
            relative = hp["lr"]
        wd = hp["weight_decay"]
        columns = zip(_tensors(x, layout), _tensors(g, layout), _tensors(state["m"], layout),
                      _tensors(state["v"], layout))
        for index, ((p, shape), (grad, _), (m, _), (v, _)) in enumerate(columns):
            n = p.shape[-1]
            if hp["scale_parameter"]:
                lr = torch.maximum(_rms(p, n), torch.as_tensor(ADAFACTOR_EPS2, dtype=p.dtype)) * relative
            else:
                lr = relative
            p.mul_(1.0 + lr * -wd)  # decoupled (the class's default; the entry does not expose the choice)
            update = grad.pow(2) + ADAFACTOR_EPS1
            if len(shape) >= 2:
                K = p.shape[0]
                full = update.reshape(K, *shape)
                row_shape, col_shape = (K, *shape[:-1]), (K, *shape[:-2], shape[-1])
                if index not in state["row"]:
                    state["row"][index] = torch.zeros(row_shape, dtype=p.dtype, device=p.device)
                    state["col"][index] = torch.zeros(col_shape, dtype=p.dtype, device=p.device)
                row, col = state["row"][index], state["col"][index]
                w = weight.reshape(K, *([1] * (len(shape) - 1)))
                row.lerp_(full.mean(dim=-1), w)
                col.lerp_(full.mean(dim=-2), w)
                r_factor = (row / row.mean(dim=-1, keepdim=True)).rsqrt_().unsqueeze(-1)
                c_factor = col.unsqueeze(-2).rsqrt()
                update = (r_factor * c_factor).reshape(K, n)
            else:
                v.lerp_(update, weight)
                update = v.rsqrt()
            update = update * grad
            update = update / (_rms(update, n) / hp["clip_threshold"]).clamp_min(1.0)
            update = update * lr
            if beta1 is not None:
                m.lerp_(update, 1.0 - beta1)
                update = m
            p.sub_(update)


# ---- A2Grad ---------------------------------------------------------------------------------------------

@_rule("a2grad", needs=[LAYERS])
class _A2Grad:
    """A2Grad (pytorch_optimizer.A2Grad; Deng, Cheng & Lan 2018, "Optimal Adaptive and Accelerated Stochastic
    Gradient Descent", arXiv:1810.00553), parameter tensor by parameter tensor; ``lr`` is not used. At step t, with
    γ_t = 2L/(t + 1) (L = ``lips``), α_t = 2/(t + 3) (α₀ = 1): ḡ ← ḡ + (g − ḡ)/t (the running mean of the
    gradients), δ = ‖g − ḡ‖² over the tensor; ``uni``: v ← v + δ; ``inc``: v ← (t/(t + 1))²v + δ; ``exp``:
    v̂ ← ρv̂ + (1 − ρ)δ, v ← max(v, v̂); h = √v (·√(t + 1) for ``inc`` and ``exp``), c = 1/(γ_t + βh);
    z ← z − cg (z starts at x₀); x ← (1 − α_t)x + α_t z − (1 − α_t)α_{t−1} c g. That is the accelerated scheme in
    three sequences with the parameter at the point where the gradient is taken: x̄_t = (1 − a_t)x̄_{t−1} + a_t z_t,
    x̲_{t+1} = (1 − a_{t+1})x̄_t + a_{t+1}z_t with a₁ = 1, a_t = 2/(t + 2) (the test checks this form).
    Deviations from the paper: not checked line by line against its algorithms (the library's scheme is the
    published A2Grad-uni/inc/exp one above); h is one scalar per parameter tensor (‖δ‖² summed over the tensor),
    not a per-coordinate diagonal scaling."""

    # avg_grad and x_k; per tensor the class keeps v_k (and v_kk for 'exp') as [1] tensors, counted here per
    # parameter of one [dim] vector
    slots = staticmethod(lambda hp: 2)
    dim_slots = staticmethod(lambda hp, dim: 2 + (1 + int(hp["variant"] == "exp")) / dim)

    @staticmethod
    def init(x, hp):
        return {"avg": _zeros(x), "z": x.clone(), "v": None, "v_exp": None, "alpha": 1.0}

    @staticmethod
    def step(x, g, state, hp, t):
        layout = state["layout"]
        variant, beta = hp["variant"], hp["beta"]
        gamma = 2.0 * hp["lips"] / (t + 1)
        alpha_next = 2.0 / (t + 3)
        if t == 1:
            state["avg"].copy_(g)  # the class starts its average at the first gradient
        avg = state["avg"]
        avg.lerp_(g, 1.0 / t)
        deltas = (g - avg) * (g - avg)
        delta_sq = torch.stack([torch.linalg.vector_norm(part, ord=1, dim=-1)
                                for part in deltas.split(layout.sizes, dim=-1)], dim=-1)  # [K, L]
        if state["v"] is None:
            state["v"], state["v_exp"] = torch.zeros_like(delta_sq), torch.zeros_like(delta_sq)
        v = state["v"]
        if variant in ("uni", "inc"):
            if variant == "inc":
                v.mul_((t / (t + 1)) ** 2)
            v.add_(delta_sq)
        else:
            state["v_exp"].lerp_(delta_sq, 1.0 - hp["rho"])
            torch.maximum(v, state["v_exp"], out=v)
        h = v.sqrt()
        if variant != "uni":
            h = h * math.sqrt(t + 1)
        coefficient = layout.spread(-(h * beta + gamma).reciprocal())
        z = state["z"]
        z.copy_(torch.addcmul(z, g, coefficient))
        x.lerp_(z, alpha_next)
        x.copy_(torch.addcmul(x, g, coefficient * ((1.0 - alpha_next) * state["alpha"])))
        state["alpha"] = alpha_next


# ---- AccSGD ---------------------------------------------------------------------------------------------

@_rule("accsgd")
class _AccSGD:
    """AccSGD (pytorch_optimizer.AccSGD; Jain, Kakade, Kidambi, Netrapalli & Sidford 2017, "Accelerating
    Stochastic Gradient Descent for Least Squares Regression", arXiv:1704.08227, in the form of Kidambi,
    Netrapalli, Jain & Kakade 2018, arXiv:1803.05591, Algorithm 1): with the short step η, the long step
    η̄ = ηκ/c (c = ``constant``), β = c²ξ/κ (= 1 − α, α = 1 − c²ξ/κ) and ζ = c/(c + β): coupled decay
    g ← g + λx; b ← β((1/β − 1)b − η̄g + x) (b starts at x₀); x ← x − ηg, then x ← x + (1 − ζ)(b − x).
    Deviations from the paper: none known (the authors' code, which the class follows, writes the last step as
    ζx + (1 − ζ)b: the same update, rounded otherwise); weight decay is the library's addition, off by default."""

    slots = staticmethod(lambda hp: 1)  # momentum_buffer

    @staticmethod
    def init(x, hp):
        return {"buf": x.clone()}

    @staticmethod
    def step(x, g, state, hp, t):
        lr, constant = hp["lr"], hp["constant"]
        large_lr = lr * hp["kappa"] / constant
        alpha = 1.0 - (hp["xi"] * constant ** 2 / hp["kappa"])
        beta = 1.0 - alpha
        zeta = constant / (constant + beta)
        g = torch.addcmul(g, hp["weight_decay"], x)
        buf = state["buf"]
        buf.mul_((1.0 / beta) - 1.0)
        buf.copy_(torch.addcmul(buf, -large_lr, g))
        buf.add_(x)
        buf.mul_(beta)
        x.copy_(torch.addcmul(x, -lr, g))
        x.lerp_(buf, 1.0 - zeta)


# ---- ASGD -----------------------------------------------------------------------------------------------

def _global_norms(x, g, layout):
    """ASGD's ``get_norms_by_group`` per configuration, ``[K, 1]`` float32: ‖x‖ from the float32 sum of the
    tensors' squared norms (squared in the parameters' dtype, then cast), and ‖g‖ from the float32 sum of the
    tensors' norms cast to float32 and squared there (``get_global_gradient_norm``)."""
    param_norms, grad_norms = layout.norms(x), layout.norms(g)  # [K, L] in the run's dtype
    param_norm = param_norms.square().float().sum(-1, keepdim=True).sqrt()
    grad_norm = grad_norms.float().square().sum(-1, keepdim=True).sqrt()
    return param_norm, grad_norm


@_rule("asgd", needs=[LAYERS, JOINT])
class _ASGD:
    """ASGD (pytorch_optimizer.ASGD; Malitsky & Mishchenko 2020, "Adaptive Gradient Descent without Descent",
    arXiv:1910.09529, Algorithm 1), over the whole model: with the step sizes η_t (η₀ = ``lr``) and their ratio θ
    (θ₀ = ``theta``), and the differences of norms Δx = ‖x_t‖ − ‖x_{t−1}‖, Δg = ‖g_t‖ − ‖g_{t−1}‖ over every
    parameter (both 0 at the first step), η_t = √(1 + aθ)·η_{t−1} (a = ``amplifier``), and when Δx > 0 and
    Δg > 0, η_t = min(η_t, Δx/(δΔg)) + ε (δ = ``dampening``); θ ← η_t/η_{t−1}; decay (decoupled x ← x(1 − λη_t),
    η_t unscaled with ``fixed_decay``, by default; or coupled g ← g + λx); x ← x − η_t g. Deviations from the
    paper: the paper's bound is ‖x_t − x_{t−1}‖/(2‖∇f(x_t) − ∇f(x_{t−1})‖), applied at every step; the library
    takes differences of norms (a bound only while both norms grow, and then without the factor 2 at the
    default δ = 1), computes the norms in float32, scales θ by a = 0.02 inside the square root (the paper's
    √(1 + θ)), starts from θ₀ = 1 (the paper's θ₀ = +∞ makes the second step the bound alone) and adds ε to a
    bounded step. The norms are whole-model (``JOINT``), summed tensor by tensor as the class does. The step
    sizes follow the class's Python floats (float64). Under a schedule the engine replaces ``hp['lr']`` at every
    step and the scheduled lr replaces η_{t−1} (the loop engine sets the group's lr before each step, which
    overwrites the one the class adapted); without one the adapted η_{t−1} is kept."""

    slots = staticmethod(lambda hp: 0)  # the norms and step sizes are parameter-group entries, not state

    @staticmethod
    def init(x, hp):
        column = torch.zeros_like(x[:, :1], dtype=torch.float64)
        return {"lr": hp["lr"].to(torch.float64), "theta": hp["theta"].to(torch.float64) + column,
                "given_lr": hp["lr"], "prev": None}

    @staticmethod
    def step(x, g, state, hp, t):
        param_norm, grad_norm = _global_norms(x, g, state["layout"])
        if state["prev"] is None:
            state["prev"] = (param_norm, grad_norm)
        param_diff = (param_norm - state["prev"][0]).double()
        grad_diff = (grad_norm - state["prev"][1]).double()
        state["prev"] = (param_norm, grad_norm)
        # a schedule replaces hp['lr'] every step (as the loop engine's set_lr overwrites the group's lr)
        lr = state["lr"] if hp["lr"] is state["given_lr"] else hp["lr"].to(torch.float64)
        f64 = lambda name: hp[name].to(torch.float64)  # noqa: E731  (the class's Python floats)
        new_lr = lr * (1 + f64("amplifier") * state["theta"]).sqrt()
        bounded = torch.minimum(new_lr, param_diff / (f64("dampening") * grad_diff)) + f64("eps")
        new_lr = torch.where((param_diff > 0) & (grad_diff > 0), bounded, new_lr)
        state["theta"] = new_lr / lr
        state["lr"] = new_lr
        step_size = new_lr.to(x.dtype)
        g = _decay(x, g, hp, step_size)
        x.copy_(torch.addcmul(x, -step_size, g))
