"""Paper-faithful optimizers, where pytorch_optimizer's class differs from the paper it cites.

Each class implements its paper's algorithm as printed, per parameter tensor (a "layer"), and states in its
docstring the formula, the defaults, the reference and every convention the paper leaves open. The registry
entries ``lamb-paper``, ``sm3-paper`` and ``adafactor-paper`` build them; the library entries (``lamb``,
``sm3``, ``adafactor``) stay as they are and say in their ``deviations`` how they differ.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch


def _rms(x: torch.Tensor) -> torch.Tensor:
    """Root mean square RMS(x) = ‖x‖₂ / √numel(x), a 0-d tensor (no host sync)."""
    return torch.linalg.vector_norm(x) / math.sqrt(max(x.numel(), 1))


def _loss_of(closure: Callable[[], torch.Tensor] | None) -> torch.Tensor | None:
    if closure is None:
        return None
    with torch.enable_grad():
        return closure()


class LambPaper(torch.optim.Optimizer):
    r"""LAMB as in Algorithm 2 of You et al. 2020 (arXiv:1904.00962), per parameter tensor x:

    .. math::
        m_t = β_1 m_{t-1} + (1-β_1) g_t,\quad v_t = β_2 v_{t-1} + (1-β_2) g_t^2,
        \hat m_t = m_t/(1-β_1^t),\quad \hat v_t = v_t/(1-β_2^t),\quad r_t = \hat m_t/(\sqrt{\hat v_t} + ε),
        x_{t+1} = x_t - η\,\frac{φ(‖x_t‖)}{‖r_t + λx_t‖}\,(r_t + λx_t)

    with φ(z) = z, so every step moves each tensor by exactly η‖x_t‖ (the weight decay λ sits inside the trust
    ratio). The paper leaves the ratio undefined when ‖x_t‖ = 0 or ‖r_t + λx_t‖ = 0; like the authors'
    TensorFlow implementation it is 1 there, so a zero-initialised tensor takes the plain step η(r_t + λx_t).

    Defaults: η = 1e-3, (β₁, β₂) = (0.9, 0.999), ε = 1e-6, λ = 0 (the paper trains BERT with λ = 0.01).
    """

    def __init__(self, params, lr: float = 1e-3, betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-6,
                 weight_decay: float = 0.0):
        if not lr > 0:
            raise ValueError(f"Invalid learning rate: {lr}")
        if not all(0 <= b < 1 for b in betas):
            raise ValueError(f"Invalid betas: {betas}")
        if eps < 0 or weight_decay < 0:
            raise ValueError(f"Invalid eps or weight_decay: {eps}, {weight_decay}")
        super().__init__(params, {"lr": lr, "betas": tuple(betas), "eps": eps, "weight_decay": weight_decay})

    @torch.no_grad()
    def step(self, closure=None):
        loss = _loss_of(closure)
        for group in self.param_groups:
            beta1, beta2 = group["betas"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                g = p.grad
                state = self.state[p]
                if not state:
                    state["step"] = 0
                    state["exp_avg"] = torch.zeros_like(p)
                    state["exp_avg_sq"] = torch.zeros_like(p)
                state["step"] += 1
                t = state["step"]
                m, v = state["exp_avg"], state["exp_avg_sq"]
                m.mul_(beta1).add_(g, alpha=1 - beta1)
                v.mul_(beta2).addcmul_(g, g, value=1 - beta2)
                r = (m / (1 - beta1**t)) / ((v / (1 - beta2**t)).sqrt() + group["eps"])
                update = r.add(p, alpha=group["weight_decay"])
                weight_norm, update_norm = torch.linalg.vector_norm(p), torch.linalg.vector_norm(update)
                trust_ratio = torch.where((weight_norm > 0) & (update_norm > 0), weight_norm / update_norm,
                                          torch.ones_like(weight_norm))
                p.sub_(update * (group["lr"] * trust_ratio))
        return loss


class SM3Paper(torch.optim.Optimizer):
    r"""SM3-II of Anil et al. 2019 (arXiv:1901.11150), with the cover of a tensor's slices along each dimension.

    A tensor of shape (n₁, …, n_k) keeps one accumulator μ⁽ⁱ⁾ of length nᵢ per dimension; entry j lies in the
    k slices r ∋ j (one per dimension). Each step, with β = 0 (the paper's algorithm):

    .. math::
        ν_t(j) = \min_{r ∋ j} μ_{t-1}(r) + g_t(j)^2,\quad μ_t(r) = \max_{j ∈ r} ν_t(j),\quad
        u_t = g_t / \sqrt{ν_t + ε},\quad x_{t+1} = x_t - η u_t

    (ε = 1e-30 stands for the paper's 0/0 = 0). For a vector every slice is one entry, and SM3 is AdaGrad.
    β > 0 replaces the sum by the exponential average that the authors' TensorFlow implementation mentions,
    in the same SM3-II form: ν_t(j) = β min_{r∋j} μ_{t-1}(r) + (1 − β) g_t(j)², μ_t(r) = max_{j∈r} ν_t(j): the
    accumulator is replaced each step, so it can decrease (for a vector it is RMSprop's average). Momentum, as
    in that implementation: m_t = μ m_{t-1} + (1 − μ) u_t and x_{t+1} = x_t − η m_t.

    Defaults: η = 0.1, μ = 0, β = 0, ε = 1e-30.
    """

    def __init__(self, params, lr: float = 0.1, momentum: float = 0.0, beta: float = 0.0, eps: float = 1e-30):
        if not lr > 0:
            raise ValueError(f"Invalid learning rate: {lr}")
        if not (0 <= momentum < 1 and 0 <= beta < 1 and eps >= 0):
            raise ValueError(f"Invalid momentum, beta or eps: {momentum}, {beta}, {eps}")
        super().__init__(params, {"lr": lr, "momentum": momentum, "beta": beta, "eps": eps})

    @staticmethod
    def _accumulators(p: torch.Tensor) -> list[torch.Tensor]:
        """One accumulator per dimension, shaped to broadcast against p: [1]*i + [nᵢ] + [1]*(k−1−i)."""
        if p.ndim == 0:
            return [torch.zeros_like(p)]
        return [torch.zeros([1] * i + [n] + [1] * (p.ndim - 1 - i), dtype=p.dtype, device=p.device)
                for i, n in enumerate(p.shape)]

    @torch.no_grad()
    def step(self, closure=None):
        loss = _loss_of(closure)
        for group in self.param_groups:
            beta, momentum = group["beta"], group["momentum"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                g = p.grad
                state = self.state[p]
                if not state:
                    state["accumulators"] = self._accumulators(p)
                    if momentum > 0:
                        state["momentum_buffer"] = torch.zeros_like(p)
                accumulators = state["accumulators"]
                covered = accumulators[0]
                for acc in accumulators[1:]:
                    covered = torch.minimum(covered, acc)  # min over the slices that contain each entry
                nu = covered.mul(beta).expand_as(g) + (1 - beta) * g * g if beta > 0 else covered + g * g
                for i, acc in enumerate(accumulators):
                    others = [d for d in range(p.ndim) if d != i]
                    acc.copy_(nu.amax(dim=others, keepdim=True) if others else nu)
                update = g / (nu + group["eps"]).sqrt()
                if momentum > 0:
                    buffer = state["momentum_buffer"]
                    buffer.mul_(momentum).add_(update, alpha=1 - momentum)
                    update = buffer
                p.sub_(update, alpha=group["lr"])
        return loss


class AdafactorPaper(torch.optim.Optimizer):
    r"""Adafactor as in Algorithms 4 (matrices) and 5 (vectors) of Shazeer & Stern 2018 (arXiv:1804.04235),
    with relative step sizes (§8), update clipping (§6) and the increasing decay β̂₂ₜ = 1 − t^c (§7.2):

    .. math::
        ρ_t = \min(10^{-2}, 1/\sqrt t),\quad α_t = \max(ε_2, \mathrm{RMS}(X_{t-1}))\,ρ_t,\quad
        β̂_{2t} = 1 - t^{c},\\
        \text{matrix: } R_t = β̂_{2t} R_{t-1} + (1-β̂_{2t})(G_t^2 + ε_1)1_m,\quad
        C_t = β̂_{2t} C_{t-1} + (1-β̂_{2t})1_n^⊤(G_t^2 + ε_1),\quad \hat V_t = R_t C_t / (1_n^⊤ R_t),\\
        \text{vector: } \hat V_t = β̂_{2t} \hat V_{t-1} + (1-β̂_{2t})(G_t^2 + ε_1),\\
        U_t = G_t/\sqrt{\hat V_t},\quad \hat U_t = U_t / \max(1, \mathrm{RMS}(U_t)/d),\quad
        X_t = X_{t-1} - α_t \hat U_t

    Tensors with more than two dimensions are factored over their last two, batched over the rest. Nothing
    caps β̂₂ₜ. ``lr`` given replaces ρ_t by that constant (for learning-rate sweeps; the paper has no lr).
    ``beta1`` > 0 adds the first moment of the paper's §7.1 experiments, over the scaled, clipped step as in
    the authors' tensor2tensor code: M_t = β₁ M_{t−1} + (1 − β₁) α_t Û_t, X_t = X_{t−1} − M_t.

    Defaults: the paper's Adafactor: ρ_t relative, β₁ = 0, c = −0.8, d = 1, ε₁ = 1e-30, ε₂ = 1e-3.
    """

    def __init__(self, params, lr: float | None = None, beta1: float = 0.0, decay_rate: float = -0.8,
                 clip_threshold: float = 1.0, eps1: float = 1e-30, eps2: float = 1e-3):
        if lr is not None and not lr > 0:
            raise ValueError(f"Invalid learning rate: {lr}")
        if not (0 <= beta1 < 1 and decay_rate < 0 and clip_threshold > 0 and eps1 >= 0 and eps2 >= 0):
            raise ValueError("Invalid beta1, decay_rate, clip_threshold, eps1 or eps2")
        super().__init__(params, {"lr": lr, "beta1": beta1, "decay_rate": decay_rate,
                                  "clip_threshold": clip_threshold, "eps1": eps1, "eps2": eps2})

    @torch.no_grad()
    def step(self, closure=None):
        loss = _loss_of(closure)
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is None:
                    continue
                g = p.grad
                state = self.state[p]
                factored = p.ndim >= 2
                if not state:
                    state["step"] = 0
                    if factored:
                        state["row"] = torch.zeros(p.shape[:-1], dtype=p.dtype, device=p.device)
                        state["col"] = torch.zeros(p.shape[:-2] + p.shape[-1:], dtype=p.dtype, device=p.device)
                    else:
                        state["exp_avg_sq"] = torch.zeros_like(p)
                    if group["beta1"] > 0:
                        state["exp_avg"] = torch.zeros_like(p)
                state["step"] += 1
                t = state["step"]
                rho = group["lr"] if group["lr"] is not None else min(1e-2, 1 / math.sqrt(t))
                alpha = _rms(p).clamp(min=group["eps2"]) * rho
                beta2 = 1 - t ** group["decay_rate"]
                squared = g * g + group["eps1"]
                if factored:
                    row, col = state["row"], state["col"]
                    row.mul_(beta2).add_(squared.sum(dim=-1), alpha=1 - beta2)
                    col.mul_(beta2).add_(squared.sum(dim=-2), alpha=1 - beta2)
                    v_hat = row.unsqueeze(-1) * col.unsqueeze(-2) / row.sum(dim=-1, keepdim=True).unsqueeze(-1)
                else:
                    v_hat = state["exp_avg_sq"].mul_(beta2).add_(squared, alpha=1 - beta2)
                u = g / v_hat.sqrt()
                u_hat = u / (_rms(u) / group["clip_threshold"]).clamp(min=1.0)
                update = alpha * u_hat
                if group["beta1"] > 0:
                    update = state["exp_avg"].mul_(group["beta1"]).add_(update, alpha=1 - group["beta1"])
                p.sub_(update)
        return loss
