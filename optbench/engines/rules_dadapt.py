"""Batched rules of D-Adaptation (Defazio & Mishchenko 2023, "Learning-Rate-Free Learning by D-Adaptation",
arXiv:2301.07733): pytorch_optimizer's DAdaptAdaGrad, DAdaptAdam, DAdaptAdan, DAdaptLion and DAdaptSGD.

Same contract as :mod:`optbench.engines.batched_rules` (registered into its ``RULES`` table): ``x`` and ``g`` are
``[K, P]``, float hyperparameters ``[K, 1]`` tensors. Each method estimates the distance d from the start to a
solution with sums over all parameters of one configuration, so every rule needs ``JOINT`` (on an analytic
problem a per-row reduction of the one ``[K, d]`` tensor) and ``LAYERS``: the classes add one inner product or
norm per parameter tensor, in ``named_parameters()`` order, and the rules do the same through ``state["layout"]``.

``lr`` multiplies the estimated step size (the catalogue marks the entries ``lr_free``). The classes keep their
statistics in ``torch.tensor([0.0])``, float32 unless the default dtype is float64, and d as a Python float
(DAdaptAdan: as a float32 tensor once an estimate replaces d₀): the rules keep the statistics in the same dtype,
rounding each accumulation as the class's ``add_``/``lerp_`` on a one-element float32 tensor does (one fused
multiply-add), and d in float64, so that a float64 run reproduces the class to float64 accuracy even though its
d is float32-accurate. Python's ``max``/``min`` on the estimate (which ignore a NaN in their second argument)
are mirrored too. Each class skips the parameter update (and the growth of d) when its ‖s‖₁ is 0, per
configuration here. Operation for operation as the code path the loop engine takes on a CPU (the foreach path of
DAdaptAdam, DAdaptLion and DAdaptSGD, the per-parameter path of DAdaptAdaGrad and DAdaptAdan; on CUDA every class
takes its foreach path, which computes the same updates).

What remains are float64 rounding differences (a fused ``add_(…, alpha=…)`` against a product and a sum, a
``dot`` against a row sum), 1e-16 relative. Where d keeps growing they grow with it: on Rosenbrock with clipping
for 200 steps (the gallery's setting) or on Ackley they reach O(1) in the final loss, as does a 1e-7 relative
change of the class's own lr (measured: the class is that sensitive there); the tests compare where trajectories
are not chaotic. A float32 run also rounds the ``[K, 1]`` hyperparameters (β₂, d₀, lr) to float32, which the
class keeps as Python floats.
"""

from __future__ import annotations

import torch

from optbench.engines.batched_rules import JOINT, LAYERS, _rule, _zeros

NEEDS = (LAYERS, JOINT)


# (batched_rules_modern has the same two helpers; importing them from there would be circular when that module is
# the first one imported, since batched_rules registers this module at its end)
def _tensors(x, layout):
    """Column slices ``[K, size]`` of ``x`` per parameter tensor of the layout, with each tensor's shape."""
    return list(zip(x.split(layout.sizes, dim=-1), layout.shapes))


def _scalar_dtype():
    """The dtype of the classes' ``torch.tensor([0.0])`` statistics: float32 unless the default is float64."""
    return torch.float64 if torch.get_default_dtype() == torch.float64 else torch.float32



def _statistic(x):
    """One scalar statistic per configuration, ``[K, 1]`` in the classes' scalar dtype, starting at 0."""
    return torch.zeros(x.shape[0], 1, dtype=_scalar_dtype(), device=x.device)


def _d0(x, hp):
    """d per configuration, in float64 as the class's Python float."""
    return torch.zeros(x.shape[0], 1, dtype=torch.float64, device=x.device) + hp["d0"].double()


def _fused_add(acc, alpha, value):
    """``acc.add_(value, alpha=alpha)`` on the class's one-element statistic: acc + alpha·value, with alpha and
    value first rounded to acc's dtype and the sum rounded once (the CPU kernel's fused multiply-add; the product
    of two float32 values is exact in float64)."""
    scalar = acc.dtype
    if scalar == torch.float64:
        return acc + alpha * value
    return (acc.double() + alpha.to(scalar).double() * value.to(scalar).double()).to(scalar)


