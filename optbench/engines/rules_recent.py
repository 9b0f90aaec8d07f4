"""Batched rules of recent Adam-style pytorch_optimizer classes: Adan, AdEMAMix, SimplifiedAdEMAMix, Grams,
GrokFastAdamW, AdamWSN, Ano, APOLLO, BCOS, Conda, FOCUS and SaRA.

Same contract as :mod:`optbench.engines.batched_rules` (registered into its ``RULES`` table): ``x`` and ``g`` are
``[K, P]``, float hyperparameters ``[K, 1]`` tensors (integer ones too), strings, booleans and ``None`` shared by
the group. Each rule follows the code path the loop engine's class object takes on a CPU (the ``foreach`` path
where the class enables it there, Grams's per-parameter loop, Conda's per-matrix loop), operation for operation;
the contract of ``tests/test_engine_contract.py`` checks each against the class to 1e-8 in float64,
``tests/test_rules_recent.py`` against the update formula of its docstring, written independently in plain torch,
and against the class on the option branches the registry defaults do not reach.

Where the class calls a fused kernel with a Python scalar, the rule calls the same kernel with the scalar as a
``[K, 1]`` column, which rounds as the class does on a CPU: ``a.add_(b, alpha=s)`` is ``torch.addcmul(a, s, b)``,
``a.addcmul_(b, c, value=s)`` is ``torch.addcmul(a, s·b, c)``, ``a.addcdiv_(b, c, value=s)`` is ``a + s·b/c`` (in
that order) and ``a.lerp_(b, s)`` is ``torch.lerp`` with the column.

Most of these classes are element-wise and run tensor by tensor on networks. Adan's optional global gradient-norm
clip (``max_grad_norm``) is a statistic over every parameter tensor of the model: its rule is ``JOINT`` and
``LAYERS`` (the norm is taken tensor by tensor, as the class's). Conda treats matrices (2-D tensors) differently
from the rest (an SVD basis per matrix): ``LAYERS``, for the tensors' shapes. SaRA's state follows its selection of
weights (``slots_in``).

Registry builds: AdamWSN's subset norm (``sn``) and APOLLO's low-rank projection (``rank``) are group options the
constructors do not take, so the registry's classes run without them, and so do the rules.
"""

from __future__ import annotations

import math

import torch

from optbench.engines.batched_rules import JOINT, LAYERS, _rule, _zeros, adam_moments


def _decay(x, g, hp, lr):
    """pytorch_optimizer's ``apply_weight_decay`` (and its foreach twin): decoupled x ← x(1 − λ(1 if fixed_decay
    else lr)), or coupled g ← g + λx (``grad.add_(p, alpha=λ)``); returns the gradient. λ = 0 changes nothing."""
    wd = hp["weight_decay"]
    if hp["weight_decouple"]:
        x.mul_(1.0 - wd * (1.0 if hp.get("fixed_decay", False) else lr))
        return g
    return torch.addcmul(g, wd, x)


# ---- Adan -----------------------------------------------------------------------------------------------

