"""Batched rules of seven pytorch_optimizer classes whose learning rate enters their formulas other than as a plain
factor of the step: SOAP, SWATS, Fromage, Amos, AdamG, FTRL and SRMM.

Same contract as :mod:`optbench.engines.batched_rules` (registered into its ``RULES`` table): ``x`` and ``g`` are
``[K, P]``, float hyperparameters ``[K, 1]`` tensors (integer ones too: SRMM's ``memory_length``), strings,
booleans and None shared by the group. Each configuration's own lr column is used inside the formulas (Amos's
√η and η², Fromage's √(1 + η²), FTRL's 1/η, SWATS's switched lr). Each rule follows the code path the loop
engine's class object takes on a CPU, operation for operation: the ``foreach`` path of Fromage, Amos, AdamG, FTRL
and SRMM (their ``foreach=None`` default enables it on a CPU), the per-parameter loop of SWATS (its ``foreach``
defaults to CUDA only) and of SOAP (it has no other). Where the class calls a fused kernel with a Python scalar,
the rule calls it with the scalar as a ``[K, 1]`` column (``a.add_(b, alpha=s)`` as ``torch.addcmul(a, s, b)``,
``a.addcmul_(b, c, value=s)`` as ``torch.addcmul(a, s·b, c)``, as :mod:`optbench.engines.rules_misc` measured;
``a.addcdiv_(b, c, value=s)`` as ``a + (s·b)/c``, measured bitwise here); an exponent the whole group shares is
passed as the class passes it, a Python float (``pow(0.5)`` is ``sqrt`` then, which a tensor exponent is not).

Per-parameter-tensor statistics (Fromage's norms, Amos's mean square gradient and target scale, SWATS's projected
step size) are taken one tensor at a time over the ``LAYERS`` layout, in the class's order; SWATS switches the
whole group to SGD at once (``JOINT``). On an analytic problem the layout is one 1-D tensor.

SOAP runs on analytic problems only: on a vector it does not precondition (unless ``precondition_1d=True``), and
that path is mirrored exactly, but its matrix path is not reproducible to 1e-8. It rotates by the eigenvectors of
GGᵀ and GᵀG, which after the first steps are rank-deficient, so their null-space eigenvectors are whatever LAPACK
returns for the last bits of the gradient (measured: a 1e-15 relative change of the gradient of a 6 × 20 matrix
changes SOAP's loss by 1e-4 relative within three steps), and the vmap network engine's gradients differ from the
loop engine's in those bits. The rule therefore declares ``VECTORS`` (only the analytic batched engine provides
it), so that networks (and any configuration it refuses) run on the loop engine.
"""

from __future__ import annotations

import math

import torch

from optbench.engines.batched_rules import JOINT, LAYERS, VECTORS, _rule, _zeros, adam_moments

# ---- SOAP -----------------------------------------------------------------------------------------------

