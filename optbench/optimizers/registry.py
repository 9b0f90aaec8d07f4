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

from optbench.errors import SpecError
from optbench.params import Param, beta_pair, nonnegative, positive, unit_interval, validate_kwargs
from optbench.registry import Registry
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
    # where this class differs from the paper in ``reference`` ("none known: ..." once checked); never empty
    deviations: str = ""
    # capabilities beyond a gradient and step() (optbench.optimizers.catalogue describes each; engines honour them)
    create_graph: bool = False  # backward(create_graph=True): Hessian-vector products of the gradient
    schedule_free: bool = False  # eval()/train(): reports (and is recorded at) another point than it trains at
    lr_free: bool = False  # lr multiplies a step size the method estimates; its own default search space
    # never sees a gradient (zero-order, forward-mode): gradient clipping (--clip-norm/--clip-value) cannot reach it
    gradient_free: bool = False
    # keeps its momentum in the parameters' .grad (scaled in step()), so each backward pass must add the new
    # gradient to it: the engines keep .grad between steps instead of setting it afresh (SCIONLight)
    accumulates_grad: bool = False
    param_groups: str | None = None  # a parameter-group policy of build(): "muon" (matrices on Muon, rest AdamW)
    matrix_only: str = ""  # what it does on a vector (every analytic problem), for a method meant for matrices
    unsupported: str = ""  # why optbench cannot meet its needs: listed, and refused with this reason
    generated: bool = False  # from pytorch_optimizer's signature (optbench.optimizers.catalogue), not curated

    def resolve_class(self) -> Callable[..., Any]:
        module, _, attr = self.target.partition(":")
        return getattr(importlib.import_module(module), attr)

    def build(self, params: Any, hyperparams: dict[str, Any], dtype: Any = None, seed: int | None = None):
        """Instantiate the optimizer on ``params`` with resolved hyperparameters."""
        kwargs = {**self.fixed, **hyperparams}
        if self.seeded:
            from optbench.randomness import derive_seed

            kwargs["seed"] = derive_seed(seed or 0, "directions")
        if self.target.endswith(":AdaFactor") and dtype is not None:
            kwargs["momentum_dtype"] = dtype  # its default (bfloat16) would round float64 runs
        if self.param_groups == "muon":
            params = muon_groups(params)
        return self.resolve_class()(params, **kwargs)

    @property
    def shared_layout(self) -> str | None:
        """How K analytic trials of it that differ only in lr share one object ("stacked": one parameter for all;
        "tensors": one per trial; "groups": one parameter group per trial), or None (measured per class:
        :mod:`optbench.engines.stacked`)."""
        from optbench.optimizers.stacking import SHARED

        return SHARED.get(self.name)

    def capabilities(self) -> list[str]:
        """Short statements of what the engines do for this optimizer beyond setting ``.grad`` and ``step()``."""
        out = []
        if self.needs_closure:
            out.append("calls the loss closure in step()")
        if self.needs_hessian:
            out.append("Hessian" + (" (Hutchinson products: backward with create_graph=True)" if self.create_graph
                                    else ""))
        if self.schedule_free:
            out.append("schedule-free: eval() before every recorded value, train() before each gradient")
        if self.lr_free:
            out.append("lr-free: lr is a multiplier (tuned over 0.1 to 10)")
        if self.gradient_free:
            out.append("gradient-free: estimates its direction from loss values, so gradient clipping does not apply")
        if self.accumulates_grad:
            out.append("momentum kept in .grad: each backward pass adds to it (the engines never clear it)")
        if self.param_groups == "muon":
            out.append("parameter groups: matrices on Muon, the rest on AdamW")
        if self.matrix_only:
            out.append(f"meant for matrices: {self.matrix_only}")
        if self.unsupported:
            out.append(f"unsupported: {self.unsupported}")
        if self.shared_layout is not None and self.batched is None:  # with a rule: only --engine loop rounds
            what = {"stacked": "elementwise and linear in lr", "tensors": "linear in lr, per tensor",
                    "groups": "per parameter group"}[self.shared_layout]
            out.append(f"{what} (measured): analytic trials of it share one object")
        return out