@_rule("adan", needs=[LAYERS, JOINT])
class _Adan:
    """Adan (pytorch_optimizer.Adan; Xie, Zhou, Li, Lin & Yan 2022, "Adan: Adaptive Nesterov Momentum Algorithm
    for Faster Optimizing Deep Models", Algorithm 1). The paper, with its decay rates β₁, β₂, β₃ (small numbers,
    0.02, 0.08, 0.01) and Δ_k = g_k − g_{k−1}: m ← (1 − β₁)m + β₁g, v ← (1 − β₂)v + β₂Δ, n ← (1 − β₃)n +
    β₃[g + (1 − β₂)Δ]², x ← (x − η(m + (1 − β₂)v)/(√n + ε))/(1 + λη).

    The library's ``betas`` are the complements (b₁, b₂, b₃) = (1 − β₁, 1 − β₂, 1 − β₃) = (0.98, 0.92, 0.99):
    with c the clip factor (1, or min(1, max_grad_norm/(‖G‖ + ε)) with ‖G‖ the norm of all gradients, taken in
    float32 from the per-tensor norms), g ← c·g, Δ = g − g_prev (0 at the first step: g_prev starts at g),
    m ← b₁m + (1 − b₁)g, v ← b₂v + (1 − b₂)Δ, u = g + b₂Δ, n ← b₃n + (1 − b₃)u²,
    D = √n/√(1 − b₃ᵗ) + ε, decoupled decay x ← x(1 − ηλ) (``weight_decouple``), x ← x − η/(1 − b₁ᵗ)·m/D −
    ηb₂/(1 − b₂ᵗ)·v/D, coupled (the paper's proximal) decay x ← x/(1 + ηλ). Deviations from the paper: bias
    corrections of m, v and n (the authors' code has them), ε added after the correction of √n, the optional
    decoupled decay and global-norm clip."""

    slots = staticmethod(lambda hp: 4)  # exp_avg, exp_avg_sq, exp_avg_diff, previous_grad

    @staticmethod
    def init(x, hp):
        # "previous" holds −g_prev, as the class's previous_grad (it adds g to get Δ)
        return {"m": _zeros(x), "v": _zeros(x), "n": _zeros(x), "previous": None}

    @staticmethod
    def _clip(g, state, hp):
        """The class's ``get_global_gradient_norm``: min(1, max_grad_norm/(√(Σ_l ‖g_l‖²) + ε)) in float32, ``[K, 1]``
        (the norms in the gradients' dtype, squared and summed in float32), or None when no configuration clips."""
        max_norm = hp["max_grad_norm"]
        if not bool((max_norm != 0).any()):
            return None
        layout = state["layout"]
        parts = g.split(layout.sizes, dim=-1)
        squares = torch.stack([torch.linalg.vector_norm(part, dim=-1) for part in parts], dim=-1).float().square()
        total = squares.sum(-1, keepdim=True) if len(parts) > 1 else squares
        # max_grad_norm / t is t.reciprocal() · max_grad_norm in torch (Tensor.__rtruediv__)
        clip = torch.clamp(total.sqrt().add(hp["eps"].float()).reciprocal() * max_norm.float(), max=1.0)
        return torch.where(max_norm != 0, clip.to(g.dtype), torch.ones_like(g[:, :1]))

    @classmethod
    def step(cls, x, g, state, hp, t):
        lr, beta1, beta2, beta3, wd = hp["lr"], hp["beta1"], hp["beta2"], hp["beta3"], hp["weight_decay"]
        clip = cls._clip(g, state, hp)
        previous = state["previous"]
        if previous is None:  # previous_grad = −c·g at the state's creation: the first difference is 0
            previous = -(g * clip) if clip is not None else -g
        if clip is not None:
            g = g * clip
        diff = previous + g
        m, v, n = state["m"], state["v"], state["n"]
        m.lerp_(g, 1.0 - beta1)
        v.lerp_(diff, 1.0 - beta2)
        corrected = diff * beta2 + g
        n.mul_(beta3)
        n.copy_(torch.addcmul(n, (1.0 - beta3) * corrected, corrected))
        denom = n.sqrt() / (1.0 - beta3 ** t).sqrt() + hp["eps"]
        if hp["weight_decouple"]:
            x.mul_(1.0 - lr * wd)
        step_size = lr / (1.0 - beta1 ** t)
        diff_step_size = lr * beta2 / (1.0 - beta2 ** t)
        x.copy_(x + -step_size * m / denom)
        x.copy_(x + -diff_step_size * v / denom)
        if not hp["weight_decouple"]:
            x.div_(1.0 + lr * wd)
        state["previous"] = -g


# ---- AdEMAMix ---------------------------------------------------------------------------------------------

@_rule("ademamix")
class _AdEMAMix:
    """AdEMAMix (pytorch_optimizer.AdEMAMix; Pagliardini, Ablin & Grangier 2024, "The AdEMAMix Optimizer: Better,
    Faster, Older", Algorithm 1): decay first (coupled g ← g + λx by default, decoupled x ← x(1 − λη), η unscaled
    with ``fixed_decay``); m₁ ← β₁m₁ + (1 − β₁)g, v ← β₂v + (1 − β₂)g², m₂ ← β₃(t)m₂ + (1 − β₃(t))g;
    x ← x − η(m₁/(1 − β₁ᵗ) + α(t)m₂)/(√v/√(1 − β₂ᵗ) + ε). With T = ``t_alpha_beta3`` the warm-ups
    α(t) = min(tα/T, α) and β₃(t) = min(exp(ln β₁ ln β₃/((1 − t/T) ln β₃ + (t/T) ln β₁)), β₃); without T, α and β₃.
    Deviations from the paper: the paper's decay is decoupled (λx added to the step); the library's default adds
    λx to the gradient. The warm-ups are computed here in float64 tensors where the class uses Python floats (the
    same operations; ``log``/``exp`` may round differently in the last bit)."""

    slots = staticmethod(lambda hp: 3)  # exp_avg, exp_avg_sq, exp_avg_slow

    @staticmethod
    def init(x, hp):
        return {"m": _zeros(x), "v": _zeros(x), "slow": _zeros(x)}

    @staticmethod
    def step(x, g, state, hp, t):
        lr, beta1, beta2, beta3, alpha = hp["lr"], hp["beta1"], hp["beta2"], hp["beta3"], hp["alpha"]
        horizon = hp["t_alpha_beta3"]
        if horizon is not None:
            alpha = torch.minimum(t * alpha / horizon, alpha)
            log1, log3 = beta1.log(), beta3.log()
            ratio = torch.full_like(horizon, t) / horizon  # t / T as the class's Python division
            beta3 = torch.minimum((log1 * log3 / ((1.0 - ratio) * log3 + ratio * log1)).exp(), beta3)
        g = _decay(x, g, hp, lr)
        m, v, slow = state["m"], state["v"], state["slow"]
        m.lerp_(g, 1.0 - beta1)
        v.mul_(beta2)
        v.copy_(torch.addcmul(v, (1.0 - beta2) * g, g))
        slow.lerp_(g, 1.0 - beta3)
        denom = v.sqrt() / (1.0 - beta2 ** t).sqrt() + hp["eps"]
        update = torch.addcmul(m / (1.0 - beta1 ** t), alpha, slow)
        x.copy_(x + -lr * update / denom)