@_rule("soap", needs=[VECTORS])
class _SOAP:
    """SOAP (pytorch_optimizer.SOAP; Vyas et al. 2024, "SOAP: Improving and Stabilizing Shampoo using Adam",
    arXiv:2409.11321, Algorithm 3) on a vector parameter, where with ``precondition_1d=False`` (the default) the
    eigenbasis Q is the identity and the update is Adam's. The paper, for a parameter W with gradient G: L ← β_sL +
    (1 − β_s)GGᵀ, R ← β_sR + (1 − β_s)GᵀG, Q_L, Q_R their eigenbases; G' = Q_LᵀGQ_R; M ← β₁M + (1 − β₁)G;
    V ← β₂V + (1 − β₂)G'²; N = Q_L((Q_LᵀMQ_R)/(√V + ε))Q_Rᵀ; W ← W − ηN; with Q = I, at step t ≥ 2 with k = t − 1:
    m ← β₁m + (1 − β₁)g, v ← β₂v + (1 − β₂)g², u = m/(√v + ε) (``normalize_gradient``: u ← u/(√mean(u²) + ε)),
    x ← x − η√(1 − β₂ᵏ)/(1 − β₁ᵏ) · u (without the correction with ``correct_bias=False``), then the decoupled decay
    x ← x(1 − ηλ). The first step only initialises the preconditioner statistics (a vector has none): x, m and v
    do not move, so the moments count k = t − 1 gradients. Deviations from the paper: none on this path beyond the
    first step being a statistics-only step (as the authors' code) and ε added outside the bias correction of v.
    Refused: ``precondition_1d=True`` (the rotation by eigenvectors of the rank-deficient ggᵀ depends on the last
    bits of the gradient, see the module docstring) and ``merge_dims=True`` (the class raises on a vector of at
    most ``max_precondition_dim`` coordinates: it reshapes it to ``[1]``), both run on the loop engine;
    shampoo_beta, precondition_frequency, max_precondition_dim and data_format do not act on a vector."""

    slots = staticmethod(lambda hp: 2)  # exp_avg, exp_avg_sq (GG and Q are empty lists on a vector)

    @staticmethod
    def refuses(hp):
        if hp.get("precondition_1d"):
            return ("its batched rule mirrors SOAP on vectors without preconditioning; precondition_1d=True rotates "
                    "by eigenvectors of a rank-deficient ggᵀ, which depend on the last bits of the gradient")
        if hp.get("merge_dims"):
            return ("the class fails on a vector with merge_dims=True (it reshapes the vector to merge_small_dims' "
                    "[1]), and its batched rule mirrors vectors only")
        return None

    init = staticmethod(adam_moments)

    @staticmethod
    def step(x, g, state, hp, t):
        if t == 1:  # the class only initialises its (here empty) preconditioner statistics
            return
        lr, beta1, beta2, eps = hp["lr"], hp["beta1"], hp["beta2"], hp["eps"]
        k = t - 1
        step_size = lr * ((1.0 - beta2 ** k).sqrt() / (1.0 - beta1 ** k)) if hp["correct_bias"] else lr
        m, v = state["m"], state["v"]
        m.lerp_(g, 1.0 - beta1)
        v.lerp_(g.square(), 1.0 - beta2)
        update = m / (v.sqrt() + eps)
        if hp["normalize_gradient"]:
            update = update / (update.square().mean(-1, keepdim=True).sqrt() + eps)
        x.copy_(torch.addcmul(x, -step_size, update))
        x.mul_(torch.where(hp["weight_decay"] == 0.0, 1.0, 1.0 - hp["weight_decay"] * lr))


# ---- SWATS ----------------------------------------------------------------------------------------------

def _per_tensor(values: torch.Tensor, layout, reduce) -> torch.Tensor:
    """``reduce`` (a ``[K, n] -> [K]`` reduction) of each parameter tensor's columns: ``[K, L]``."""
    if layout.single:
        return reduce(values)[:, None]
    return torch.stack([reduce(part) for part in values.split(layout.sizes, dim=-1)], dim=-1)


def _row_sum(values: torch.Tensor) -> torch.Tensor:
    return values.sum(-1)


AMS_BOUND_EPS = 1e-15  # BaseOptimizer.apply_ams_bound's exp_avg_sq_eps
ALLCLOSE_ATOL = 1e-8  # torch.allclose's default atol in SWATS's switching test


