"""Batched rules of the Hutchinson-Hessian methods: Sophia-H and AdaHessian (pytorch_optimizer).

Same contract as :mod:`optbench.engines.batched_rules` (registered into its ``RULES`` table): ``x`` and ``g`` are
``[K, d]``, float hyperparameters ``[K, 1]`` tensors (``update_period`` and ``num_samples`` too: they are numbers),
one row per configuration. Both classes estimate the Hessian diagonal with Hutchinson's estimator
(``BaseOptimizer.compute_hutchinson_hessian``)

    D̂ = (1/n) Σᵢ (H zᵢ) ⊙ zᵢ,   zᵢ ~ N(0, I) (``gaussian``) or uniform on {−1, 1}ᵈ (``rademacher``),

where the class takes H zᵢ by double backward through ``.grad``. The rules take it from the engine's exact
Hessians (``HESSIAN``: ``state["hessian"]``, ``[K, d, d]`` at ``x``) as zᵢᵀH, the vector-Jacobian product the
class's ``autograd.grad(grads, params, grad_outputs=z)`` computes, equal up to rounding. The probes come from
torch's global generator, which the engines seed per run and step (:mod:`optbench.engines.step_rng`); the rules
need each row's run seed (``SEEDS``: ``state["seeds"]``) and draw, inside
:func:`~optbench.engines.step_rng.isolated`, exactly what the class draws after the loop engine's
``StepRandomness.before(t − 1)``: n probes in turn, each by the class's own expression on a ``[d]`` tensor of
the run's dtype and device, nothing on a step that does not update the estimate. Rows with the same seed draw
the same probes (a tuning round's trials share one seed: one draw serves them all).

The class's estimate is the Hessian of the loss whatever the engine did to ``.grad`` after backward: gradient
noise and ``clip_grad_norm_``/``clip_grad_value_`` (run under ``no_grad``) change ``.grad`` but not its graph,
so H zᵢ is unclipped, and so is the rule's (tests check both recipes). Python-float statistics of the classes
(AdaHessian's bias corrections ``1 − math.pow(β, t)``, the exponent ``hessian_power / 2``, the sample weight
``1 / n``) are computed as Python floats here too.

Only the analytic torch engine provides ``SEEDS`` (and ``HESSIAN``): the network batched engine refuses
these rules, and ``--engine auto`` runs them on the loop engine there.
"""

from __future__ import annotations

import math

import torch

from optbench.engines.batched_rules import HESSIAN, SEEDS, _rule, _zeros
from optbench.engines.step_rng import StepRandomness, isolated
from optbench.errors import UsageError

DISTRIBUTIONS = ("gaussian", "rademacher")  # compute_hutchinson_hessian's; anything else raises there



def _host(state, hp, key) -> list[float]:
    """The rows of the ``[K, 1]`` hyperparameter column ``key`` as Python floats (read once: only ``lr`` changes
    during a run, under a schedule)."""
    cache = state.setdefault("host", {})
    if key not in cache:
        cache[key] = [float(v) for v in hp[key][:, 0].tolist()]
    return cache[key]


def _check_init(hp, name: str, limits) -> None:
    """Refuse (``UsageError``, naming the option) what the class refuses at construction or fails on in
    ``step()``; ``limits`` holds (key, accepts(value), the accepted range) for the number-valued options."""
    if hp["hessian_distribution"] not in DISTRIBUTIONS:
        raise UsageError(f"{name}: hessian_distribution must be one of {', '.join(DISTRIBUTIONS)}, not "
                         f"{hp['hessian_distribution']!r}.")
    for key, accepts, valid in (("num_samples", lambda n: n == int(n), "a whole number"), *limits):
        bad = [v for v in dict.fromkeys(float(v) for v in hp[key][:, 0].tolist()) if not accepts(v)]
        if bad:
            raise UsageError(f"{name}: {key} must be {valid}, not {bad[0]:g}.")


def _updating(state, hp, t) -> list[bool]:
    """Per row: whether step ``t`` refreshes the Hessian estimate, as the class decides it in Python:
    ``(step − 1) % update_period == 0``."""
    return [(t - 1) % period == 0 for period in _host(state, hp, "update_period")]


def _probe(like: torch.Tensor, distribution: str) -> torch.Tensor:
    """One Hutchinson probe shaped like ``like``, by the expression of ``compute_hutchinson_hessian``."""
    if distribution == "rademacher":
        return torch.randint_like(like, 0, 2) * 2.0 - 1.0
    return torch.randn_like(like)


