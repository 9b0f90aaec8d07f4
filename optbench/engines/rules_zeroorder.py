"""Batched rules of optbench's own zero-order and forward-gradient methods: SPSA and the forward gradient.

Same contract as :mod:`optbench.engines.batched_rules` (registered into its ``RULES`` table): ``x`` and ``g`` are
``[K, P]``, float hyperparameters ``[K, 1]`` tensors, one row per configuration; each rule mirrors its class in
:mod:`optbench.optimizers.handwritten` operation for operation (tests: the batched-vs-loop contract to 1e-8 in
float64, and ``tests/test_rules_zeroorder.py`` against the papers' formulas).

Both classes draw their random directions from a ``torch.Generator`` of their own, seeded with
``derive_seed(run seed, "directions")`` (``OptimizerEntry.build`` of a ``seeded=True`` entry), one draw per
parameter tensor per step, on the CPU in the parameter's dtype (randn) or as int64 (randint), then moved to the
parameter's device. The rules keep one such generator per configuration (``SEEDS``: the engine hands them the run
seeds) and draw the same values in the same order, so each configuration sees the directions its loop run sees:
the forward gradient's normal draws one parameter tensor at a time (``LAYERS``: the tensors of the layout; an
analytic problem's point is one ``[d]`` tensor), SPSA's ±1 bits several steps at a time (an element-by-element
draw, the same whatever the shapes).

Both take an inner product over all parameters of a configuration (``JOINT``), and both take their oracles from
the step's sampled function f̃_t(x) = f(x) + ⟨ξ_t, x − x_t⟩ (``CLOSURE``: ``state["loss_at"]`` and
``state["sampled_grad"]`` = ∇f̃_t(x_t), optbench.problems.analytic). Neither calls ``closure()``, the only oracle
the loop engine clips, so a recipe's gradient clipping does not reach them on the loop engine, and does not here:
they never read the clipped ``g``.
"""

from __future__ import annotations

import torch

from optbench.engines.batched_rules import CLOSURE, JOINT, LAYERS, SEEDS, _rule
from optbench.randomness import derive_seed

DIRECTIONS_STREAM = "directions"  # OptimizerEntry.build: seed=derive_seed(run seed, "directions")


def _generators(state) -> list[torch.Generator]:
    """One CPU generator per configuration, seeded as the class's own (created at the first step: the engine puts
    the run seeds in ``state`` after ``init``)."""
    if "generators" not in state:
        state["generators"] = [torch.Generator().manual_seed(derive_seed(int(seed), DIRECTIONS_STREAM))
                               for seed in state["seeds"]]
    return state["generators"]


def _normal_directions(state, x: torch.Tensor) -> torch.Tensor:
    """``[K, P]`` v ~ N(0, I): for each configuration, ``randn(shape)`` in ``x``'s dtype for each parameter tensor
    of the layout in order (as the class loops over its parameters), flattened and concatenated, moved to ``x``'s
    device. One generator call per configuration and tensor, step by step: torch's CPU normal sampler takes another
    path from 16 values on, so draws of several steps at once would not be the class's."""
    layout = state["layout"]
    rows = [torch.cat([torch.randn(shape, generator=gen, dtype=x.dtype).reshape(-1) for shape in layout.shapes])
            if not layout.single else torch.randn(layout.shapes[0], generator=gen, dtype=x.dtype)
            for gen in _generators(state)]
    return torch.stack(rows).to(x.device)


BIT_BLOCK_ELEMENTS = 1 << 20  # int64 bits drawn ahead for all K configurations: 8 MiB at most
BIT_BLOCK_STEPS = 64  # steps of bits per generator call