def muon_groups(params: Any) -> list[dict[str, Any]]:
    """The usual Muon setup as parameter groups: matrices (ndim ≥ 2) orthogonalised (``use_muon=True``), every
    other tensor (biases, gains, an analytic problem's vector) in the class's AdamW group. Empty groups are left
    out. Given parameter groups already (``no_decay=``), each is split so, keeping its own settings."""
    params = list(params)
    if params and isinstance(params[0], dict):
        return [{**{k: v for k, v in group.items() if k != "params"}, **split}
                for group in params for split in muon_groups(group["params"])]
    matrices = [p for p in params if p.ndim >= 2]
    others = [p for p in params if p.ndim < 2]
    return [{"params": group, "use_muon": flag} for group, flag in ((matrices, True), (others, False)) if group]


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


OPTIMIZERS: Registry[OptimizerEntry] = Registry("optimizer")
USER_DEVIATIONS = "unknown: a user class, which optbench has not compared with any paper"


def deviations_of(name: str) -> str:
    """What optimizer ``name`` (a registry name or a user reference, as stored in results) does differently
    from its paper, without importing anything: user classes are not loaded, they are "unknown"."""
    entry = OPTIMIZERS.find(name)
    return entry.deviations if entry is not None else USER_DEVIATIONS


def register_optimizer(entry: OptimizerEntry) -> OptimizerEntry:
    if not entry.deviations.strip():
        raise ValueError(f"optimizer {entry.name!r}: state its deviations from {entry.reference or 'its paper'} "
                         "(or 'none known: ...' once checked)")
    return OPTIMIZERS.register(entry.name, entry)


def list_optimizers() -> list[OptimizerEntry]:
    return sorted(OPTIMIZERS.values(), key=lambda e: e.name)


def get_optimizer_entry(name: str) -> OptimizerEntry:
    if ":" in name:
        from optbench.optimizers.user import user_optimizer_entry

        return user_optimizer_entry(name)
    return OPTIMIZERS.get(name)


def get_optimizer(spec: str | Spec) -> OptimizerConfig:
    """Resolve a spec such as ``"adam(lr=3e-3)"`` or ``"my_pkg.optim:MyAdam(lr=1e-3)"``."""
    if isinstance(spec, str):
        spec = parse_spec(spec)
    entry = get_optimizer_entry(spec.name)
    if entry.unsupported:
        raise SpecError(f"Optimizer {entry.name!r} ({entry.target}) is listed but not supported: {entry.unsupported}.")
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
           batched: str | None = None, *, deviations: str, **kw: Any) -> None:
    register_optimizer(OptimizerEntry(name, f"torch.optim:{cls}", "torch.optim", params, doc, reference,
                                      batched, deviations=deviations, **kw))


def _po(name: str, cls: str, params: dict[str, Param], doc: str, reference: str = "",
        batched: str | None = None, *, deviations: str, **kw: Any) -> None:
    register_optimizer(OptimizerEntry(name, f"pytorch_optimizer:{cls}", "pytorch_optimizer", params, doc,
                                      reference, batched, deviations=deviations, **kw))


def _paper(name: str, cls: str, params: dict[str, Param], doc: str, reference: str, **kw: Any) -> None:
    """A paper-faithful class of :mod:`optbench.optimizers.paper` (written from the paper, tested against it)."""
    register_optimizer(OptimizerEntry(name, f"optbench.optimizers.paper:{cls}", "optbench", params, doc, reference,
                                      deviations=kw.pop("deviations", "none known: written from the paper's "
                                                        "algorithm and tested against it"), **kw))


# ---- torch.optim -------------------------------------------------------------------------------

_torch("sgd", "SGD", _sgd_params(0.0, False),
       "Stochastic gradient descent: x ← x − η g.", "Robbins & Monro 1951", batched="sgd",
       deviations="none known.")
