"""Batched rule of pytorch_optimizer's Kron (PSGD with Kronecker-factored preconditioners) on a vector, whose K
trials the gallery ran side by side, one real object each.

Same contract as :mod:`optbench.engines.batched_rules` (registered into its ``RULES`` table; ``x`` and ``g`` are
``[K, d]``, float hyperparameters ``[K, 1]`` tensors). On a parameter with fewer than ``min_ndim_triangular``
dimensions (a vector: every analytic problem) the class's preconditioner is one diagonal factor, kept in float32
whatever the parameters' dtype; the rule keeps it the same way, operation for operation, with the class's own
einsum expressions given a configuration axis.

The class draws its probe vectors from torch's *global* generator; the engines seed that generator per run and
step (:mod:`optbench.engines.step_rng`), so the rule draws the same vectors from one generator per configuration
seeded alike (``SEEDS``). The class's matrix path, with triangular factors and a NumPy coin for rebalancing
them, is not mirrored (``VECTORS``): networks run the class on the loop engine.
"""

from __future__ import annotations

import torch

from optbench.engines.batched_rules import SEEDS, VECTORS, _rule
from optbench.engines.step_rng import step_seed
from optbench.errors import UsageError

PRECONDITION_LR = 0.1  # Kron's fixed precondition_lr
PRECONDITION_DTYPE = torch.float32  # Kron's default precondition_dtype (not settable from a spec)
EPS = torch.finfo(torch.bfloat16).tiny  # Kron.eps: the floor of the preconditioner update's normaliser
RMS_CLIP = 1.1  # the preconditioned step is scaled down to an RMS of at most this
RMS_EPS = 1e-6


def update_probability(step: int, fixed) -> torch.Tensor:
    """The class's chance of updating the preconditioner before its step ``step + 1``: ``fixed``, or the default
    schedule min(1, max(0.03, exp(−0.001(step − 500)))) in float32 (flat at 1 for the first 500 steps)."""
    if isinstance(fixed, torch.Tensor):  # a float setting: a column of the group, which needs one value
        values = fixed.reshape(-1).unique()
        if len(values) != 1:
            raise UsageError("kron: every configuration of one batched group needs the same "
                             "pre_conditioner_update_probability; run them with --engine loop.")
        fixed = float(values[0])
    if fixed is not None:
        return torch.tensor(float(fixed))
    prob = 1.0 * torch.exp(-0.001 * (torch.tensor(step, dtype=torch.float32) - 500))
    return prob.clamp_(min=0.03, max=1.0)


@_rule("kron", needs=[SEEDS, VECTORS])
class _Kron:
    """Kron (pytorch_optimizer.Kron; Li 2018, "Preconditioned Stochastic Gradient Descent", with the Kronecker
    factors of Li 2019, "Preconditioner on Matrix Lie Group for SGD", as in the PSGD Kron reference code) on a
    vector, where the preconditioner P = QᵀQ has one diagonal factor Q (started at 1). At step t (from 1), with
    μ = ``momentum``:

        m ← μm + (1 − μ)g,  m̂ = m/(1 − μᵗ) (in float32),
        when the preconditioner is updated (every ⌈1/p⌉-th step, p the update probability: 1 for the first
        500 steps by default): v ~ N(0, I) (float32), a = Q·h, b = v/Q with h = m̂ (g with
        ``momentum_into_precondition_update=False``), Q ← Q − 0.1·(a² − b²)·Q / (max|a² + b²| + tiny),
        u = Q·Q·m̂,  u ← u·min(1, 1.1/(RMS(u) + 1e-6)),  x ← x − ηu.

    Deviations from the paper: the probe v is the whitening noise of the "gradient/noise pair" form of the
    preconditioner fit (Li 2019), not a parameter perturbation with a second gradient; the update is clipped to
    an RMS of 1.1; and weight decay is applied only to tensors with two or more dimensions, so on a vector
    ``weight_decay`` has no effect (as in the class)."""

    slots = staticmethod(lambda hp: 2)  # momentum_buffer, the diagonal factor Q

    @staticmethod
    def refuses(hp):
        if hp["min_ndim_triangular"] <= 1 and hp.get("memory_save_mode") != "all_diag":
            return "min_ndim_triangular ≤ 1 gives a vector a triangular factor, which the rule does not mirror"
        if hp.get("mu_dtype") is not None:
            return "a momentum dtype other than the parameters' is not mirrored"
        return None

    @staticmethod
    def init(x, hp):
        return {"m": torch.zeros_like(x), "q": torch.ones_like(x, dtype=PRECONDITION_DTYPE), "counter": 0}

    @staticmethod
    def step(x, g, state, hp, t):
        if hp.get("maximize", False):
            g = -g
        prob = update_probability(t - 1, hp["pre_conditioner_update_probability"])
        counter = state["counter"] + 1
        update = bool(prob > 0 and counter >= 1 / prob)
        state["counter"] = 0 if update else counter
        momentum = hp["momentum"]
        m = state["m"]
        m.mul_(momentum).add_((1.0 - momentum) * g)
        debiased = (m / (1.0 - momentum ** t)).to(PRECONDITION_DTYPE)
        q = state["q"]
        if update:
            generators = [torch.Generator().manual_seed(step_seed(seed, t - 1)) for seed in state["seeds"]]
            probe = torch.stack([torch.randn(x.shape[-1], dtype=PRECONDITION_DTYPE, generator=gen)
                                 for gen in generators]).to(x.device)
            target = debiased if hp["momentum_into_precondition_update"] else g
            a = torch.einsum("ka,ka->ka", q, target)
            b = probe / q
            term1, term2 = torch.einsum("kn,kn->kn", a, a), torch.einsum("kn,kn->kn", b, b)
            change = term1 - term2
            change *= PRECONDITION_LR
            change *= q
            change.div_((term1 + term2).abs().amax(dim=-1, keepdim=True).add_(EPS))
            q.sub_(change)
        direction = torch.einsum("kn,kn,kn->kn", q, q, debiased).to(x.dtype)
        rms = direction.square().mean(dim=-1, keepdim=True).sqrt()
        direction.mul_(torch.clamp(RMS_CLIP / (rms + RMS_EPS), max=1.0))
        x.sub_(hp["lr"] * direction)

