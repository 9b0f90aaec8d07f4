"""The pytorch_optimizer catalogue: every optimizer the library ships, by its own name, as registry entries.

pytorch_optimizer is the one heavy library of this module, and it is imported only to regenerate the static
table :mod:`optbench.optimizers.catalogue_table` (``python -m optbench.optimizers.catalogue``) and to build an
optimizer; registering the catalogue reads the table, so ``optbench list`` stays instant. A test checks the
table against the installed library (``get_supported_optimizers()`` and every constructor signature).

Names are the library's (``get_supported_optimizers()``: ``adabelief``, ``soap``, ``schedulefreeadamw``); a name
that the registry already uses for a different class gets the prefix ``po.`` (``po.adadelta`` is
pytorch_optimizer's AdaDelta, ``adadelta`` torch.optim's). Classes the registry already has a curated entry for
(torch.optim's own, and ``lion``, ``lars``, ``lamb``, ``novograd``, ``adafactor``, ``sm3``) keep that entry.

Hyperparameters come from the constructor signature, with types and ranges inferred from the name and the
default (:func:`infer_param`): ``lr`` > 0, a ``betas`` tuple of coefficients in [0, 1), ``momentum`` in [0, 1),
``eps*`` and ``weight_decay`` ≥ 0, booleans as booleans. ``maximize`` and ``foreach`` are never settable
(optbench minimises; ``foreach`` is an implementation choice) and defaults that are not literals (functions,
enums, dtypes) stay the library's.

Capabilities each class needs are declared in :data:`CAPABILITIES` and honoured by the engines and the tuner:

- ``needs_closure``: ``step(closure)`` is given the loss closure (AliG needs the loss value);
- ``create_graph``: the engines call ``backward(create_graph=True)`` so that the class can take Hutchinson
  Hessian-vector products of the gradient (Sophia-H, AdaHessian);
- ``schedule_free``: the class trains at one point and reports another (Schedule-Free's x, SPlus's EMA); the
  engines call ``optimizer.eval()`` before every recorded value and evaluation and at the end, and
  ``optimizer.train()`` before the training gradient, so the recorded loss is the loss of the reported point;
- ``lr_free``: ``lr`` multiplies a step size the method estimates itself (Prodigy, D-Adaptation, AdamG); its
  default search space is :data:`optbench.tuning.spaces.LR_FREE_MULTIPLIER`, not the learning-rate range;
- ``param_groups="muon"``: matrices (ndim ≥ 2) in a ``use_muon=True`` group, every other tensor in the
  class's AdamW group (``adamw_lr``, ``adamw_betas``, ``adamw_wd``, ``adamw_eps``): the usual Muon setup;
- ``matrix_only``: what the class does on a vector, such as every analytic problem's single 1-D parameter;
- ``unsupported``: why optbench cannot meet the class's needs; it is listed, and refused with that reason;
- ``batched``: the rule of :mod:`optbench.engines.batched_rules` that reproduces the class (ADOPT,
  Schedule-Free AdamW).
"""

from __future__ import annotations

import inspect
import math
import re
from pathlib import Path
from typing import Any

from optbench.params import Param

LIBRARY = "pytorch_optimizer"
PREFIX = "po."  # for a library name the registry already uses for another class
HIDDEN = ("maximize", "foreach")  # never settable from a spec
TABLE_PATH = Path(__file__).with_name("catalogue_table.py")

_MUON_VECTORS = ("on a vector (every analytic problem) every parameter is in the AdamW group, so it is AdamW "
                 "with adamw_lr, adamw_betas, adamw_wd and adamw_eps; on a network the matrices get the "
                 "orthogonalised update and biases the AdamW one")
_UNCHECKED = ("unchecked: pytorch_optimizer's {cls}, run as the library ships it; optbench has not compared it "
              "with the paper")
_LR_FREE_NOTE = (" lr-free: lr multiplies the step size the method estimates (1.0 = the method's own), so "
                 "tuning searches it over the multiplier range 0.1 to 10, not the learning-rate range.")