_torch("sgd-momentum", "SGD", _sgd_params(0.9, False),
       "Heavy-ball momentum: b ← μ b + g, x ← x − η b (torch.optim.SGD, momentum 0.9).",
       "Polyak 1964", batched="sgd",
       deviations="none known for a constant learning rate. torch keeps η outside the buffer (b ← μb + g, "
                  "x ← x − ηb); Polyak's v ← μv − ηg, x ← x + v is the same only while η is constant: under an lr "
                  "schedule torch rescales all past gradients by the current η.")
_torch("nag", "SGD", _sgd_params(0.9, True),
       "Nesterov momentum: b ← μ b + g, x ← x − η (g + μ b) (torch.optim.SGD, momentum 0.9, nesterov).",
       "Nesterov 1983; Sutskever et al. 2013", batched="sgd",
       deviations="torch's Nesterov step is Sutskever et al. 2013's constant-μ reformulation, not Nesterov 1983's "
                  "scheme with its μ_t schedule; η sits outside the buffer, as in sgd-momentum (same as the "
                  "papers only while η is constant).")
_torch("adagrad", "Adagrad",
       {"lr": _lr(1e-2), "lr_decay": nonnegative("learning-rate decay", 0.0), "weight_decay": _wd(),
        "initial_accumulator_value": nonnegative("initial value of Σ g²", 0.0), "eps": _eps(1e-10)},
       "AdaGrad: s ← s + g², x ← x − η g / (√s + ε).", "Duchi et al. 2011", batched="adagrad",
       deviations="none known: ε is Duchi et al.'s δ added to √s. lr_decay (η / (1 + (t − 1)·lr_decay)) and "
                  "initial_accumulator_value are torch additions, off by default.")
_torch("rmsprop", "RMSprop",
       {"lr": _lr(1e-2), "alpha": unit_interval("smoothing constant of the g² average", 0.99),
        "eps": _eps(1e-8), "weight_decay": _wd(), "momentum": unit_interval("momentum factor", 0.0),
        "centered": _bool(False, "divide by the centred variance estimate")},
       "RMSprop: v ← α v + (1 − α) g², x ← x − η g / (√v + ε).", "Hinton 2012 (lecture 6e)",
       batched="rmsprop",
       deviations="the lecture uses α = 0.9 and no ε; torch defaults to α = 0.99 and adds ε outside √v. "
                  "momentum > 0 applies to the scaled step (b ← μb + g/(√v + ε), x ← x − ηb); centered=True is "
                  "Graves 2013's variant.")
_torch("adadelta", "Adadelta",
       {"lr": _lr(1.0), "rho": unit_interval("decay of the running averages", 0.9), "eps": _eps(1e-6),
        "weight_decay": _wd()},
       "AdaDelta: v ← ρv + (1−ρ)g², Δ = √(u+ε)/√(v+ε)·g, u ← ρu + (1−ρ)Δ², x ← x − η Δ.",
       "Zeiler 2012", batched="adadelta",
       deviations="Zeiler's rule has no learning rate (torch's default lr = 1.0 reproduces it), and his "
                  "experiments use ρ = 0.95 where torch defaults to ρ = 0.9.")
_torch("adam", "Adam", {**_adam_params(), "amsgrad": _bool(False, "use the AMSGrad maximum")},
       "Adam: m ← β₁m + (1−β₁)g, v ← β₂v + (1−β₂)g², x ← x − η m̂ / (√v̂ + ε) with bias-corrected m̂, v̂.",
       "Kingma & Ba 2015", batched="adam",
       deviations="none known: Algorithm 1 of Kingma & Ba, ε added to √v̂ as in the paper. weight_decay adds λx to "
                  "the gradient (L2; not in the paper). amsgrad=True divides the running max of v by (1 − β₂ᵗ), "
                  "which Reddi et al. 2018's Algorithm 2 does not.")