@_rule("swats", needs=[LAYERS, JOINT])
class _SWATS:
    """SWATS (pytorch_optimizer.SWATS; Keskar & Socher 2017, "Improving Generalization Performance by Switching
    from Adam to SGD", arXiv:1712.07628, Algorithm 1). Decay first (coupled g ← g + λx by default, decoupled
    x ← x(1 − λη), η unscaled with ``fixed_decay``). In the Adam phase: m ← β₁m + (1 − β₁)g,
    v ← β₂v + (1 − β₂)g² (AMSBound: the running maximum of v), p = −η√(1 − β₂ᵗ)/(1 − β₁ᵗ) · m/(√(v + 1e-15) + ε),
    x ← x + p; per parameter tensor, when pᵀg ≠ 0, γ = pᵀp/(−pᵀg) (the lr whose SGD step projects onto p),
    λ ← β₂λ + (1 − β₂)γ and λ̂ = λ/(1 − β₂ᵗ); when t > 1, λ̂ > 0 and |λ̂ − γ| ≤ 1e-8 + ε|γ| the whole group (every
    tensor of the configuration: ``JOINT``) switches to SGD for the following steps with η ← λ̂ of the last such
    tensor. In the SGD phase: b ← β₁b + g, u = (1 − β₁)b (Nesterov: u + β₁b), x ← x − ηu with the switched η (the
    decay uses it too). Deviations from the paper: the switching test is ``allclose`` with the library's ε as the
    relative tolerance and torch's default absolute tolerance 1e-8 (the paper: |λ̂ − γ| < ε), which makes small
    learning rates switch early (γ is of the order of η); γ and λ are per parameter tensor and the first tensor
    that passes switches the whole model (the paper's Algorithm 1 takes p and g of all parameters at once); ε is
    added after the square root of v + 1e-15; the Nesterov term and decay are library additions. Under an lr
    schedule the loop engine sets the group's lr before every step, overwriting the switched one, and the rule does
    the same (it takes a new ``hp["lr"]`` tensor, which only a schedule brings, as the group's lr)."""

    dim_slots = staticmethod(lambda hp, dim: 2 + int(hp["ams_bound"]) + 1 / dim)  # exp_avg, exp_avg_sq, exp_avg2

    @staticmethod
    def init(x, hp):
        column = torch.zeros_like(x[:, :1])
        return {"m": _zeros(x), "v": _zeros(x), "vmax": _zeros(x), "buf": _zeros(x), "exp_avg2": None,
                "sgd": column.bool(), "group_lr": hp["lr"], "lr_seen": hp["lr"],
                "base_slots": column + 2.0 + float(hp["ams_bound"])}

    @staticmethod
    def slots_in(state):
        # + exp_avg2 (one element per tensor), + the momentum buffer once switched to SGD
        sizes, base = state["layout"].sizes, state["base_slots"]
        return (base + len(sizes) / sum(sizes) + state["sgd"].to(base.dtype))[:, 0]

    @staticmethod
    def step(x, g, state, hp, t):
        layout = state["layout"]
        if hp["lr"] is not state["lr_seen"]:  # an lr schedule: the engine set the group's lr
            state["group_lr"] = state["lr_seen"] = hp["lr"]
        lr, beta1, beta2, wd = state["group_lr"], hp["beta1"], hp["beta2"], hp["weight_decay"]
        if state["exp_avg2"] is None:
            state["exp_avg2"] = torch.zeros(x.shape[0], len(layout.sizes), dtype=x.dtype, device=x.device)
        bias_correction1, bias_correction2 = 1.0 - beta1 ** t, 1.0 - beta2 ** t
        step_size = lr * bias_correction2.sqrt() / bias_correction1
        if hp["weight_decouple"]:
            x.mul_(torch.where(wd == 0.0, 1.0, 1.0 - wd * (1.0 if hp["fixed_decay"] else lr)))
        elif bool((wd != 0.0).any()):
            g = torch.addcmul(g, wd, x)
        sgd = state["sgd"]
        if bool(sgd.any()):
            buf = state["buf"]
            buf.copy_(torch.where(sgd, buf * beta1 + g, buf))
            update = buf * (1.0 - beta1)
            if hp["nesterov"]:
                update = torch.addcmul(update, beta1, buf)
            x_sgd = torch.addcmul(x, -lr, update)
        m, v = state["m"], state["v"]
        m.lerp_(g, 1.0 - beta1)
        v.copy_(torch.addcmul(v * beta2, (1.0 - beta2) * g, g))
        if hp["ams_bound"]:
            torch.maximum(state["vmax"], v, out=state["vmax"])
            second = state["vmax"]
        else:
            second = v
        perturb = m / ((second + AMS_BOUND_EPS).sqrt() + hp["eps"]) * -step_size
        x_adam = x + perturb
        pg = _per_tensor(perturb * g, layout, _row_sum)  # [K, L]
        squared = _per_tensor(perturb * perturb, layout, _row_sum)
        valid = pg != 0
        scaling = squared / torch.where(valid, -pg, 1.0)
        exp_avg2 = state["exp_avg2"]
        exp_avg2.copy_(torch.where(valid, exp_avg2.lerp(scaling, (1.0 - beta2).expand_as(exp_avg2)), exp_avg2))
        corrected = exp_avg2 / bias_correction2
        if t > 1:
            close = (corrected - scaling).abs() <= ALLCLOSE_ATOL + hp["eps"] * scaling.abs()
            eligible = valid & (corrected > 0.0) & close & ~sgd
            if bool(eligible.any()):
                positions = torch.arange(eligible.shape[-1], device=x.device).expand_as(eligible)
                last = torch.where(eligible, positions, -1).amax(-1, keepdim=True)
                switched = last >= 0
                rate = corrected.gather(-1, last.clamp_min(0))
                state["group_lr"] = torch.where(switched, rate, lr)
                state["sgd"] = sgd | switched
        x.copy_(torch.where(sgd, x_sgd, x_adam) if bool(sgd.any()) else x_adam)