# ---- SimplifiedAdEMAMix -----------------------------------------------------------------------------------

def _half_life(beta):
    return torch.log(torch.full_like(beta, 0.5)) / torch.log(beta + 1e-8) - 1.0


@_rule("simplifiedademamix")
class _SimplifiedAdEMAMix:
    """SimplifiedAdEMAMix (pytorch_optimizer.SimplifiedAdEMAMix; Morwani, Vyas, Kakade, Janson & Kakade 2025,
    "Connections between Schedule-Free Optimizers, AdEMAMix, and Accelerated SGD Variants", Algorithm 2):
    decay first (decoupled x ← x(1 − λη) by default, η unscaled with ``fixed_decay``, or coupled g ← g + λx);
    m ← β₁m + (1 − β₁)g, v ← β₂v + (1 − β₂)g², s ← β₂s + (1 − β₂) (s₀ = 0, so s = 1 − β₂ᵗ);
    x ← x − η(m + αg)/(√v + √s·ε)/√s. With W = ``beta1_warmup`` (for t < W) β₁ follows the half-life warm-up
    β₁(t) = 0.5^(1/(h + 1)), h = (1 − t/W)f(β_min) + (t/W)f(β₁), f(β) = ln 0.5/ln(β + 1e-8) − 1 (β_min = ``min_beta1``).
    Deviations from the paper: its momentum (and the authors' code's default) is the accumulation m ← β₁m + g
    ("theory style", without bias correction); the library keeps the EMA m ← β₁m + (1 − β₁)g, and its ``num_sum``
    (Σβ₁ⁱ) is kept but never used. The library rounds √s to float32 (a float32 tensor of the parameters' √s), so the
    ε term is float32(float32(√s)·ε) and the division is by float32(√s)."""

    slots = staticmethod(lambda hp: 2)  # exp_avg, exp_avg_sq (num_sum and den_sum are Python floats)

    @staticmethod
    def init(x, hp):
        return {"m": _zeros(x), "v": _zeros(x), "den_sum": torch.zeros_like(x[:, :1], dtype=torch.float64)}

    @staticmethod
    def step(x, g, state, hp, t):
        lr, beta1, beta2, warmup = hp["lr"], hp["beta1"], hp["beta2"], hp["beta1_warmup"]
        if warmup is not None:
            a = torch.full_like(warmup, t) / warmup
            warmed = torch.pow(0.5, 1.0 / ((1.0 - a) * _half_life(hp["min_beta1"]) + a * _half_life(beta1) + 1))
            beta1 = torch.where(t < warmup, warmed, beta1)
        g = _decay(x, g, hp, lr)
        m, v = state["m"], state["v"]
        m.lerp_(g, 1.0 - beta1)
        v.mul_(beta2)
        v.copy_(torch.addcmul(v, (1.0 - beta2) * g, g))
        beta2_64 = beta2.double()
        state["den_sum"] = den_sum = beta2_64 * state["den_sum"] + (1.0 - beta2_64)
        root = den_sum.sqrt().float()  # torch.tensor(den_sums, dtype=torch.float32)
        eps_term = (root * hp["eps"].float()).to(x.dtype)
        update = torch.addcmul(m, hp["alpha"], g) / (v.sqrt() + eps_term) / root.to(x.dtype)
        x.copy_(torch.addcmul(x, -lr, update))


# ---- Grams ------------------------------------------------------------------------------------------------

@_rule("grams")
class _Grams:
    """Grams (pytorch_optimizer.Grams; Cao, Liang, Liu & Song 2024, "Grams: Gradient Descent with Adaptive Momentum
    Scaling", Algorithm 1), the class's per-parameter path (its ``foreach`` defaults to False): Adam's moments
    m ← β₁m + (1 − β₁)g, v ← β₂v + (1 − β₂)g², u = m/(1 − β₁ᵗ)/(√v/√(1 − β₂ᵗ) + ε); the update takes u's
    magnitude and the current gradient's sign, û = |u|·sign(g); decoupled decay x ← x(1 − λη); x ← x − ηû.
    Deviations from the paper: with ``weight_decouple=False`` the class adds λx to the gradient after the update is
    computed, so the decay has no effect at all (reproduced: no decay)."""

    slots = staticmethod(lambda hp: 2)  # exp_avg, exp_avg_sq

    init = staticmethod(adam_moments)

    @staticmethod
    def step(x, g, state, hp, t):
        lr, beta1, beta2 = hp["lr"], hp["beta1"], hp["beta2"]
        m, v = state["m"], state["v"]
        m.lerp_(g, 1.0 - beta1)
        v.mul_(beta2)
        v.copy_(torch.addcmul(v, (1.0 - beta2) * g, g))
        denom = v.sqrt() / (1.0 - beta2 ** t).sqrt() + hp["eps"]
        update = (m / (1.0 - beta1 ** t) / denom).abs() * g.sign()
        if hp["weight_decouple"]:
            x.mul_(1.0 - hp["weight_decay"] * lr)
        x.copy_(torch.addcmul(x, -lr, update))


