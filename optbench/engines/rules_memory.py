"""Batched rules of memory-lean and projected methods: pytorch_optimizer's SM3, GaLore, Fira, SPAM, Nero, EmoNavi,
EmoFact and EmoLynx, and optbench's paper-faithful SM3 (``sm3-paper``).

Same contract as :mod:`optbench.engines.batched_rules` (registered into its ``RULES`` table): ``x`` and ``g`` are
``[K, P]``, float hyperparameters ``[K, 1]`` tensors (integer ones too: SPAM's ``warmup_epoch``, ``threshold``,
``grad_accu_steps``, ``update_proj_gap``), booleans shared by the group. Each rule follows the code path the loop
engine's class object takes on a CPU (the ``foreach`` path where the class enables it there: GaLore, Fira, Nero and
the EmoNavi family; the per-parameter loop for SM3 and SPAM), operation for operation. Where the class calls a
kernel with a Python scalar the rule calls the same kernel with a ``[K, 1]`` column, as in
:mod:`optbench.engines.rules_misc`: ``a.add_(b, alpha=s)`` is ``torch.addcmul(a, s, b)``, ``a.addcmul_(b, c,
value=s)`` is ``torch.addcmul(a, s·b, c)``, ``a.addcdiv_(b, c, value=s)`` is ``a + s·b/c``. Bias corrections
the class computes on Python floats (``math.pow``, ``math.sqrt``) are computed so here too (:func:`_debias`):
torch's float64 ``pow`` and ``sqrt`` differ from them in the last bit for some β and t. Against the class, driven
by the same gradients, every rule here is bitwise equal in float64 (tests/test_rules_memory.py checks 1e-12).

- SM3 and SM3Paper keep one accumulator per dimension of each parameter tensor, Nero one second moment per output
  neuron (row) with its constraint per matrix, EmoFact factored row/column moments for tensors with ndim ≥ 2 and
  SPAM its masked path for 2-D tensors: ``LAYERS``, one parameter tensor at a time (the network engine hands a
  rule one tensor per call; an analytic problem is one 1-D tensor).
- GaLore and Fira project a matrix's gradient only in a parameter group that has a ``rank`` key; optbench builds
  every class with parameter groups of its constructor's hyperparameters, none with a ``rank``, so both are
  AdamW-like on every tensor (vectors and matrices alike) and their rules need nothing: the SVD projection is
  never reached (a spec cannot set ``rank``: it is not a constructor argument).
- The EmoNavi family scales its step by a trend of the loss that ``step(closure)`` returns; optbench's engines call
  ``step()`` without a closure for these classes (no ``needs_closure``), so the class sees loss 0 every step and its
  scale is exactly 1 (emo_drive = 1, shadow ratio 0, |trust| = 1). The rules reproduce that; an entry that gave the
  classes a closure would need rules that read the loss.
"""

from __future__ import annotations

import math

import torch

from optbench.engines.batched_rules import LAYERS, _rule, _zeros


def _tensors(x, layout):
    """Column slices ``[K, size]`` of ``x`` per parameter tensor of the layout (views), with each tensor's shape."""
    return list(zip(x.split(layout.sizes, dim=-1), layout.shapes))


def _column(value: torch.Tensor, ndim: int) -> torch.Tensor:
    """A ``[K, 1]`` hyperparameter shaped to broadcast against ``[K, *shape]`` with ``len(shape) == ndim``."""
    return value.reshape(value.shape[0], *([1] * ndim))


def _python_floats(value: torch.Tensor) -> list[float]:
    """A ``[K, 1]`` hyperparameter as the K Python floats the class sees (read once, at init: no device sync per
    step)."""
    return [float(v) for v in value.flatten().tolist()]


def _debias(betas: list[float], t: int, like: torch.Tensor, root: bool = False) -> torch.Tensor:
    """``BaseOptimizer.debias``, 1 − βᵗ with ``math.pow`` (``math.sqrt`` of it with ``root``), per configuration, as the
    ``[K, 1]`` column of the class's Python floats: torch's ``pow`` and ``sqrt`` on a float64 tensor differ from
    ``math``'s in the last bit for some β and t (measured: √(1 − 0.999¹³⁸), 0.99³)."""
    values = [1.0 - math.pow(beta, t) for beta in betas]
    if root:
        values = [math.sqrt(v) for v in values]
    return torch.tensor(values, dtype=like.dtype, device=like.device)[:, None]