def _fused_lerp(start, end, weight):
    """``start.lerp_(end, weight)`` on the class's one-element statistic with a Python weight: in start's dtype,
    start + w(end − start) for |w| < 1/2, else end − (end − start)(1 − w), each rounded once."""
    scalar = start.dtype
    if scalar == torch.float64:
        return torch.lerp(start, end, weight)
    w = weight.to(scalar)
    diff = end - start
    low = (start.double() + w.double() * diff.double()).to(scalar)
    high = (end.double() - diff.double() * (1 - w).double()).to(scalar)
    return torch.where(w.abs() < 0.5, low, high)


def _python_min(a, b):
    """Python's ``min(a, b)``: b only if b < a (a NaN b loses)."""
    return torch.where(b < a, b, a)


def _python_max(a, b):
    """Python's ``max(a, b)``: b only if b > a (a NaN b loses)."""
    return torch.where(b > a, b, a)


def _coupled(g, x, wd):
    """g + λx, as the class's ``grad.add_(p, alpha=λ)``, which it skips when λ = 0."""
    return torch.where(wd != 0, g + wd * x, g)


def _per_tensor_sum(values, layout, scalar):
    """Σ over tensors, in order, of each tensor's float64 sum rounded to ``scalar`` (``acc.add_(t.sum())``)."""
    total = None
    for part, _ in _tensors(values, layout):
        term = part.sum(-1, keepdim=True).to(scalar)
        total = term if total is None else total + term
    return total


def _dots(a, b, layout, acc, alpha):
    """acc + Σ_l alpha·⟨a_l, b_l⟩ over parameter tensors l, each added as the class's ``acc.add_(dot, alpha)``."""
    for (left, _), (right, _) in zip(_tensors(a, layout), _tensors(b, layout)):
        acc = _fused_add(acc, alpha, (left * right).sum(-1, keepdim=True))
    return acc


@_rule("dadaptadam", needs=NEEDS)
class _DAdaptAdam:
    """D-Adapt Adam (pytorch_optimizer.DAdaptAdam, D-Adaptation V3; Defazio & Mishchenko 2023, Algorithm 4 in
    its Adam form). At step t with dη = d·lr (÷ (1 − β₁ᵗ)/√(1 − β₂ᵗ) with ``bias_correction``) and the
    pre-step denominator a = √v + ε: coupled decay g ← g + λx; r_acc = dη⟨g, s/a⟩; m ← β₁m + dη(1 − β₁)g;
    v ← β₂v + (1 − β₂)g²; s ← √β₂·s + dη(1 − √β₂)g; unless ‖s‖₁ = 0 (then nothing more):
    r ← r + (1 − √β₂)(r_acc − r), d̂ = r/((1 − √β₂)‖s‖₁), d ← max(d, min(d̂, d·growth_rate)) when lr > 0;
    decoupled decay x ← x(1 − λ(1 if ``fixed_decay`` else dη)); x ← x − m/(√v + ε) (m already carries dη).
    The step of t uses the d of t − 1 (the new d first scales step t + 1), as the class does."""

    slots = staticmethod(lambda hp: 3)  # s, exp_avg, exp_avg_sq

    @staticmethod
    def init(x, hp):
        return {"s": _zeros(x), "m": _zeros(x), "v": _zeros(x), "d": _d0(x, hp), "numerator": _statistic(x)}

    @staticmethod
    def step(x, g, state, hp, t):
        layout = state["layout"]
        beta1, beta2, lr, wd, eps = hp["beta1"], hp["beta2"], hp["lr"], hp["weight_decay"], hp["eps"]
        beta2_sq = beta2.double().sqrt()
        d = state["d"]
        d_lr = d * lr
        if hp["bias_correction"]:
            d_lr = d_lr / ((1.0 - beta1.double() ** t) / (1.0 - beta2.double() ** t).sqrt())
        if not hp["weight_decouple"]:
            g = _coupled(g, x, wd)
        m, v, s = state["m"], state["v"], state["s"]
        scalar = state["numerator"].dtype
        numerator_acc = _dots(g, s / (v.sqrt() + eps), layout, _statistic(x), d_lr)
        m.mul_(beta1).add_((d_lr * (1.0 - beta1)).to(x.dtype) * g)
        v.mul_(beta2).add_((1.0 - beta2) * g * g)
        s.mul_(beta2_sq.to(x.dtype)).add_((d_lr * (1.0 - beta2_sq)).to(x.dtype) * g)
        sk_l1 = _per_tensor_sum(s.abs(), layout, scalar)
        moving = sk_l1 != 0
        numerator = torch.where(moving, _fused_lerp(state["numerator"], numerator_acc, 1.0 - beta2_sq),
                                state["numerator"])
        state["numerator"] = numerator
        d_hat = (numerator / ((1.0 - beta2_sq).to(scalar) * sk_l1)).double()
        grown = _python_max(d, _python_min(d_hat, d * hp["growth_rate"]))
        state["d"] = torch.where(moving & (lr > 0), grown, d)
        stepped = x
        if hp["weight_decouple"]:
            stepped = x * (1.0 - wd * (1.0 if hp["fixed_decay"] else d_lr.to(x.dtype)))
        stepped = stepped - m / (v.sqrt() + eps)
        x.copy_(torch.where(moving, stepped, x))