# Hand-checked capabilities per class (the table holds what the signature says; these are the needs it cannot).
CAPABILITIES: dict[str, dict[str, Any]] = {
    "AdaHessian": {"create_graph": True, "needs_hessian": True, "batched": "adahessian"},
    "SophiaH": {"create_graph": True, "needs_hessian": True, "batched": "sophiah"},
    "AliG": {"needs_closure": True},
    "ScheduleFreeAdamW": {"schedule_free": True, "batched": "schedulefree-adamw"},
    "ScheduleFreeRAdam": {"schedule_free": True, "batched": "schedulefree-radam"},
    "ScheduleFreeSGD": {"schedule_free": True, "batched": "schedulefree-sgd"},
    "SPlus": {"schedule_free": True, "batched": "splus"},
    "ADOPT": {"batched": "adopt"},
    "DualAdam": {"batched": "dualadam"},
    "AvaGrad": {"batched": "avagrad"},
    "ApolloDQN": {"batched": "apollodqn"},
    "AdaGC": {"batched": "adagc"},
    "Gravity": {"batched": "gravity"},
    "DASH": {"batched": "dash"},
    "Kron": {"batched": "kron"},
    "MARS": {"batched": "mars"},
    "Adai": {"batched": "adai"},
    "AdamS": {"batched": "adams"},
    "Prodigy": {"lr_free": True, "batched": "prodigy"},
    "DAdaptAdaGrad": {"lr_free": True, "batched": "dadaptadagrad"},
    "DAdaptAdam": {"lr_free": True, "batched": "dadaptadam"},
    "DAdaptAdan": {"lr_free": True, "batched": "dadaptadan"},
    "DAdaptLion": {"lr_free": True, "batched": "dadaptlion"},
    "DAdaptSGD": {"lr_free": True, "batched": "dadaptsgd"},
    "AdamG": {"lr_free": True, "batched": "adamg"},
    **{cls: {"param_groups": "muon", "matrix_only": _MUON_VECTORS}
       for cls in ("Muon", "AdaMuon", "AdaGO", "NorMuon", "MuonClip")},
    "Muon": {"param_groups": "muon", "matrix_only": _MUON_VECTORS, "batched": "muon"},
    "SOAP": {"matrix_only": "its eigenbasis preconditioner is for matrices: a vector is not preconditioned unless "
                            "precondition_1d=True, so on an analytic problem it is Adam-like",
             "batched": "soap"},
    "Shampoo": {"matrix_only": "one preconditioner per tensor dimension: on a vector it is a full-matrix "
                               "AdaGrad-like preconditioner of that one dimension", "batched": "shampoo"},
    "DistributedMuon": {"unsupported": "it needs a torch.distributed process group, which optbench's "
                                       "single-process engines do not create"},
    "AdaLOMO": {"unsupported": "it takes the model, not parameters, and fuses the update into backward(); "
                               "optbench's engines hand an optimizer parameters and call step()"},
    "LOMO": {"unsupported": "it takes the model, not parameters, and fuses the update into backward(); "
                            "optbench's engines hand an optimizer parameters and call step()"},
    "AdamMini": {"unsupported": "it takes the model and partitions its parameters by module names (embeddings, "
                                "attention heads); optbench hands an optimizer parameters, not a model"},
    "BSAM": {"unsupported": "it needs num_data (the training-set size) at construction and its own two-pass "
                            "SAM closure protocol, which optbench's engines do not implement"},
    "DeMo": {"unsupported": "it needs the einops package (not a dependency of optbench) and a torch.distributed "
                            "process group"},
    "LoRARite": {"unsupported": "it optimises LoRA factor pairs (lora_a, lora_b in alternating order) and skips "
                                "unpaired tensors: on an analytic problem it never moves, and on a network it would "
                                "pair unrelated weights and biases as factors"},
    "Magma": {"unsupported": "it wraps another optimizer (its first argument is the optimizer, not parameters); "
                             "optbench has no spec for composing optimizers"},
    "Ranger21": {"unsupported": "it needs num_iterations, the run's length, at construction (for its built-in "
                                "schedule); optbench does not pass the budget to an optimizer"},
    "FAdam": {"unsupported": "pytorch_optimizer's FAdam fails on float64 parameters ('expected dtype float for "
                             "end but got dtype double' in step), and optbench's analytic problems and reference "
                             "tests run in float64"},
    "SpectralSphere": {"unsupported": "it accepts 2-D parameters only and raises on vectors (biases, every "
                                      "analytic problem); the library gives it no fallback for them"},
    # batched rules of engines/rules_adamlike.py
    "AdaBelief": {"batched": "adabelief"},
    "Yogi": {"batched": "yogi"},
    "AdamP": {"batched": "adamp"},
    "LaProp": {"batched": "laprop"},
    "QHAdam": {"batched": "qhadam"},
    "DiffGrad": {"batched": "diffgrad"},
    "PAdam": {"batched": "padam"},
    "AdaMod": {"batched": "adamod"},
    "AdamC": {"batched": "adamc"},
    "EXAdam": {"batched": "exadam"},
    "AdaSmooth": {"batched": "adasmooth"},
    "RAdam": {"batched": "po.radam"},
    "AdaMax": {"batched": "po.adamax"},
    # batched rules of engines/rules_momentum.py
    "Tiger": {"batched": "tiger"},
    "SignSGD": {"batched": "signsgd"},
    "SGDW": {"batched": "sgdw"},
    "QHM": {"batched": "qhm"},
    "AggMo": {"batched": "aggmo"},
    "PID": {"batched": "pid"},
    "PNM": {"batched": "pnm"},
    "AdaPNM": {"batched": "adapnm"},
    "SGDP": {"batched": "sgdp"},
    "AdaDelta": {"batched": "po.adadelta"},
    "Kate": {"batched": "kate"},
    "VSGD": {"batched": "vsgd"},
    "MSVAG": {"batched": "msvag"},
    # batched rules of engines/rules_recent.py
    "Adan": {"batched": "adan"},
    "AdEMAMix": {"batched": "ademamix"},
    "SimplifiedAdEMAMix": {"batched": "simplifiedademamix"},
    "Grams": {"batched": "grams"},
    "GrokFastAdamW": {"batched": "grokfastadamw"},
    "AdamWSN": {"batched": "adamwsn"},
    "Ano": {"batched": "ano"},
    "APOLLO": {"batched": "apollo"},
    "BCOS": {"batched": "bcos"},
    "FOCUS": {"batched": "focus"},
    "Conda": {"batched": "conda"},
    "SaRA": {"batched": "sara"},
    # batched rules of engines/rules_memory.py
    "GaLore": {"batched": "galore"},
    "Fira": {"batched": "fira"},
    "SPAM": {"batched": "spam"},
    "Nero": {"batched": "nero"},
    "EmoNavi": {"batched": "emonavi"},
    "EmoFact": {"batched": "emofact"},
    "EmoLynx": {"batched": "emolynx"},
    # batched rules of engines/rules_factored.py
    "CAME": {"batched": "came"},
    "Adalite": {"batched": "adalite"},
    "AdaNorm": {"batched": "adanorm"},
    "AdaTAM": {"batched": "adatam"},
    "Aida": {"batched": "aida"},
    "AdaShift": {"batched": "adashift"},
    "Alice": {"batched": "alice"},
    "FlashAdamW": {"batched": "flashadamw"},
    # batched rules of engines/rules_pertensor.py
    "StableAdamW": {"batched": "stableadamw"},
    "SCION": {"batched": "scion"},
    "SCIONLight": {"batched": "scionlight", "accumulates_grad": True},
    "StableSPAM": {"batched": "stablespam"},
    "SGDSaI": {"batched": "sgdsai"},
    "TAM": {"batched": "tam"},
    "RACS": {"batched": "racs"},
    "ROSE": {"batched": "rose"},
    "ScalableShampoo": {"batched": "scalableshampoo"},
    # batched rules of engines/rules_groups.py
    "MADGRAD": {"batched": "madgrad"},
    "Ranger": {"batched": "ranger"},
    "AdaBound": {"batched": "adabound"},
    "A2Grad": {"batched": "a2grad"},
    "AccSGD": {"batched": "accsgd"},
    "ASGD": {"batched": "asgd"},
    # batched rules of engines/rules_soap.py
    "SWATS": {"batched": "swats"},
    "Fromage": {"batched": "fromage"},
    "Amos": {"batched": "amos"},
    "FTRL": {"batched": "ftrl"},
    "SRMM": {"batched": "srmm"},
}