def _decoupled_decay(x, hp):
    """``apply_weight_decay(weight_decouple=True, fixed_decay=False)``: x ← x(1 − λη) (nothing when λ = 0)."""
    x.mul_(1.0 - hp["weight_decay"] * hp["lr"])


# ---- SM3 ------------------------------------------------------------------------------------------------

def _sm3_accumulators(state, index, shape, x):
    """The per-dimension accumulators of parameter tensor ``index``: ``[K, 1, …, nᵢ, …, 1]`` for each dimension i
    of ``shape`` (a vector: one ``[K, n]``), created at the first step (the network engine inits a rule before it
    gives the layout)."""
    accs = state.setdefault("acc", {})
    if index not in accs:
        K, rank = x.shape[0], len(shape)
        accs[index] = [torch.zeros([K] + [1] * i + [n] + [1] * (rank - 1 - i), dtype=x.dtype, device=x.device)
                       for i, n in enumerate(shape)]
    return accs[index]


def _amax_except(nu, i, rank):
    """``reduce_max_except_dim`` of the class on ``[K, *shape]``: the max over every tensor dimension but i."""
    dims = tuple(d + 1 for d in range(rank) if d != i)
    return nu.amax(dim=dims, keepdim=True) if dims else nu


@_rule("sm3", needs=[LAYERS])
class _SM3:
    """SM3 (pytorch_optimizer.SM3; Anil, Gupta, Koren & Singer 2019, "Memory-Efficient Adaptive Optimization",
    SM3-II), parameter tensor by parameter tensor, with one accumulator μ⁽ⁱ⁾ per dimension i of the tensor (the
    cover of its slices along each dimension). SM3-II: ν = min_{r∋j} μ(r) + g², μ(r) ← max_{j∈r} ν, u = g/√ν,
    x ← x − ηu. The library adds: ε under the root, u = g·(ν + ε)^(−½) (ε = 1e-30 stands for 0/0 = 0); momentum
    μ_m: m ← μ_m m + (1 − μ_m)u, x ← x − ηm; and β > 0: ν = β·min μ + (1 − β)g² with μ(r) ← max(μ(r), max_{j∈r} ν).
    On a vector every slice is one coordinate and SM3 is AdaGrad: ν ← ν + g². Deviations from the paper: none
    at β = 0 (the default, besides ε); with β > 0 the accumulators keep a running maximum, so they never decrease
    (not the exponential average the authors' implementation describes: sm3-paper)."""

    slots = staticmethod(lambda hp: 2)  # momentum_buffer (always), accumulator_0 (on a vector: parameter-sized)

    @staticmethod
    def init(x, hp):
        return {"m": _zeros(x)}

    @staticmethod
    def step(x, g, state, hp, t):
        layout = state["layout"]
        beta, momentum = hp["beta"], hp["momentum"]
        with_momentum = bool((momentum > 0.0).any())
        updates = []
        for index, ((grad, shape), (m, _)) in enumerate(zip(_tensors(g, layout), _tensors(state["m"], layout))):
            rank = len(shape)
            accs = _sm3_accumulators(state, index, shape, x)
            grad = grad.reshape(-1, *shape)
            b = _column(beta, rank)
            nu = accs[0].clone()
            for acc in accs[1:]:
                nu = torch.min(nu, acc)
            nu = torch.where(b > 0.0, nu * b, nu)
            nu = torch.addcmul(nu, (1.0 - b) * grad, grad)
            for i, acc in enumerate(accs):
                nu_max = _amax_except(nu, i, rank)
                acc.copy_(torch.where(b > 0.0, torch.maximum(acc, nu_max), nu_max))
            update = torch.rsqrt(nu + _column(hp["eps"], rank)) * grad
            update = update.reshape(m.shape)
            if with_momentum:
                moved = torch.lerp(m, update, 1.0 - momentum)
                m.copy_(torch.where(momentum > 0.0, moved, m))
                update = torch.where(momentum > 0.0, m, update)
            updates.append(update)
        update = updates[0] if len(updates) == 1 else torch.cat(updates, dim=-1)
        x.copy_(torch.addcmul(x, -hp["lr"], update))