def _exponent(column: torch.Tensor) -> torch.Tensor | float:
    """A ``[K, 1]`` exponent as the Python float the class passes when every configuration shares it: torch's
    ``pow`` with a scalar 0.5 is ``sqrt``, which rounds differently from ``pow`` with a tensor exponent."""
    first = float(column.reshape(-1)[0])
    return first if bool((column == first).all()) else column


# ---- Fromage --------------------------------------------------------------------------------------------

@_rule("fromage", needs=[LAYERS])
class _Fromage:
    """Fromage (pytorch_optimizer.Fromage; Bernstein, Vahdat, Yue & Liu 2020, "On the distance between two neural
    networks and the stability of learning", arXiv:2002.03432, Algorithm 1), parameter tensor by parameter tensor:
    x ← (x − η·(‖x‖/‖g‖)·g)/√(1 + η²), with the ratio 1 when ‖x‖ or ‖g‖ is 0 (norms of that tensor). With
    ``p_bound`` = b (the authors' code; None by default) the tensor's norm is then capped at b times its norm before
    the first step: x ← x·B/‖x‖ when ‖x‖ > B. Deviations from the paper: none (the bound is an option of the
    authors' code)."""

    @staticmethod
    def init(x, hp):
        return {"max": None}

    @staticmethod
    def step(x, g, state, hp, t):
        layout, lr, bound = state["layout"], hp["lr"], hp["p_bound"]
        if bound is not None and state["max"] is None:  # the class takes it from the first step's parameters
            state["max"] = layout.norms(x) * bound
        p_norms, g_norms = layout.norms(x), layout.norms(g)
        rescale = (p_norms > 0.0) & (g_norms > 0.0)
        ratios = torch.where(rescale, p_norms, 1.0) / torch.where(rescale, g_norms, 1.0)
        x.copy_(torch.addcmul(x, -lr, g * layout.spread(ratios)))
        x.div_((1 + lr ** 2).sqrt())
        if bound is not None:
            norms, maxima = layout.norms(x), state["max"]
            bounded = norms > maxima
            x.mul_(layout.spread(torch.where(bounded, maxima, 1.0)))
            x.div_(layout.spread(torch.where(bounded, norms, 1.0)))


# ---- Amos -----------------------------------------------------------------------------------------------

def _amos_scale(shape) -> float:
    """``Amos.get_scale``: the target scale of a tensor from its shape."""
    if len(shape) <= 1:
        return 0.5
    if len(shape) == 2:
        return math.sqrt(2 / shape[1])
    return math.sqrt(1 / shape[1])


