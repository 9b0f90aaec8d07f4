"""Update rules written once over a leading configuration axis.

Each rule reproduces one optimizer class's update for K configurations at once: ``x`` and ``g`` are
``[K, d]``, float hyperparameters are ``[K, 1]`` tensors (so each configuration has its own learning
rate, betas, …) and boolean or string hyperparameters are shared by the group. The formulas follow the
single-tensor code paths of torch.optim (and of pytorch_optimizer for Lion, LARS, LAMB and ADOPT) operation for
operation; tests check every rule against the class it mirrors to 1e-8 relative in float64, on every
problem kind whose batched engine accepts it.

A rule is ``init(x, hp) -> state`` and ``step(x, g, state, hp, t) -> None`` (updates ``x`` in place;
``t`` counts from 1). A rule that needs more than ``x`` and ``g`` says so in ``needs`` — the one place
that capability is declared — and an engine that provides a need puts it in ``state`` before the first
step; an engine that does not provide it refuses the rule (:func:`check_needs`):

- ``HESSIAN``: ``state["hessian"]``, the ``[K, d, d]`` Hessians at ``x``, before every step;
- ``LAYERS``: ``state["layout"]``, a :class:`~optbench.engines.layout.ParamLayout` saying which columns of
  ``x`` belong to which parameter tensor (layer-wise rules take one norm per parameter tensor);
- ``CLOSURE``: re-evaluating the loss at other points within a step: ``state["loss_at"]``, a function of ``[K, d]``
  points giving each configuration's loss of the step's sampled function f̃_t (what the loop engine's
  ``AnalyticClosure.loss_at`` computes), ``state["sampled_grad"]``, ∇f̃_t(x_t) ``[K, d]`` (the noisy gradient
  before any clipping: the loop engine clips only what ``closure()`` leaves in ``.grad``), ``state["loss_grad_at"]``,
  ``points -> ([K] f̃_t, [K, d] ∇f̃_t)`` with the gradient clipped as ``closure()`` clips it (what each call of
  ``closure()`` gives: L-BFGS), and ``state["running"]``, the ``[K]`` runs the engine has not ended (a rule with an
  inner loop skips the others, whose loop runs have stopped), set before every step (the analytic batched engine
  provides it; the network engine does not);
- ``SEEDS``: ``state["seeds"]``, the K run seeds, before the first step: for rules of classes that draw random
  numbers, from their own generator (seeded as ``OptimizerEntry.build`` seeds it: ``seeded=True`` entries) or from
  torch's global generator, which the engines seed per run and step (:mod:`optbench.engines.step_rng`: Gravity's
  first velocity, Sophia-H's and AdaHessian's Hutchinson probes);
- ``REPORTED``: the rule trains at ``x`` but reports another point, ``reported(x, state, hp)`` (Schedule-Free's
  average); the engine records loss, gradient and coordinates at the reported point (one more evaluation per
  step) and takes the training gradient at ``x``, as the loop engine does around ``eval()``/``train()``.

- ``VECTORS``: the rule mirrors only what its class does to parameter tensors of at most one dimension (every
  analytic problem's one vector): its matrix path is not reproduced (SOAP's eigenbases, Kron's triangular
  factors), so an engine with matrices to step (the network engine) does not provide it and runs the class.

- ``ACCUMULATED``: the class keeps its momentum in the parameters' ``.grad`` and each backward pass adds the new
  gradient to it (``OptimizerEntry.accumulates_grad``: SCIONLight): the engine adds ``state["grad_buffer"]`` (what
  the rule says the class left in ``.grad``; None before the first step) to the step's noisy gradient before
  clipping, as the loop engine's backward pass does, and the rule sets it in every step.

A rule that mirrors only some settings of its class says which it does not with ``refuses(hp) -> str | None``
(the reason, for one configuration's hyperparameter dict; L-BFGS: the strong-Wolfe line search): every engine
refuses such a configuration with that reason (:func:`check_needs`, ``engines.capabilities``), so ``auto`` runs
it on the loop engine.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import torch

from optbench.errors import UsageError

State = dict[str, Any]

HESSIAN = "hessian"
LAYERS = "layers"
CLOSURE = "closure"
REPORTED = "reported"
JOINT = "joint"  # a statistic over all parameter tensors at once (Prodigy's d): the rule steps them together
SEEDS = "seeds"  # the run seeds: random directions from a generator per configuration
VECTORS = "vectors"  # only parameter tensors of at most one dimension (the analytic problems' one vector)
ACCUMULATED = "accumulated"  # the gradient is added to the class's buffer in .grad (momentum kept there)
NEED_DESCRIPTIONS = {
    HESSIAN: "the Hessian of the loss",
    LAYERS: "one norm per parameter tensor (a layer-wise rule)",
    CLOSURE: "loss evaluations at other points within a step (a closure)",
    REPORTED: "records at a reported point other than the trained one (schedule-free)",
    JOINT: "all parameter tensors in one step (a statistic over the whole model)",
    SEEDS: "the run seeds (random directions from each run's own generator)",
    VECTORS: "parameter tensors of at most one dimension (its rule mirrors only the class's vector path)",
    ACCUMULATED: "each new gradient added to the momentum the class keeps in .grad",
}


@dataclass(frozen=True)
class Rule:
    init: Callable[[torch.Tensor, dict[str, Any]], State]
    step: Callable[[torch.Tensor, torch.Tensor, State, dict[str, Any], int], None]
    needs: frozenset[str] = frozenset()  # of NEED_DESCRIPTIONS' keys: what the engine must provide
    # parameter-sized state tensors the mirrored class keeps for one configuration's hyperparameters
    # (its memory cost; tests check it against the real class's optimizer.state)
    state_slots: Callable[[dict[str, Any]], int] = lambda hp: 0
    # REPORTED rules: the point the method reports, from the trained point x and the state (None otherwise)
    reported: Callable[[torch.Tensor, State, dict[str, Any]], torch.Tensor] | None = None
    # rules whose state is not parameter-sized (Shampoo's n × n preconditioners): slots per parameter of a [d] vector
    dim_slots: Callable[[dict[str, Any], int], float] | None = None
    # rules that mirror only some settings of their class: why it does not take these hyperparameters, or None
    refuses: Callable[[dict[str, Any]], str | None] = lambda hp: None
    # rules whose state size follows the trajectory (L-BFGS's history): each configuration's slots per parameter
    # now, a [K] tensor from the rule's state (the loop engine measures the real class's state when a run stops)
    slots_in: Callable[[State], torch.Tensor] | None = None
    # rules whose state is not kept in the parameters' dtype (FlashAdamW's 8-bit moments): bytes per parameter of
    # a [d] vector, whatever that dtype (None: slots × the dtype's size)
    fixed_bytes: Callable[[dict[str, Any], int], float | None] | None = None

    def slots_per_param(self, hp: dict[str, Any], dim: int) -> float:
        """State elements the mirrored class keeps per parameter of one ``[dim]`` parameter vector."""
        return self.dim_slots(hp, dim) if self.dim_slots is not None else self.state_slots(hp)

    def bytes_per_param(self, hp: dict[str, Any], dim: int, itemsize: int) -> float:
        """State bytes the mirrored class keeps per parameter of one ``[dim]`` vector of ``itemsize``-byte values."""
        fixed = self.fixed_bytes(hp, dim) if self.fixed_bytes is not None else None
        return fixed if fixed is not None else self.slots_per_param(hp, dim) * itemsize

    @property
    def needs_hessian(self) -> bool:
        return HESSIAN in self.needs


RULES: dict[str, Rule] = {}


def _rule(name: str, needs: Iterable[str] = ()):
    unknown = set(needs) - set(NEED_DESCRIPTIONS)
    if unknown:
        raise ValueError(f"rule {name!r} declares unknown needs {sorted(unknown)}")

    def wrap(cls):
        if (REPORTED in needs) != hasattr(cls, "reported"):
            raise ValueError(f"rule {name!r}: a reported() method and the REPORTED need go together")
        RULES[name] = Rule(cls.init, cls.step, frozenset(needs), getattr(cls, "slots", lambda hp: 0),
                           getattr(cls, "reported", None), getattr(cls, "dim_slots", None),
                           getattr(cls, "refuses", lambda hp: None), getattr(cls, "slots_in", None),
                           getattr(cls, "fixed_bytes", None))
        return cls

    return wrap


def missing_needs(rule: Rule, provided: frozenset[str]) -> list[str]:
    """What ``rule`` needs that an engine providing ``provided`` does not, described for a message."""
    return [NEED_DESCRIPTIONS[need] for need in sorted(rule.needs - provided)]


def check_needs(optimizer, provided: frozenset[str], engine: str) -> None:
    """Refuse (``UsageError``) an optimizer config without a batched rule, one its rule refuses
    (``Rule.refuses``), or whose rule needs what ``engine`` (its name, for the message) does not provide."""
    name = optimizer.entry.batched
    if name not in RULES:
        raise UsageError(f"The {engine} does not support {optimizer.name!r}: it has no batched rule; "
                         "use --engine loop or auto.")
    refused = RULES[name].refuses(optimizer.hyperparams)
    if refused:
        raise UsageError(f"The {engine} does not support {optimizer.label!r}: {refused}; use --engine loop or auto.")
    missing = missing_needs(RULES[name], provided)
    if missing:
        raise UsageError(f"The {engine} does not support {optimizer.name!r}: its rule needs {'; '.join(missing)}, "
                         "which that engine does not provide; use --engine loop or auto.")


def _zeros(x):
    return torch.zeros_like(x)


def adam_moments(x, hp) -> State:
    """The state of a rule with Adam's two moments, both zero: ``init = staticmethod(adam_moments)``."""
    return {"m": _zeros(x), "v": _zeros(x)}


