"""Batched rules of six pytorch_optimizer classes that ran side by side only: DualAdam, AvaGrad, SPlus,
ApolloDQN, AdaGC and Gravity.

Same contract as :mod:`optbench.engines.batched_rules` (registered into its ``RULES`` table): ``x`` and ``g`` are
``[K, P]``, float hyperparameters ``[K, 1]`` tensors (integer ones too: ``warmup_steps``), strings and booleans
shared by the group. Each rule follows the code path the loop engine's class object takes on a CPU (the
``foreach`` path where the class enables it there, else the per-parameter loop), operation for operation; the
contract of ``tests/test_engine_contract.py`` checks each against the class to 1e-8 in float64, and
``tests/test_rules_misc.py`` against the update formula of its docstring, written independently in numpy for one
or two steps, and against the class on the branches the registry defaults do not reach.

Where the class calls a fused kernel with a Python scalar, the rule calls the same kernel with the scalar as a
``[K, 1]`` column, which rounds as the class does on a CPU (measured bitwise on float64 data): ``a.add_(b,
alpha=s)`` is ``torch.addcmul(a, s, b)`` (one fused multiply-add), ``a.addcmul_(b, c, value=s)`` is
``torch.addcmul(a, s·b, c)``, ``a.addcdiv_(b, c, value=s)`` is ``a + s·b/c`` and ``a.lerp_(b, s)`` is ``torch.lerp``
with the column. So rounding differences do not accumulate faster than between two runs of the class (Apollo on
Rosenbrock amplifies a 1e-15 change of x₀ to 1e-8 in 200 steps at lr = 2e-3: its own sensitivity).

Per-parameter-tensor statistics (ApolloDQN's curvature estimate, AdaGC's clipping thresholds, AvaGrad's global
step size) are reduced one tensor at a time over the ``LAYERS`` layout, in the class's order; a statistic over
all tensors (AvaGrad's γ, AdaGC's warm-up norm) is declared ``JOINT``. On an analytic problem the layout is one
1-D tensor.

Not here: DASH (``dash``) estimates its matrices' scales by power iteration from ``torch.randn`` on torch's
global generator at its defaults (``matrix_scaling='power'``). Gravity draws its initial velocity from that
generator too; the engines seed it per run and step (:mod:`optbench.engines.step_rng`), so its rule draws the same.
"""

from __future__ import annotations

import torch

from optbench.engines.batched_rules import JOINT, LAYERS, REPORTED, SEEDS, _rule, _zeros, adam_moments
from optbench.engines.step_rng import step_seed


def _per_tensor(values: torch.Tensor, layout, reduce) -> torch.Tensor:
    """``reduce`` (a ``[K, n] -> [K]`` reduction) of each parameter tensor's columns: ``[K, L]``."""
    if layout.single:
        return reduce(values)[:, None]
    return torch.stack([reduce(part) for part in values.split(layout.sizes, dim=-1)], dim=-1)


def _decay(x, g, hp, lr):
    """pytorch_optimizer's ``apply_weight_decay``: decoupled x ← x(1 − λ(1 if fixed_decay else lr)), or coupled
    g ← g + λx (``grad.add_(p, alpha=λ)``); returns the gradient."""
    wd = hp["weight_decay"]
    if hp["weight_decouple"]:
        x.mul_(1.0 - wd * (1.0 if hp["fixed_decay"] else lr))
        return g
    return torch.addcmul(g, wd, x)


# ---- DualAdam -------------------------------------------------------------------------------------------

