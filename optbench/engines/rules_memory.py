"""Batched rules of memory-lean and projected methods: pytorch_optimizer's SM3, GaLore, Fira, SPAM, Nero, EmoNavi,
EmoFact and EmoLynx, and optbench's paper-faithful SM3 (``sm3-paper``).

Same contract as :mod:`optbench.engines.batched_rules` (registered into its ``RULES`` table): ``x`` and ``g`` are
``[K, P]``, float hyperparameters ``[K, 1]`` tensors (integer ones too: SPAM's ``warmup_epoch``, ``threshold``,
``grad_accu_steps``, ``update_proj_gap``), booleans shared by the group. Each rule follows the code path the loop
engine's class object takes on a CPU (the ``foreach`` path where the class enables it there: GaLore, Fira, Nero and
the EmoNavi family; the per-parameter loop for SM3 and SPAM), operation for operation. Where the class calls a
kernel with a Python scalar the rule calls the same kernel with a ``[K, 1]`` column, as in
:mod:`optbench.engines.rules_misc`: ``a.add_(b, alpha=s)`` is ``torch.addcmul(a, s, b)``, ``a.addcmul_(b, c,
value=s)`` is ``torch.addcmul(a, s·b, c)``, ``a.addcdiv_(b, c, value=s)`` is ``a + s·b/c``.

- SM3 and SM3Paper keep one accumulator per dimension of each parameter tensor, Nero one second moment per output
  neuron (row) with its constraint per matrix, EmoFact factored row/column moments for tensors with ndim ≥ 2 and
  SPAM its masked path for 2-D tensors: ``LAYERS``, one parameter tensor at a time (the network engine hands a
  rule one tensor per call; an analytic problem is one 1-D tensor).
- GaLore and Fira project a matrix's gradient only in a parameter group that has a ``rank`` key; optbench builds
  every class with one group of its constructor's hyperparameters, which have no ``rank``, so both are AdamW-like on
  every tensor (vectors and matrices alike) and their rules need nothing: the SVD projection is never reached.
- The EmoNavi family scales its step by a trend of the loss that ``step(closure)`` returns; optbench's engines call
  ``step()`` without a closure for these classes (no ``needs_closure``), so the class sees loss 0 every step and its
  scale is exactly 1 (emo_drive = 1, shadow ratio 0, |trust| = 1). The rules reproduce that; an entry that gave the
  classes a closure would need rules that read the loss.
"""

from __future__ import annotations

import torch

from optbench.engines.batched_rules import LAYERS, _rule


def _zeros(x):
    return torch.zeros_like(x)


def _tensors(x, layout):
    """Column slices ``[K, size]`` of ``x`` per parameter tensor of the layout (views), with each tensor's shape."""
    return list(zip(x.split(layout.sizes, dim=-1), layout.shapes))


def _column(value: torch.Tensor, ndim: int) -> torch.Tensor:
    """A ``[K, 1]`` hyperparameter shaped to broadcast against ``[K, *shape]`` with ``len(shape) == ndim``."""
    return value.reshape(value.shape[0], *([1] * ndim))


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