@_rule("sgd")
class _SGD:
    """SGD with momentum μ, dampening τ, Nesterov, L2 weight decay λ (torch.optim.SGD):
    d = g + λx; b = d (first step) else μb + (1 − τ)d; d = d + μb if Nesterov else b; x ← x − η d."""

    slots = staticmethod(lambda hp: int(hp["momentum"] != 0))  # momentum_buffer

    @staticmethod
    def init(x, hp):
        return {"buf": None}

    @staticmethod
    def step(x, g, state, hp, t):
        d = g + hp["weight_decay"] * x
        momentum = hp["momentum"]
        if bool((momentum != 0).any()):
            if state["buf"] is None:
                buf = d.clone()
            else:
                buf = state["buf"] * momentum + (1 - hp["dampening"]) * d
            state["buf"] = buf
            # configurations with μ = 0 keep plain SGD, as torch.optim does
            with_momentum = d + momentum * buf if hp["nesterov"] else buf
            d = torch.where(momentum != 0, with_momentum, d)
        x.sub_(hp["lr"] * d)


@_rule("adagrad")
class _Adagrad:
    """AdaGrad (torch.optim.Adagrad): d = g + λx; s ← s + d²; x ← x − η/(1 + (t−1)·decay) · d/(√s + ε)."""

    slots = staticmethod(lambda hp: 1)  # sum

    @staticmethod
    def init(x, hp):
        return {"sum": torch.zeros_like(x) + hp["initial_accumulator_value"]}

    @staticmethod
    def step(x, g, state, hp, t):
        d = g + hp["weight_decay"] * x
        clr = hp["lr"] / (1 + (t - 1) * hp["lr_decay"])
        state["sum"].addcmul_(d, d)
        x.sub_(clr * d / (state["sum"].sqrt() + hp["eps"]))