# ---- GrokFastAdamW ----------------------------------------------------------------------------------------

@_rule("grokfastadamw")
class _GrokFastAdamW:
    """GrokFastAdamW (pytorch_optimizer.GrokFastAdamW; Lee, Kang, Lee & Kim 2024, "Grokfast: Accelerated Grokking by
    Amplifying Slow Gradients", Algorithm 2, Grokfast-EMA, on AdamW): decay first (decoupled x ← x(1 − λη) by
    default, η unscaled with ``fixed_decay``, or coupled g ← g + λx); once t > ``grokfast_after_step`` (and with
    λ_g = ``grokfast_lamb`` > 0) the slow-gradient filter μ ← αμ + (1 − α)g and the amplified gradient ĝ = g + λ_gμ
    (α = ``grokfast_alpha``; μ starts at the first step's raw gradient); then Adam on ĝ:
    m ← β₁m + (1 − β₁)ĝ, v ← β₂v + (1 − β₂)ĝ², x ← x − η/(1 − β₁ᵗ) · m/max(√v/√(1 − β₂ᵗ), ε).
    With ``normalize_lr`` (default) η is the given lr divided by 1 + λ_g (set once, at construction).
    Deviations from the paper: that lr normalisation, and ε as a floor of the denominator instead of added to it.
    The rule divides each step's lr by 1 + λ_g, also under an lr schedule, as the loop engine scales the class's
    normalised group lr by the schedule's factor (engines.recipe.set_scheduled_lr, as torch's schedulers do)."""

    slots = staticmethod(lambda hp: 2 + int(bool(hp["grokfast"]) and hp["grokfast_lamb"] > 0))  # (+ grok_exp_avg)

    @staticmethod
    def init(x, hp):
        return {"m": _zeros(x), "v": _zeros(x), "grok": None}

    @staticmethod
    def step(x, g, state, hp, t):
        beta1, beta2, lamb = hp["beta1"], hp["beta2"], hp["grokfast_lamb"]
        lr = hp["lr"] / (1.0 + lamb) if hp["grokfast"] and hp["normalize_lr"] else hp["lr"]
        if hp["grokfast"] and state["grok"] is None:
            state["grok"] = g.clone()  # the raw gradient of the first step, before any decay
        g = _decay(x, g, hp, lr)
        if hp["grokfast"]:
            grok = state["grok"]
            on = (lamb > 0.0) & (t > hp["grokfast_after_step"])
            grok.copy_(torch.where(on, torch.lerp(grok, g, 1.0 - hp["grokfast_alpha"]), grok))
            g = torch.where(on, torch.addcmul(g, lamb, grok), g)
        m, v = state["m"], state["v"]
        m.lerp_(g, 1.0 - beta1)
        v.mul_(beta2)
        v.copy_(torch.addcmul(v, (1.0 - beta2) * g, g))
        denom = (v.sqrt() / (1.0 - beta2 ** t).sqrt()).clamp_min(hp["eps"])
        x.copy_(x + -lr / (1.0 - beta1 ** t) * m / denom)


# ---- AdamWSN ----------------------------------------------------------------------------------------------

@_rule("adamwsn")
class _AdamWSN:
    """AdamWSN (pytorch_optimizer.AdamWSN; Nguyen, Nguyen, Le & Nguyen 2024, "Subset-Norm and Subspace-Momentum:
    Faster Memory-Efficient Adaptive Optimization with Convergence Guarantees"), as the registry builds it: without
    the class's ``sn`` group option (not a constructor argument), so the second moment is per coordinate, not per
    subset, and ``subset_size`` is unused. m ← β₁m + (1 − β₁)g, v ← β₂v + (1 − β₂)g² (a lerp),
    x ← x − η√(1 − β₂ᵗ)/(1 − β₁ᵗ) · m/(√v + ε), then decoupled decay x ← x(1 − λη) (η unscaled with
    ``fixed_decay``). Deviations from the paper: the subset norm (the paper's point) is off; ε is added before the
    bias correction (ε√(1 − β₂ᵗ) after it); with ``weight_decouple=False`` the class adds λx to the gradient after
    the update, so the decay has no effect (reproduced: no decay)."""

    slots = staticmethod(lambda hp: 2)  # exp_avg, exp_avg_sq

    init = staticmethod(adam_moments)

    @staticmethod
    def step(x, g, state, hp, t):
        lr, beta1, beta2 = hp["lr"], hp["beta1"], hp["beta2"]
        m, v = state["m"], state["v"]
        m.lerp_(g, 1.0 - beta1)
        v.lerp_(g * g, 1.0 - beta2)
        step_size = lr * (1.0 - beta2 ** t).sqrt() / (1.0 - beta1 ** t)
        x.copy_(x + -step_size * m / (v.sqrt() + hp["eps"]))
        if hp["weight_decouple"]:
            _decay(x, g, hp, lr)


# ---- Ano --------------------------------------------------------------------------------------------------