# Entries checked against their papers (tests/test_catalogue.py has the papers' formulas in float64).
DEVIATIONS = {
    "ADOPT": "checked against Algorithm 2 of Taniguchi et al. (tests/test_catalogue.py): the first step only sets "
             "v ← g² and later steps clip g/max(√v, ε) to ±s^(1/4) with s the library's step count, so the k-th "
             "update clips at (k + 1)^(1/4) where the paper's c_t = t^(1/4) counts updates (the authors' code "
             "counts as the library does). weight_decay (coupled, or decoupled with weight_decouple=True) is a "
             "library addition, off by default.",
}

DEVIATIONS["Muon"] = (
    "checked against Jordan et al.'s Muon (tests/test_modern_rules.py, Newton–Schulz in float64): the momentum is "
    "the exponential average b ← μb + (1 − μ)g, not the sum b ← μb + g, which gives the same update because "
    "Newton–Schulz divides by the Frobenius norm first; the quintic iteration (3.4445, −4.7750, 2.0315), 5 steps, "
    "and the scale √max(1, m/n) are the paper's (use_adjusted_lr=True: Moonlight's 0.2·√max(m, n)). The iteration "
    "runs in bfloat16 whatever the parameters' dtype (zero_power_via_newton_schulz_5's default, as in the reference "
    "implementation), so a float64 run's orthogonalised update is bfloat16-accurate; the batched rule does the "
    "same. Decay uses the unscaled lr; tensors with ndim < 2 (and an analytic problem's vector) are on AdamW.")