@_rule("rmsprop")
class _RMSprop:
    """RMSprop (torch.optim.RMSprop): v ← αv + (1 − α)d²; a = √(v − m²) (centred) or √v; a += ε;
    with momentum μ: b ← μb + d/a, x ← x − ηb; else x ← x − η d/a."""

    slots = staticmethod(lambda hp: 1 + int(hp["momentum"] > 0) + int(hp["centered"]))

    @staticmethod
    def init(x, hp):
        return {"sq": _zeros(x), "avg": _zeros(x), "buf": _zeros(x)}

    @staticmethod
    def step(x, g, state, hp, t):
        d = g + hp["weight_decay"] * x
        alpha = hp["alpha"]
        state["sq"].mul_(alpha).add_((1 - alpha) * d * d)
        if hp["centered"]:
            state["avg"].add_((1 - alpha) * (d - state["avg"]))
            avg = (state["sq"] - state["avg"] * state["avg"]).sqrt()
        else:
            avg = state["sq"].sqrt()
        avg = avg + hp["eps"]
        momentum = hp["momentum"]
        buf = state["buf"].mul_(momentum).add_(d / avg)
        x.sub_(torch.where(momentum > 0, hp["lr"] * buf, hp["lr"] * d / avg))


@_rule("adadelta")
class _Adadelta:
    """AdaDelta (torch.optim.Adadelta): v ← ρv + (1−ρ)d²; Δ = √(u + ε)/√(v + ε) · d;
    u ← ρu + (1−ρ)Δ²; x ← x − ηΔ."""

    slots = staticmethod(lambda hp: 2)  # square_avg, acc_delta

    @staticmethod
    def init(x, hp):
        return {"sq": _zeros(x), "acc": _zeros(x)}

    @staticmethod
    def step(x, g, state, hp, t):
        d = g + hp["weight_decay"] * x
        rho, eps = hp["rho"], hp["eps"]
        state["sq"].mul_(rho).add_((1 - rho) * d * d)
        delta = (state["acc"] + eps).sqrt() / (state["sq"] + eps).sqrt() * d
        state["acc"].mul_(rho).add_((1 - rho) * delta * delta)
        x.sub_(hp["lr"] * delta)