@_rule("dualadam")
class _DualAdam:
    """DualAdam (pytorch_optimizer.DualAdam; "Combining Adam and its Inverse Counterpart to Enhance
    Generalization of Deep Learning Optimizers", arXiv:2603.07122): decay (coupled by default, decoupled with
    ``weight_decouple``), m ← β₁m + (1 − β₁)g, v ← β₂v + (1 − β₂)g², m̂ = m/(1 − β₁ᵗ), D = √(v/(1 − β₂ᵗ)) + ε.
    With the inverse-Adam weight r_t = max(0, 1 − t·s) (s = ``switch_rate``): while r_t ≥ s,
    x ← x − η m̂ ((1 − r_t)/D + r_t D), the library's ``lerp(1/D, D, r_t)``; afterwards plain Adam, x ← x − η m̂/D.
    The mix decays linearly from (nearly) inverse Adam, m̂·D, to Adam over 1/s steps; the switch happens once
    r_t < s, so the last mixed step has weight ≥ s on the inverse term."""

    slots = staticmethod(lambda hp: 2)  # exp_avg, exp_avg_sq

    init = staticmethod(adam_moments)

    @staticmethod
    def step(x, g, state, hp, t):
        lr, beta1, beta2, switch = hp["lr"], hp["beta1"], hp["beta2"], hp["switch_rate"]
        g = _decay(x, g, hp, lr)
        m, v = state["m"], state["v"]
        m.lerp_(g, 1 - beta1)
        v.mul_(beta2).addcmul_((1 - beta2) * g, g)
        m_hat = m / (1 - beta1 ** t)
        denom = (v / (1 - beta2 ** t)).sqrt() + hp["eps"]
        rate = (1.0 - t * switch).clamp_min(0.0)
        mixed = torch.addcmul(x, -lr * m_hat, denom.reciprocal().lerp(denom, rate))  # addcmul_(m̂, u, value=−η)
        x.copy_(torch.where(rate >= switch, mixed, x + -lr * m_hat / denom))


# ---- AvaGrad --------------------------------------------------------------------------------------------

@_rule("avagrad", needs=[LAYERS, JOINT])
class _AvaGrad:
    """AvaGrad (pytorch_optimizer.AvaGrad; Savarese et al. 2021, "Domain-independent Dominance of Adaptive
    Methods", Algorithm 2): decay (decoupled by default); m ← β₁m + (1 − β₁)g; for t > 1
    x ← x − γ_{t−1}·η/(1 − β₁ᵗ) · m/(√v_{t−1}/√(1 − β₂^(t−1)) + ε), no move at t = 1; then v ← β₂v + (1 − β₂)g²
    and the normaliser γ_t = 1/√(Σ_i r_i⁻²/P) over all P parameters (JOINT) of the rates
    r = √v_{t−1}/√(1 − β₂ᵗ) + ε. The paper's step is η·(e_t/‖e_t/√P‖₂)⊙m with e_t = 1/(√v_{t−1} + ε) normalised
    by its own norm; the library normalises with the norm of the previous step's rates (from v_{t−2}) and adds
    bias corrections to m and v. Σ r⁻² is summed one parameter tensor at a time as ``norm(r, −2)^(−2)``, as
    the class does, and γ is the class's Python float ``1/math.sqrt(…)`` (here a float64 ``[K, 1]`` column)."""

    slots = staticmethod(lambda hp: 2)  # exp_avg, exp_avg_sq

    @staticmethod
    def init(x, hp):
        return {"m": _zeros(x), "v": _zeros(x), "gamma": torch.zeros_like(x[:, :1], dtype=torch.float64)}

    @staticmethod
    def step(x, g, state, hp, t):
        lr, beta1, beta2 = hp["lr"], hp["beta1"], hp["beta2"]
        g = _decay(x, g, hp, lr)
        m, v = state["m"], state["v"]
        m.lerp_(g, 1 - beta1)
        roots = v.sqrt()
        if t > 1:
            step_size = state["gamma"].to(x.dtype) * lr / (1 - beta1 ** t)
            x.add_(-step_size * m / (roots / (1 - beta2 ** (t - 1)).sqrt() + hp["eps"]))
        v.mul_(beta2).addcmul_((1 - beta2) * g, g)
        rates = roots / (1 - beta2 ** t).sqrt() + hp["eps"]
        inverse_squares = _per_tensor(rates, state["layout"],
                                      lambda r: torch.linalg.vector_norm(r, ord=-2, dim=-1).pow(-2))
        squared_norm = inverse_squares.sum(-1, keepdim=True)
        state["gamma"] = 1.0 / (squared_norm / x.shape[-1]).double().sqrt()


# ---- SPlus ----------------------------------------------------------------------------------------------