DEVIATIONS["Shampoo"] = (
    "checked against Gupta et al.'s Shampoo (tests/test_modern_rules.py: L^(−1/4) G R^(−1/4) for a matrix, H^(−1/2k) "
    "per dimension of an order-k tensor, full-matrix AdaGrad H^(−1/2) g for a vector, from εI with ε = matrix_eps): "
    "equal at the defaults. The library's additions: momentum (μ > 0) blends the gradient with the last "
    "preconditioned step before the statistics, G ← G + μ(B − G); decay is coupled (added to G before the "
    "statistics) unless weight_decouple=True; inverse roots by SVD, recomputed every preconditioning_compute_steps "
    "steps and zero until first computed, so with k > 1 the first k − 1 steps do not move; no grafting (that is "
    "ScalableShampoo).")
DEVIATIONS["Prodigy"] = (
    "checked against Algorithm 3 of Mishchenko & Defazio (tests/test_modern_rules.py): r and s drop the paper's "
    "(1 − √β₂)η factor and weigh each step by (d/d₀)·dη instead, which leaves d̂ = r/‖s‖₁ unchanged; the ε term of "
    "the step uses the d just updated (√v + d_{k+1}ε) where the paper's uses d_k; r and ‖s‖₁ are kept in torch's "
    "default dtype, float32 unless it is float64, so d̂ is float32-accurate in a float64 run; weight_decouple=False "
    "adds λx to the gradient after the step has used it, so coupled decay has no effect (decoupled decay, the "
    "default, works). bias_correction, safeguard_warmup, growth_rate, d_coef and eps=None (atan2) are the "
    "library's options.")
DEVIATIONS["ScheduleFreeAdamW"] = (
    "checked against Algorithm 1 of Defazio et al. (tests/test_catalogue.py; equal to it at β₂ = 0): the class "
    "keeps y as the parameter and x = y + (1 − 1/β₁)(z − y) for eval(); the bias correction divides v "
    "(g/(√(v/(1 − β₂ᵗ) + 1e-15) + ε)) where the paper multiplies the step size, γ_t = γ√(1 − β₂ᵗ), so ε is not "
    "scaled; the averaging weights are t^r·η_max^p with η_max the largest warmed-up lr, without the paper's "
    "√(1 − β₂ᵗ) factor (the authors' code does the same). r, weight_lr_power, decoupling_c, ams_bound and "
    "weight_decay (added to the normalised step at y, as in the paper) are the library's options.")