_torch("adamw", "AdamW", {**_adam_params(wd=1e-2), "amsgrad": _bool(False, "use the AMSGrad maximum")},
       "AdamW: Adam with decoupled weight decay x ← x − ηλx before the Adam step.",
       "Loshchilov & Hutter 2019", batched="adamw",
       deviations="torch multiplies the decay by the learning rate, x ← x(1 − ηλ); Algorithm 2 of Loshchilov & "
                  "Hutter multiplies λ only by the schedule multiplier, not by the step size α. A paper λ is "
                  "torch's weight_decay = λ/lr, and changing lr changes the decay per step.")
_torch("adamax", "Adamax", {**_adam_params(lr=2e-3)},
       "Adamax: u ← max(β₂u, |g| + ε), x ← x − η/(1−β₁ᵗ) · m / u.", "Kingma & Ba 2015, §7",
       batched="adamax",
       deviations="torch adds ε inside the maximum (u ← max(β₂u, |g| + ε)); the paper's §7.1 has no ε.")
_torch("nadam", "NAdam",
       {**_adam_params(lr=2e-3), "momentum_decay": nonnegative("momentum decay ψ", 4e-3),
        "decoupled_weight_decay": _bool(False, "decouple the weight decay (NAdamW)")},
       "NAdam: Adam with Nesterov momentum and the μ_t = β₁(1 − ½·0.96^(tψ)) schedule.",
       "Dozat 2016", batched="nadam",
       deviations="none known: Dozat's schedule μ_t = β₁(1 − ½·0.96^(tψ)) with ψ = 0.004 (= 1/250) and his "
                  "product-of-μ bias correction. decoupled_weight_decay=True (NAdamW) is a torch addition.")
_torch("radam", "RAdam",
       {**_adam_params(), "decoupled_weight_decay": _bool(False, "decouple the weight decay")},
       "RAdam: Adam whose adaptive step is rectified by r_t while the variance estimate is unreliable "
       "(ρ_t ≤ 5: plain momentum SGD).", "Liu et al. 2020", batched="radam",
       deviations="torch takes the rectified step when ρ_t > 5; Algorithm 2 of Liu et al. uses ρ_t > 4 (the "
                  "authors' code uses 5), so steps with 4 < ρ_t ≤ 5 (t = 5 at β₂ = 0.999) are plain momentum "
                  "steps here.")
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
       "inner iterations and calls the loss several times.", "Liu & Nocedal 1989", needs_closure=True,
       batched="lbfgs",  # without a line search only (the rule refuses strong_wolfe: Rule.refuses)
       deviations="without line_search_fn every inner iteration takes the fixed step lr (the first scaled by "
                  "min(1, 1/‖g‖₁)), not the Wolfe line search Liu & Nocedal assume; line_search_fn='strong_wolfe' "
                  "adds one. One optbench step is up to max_iter L-BFGS iterations.")

# ---- pytorch_optimizer -------------------------------------------------------------------------

_decouple = {"weight_decouple": _bool(True, "decoupled weight decay"),
             "fixed_decay": _bool(False, "weight decay not scaled by the learning rate")}
_po("lion", "Lion", {"lr": _lr(1e-4), "betas": beta_pair("interpolation and momentum coefficients", (0.9, 0.99)),
                      "weight_decay": _wd(), **_decouple},
    "Lion: x ← x − η sign(β₁m + (1−β₁)g), then m ← β₂m + (1−β₂)g.", "Chen et al. 2023", batched="lion",
    deviations="none known: decoupled decay x ← x(1 − ηλ) before the sign step equals Program 1's "
               "x ← x − η(sign(·) + λx). weight_decouple=False (λx added to g) and fixed_decay=True (decay not "
               "scaled by η) are library additions.")