@_rule("ano")
class _Ano:
    """Ano (pytorch_optimizer.Ano; Kegreisz 2025, "Ano: Faster is Better in Noisy Landscape", Algorithm 1): decay
    first (decoupled x ← x(1 − λη) by default, η unscaled with ``fixed_decay``, or coupled g ← g + λx);
    m ← β₁m + (1 − β₁)g; the Yogi-style second moment v ← β₂v + (1 − β₂)·sign(g² − v)·g²;
    x ← x − η|g|·sign(m)/(√(v/(1 − β₂ᵗ)) + ε): the direction from the momentum, the magnitude from the current
    gradient. With ``logarithmic_schedule`` β₁ = 1 − 1/ln(max(2, t)) (Anolog, replacing the configured β₁).
    Deviations from the authors' code (the ``ano-optimizer`` package, decoupled decay only): ε is added to √v̂
    where it divides by √(v̂ + ε); the coupled decay and ``fixed_decay`` are the library's options."""

    slots = staticmethod(lambda hp: 2)  # exp_avg, exp_avg_sq

    init = staticmethod(adam_moments)

    @staticmethod
    def step(x, g, state, hp, t):
        lr, beta1, beta2 = hp["lr"], hp["beta1"], hp["beta2"]
        if hp["logarithmic_schedule"]:
            beta1 = torch.full_like(beta1, 1.0 - 1.0 / math.log(max(2, t)))
        g = _decay(x, g, hp, lr)
        m, v = state["m"], state["v"]
        m.lerp_(g, 1.0 - beta1)
        square = g * g
        sign = (square - v).sign()
        v.mul_(beta2)
        v.copy_(torch.addcmul(v, (1.0 - beta2) * sign, square))
        denom = (v / (1.0 - beta2 ** t)).sqrt() + hp["eps"]
        x.copy_(x + -lr * (g.abs() * m.sign()) / denom)


# ---- APOLLO -----------------------------------------------------------------------------------------------

@_rule("apollo")
class _APOLLO:
    """APOLLO (pytorch_optimizer.APOLLO; Zhu et al. 2024, "APOLLO: SGD-like Memory, AdamW-level Performance"), as the
    registry builds it: without the class's ``rank`` group option (not a constructor argument) no tensor is
    projected, and the class updates every tensor with its unprojected AdamW path (``update_unprojected_foreach``;
    ``scale_type`` unused). With s = η√(1 − β₂ᵗ)/(1 − β₁ᵗ) (s = η without ``correct_bias``): coupled decay
    g ← g + λx (``weight_decouple=False``); m ← β₁m + (1 − β₁)g, v ← β₂v + (1 − β₂)g², x ← x − s·m/(√v + ε);
    decoupled decay x ← x(1 − λs) (x(1 − λ) with ``fixed_decay``). Deviations from the paper: the paper's method,
    Adam moments of a random low-rank projection of each matrix's gradient and a channel- or tensor-wise
    rescaling of the raw gradient by their ratio, is off; the decay is scaled by the bias-corrected step s."""

    slots = staticmethod(lambda hp: 2)  # exp_avg, exp_avg_sq

    init = staticmethod(adam_moments)

    @staticmethod
    def step(x, g, state, hp, t):
        lr, beta1, beta2 = hp["lr"], hp["beta1"], hp["beta2"]
        step_size = lr * ((1.0 - beta2 ** t).sqrt() / (1.0 - beta1 ** t)) if hp["correct_bias"] else lr
        if not hp["weight_decouple"]:
            g = _decay(x, g, hp, step_size)
        m, v = state["m"], state["v"]
        m.lerp_(g, 1.0 - beta1)
        v.mul_(beta2)
        v.copy_(torch.addcmul(v, (1.0 - beta2) * g, g))
        x.copy_(torch.addcmul(x, -step_size, m / (v.sqrt() + hp["eps"])))
        if hp["weight_decouple"]:
            _decay(x, g, hp, step_size)


# ---- BCOS -------------------------------------------------------------------------------------------------