DEVIATIONS["Ranger"] = (
    "checked against RAdam + Lookahead + gradient centralisation (tests/test_rules_groups.py): below the "
    "rectification threshold (ρ_t < n_sma_threshold, the first steps) the library's default "
    "degenerated_to_sgd=False sets the step size to −η, so those steps move x *up* the averaged gradient "
    "(x ← x + η·m̂) where RAdam skips them; set degenerated_to_sgd=True for an SGD step there. The threshold test "
    "is ρ_t ≥ 5 (RAdam: ρ_t > 4), ε is added to √v before the √(1 − β₂ᵗ) factor, and centralisation leaves "
    "vectors (every analytic problem) untouched.")

REFERENCES = {
    # the library's docstring cites arXiv:2411.10438 (MARS) for it
    "SGDSaI": "Xu et al. 2024, No More Adam: Learning Rate Scaling at Initialization is All You Need "
              "(arXiv:2412.11768)",
    "ADOPT": "Taniguchi et al. 2024, ADOPT (arXiv:2411.02853)",
    "AdEMAMix": "Pagliardini et al. 2024, The AdEMAMix Optimizer (arXiv:2409.03137)",
    "AdaBelief": "Zhuang et al. 2020, AdaBelief (arXiv:2010.07468)",
    "AdaHessian": "Yao et al. 2021, ADAHESSIAN (arXiv:2006.00719)",
    "Adan": "Xie et al. 2022, Adan (arXiv:2208.06677)",
    "CAME": "Luo et al. 2023, CAME (arXiv:2307.02047)",
    "DAdaptAdam": "Defazio & Mishchenko 2023, Learning-Rate-Free Learning by D-Adaptation (arXiv:2301.07733)",
    "DAdaptSGD": "Defazio & Mishchenko 2023, Learning-Rate-Free Learning by D-Adaptation (arXiv:2301.07733)",
    "DAdaptAdaGrad": "Defazio & Mishchenko 2023, Learning-Rate-Free Learning by D-Adaptation (arXiv:2301.07733)",
    "DAdaptAdan": "Defazio & Mishchenko 2023, Learning-Rate-Free Learning by D-Adaptation (arXiv:2301.07733)",
    "DAdaptLion": "Defazio & Mishchenko 2023, Learning-Rate-Free Learning by D-Adaptation (arXiv:2301.07733)",
    "Kron": "Li 2018, Preconditioned Stochastic Gradient Descent (arXiv:1512.04202)",
    "MADGRAD": "Defazio & Jelassi 2021, MADGRAD (arXiv:2101.11075)",
    "MARS": "Yuan et al. 2024, MARS (arXiv:2411.10438)",
    "Muon": "Jordan et al. 2024, Muon (kellerjordan.github.io/posts/muon)",
    "Prodigy": "Mishchenko & Defazio 2024, Prodigy (arXiv:2306.06101)",
    "Ranger": "Wright 2019, Ranger (RAdam + Lookahead, Zhang et al. 2019 arXiv:1907.08610)",
    "SOAP": "Vyas et al. 2024, SOAP (arXiv:2409.11321)",
    "ScheduleFreeAdamW": "Defazio et al. 2024, The Road Less Scheduled (arXiv:2405.15682)",
    "ScheduleFreeRAdam": "Defazio et al. 2024, The Road Less Scheduled (arXiv:2405.15682)",
    "ScheduleFreeSGD": "Defazio et al. 2024, The Road Less Scheduled (arXiv:2405.15682)",
    "Shampoo": "Gupta et al. 2018, Shampoo (arXiv:1802.09568)",
    "ScalableShampoo": "Anil et al. 2020, Scalable Second Order Optimization (arXiv:2002.09018)",
    "SophiaH": "Liu et al. 2023, Sophia (arXiv:2305.14342)",
    "Tiger": "Su 2023, Tiger (github.com/bojone/tiger)",
    "Yogi": "Zaheer et al. 2018, Adaptive Methods for Nonconvex Optimization (NeurIPS 2018)",
    "AdaBound": "Luo et al. 2019, AdaBound (arXiv:1902.09843)",
    "AdaMax": "Kingma & Ba 2015, Adam: A Method for Stochastic Optimization, section 7 (arXiv:1412.6980)",
}