_po("lars", "LARS",
    {"lr": _lr(1e-3), "weight_decay": _wd(), "momentum": unit_interval("momentum factor", 0.9),
     "dampening": unit_interval("dampening of the momentum", 0.0),
     "trust_coefficient": positive("trust coefficient η_LARS", 1e-3),
     "nesterov": _bool(False, "use Nesterov momentum")},
    "LARS: momentum SGD with a layer-wise step scaled by the trust ratio ‖x‖ / ‖g‖. pytorch_optimizer applies "
    "the trust ratio and weight decay only to parameters with ndim > 1, so on an analytic problem (one 1-D "
    "vector) it is momentum SGD.", "You et al. 2017", batched="lars",
    deviations="pytorch_optimizer applies the trust ratio and the weight decay only to parameters with ndim > 1 "
               "(Algorithm 1 of You et al. 2017 scales every layer): on a 1-D parameter, such as every analytic "
               "problem's, it is momentum SGD and weight_decay has no effect. Elsewhere the paper's local lr "
               "η·tc·‖x‖ / (‖g‖ + λ‖x‖), with ratio 1 when ‖x‖ = 0.")
_po("lamb", "Lamb",
    {**_adam_params(), "eps": _eps(1e-6), **_decouple,
     "max_grad_norm": nonnegative("global gradient-norm clip; pytorch_optimizer applies it only with "
                                     "pre_norm=True, which optbench leaves off, so it has no effect", 1.0),
     "grad_averaging": _bool(True, "scale the gradient by (1 − β₁) in the first moment")},
    "LAMB (pytorch_optimizer's): Adam's step rescaled per layer by the trust ratio ‖x‖ / ‖update‖.",
    "You et al. 2020", batched="lamb",
    deviations="differs from Algorithm 2 of You et al. 2020: the ratio uses the uncorrected m/(√v + ε) and the "
               "step is divided by (1 − β₁ᵗ) instead, so each layer moves η‖x‖/(1 − β₁ᵗ) where the paper moves "
               "η‖x‖ (10× at t = 1 with β₁ = 0.9); the decoupled decay x ← x(1 − ηλ) sits outside the trust "
               "ratio, where the paper normalises r + λx; ‖x‖ is clamped at 10 and ε is added to ‖update‖ in "
               "the ratio. The paper's algorithm is lamb-paper.")
_po("novograd", "NovoGrad",
    {"lr": _lr(1e-3), "betas": beta_pair("coefficients of the moments", (0.95, 0.98)), "eps": _eps(1e-8),
     "weight_decay": _wd(), "grad_averaging": _bool(False, "scale the gradient by (1 − β₁)"), **{
         "weight_decouple": _bool(False, "decoupled weight decay")}},
    "NovoGrad: layer-wise second moment of the gradient norm, Adam-like first moment.",
    "Ginsburg et al. 2019", batched="novograd",
    deviations="none known: Algorithm 1 of Ginsburg et al. (v₁ = ‖g₁‖², m₁ = g₁/√v₁ + λx, m ← β₁m + "
               "g/(√v + ε) + λx), except that ε is also added at t = 1. grad_averaging=True ((1 − β₁) on the new "
               "term) and weight_decouple=True are library additions, off by default.")
def _adafactor_betas_check(v: Any) -> bool:
    def unit(b: Any) -> bool:
        return isinstance(b, (int, float)) and not isinstance(b, bool) and 0 <= b < 1

    return len(v) == 2 and (v[0] is None or unit(v[0])) and unit(v[1])