@_rule("bcos")
class _BCOS:
    """BCOS (pytorch_optimizer.BCOS; Jiang, Xu & Xiao 2025, "Stochastic Approximation with Block Coordinate Optimal
    Stepsizes"): x ← x − η d/(√v + ε), a search direction d over an estimate v of E[d²], per coordinate. Decay
    first (decoupled x ← x(1 − λη) by default, or coupled g ← g + λx). By ``mode``: ``g``, d = g and
    v ← β_v v + (1 − β_v)g²; ``m``, d = m ← βm + (1 − β)g and v ← β_v v + (1 − β_v)m² (β_v = β, or ``beta2``);
    ``c`` (default), d = m and no second state: v = (3β² − 2β³)m² + (1 − β)²g² + 2β(1 − β)²m·g with the updated m,
    or with ``simple_cond`` v = β_v m² + (1 − β_v)g², β_v = 1 − (1 − β)² (or ``beta2``). As in the authors' code,
    m and v start at the first step's raw gradient g₁ and g₁² (not zero; before the decay), with no bias
    corrections. Deviations from the authors' code: in mode c their estimator takes the momentum before its update,
    m_{t−1}; the class's takes the updated m_t (its ``old_m`` is the state tensor the update has just changed in
    place; reproduced). The mode-c coefficients are computed as the class's Python floats."""

    slots = staticmethod(lambda hp: int(hp["mode"] in ("m", "c")) + int(hp["mode"] in ("g", "m")))  # m, v

    @staticmethod
    def _coefficients(hp):
        """β_v and, for mode c, the three weights of v, ``[K, 1]`` columns from the class's Python expressions."""
        betas = hp["beta"].reshape(-1).tolist()
        beta2s = [None] * len(betas) if hp["beta2"] is None else hp["beta2"].reshape(-1).tolist()
        column = lambda values: torch.tensor(values, dtype=hp["beta"].dtype,  # noqa: E731
                                             device=hp["beta"].device)[:, None]
        if hp["mode"] != "c":
            return {"beta_v": column([b if b2 is None else b2 for b, b2 in zip(betas, beta2s)])}
        if hp["simple_cond"]:
            beta_v = [1.0 - (1.0 - b) ** 2 if b2 is None else b2 for b, b2 in zip(betas, beta2s)]
            return {"moment": column(beta_v), "grad": column([1.0 - b for b in beta_v])}
        return {"moment": column([3.0 * b ** 2 - 2.0 * b ** 3 for b in betas]),
                "grad": column([(1.0 - b) ** 2 for b in betas]),
                "cross": column([2.0 * b * (1.0 - b) ** 2 for b in betas])}

    @classmethod
    def init(cls, x, hp):
        return {"m": None, "v": None, "coefficients": cls._coefficients(hp)}

    @staticmethod
    def step(x, g, state, hp, t):
        lr, beta, mode = hp["lr"], hp["beta"], hp["mode"]
        coefficients = state["coefficients"]
        if state["m"] is None and mode in ("m", "c"):
            state["m"] = g.clone()
        if state["v"] is None and mode in ("g", "m"):
            state["v"] = g * g
        g = _decay(x, g, hp, lr)
        direction = g
        if mode in ("m", "c"):
            direction = state["m"]
            direction.lerp_(g, 1.0 - beta)
        if mode in ("g", "m"):
            v = state["v"]
            v.lerp_(direction * direction, 1.0 - coefficients["beta_v"])
        elif hp["simple_cond"]:
            v = direction * direction * coefficients["moment"] + g * g * coefficients["grad"]
        else:
            v = direction * direction * coefficients["moment"] + g * g * coefficients["grad"]
            v = v + direction * coefficients["cross"] * g
        x.copy_(x + -lr * direction / (v.sqrt() + hp["eps"]))


# ---- FOCUS ------------------------------------------------------------------------------------------------

@_rule("focus")
class _FOCUS:
    """FOCUS (pytorch_optimizer.FOCUS; Liu, Liu, Gore, Xiong, Dong & Qian 2025, "FOCUS: First Order Concentrated
    Updating Scheme", Algorithm 1): sign descent attracted to the running average of the iterates.
    m ← β₁m + (1 − β₁)g, p̄ ← β₂p̄ + (1 − β₂)x, p̂ = p̄/(1 − β₂ᵗ); with λ > 0, x ← x − ηλp̂;
    x ← x − η(sign(m) + γ sign(x − p̂)) (the attraction's sign taken after the decay step); the decay subtracts
    ηλ times the averaged iterate p̂, not the current one, as in the authors' code. Deviations from the authors'
    code: they decay after the step, with the attraction's sign taken at the undecayed x; the library decays first."""

    slots = staticmethod(lambda hp: 2)  # exp_avg, pbar

    @staticmethod
    def init(x, hp):
        return {"m": _zeros(x), "pbar": _zeros(x)}

    @staticmethod
    def step(x, g, state, hp, t):
        lr, beta1, beta2, wd = hp["lr"], hp["beta1"], hp["beta2"], hp["weight_decay"]
        m, pbar = state["m"], state["pbar"]
        m.lerp_(g, 1.0 - beta1)
        pbar.lerp_(x, 1.0 - beta2)
        pbar_hat = pbar / (1.0 - beta2 ** t)
        x.copy_(torch.where(wd > 0.0, torch.addcmul(x, -lr * wd, pbar_hat), x))
        update = (x - pbar_hat).sign() * hp["gamma"] + m.sign()
        x.copy_(torch.addcmul(x, -lr, update))


# ---- Conda ------------------------------------------------------------------------------------------------

def _tensors(x, layout):
    """Column slices ``[K, size]`` of ``x`` per parameter tensor of the layout (views), with each tensor's shape."""
    return list(zip(x.split(layout.sizes, dim=-1), layout.shapes))


def _rows(fn, *tensors):
    """``fn`` applied configuration by configuration (``[K, …]`` → stacked): the class's own 2-D matrix products,
    which a batched product may round differently."""
    return torch.stack([fn(*parts) for parts in zip(*tensors)])


def _times_basis(low, basis):
    return torch.matmul(low, basis)


def _basis_times(low, basis):
    return torch.matmul(basis, low)