def _rademacher_bits(state, x: torch.Tensor) -> torch.Tensor:
    """``[K, P]`` this step's ``randint(0, 2)`` of every parameter tensor of the layout in order, per
    configuration, as the class draws them. torch's CPU ``randint`` fills a tensor element by element from the
    generator (serially), so one ``[B, P]`` draw is B steps' draws of every tensor in turn (a test checks it
    against step-by-step draws): one generator call per configuration every B steps instead of every step."""
    if state.get("bits_used", 0) == len(state.get("bits", ())):
        K, P = len(state["seeds"]), x.shape[-1]
        block = max(1, min(BIT_BLOCK_STEPS, BIT_BLOCK_ELEMENTS // (K * P)))
        state["bits"] = torch.stack([torch.randint(0, 2, (block, P), generator=gen)
                                     for gen in _generators(state)], dim=1).to(x.device)  # [B, K, P]
        state["bits_used"] = 0
    bits = state["bits"][state["bits_used"]]
    state["bits_used"] += 1
    return bits


@_rule("spsa", needs=[CLOSURE, SEEDS, JOINT])
class _SPSA:
    """SPSA (optbench.optimizers.handwritten.SPSA; Spall 1992, "Multivariate stochastic approximation using a
    simultaneous perturbation gradient approximation"): at step t (from 1), a_t = η/t^α, c_t = c/t^γ,
    Δ with independent ±1 entries (``randint(0, 2) · 2 − 1`` from the configuration's generator, drawn 64 steps
    ahead: :func:`_rademacher_bits`),
    ĝ = (f̃_t(x + c_tΔ) − f̃_t(x − c_tΔ)) / (2c_t) · Δ (1/Δ_i = Δ_i), x ← x − a_t ĝ. Two loss evaluations per
    step, no gradient. Deviation from the paper (as the class): Spall's gains a_k = a/(k + 1 + A)^α,
    c_k = c/(k + 1)^γ with A = 0 and k + 1 = t; the defaults α = γ = 0 are constant gains."""

    slots = staticmethod(lambda hp: 0)  # the class keeps its step count and generator, no parameter-sized state

    @staticmethod
    def init(x, hp):
        return {}

    @staticmethod
    def step(x, g, state, hp, t):
        a_t = hp["lr"] / t ** hp["alpha"]
        c_t = hp["c"] / t ** hp["gamma"]
        delta = (_rademacher_bits(state, x) * 2 - 1).to(x.dtype)  # the class's randint · 2 − 1 in int64, then its dtype
        loss_at = state["loss_at"]
        plus = loss_at(x + c_t * delta)
        minus = loss_at(x - c_t * delta)
        slope = (plus - minus)[:, None] / (2 * c_t)
        x.addcmul_(slope * delta, -a_t)  # the class's p.add_(slope·Δ, alpha=−a_t), to the bit (one rounding)


@_rule("forward-grad", needs=[CLOSURE, SEEDS, LAYERS, JOINT])
class _ForwardGradient:
    """Forward gradient descent (optbench.optimizers.handwritten.ForwardGradient; Baydin et al. 2022, "Gradients
    without Backpropagation", Algorithm 1): v ~ N(0, I) (``randn`` in the parameters' dtype from the
    configuration's generator), the directional derivative ∇f̃_t(x_t)·v, ĝ = (∇f̃_t·v) v, x ← x − η ĝ. The class
    takes ∇f̃_t·v by a forward-mode JVP of ``loss_at``; it is ⟨∇f̃_t(x_t), v⟩ = ⟨∇f(x_t) + ξ_t, v⟩, the inner
    product with the engine's unclipped noisy gradient (tests check the JVP against it, noise on and off; equal to
    rounding, not to the bit: forward mode and the closed-form gradient add in another order, and a JVP per step
    would triple the rule's cost). No documented deviation from the paper."""

    slots = staticmethod(lambda hp: 0)  # the class keeps its generator, no parameter-sized state

    @staticmethod
    def init(x, hp):
        return {}

    @staticmethod
    def step(x, g, state, hp, t):
        v = _normal_directions(state, x)
        slope = (state["sampled_grad"] * v).sum(-1, keepdim=True)
        x.addcmul_(slope * v, -hp["lr"])  # the class's p.add_(slope·v, alpha=−η), to the bit (one rounding)