_po("adafactor", "AdaFactor",
    {"lr": Param(1e-3, "learning rate (ignored while relative_step is True)", lambda v: v > 0, "> 0",
                 (int, float)),
     "betas": Param((0.9, 0.999), "(β₁, β₂): β₁ enables first-moment momentum (None disables it); β₂ caps the "
                    "second-moment decay, β̂₂ₜ = min(β₂, 1 − t^decay_rate)",
                    _adafactor_betas_check, "a pair (beta1 or None, beta2) with each in [0, 1)", (tuple, list)),
     "decay_rate": Param(-0.8, "exponent of the second-moment decay 1 − t^decay_rate", lambda v: v < 0, "< 0"),
     "weight_decay": _wd(), "clip_threshold": positive("update clipping threshold d", 1.0),
     "scale_parameter": _bool(True, "scale the step by the parameter RMS"),
     "relative_step": _bool(True, "use the relative step size min(1e-2, 1/√t)"),
     "warmup_init": _bool(False, "warm-up initialisation of the relative step")},
    "Adafactor (pytorch_optimizer's): factored second moment (row and column averages) for matrices; "
    "sub-linear memory.", "Shazeer & Stern 2018",
    deviations="its defaults are not the paper's Adafactor (Algorithms 4/5): β₁ = 0.9 adds a first moment the "
               "paper's Adafactor does not have; β₂ = 0.999 caps the decay, β̂₂ₜ = min(β₂, 1 − t^decay_rate), "
               "which binds from step (1 − β₂)^(1/decay_rate) ≈ 5624 on (the paper has no cap); lr is ignored "
               "while relative_step=True. With betas=(None, β₂) it follows the paper up to that step. "
               "scale_parameter=False, warmup_init and weight decay are library additions. The paper's "
               "algorithm is adafactor-paper.", batched="adafactor")
_po("sm3", "SM3",
    {"lr": _lr(0.1), "momentum": unit_interval("momentum factor", 0.0),
     "beta": unit_interval("exponential averaging of the accumulators (0: sum)", 0.0), "eps": _eps(1e-30)},
    "SM3: AdaGrad with accumulators shared over rows and columns (cover sets); sub-linear memory.",
    "Anil et al. 2019", batched="sm3",
    deviations="with beta = 0 (the default) none known: SM3-II of Anil et al. With beta > 0 each accumulator "
               "keeps a running maximum μ ← max(μ, max_{j∈r} ν) of ν = β·min μ + (1 − β)g², so it never "
               "decreases: not an average (on a vector, μ ← max(μ, βμ + (1 − β)g²)). "
               "sm3-paper replaces μ by max_{j∈r} ν, the average the authors' implementation describes.")

# ---- paper-faithful variants of pytorch_optimizer's classes (optbench/optimizers/paper.py) ----------

_paper("lamb-paper", "LambPaper",
       {"lr": _lr(1e-3), "betas": beta_pair("coefficients of the running averages of g and g²"), "eps": _eps(1e-6),
        "weight_decay": nonnegative("decoupled weight decay λ, inside the trust ratio", 0.0)},
       "LAMB as in the paper: r = m̂/(√v̂ + ε), x ← x − η ‖x‖/‖r + λx‖ · (r + λx) per layer, with bias-corrected "
       "m̂, v̂; each step moves a layer by η‖x‖.", "You et al. 2020, Algorithm 2 (arXiv:1904.00962)",
       batched="lamb-paper",
       deviations="none known: written from Algorithm 2 (φ(z) = z) and tested against it; the trust ratio is 1 "
                  "where ‖x‖ or ‖r + λx‖ is 0, as in the authors' implementation (the paper leaves it open).")
_paper("sm3-paper", "SM3Paper",
       {"lr": _lr(0.1), "momentum": unit_interval("momentum factor μ: m ← μm + (1 − μ)u", 0.0),
        "beta": unit_interval("exponential averaging of ν (0: the paper's sums)", 0.0), "eps": _eps(1e-30)},
       "SM3-II: ν = β·min_{r∋j} μ(r) + (1 − β)g² (β = 0: min μ + g²), μ(r) ← max_{j∈r} ν, x ← x − η g/√ν; "
       "one accumulator per row and column.", "Anil et al. 2019, SM3-II (arXiv:1901.11150)", batched="sm3-paper",
       deviations="none known: written from SM3-II and tested against it; with beta = 0 it equals sm3. beta > 0 "
                  "is the exponential average the authors' TensorFlow implementation describes, in the SM3-II "
                  "form (μ(r) replaced by max_{j∈r} ν each step); the paper's experiments use beta = 0.")