@_rule("dadaptsgd", needs=NEEDS)
class _DAdaptSGD:
    """D-Adapt SGD (pytorch_optimizer.DAdaptSGD, D-Adaptation V3; Defazio & Mishchenko 2023, Algorithm 1 with
    momentum as a running average of the dual-averaging point z). At the first step the class takes
    ‖g₀‖ (the global gradient norm in float32); while ‖g₀‖ = 0 no step counts. With dη = d·lr/‖g₀‖: decay
    (coupled g ← g + λx, or decoupled x ← x(1 − λ(1 if ``fixed_decay`` else dη))); r ← r + dη⟨g, s⟩;
    s ← s + dη g; d̂ = 2r/‖s‖₂, d ← max(d, min(d̂, d·growth_rate)) when lr > 0; z = x₀ − s;
    x ← x + (1 − μ)(z − x) (μ = momentum). As in Algorithm 1 the step of t uses the d of t − 1."""

    slots = staticmethod(lambda hp: 3)  # z, s, x0

    @staticmethod
    def init(x, hp):
        return {"s": _zeros(x), "x0": x.clone(), "d": _d0(x, hp), "numerator": _statistic(x),
                "g0_norm": _statistic(x), "g0_known": False}

    @staticmethod
    def step(x, g, state, hp, t):
        layout = state["layout"]
        lr, wd = hp["lr"], hp["weight_decay"]
        scalar = state["numerator"].dtype
        if not state["g0_known"]:  # get_global_gradient_norm: per-tensor norms → float32, squared, summed
            squares = layout.norms(g).to(scalar).square()
            total = squares if layout.single else torch.stack([row.sum() for row in squares])[:, None]
            g0 = state["g0_norm"]
            state["g0_norm"] = torch.where(g0 == 0, total.sqrt(), g0)
            state["g0_known"] = bool((state["g0_norm"] != 0).all())
        g0_norm = state["g0_norm"]
        active = g0_norm != 0
        d = state["d"]
        d_lr = d * lr / g0_norm.double()
        stepped = x
        if hp["weight_decouple"]:
            stepped = x * (1.0 - wd * (1.0 if hp["fixed_decay"] else d_lr.to(x.dtype)))
        else:
            g = _coupled(g, x, wd)
        s = state["s"]
        numerator = _dots(g, s, layout, state["numerator"], d_lr)
        s_new = s + d_lr.to(x.dtype) * g
        sk_sq = _per_tensor_sum(s_new * s_new, layout, scalar)
        d_hat = (2.0 * numerator / sk_sq.sqrt()).double()
        grown = _python_max(d, _python_min(d_hat, d * hp["growth_rate"]))
        state["d"] = torch.where(active & (lr > 0), grown, d)
        state["numerator"] = torch.where(active, numerator, state["numerator"])
        state["s"] = torch.where(active, s_new, s)
        z = state["x0"] - s_new
        x.copy_(torch.where(active, torch.lerp(stepped, z, 1.0 - hp["momentum"]), x))