# Where pytorch_optimizer's README table (shipped as its package metadata) names a paper under another name than
# the class's: the README row → the classes that implement that paper.
README_ALIASES = {
    "D-Adaptation": ("DAdaptAdaGrad", "DAdaptAdam", "DAdaptAdan", "DAdaptLion", "DAdaptSGD"),
    "Schedule-Free": ("ScheduleFreeAdamW", "ScheduleFreeRAdam", "ScheduleFreeSGD"),
    "Sophia": ("SophiaH",),
    "PSGD": ("Kron",),
    "RACS & Alice": ("RACS", "Alice"),
    "Grokfast": ("GrokFastAdamW",),
    "Apollo": ("ApolloDQN",),  # "APOLLO" (SGD-like memory) is the class APOLLO
    "AdamP": ("AdamP", "SGDP"),  # one paper introduces both
    "QHAdam": ("QHAdam", "QHM"),
    "PNM": ("PNM", "AdaPNM"),
    "TAM": ("TAM", "AdaTAM"),
    "Stable WD": ("AdamS",),
    "SNSM": ("AdamWSN",),
    "SCION": ("SCION", "SCIONLight"),
    "Muon": ("Muon", "DistributedMuon"),
}

# Classes with no paper to cite, and why (the listing shows "no paper: <reason>"); every other entry has a reference.
NO_PAPER = {
    **dict.fromkeys(("EmoFact", "EmoLynx", "EmoNavi"), "the EmoNavi family is published as code only "
                                                      "(github.com/muooon/EmoNavi), without a paper"),
    "ROSE": "published as code only (github.com/MatthewK78/Rose); pytorch_optimizer's README gives no paper",
}


def paper_link(url: str) -> str:
    """``arXiv:ID`` for an arXiv abstract or PDF address, else the address without its scheme."""
    match = re.search(r"arxiv\.org/(?:abs|pdf)/([0-9.]+(?:v[0-9]+)?)", url)
    if match:
        return f"arXiv:{match.group(1).removesuffix('.pdf')}"
    return re.sub(r"^https?://", "", url)


def readme_references(readme: str) -> dict[str, str]:
    """Class name → "Title (arXiv:ID)" from the optimizer table of pytorch_optimizer's README: rows
    ``| Name | *Title* | [github](…) | [paper](URL)(…) |`` up to the table of learning-rate schedulers. A row's
    name is the class's (compared without case, dashes and spaces) or a key of :data:`README_ALIASES`."""
    rows: dict[str, str] = {}
    for line in readme.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if not line.startswith("|") or len(cells) < 4:
            continue
        if cells[0] == "LR Scheduler":
            break
        link = re.search(r"\[paper\]\(([^)]+)\)", cells[3])
        title = cells[1].strip("*").strip()
        if link and title and cells[0] != "Optimizer":
            rows[cells[0]] = f"{title} ({paper_link(link.group(1))})"
    return rows


def _key(name: str) -> str:
    return re.sub(r"[-_ ]", "", name).lower()


def class_reference(cls_name: str, doc: str, rows: dict[str, str]) -> str:
    """The paper of a class: its README row (by alias, exact name, then name without case), else the first arXiv
    address of its docstring, else ""."""
    for row, classes in README_ALIASES.items():
        if cls_name in classes and row in rows:
            return rows[row]
    if cls_name in rows:
        return rows[cls_name]
    loose = [ref for row, ref in rows.items() if _key(row) == _key(cls_name) and row not in README_ALIASES]
    if len(loose) == 1:
        return loose[0]
    match = re.search(r"https?://arxiv\.org/\S+", doc)
    return paper_link(match.group(0).rstrip(".,)>`")) if match else ""