def _adam_moments(d, state, hp):
    beta1, beta2 = hp["beta1"], hp["beta2"]
    state["m"].add_((1 - beta1) * (d - state["m"]))  # m.lerp_(d, 1 − β₁)
    state["v"].mul_(beta2).add_((1 - beta2) * d * d)


@_rule("adam")
class _Adam:
    """Adam (torch.optim.Adam): d = g + λx; m ← β₁m + (1−β₁)d; v ← β₂v + (1−β₂)d²;
    x ← x − η/(1−β₁ᵗ) · m / (√v/√(1−β₂ᵗ) + ε); AMSGrad uses the running maximum of v."""

    slots = staticmethod(lambda hp: 2 + int(hp["amsgrad"]))  # exp_avg, exp_avg_sq (, max)

    decoupled = False

    @classmethod
    def init(cls, x, hp):
        return {"m": _zeros(x), "v": _zeros(x), "vmax": _zeros(x)}

    @classmethod
    def step(cls, x, g, state, hp, t):
        if cls.decoupled:
            x.mul_(1 - hp["lr"] * hp["weight_decay"])
            d = g
        else:
            d = g + hp["weight_decay"] * x
        _adam_moments(d, state, hp)
        bc1 = 1 - hp["beta1"] ** t
        bc2_sqrt = (1 - hp["beta2"] ** t).sqrt()
        v = state["v"]
        if hp["amsgrad"]:
            torch.maximum(state["vmax"], v, out=state["vmax"])
            v = state["vmax"]
        denom = v.sqrt() / bc2_sqrt + hp["eps"]
        x.sub_(hp["lr"] / bc1 * state["m"] / denom)


@_rule("adamw")
class _AdamW(_Adam):
    """AdamW (torch.optim.AdamW): x ← x(1 − ηλ), then the Adam step without L2 in the gradient."""

    decoupled = True