@_rule("amos", needs=[LAYERS])
class _Amos:
    """Amos (pytorch_optimizer.Amos; Tian & Parikh 2022, "Amos: An Adam-style Optimizer with Adaptive Weight Decay
    towards Model-Oriented Scale", arXiv:2210.11693, Algorithm 1), parameter tensor by parameter tensor, with η the
    lr, ξ = η·s the tensor's initial lr (s = 0.5 for a vector, √(2/n₁) for a matrix of n₁ columns, √(1/n₁) above:
    the target scale), β, c = ``c_coef``, d = ``d_coef``: ḡ² = mean of g² over the tensor, v ← βv + (1 − β)ḡ²,
    r = (1 − βᵗ)/(v + ε) (the bias-corrected 1/v̂), γ = η²·ḡ²·r/√(1 + c√η·b) (b the decay accumulator, from 0),
    u = (x(γ − λ₂)/2 + ξ√r·g)/(1 + d√ξ·b) (λ₂ = ``extra_l2``), b ← b(1 + γ) + γ; with momentum μ > 0,
    m ← μm + (1 − μ)u and u = m; x ← x − u. Deviations from the paper and the authors' code (jestimator's amos.py,
    whose update is u = (ξ√r·g + (γ/2 + λ₂)x)/(1 + d√ξ·b) with r = (1 − βᵗ)/max(v, ε)): ``extra_l2`` enters with
    the opposite sign and half the weight, x(γ − λ₂)/2, so a positive λ₂ pulls the weights away from 0; ε is added
    to v (r = (1 − βᵗ)/(v + ε)) instead of bounding it; the target scale η of each variable, which the authors'
    code asks the user for, is the shape rule above; c and d generalise the paper's ¼. The momentum (an EMA of
    the updates, off by default) is the authors' code's."""

    slots = staticmethod(lambda hp: int(hp["momentum"] > 0))  # exp_avg (exp_avg_sq and decay are 0-d per tensor)

    @staticmethod
    def init(x, hp):
        # exp_avg_sq and decay, one scalar per tensor: made on the first step, when the layout is there
        return {"m": _zeros(x), "v": None, "decay": None}

    @staticmethod
    def step(x, g, state, hp, t):
        layout = state["layout"]
        lr, beta, eps, momentum = hp["lr"], hp["beta"], hp["eps"], hp["momentum"]
        if state["v"] is None:
            state["v"] = torch.zeros(x.shape[0], len(layout.sizes), dtype=x.dtype, device=x.device)
            state["decay"] = torch.zeros_like(state["v"])
            state["scale"] = torch.tensor([_amos_scale(s) for s in layout.shapes], dtype=x.dtype, device=x.device)
        v, decay = state["v"], state["decay"]
        g2 = _per_tensor(g.pow(2), layout, lambda part: part.mean(-1))  # [K, L]
        init_lr = lr * state["scale"]  # [K, L]
        v.copy_(torch.addcmul(v * beta, 1.0 - beta, g2))
        r_v_hat = (v + eps).reciprocal() * (1.0 - beta ** t)
        df_c = (decay * (hp["c_coef"] * lr.sqrt()) + 1.0).rsqrt()
        df_d = decay * (hp["d_coef"] * init_lr.sqrt()) + 1.0
        gamma = df_c * r_v_hat * lr ** 2 * g2
        update = x / 2.0 * layout.spread(gamma - hp["extra_l2"])
        update = (update + g * layout.spread(r_v_hat.sqrt() * init_lr)) / layout.spread(df_d)
        decay.copy_(decay * (1.0 + gamma) + gamma)
        if bool((momentum > 0.0).any()):
            m = state["m"]
            m.lerp_(update, 1.0 - momentum)
            update = torch.where(momentum > 0.0, m, update)
        x.sub_(update)


# ---- AdamG ----------------------------------------------------------------------------------------------

@_rule("adamg")
class _AdamG:
    """AdamG (pytorch_optimizer.AdamG; Pang, Yu, Hoang & Zhou 2024, "Towards Stability of Parameter-free
    Optimization", arXiv:2405.04376, AdamG: Adam with the golden step size s(x) = p·x^q), lr-free (the catalogue
    searches lr as a multiplier). Decay first (coupled g ← g + λx by default, decoupled x ← x(1 − λη), η unscaled
    with ``fixed_decay``); v ← β₂v + (1 − β₂)g², r ← β₃r + (1 − β₃)·p·v^q, m ← β₁m + (1 − β₁)·r·g,
    x ← x − min(η, 1/√t)/(1 − β₁ᵗ) · m/(√(v/(1 − β₂ᵗ)) + ε): at the default η = 1 the step size is 1/√t, and a
    smaller lr caps it rather than scaling it. Deviations from the paper: not compared with the paper's algorithm,
    which was not available offline (the formula above is the library's, checked against the class); decay is a
    library addition, off by default."""

    slots = staticmethod(lambda hp: 3)  # m, v, r

    @staticmethod
    def init(x, hp):
        return {"m": _zeros(x), "v": _zeros(x), "r": _zeros(x), "q": _exponent(hp["q"])}

    @staticmethod
    def step(x, g, state, hp, t):
        lr, beta1, beta2, beta3, wd = hp["lr"], hp["beta1"], hp["beta2"], hp["beta3"], hp["weight_decay"]
        step_size = lr.clamp_max(1.0 / math.sqrt(t))
        if bool((wd != 0.0).any()):
            if hp["weight_decouple"]:
                x.mul_(1.0 - wd * (1.0 if hp["fixed_decay"] else lr))
            else:
                g = torch.addcmul(g, wd, x)
        m, v, r = state["m"], state["v"], state["r"]
        v.copy_(torch.addcmul(v * beta2, (1.0 - beta2) * g, g))
        r.lerp_(v.pow(state["q"]) * hp["p"], 1.0 - beta3)
        m.copy_(torch.addcmul(m * beta1, (1.0 - beta1) * r, g))
        de_nom = (v / (1.0 - beta2 ** t)).sqrt() + hp["eps"]
        x.add_((-step_size / (1.0 - beta1 ** t)) * m / de_nom)