@_rule("dadaptlion", needs=NEEDS)
class _DAdaptLion:
    """D-Adapt Lion (pytorch_optimizer.DAdaptLion, D-Adaptation V3 applied to Lion, Chen et al. 2023). With
    dη = d·lr: decay (coupled g ← g + λx, or decoupled x ← x(1 − λ(1 if ``fixed_decay`` else dη)));
    u = sign(β₁m + (1 − β₁)g); x ← x − dη u; m ← β₂m + (1 − β₂)dη g; r_acc = dη⟨u, s⟩;
    s ← √β₂·s + (1 − √β₂)dη u; r ← r + (1 − √β₂)(r_acc − r); unless ‖s‖₁ = 0, when lr > 0,
    d̂ = r/((1 − √β₂)‖s‖₁) and d ← max(d, d̂) (no growth limit). The class moves x before it updates d, and
    its m carries the factor dη (the sign ignores it)."""

    slots = staticmethod(lambda hp: 2)  # exp_avg, s

    @staticmethod
    def init(x, hp):
        return {"m": _zeros(x), "s": _zeros(x), "d": _d0(x, hp), "numerator": _statistic(x)}

    @staticmethod
    def step(x, g, state, hp, t):
        layout = state["layout"]
        beta1, beta2, lr, wd = hp["beta1"], hp["beta2"], hp["lr"], hp["weight_decay"]
        beta2_sq = beta2.double().sqrt()
        d = state["d"]
        d_lr = d * lr
        if hp["weight_decouple"]:
            x.mul_(1.0 - wd * (1.0 if hp["fixed_decay"] else d_lr.to(x.dtype)))
        else:
            g = _coupled(g, x, wd)
        m, s = state["m"], state["s"]
        scalar = state["numerator"].dtype
        update = torch.lerp(m, g, 1.0 - beta1).sign()
        x.sub_(d_lr.to(x.dtype) * update)
        m.mul_(beta2).add_(((1.0 - beta2) * d_lr).to(x.dtype) * g)
        numerator_acc = _dots(update, s, layout, _statistic(x), d_lr)
        s.mul_(beta2_sq.to(x.dtype)).add_(((1.0 - beta2_sq) * d_lr).to(x.dtype) * update)
        sk_l1 = _per_tensor_sum(s.abs(), layout, scalar)
        numerator = _fused_lerp(state["numerator"], numerator_acc, 1.0 - beta2_sq)
        state["numerator"] = numerator
        d_hat = (numerator / ((1.0 - beta2_sq).to(scalar) * sk_l1)).double()
        state["d"] = torch.where((sk_l1 != 0) & (lr > 0), _python_max(d, d_hat), d)