@_rule("adamax")
class _Adamax:
    """Adamax (torch.optim.Adamax): m ← β₁m + (1−β₁)d; u ← max(β₂u, |d| + ε); x ← x − η/(1−β₁ᵗ) · m/u."""

    slots = staticmethod(lambda hp: 2)  # exp_avg, exp_inf

    @staticmethod
    def init(x, hp):
        return {"m": _zeros(x), "u": _zeros(x)}

    @staticmethod
    def step(x, g, state, hp, t):
        d = g + hp["weight_decay"] * x
        state["m"].add_((1 - hp["beta1"]) * (d - state["m"]))
        state["u"] = torch.maximum(state["u"] * hp["beta2"], d.abs() + hp["eps"])
        x.sub_(hp["lr"] / (1 - hp["beta1"] ** t) * state["m"] / state["u"])


@_rule("nadam")
class _NAdam:
    """NAdam (torch.optim.NAdam): μ_t = β₁(1 − ½·0.96^(tψ)), Π_t = Π μ_i; with Adam's m, v and
    denom = √(v/(1−β₂ᵗ)) + ε: x ← x − η(1−μ_t)/(1−Π_t) · d/denom − η μ_{t+1}/(1−Π_t μ_{t+1}) · m/denom."""

    slots = staticmethod(lambda hp: 2)  # exp_avg, exp_avg_sq (mu_product is a scalar)

    @staticmethod
    def init(x, hp):
        # torch keeps Π_t in its scalar dtype: float32 unless the default dtype is float64
        scalar = torch.float64 if torch.get_default_dtype() == torch.float64 else torch.float32
        return {"m": _zeros(x), "v": _zeros(x), "mu_product": torch.ones_like(hp["lr"], dtype=scalar)}

    @staticmethod
    def step(x, g, state, hp, t):
        beta1, psi, lr = hp["beta1"], hp["momentum_decay"], hp["lr"]
        bc2 = 1 - hp["beta2"] ** t
        if hp["decoupled_weight_decay"]:
            x.mul_(1 - lr * hp["weight_decay"])
            d = g
        else:
            d = g + hp["weight_decay"] * x
        mu = beta1 * (1.0 - 0.5 * 0.96 ** (t * psi))
        mu_next = beta1 * (1.0 - 0.5 * 0.96 ** ((t + 1) * psi))
        state["mu_product"] = state["mu_product"] * mu.to(state["mu_product"].dtype)
        _adam_moments(d, state, hp)
        denom = (state["v"] / bc2).sqrt() + hp["eps"]
        mu_product = state["mu_product"].to(x.dtype)
        x.add_((-lr * (1.0 - mu) / (1.0 - mu_product)) * d / denom)
        x.add_((-lr * mu_next) / (1.0 - mu_product * mu_next) * state["m"] / denom)


@_rule("radam")
class _RAdam:
    """RAdam (torch.optim.RAdam): ρ∞ = 2/(1−β₂) − 1, ρ_t = ρ∞ − 2tβ₂ᵗ/(1−β₂ᵗ); when ρ_t > 5,
    x ← x − η m̂ r_t √(1−β₂ᵗ)/(√v + ε) with r_t = √((ρ_t−4)(ρ_t−2)ρ∞ / ((ρ∞−4)(ρ∞−2)ρ_t)); else x ← x − η m̂."""

    slots = staticmethod(lambda hp: 2)  # exp_avg, exp_avg_sq

    init = staticmethod(adam_moments)

    @staticmethod
    def step(x, g, state, hp, t):
        lr, beta1, beta2 = hp["lr"], hp["beta1"], hp["beta2"]
        if hp["decoupled_weight_decay"]:
            x.mul_(1 - lr * hp["weight_decay"])
            d = g
        else:
            d = g + hp["weight_decay"] * x
        _adam_moments(d, state, hp)
        bc1, bc2 = 1 - beta1**t, 1 - beta2**t
        m_hat = state["m"] / bc1
        rho_inf = 2 / (1 - beta2) - 1
        rho_t = rho_inf - 2 * t * beta2**t / bc2
        rect = ((rho_t - 4) * (rho_t - 2) * rho_inf / ((rho_inf - 4) * (rho_inf - 2) * rho_t)).clamp_min(0).sqrt()
        adaptive = bc2.sqrt() / (state["v"].sqrt() + hp["eps"])
        x.sub_(torch.where(rho_t > 5.0, m_hat * lr * adaptive * rect, m_hat * lr))