@_rule("splus", needs=[REPORTED])
class _SPlus:
    """SPlus (pytorch_optimizer.SPlus; Frans, Levine & Abbeel 2025, "A Stable Whitening Optimizer for Efficient
    Neural Network Training"), on vector parameters, where it is sign-momentum descent with an EMA (the
    eigenbasis whitening is for 2-D parameters, which no engine hands this rule: the network engine does not
    provide ``REPORTED``). With η_s = η·c (c = ``nonstandard_constant``): coupled decay g ← g + λx, or none here;
    m ← β₁m + (1 − β₁)g; x ← x − η_s sign(m); e ← ρe + (1 − ρ)x (ρ = ``ema_rate``); decoupled decay
    x ← x(1 − λ(1 if fixed_decay else η_s)) after the EMA. Trains at x, reports the bias-corrected EMA
    e/(1 − ρᵗ) (the class's ``eval()``; before the first step, x₀). The library's decoupled decay follows the EMA
    update, so e averages the iterates before their decay."""

    slots = staticmethod(lambda hp: 2)  # momentum, ema

    @staticmethod
    def init(x, hp):
        return {"m": _zeros(x), "ema": _zeros(x), "t": 0}

    @staticmethod
    def step(x, g, state, hp, t):
        scaled_lr = hp["lr"] * hp["nonstandard_constant"]
        wd = hp["weight_decay"]
        if not hp["weight_decouple"]:
            g = torch.addcmul(g, wd, x)
        m, ema = state["m"], state["ema"]
        m.lerp_(g, 1 - hp["beta1"])
        x.addcmul_(-scaled_lr, m.sign())
        ema.lerp_(x, 1 - hp["ema_rate"])
        if hp["weight_decouple"]:
            x.mul_(1.0 - wd * (1.0 if hp["fixed_decay"] else scaled_lr))
        state["t"] = t

    @staticmethod
    def reported(x, state, hp):
        t = state["t"]
        if t == 0:
            return x
        return state["ema"] * (1.0 / (1.0 - hp["ema_rate"] ** t))


# ---- ApolloDQN ------------------------------------------------------------------------------------------

@_rule("apollodqn", needs=[LAYERS])
class _ApolloDQN:
    """Apollo (pytorch_optimizer.ApolloDQN; Ma 2020, "Apollo: An Adaptive Parameter-wise Diagonal Quasi-Newton
    Method for Nonconvex Stochastic Optimization", Algorithm 1), per parameter tensor. Learning rate with linear
    warm-up from η₀ = ``init_lr`` (None: η/1000) to the constructor's η over ``warmup_steps`` steps (after it, the
    group's lr, which a schedule moves); α = (1 − β)/(1 − βᵗ); ε' = ε/0.01 with the 'constant' rebound. With
    coupled ('l2') decay g ← g + λx; δg = g − m; m ← m + αδg; with d the last step direction,
    D = ‖d‖₄ + ε', d ← d/D; B ← B − (α⟨δg/D, d⟩ + ⟨B, d²⟩)·d² (the diagonal quasi-Newton update of the curvature
    B; both inner products over the tensor); rectified D = max(|B|, σ) with σ = 0.01 ('constant') or
    σ = ‖δg‖_∞ and D ← D + ε'/α ('belief'); d ← m/D; decoupled decay d ← d + λx ('decoupled') or
    d ← d + λ/mean(D)·x ('stable'); x ← x − η_t d."""

    slots = staticmethod(lambda hp: 3)  # exp_avg_grad, approx_hessian, update

    @staticmethod
    def init(x, hp):
        base_lr = hp["lr"].clone()  # the class keeps the constructor's lr for its warm-up (self.lr)
        init_lr = base_lr / 1000.0 if hp["init_lr"] is None else hp["init_lr"]
        return {"m": _zeros(x), "b": _zeros(x), "d": _zeros(x), "base_lr": base_lr, "init_lr": init_lr}

    @staticmethod
    def step(x, g, state, hp, t):
        layout = state["layout"]
        warmup, init_lr, wd = hp["warmup_steps"], state["init_lr"], hp["weight_decay"]
        current_lr = torch.where(t >= warmup, hp["lr"], (state["base_lr"] - init_lr) * t / warmup + init_lr)
        belief = hp["rebound"] == "belief"
        eps = hp["eps"] if belief else hp["eps"] / 1e-2
        alpha = (1.0 - hp["beta"]) / (1 - hp["beta"] ** t)
        decay_type = hp["weight_decay_type"]
        if decay_type == "l2":
            g = torch.addcmul(g, wd, x)
        m, b, d = state["m"], state["b"], state["d"]
        delta_grad = g - m
        m.addcmul_(alpha, delta_grad)
        denom = layout.spread(_per_tensor(d, layout, lambda v: torch.linalg.vector_norm(v, ord=4, dim=-1)) + eps)
        d.div_(denom)
        v_sq = d * d
        along = _per_tensor(delta_grad / denom * d, layout, lambda v: v.sum(-1)) * -alpha
        delta = along - _per_tensor(b * v_sq, layout, lambda v: v.sum(-1))
        b.addcmul_(v_sq, layout.spread(delta))
        if belief:
            rebound = _per_tensor(delta_grad, layout, lambda v: torch.linalg.vector_norm(v, ord=float("inf"), dim=-1))
            rectified = torch.maximum(b.abs(), layout.spread(rebound)) + eps / alpha
        else:
            rectified = b.abs().clamp(min=1e-2)
        d.copy_(m / rectified)
        if decay_type == "stable":
            d.addcmul_(layout.spread(wd / _per_tensor(rectified, layout, lambda v: v.mean(-1))), x)
        elif decay_type == "decoupled":
            d.addcmul_(wd, x)
        x.addcmul_(-current_lr, d)