@_rule("sm3-paper", needs=[LAYERS])
class _SM3Paper:
    """SM3-II (optbench.optimizers.paper.SM3Paper; Anil, Gupta, Koren & Singer 2019, arXiv:1901.11150), parameter
    tensor by parameter tensor, one accumulator μ⁽ⁱ⁾ per dimension i (the cover of the tensor's slices along each
    dimension): ν = min_{r∋j} μ(r) + g² (β > 0: ν = β·min_{r∋j} μ(r) + (1 − β)g², the exponential average of the
    authors' implementation), μ(r) ← max_{j∈r} ν, u = g/√(ν + ε); momentum μ_m > 0: m ← μ_m m + (1 − μ_m)u, u ← m;
    x ← x − ηu. Deviations from the paper: none (ε = 1e-30 stands for the paper's 0/0 = 0; β and momentum, off
    by default, are the authors' implementation's)."""

    slots = staticmethod(lambda hp: 1 + int(hp["momentum"] > 0))  # accumulators (, momentum_buffer)

    @staticmethod
    def init(x, hp):
        return {"m": _zeros(x)}

    @staticmethod
    def step(x, g, state, hp, t):
        layout = state["layout"]
        beta, momentum = hp["beta"], hp["momentum"]
        with_momentum = bool((momentum > 0.0).any())
        updates = []
        for index, ((grad, shape), (m, _)) in enumerate(zip(_tensors(g, layout), _tensors(state["m"], layout))):
            rank = len(shape)
            accs = _sm3_accumulators(state, index, shape, x)
            grad = grad.reshape(-1, *shape)
            b = _column(beta, rank)
            covered = accs[0]
            for acc in accs[1:]:
                covered = torch.minimum(covered, acc)
            nu = torch.where(b > 0.0, covered * b + (1.0 - b) * grad * grad, covered + grad * grad)
            for i, acc in enumerate(accs):
                acc.copy_(_amax_except(nu, i, rank))
            update = (grad / (nu + _column(hp["eps"], rank)).sqrt()).reshape(m.shape)
            if with_momentum:
                moved = torch.addcmul(m * momentum, 1.0 - momentum, update)
                m.copy_(torch.where(momentum > 0.0, moved, m))
                update = torch.where(momentum > 0.0, m, update)
            updates.append(update)
        update = updates[0] if len(updates) == 1 else torch.cat(updates, dim=-1)
        x.copy_(torch.addcmul(x, -hp["lr"], update))


# ---- GaLore, Fira ---------------------------------------------------------------------------------------