# ---- parameters from a constructor signature ---------------------------------------------------------

_NONNEGATIVE = ("weight_decay", "eps", "wd")  # name prefixes / suffixes of quantities that cannot be negative


def _number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _is_literal(v: Any) -> bool:
    if v is None or type(v) in (bool, int, float, str):  # exact types: an IntEnum is not a literal
        return True
    return isinstance(v, tuple) and all(_is_literal(x) for x in v)


def _coefficients(default: tuple) -> Param:
    """A tuple of decay coefficients like ``betas``: each in [0, 1), or ≥ 0 where the library's default is ≥ 1
    (PNM's β₂ = 1)."""
    upper = [b < 1 for b in default]

    def check(v: Any) -> bool:
        return len(v) == len(default) and all(
            _number(b) and b >= 0 and (b < 1 or not below) for b, below in zip(v, upper))

    parts = ", ".join("in [0, 1)" if below else ">= 0" for below in upper)
    return Param(default, "coefficients of the running averages (from the class signature)", check,
                 f"a tuple of {len(default)} numbers ({parts})", (tuple, list))


def infer_param(name: str, default: Any) -> Param:
    """A :class:`Param` for one constructor argument, its type and range inferred from its name and default."""
    doc = "(from the class signature)"
    if isinstance(default, bool):
        return Param(default, doc, types=(bool,))
    if (name == "lr" or name.endswith("_lr")) and (default is None or _number(default)):
        return Param(float(default) if _number(default) else None, "learning rate", lambda v: v > 0, "> 0",
                     (int, float))
    if isinstance(default, tuple) and default and all(_number(b) for b in default) and (
            name == "betas" or name.endswith("_betas")) and all(b >= 0 for b in default):
        return _coefficients(default)
    if _number(default):
        types: tuple[type, ...] = (int,) if isinstance(default, int) else (int, float)
        if name in ("momentum",) and 0 <= default < 1:
            return Param(default, "momentum factor", lambda v: 0 <= v < 1, "in [0, 1)", types)
        if name in ("dampening", "beta", "rho") and 0 <= default <= 1:
            return Param(default, doc, lambda v: 0 <= v <= 1, "in [0, 1]", types)
        if default >= 0 and any(name.startswith(k) or name.endswith(k) for k in _NONNEGATIVE):
            return Param(default, doc, lambda v: v >= 0, ">= 0", types)
        return Param(default, doc, types=types)
    if isinstance(default, str):
        return Param(default, doc, types=(str,))
    if isinstance(default, tuple):
        return Param(default, doc, types=(tuple, list))
    return Param(default, doc)  # None: any literal


# ---- the static table ---------------------------------------------------------------------------

def signature_row(cls: type) -> tuple[dict[str, Any], tuple[str, ...], tuple[str, ...]]:
    """(literal defaults, arguments left at non-literal defaults, required arguments) of ``cls.__init__``."""
    defaults: dict[str, Any] = {}
    fixed: list[str] = []
    required: list[str] = []
    # the class's own constructor, read off the class (mypy flags any __init__ access as unsound)
    for name, p in inspect.signature(cls.__init__).parameters.items():  # type: ignore[misc]
        if name in ("self", "params") or name in HIDDEN or p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD):
            continue
        if p.default is p.empty:
            required.append(name)
        elif _is_literal(p.default):
            defaults[name] = p.default
        else:
            fixed.append(name)
    return defaults, tuple(fixed), tuple(required)