@_rule("lion")
class _Lion:
    """Lion (pytorch_optimizer.Lion): decoupled decay x ← x(1 − ηλ); u = sign(β₁m + (1−β₁)g);
    x ← x − ηu; m ← β₂m + (1−β₂)g."""

    slots = staticmethod(lambda hp: 1)  # exp_avg

    @staticmethod
    def init(x, hp):
        return {"m": _zeros(x)}

    @staticmethod
    def step(x, g, state, hp, t):
        lr = hp["lr"]
        if hp["weight_decouple"]:
            x.mul_(1 - hp["weight_decay"] * (1.0 if hp["fixed_decay"] else lr))
        else:
            g = g + hp["weight_decay"] * x
        m = state["m"]
        update = (hp["beta1"] * m + (1 - hp["beta1"]) * g).sign()
        x.sub_(lr * update)
        m.mul_(hp["beta2"]).add_((1 - hp["beta2"]) * g)


@_rule("adopt")
class _ADOPT:
    """ADOPT (pytorch_optimizer.ADOPT; Taniguchi et al. 2024): decay first (decoupled x ← x(1 − ηλ), or
    λx added to g); at the first step only v ← g²; then with s the step count,
    u = clip(g / max(√v, ε), ±s^(1/4)), m ← β₁m + (1 − β₁)u, x ← x − ηm, and only then v ← β₂v + (1 − β₂)g²
    (the second moment of step s excludes g_s: the decorrelation that lets ADOPT converge for any β₂)."""

    slots = staticmethod(lambda hp: 2)  # exp_avg, exp_avg_sq

    init = staticmethod(adam_moments)

    @staticmethod
    def step(x, g, state, hp, t):
        lr = hp["lr"]
        if hp["weight_decouple"]:
            x.mul_(1 - hp["weight_decay"] * (1.0 if hp["fixed_decay"] else lr))
        else:
            g = g + hp["weight_decay"] * x
        m, v = state["m"], state["v"]
        if t == 1:
            v.addcmul_(g, g)
            return
        clip = t ** 0.25
        normed = (g / torch.maximum(v.sqrt(), hp["eps"])).clamp(-clip, clip)
        m.add_((1 - hp["beta1"]) * (normed - m))
        x.sub_(lr * m)
        v.mul_(hp["beta2"]).add_((1 - hp["beta2"]) * g * g)