@_rule("galore")
class _GaLore:
    """GaLore (pytorch_optimizer.GaLore; Zhao, Zhang, Chen, Wang, Anandkumar & Tian 2024, "GaLore: Memory-Efficient
    LLM Training by Gradient Low-Rank Projection", Algorithm 2): with P_t the projection of the gradient onto its top
    singular vectors (recomputed every ``update_proj_gap`` steps), R = Pᵀg, m ← β₁m + (1 − β₁)R,
    v ← β₂v + (1 − β₂)R², N = m̂/(√v̂ + ε) (m̂, v̂ bias-corrected), x ← x − η·α·PN. optbench builds the class with
    parameter groups of its constructor's hyperparameters, none with a ``rank``, so P = I and α = 1 on every
    tensor (vectors and matrices: the SVD is never taken) and the class runs its foreach Adam path:
    m ← β₁m + (1 − β₁)g, v ← β₂v + (1 − β₂)g², x ← x − η√(1 − β₂ᵗ)/(1 − β₁ᵗ) · m/(√v + ε), then x ← x(1 − ηλ).
    Deviations from the paper: ε is added to √v before the bias correction (ε·√(1 − β₂ᵗ) after it); decoupled
    weight decay after the step (off by default); the projection is not reachable from optbench."""

    slots = staticmethod(lambda hp: 2)  # exp_avg, exp_avg_sq

    @staticmethod
    def init(x, hp):
        return {"m": _zeros(x), "v": _zeros(x), "betas": (_python_floats(hp["beta1"]), _python_floats(hp["beta2"]))}

    @staticmethod
    def step(x, g, state, hp, t):
        lr, beta1, beta2 = hp["lr"], hp["beta1"], hp["beta2"]
        betas1, betas2 = state["betas"]
        step_size = lr * _debias(betas2, t, x, root=True) / _debias(betas1, t, x)
        m, v = state["m"], state["v"]
        m.lerp_(g, 1.0 - beta1)
        v.mul_(beta2)
        v.copy_(torch.addcmul(v, (1.0 - beta2) * g, g))
        update = m / (v.sqrt() + hp["eps"])
        x.copy_(torch.addcmul(x, -step_size, update))
        _decoupled_decay(x, hp)


@_rule("fira")
class _Fira(_GaLore):
    """Fira (pytorch_optimizer.Fira; Chen, Huang, Zhang, Li, Liu & Wang 2024, "Fira: Can We Achieve Full-rank
    Training of LLMs Under Low-rank Constraint?", Algorithm 1): GaLore's low-rank Adam step on R = Pᵀg plus the
    full-rank compensation φ(R)(g − PR), φ = ‖N‖/‖R‖ (per row or column), its norm growth limited to 1.01× per step.
    optbench builds the class with parameter groups without a ``rank``, so P = I on every tensor: g − PR = 0, no
    compensation, and the class runs the same foreach Adam path as GaLore: m ← β₁m + (1 − β₁)g,
    v ← β₂v + (1 − β₂)g², x ← x − η√(1 − β₂ᵗ)/(1 − β₁ᵗ) · m/(√v + ε), then x ← x(1 − ηλ). Deviations from the
    paper: as GaLore's (ε before the bias correction, decoupled decay after the step); the projection and the
    compensation are not reachable from optbench."""


# ---- SPAM -----------------------------------------------------------------------------------------------

SPAM_DEATH_RATE = 0.99  # SPAM's CosineDecay(0.99, warmup_epoch): the step scale after a reset starts at 1 − 0.99


def _spam_death_rates(warmup: int) -> list[float]:
    """``CosineDecay(0.99, warmup).get_death_rate(j)`` for j = 0, …, warmup − 1 (then 0), as the class computes
    them: torch's recursive ``CosineAnnealingLR`` (T = warmup + 1, η_min = 0) from 0.99, one step per call:
    r_{e} = (1 + cos(πe/T))/(1 + cos(π(e − 1)/T)) · r_{e−1}, the call at j giving r_{j+1}."""
    period, rate, rates = warmup + 1, SPAM_DEATH_RATE, []
    for epoch in range(1, warmup + 1):
        rate = ((1 + math.cos(math.pi * epoch / period)) / (1 + math.cos(math.pi * (epoch - 1) / period))
                * (rate - 0.0) + 0.0)
        rates.append(rate)
    return rates