def _probe_plan(state, hp, updating: list[bool], device):
    """What step's probes serve which rows, for one pattern of refreshing rows (cached: the pattern repeats):
    (run seed → probes drawn, each row's index into the table of distinct seeds, and per probe i the weight
    1/n of the rows that take it, with their mask, None where every row does)."""
    plans = state.setdefault("probe_plans", {})
    key = tuple(updating)
    if key not in plans:
        seeds = state["seeds"]
        samples = [int(n) for n in _host(state, hp, "num_samples")]
        wanted: dict[int, int] = {}  # run seed → probes its rows use (a prefix of one stream serves fewer)
        for k, update in enumerate(updating):
            if update:
                wanted[seeds[k]] = max(wanted.get(seeds[k], 0), samples[k])
        position = {seed: j for j, seed in enumerate(wanted)}
        rows = torch.tensor([position.get(seed, 0) for seed in seeds], device=device)
        per_probe = []
        for i in range(max(wanted.values(), default=0)):
            takes = [update and i < n for update, n in zip(updating, samples)]
            weight = [1.0 / n if take else 0.0 for take, n in zip(takes, samples)]
            per_probe.append((torch.tensor(weight, dtype=hp["lr"].dtype, device=device)[:, None],
                              None if all(takes) else torch.tensor(takes, device=device)[:, None]))
        plans[key] = (wanted, rows, per_probe)
    return plans[key]


def hutchinson_diagonal(x: torch.Tensor, state, hp, t: int, updating: list[bool]) -> torch.Tensor:
    """D̂ = Σᵢ (1/n)·(zᵢᵀH) ⊙ zᵢ per row that ``updating`` marks (zero elsewhere), H = ``state["hessian"]``,
    with the probes the class draws at step ``t`` of the row's run (module docstring)."""
    wanted, rows, per_probe = _probe_plan(state, hp, updating, x.device)
    generators = state.setdefault("step_rng", {})
    like = x[0]  # the class's parameter: one [d] tensor of the run's dtype and device
    draws: dict[int, list[torch.Tensor]] = {}
    with isolated(x.device):
        for seed, n in wanted.items():
            if seed not in generators:
                generators[seed] = StepRandomness(seed, x.device)
            generators[seed].before(t - 1)  # what the loop engine seeds before the class's step() at t − 1
            draws[seed] = [_probe(like, hp["hessian_distribution"]) for _ in range(n)]
    estimate = _zeros(x)
    hessian = state["hessian"]
    for i, (weight, mask) in enumerate(per_probe):
        if len(wanted) == 1:
            z = draws[next(iter(wanted))][i].expand_as(x)
        else:
            z = torch.stack([draws[seed][i] if i < len(draws[seed]) else torch.zeros_like(like)
                             for seed in wanted]).index_select(0, rows)
        hz = torch.bmm(z[:, None, :], hessian).squeeze(1)  # zᵀH: the class's vector-Jacobian product
        added = estimate + weight * hz * z  # hessian.addcmul_(h_z, z, value=1/n)
        estimate = added if mask is None else torch.where(mask, added, estimate)
    return estimate


def _decay(x, g, hp):
    """``BaseOptimizer.apply_weight_decay``: decoupled x ← x(1 − λη) (λ with ``fixed_decay``), or coupled
    g ← g + λx where λ > 0; nothing where λ = 0."""
    wd = hp["weight_decay"]
    if hp["weight_decouple"]:
        x.mul_(1.0 - wd * (1.0 if hp["fixed_decay"] else hp["lr"]))
        return g
    return torch.where(wd > 0, g + wd * x, g)


def _refresh(updating, refreshed, kept):
    """``refreshed`` in the rows that refresh their estimate this step, ``kept`` in the others."""
    return refreshed if all(updating) else torch.where(torch.tensor(updating, device=kept.device)[:, None],
                                                       refreshed, kept)


@_rule("sophiah", needs=[HESSIAN, SEEDS])
class _SophiaH:
    """Sophia-H (pytorch_optimizer.SophiaH; Liu et al. 2023, "Sophia: A Scalable Stochastic Second-order Optimizer
    for Language Model Pre-training", arXiv:2305.14342, Algorithm 3 with the Hutchinson estimator). Decay first
    (:func:`_decay`); m ← β₁m + (1 − β₁)g; on steps t with (t − 1) mod k = 0 (k = ``update_period``)
    h ← β₂h + (1 − β₂)D̂ with D̂ the Hutchinson diagonal (:func:`hutchinson_diagonal`, n = ``num_samples`` probes
    of ``hessian_distribution``); x ← x − η·clip(m / max(h, ε), ±p).

    The library against the paper: the paper's step is η·clip(m / max(γh, ε), 1), the library's η·clip(m / max(h,
    ε), p), the same up to reparametrisation (p = γ, η ← η/γ, ε ← ε/γ); h starts at 0 and moves only on refresh
    steps, as in the paper (k = 10 there too). Library options: n > 1 probes averaged (the paper draws one
    u ~ N(0, I)), Rademacher probes, and coupled decay (``weight_decouple=False``; the paper's is decoupled)."""

    slots = staticmethod(lambda hp: 3)  # momentum, hessian_moment, and the last estimate ("hessian"), kept

    @staticmethod
    def init(x, hp):
        # validate_non_negative(p), validate_step(update_period), validate_positive(num_samples)
        _check_init(hp, "sophiah", [("p", lambda v: v >= 0, ">= 0"), ("update_period", lambda v: v >= 1, ">= 1"),
                                    ("num_samples", lambda v: v > 0, "> 0")])
        return {"m": _zeros(x), "h": _zeros(x)}

    @staticmethod
    def step(x, g, state, hp, t):
        g = _decay(x, g, hp)
        m, h = state["m"], state["h"]
        m.lerp_(g, 1 - hp["beta1"])
        updating = _updating(state, hp, t)
        if any(updating):
            estimate = hutchinson_diagonal(x, state, hp, t, updating)
            state["h"] = h = _refresh(updating, torch.lerp(h, estimate, 1 - hp["beta2"]), h)
        bound = hp["p"]
        update = (m / h.clamp(min=hp["eps"])).clamp(-bound, bound)
        x.sub_(hp["lr"] * update)