@_rule("dadaptadagrad", needs=NEEDS)
class _DAdaptAdaGrad:
    """D-Adapt AdaGrad (pytorch_optimizer.DAdaptAdaGrad; Defazio & Mishchenko 2023, Algorithm 3, dual averaging
    with a diagonal AdaGrad metric). With dη = d·lr: decay with the multiplier lr itself (coupled g ← g + λx,
    or decoupled x ← x(1 − λ(1 if ``fixed_decay`` else lr))); α ← α + g² (α₀ = 1e-6 per coordinate);
    s ← s + dη g; with a = √α + ε the class tracks Σ s²/a (its change this step), γ ← γ + dη²Σ g²/a and
    ‖s‖₁; unless ‖s‖₁ = 0, d̂ = (Σ s²/a − γ)/‖s‖₁, d ← max(d, min(d̂, d·growth_rate)) when lr > 0, and
    z = x₀ − s/a, x ← z (μ = momentum > 0: x ← x + (1 − μ)(z − x)). The class keeps Σ s²/a as a running sum of
    its per-tensor changes (new a and s against old), in float32; the rule adds the same changes in the same order
    (tests/test_rules_dadapt.py checks the formula above, written directly, to the class)."""

    slots = staticmethod(lambda hp: 3)  # alpha_k, sk, x0

    @staticmethod
    def init(x, hp):
        return {"alpha": torch.full_like(x, 1e-6), "sk": _zeros(x), "x0": x.clone(), "d": _d0(x, hp),
                "gsq_weighted": _statistic(x), "sk_sq_weighted": _statistic(x), "sk_l1": _statistic(x)}

    @staticmethod
    def step(x, g, state, hp, t):
        layout = state["layout"]
        lr, wd, eps = hp["lr"], hp["weight_decay"], hp["eps"]
        scalar = state["sk_l1"].dtype
        d = state["d"]
        d_lr = d * lr
        if hp["weight_decouple"]:
            x.mul_(1.0 - wd * (1.0 if hp["fixed_decay"] else lr))
        else:
            g = _coupled(g, x, wd)
        alpha, sk = state["alpha"], state["sk"]
        old_weighted = sk * sk / (alpha.sqrt() + eps)
        old_l1 = sk.abs()
        alpha.add_(g * g)
        denom = alpha.sqrt() + eps
        g_sq_terms = g * g / denom
        sk.add_(d_lr.to(x.dtype) * g)
        weighted = sk * sk / denom
        g_sq = weighted_change = l1_change = _statistic(x)
        parts = zip(_tensors(g_sq_terms, layout), _tensors(old_weighted, layout), _tensors(weighted, layout),
                    _tensors(old_l1, layout), _tensors(sk.abs(), layout))
        for (g_part, _), (old_w, _), (new_w, _), (old_a, _), (new_a, _) in parts:
            g_sq = g_sq + g_part.sum(-1, keepdim=True).to(scalar)
            weighted_change = weighted_change + (new_w.sum(-1, keepdim=True) - old_w.sum(-1, keepdim=True)).to(scalar)
            l1_change = l1_change + (new_a.sum(-1, keepdim=True) - old_a.sum(-1, keepdim=True)).to(scalar)
        state["sk_sq_weighted"] = sk_sq_weighted = state["sk_sq_weighted"] + weighted_change
        state["gsq_weighted"] = gsq_weighted = _fused_add(state["gsq_weighted"], d_lr * d_lr, g_sq)
        state["sk_l1"] = sk_l1 = state["sk_l1"] + l1_change
        moving = sk_l1 != 0
        d_hat = ((sk_sq_weighted - gsq_weighted) / sk_l1).double()
        grown = _python_max(d, _python_min(d_hat, d * hp["growth_rate"]))
        state["d"] = torch.where(moving & (lr > 0), grown, d)
        z = state["x0"] - sk / denom
        momentum = hp["momentum"]
        stepped = torch.where(momentum > 0, torch.lerp(x, z, 1.0 - momentum), z)
        x.copy_(torch.where(moving, stepped, x))