@_rule("spam", needs=[LAYERS])
class _SPAM:
    """SPAM (pytorch_optimizer.SPAM; Huang, Zhu, Jin, Liu, Wang & Liu 2025, "SPAM: Spike-Aware Adam with Momentum
    Reset for Stable LLM Training", Algorithm 1) with ``density`` ≥ 1 (every entry updated): Adam whose moments
    are reset to 0 every ΔT = ``update_proj_gap`` steps (at t ≡ 0 mod ΔT), whose gradient spikes are clipped,
    g ← sign(g)·√(θv) where g² > θv (θ = ``threshold``; from step N = ``grad_accu_steps`` on, and only while
    t mod ΔT ≥ N, i.e. not in the first N steps after a reset), and whose step is warmed up by a cosine after
    every reset: m ← β₁m + (1 − β₁)g, v ← β₂v + (1 − β₂)g², x ← x − s_t·η√(1 − β₂ᵗ)/(1 − β₁ᵗ) · m/(√v + ε),
    then x ← x(1 − ηλ), with s_t = 1 − r_j for the j-th step after the last reset (r_j the cosine from 0.99 to 0
    over ``warmup_epoch`` steps, torch's recursive CosineAnnealingLR; r = 0 before the first reset and after the
    warm-up). t counts every step: the moments restart at 0 after a reset, the bias corrections 1 − βᵗ do not; the
    first reset comes after ΔT − 1 steps, and there is no warm-up before it (the class's warm-up counter starts past
    its end). Deviations from the paper: ε is added before the bias correction of v (ε·√(1 − β₂ᵗ) after it);
    decoupled weight decay (off by default). Refused: ``density`` < 1, the random sparse masks of 2-D tensors."""

    slots = staticmethod(lambda hp: 2)  # exp_avg, exp_avg_sq

    @staticmethod
    def refuses(hp):
        if float(hp["density"]) < 1.0:
            return ("density < 1 draws random sparse update masks for 2-D tensors (torch.rand_like on the global "
                    "generator), which the rule does not reproduce")
        return None

    @staticmethod
    def init(x, hp):
        warmups = [int(w) for w in hp["warmup_epoch"].flatten().tolist()]
        tables = {w: _spam_death_rates(w) for w in set(warmups)}
        width = max(warmups) + 1
        rates = torch.tensor([tables[w] + [0.0] * (width - w) for w in warmups], dtype=x.dtype, device=x.device)
        return {"m": _zeros(x), "v": _zeros(x), "rates": rates,
                "current": hp["warmup_epoch"].to(torch.int64) + 1,  # the class's state['current_step']
                "betas": (_python_floats(hp["beta1"]), _python_floats(hp["beta2"]))}

    @staticmethod
    def step(x, g, state, hp, t):
        layout = state["layout"]
        lr, beta1, beta2 = hp["lr"], hp["beta1"], hp["beta2"]
        gap, accumulate, threshold = hp["update_proj_gap"], hp["grad_accu_steps"], hp["threshold"]
        current, rates = state["current"], state["rates"]
        rate = torch.gather(rates, 1, current.clamp(max=rates.shape[1] - 1))
        scale = 1.0 - rate  # get_death_rate is 0 once current ≥ warmup_epoch (the table's padding)
        betas1, betas2 = state["betas"]
        step_size = lr * _debias(betas2, t, x, root=True) / _debias(betas1, t, x)
        phase = torch.remainder(torch.full_like(gap, float(t)), gap)  # t mod ΔT
        m, v = state["m"], state["v"]
        reset = phase == 0.0
        if bool(reset.any()):
            m.copy_(torch.where(reset, 0.0, m))
            v.copy_(torch.where(reset, 0.0, v))
        clip = (threshold != 0.0) & (t >= accumulate) & (phase >= accumulate)
        if bool(clip.any()):
            limit = threshold * v
            spiked = clip & (g * g > limit)
            g = torch.where(spiked, g.sign() * (v * threshold).sqrt(), g)
        m.lerp_(g, 1.0 - beta1)
        v.mul_(beta2)
        v.copy_(torch.addcmul(v, (1.0 - beta2) * g, g))
        value = -step_size * scale
        for (p, shape), (m_part, _), (v_part, _) in zip(_tensors(x, layout), _tensors(m, layout),
                                                         _tensors(v, layout)):
            denominator = v_part.sqrt() + hp["eps"]
            if len(shape) == 2:  # the masked path: the update written into a zero tensor, then added
                p.copy_(torch.addcmul(p, value, m_part / denominator))
            else:
                p.add_(value * m_part / denominator)
        _decoupled_decay(x, hp)
        # after the step: the class's current_step, reset (with a fresh warm-up) once t + 1 ≡ 0 mod ΔT
        after = torch.remainder(torch.full_like(gap, float(t + 1)), gap) == 0.0
        state["current"] = torch.where(after, 0, current + 1)


