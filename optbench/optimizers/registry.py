"""The optimizer registry: names mapped to library classes, with documented defaults and capabilities.

Entries are declared statically (no torch import) so that ``optbench list`` stays instant; a test checks
every declared default against the library class's own signature. Defaults follow torch.optim unless the
name implies otherwise (``sgd-momentum``: momentum 0.9; ``nag``: momentum 0.9 with Nesterov).
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from optbench.errors import SpecError, unknown_name
from optbench.params import Param, beta_pair, nonnegative, positive, unit_interval, validate_kwargs
from optbench.spec import Spec, format_spec, parse_spec


@dataclass(frozen=True)
class OptimizerEntry:
    """A registered optimizer.

    ``target`` is ``"module:Class"`` of a ``torch.optim.Optimizer`` subclass, imported on first use.
    ``batched`` names the rule in :mod:`optbench.engines.batched_rules` that reproduces the class's update
    over a leading configuration axis, or is None when only the loop engine can run it.
    """

    name: str
    target: str
    source: str  # "torch.optim", "pytorch_optimizer", "optbench" or "user"
    params: dict[str, Param]
    doc: str
    reference: str = ""
    batched: str | None = None
    needs_closure: bool = False  # calls the closure several times per step (L-BFGS, zero-order methods)
    needs_hessian: bool = False
    max_dim: int | None = None  # largest problem dimension it is practical for (Newton: dense Hessian)
    fixed: dict[str, Any] = field(default_factory=dict)  # constructor kwargs implied by the name
    seeded: bool = False  # draws random directions: the engine passes seed= derived from the run seed

    def resolve_class(self) -> Callable[..., Any]:
        module, _, attr = self.target.partition(":")
        return getattr(importlib.import_module(module), attr)

    def build(self, params: Any, hyperparams: dict[str, Any], dtype: Any = None, seed: int | None = None):
        """Instantiate the optimizer on ``params`` with resolved hyperparameters."""
        kwargs = {**self.fixed, **hyperparams}
        if self.seeded:
            from optbench.problems.base import derive_seed

            kwargs["seed"] = derive_seed(seed or 0, "directions")
        if self.target.endswith(":AdaFactor") and dtype is not None:
            kwargs["momentum_dtype"] = dtype  # its default (bfloat16) would round float64 runs
        return self.resolve_class()(params, **kwargs)


@dataclass(frozen=True)
class OptimizerConfig:
    """An optimizer with validated hyperparameters: what one run uses."""

    entry: OptimizerEntry
    hyperparams: dict[str, Any]  # every hyperparameter, defaults filled in
    given: dict[str, Any]  # what the user set explicitly (for labels)

    @property
    def name(self) -> str:
        return self.entry.name

    @property
    def lr(self) -> float | None:
        lr = self.hyperparams.get("lr")
        return float(lr) if isinstance(lr, (int, float)) else None

    @property
    def label(self) -> str:
        """Short label: the name and the hyperparameters the user set, e.g. ``adam(lr=0.01)``."""
        return format_spec(self.entry.name, self.given)

    @property
    def spec(self) -> Spec:
        return Spec(self.entry.name, dict(self.given))

    def with_hyperparams(self, **updates: Any) -> OptimizerConfig:
        given = {**self.given, **updates}
        hp = validate_kwargs(f"optimizer {self.entry.name!r}", given, self.entry.params)
        return OptimizerConfig(self.entry, hp, given)


OPTIMIZERS: dict[str, OptimizerEntry] = {}


def register_optimizer(entry: OptimizerEntry) -> OptimizerEntry:
    if entry.name in OPTIMIZERS:
        raise ValueError(f"optimizer {entry.name!r} registered twice")
    OPTIMIZERS[entry.name] = entry
    return entry


def list_optimizers() -> list[OptimizerEntry]:
    return sorted(OPTIMIZERS.values(), key=lambda e: e.name)


def get_optimizer_entry(name: str) -> OptimizerEntry:
    if ":" in name:
        from optbench.optimizers.user import user_optimizer_entry

        return user_optimizer_entry(name)
    if name not in OPTIMIZERS:
        raise unknown_name("optimizer", name, OPTIMIZERS)
    return OPTIMIZERS[name]


def get_optimizer(spec: str | Spec) -> OptimizerConfig:
    """Resolve a spec such as ``"adam(lr=3e-3)"`` or ``"my_pkg.optim:MyAdam(lr=1e-3)"``."""
    if isinstance(spec, str):
        spec = parse_spec(spec)
    entry = get_optimizer_entry(spec.name)
    hp = validate_kwargs(f"optimizer {entry.name!r}", spec.kwargs, entry.params)
    return OptimizerConfig(entry, hp, dict(spec.kwargs))


# ---- shared parameter declarations -----------------------------------------------------------

def _lr(default: float) -> Param:
    return positive("learning rate", default)


def _wd(default: float = 0.0) -> Param:
    return nonnegative("weight decay (L2 added to the gradient unless the optimizer decouples it)", default)


def _eps(default: float) -> Param:
    return nonnegative("term added to the denominator for numerical stability", default)


def _bool(default: bool, doc: str) -> Param:
    return Param(default, doc, types=(bool,))


def _sgd_params(momentum: float, nesterov: bool) -> dict[str, Param]:
    return {
        "lr": _lr(1e-3),
        "momentum": unit_interval("momentum factor μ", momentum),
        "dampening": unit_interval("dampening of the momentum", 0.0),
        "weight_decay": _wd(),
        "nesterov": _bool(nesterov, "use Nesterov momentum"),
    }


def _adam_params(lr: float = 1e-3, wd: float = 0.0) -> dict[str, Param]:
    return {"lr": _lr(lr), "betas": beta_pair("coefficients of the running averages of g and g²"),
            "eps": _eps(1e-8), "weight_decay": _wd(wd)}


def _torch(name: str, cls: str, params: dict[str, Param], doc: str, reference: str = "",
           batched: str | None = None, **kw: Any) -> None:
    register_optimizer(OptimizerEntry(name, f"torch.optim:{cls}", "torch.optim", params, doc, reference,
                                      batched, **kw))


def _po(name: str, cls: str, params: dict[str, Param], doc: str, reference: str = "",
        batched: str | None = None, **kw: Any) -> None:
    register_optimizer(OptimizerEntry(name, f"pytorch_optimizer:{cls}", "pytorch_optimizer", params, doc,
                                      reference, batched, **kw))


# ---- torch.optim -------------------------------------------------------------------------------

_torch("sgd", "SGD", _sgd_params(0.0, False),
       "Stochastic gradient descent: x ← x − η g.", "Robbins & Monro 1951", batched="sgd")
_torch("sgd-momentum", "SGD", _sgd_params(0.9, False),
       "Heavy-ball momentum: b ← μ b + g, x ← x − η b (torch.optim.SGD, momentum 0.9).",
       "Polyak 1964", batched="sgd")
_torch("nag", "SGD", _sgd_params(0.9, True),
       "Nesterov momentum: b ← μ b + g, x ← x − η (g + μ b) (torch.optim.SGD, momentum 0.9, nesterov).",
       "Nesterov 1983; Sutskever et al. 2013", batched="sgd")
_torch("adagrad", "Adagrad",
       {"lr": _lr(1e-2), "lr_decay": nonnegative("learning-rate decay", 0.0), "weight_decay": _wd(),
        "initial_accumulator_value": nonnegative("initial value of Σ g²", 0.0), "eps": _eps(1e-10)},
       "AdaGrad: s ← s + g², x ← x − η g / (√s + ε).", "Duchi et al. 2011", batched="adagrad")
_torch("rmsprop", "RMSprop",
       {"lr": _lr(1e-2), "alpha": unit_interval("smoothing constant of the g² average", 0.99),
        "eps": _eps(1e-8), "weight_decay": _wd(), "momentum": unit_interval("momentum factor", 0.0),
        "centered": _bool(False, "divide by the centred variance estimate")},
       "RMSprop: v ← α v + (1 − α) g², x ← x − η g / (√v + ε).", "Hinton 2012 (lecture 6e)",
       batched="rmsprop")
_torch("adadelta", "Adadelta",
       {"lr": _lr(1.0), "rho": unit_interval("decay of the running averages", 0.9), "eps": _eps(1e-6),
        "weight_decay": _wd()},
       "AdaDelta: v ← ρv + (1−ρ)g², Δ = √(u+ε)/√(v+ε)·g, u ← ρu + (1−ρ)Δ², x ← x − η Δ.",
       "Zeiler 2012", batched="adadelta")
_torch("adam", "Adam", {**_adam_params(), "amsgrad": _bool(False, "use the AMSGrad maximum")},
       "Adam: m ← β₁m + (1−β₁)g, v ← β₂v + (1−β₂)g², x ← x − η m̂ / (√v̂ + ε) with bias-corrected m̂, v̂.",
       "Kingma & Ba 2015", batched="adam")
_torch("adamw", "AdamW", {**_adam_params(wd=1e-2), "amsgrad": _bool(False, "use the AMSGrad maximum")},
       "AdamW: Adam with decoupled weight decay x ← x − ηλx before the Adam step.",
       "Loshchilov & Hutter 2019", batched="adamw")
_torch("adamax", "Adamax", {**_adam_params(lr=2e-3)},
       "Adamax: u ← max(β₂u, |g| + ε), x ← x − η/(1−β₁ᵗ) · m / u.", "Kingma & Ba 2015, §7",
       batched="adamax")
_torch("nadam", "NAdam",
       {**_adam_params(lr=2e-3), "momentum_decay": nonnegative("momentum decay ψ", 4e-3),
        "decoupled_weight_decay": _bool(False, "decouple the weight decay (NAdamW)")},
       "NAdam: Adam with Nesterov momentum and the μ_t = β₁(1 − ½·0.96^(tψ)) schedule.",
       "Dozat 2016", batched="nadam")
_torch("radam", "RAdam",
       {**_adam_params(), "decoupled_weight_decay": _bool(False, "decouple the weight decay")},
       "RAdam: Adam whose adaptive step is rectified by r_t while the variance estimate is unreliable "
       "(ρ_t ≤ 5: plain momentum SGD).", "Liu et al. 2020", batched="radam")
_torch("lbfgs", "LBFGS",
       {"lr": _lr(1.0), "max_iter": Param(20, "iterations per step", lambda v: v >= 1, ">= 1", (int,)),
        "max_eval": Param(None, "function evaluations per step (default max_iter·1.25)",
                          lambda v: v >= 1, ">= 1", (int,)),
        "tolerance_grad": nonnegative("termination tolerance on the gradient", 1e-7),
        "tolerance_change": nonnegative("termination tolerance on changes", 1e-9),
        "history_size": Param(100, "number of curvature pairs kept", lambda v: v >= 1, ">= 1", (int,)),
        "line_search_fn": Param(None, "None or 'strong_wolfe'", lambda v: v == "strong_wolfe",
                                "None or 'strong_wolfe'", (str,))},
       "L-BFGS (torch.optim.LBFGS): quasi-Newton with a limited history; one step runs up to max_iter "
       "inner iterations and calls the loss several times.", "Liu & Nocedal 1989", needs_closure=True)

# ---- pytorch_optimizer -------------------------------------------------------------------------

_decouple = {"weight_decouple": _bool(True, "decoupled weight decay"),
             "fixed_decay": _bool(False, "weight decay not scaled by the learning rate")}
_po("lion", "Lion", {"lr": _lr(1e-4), "betas": beta_pair("interpolation and momentum coefficients", (0.9, 0.99)),
                      "weight_decay": _wd(), **_decouple},
    "Lion: x ← x − η sign(β₁m + (1−β₁)g), then m ← β₂m + (1−β₂)g.", "Chen et al. 2023", batched="lion")
_po("lars", "LARS",
    {"lr": _lr(1e-3), "weight_decay": _wd(), "momentum": unit_interval("momentum factor", 0.9),
     "dampening": unit_interval("dampening of the momentum", 0.0),
     "trust_coefficient": positive("trust coefficient η_LARS", 1e-3),
     "nesterov": _bool(False, "use Nesterov momentum")},
    "LARS: momentum SGD with a layer-wise step scaled by the trust ratio ‖x‖ / ‖g‖. pytorch_optimizer applies "
    "the trust ratio and weight decay only to parameters with ndim > 1, so on an analytic problem (one 1-D "
    "vector) it is momentum SGD.", "You et al. 2017", batched="lars")
_po("lamb", "Lamb",
    {**_adam_params(), "eps": _eps(1e-6), **_decouple,
     "max_grad_norm": nonnegative("global gradient-norm clip; pytorch_optimizer applies it only with "
                                     "pre_norm=True, which optbench leaves off, so it has no effect", 1.0),
     "grad_averaging": _bool(True, "scale the gradient by (1 − β₁) in the first moment")},
    "LAMB: Adam's step rescaled per layer by the trust ratio ‖x‖ / ‖update‖.", "You et al. 2020", batched="lamb")
_po("novograd", "NovoGrad",
    {"lr": _lr(1e-3), "betas": beta_pair("coefficients of the moments", (0.95, 0.98)), "eps": _eps(1e-8),
     "weight_decay": _wd(), "grad_averaging": _bool(False, "scale the gradient by (1 − β₁)"), **{
         "weight_decouple": _bool(False, "decoupled weight decay")}},
    "NovoGrad: layer-wise second moment of the gradient norm, Adam-like first moment.",
    "Ginsburg et al. 2019")
def _adafactor_betas_check(v: Any) -> bool:
    def unit(b: Any) -> bool:
        return isinstance(b, (int, float)) and not isinstance(b, bool) and 0 <= b < 1

    return len(v) == 2 and (v[0] is None or unit(v[0])) and unit(v[1])


_po("adafactor", "AdaFactor",
    {"lr": Param(1e-3, "learning rate (ignored while relative_step is True)", lambda v: v > 0, "> 0",
                 (int, float)),
     "betas": Param((0.9, 0.999), "(β₁, unused): β₁ enables first-moment momentum; None disables it",
                    _adafactor_betas_check, "a pair (beta1 or None, beta2) with each in [0, 1)", (tuple, list)),
     "decay_rate": Param(-0.8, "exponent of the second-moment decay 1 − t^decay_rate", lambda v: v < 0, "< 0"),
     "weight_decay": _wd(), "clip_threshold": positive("update clipping threshold d", 1.0),
     "scale_parameter": _bool(True, "scale the step by the parameter RMS"),
     "relative_step": _bool(True, "use the relative step size min(1e-2, 1/√t)"),
     "warmup_init": _bool(False, "warm-up initialisation of the relative step")},
    "Adafactor: factored second moment (row and column averages) for matrices; sub-linear memory.",
    "Shazeer & Stern 2018")
_po("sm3", "SM3",
    {"lr": _lr(0.1), "momentum": unit_interval("momentum factor", 0.0),
     "beta": unit_interval("exponential averaging of the accumulators (0: sum)", 0.0), "eps": _eps(1e-30)},
    "SM3: AdaGrad with accumulators shared over rows and columns (cover sets); sub-linear memory.",
    "Anil et al. 2019")

# ---- hand-written (no library ships them) -------------------------------------------------------

register_optimizer(OptimizerEntry(
    "newton", "optbench.optimizers.handwritten:Newton", "optbench",
    {"lr": _lr(1.0), "damping": nonnegative("Levenberg damping λ added to the Hessian diagonal", 0.0)},
    "Newton's method with the exact Hessian: x ← x − η (H + λI)⁻¹ g. Dense, for small problems.",
    "Nocedal & Wright 2006, ch. 3", batched="newton", needs_closure=True, needs_hessian=True,
    max_dim=2000))
register_optimizer(OptimizerEntry(
    "spsa", "optbench.optimizers.handwritten:SPSA", "optbench",
    {"lr": _lr(1e-3), "c": positive("perturbation size c", 1e-2),
     "alpha": nonnegative("decay exponent of the step a_t = η / t^α (0: constant)", 0.0),
     "gamma": nonnegative("decay exponent of the perturbation c_t = c / t^γ (0: constant)", 0.0)},
    "SPSA, zero-order: Δ ~ Rademacher, ĝ = (f(x + cΔ) − f(x − cΔ)) / (2c) · Δ, x ← x − η ĝ. "
    "Two loss evaluations per step, no gradients.", "Spall 1992", needs_closure=True, seeded=True))
register_optimizer(OptimizerEntry(
    "forward-grad", "optbench.optimizers.handwritten:ForwardGradient", "optbench",
    {"lr": _lr(1e-3)},
    "Forward gradient descent: v ~ N(0, I), ĝ = (∇f·v) v from one forward-mode JVP (no backprop), "
    "x ← x − η ĝ. ĝ is an unbiased estimate of ∇f.", "Baydin et al. 2022", needs_closure=True,
    seeded=True))


def check_lr_override(config: OptimizerConfig, lrs: list[float] | None) -> None:
    """Reject ``--lr`` for an optimizer whose spec already fixes ``lr``."""
    if lrs and "lr" in config.given:
        raise SpecError(
            f"Learning rate given twice for {config.label!r}: drop lr= from the spec or drop --lr."
        )
    if lrs and "lr" not in config.entry.params:
        raise SpecError(f"Optimizer {config.name!r} has no learning rate, so --lr does not apply to it.")
