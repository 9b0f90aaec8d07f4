"""Batched rules of the methods current papers compare against: Muon, Shampoo and Prodigy.

Same contract as :mod:`optbench.engines.batched_rules` (registered into its ``RULES`` table): ``x`` and ``g`` are
``[K, P]``, float hyperparameters ``[K, 1]`` tensors, one row per configuration. Each rule mirrors the
pytorch_optimizer class operation for operation (tests check each against the class to 1e-8 in float64 through
the batched-vs-loop contract, and against its paper's formula written independently in the test). All three
need ``LAYERS``: Muon orthogonalises each weight matrix, Shampoo keeps preconditioners per parameter tensor and
dimension, Prodigy's d-estimate adds one inner product per parameter tensor (in the class's own order and
precision). On an analytic problem the layout is one 1-D tensor.
"""

from __future__ import annotations

import math

import torch

from optbench.engines.batched_rules import JOINT, LAYERS, _rule, _zeros

# pytorch_optimizer runs Muon's Newton–Schulz iteration in these dtypes whatever the parameters' dtype (the
# defaults of zero_power_via_newton_schulz_5 and zero_power_via_gram_newton_schulz, which Muon does not override):
# the rule does the same, so a float64 run's orthogonalised update is bfloat16-accurate, as the class's is.
# Tests set both to the parameter dtype to compare the rule with the class, and with the paper, in float64.
NEWTON_SCHULZ_DTYPE = {"newton_schulz": torch.bfloat16, "gram_newton_schulz": torch.float16}
NEWTON_SCHULZ_EPS = 1e-7  # lower bound of the Frobenius norm the iteration divides by (the library's)



def _tensors(x, layout):
    """Column slices ``[K, size]`` of ``x`` per parameter tensor of the layout, with each tensor's shape."""
    return list(zip(x.split(layout.sizes, dim=-1), layout.shapes))


def _scalar_dtype():
    """The dtype of a ``torch.tensor([0.0])`` the classes keep statistics in: float32 unless the default is
    float64."""
    return torch.float64 if torch.get_default_dtype() == torch.float64 else torch.float32


# ---- Muon -----------------------------------------------------------------------------------------------

def newton_schulz(g: torch.Tensor, coefficients, dtype, eps: float = NEWTON_SCHULZ_EPS) -> torch.Tensor:
    """The quintic Newton–Schulz iteration of Jordan et al. 2024 over a batch ``[K, m, n]`` of matrices:
    X₀ = G/max(‖G‖_F, eps) (on the transpose when m > n, so that X Xᵀ is the smaller Gram matrix), then for
    each (a, b, c) of ``coefficients`` X ← aX + (bA + cA²)X with A = XXᵀ — which maps every singular value
    of X₀ towards 1, approximating the polar factor UVᵀ of G = UΣVᵀ. ``coefficients`` is a list of
    (a, b, c), one per iteration; computed in ``dtype``, returned in it. Operation for operation as
    pytorch_optimizer's ``zero_power_via_newton_schulz_5``."""
    transpose = g.size(-2) > g.size(-1)
    x = (g.mT if transpose else g).to(dtype=dtype, copy=True, memory_format=torch.contiguous_format)
    x = x / x.norm(2, dim=(-2, -1), keepdim=True).clamp_min(eps)
    for w0, w1, w2 in coefficients:
        a = torch.bmm(x, x.mT)
        b = torch.baddbmm(a, a, a, beta=w1, alpha=w2)  # bA + cA²
        x = torch.baddbmm(x, b, x, beta=w0, alpha=1.0)  # aX + (bA + cA²)X
    return x.mT if transpose else x