# ---- Nero -----------------------------------------------------------------------------------------------

def _neuron_view(part, shape):
    """A ``[K, n]`` parameter tensor's columns as ``[K, rows, rest]`` (the class's ``channel_view``: one row per
    output neuron) for ndim > 1, or ``[K, n, 1]`` (each coordinate its own neuron: ``neuron_norm`` is ``|x|``)."""
    rows = shape[0] if len(shape) > 1 else part.shape[-1]
    return part.reshape(part.shape[0], rows, -1)


def _neuron_norm(view, matrix):
    """``neuron_norm``: the 2-norm of each row of a matrix's ``[K, rows, rest]`` view, ``|x|`` of a vector's."""
    return torch.linalg.vector_norm(view, dim=-1, keepdim=True) if matrix else view.abs()


def _nero_constrain(view, eps):
    """Nero's constraint on a matrix: each row centred, then divided by its norm + ε (in place)."""
    view.sub_(view.mean(dim=-1, keepdim=True))
    view.div_(_neuron_norm(view, True) + eps)


@_rule("nero", needs=[LAYERS])
class _Nero:
    """Nero (pytorch_optimizer.Nero; Liu, Bernstein, Meister & Yue 2021, "Learning by Turning: Neural Architecture
    Aware Optimisation", Algorithm 1), parameter tensor by parameter tensor, per neuron: the paper's
    ḡ² ← βḡ² + (1 − β)‖g_w‖², w ← w − η‖w‖/√(ḡ²/(1 − βᵗ)) · g_w for a neuron's weights (a row of a matrix or kernel),
    then w ← w − mean(w), w ← w/‖w‖ (the balanced constraint set); b ← b − ησ_b/√(ḡ_b²/(1 − βᵗ)) · g_b for a bias
    (ḡ_b² from g_b²), σ_b the biases' initialisation scale. The library: v ← βv + (1 − β)n², n = ‖g_row‖ (|g| for
    each coordinate of a vector), x ← x − η·s·g/(√(v/(1 − βᵗ)) + ε) (NaN → 0), s the tensor's mean neuron norm at
    the first step (0.01 if it is 0); with ``constraints`` every matrix is centred and normalised row by row
    (x ← x − mean_row(x), x ← x/(‖x_row‖ + ε)) before the first step and after each. Deviations from the paper: ε
    (outside the square root, and in the normalisation); the per-neuron ‖w‖ is the constant s per tensor (≈ 1, as
    ‖w‖, for constrained matrices; with ``constraints=False`` the paper's ‖w‖ would change with w); σ_b is the
    tensor's mean |b₀|. Vectors (biases, every analytic problem) are treated as biases: per-coordinate steps, no
    constraint."""

    slots = staticmethod(lambda hp: 1)  # exp_avg_sq (per neuron: on a vector, per coordinate); scale is 0-d

    @staticmethod
    def init(x, hp):
        return {"betas": _python_floats(hp["beta"])}

    @staticmethod
    def step(x, g, state, hp, t):
        layout = state["layout"]
        beta, eps, lr = hp["beta"], hp["eps"], hp["lr"]
        constraints = hp["constraints"]
        parts = list(zip(_tensors(x, layout), _tensors(g, layout)))
        if "v" not in state:  # the class's init_group at the first step: constrain, then the neuron norms' mean
            state["v"], state["scale"] = [], []
            fallback = torch.as_tensor(0.01).item()  # state['scale'] = 0.01, later torch.as_tensor(0.01)
            for (p, shape), _ in parts:
                matrix = len(shape) > 1
                view = _neuron_view(p, shape)
                if constraints and matrix:
                    _nero_constrain(view, eps[:, :, None])
                norms = _neuron_norm(view, matrix)
                scale = norms.mean(dim=(1, 2), keepdim=True) if matrix else norms.reshape(p.shape).mean(-1)[:, None,
                                                                                                                 None]
                state["scale"].append(torch.where(scale == 0.0, fallback, scale))
                state["v"].append(torch.zeros_like(norms))
        bias_correction = _debias(state["betas"], t, x)
        for ((p, shape), (grad, _)), v, scale in zip(parts, state["v"], state["scale"]):
            matrix = len(shape) > 1
            view, grad_view = _neuron_view(p, shape), _neuron_view(grad, shape)
            norms = _neuron_norm(grad_view, matrix)
            b = beta[:, :, None]
            v.mul_(b)
            v.copy_(torch.addcmul(v, (1.0 - b) * norms, norms))
            denominator = (v / bias_correction[:, :, None]).sqrt() + eps[:, :, None]
            update = torch.nan_to_num(grad_view / denominator, nan=0.0) * scale
            view.copy_(torch.addcmul(view, -lr[:, :, None], update))
            if constraints and matrix:
                _nero_constrain(view, eps[:, :, None])


