"""Optimizers that no library ships, written as ``torch.optim.Optimizer`` subclasses.

Each calls its closure itself. Besides the usual ``closure()`` (zero grads, loss, backward), they use
``closure.loss_at(tensors)`` when the closure offers it: the loss at other parameter values, evaluated
functionally without touching ``.grad`` (optbench's engines provide it). On a noisy problem both are oracles
of the step's sampled function f̃_t(x) = f(x) + ⟨ξ_t, x − x_t⟩ (optbench.problems.analytic: one sample ξ_t
per step), so SPSA's loss differences and the forward gradient's JVP carry the same noise as a gradient;
Newton's Hessian of it is the exact ∇²f.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch.optim import Optimizer


def _loss_at(closure: Callable, params: list[torch.Tensor], values: list[torch.Tensor]) -> torch.Tensor:
    """Loss with ``params`` replaced by ``values``."""
    if hasattr(closure, "loss_at"):
        return closure.loss_at(values)
    saved = [p.detach().clone() for p in params]
    with torch.no_grad():
        for p, v in zip(params, values):
            p.copy_(v)
        loss = closure()
        for p, s in zip(params, saved):
            p.copy_(s)
    return loss.detach()


class Newton(Optimizer):
    """Newton's method with the exact Hessian of the closure's loss over all parameters (flattened).

    x ← x − η (H + λI)⁻¹ g, with H = ∇²f(x) from double backward and g the (possibly noisy) gradient the
    closure leaves in ``.grad``. When H + λI is singular the step uses the least-squares solution.
    Cost: O(d²) memory and O(d³) time per step; for small problems only.
    """

    def __init__(self, params, lr: float = 1.0, damping: float = 0.0):
        if lr <= 0:
            raise ValueError(f"Invalid learning rate: {lr}")
        if damping < 0:
            raise ValueError(f"Invalid damping: {damping}")
        super().__init__(params, {"lr": lr, "damping": damping})

    @torch.no_grad()
    def step(self, closure=None):
        if closure is None:
            raise RuntimeError("Newton needs a closure that returns the loss.")
        with torch.enable_grad():
            loss = closure()
        for group in self.param_groups:
            params = [p for p in group["params"] if p.grad is not None]
            if not params:
                continue
            shapes = [p.shape for p in params]
            sizes = [p.numel() for p in params]
            flat = torch.cat([p.detach().reshape(-1) for p in params])
            grad = torch.cat([p.grad.reshape(-1) for p in params])

            def f(vec, shapes=shapes, sizes=sizes, params=params):
                values = [v.reshape(s) for v, s in zip(vec.split(sizes), shapes)]
                return _loss_at(closure, params, values)

            with torch.enable_grad():
                hessian = torch.autograd.functional.hessian(f, flat)
            hessian = hessian + group["damping"] * torch.eye(flat.numel(), dtype=flat.dtype, device=flat.device)
            direction = _solve(hessian, grad)
            offset = 0
            for p, n in zip(params, sizes):
                p.add_(direction[offset: offset + n].reshape(p.shape), alpha=-group["lr"])
                offset += n
        return loss


def _solve(matrix: torch.Tensor, rhs: torch.Tensor) -> torch.Tensor:
    """Solve ``matrix @ x = rhs``; least squares when the matrix is singular."""
    solution, info = torch.linalg.solve_ex(matrix, rhs)
    if bool(info.any()) or not bool(torch.isfinite(solution).all()):
        solution = torch.linalg.lstsq(matrix, rhs.unsqueeze(-1)).solution.squeeze(-1)
    return solution


class SPSA(Optimizer):
    """Simultaneous perturbation stochastic approximation (Spall 1992), a zero-order method.

    At step t (from 1): a_t = η / t^α, c_t = c / t^γ, Δ with independent ±1 entries, and
    ĝ = (f(x + c_tΔ) − f(x − c_tΔ)) / (2 c_t) · Δ (since 1/Δ_i = Δ_i); then x ← x − a_t ĝ.
    Two loss evaluations per step and no gradient. ``seed`` fixes the perturbations.
    """

    def __init__(self, params, lr: float = 1e-3, c: float = 1e-2, alpha: float = 0.0, gamma: float = 0.0,
                 seed: int = 0):
        if lr <= 0 or c <= 0:
            raise ValueError(f"Invalid lr or c: {lr}, {c}")
        super().__init__(params, {"lr": lr, "c": c, "alpha": alpha, "gamma": gamma})
        self.generator = torch.Generator().manual_seed(seed)
        self.t = 0

    @torch.no_grad()
    def step(self, closure=None):
        if closure is None:
            raise RuntimeError("SPSA needs a closure that returns the loss.")
        self.t += 1
        loss = None
        for group in self.param_groups:
            params = list(group["params"])
            a_t = group["lr"] / self.t ** group["alpha"]
            c_t = group["c"] / self.t ** group["gamma"]
            deltas = [
                (torch.randint(0, 2, p.shape, generator=self.generator) * 2 - 1).to(p.dtype).to(p.device)
                for p in params
            ]
            plus = _loss_at(closure, params, [p + c_t * d for p, d in zip(params, deltas)])
            minus = _loss_at(closure, params, [p - c_t * d for p, d in zip(params, deltas)])
            slope = (plus - minus) / (2 * c_t)
            for p, d in zip(params, deltas):
                p.add_(slope * d, alpha=-a_t)
            loss = 0.5 * (plus + minus)
        return loss


class ForwardGradient(Optimizer):
    """Forward gradient descent (Baydin et al. 2022, "Gradients without Backpropagation").

    v ~ N(0, I) over all parameters; the directional derivative ∇f·v comes from one forward-mode JVP
    (no backward pass); ĝ = (∇f·v) v is an unbiased estimate of ∇f; x ← x − η ĝ. ``seed`` fixes v.
    """

    def __init__(self, params, lr: float = 1e-3, seed: int = 0):
        if lr <= 0:
            raise ValueError(f"Invalid learning rate: {lr}")
        super().__init__(params, {"lr": lr})
        self.generator = torch.Generator().manual_seed(seed)

    @torch.no_grad()
    def step(self, closure=None):
        if closure is None or not hasattr(closure, "loss_at"):
            raise RuntimeError("ForwardGradient needs a closure with loss_at(tensors) (optbench provides it).")
        loss = None
        for group in self.param_groups:
            params = list(group["params"])
            tangents = [torch.randn(p.shape, generator=self.generator, dtype=p.dtype).to(p.device)
                        for p in params]
            primals = tuple(p.detach() for p in params)
            loss, slope = torch.func.jvp(lambda *v: closure.loss_at(list(v)), primals, tuple(tangents))
            for p, v in zip(params, tangents):
                p.add_(slope * v, alpha=-group["lr"])
        return loss