@_rule("dadaptadan", needs=NEEDS)
class _DAdaptAdan:
    """D-Adapt Adan (pytorch_optimizer.DAdaptAdan; D-Adaptation applied to Adan, Xie et al. 2022). With
    dη = d·lr and the gradient difference Δ = g − g_prev (0 at the first step): m ← β₁m + dη(1 − β₁)g;
    n ← β₂n + dη(1 − β₂)Δ; ĝ = g + β₂Δ; v ← β₃v + (1 − β₃)(ĝ²)²; a = √v + ε; s ← β₃s + dη(1 − β₃)g;
    unless ‖s‖₁ = 0 (then nothing more): γ ← β₃γ + dη²(1 − β₃)Σ g²/a, d̂ = (Σ s²/a/(1 − β₃) − γ)/‖s‖₁,
    d ← max(d, min(d̂, d·growth_rate)) when lr > 0; decoupled decay x ← x(1 − dη λ); x ← x − m/a − β₂ n/a;
    coupled decay x ← x/(1 + dη λ) (Adan's proximal form). Library quirks mirrored: v averages the FOURTH power
    of ĝ (it squares ĝ² again), where Adan's paper averages ĝ²; and once an estimate d̂ replaces d, d is a float32
    tensor (not ``.item()``-ed), so dη = d·lr and d·growth_rate are float32 products from then on."""

    slots = staticmethod(lambda hp: 5)  # s, exp_avg, exp_avg_sq, exp_avg_diff, previous_grad

    @staticmethod
    def init(x, hp):
        return {"s": _zeros(x), "m": _zeros(x), "v": _zeros(x), "diff": _zeros(x), "previous": None,
                "d": _d0(x, hp), "d_is_tensor": torch.zeros(x.shape[0], 1, dtype=torch.bool, device=x.device),
                "gsq_weighted": _statistic(x)}

    @staticmethod
    def step(x, g, state, hp, t):
        layout = state["layout"]
        beta1, beta2, beta3, lr, wd, eps = (hp["beta1"], hp["beta2"], hp["beta3"], hp["lr"], hp["weight_decay"],
                                            hp["eps"])
        scalar = state["gsq_weighted"].dtype
        d, d_is_tensor = state["d"], state["d_is_tensor"]

        def times(factor):  # d·factor: a Python product, or a float32 one once d is a tensor
            return torch.where(d_is_tensor, (d.to(scalar) * factor.to(scalar)).double(), d * factor)

        d_lr = times(lr)
        previous = -g if state["previous"] is None else state["previous"]
        grad_diff = previous + g
        m, v, n, s = state["m"], state["v"], state["diff"], state["s"]
        m.mul_(beta1).add_((d_lr * (1.0 - beta1)).to(x.dtype) * g)
        n.mul_(beta2).add_((d_lr * (1.0 - beta2)).to(x.dtype) * grad_diff)
        corrected = grad_diff * beta2 + g
        corrected_sq = corrected * corrected
        v.mul_(beta3).add_((1.0 - beta3) * corrected_sq * corrected_sq)
        denom = v.sqrt() + eps
        s.mul_(beta3).add_((d_lr * (1.0 - beta3)).to(x.dtype) * g)
        state["previous"] = -g
        g_sq = _per_tensor_sum(g * g / denom, layout, scalar)
        sk_sq_weighted = _per_tensor_sum(s * s / denom, layout, scalar)
        sk_l1 = _per_tensor_sum(s.abs(), layout, scalar)
        moving = sk_l1 != 0
        gsq_weighted = _fused_add(state["gsq_weighted"] * beta3.to(scalar), d_lr * d_lr * (1.0 - beta3), g_sq)
        state["gsq_weighted"] = torch.where(moving, gsq_weighted, state["gsq_weighted"])
        d_hat = (sk_sq_weighted / (1.0 - beta3).to(scalar) - gsq_weighted) / sk_l1  # a float32 tensor
        cap = times(hp["growth_rate"])
        # min(d̂, cap): cap if cap < d̂, compared in float32 (a tensor against a Python float)
        take_cap = d_hat > cap.to(scalar)
        smaller = torch.where(take_cap, cap, d_hat.double())
        smaller_is_tensor = torch.where(take_cap, d_is_tensor, True)
        # max(d, smaller): smaller if smaller > d, in float32 when either is a tensor
        greater = torch.where(smaller_is_tensor | d_is_tensor, smaller.to(scalar) > d.to(scalar), smaller > d)
        update = moving & (lr > 0)
        state["d"] = torch.where(update & greater, smaller, d)
        state["d_is_tensor"] = torch.where(update & greater, smaller_is_tensor, d_is_tensor)
        stepped = x
        if hp["weight_decouple"]:
            stepped = x * (1.0 - (d_lr * wd).to(x.dtype))
        stepped = stepped - m / denom - beta2 * (n / denom)
        if not hp["weight_decouple"]:
            stepped = stepped / (1.0 + (d_lr * wd).to(x.dtype))
        x.copy_(torch.where(moving, stepped, x))
