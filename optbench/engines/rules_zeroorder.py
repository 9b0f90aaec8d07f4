"""Batched rules of optbench's own zero-order and forward-gradient methods: SPSA and the forward gradient.

Same contract as :mod:`optbench.engines.batched_rules` (registered into its ``RULES`` table): ``x`` and ``g`` are
``[K, P]``, float hyperparameters ``[K, 1]`` tensors, one row per configuration; each rule mirrors its class in
:mod:`optbench.optimizers.handwritten` operation for operation (tests: the batched-vs-loop contract to 1e-8 in
float64, and ``tests/test_rules_zeroorder.py`` against the papers' formulas).

Both classes draw their random directions from a ``torch.Generator`` of their own, seeded with
``derive_seed(run seed, "directions")`` (``OptimizerEntry.build`` of a ``seeded=True`` entry), one draw per
parameter tensor per step, on the CPU in the parameter's dtype (randn) or as int64 (randint), then moved to the
parameter's device. The rules keep one such generator per configuration (``SEEDS``: the engine hands them the run
seeds) and draw the same shapes in the same order (``LAYERS``: one draw per parameter tensor of the layout; an
analytic problem's point is one ``[d]`` tensor), so each configuration sees the directions its loop run sees.

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


def _draw(state, x: torch.Tensor, draw) -> torch.Tensor:
    """``[K, P]`` directions: for each configuration, ``draw(shape, generator)`` for each parameter tensor of the
    layout in order (as the class loops over its parameters), flattened and concatenated, moved to ``x``'s device."""
    shapes = state["layout"].shapes
    rows = []
    for generator in _generators(state):
        parts = [draw(shape, generator).reshape(-1) for shape in shapes]
        rows.append(parts[0] if len(parts) == 1 else torch.cat(parts))
    return torch.stack(rows).to(x.device)


@_rule("spsa", needs=[CLOSURE, SEEDS, LAYERS, JOINT])
class _SPSA:
    """SPSA (optbench.optimizers.handwritten.SPSA; Spall 1992, "Multivariate stochastic approximation using a
    simultaneous perturbation gradient approximation"): at step t (from 1), a_t = η/t^α, c_t = c/t^γ,
    Δ with independent ±1 entries (``randint(0, 2) · 2 − 1`` from the configuration's generator),
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
        delta = _draw(state, x, lambda shape, gen: torch.randint(0, 2, shape, generator=gen) * 2 - 1).to(x.dtype)
        loss_at = state["loss_at"]
        plus = loss_at(x + c_t * delta)
        minus = loss_at(x - c_t * delta)
        slope = (plus - minus)[:, None] / (2 * c_t)
        x.sub_(a_t * (slope * delta))


@_rule("forward-grad", needs=[CLOSURE, SEEDS, LAYERS, JOINT])
class _ForwardGradient:
    """Forward gradient descent (optbench.optimizers.handwritten.ForwardGradient; Baydin et al. 2022, "Gradients
    without Backpropagation", Algorithm 1): v ~ N(0, I) (``randn`` in the parameters' dtype from the
    configuration's generator), the directional derivative ∇f̃_t(x_t)·v, ĝ = (∇f̃_t·v) v, x ← x − η ĝ. The class
    takes ∇f̃_t·v by a forward-mode JVP of ``loss_at``; it is ⟨∇f̃_t(x_t), v⟩ = ⟨∇f(x_t) + ξ_t, v⟩, the inner
    product with the engine's unclipped noisy gradient (tests check the JVP against it, noise on and off).
    No documented deviation from the paper."""

    slots = staticmethod(lambda hp: 0)  # the class keeps its generator, no parameter-sized state

    @staticmethod
    def init(x, hp):
        return {}

    @staticmethod
    def step(x, g, state, hp, t):
        v = _draw(state, x, lambda shape, gen: torch.randn(shape, generator=gen, dtype=x.dtype))
        slope = (state["sampled_grad"] * v).sum(-1, keepdim=True)
        x.sub_(hp["lr"] * (slope * v))