# ---- AdaGC ----------------------------------------------------------------------------------------------

def _warmup_norm(raw: torch.Tensor, decayed: torch.Tensor, coupled: bool) -> torch.Tensor:
    """AdaGC's global gradient norm per parameter tensor l, ``[K, L]``: √(Σ_j ‖g_j‖²) + … in float32 as
    ``get_global_gradient_norm`` (each tensor's norm cast to float32, squared and summed in float32). With coupled
    decay the class recomputes it at every tensor after adding λx to that tensor's gradient in place, so tensor l
    sees the decayed gradients of tensors j ≤ l and the raw ones of j > l; else it is computed once, from the raw
    gradients (decoupled decay does not touch them)."""
    raw32, decayed32 = raw.float().square(), decayed.float().square()
    L = raw.shape[-1]
    if not coupled or L == 1:
        return (decayed32 if coupled else raw32).sum(-1, keepdim=True).sqrt().expand(-1, L)
    seen = torch.arange(L, device=raw.device)[None, :] <= torch.arange(L, device=raw.device)[:, None]  # [l, j]
    mixed = torch.where(seen[None], decayed32[:, None, :], raw32[:, None, :])  # [K, l, j]
    return mixed.sum(-1).sqrt()


@_rule("adagc", needs=[LAYERS, JOINT])
class _AdaGC:
    """AdaGC (pytorch_optimizer.AdaGC; "AdaGC: Improving Training Stability for Large Language Model
    Pretraining", 2025): Adam on adaptively clipped gradients, with a clipping threshold γ per
    parameter tensor. Decay first (decoupled x ← x(1 − λ(1 if fixed_decay else η)) by default, or g ← g + λx).
    Warm-up (the first step, and while t < ``warmup_steps``): global clipping ĝ = g·min(1, λ_abs/(‖G‖ + ε)) with
    ‖G‖ the norm of all gradients (float32, :func:`_warmup_norm`), and γ ← ‖ĝ‖ (first step) or min(γ, ‖ĝ‖).
    Afterwards, per tensor: ĝ = g·min(1, λ_rel·max(γ, ε)/max(‖g‖, ε)) and γ ← βγ + (1 − β)‖ĝ‖. Then
    m ← β₁m + (1 − β₁)ĝ, v ← β₂v + (1 − β₂)ĝ², x ← x − η/(1 − β₁ᵗ) · m/(√v/√(1 − β₂ᵗ) + ε) (arXiv:2502.11034)."""

    slots = staticmethod(lambda hp: 2)  # exp_avg, exp_avg_sq (gamma is one value per tensor)

    @staticmethod
    def init(x, hp):
        return {"m": _zeros(x), "v": _zeros(x), "gamma": None}

    @staticmethod
    def step(x, g, state, hp, t):
        layout = state["layout"]
        lr, eps, beta1, beta2 = hp["lr"], hp["eps"], hp["beta1"], hp["beta2"]
        coupled = not hp["weight_decouple"]
        raw_norms = None if not coupled else _per_tensor(g, layout, lambda v: torch.linalg.vector_norm(v, dim=-1))
        g = _decay(x, g, hp, lr)
        norms = _per_tensor(g, layout, lambda v: torch.linalg.vector_norm(v, dim=-1))  # [K, L]
        # warm-up: global clipping, the scale in float32 (λ_abs / t is reciprocal() · λ_abs in torch)
        global_norm = _warmup_norm(norms if raw_norms is None else raw_norms, norms, coupled)
        scale = (global_norm + eps.float()).reciprocal() * hp["lambda_abs"].float()
        warm_hat = g * layout.spread(scale.clamp(max=1.0).to(g.dtype))
        warm_norms = _per_tensor(warm_hat, layout, lambda v: torch.linalg.vector_norm(v, dim=-1))
        if state["gamma"] is None:  # the first step is always a warm-up step
            state["gamma"] = warm_norms
            g_hat = warm_hat
        else:
            gamma = state["gamma"]
            ratio = (gamma.clamp_min(eps) * hp["lambda_rel"] / norms.clamp_min(eps)).clamp_max(1.0)
            clipped = g * layout.spread(ratio)
            clipped_norms = _per_tensor(clipped, layout, lambda v: torch.linalg.vector_norm(v, dim=-1))
            warm = t < hp["warmup_steps"]  # [K, 1]
            state["gamma"] = torch.where(warm, torch.minimum(gamma, warm_norms),
                                         gamma.lerp(clipped_norms, (1 - hp["beta"]).expand_as(gamma)))
            g_hat = torch.where(warm, warm_hat, clipped)
        m, v = state["m"], state["v"]
        m.lerp_(g_hat, 1 - beta1)
        v.mul_(beta2).addcmul_((1 - beta2) * g_hat, g_hat)
        x.add_(-lr / (1 - beta1 ** t) * m / (v.sqrt() / (1 - beta2 ** t).sqrt() + eps))