# ---- FTRL -----------------------------------------------------------------------------------------------

@_rule("ftrl")
class _FTRL:
    """FTRL-Proximal (pytorch_optimizer.FTRL; McMahan et al. 2013, "Ad Click Prediction: a View from the
    Trenches", Algorithm 1), per coordinate with α = η, β, λ₁, λ₂ and the power c = −``lr_power`` (½ by default):
    σ = ((n + g²)^c − n^c)/α; z ← z + g − σx; n ← n + g²; x = 0 where |z| ≤ λ₁, else
    x = (sign(z)λ₁ − z)/((β + √n)/α + λ₂). The point is a function of z and n only (the starting point enters
    through the first σx). Deviations from the paper: ``lr_power`` generalises the paper's √ in σ (c = ½ is the
    paper's), while the denominator keeps √n for every power."""

    slots = staticmethod(lambda hp: 2)  # z, n

    @staticmethod
    def init(x, hp):
        return {"z": _zeros(x), "n": _zeros(x), "power": _exponent(-hp["lr_power"])}

    @staticmethod
    def step(x, g, state, hp, t):
        lr, power, lambda_1 = hp["lr"], state["power"], hp["lambda_1"]
        z, n = state["z"], state["n"]
        de_nom = n.pow(power)
        new_n = n + g.pow(2)
        sigma = (new_n.pow(power) - de_nom) / lr
        new_z = z + g - sigma * x
        de_nom = (new_n.sqrt() + hp["beta"]) / lr + hp["lambda_2"]
        update = (new_z.sign() * lambda_1 - new_z) / de_nom
        x.copy_(update.masked_fill(new_z.abs() <= lambda_1, 0.0))
        z.copy_(new_z)
        n.copy_(new_n)


# ---- SRMM -----------------------------------------------------------------------------------------------

@_rule("srmm")
class _SRMM:
    """SRMM (pytorch_optimizer.SRMM; Lyu & Li 2022, "Stochastic regularized majorization-minimization with weakly
    convex and multi-convex surrogates", arXiv:2201.01652, Algorithm 1 with the prox-linear surrogate): with the
    weight w_t = (t mod M + 1)^(−β) (M = ``memory_length``; None: w_t = 1), ḡ ← (1 − w_t)ḡ + w_t g,
    x̄ ← (1 − w_t)x̄ + w_t x, x ← x̄ − ηḡ (and x̄ ← x), with ḡ and x̄ starting at 0. Deviations from the paper: the
    paper's weights are w_t = t^(−β), so w₁ = 1 starts the averages at the first gradient and point; the library's
    count is offset by one, w₁ = 2^(−β) < 1, so its zero-initialised averages pull the first steps toward the origin
    (x̄₁ = 2^(−β)x₀) and scale down ḡ; it restarts the weights every M steps (w_t = 1 at t ≡ 0 mod M: the averages
    forget); with M = None every weight is 1 and SRMM is gradient descent."""

    slots = staticmethod(lambda hp: 2)  # mov_avg_grad, mov_avg_param

    @staticmethod
    def init(x, hp):
        return {"grad": _zeros(x), "param": _zeros(x)}

    @staticmethod
    def step(x, g, state, hp, t):
        memory = hp["memory_length"]
        base = (t % memory) + 1.0 if memory is not None else torch.ones_like(hp["beta"])
        weight = base ** -hp["beta"]
        mov_grad, mov_param = state["grad"], state["param"]
        mov_grad.lerp_(g, weight)
        mov_param.lerp_(x, weight)
        mov_param.copy_(torch.addcmul(mov_param, -hp["lr"], mov_grad))
        x.copy_(mov_param)