# ---- the EmoNavi family ---------------------------------------------------------------------------------

EMO_SHADOW_LEAP = 0.1  # the shadow's lerp weight while the loss-driven ratio is 0: 0.1·|trust|, |trust| = 1 at loss 0


def _emo_prepare(x, g, state, hp):
    """``prepare_emo_foreach`` at loss 0 (what optbench's closure-less ``step()`` gives the class): weight decay
    (decoupled x ← x(1 − λη), η unscaled with ``fixed_decay``, or coupled g ← g + λx; none when λ = 0), then with
    ``use_shadow`` the shadow's lerp toward x by 0.1 (the shadow ratio is 0, so x is never pulled back to it).
    Returns the gradient."""
    wd = hp["weight_decay"]
    if hp["weight_decouple"]:
        x.mul_(1.0 - wd * (1.0 if hp["fixed_decay"] else hp["lr"]))
    else:
        g = torch.addcmul(g, wd, x)
    if hp["use_shadow"]:
        if "shadow" not in state:
            state["shadow"] = state.pop("x0")
        state["shadow"].lerp_(x, EMO_SHADOW_LEAP)
    return g


def _emo_init(x, hp, *moments):
    state = {name: _zeros(x) for name in moments}
    if hp["use_shadow"]:
        state["x0"] = x.clone()  # the class's shadow starts as the parameter at the first step: x₀
    return state


_EMO_LOSS = ("The class scales its step by emo_drive, a function of short-, medium- and long-term averages of the "
             "loss that step(closure) returns; optbench calls step() without a closure, so the loss is 0, "
             "emo_drive = 1 and the shadow ratio 0: the step above is the whole update.")


@_rule("emonavi")
class _EmoNavi:
    """EmoNavi (pytorch_optimizer.EmoNavi; muooon, github.com/muooon/EmoNavi, published as code only): Adam without
    bias correction scaled by a loss-driven factor d_t ("emo_drive"): decay (decoupled x ← x(1 − λη) by default),
    m ← β₁m + (1 − β₁)g, v ← β₂v + (1 − β₂)g², x ← x − η·d_t·m/(√v + ε); with ``use_shadow`` a shadow copy of x
    is lerped toward x and, when the loss trend is strong, x is pulled back toward it. Under optbench d_t = 1 and the
    shadow never feeds back (see below). There is no paper to deviate from."""

    __doc__ = f"{__doc__} {_EMO_LOSS}"
    slots = staticmethod(lambda hp: 2 + int(hp["use_shadow"]))  # exp_avg, exp_avg_sq (, shadow)

    @staticmethod
    def init(x, hp):
        return _emo_init(x, hp, "m", "v")

    @staticmethod
    def step(x, g, state, hp, t):
        beta1, beta2 = hp["beta1"], hp["beta2"]
        g = _emo_prepare(x, g, state, hp)
        m, v = state["m"], state["v"]
        m.lerp_(g, 1.0 - beta1)
        v.mul_(beta2)
        v.copy_(torch.addcmul(v, (1.0 - beta2) * g, g))
        x.add_(-hp["lr"] * m / (v.sqrt() + hp["eps"]))