class _Projection:
    """GaLoreProjector with ``rank=None`` (every singular vector), as Conda builds it, for K ``[m, n]`` matrices at
    once: the basis (u and/or vᵀ of the SVD of the basis matrix, taken in float32 as the class does for any dtype
    but float32, then cast back), the projection and its inverse, for each ``projection_type``."""

    def __init__(self, kind: str):
        self.kind = kind
        self.ortho: tuple[torch.Tensor, ...] | None = None

    def _side(self, rows: int, cols: int) -> str:
        right = rows >= cols
        if self.kind in ("std", "random"):
            return "right" if right else "left"
        if self.kind == "reverse_std":
            return "left" if right else "right"
        return self.kind  # right, left, full

    def update(self, basis: torch.Tensor, refresh: torch.Tensor) -> None:
        """New bases from ``basis`` ``[K, m, n]`` for the configurations where ``refresh`` ``[K]`` (all at first)."""
        dtype = basis.dtype
        u, _, vh = torch.linalg.svd(basis if dtype == torch.float32 else basis.float(), full_matrices=False)
        u, vh = u.to(dtype), vh.to(dtype)
        side = self._side(basis.shape[-2], basis.shape[-1])
        new = (vh,) if side == "right" else (u,) if side == "left" else (u, vh)
        if self.ortho is None:
            self.ortho = new
        else:
            self.ortho = tuple(torch.where(refresh[:, None, None], fresh, old) for fresh, old in zip(new, self.ortho))

    def project(self, grad: torch.Tensor) -> torch.Tensor:
        assert self.ortho is not None
        rows, cols = grad.shape[-2:]
        right = rows >= cols
        kind, first = self.kind, self.ortho[0]
        if kind == "full":
            return _rows(lambda g, a, b: torch.matmul(a.t(), g) @ b.t(), grad, *self.ortho)
        if kind in ("std", "random"):
            take_right = right
        elif kind == "reverse_std":
            take_right = not right
        else:
            take_right = kind == "right"
        if take_right:
            return _rows(lambda g, o: torch.matmul(g, o.t()), grad, first)
        return _rows(lambda g, o: torch.matmul(o.t(), g), grad, first)

    def project_back(self, low: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
        assert self.ortho is not None
        kind, first = self.kind, self.ortho[0]
        if kind == "full":
            back = _rows(lambda v, a, b: torch.matmul(a, v) @ b, low, *self.ortho)
        else:
            if kind in ("std", "random"):
                on_right = low.shape[-1] == first.shape[-2]
            elif kind == "reverse_std":
                on_right = low.shape[-2] != first.shape[-1]
            else:
                on_right = kind == "right"
            back = _rows(_times_basis if on_right else _basis_times, low, first)
        return back * scale[:, :, None]


@_rule("conda", needs=[LAYERS])
class _Conda:
    """Conda (pytorch_optimizer.Conda; "Conda: Column-Normalized Adam for Training Large Language Models Faster",
    2025, Algorithm 1): Adam whose second moment, for each matrix, is kept in the basis of the momentum's singular
    vectors. With s = η√(1 − β₂ᵗ)/(1 − β₁ᵗ): m ← β₁m + (1 − β₁)g; for a 2-D tensor, every ``update_proj_gap`` steps
    (and at the first) P = the singular vectors of m (vᵀ for a tall-or-square matrix, u otherwise, with the default
    ``projection_type='std'``), g̃ = projection of g, m̃ = of m, v ← β₂v + (1 − β₂)g̃²,
    x ← x − s·c·P⁻¹(m̃/(√v + ε)) (c = ``scale``, P⁻¹ the back-projection); any other tensor (every analytic problem's
    vector, biases, convolution kernels): v ← β₂v + (1 − β₂)g², x ← x − s·m/(√v + ε). Then x ← x(1 − λη).
    Deviations from the paper: none found beyond the library's implementation details, mirrored here: the SVD is
    taken in float32 whatever the parameters' dtype; ε is added before the bias correction (ε√(1 − β₂ᵗ) after it).
    Each matrix product is the class's 2-D one, configuration by configuration (a batched product may round
    differently)."""

    slots = staticmethod(lambda hp: 2)  # exp_avg, exp_avg_sq (the projector's bases are per matrix)

    @staticmethod
    def init(x, hp):
        return {"m": _zeros(x), "v": None, "projections": {}}

    @staticmethod
    def step(x, g, state, hp, t):
        lr, beta1, beta2, eps = hp["lr"], hp["beta1"], hp["beta2"], hp["eps"]
        layout = state["layout"]
        step_size = lr * (1.0 - beta2 ** t).sqrt() / (1.0 - beta1 ** t)
        if state["v"] is None:
            state["v"] = [_Conda._second_moment(p, shape, hp["projection_type"]) for p, shape in _tensors(x, layout)]
        m_parts = _tensors(state["m"], layout)
        for index, ((p, shape), (grad, _), (m, _)) in enumerate(zip(_tensors(x, layout), _tensors(g, layout), m_parts)):
            v = state["v"][index]
            m.lerp_(grad, 1.0 - beta1)
            if len(shape) != 2:
                v.mul_(beta2)
                v.copy_(torch.addcmul(v, (1.0 - beta2) * grad, grad))
                p.copy_(torch.addcmul(p, -step_size, m / (v.sqrt() + eps)))
            else:
                projection = state["projections"].setdefault(index, _Projection(hp["projection_type"]))
                K = p.shape[0]
                m_matrix, g_matrix = m.reshape(K, *shape), grad.reshape(K, *shape)
                refresh = (torch.remainder(torch.full_like(hp["update_proj_gap"], t), hp["update_proj_gap"]) == 0)
                if projection.ortho is None or bool(refresh.any()):
                    projection.update(m_matrix, refresh.reshape(-1))
                low_grad, low_m = projection.project(g_matrix), projection.project(m_matrix)
                v.mul_(beta2[:, :, None])
                v.copy_(torch.addcmul(v, (1.0 - beta2)[:, :, None] * low_grad, low_grad))
                back = projection.project_back(low_m / (v.sqrt() + eps[:, :, None]), hp["scale"])
                p.copy_(torch.addcmul(p, -step_size, back.reshape(K, -1)))
            p.mul_(1.0 - hp["weight_decay"] * lr)

    @staticmethod
    def _second_moment(p, shape, kind):
        """exp_avg_sq: the tensor's shape, for a matrix with its projected dimensions (rank = min(m, n))."""
        if len(shape) != 2:
            return torch.zeros_like(p)
        rows, cols = shape
        rank = min(shape)
        if kind in ("left", "full", "reverse_std"):
            rows = rank
        if kind in ("right", "full", "reverse_std"):
            cols = rank
        return p.new_zeros((p.shape[0], rows, cols))


# ---- SaRA -------------------------------------------------------------------------------------------------

@_rule("sara")
class _SaRA:
    """SaRA (pytorch_optimizer.SaRA; Hu et al. 2024, "SaRA: High-Efficient Diffusion Model Fine-tuning with
    Progressive Sparse Low-Rank Adaptation"): AdamW on the weights that are small at the start, |x₀| < τ
    (τ = ``threshold``), the others frozen. On the selected coordinates: m ← β₁m + (1 − β₁)g, v ← β₂v + (1 − β₂)g²
    (AMSBound: v̂ = the running maximum of v), x ← x(1 − λη), x ← x − η/(1 − β₁ᵗ) · m/(√v̂/√(1 − β₂ᵗ) + ε).
    With ``progressive_iter`` = p ≥ 0 the selection is refined once, before update p + 1, to the selected weights
    still below τ (their moments kept). Without an lr the class uses η = 10⁻³·exp(−350τ). Not reproduced
    (``refuses``): ``lambda_rank`` > 0, the nuclear-norm penalty on one matrix (both sides > 64) drawn with Python's
    ``random`` each step. Deviations from the paper: the paper trains the selected weights through a sparse
    reparameterisation (and adds the low-rank penalty); the library masks ordinary AdamW updates. Its state is the
    selection (a bool per weight) and two or three moments per selected weight: ``slots_in`` counts them."""

    slots = staticmethod(lambda hp: 2 + int(hp["ams_bound"]))  # per selected weight (slots_in: the real count)

    @staticmethod
    def refuses(hp):
        if hp["lambda_rank"] > 0:
            return ("lambda_rank > 0 (its nuclear-norm penalty picks a matrix with Python's random module each step) "
                    "is not reproduced by the batched rule")
        return None

    @staticmethod
    def init(x, hp):
        threshold = hp["threshold"]
        if hp["lr"] is None:  # 1e-3 * math.exp(-350.0 * threshold), the class's Python float
            lrs = [1e-3 * math.exp(-350.0 * value) for value in threshold.reshape(-1).tolist()]
            default_lr = torch.tensor(lrs, dtype=x.dtype, device=x.device)[:, None]
        else:
            default_lr = None
        return {"mask": x.abs() < threshold, "m": _zeros(x), "v": _zeros(x), "vmax": _zeros(x), "lr": default_lr,
                "itemsize": x.element_size(), "moments": 2 + int(hp["ams_bound"])}

    @staticmethod
    def slots_in(state):
        """The mask (one byte per weight, in slots of the parameters' dtype) and the moments of the selected weights."""
        selected = state["mask"].sum(-1).to(torch.float64) / state["mask"].shape[-1]
        return 1.0 / state["itemsize"] + state["moments"] * selected

    @staticmethod
    def step(x, g, state, hp, t):
        lr = state["lr"] if hp["lr"] is None else hp["lr"]
        beta1, beta2 = hp["beta1"], hp["beta2"]
        refine = t == hp["progressive_iter"] + 1
        if bool(refine.any()):
            state["mask"] = torch.where(refine, state["mask"] & (x.abs() < hp["threshold"]), state["mask"])
        mask, m, v = state["mask"], state["m"], state["v"]
        m.lerp_(g, 1.0 - beta1)
        v.mul_(beta2)
        v.copy_(torch.addcmul(v, (1.0 - beta2) * g, g))
        if hp["ams_bound"]:
            torch.maximum(state["vmax"], v, out=state["vmax"])
            v = state["vmax"]
        denom = (v + 0.0).sqrt() / (1.0 - beta2 ** t).sqrt() + hp["eps"]
        moved = x * (1.0 - hp["weight_decay"] * lr)
        moved = moved + -(lr / (1.0 - beta1 ** t)) * m / denom
        x.copy_(torch.where(mask, moved, x))