def _debias(state, hp, key: str, t: int, x: torch.Tensor) -> float | torch.Tensor:
    """``BaseOptimizer.debias``: the Python float 1 − math.pow(β, t) of each row's β = ``hp[key]``; the float
    itself where the rows share β (as the class uses it), else a ``[K, 1]`` column."""
    betas = _host(state, hp, key)
    table = {beta: 1.0 - math.pow(beta, t) for beta in dict.fromkeys(betas)}
    if len(table) == 1:
        return next(iter(table.values()))
    return torch.tensor([table[beta] for beta in betas], dtype=x.dtype, device=x.device)[:, None]


def _pow_rows(base: torch.Tensor, exponents: list[float]) -> torch.Tensor:
    """Row k of ``base`` to the Python-float power ``exponents[k]`` (one ``pow`` per distinct exponent, as the
    class's ``pow_(hessian_power / 2)``: torch's kernel treats 0.5 as a square root)."""
    distinct = list(dict.fromkeys(exponents))
    if len(distinct) == 1:
        return base.pow(distinct[0])
    out = torch.empty_like(base)
    for exponent in distinct:
        rows = torch.tensor([k for k, e in enumerate(exponents) if e == exponent], device=base.device)
        out.index_copy_(0, rows, base.index_select(0, rows).pow(exponent))
    return out


@_rule("adahessian", needs=[HESSIAN, SEEDS])
class _AdaHessian:
    """AdaHessian (pytorch_optimizer.AdaHessian; Yao et al. 2021, "ADAHESSIAN: An Adaptive Second Order Optimizer
    for Machine Learning", arXiv:2006.00719, Algorithm 1). Decay first (:func:`_decay`); m ← β₁m + (1 − β₁)g; on
    steps t with (t − 1) mod k = 0 (k = ``update_period``) v ← β₂v + (1 − β₂)D̂² with D̂ the Hutchinson diagonal
    (:func:`hutchinson_diagonal`, n = ``num_samples`` probes, Rademacher by default); then with the Python floats
    b₁ = 1 − β₁ᵗ, b₂ = 1 − β₂ᵗ and κ = ``hessian_power``: x ← x − (η/b₁)·m / ((v/b₂)^(κ/2) + ε).

    The library against the paper: no spatial averaging of D̂ over convolution kernels (the paper's, for
    ndim-4 weights; a vector, every analytic problem, has none); with ``update_period`` k > 1, v is refreshed
    every k steps while b₂ counts every step; ε is added to (v/b₂)^(κ/2); weight decay is a library option
    (decoupled by default)."""

    slots = staticmethod(lambda hp: 3)  # exp_avg, exp_hessian_diag_sq, and the last estimate ("hessian"), kept

    @staticmethod
    def init(x, hp):
        # validate_range(hessian_power, 0, 1, '(]'); update_period 0 divides by zero in step()
        _check_init(hp, "adahessian", [("hessian_power", lambda v: 0 < v <= 1, "in (0, 1]"),
                                       ("update_period", lambda v: v != 0, "nonzero")])
        return {"m": _zeros(x), "v": _zeros(x)}

    @staticmethod
    def step(x, g, state, hp, t):
        g = _decay(x, g, hp)
        m, v = state["m"], state["v"]
        beta2 = hp["beta2"]
        m.lerp_(g, 1 - hp["beta1"])
        updating = _updating(state, hp, t)
        if any(updating):
            estimate = hutchinson_diagonal(x, state, hp, t, updating)
            refreshed = v * beta2 + (1 - beta2) * estimate * estimate  # mul_(β₂).addcmul_(D̂, D̂, value=1 − β₂)
            state["v"] = v = _refresh(updating, refreshed, v)
        bias1, bias2 = _debias(state, hp, "beta1", t, x), _debias(state, hp, "beta2", t, x)
        denominator = _pow_rows(v / bias2, [p / 2 for p in _host(state, hp, "hessian_power")]) + hp["eps"]
        x.sub_(hp["lr"] / bias1 * (m / denominator))