def _newton_schulz_settings(hp, K):
    """Per configuration: (ns_steps, coefficient schedule, reset steps) as hashable values, and the rows of
    each distinct setting (float-like settings arrive as ``[K, 1]`` columns, a preset name is shared)."""
    from pytorch_optimizer.optimizer.utils.matrix import get_newton_schulz_weights

    steps = [int(v) for v in hp["ns_steps"][:, 0].tolist()]
    if "ns_coeffs0" in hp:  # one (a, b, c) tuple per configuration
        coeffs = [((float(a), float(b), float(c)),) for a, b, c in
                  zip(*(hp[f"ns_coeffs{i}"][:, 0].tolist() for i in range(3)))]
    else:
        coeffs = [tuple(get_newton_schulz_weights(hp["ns_coeffs"]))] * K
    resets_keys = sorted(k for k in hp if k.startswith("ns_reset_steps"))
    if resets_keys:
        resets = [tuple(int(v) for v in row) for row in zip(*(hp[k][:, 0].tolist() for k in resets_keys))]
    else:
        resets = [tuple(hp.get("ns_reset_steps", ()))] * K
    rows: dict[tuple, list[int]] = {}
    for k, key in enumerate(zip(steps, coeffs, resets)):
        rows.setdefault(key, []).append(k)
    return rows


def _orthogonalise(update: torch.Tensor, hp) -> torch.Tensor:
    """The class's ``_orthogonalize`` of a ``[K, m, n]`` batch, each configuration with its own NS settings."""
    method = hp["ns_method"]
    dtype = NEWTON_SCHULZ_DTYPE[method]
    out = torch.empty_like(update, dtype=dtype)
    for (steps, schedule, resets), rows in _newton_schulz_settings(hp, update.shape[0]).items():
        coefficients = [schedule[min(i, len(schedule) - 1)] for i in range(steps)]
        index = torch.tensor(rows, device=update.device)
        part = update.index_select(0, index)
        if method == "gram_newton_schulz":  # the library's restarted variant, over the batch as it is
            from pytorch_optimizer.optimizer.utils.matrix import zero_power_via_gram_newton_schulz

            result = zero_power_via_gram_newton_schulz(part, num_steps=steps, weights=coefficients, dtype=dtype,
                                                       reset_steps=resets)
        else:
            result = newton_schulz(part, coefficients, dtype)
        out.index_copy_(0, index, result)
    return out


def adjusted_lr_factor(shape, use_adjusted_lr: bool) -> float:
    """Muon's shape scale of the orthogonalised update of an (m × n…) weight, n = the product of the remaining
    dimensions: √max(1, m/n) (Jordan et al.'s), or 0.2·√max(m, n) with ``use_adjusted_lr`` (Moonlight's, Liu et
    al. 2025, which matches AdamW's update RMS)."""
    rows, columns = shape[0], math.prod(shape[1:])
    return 0.2 * math.sqrt(max(rows, columns)) if use_adjusted_lr else math.pow(max(1.0, rows / columns), 0.5)