def generate_table() -> dict[str, Any]:
    """The catalogue as the installed pytorch_optimizer describes it (imports the library)."""
    from importlib.metadata import distribution, version

    import pytorch_optimizer

    rows = readme_references(distribution(LIBRARY).read_text("METADATA") or "")
    classes = {}
    for name in pytorch_optimizer.get_supported_optimizers():
        cls = pytorch_optimizer.load_optimizer(name)
        defaults, fixed, required = signature_row(cls)
        full_doc = inspect.getdoc(cls) or ""
        doc = full_doc.split("\n")[0].strip()
        classes[name] = {"class": f"{cls.__module__}:{cls.__qualname__}", "doc": doc,
                         "reference": class_reference(cls.__name__, full_doc, rows), "defaults": defaults,
                         "fixed": fixed, "required": required}
    return {"version": version(LIBRARY), "classes": classes}


def _literal(v: Any) -> str:
    if isinstance(v, float) and not math.isfinite(v):
        return "INF" if v > 0 else "-INF"
    if isinstance(v, tuple):
        return "(" + "".join(f"{_literal(x)}, " for x in v).removesuffix(" ") + ")"
    if isinstance(v, dict):
        return "{" + ", ".join(f"{k!r}: {_literal(x)}" for k, x in v.items()) + "}"
    return repr(v)


def render_table(table: dict[str, Any]) -> str:
    lines = ['"""pytorch_optimizer\'s catalogue, generated by ``python -m optbench.optimizers.catalogue``.', "",
             "Do not edit: tests/test_catalogue.py checks it against the installed library.", '"""', "",
             "# ruff: noqa: E501  (one reference per line, as the library's README gives it)", "",
             'INF = float("inf")', f"VERSION = {table['version']!r}", "CLASSES = {"]
    for name, row in table["classes"].items():
        lines.append(f"    {name!r}: {{")
        for key in ("class", "doc", "reference", "fixed", "required"):
            lines.append(f"        {key!r}: {_literal(row[key])},")
        lines.append("        'defaults': {")
        lines += [f"            {k!r}: {_literal(v)}," for k, v in row["defaults"].items()]
        lines.append("        },")
        lines.append("    },")
    lines.append("}")
    return "\n".join(lines) + "\n"


# ---- registry entries ---------------------------------------------------------------------------

def catalogue_entries(taken: dict[str, Any]) -> list:
    """Registry entries for every class of the table that no curated entry in ``taken`` (name → entry)
    already reaches; library names that ``taken`` uses get :data:`PREFIX`."""
    from optbench.optimizers import catalogue_table
    from optbench.optimizers.registry import OptimizerEntry

    curated = {e.target for e in taken.values()}
    entries = []
    classes: dict[str, dict[str, Any]] = catalogue_table.CLASSES  # rows of differently typed fields
    for lib_name, row in classes.items():
        module, _, cls = row["class"].partition(":")
        if module.startswith("torch.optim") or f"{LIBRARY}:{cls}" in curated:
            continue
        caps = dict(CAPABILITIES.get(cls, {}))
        if row["required"] and "unsupported" not in caps:
            caps["unsupported"] = (f"it needs {', '.join(row['required'])} at construction, which optbench has "
                                   "no value for")
        name = PREFIX + lib_name if lib_name in taken else lib_name
        deviations = DEVIATIONS.get(cls, _UNCHECKED.format(cls=cls) + ".") + (
            _LR_FREE_NOTE if caps.get("lr_free") else "")
        params = {k: infer_param(k, v) for k, v in row["defaults"].items()}
        entries.append(OptimizerEntry(
            name, f"{LIBRARY}:{cls}", LIBRARY, params, row["doc"] or cls, reference_of(cls, row),
            deviations=deviations, generated=True, **caps))
    return entries


def reference_of(cls: str, row: dict[str, Any]) -> str:
    """The entry's reference: the hand-checked :data:`REFERENCES`, else the table's (README or docstring), else
    "no paper: <why>" from :data:`NO_PAPER`, else "" (a test requires one of the first three for every class)."""
    reference = REFERENCES.get(cls) or row.get("reference", "")
    if not reference and cls in NO_PAPER:
        reference = f"no paper: {NO_PAPER[cls]}"
    return reference


def main() -> None:
    TABLE_PATH.write_text(render_table(generate_table()), encoding="utf-8")
    print(f"wrote {TABLE_PATH}")


if __name__ == "__main__":
    main()
