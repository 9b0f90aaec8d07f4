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

from optbench.engines.batched_rules import _rule


def _zeros(x):
    return torch.zeros_like(x)


def _tensors(x, layout):
    """Column slices ``[K, size]`` of ``x`` per parameter tensor of the layout (views), with each tensor's shape."""
    return list(zip(x.split(layout.sizes, dim=-1), layout.shapes))


# ---- MADGRAD --------------------------------------------------------------------------------------------

@_rule("madgrad")
class _MADGRAD:
    """MADGRAD (pytorch_optimizer.MADGRAD; Defazio & Jelassi 2021, "Adaptive Gradient Methods with Dual
    Averaging: MADGRAD", arXiv:2101.11075, Algorithm 1): with c = 1 − μ (μ = ``momentum``) and the dual-averaging
    weight λ_t = η√t, s ← s + λ_t g, ν ← ν + λ_t g², z = x₀ − s/(∛ν + ε), x ← (1 − c)x + cz (x₀ the starting
    point). Deviations from the paper: the library uses η + ε in place of η (in λ_t and in the decay; the authors'
    code does the same), and with μ = 0 rebuilds x₀ each step as x + s/(∛ν + ε) with the previous s, ν (equal to
    the paper's x₀ in exact arithmetic, and what the authors' code does; with decoupled decay that x₀ carries the
    decay, x₀ ← x₀ − (η + ε)λx each step). Coupled decay g ← g + λx (the default,
    ``weight_decouple=False``) is the authors'; decoupled x ← x − (η + ε)λx_prev after the step is the library's.
    ε = 0 makes a zero ∛ν infinite (the coordinate does not move)."""

    # grad_sum_sq, s (, x0 with momentum); the class also keeps its step counter k as an int64 [1] tensor in its
    # state, 8 bytes: one float64 slot (in float32 the declaration counts 4 of its 8 bytes)
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