@_rule("schedulefree-adamw", needs=[REPORTED])
class _ScheduleFreeAdamW:
    """Schedule-Free AdamW (pytorch_optimizer.ScheduleFreeAdamW; Defazio et al. 2024, Algorithm 1), training
    at y with z the base sequence and x the reported average: at step t, warm-up factor
    ρ_t = min(1, t/warmup_steps), η_t = ηρ_t, η_max = max(η_max, η_t), c_t = t^r η_max^p / Σ_{i≤t} i^r η_max,i^p
    (p = weight_lr_power; with decoupling_c = C > 0, c_t ← min(1, c_t(1 − β₁)C));
    v ← β₂v + (1 − β₂)g², u = g/(√(v/(1 − β₂ᵗ) + 1e-15) + ε) + λy (AMSBound: the running maximum of v/(1 − β₂ᵗ));
    y ← y + c_t(z − y) + η_t(β₁(1 − c_t) − 1)u, z ← z − η_t u. Reported: x = y + (1 − 1/β₁)(z − y)."""

    slots = staticmethod(lambda hp: 2 + int(hp["ams_bound"]))  # z, exp_avg_sq (, max_exp_avg_sq)

    @staticmethod
    def init(x, hp):
        column = torch.zeros_like(x[:, :1])
        return {"z": x.clone(), "v": _zeros(x), "vmax": _zeros(x), "weight_sum": column.clone(),
                "lr_max": column - 1.0}

    @staticmethod
    def step(x, g, state, hp, t):
        beta1, beta2 = hp["beta1"], hp["beta2"]
        warmup = hp["warmup_steps"]
        lr = hp["lr"] * torch.where(t < warmup, t / warmup, torch.ones_like(warmup))
        state["lr_max"] = lr_max = torch.maximum(lr, state["lr_max"])
        weight = (t ** hp["r"]) * lr_max ** hp["weight_lr_power"]
        state["weight_sum"] = weight_sum = state["weight_sum"] + weight
        checkpoint = torch.where(weight_sum != 0, weight / weight_sum, torch.zeros_like(weight))
        c = hp["decoupling_c"]
        checkpoint = torch.where(c > 0, torch.clamp(checkpoint * (1 - beta1) * c, max=1.0), checkpoint)
        v = state["v"]
        v.mul_(beta2).add_((1 - beta2) * g * g)
        corrected = v / (1 - beta2 ** t)
        if hp["ams_bound"]:
            torch.maximum(state["vmax"], corrected, out=state["vmax"])
            corrected = state["vmax"]
        u = g / ((corrected + 1e-15).sqrt() + hp["eps"]) + hp["weight_decay"] * x
        z = state["z"]
        x.add_(checkpoint * (z - x)).add_(lr * (beta1 * (1 - checkpoint) - 1) * u)
        z.sub_(lr * u)

    @staticmethod
    def reported(x, state, hp):
        return x + (1 - 1 / hp["beta1"]) * (state["z"] - x)


@_rule("newton", needs=[HESSIAN])
class _Newton:
    """Newton (optbench.optimizers.handwritten.Newton): x ← x − η (H + λI)⁻¹ g, H per configuration."""

    @staticmethod
    def init(x, hp):
        return {}

    @staticmethod
    def step(x, g, state, hp, t):
        hessian = state["hessian"]  # [K, d, d], provided by the engine
        eye = torch.eye(x.shape[-1], dtype=x.dtype, device=x.device)
        matrix = hessian + hp["damping"][..., None] * eye
        solution, info = torch.linalg.solve_ex(matrix, g)
        bad = (info != 0) | ~torch.isfinite(solution).all(dim=-1)
        if bool(bad.any()):
            lstsq = torch.linalg.lstsq(matrix, g.unsqueeze(-1)).solution.squeeze(-1)
            solution = torch.where(bad[:, None], lstsq, solution)
        x.sub_(hp["lr"] * solution)


@_rule("lars", needs=[LAYERS])
class _LARS:
    """LARS (pytorch_optimizer.LARS), parameter tensor by parameter tensor. For a tensor with ``ndim > 1``
    (a weight matrix or kernel) with norms ‖x‖, ‖g‖ of that tensor: r = ξ‖x‖/(‖g‖ + λ‖x‖) (1 when ‖x‖ = 0
    or the denominator is 0; ξ = trust_coefficient), d = (g + λx)·r; for 1-D tensors (biases, an analytic
    problem's ``[d]`` vector) d = g, no decay, no scaling. Then momentum SGD with a zero-initialised
    buffer: b ← μb + (1 − τ)d; d ← d + μb (Nesterov) or b; x ← x − ηd (μ = 0: x ← x − ηd).
    You, Gitman & Ginsburg 2017, "Large Batch Training of Convolutional Networks"."""

    slots = staticmethod(lambda hp: int(hp["momentum"] > 0))  # momentum buffer

    @staticmethod
    def init(x, hp):
        return {"buf": _zeros(x)}

    @staticmethod
    def step(x, g, state, hp, t):
        layout = state["layout"]
        if layout.has_matrices:
            wd = hp["weight_decay"]
            param_norm, grad_norm = layout.norms(x), layout.norms(g)
            denominator = grad_norm + wd * param_norm
            trust = torch.where(param_norm > 0.0,
                                torch.where(denominator > 0.0, hp["trust_coefficient"] * param_norm / denominator,
                                            1.0), 1.0)
            g = torch.where(layout.matrix_columns, (g + wd * x) * layout.spread(trust), g)
        momentum = hp["momentum"]
        buf = state["buf"].mul_(momentum).add_((1 - hp["dampening"]) * g)
        with_momentum = g + momentum * buf if hp["nesterov"] else buf
        x.sub_(hp["lr"] * torch.where(momentum > 0, with_momentum, g))