@_rule("emolynx")
class _EmoLynx:
    """EmoLynx (pytorch_optimizer.EmoLynx; muooon, github.com/muooon/EmoNavi, published as code only): Lion scaled
    by EmoNavi's loss-driven factor d_t: decay (decoupled by default), x ← x − η·d_t·sign((1 − β₁)g + β₁m),
    m ← β₂m + (1 − β₂)g; optional shadow as EmoNavi's. Under optbench d_t = 1 (see below). There is no paper to
    deviate from (the step is Lion's, Chen et al. 2023)."""

    __doc__ = f"{__doc__} {_EMO_LOSS}"
    slots = staticmethod(lambda hp: 1 + int(hp["use_shadow"]))  # exp_avg (, shadow)

    @staticmethod
    def init(x, hp):
        return _emo_init(x, hp, "m")

    @staticmethod
    def step(x, g, state, hp, t):
        beta1, beta2 = hp["beta1"], hp["beta2"]
        g = _emo_prepare(x, g, state, hp)
        m = state["m"]
        update = torch.addcmul(g * (1.0 - beta1), beta1, m).sign()
        x.copy_(torch.addcmul(x, -hp["lr"], update))
        m.lerp_(g, 1.0 - beta2)


@_rule("emofact", needs=[LAYERS])
class _EmoFact:
    """EmoFact (pytorch_optimizer.EmoFact; muooon, github.com/muooon/EmoNavi, published as code only), parameter
    tensor by parameter tensor: decay (decoupled by default) and optional shadow as EmoNavi's, then for a tensor with
    ndim ≥ 2 (rows = its first dimension, columns = the rest) Adafactor-like factored scales of g²:
    r ← β₁r + (1 − β₁)√(mean_row(g²) + ε), c ← β₁c + (1 − β₁)√(mean_col(g²) + ε), u = g/(√(r·c) + ε); for
    every other tensor (biases, every analytic problem) Adam's moments without bias correction, u = m/(√v + ε);
    then x ← x − η·d_t·sign(u), d_t EmoNavi's loss-driven factor (1 under optbench, see below). The factored
    branch's sign is sign(g): r and c only matter where g/(√(r·c) + ε) underflows. There is no paper to deviate
    from."""

    __doc__ = f"{__doc__} {_EMO_LOSS}"
    slots = staticmethod(lambda hp: 2 + int(hp["use_shadow"]))  # on a vector: exp_avg, exp_avg_sq (, shadow)

    @staticmethod
    def init(x, hp):
        return _emo_init(x, hp, "m", "v")

    @staticmethod
    def step(x, g, state, hp, t):
        layout = state["layout"]
        beta1, beta2, eps = hp["beta1"], hp["beta2"], hp["eps"]
        g = _emo_prepare(x, g, state, hp)
        factors = state.setdefault("factors", {})
        updates = []
        for index, ((grad, shape), (m, _), (v, _)) in enumerate(zip(_tensors(g, layout), _tensors(state["m"], layout),
                                                                     _tensors(state["v"], layout))):
            if len(shape) >= 2:
                grad = grad.reshape(-1, *shape)
                squares = grad.pow(2)
                rows = squares.mean(dim=tuple(range(2, grad.ndim)), keepdim=True)
                columns = squares.mean(dim=1, keepdim=True)
                rows, columns = (rows + _column(eps, len(shape))).sqrt(), (columns + _column(eps, len(shape))).sqrt()
                if index not in factors:
                    factors[index] = (torch.zeros_like(rows), torch.zeros_like(columns))
                r, c = factors[index]
                weight = _column(1.0 - beta1, len(shape))
                r.lerp_(rows, weight)
                c.lerp_(columns, weight)
                update = (grad / ((r * c).sqrt() + _column(eps, len(shape)))).reshape(m.shape)
            else:
                m.lerp_(grad, 1.0 - beta1)
                v.mul_(beta2)
                v.copy_(torch.addcmul(v, (1.0 - beta2) * grad, grad))
                update = m / (v.sqrt() + eps)
            updates.append(update.sign())
        update = updates[0] if len(updates) == 1 else torch.cat(updates, dim=-1)
        x.copy_(torch.addcmul(x, -hp["lr"], update))