_paper("adafactor-paper", "AdafactorPaper",
       {"lr": Param(None, "constant relative step ρ replacing min(1e-2, 1/√t) (None: the paper's schedule)",
                    lambda v: v > 0, "> 0 or None", (int, float)),
        "beta1": unit_interval("first-moment coefficient over the clipped step (0: the paper's Adafactor)", 0.0),
        "decay_rate": Param(-0.8, "exponent c of the second-moment decay β̂₂ₜ = 1 − t^c", lambda v: v < 0, "< 0"),
        "clip_threshold": positive("update clipping threshold d", 1.0),
        "eps1": _eps(1e-30), "eps2": nonnegative("floor ε₂ of the parameter scale max(ε₂, RMS(x))", 1e-3)},
       "Adafactor as in the paper: α_t = max(ε₂, RMS(x))·min(1e-2, 1/√t), β̂₂ₜ = 1 − t^(−0.8) (no cap), factored "
       "V̂ for matrices, U = g/√V̂ clipped to RMS ≤ d, x ← x − α_t Û; no first moment.",
       "Shazeer & Stern 2018, Algorithms 4 and 5 (arXiv:1804.04235)", batched="adafactor-paper")

# ---- hand-written (no library ships them) -------------------------------------------------------

register_optimizer(OptimizerEntry(
    "newton", "optbench.optimizers.handwritten:Newton", "optbench",
    {"lr": _lr(1.0), "damping": nonnegative("Levenberg damping λ added to the Hessian diagonal", 0.0)},
    "Newton's method with the exact Hessian: x ← x − η (H + λI)⁻¹ g. Dense, for small problems.",
    "Nocedal & Wright 2006, ch. 3", batched="newton", needs_closure=True, needs_hessian=True,
    max_dim=2000, deviations="none known: the damped Newton step, written here from the formula and tested "
                             "against it."))
register_optimizer(OptimizerEntry(
    "spsa", "optbench.optimizers.handwritten:SPSA", "optbench",
    {"lr": _lr(1e-3), "c": positive("perturbation size c", 1e-2),
     "alpha": nonnegative("decay exponent of the step a_t = η / t^α (0: constant)", 0.0),
     "gamma": nonnegative("decay exponent of the perturbation c_t = c / t^γ (0: constant)", 0.0)},
    "SPSA, zero-order: Δ ~ Rademacher, ĝ = (f(x + cΔ) − f(x − cΔ)) / (2c) · Δ, x ← x − η ĝ. "
    "Two loss evaluations per step, no gradients.", "Spall 1992", batched="spsa", needs_closure=True, seeded=True,
    gradient_free=True,
    deviations="Spall's gains a_k = a/(k + 1 + A)^α, c_k = c/(k + 1)^γ with stability constant A = 0; the "
               "defaults α = γ = 0 are constant gains, where Spall recommends α = 0.602, γ = 0.101."))
register_optimizer(OptimizerEntry(
    "forward-grad", "optbench.optimizers.handwritten:ForwardGradient", "optbench",
    {"lr": _lr(1e-3)},
    "Forward gradient descent: v ~ N(0, I), ĝ = (∇f·v) v from one forward-mode JVP (no backprop), "
    "x ← x − η ĝ. ĝ is an unbiased estimate of ∇f.", "Baydin et al. 2022", batched="forward-grad",
    needs_closure=True, seeded=True, gradient_free=True,
    deviations="none known: Algorithm 1 of Baydin et al. with v ~ N(0, I)."))


def check_lr_override(config: OptimizerConfig, lrs: list[float] | None) -> None:
    """Reject ``--lr`` for an optimizer whose spec already fixes ``lr``."""
    if lrs and "lr" in config.given:
        raise SpecError(
            f"Learning rate given twice for {config.label!r}: drop lr= from the spec or drop --lr."
        )
    if lrs and "lr" not in config.entry.params:
        raise SpecError(f"Optimizer {config.name!r} has no learning rate, so --lr does not apply to it.")
