"""Fused updates for the batched network engine: K configurations' parameters, one fused kernel per configuration.

The batched network engine holds each parameter as a ``[K, *shape]`` tensor. A generic batched rule
(:mod:`optbench.engines.batched_rules`) updates it with a dozen elementwise passes and as many temporaries,
which at K = 8 cost more than the forward and backward passes of a small MLP. torch's fused optimizer kernels
(``torch._fused_adam_``, ``torch._fused_adamw_``: what ``torch.optim.Adam(fused=True)`` calls; on the CPU
vectorised, one pass over parameter, gradient and state) take scalar hyperparameters, so the update runs one
fused call per configuration ``k`` over the row views ``p[k]`` of every parameter: K calls per step, each one
pass, no temporaries, and each configuration keeps its own learning rate, betas, ε and weight decay.

The formulas are torch.optim's (Kingma & Ba 2015; AdamW: Loshchilov & Hutter 2019, decay x ← x(1 − ηλ) before
the Adam step): d = g (+ λx for Adam); m ← β₁m + (1 − β₁)d; v ← β₂v + (1 − β₂)d² (AMSGrad: its running
maximum); x ← x − η/(1 − β₁ᵗ) · m / (√v / √(1 − β₂ᵗ) + ε). tests/test_engine_contract.py checks them against
the loop engine with ``torch.optim`` objects as for every rule.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

FUSED_KERNELS = {"adam": "_fused_adam_", "adamw": "_fused_adamw_"}  # batched rule → torch's fused kernel
HYPERPARAMETERS = frozenset({"lr", "betas", "eps", "weight_decay", "amsgrad"})  # what the kernels take


class FusedUpdate:
    """``step(grads)`` updates the ``[K, n]`` parameter tensors ``columns`` in place with one fused kernel call
    per configuration (``optimizers[k]``'s hyperparameters), state kept per parameter tensor."""

    def __init__(self, kernel: str, optimizers: Sequence[Any], columns: Sequence[torch.Tensor]):
        self.kernel = getattr(torch, kernel)
        self.hyperparams = []
        for optimizer in optimizers:
            hp = optimizer.hyperparams
            beta1, beta2 = hp["betas"]
            self.hyperparams.append(dict(lr=float(hp["lr"]), beta1=float(beta1), beta2=float(beta2),
                                         weight_decay=float(hp["weight_decay"]), eps=float(hp["eps"]),
                                         amsgrad=bool(hp["amsgrad"]), maximize=False))
        self.amsgrad = self.hyperparams[0]["amsgrad"]
        K = len(optimizers)
        states = [[torch.zeros_like(c) for c in columns] for _ in range(3 if self.amsgrad else 2)]
        self.rows = [[c[k] for c in columns] for k in range(K)]  # views: the kernel writes into the [K, n] tensors
        self.state_rows = [[[s[k] for s in state] for k in range(K)] for state in states]
        # the step count t, per configuration and tensor (as torch.optim keeps it: a float32 scalar tensor)
        self.steps = [[torch.zeros((), dtype=torch.float32, device=columns[0].device) for _ in columns]
                      for _ in range(K)]

    def step(self, grads: Sequence[torch.Tensor]) -> None:
        grads = [g.contiguous() for g in grads]
        for k, hp in enumerate(self.hyperparams):
            torch._foreach_add_(self.steps[k], 1)
            exp_avgs, exp_avg_sqs = self.state_rows[0][k], self.state_rows[1][k]
            self.kernel(self.rows[k], [g[k] for g in grads], exp_avgs, exp_avg_sqs,
                        self.state_rows[2][k] if self.amsgrad else [], self.steps[k], **hp)


def fused_update(rule: str, optimizers: Sequence[Any], columns: Sequence[torch.Tensor]) -> FusedUpdate | None:
    """The fused update of ``rule`` for these configurations, or None (the engine then runs the generic rule)
    where torch has no fused kernel for it, for these hyperparameters, or on this device."""
    kernel = FUSED_KERNELS.get(rule)
    if kernel is None or not hasattr(torch, kernel):
        return None
    if any(set(o.hyperparams) != HYPERPARAMETERS for o in optimizers):
        return None
    if columns[0].device.type not in ("cpu", "cuda") or columns[0].dtype not in (torch.float32, torch.float64):
        return None
    return FusedUpdate(kernel, optimizers, columns)