@_rule("muon", needs=[LAYERS])
class _Muon:
    """Muon (pytorch_optimizer.Muon, optbench's parameter groups: tensors with ndim ≥ 2 on Muon, the rest on the
    class's AdamW group; Jordan et al. 2024). Decay first, with the group's λ (``weight_decay`` on Muon,
    ``adamw_wd`` on AdamW) and lr: decoupled x ← x(1 − ηλ), or coupled g ← g + λx. On a matrix W (a kernel
    viewed as m × n…): b ← μb + (1 − μ)g; u = g + μ(b − g) (Nesterov) or b; O = NS(u) (:func:`newton_schulz`,
    ``ns_steps`` iterations); W ← W − η·s·O with s = :func:`adjusted_lr_factor`. On every other tensor, AdamW
    with ``adamw_lr``, ``adamw_betas``, ``adamw_eps``: m ← β₁m + (1 − β₁)g, v ← β₂v + (1 − β₂)g²,
    x ← x − η_a/(1 − β₁ᵗ) · m/(√v/√(1 − β₂ᵗ) + ε). Under an lr schedule both groups' rates scale by the
    schedule's factor (as engines.loop.set_scheduled_lr does). An analytic problem (one vector) is all AdamW."""

    slots = staticmethod(lambda hp: 2)  # a vector is in the AdamW group: exp_avg, exp_avg_sq (a matrix: 1)

    @staticmethod
    def init(x, hp):
        return {"m": _zeros(x), "v": _zeros(x), "buf": _zeros(x), "base_lr": hp["lr"].clone()}

    @staticmethod
    def step(x, g, state, hp, t):
        layout = state["layout"]
        muon_lr = hp["lr"]
        adamw_lr = hp["adamw_lr"] * (muon_lr / state["base_lr"])  # scaled by a schedule's factor (1 without one)
        decoupled = hp["weight_decouple"]
        beta1, beta2 = hp["adamw_betas0"], hp["adamw_betas1"]
        bc1, bc2_sqrt = 1 - beta1 ** t, (1 - beta2 ** t).sqrt()
        columns = zip(_tensors(x, layout), _tensors(g, layout), _tensors(state["buf"], layout),
                      _tensors(state["m"], layout), _tensors(state["v"], layout))
        for (p, shape), (grad, _), (buf, _), (m, _), (v, _) in columns:
            matrix = len(shape) >= 2
            lr, wd = (muon_lr, hp["weight_decay"]) if matrix else (adamw_lr, hp["adamw_wd"])
            if decoupled:
                p.mul_(1.0 - wd * lr)
            else:
                grad = grad + wd * p
            if matrix:
                momentum = hp["momentum"]
                buf.add_((1 - momentum) * (grad - buf))  # buf.lerp_(g, 1 − μ)
                update = grad + momentum * (buf - grad) if hp["nesterov"] else buf
                rows = shape[0]
                ortho = _orthogonalise(update.reshape(-1, rows, update.shape[-1] // rows), hp)
                factor = adjusted_lr_factor(shape, hp["use_adjusted_lr"])
                p.sub_((lr * factor) * ortho.reshape(p.shape).to(p.dtype))
            else:
                m.add_((1 - beta1) * (grad - m))
                v.add_((1 - beta2) * (grad * grad - v))
                p.sub_(lr / bc1 * m / (v.sqrt() / bc2_sqrt + hp["adamw_eps"]))


# ---- Shampoo --------------------------------------------------------------------------------------------

def matmul_each(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """``a[k] @ b[k]`` for each configuration k, by one 2-D matrix product each, as the class multiplies its one
    tensor's matrices: a batched ``bmm`` of small matrices (n < 8 here) rounds differently from ``mm`` (another
    summation kernel), and Shampoo's nearly singular H amplifies that last bit step after step (momentum > 0 with
    collinear, e.g. clipped, gradients: 1e-16 → 1e-5 within 8 steps)."""
    return torch.stack([x @ y for x, y in zip(a.unbind(0), b.unbind(0))])


def inverse_root(matrix: torch.Tensor, power: float) -> torch.Tensor:
    """M^(−1/power) of a batch of symmetric positive semi-definite matrices by SVD, U·diag(σ^(−1/power))·Vᵀ
    (pytorch_optimizer's ``compute_power_svd``; float32 unless the input is float64)."""
    dtype = torch.float64 if matrix.dtype == torch.float64 else torch.float32
    # a configuration that has diverged (its run has ended) must not stop the SVD of the others: NaN for it
    finite = torch.isfinite(matrix).all(dim=-1).all(dim=-1)[:, None, None]
    eye = torch.eye(matrix.shape[-1], dtype=matrix.dtype, device=matrix.device)
    u, s, vh = torch.linalg.svd(torch.where(finite, matrix, eye).to(dtype), full_matrices=False)
    root = matmul_each(u * s.pow(-1.0 / power).unsqueeze(-2), vh).to(matrix.dtype)
    return torch.where(finite, root, math.nan)


@_rule("shampoo", needs=[LAYERS])
class _Shampoo:
    """Shampoo (pytorch_optimizer.Shampoo; Gupta, Koren & Singer 2018, Algorithm 2), per parameter tensor G of
    order k (a vector: k = 1, full-matrix AdaGrad): with momentum μ > 0, G ← G + μ(B − G) where B is the last
    preconditioned step (the raw gradient at the first step); then decay (decoupled x ← x(1 − λη), η unscaled
    by ``fixed_decay``, or coupled G ← G + λx); for each dimension i, H_i ← H_i + G₍ᵢ₎G₍ᵢ₎ᵀ (G₍ᵢ₎ the mode-i
    unfolding; H_i starts at ε_m·I, ε_m = ``matrix_eps``), every ``preconditioning_compute_steps`` steps
    P_i = H_i^(−1/2k) (:func:`inverse_root`; zero until first computed), and the step is
    x ← x − η·G ×₁ P₁ ×₂ P₂ … ×ₖ P_k (mode products), which becomes B."""

    # parameter-sized: momentum_buffer (the class stores the last step in it with or without momentum); and per
    # tensor dimension of size n two n × n matrices (pre_cond_i, inv_pre_cond_i): on a [d] vector 1 + 2d slots
    slots = staticmethod(lambda hp: 1)
    dim_slots = staticmethod(lambda hp, dim: 1 + 2 * dim)

    @staticmethod
    def init(x, hp):
        return {"buf": None, "pre": None, "inv": None}

    @staticmethod
    def step(x, g, state, hp, t):
        layout = state["layout"]
        K = x.shape[0]
        if state["pre"] is None:
            state["buf"] = g.clone()  # the class's momentum_buffer starts as the first gradient
            eye = [[torch.eye(n, dtype=x.dtype, device=x.device) for n in shape] for shape in layout.shapes]
            state["pre"] = [[hp["matrix_eps"][:, :, None] * e for e in row] for row in eye]
            state["inv"] = [[torch.zeros(K, n, n, dtype=x.dtype, device=x.device) for n in shape]
                            for shape in layout.shapes]
        momentum = hp["momentum"]
        # grad.lerp_(momentum_buffer, weight=μ): torch's lerp is g + μ(B − g) for μ < ½ but B − (B − g)(1 − μ) from
        # ½ on, which rounds differently; Shampoo's feedback of B through a nearly singular H amplifies that
        g = torch.where(momentum > 0.0, torch.lerp(g, state["buf"], momentum), g)
        wd = hp["weight_decay"]
        if hp["weight_decouple"]:
            x.mul_(1.0 - wd * (1.0 if hp["fixed_decay"] else hp["lr"]))
        else:
            g = g + wd * x
        due = (t % hp["preconditioning_compute_steps"] == 0)[:, :, None]  # [K, 1, 1]: P_i recomputed this step
        any_due = bool(due.any())
        steps = []
        for l, (grad, shape) in enumerate(_tensors(g, layout)):
            order = len(shape)
            statistics = grad.reshape(K, *shape)
            step = statistics
            for i, n in enumerate(shape):
                unfolded = statistics.movedim(i + 1, 1).reshape(K, n, -1)
                # H_i += G₍ᵢ₎G₍ᵢ₎ᵀ, one addmm per configuration as the class's pre_cond.addmm_ (see matmul_each)
                state["pre"][l][i] = torch.stack([torch.addmm(h, u, u.T) for h, u in
                                                  zip(state["pre"][l][i].unbind(0), unfolded.unbind(0))])
                if any_due:
                    state["inv"][l][i] = torch.where(due, inverse_root(state["pre"][l][i], 2 * order),
                                                     state["inv"][l][i])
                # the mode-i product with P_i, in the class's order of transposes and products (the SVD of an
                # ill-conditioned H_i would amplify any other rounding of the step it accumulates next)
                step = step.transpose(1, i + 1).contiguous()
                transposed = step.shape
                step = step.view(K, n, -1)
                if i == order - 1:
                    step = matmul_each(step.mT, state["inv"][l][i]).reshape(K, *shape)
                else:
                    step = matmul_each(state["inv"][l][i], step).view(transposed)
            steps.append(step.reshape(K, -1))
        update = torch.cat(steps, dim=-1) if len(steps) > 1 else steps[0]
        state["buf"] = update
        x.sub_(hp["lr"] * update)


# ---- Prodigy --------------------------------------------------------------------------------------------

@_rule("prodigy", needs=[LAYERS, JOINT])
class _Prodigy:
    """Prodigy (pytorch_optimizer.Prodigy; Mishchenko & Defazio 2023, Algorithm 1 with Adam), lr a multiplier
    of the distance estimate d (d₀ = ``d0``). At step t (from 1), with bias correction β = (1 − β₁ᵗ)/√(1 − β₂ᵗ)
    when ``bias_correction`` else 1, β₃ = ``beta3`` or √β₂, and dη = d·lr/β:
    r ← β₃r + (d/d₀)·dη·⟨g, x₀ − x⟩; m ← β₁m + d(1 − β₁)g; v ← β₂v + d²(1 − β₂)g²;
    s ← β₃s + (d/d₀)·(d if ``safeguard_warmup`` else dη)·g; then, unless ‖s‖₁ = 0 (no update at all),
    d̂ = d_coef·r/‖s‖₁, d ← max(d, d̂) while d = d₀ (the class's only growth test), d_max ← max(d_max, d̂),
    d ← min(d_max, d·growth_rate); decoupled decay x ← x(1 − λ(1 if ``fixed_decay`` else dη)) and
    x ← x − dη·m/(√v + d·ε) (ε None: x ← x − dη·atan2(m, √v)). r and ‖s‖₁ are accumulated one parameter tensor
    at a time in the class's scalar dtype (float32 unless the default dtype is float64), as the class does; d and
    d_max are ``[K, 1]`` tensors in the run's dtype where the class keeps Python floats (the same in float64)."""

    slots = staticmethod(lambda hp: 4)  # s, p0, exp_avg, exp_avg_sq

    @staticmethod
    def init(x, hp):
        column = torch.zeros_like(x[:, :1])
        scalar = _scalar_dtype()
        return {"s": _zeros(x), "x0": x.clone(), "m": _zeros(x), "v": _zeros(x), "d": column + hp["d0"],
                "d_max": column + hp["d0"], "numerator": torch.zeros_like(column, dtype=scalar)}

    @staticmethod
    def step(x, g, state, hp, t):
        layout = state["layout"]
        beta1, beta2, d0 = hp["beta1"], hp["beta2"], hp["d0"]
        beta3 = hp["beta3"] if isinstance(hp["beta3"], torch.Tensor) else beta2.sqrt()
        if hp["bias_correction"]:
            correction = (1 - beta1 ** t) / (1 - beta2 ** t).sqrt()
        else:
            correction = torch.ones_like(beta1)
        d = state["d"]
        d_lr = d * hp["lr"] / correction
        numerator = state["numerator"]
        scalar = numerator.dtype
        numerator.mul_(beta3.to(scalar))
        alpha = ((d / d0) * d_lr).to(scalar)
        s_alpha = (d / d0) * (d if hp["safeguard_warmup"] else d_lr)
        denominator = torch.zeros_like(numerator)
        parts = zip(_tensors(g, layout), _tensors(state["x0"] - x, layout), _tensors(state["s"], layout))
        for (grad, _), (moved, _), (s, _) in parts:
            dot = (grad * moved).sum(-1, keepdim=True).to(scalar)
            # the class's add_(dot, alpha=…) is one fused multiply-add in its scalar dtype: the product of two
            # float32 values is exact in float64, so rounding the float64 sum once reproduces it
            numerator.copy_((numerator.double() + alpha.double() * dot.double()).to(scalar))
            s.mul_(beta3).add_(s_alpha * grad)
            denominator.add_(s.abs().sum(-1, keepdim=True).to(scalar))
        state["m"].mul_(beta1).add_(d * (1.0 - beta1) * g)
        state["v"].mul_(beta2).add_(d * d * (1.0 - beta2) * g * g)
        moving = denominator != 0
        d_hat = (hp["d_coef"].to(scalar) * numerator / denominator).to(x.dtype)
        grown = torch.where(d == d0, torch.maximum(d, d_hat), d)
        d_max = torch.maximum(state["d_max"], d_hat)
        new_d = torch.minimum(d_max, grown * hp["growth_rate"])
        state["d"] = torch.where(moving, new_d, d)
        state["d_max"] = torch.where(moving, d_max, state["d_max"])
        d = state["d"]
        decayed = x
        if hp["weight_decouple"]:  # coupled decay would change g after the class has used it: no effect
            decayed = x * (1.0 - hp["weight_decay"] * (1.0 if hp["fixed_decay"] else d_lr))
        denom = state["v"].sqrt()
        if hp["eps"] is None:
            stepped = decayed - d_lr * state["m"].atan2(denom)
        else:
            stepped = decayed - d_lr * state["m"] / (denom + d * hp["eps"])
        x.copy_(torch.where(moving, stepped, x))