LAMB_WEIGHT_NORM_CLAMP = 10.0  # pytorch_optimizer.Lamb.clamp


@_rule("lamb", needs=[LAYERS])
class _LAMB:
    """LAMB (pytorch_optimizer.Lamb, no rectify, no pre-norm), parameter tensor by parameter tensor:
    m ← β₁m + β₃g (β₃ = 1 − β₁ with grad averaging, else 1); v ← β₂v + (1 − β₂)g²; decoupled decay
    x ← x(1 − λη) (λ unscaled by η when fixed_decay); u = m/(√v + ε) (+ λx when coupled); per tensor,
    r = min(‖x‖, 10)/(‖u‖ + ε) with the norms of that tensor (1 when either is 0); x ← x − η/(1 − β₁ᵗ) · r · u.
    An analytic problem's ``[d]`` vector is one tensor. You et al. 2020, "Large Batch Optimization for Deep
    Learning: Training BERT in 76 minutes"."""

    slots = staticmethod(lambda hp: 2)  # exp_avg, exp_avg_sq

    init = staticmethod(adam_moments)

    @staticmethod
    def step(x, g, state, hp, t):
        lr, beta1, beta2, wd, eps = hp["lr"], hp["beta1"], hp["beta2"], hp["weight_decay"], hp["eps"]
        layout = state["layout"]
        beta3 = 1 - beta1 if hp["grad_averaging"] else torch.ones_like(beta1)
        state["m"].mul_(beta1).add_(beta3 * g)
        state["v"].mul_(beta2).add_((1 - beta2) * g * g)
        if hp["weight_decouple"]:
            x.mul_(1 - wd * (1.0 if hp["fixed_decay"] else lr))
        update = state["m"] / (state["v"].sqrt() + eps)
        if not hp["weight_decouple"]:
            update = update + wd * x
        weight_norm = layout.norms(x).clamp(max=LAMB_WEIGHT_NORM_CLAMP)
        update_norm = layout.norms(update)
        trust = torch.where((weight_norm == 0) | (update_norm == 0), 1.0, weight_norm / (update_norm + eps))
        x.sub_(lr / (1 - beta1**t) * layout.spread(trust) * update)


from optbench.engines import (  # noqa: E402,F401  (each module registers its rules)
    batched_rules_modern,  # Muon, Shampoo, Prodigy
    rules_adamlike,
    rules_dadapt,  # the five D-Adaptation classes
    rules_dash,  # DASH (block Shampoo, Newton–Denman–Beavers roots)
    rules_factored,
    rules_groups,
    rules_hessian,  # Sophia-H, AdaHessian
    rules_kron,  # Kron (PSGD) on a vector
    rules_lbfgs,  # L-BFGS (torch.optim.LBFGS without a line search)
    rules_memory,
    rules_misc,  # DualAdam, AvaGrad, SPlus, ApolloDQN, AdaGC
    rules_momentum,
    rules_pertensor,
    rules_recent,
    rules_schedulefree,  # Schedule-Free SGD and RAdam
    rules_soap,
    rules_variance,  # MARS, Adai, AdamS
    rules_zeroorder,  # SPSA, forward gradient
)