# ---- Gravity --------------------------------------------------------------------------------------------

@_rule("gravity", needs=[LAYERS, SEEDS])
class _Gravity:
    """Gravity (pytorch_optimizer.Gravity; Bahrami & Zadeh 2021, "Gravity Optimizer: a Kinematic Approach on
    Optimization in Deep Learning"), its foreach path (the one a CPU takes): per parameter tensor
    m = 1/‖g‖_∞, ζ = g / (1 + (g/m)²), β_t = (βt + 1)/(t + 2), v ← v + (1 − β_t)(ζ − v), x ← x − ηv, with the
    velocity started at v₀ ~ N(0, (α/η)²) on the first step.

    The class draws v₀ from torch's *global* generator inside its first ``step()``; the engines seed that
    generator with ``step_seed(seed, 0)`` before it (:mod:`optbench.engines.step_rng`), so the rule draws the
    same values with ``normal_`` from a generator seeded alike, one per configuration (``SEEDS``), tensor by
    tensor in the layout's order."""

    slots = staticmethod(lambda hp: 1)  # v

    @staticmethod
    def init(x, hp):
        return {"v": None}

    @staticmethod
    def step(x, g, state, hp, t):
        layout, lr = state["layout"], hp["lr"]
        if hp.get("maximize", False):
            g = -g
        if state["v"] is None:
            std = (hp["alpha"] / lr).reshape(-1).tolist()
            rows = []
            for seed, sd in zip(state["seeds"], std):
                generator = torch.Generator().manual_seed(step_seed(seed, t - 1))
                rows.append(torch.cat([torch.empty(shape, dtype=x.dtype).normal_(0.0, sd, generator=generator)
                                       .reshape(-1) for shape in layout.shapes]))
            state["v"] = torch.stack(rows).to(x.device)
        inverse_max = layout.spread(_per_tensor(g.abs(), layout, lambda part: part.amax(dim=-1)).reciprocal())
        zeta = g / ((g / inverse_max) ** 2 + 1.0)
        beta_t = (hp["beta"] * t + 1) / (t + 2)
        v = state["v"]
        v.copy_(torch.lerp(v, zeta, 1.0 - beta_t))
        x.copy_(torch.addcmul(x, -lr, v))
