"""Every option of every batched rule: the batched engine reproduces the loop engine, or refuses.

tests/test_engine_contract.py checks each rule at the registry defaults and at a few hand-picked settings. This
test derives, for EVERY entry with a batched rule and EVERY hyperparameter other than ``lr``, non-default values
automatically from the entry's declaration (:class:`optbench.params.Param`: default, check, types) and from the
class it mirrors (its constructor's ``Literal`` annotations, ``validate_options`` lists, string comparisons and
preset tables for choices), and checks each one on a deterministic and a noisy analytic problem at the entry's
lr, three times it and tests/test_optimizers.py's BASE_LR where that is another:

- the analytic batched engine equals the loop engine (one real optimizer object per run) to 1e-8 relative in
  float64 — status, end step, loss, coordinates, gradient norm and final parameters; or
- the batched engine refuses that configuration with a ``UsageError`` (``Rule.refuses`` or a setting that one
  batched group must share). Refusing is allowed; a silent mismatch is not.

Values of a float-like hyperparameter (numbers, tuples of numbers) are per-configuration columns of one batched
group (engines.grouping), so they are first run together with the default in ONE group: a rule that applies one
configuration's setting to the whole group fails there even when each value alone passes. A switch (a boolean, a
string, None) is also run where what it acts on is on (every option that is off by default switched on: decay,
momentum) and under short memories (every number moved, β's halved: AMSGrad's maximum binds). One configuration
sets every hyperparameter to its first derived value at once (a counter shortened so that an option switched on
takes effect within the run), and the defaults and that one run under lr schedules with gradient clipping. A
slow part runs every option on a small MLP (per-tensor statistics) where the batched network engine takes it.

Values are derived, never listed by hand (:func:`derived_values`); a value the entry's check or the class's
constructor refuses is skipped, :data:`SKIP` and :data:`SKIP_VALUES` give the reason for each value skipped
otherwise, and a new entry with a rule is covered as soon as it is linked.
"""

from __future__ import annotations

import functools
import inspect
import math
import re
import sys
import typing
from typing import Any

import numpy as np
import pytest
import torch
from test_optimizers import BASE_LR

from optbench.engines.batched import run_batched
from optbench.engines.grouping import is_float_like
from optbench.engines.loop import run_loop
from optbench.errors import SpecError, UsageError
from optbench.optimizers import get_optimizer, list_optimizers
from optbench.problems import get_problem

ENTRIES = [e for e in list_optimizers() if not e.unsupported and e.batched]  # new rules are covered once linked
NAMES = [e.name for e in ENTRIES]
ANALYTIC = ["beale", "rosenbrock(noise=0.1)"]  # as tests/test_engine_contract.py
STEPS = 10  # up to the first refresh of the usual periods of 10 (preconditioners, Hessian estimates, centring)
COUNT_HORIZON = 8  # a count above this (warm-up, period, threshold) gets small values, which bind within the run
SEEDS = (0, 7)  # alternating over a group's configurations (the lrs of _pair)
RTOL = 1e-8
LIBRARY_PREFIX = "pytorch_optimizer"
MAX_VALUES = 3  # derived values per hyperparameter (per element of a tuple: 2)

# (entry, hyperparameter) → why its derived values are not run (problems of the derivation, not of a rule)
SKIP: dict[tuple[str, str], str] = {
    ("kron", "mu_dtype"): "a torch.dtype: a spec cannot give one (optbench has no dtype literal)",
    ("flashadamw", "master_weight_bits"): "its rule refuses it (low-precision master weights are not mirrored): "
                                          "the loop engine runs it",
    ("flashadamw", "fused"): "the class raises on fused=True (a CUDA kernel); its rule refuses it too",
    ("scion", "norm_kwargs"): "a dict of options for the norm class the class builds; no generic derivation",
    ("scionlight", "norm_kwargs"): "a dict of options for the norm class the class builds; no generic derivation",
}
# (entry, hyperparameter, value) → why that derived value is not run: the class itself cannot run it
SKIP_VALUES: dict[tuple[str, str, Any], str] = {
    ("asgd", "dampening", 0.0): "ASGD divides by dampening·‖Δg‖ (a Python float): ZeroDivisionError in the class",
    ("ademamix", "betas", (0.9, 0.999, 0.0)): "with t_alpha_beta3 (the all-at-once case) the class's β₃ warm-up "
                                              "takes log β₃: ValueError (math domain error) in the class",
}


@pytest.fixture(autouse=True)
def newton_schulz_in_float64(monkeypatch):
    """As tests/test_engine_contract.py: pytorch_optimizer runs Newton–Schulz in bfloat16 whatever the parameters'
    dtype (Muon; MARS's shampoo type; the helpers' default), and so do the rules; compare both in float64. Every
    library module that imported a helper is patched (MARS imports it from utils.matrix, not muon.base)."""
    import pytorch_optimizer  # noqa: F401  (loads every optimizer module)

    from optbench.engines import batched_rules_modern

    for module_name, module in list(sys.modules.items()):
        if module is None or not module_name.startswith(LIBRARY_PREFIX):
            continue
        for name in ("zero_power_via_newton_schulz_5", "zero_power_via_gram_newton_schulz"):
            helper = vars(module).get(name)
            if callable(helper) and not isinstance(helper, functools.partial):
                monkeypatch.setattr(module, name, functools.partial(helper, dtype=torch.float64))
    monkeypatch.setattr(batched_rules_modern, "NEWTON_SCHULZ_DTYPE",
                        dict.fromkeys(batched_rules_modern.NEWTON_SCHULZ_DTYPE, torch.float64))


# ---- choices of a string hyperparameter ------------------------------------------------------------

def _literal_values(annotation: Any) -> list[Any]:
    """The values of every ``Literal`` inside an annotation (through ``Optional``, unions, aliases)."""
    if typing.get_origin(annotation) is typing.Literal:
        return list(typing.get_args(annotation))
    return [v for arg in typing.get_args(annotation) for v in _literal_values(arg)]


def _annotation(cls: type, key: str) -> Any:
    try:
        return typing.get_type_hints(cls.__init__).get(key)  # type: ignore[misc]
    except Exception:  # noqa: BLE001  (torch.optim's and optbench's classes: annotations may not resolve)
        parameter = inspect.signature(cls.__init__).parameters.get(key)  # type: ignore[misc]
        return None if parameter is None else parameter.annotation


def _source(obj: Any) -> str:
    try:
        return inspect.getsource(obj)
    except (OSError, TypeError):
        return ""


def _collections_holding(default: str, modules: list[Any]) -> list[str]:
    """Other strings of module-level dicts, lists, tuples or sets that hold ``default`` (a preset table such as
    Muon's ``NS_COEFFICIENTS``)."""
    out: list[str] = []
    for module in modules:
        for value in vars(module).values():
            if isinstance(value, (dict, list, tuple, set, frozenset)) and len(value) <= 32:
                items = list(value)
                if default in items and all(isinstance(v, str) for v in items):
                    out += items
    return out


@functools.cache
def string_choices(name: str, key: str) -> tuple[str, ...]:
    """Every value of string hyperparameter ``key`` of entry ``name`` that can be discovered: ``Literal``
    annotations of the class's constructor, ``validate_options(value, 'key', [...])`` lists and comparisons
    ``key == '…'`` / ``['key'] == '…'`` in the class's module, quoted words of the entry's own description of the
    valid values, and, failing all of these, the other strings of a preset table holding the default."""
    entry = next(e for e in ENTRIES if e.name == name)
    param = entry.params[key]
    cls = entry.resolve_class()
    found: list[Any] = _literal_values(_annotation(cls, key))
    module = sys.modules.get(cls.__module__)
    text = _source(module) if module is not None else ""
    k = re.escape(key)
    for match in re.finditer(rf"validate_options\(\s*[\w\[\]'\".]+,\s*['\"]{k}['\"],\s*[\[(]([^\])]*)[\])]", text):
        found += re.findall(r"['\"]([^'\"]+)['\"]", match.group(1))
    found += re.findall(rf"(?:\b{k}|\[['\"]{k}['\"]\])\s*[!=]=\s*['\"]([^'\"]+)['\"]", text)
    for match in re.finditer(rf"(?:\b{k}|\[['\"]{k}['\"]\])\s+(?:not\s+)?in\s+[\[(]([^\])]*)[\])]", text):
        found += re.findall(r"['\"]([^'\"]+)['\"]", match.group(1))
    found += re.findall(r"'([^']+)'", param.valid)
    if not found and isinstance(param.default, str):
        prefix = LIBRARY_PREFIX if cls.__module__.startswith(LIBRARY_PREFIX) else cls.__module__
        modules = [m for n, m in list(sys.modules.items()) if m is not None and n.startswith(prefix)]
        found += _collections_holding(param.default, modules)
    return tuple(dict.fromkeys(v for v in found if isinstance(v, str) and v != param.default))



# ---- numbers ------------------------------------------------------------------------------------------

def _is_eps(key: str) -> bool:
    return key.startswith("eps") or key.endswith("eps")


def _is_decay(key: str) -> bool:
    return "weight_decay" in key or key.endswith("_wd") or key in ("wd", "extra_l2") or key.startswith("lambda_")


def _numbers(key: str, d: float | int, as_int: bool) -> list[Any]:
    """Non-default numbers near ``d`` that change the update within :data:`STEPS` steps."""
    if as_int:
        d = int(d)
        values = [d + 1, d * 2, d - 1] if d else [3, 1]  # 0: off (no warm-up) → a count that binds
        if d > COUNT_HORIZON:  # a count (warm-up, period, threshold) that would not bind within the run
            values = [1, 3, d + 1]
        return [v for v in values if v != d]
    if math.isinf(d):  # a growth limit, unlimited by default
        return [1.5, 1.05]
    if _is_eps(key):  # ×10, and one as large as √v itself (where placing ε inside or outside a root matters)
        return [d * 10, max(0.1, d * 100)] if d else [1e-8, 0.1]
    if _is_decay(key):
        return [0.1, 0.01] if d == 0 else [0.0, d * 2]
    if key == "lr" or key.endswith("_lr"):
        return [d * 3, d * 0.3]
    if d == 0:
        return [0.5, 0.1]
    if 0.5 <= d < 1:  # a coefficient near 1: its distance to 1 tripled, and halved
        return [1 - 3 * (1 - d), d * 0.5]
    if d == 1 and key in ("dampening", "theta", "rho", "beta", "beta2", "nu"):  # coefficient at its top
        return [0.5, 0.0]
    return [d * 2, d * 0.5]


def _none_alternatives(entry, key: str) -> list[Any]:
    """Values for a hyperparameter whose default is None: choices of an ``Optional[Literal[...]]`` or a string
    Param, else numbers of the annotated (or declared) type — coefficients for float-like ones."""
    param = entry.params[key]
    annotation = _annotation(entry.resolve_class(), key)
    text = str(annotation) + " " + " ".join(t.__name__ for t in param.types)
    if str in param.types or _literal_values(annotation):
        return list(string_choices(entry.name, key))
    if "int" in text and "float" not in text:
        return [3, 25]
    if "float" in text or "int" in text or annotation in (inspect.Parameter.empty, None, typing.Any):
        return [0.9, 0.5]
    return []


def derived_values(entry, key: str) -> list[Any]:
    """Non-default values of hyperparameter ``key`` of ``entry`` (not yet validated)."""
    param = entry.params[key]
    d = param.default
    if isinstance(d, bool):
        return [not d]
    if isinstance(d, str):
        return list(string_choices(entry.name, key))
    if d is None:
        return _none_alternatives(entry, key)
    if isinstance(d, (int, float)):
        return _numbers(key, d, isinstance(d, int) and param.types == (int,))[:MAX_VALUES]
    if isinstance(d, tuple):  # element-wise: each element moved alone (a coefficient also to 0, None if allowed)
        out = []
        for i, element in enumerate(d):
            if element is None:
                alternatives: list[Any] = [0.9, 0.5]
            elif isinstance(element, bool) or not isinstance(element, (int, float)):
                continue
            else:
                alternatives = _numbers(f"{key}[{i}]", element, isinstance(element, int) and not isinstance(
                    element, bool) and not any(isinstance(e, float) for e in d))[:2]
                if isinstance(element, float) and 0 < element < 1:
                    alternatives = alternatives[:1] + [0.0]
                if key.endswith("betas") or key == "betas":
                    alternatives.append(None)  # kept only where the check accepts it (AdaFactor's β₁)
            out += [d[:i] + (v,) + d[i + 1:] for v in alternatives]
        return out
    return []


# ---- configurations: validated by the entry's check and by the class's constructor -------------------------

def _class_accepts(entry, hyperparams: dict[str, Any]) -> bool:
    try:
        entry.build([torch.zeros(2, dtype=torch.float64, requires_grad=True)], dict(hyperparams),
                    dtype=torch.float64, seed=0)
    except Exception:  # noqa: BLE001  (the class's own validation: pytorch_optimizer raises its own exception types)
        return False
    return True


def _with(base, **updates):
    """``base`` with ``updates``, or None where the entry's check or the class's constructor refuses them."""
    try:
        config = base.with_hyperparams(**updates)
    except SpecError:
        return None
    return config if _class_accepts(config.entry, config.hyperparams) else None


def _pair(config):
    """The configuration at its lr and three times it, and at tests/test_optimizers.py's BASE_LR for the entry (a
    learning rate at which it makes progress) where that is another: some defaults diverge at the first step on
    these problems (schedulefreesgd's lr = 1) or barely move. An entry without a default lr: just itself."""
    if config.lr is None:
        return [config]
    lrs = [config.lr, config.lr * 3]
    base = BASE_LR.get(config.name)
    if base is not None and config.lr == get_optimizer(config.name).lr and all(
            not math.isclose(base, lr) for lr in lrs):
        lrs.append(float(base))
    return [config] + [config.with_hyperparams(lr=lr) for lr in lrs[1:]]


def _companion(base, key: str, value: Any):
    """``base`` with ``key=value`` and one other hyperparameter at its first derived value, for a value that
    the class takes only together with another setting (torch's SGD: nesterov=True needs momentum > 0); the first
    such pair the check and the class accept, or None."""
    for other in base.entry.params:
        if other in ("lr", key) or (base.name, other) in SKIP:
            continue
        for companion in derived_values(base.entry, other)[:1]:
            config = _with(base, **{key: value, other: companion})
            if config is not None:
                return config
    return None


@functools.cache
def _off_by_default(name: str) -> dict[str, Any]:
    """The first accepted derived value of every hyperparameter that is off by default (0 or None): weight decay,
    momentum, a β₃ … — what a switch such as ``weight_decouple`` or ``fixed_decay`` acts on."""
    base = get_optimizer(name)
    out = {}
    for key, param in base.entry.params.items():
        off = param.default is None or (is_float_like(param.default) and not isinstance(param.default, tuple)
                                        and param.default == 0)
        if key == "lr" or not off or (base.name, key) in SKIP:
            continue
        for value in derived_values(base.entry, key):
            if (base.name, key, value) not in SKIP_VALUES and _with(base, **{key: value}) is not None:
                out[key] = value
                break
    return out


@functools.cache
def _strong(name: str) -> dict[str, Any]:
    """Every number and tuple of numbers but lr at its last derived value, every element of a tuple moved at once
    (betas (0.9, 0.999) → (0.45, 0.4995)): short memories, under which a running maximum (AMSGrad), a switch
    between phases or a rectification threshold takes effect within the run."""
    base = get_optimizer(name)
    out = {}
    for key, param in base.entry.params.items():
        d = param.default
        if key == "lr" or not is_float_like(d) or (base.name, key) in SKIP:
            continue
        if isinstance(d, tuple):
            candidates = [tuple(_numbers(f"{key}[{i}]", e, isinstance(e, int) and not any(
                isinstance(f, float) for f in d))[-1] for i, e in enumerate(d))]
        else:
            candidates = list(reversed(derived_values(base.entry, key)))
        for value in candidates:
            if (base.name, key, value) not in SKIP_VALUES and _with(base, **{key: value}) is not None:
                out[key] = value
                break
    return out


def _in_context(base, key: str, value: Any, context: dict[str, Any]):
    """``base`` with ``key=value`` and the settings of ``context`` (:func:`_off_by_default`, :func:`_strong`),
    dropping them last first where the check or the class refuses the combination; None if none is left."""
    context = {k: v for k, v in context.items() if k != key}
    while context:
        config = _with(base, **context, **{key: value})
        if config is not None:
            return config
        context.pop(next(reversed(context)))
    return None


@functools.cache
def option_cases(name: str) -> list[tuple[str, list[tuple[Any, list, bool]]]]:
    """(hyperparameter, [(value, configurations at the two lrs, whether the value is set alone)]) of every
    hyperparameter but lr; a value the class refuses alone is taken with a companion setting (:func:`_companion`)."""
    base = get_optimizer(name)
    cases = []
    for key in base.entry.params:
        if key == "lr" or (name, key) in SKIP:
            continue
        values = []
        for value in dict.fromkeys(derived_values(base.entry, key), None):  # keeps order, drops repeats
            if repr(value) == repr(base.entry.params[key].default) or (name, key, value) in SKIP_VALUES:
                continue
            config = _with(base, **{key: value})
            alone = config is not None
            if config is None:
                config = _companion(base, key, value)
            if config is not None:
                values.append((value, _pair(config), alone))
            if not is_float_like(value):  # a switch: also where the options it acts on are on, at one lr
                seen = {config.label} if config is not None else set()
                for context in (_off_by_default(name), _strong(name)):
                    switched = _in_context(base, key, value, context)
                    if switched is not None and switched.label not in seen:
                        seen.add(switched.label)
                        values.append((value, [switched], False))
        if values:
            cases.append((key, values))
    return cases


def combined_cases(name: str, cases) -> list[list]:
    """Every hyperparameter at once at its first accepted derived value, and at its last (another choice, the
    other end of the range), dropping (last first) any that the check or the class refuses together; each as the
    configurations of :func:`_pair`, a combination only where at least two hyperparameters remain."""
    base = get_optimizer(name)
    out, seen = [], set()
    for index in (0, -1):
        updates = {key: [v for v, _, alone in values if alone][index] for key, values in cases
                   if any(alone for _, _, alone in values)}
        while len(updates) >= 2:
            config = _with(base, **updates)
            if config is not None:
                if config.label not in seen:
                    seen.add(config.label)
                    out.append(_pair(config))
                break
            updates.pop(next(reversed(updates)))
    return out


# ---- comparison -------------------------------------------------------------------------------------------

# Relative agreement is ill-posed for a quantity that converges to 0: the batched engine takes the problem's
# closed-form gradient and the loop engine autograd's, which agree to rounding of the gradient's terms (~1e-16 of
# their size), and a superlinear method then drives a gradient norm (or a coordinate, at a stationary point with a
# zero coordinate) to a size where only that rounding is left: Newton(damping=0.1) on Beale ends at x₀ ~ 2e-13 with
# both engines' steps equal to ~1e-16 of their size. So each quantity is also allowed an absolute error of FLOOR ×
# its largest magnitude over the run (four orders below what RTOL allows at that magnitude).
FLOOR = 1e-12


def _atol(*arrays) -> float:
    values = np.abs(np.concatenate([np.ravel(a) for a in arrays]))
    values = values[np.isfinite(values)]
    return max(FLOOR * float(values.max()), 1e-300) if values.size else 1e-300


def _mismatch(batched, k: int, loop) -> str | None:
    if batched.status[k] != loop.status[0] or batched.end_step[k] != loop.end_step[0]:
        return (f"status/end step: batched {batched.status[k]}@{batched.end_step[k]}, "
                f"loop {loop.status[0]}@{loop.end_step[0]}")
    rows = batched.steps < loop.end_step[0]
    loss, coords, norms = loop.loss[rows, 0], loop.coords[rows, 0], loop.grad_norm[rows, 0]
    for what, b, ref, atol in (("loss", batched.loss[rows, k], loss, _atol(loss, loop.end_loss[0])),
                               ("coordinates", batched.coords[rows, k], coords, _atol(coords, loop.end_x[0])),
                               ("gradient norm", batched.grad_norm[rows, k], norms, _atol(norms)),
                               ("final parameters", batched.end_x[k], loop.end_x[0], _atol(coords, loop.end_x[0])),
                               ("final loss", batched.end_loss[k], loop.end_loss[0], _atol(loss, loop.end_loss[0]))):
        try:
            np.testing.assert_allclose(b, ref, rtol=RTOL, atol=atol, equal_nan=True)
        except AssertionError as error:
            lines = [line for line in str(error).splitlines() if "relative" in line.lower()]
            return f"{what} differs ({lines[0].strip() if lines else 'mismatch'})"
    return None


class Checker:
    """Runs groups on one problem, loop runs cached per configuration and seed."""

    def __init__(self, problem_spec: str):
        self.problem_spec = problem_spec
        self.problem = get_problem(problem_spec)
        self.loops: dict[tuple[str, int], Any] = {}

    def loop(self, config, seed: int):
        key = (repr(sorted(config.hyperparams.items())), seed)
        if key not in self.loops:
            self.loops[key] = run_loop(self.problem, config, seed, STEPS, 1, measure_cost=False)
        return self.loops[key]

    def group(self, configs: list) -> tuple[str, list[str]]:
        """("refused" | "equal" | "mismatch", messages) for one batched group."""
        seeds = [SEEDS[i % 2] for i in range(len(configs))]
        try:
            batched = run_batched(self.problem, configs, seeds, STEPS, 1, measure_cost=False)
        except UsageError:
            return "refused", []
        except Exception as error:  # noqa: BLE001  (a rule that crashes is a failure, reported with its config)
            return "mismatch", [f"batched engine raised {type(error).__name__}: {error}"]
        messages = []
        for k, (config, seed) in enumerate(zip(configs, seeds)):
            try:
                loop = self.loop(config, seed)
            except Exception as error:  # noqa: BLE001
                messages.append(f"{config.label}: the loop engine raised {type(error).__name__}: {error} "
                                "(a derivation problem: add it to SKIP with the reason)")
                continue
            problem = _mismatch(batched, k, loop)
            if problem:
                messages.append(f"{config.label} (lr={config.lr}, seed {seed}): {problem}")
        return ("mismatch" if messages else "equal"), messages


def _check_entry(name: str, problem_spec: str) -> list[str]:
    checker = Checker(problem_spec)
    base = get_optimizer(name)
    failures: list[str] = []
    where = f"{name} on {problem_spec}"
    cases = option_cases(name)
    for key, values in cases:
        floats = is_float_like(base.hyperparams[key]) and all(is_float_like(v) and alone for v, _, alone in values)
        if floats:  # the values as columns of one group, with the default
            outcome, _ = checker.group(_pair(base) + [c for _, pair, _ in values for c in pair])
            if outcome == "equal":
                continue
        else:
            outcome = None
        alone_ok = True
        for value, pair, _ in values:
            result, messages = checker.group(pair)
            if result == "mismatch":
                alone_ok = False
                failures += [f"{where}: {key}={value!r}: {m}" for m in messages]
        if outcome == "mismatch" and alone_ok:
            failures.append(f"{where}: {key}: each of {[v for v, _, _ in values]!r} alone equals the loop engine, "
                            "but not in one batched group with the default (a per-configuration column used as "
                            "one shared value?)")
    for combined in combined_cases(name, cases):
        result, messages = checker.group(combined)
        if result == "mismatch":
            failures += [f"{where}: every option at once: {m}" for m in messages]
    return failures


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("problem_spec", ANALYTIC)
def test_every_option_batched_equals_loop_or_refuses(name, problem_spec):
    failures = _check_entry(name, problem_spec)
    assert not failures, "\n".join(failures)


# ---- the training recipe: lr schedules and gradient clipping under the options --------------------------------

# what a user adds to any optimizer (engines.recipe); the batched engine implements every one for every rule
RECIPES = [("warmup-cosine(warmup=0.25, min_lr=1e-4)", 1.0, None), ("step(milestones=(0.5,))", None, 0.5)]


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("schedule, clip_norm, clip_value", RECIPES)
def test_recipes_batched_equal_loop_or_refuse(name, schedule, clip_norm, clip_value):
    """The defaults and every option at once, under an lr schedule with clipping: a rule that keeps the lr it
    started with (a base lr, a largest lr, an lr-scaled statistic) must follow the class as the lr changes."""
    from optbench.engines.recipe import Recipe

    recipe = Recipe(schedule, clip_norm, clip_value)
    problem = get_problem(ANALYTIC[1])
    failures = []
    for configs in [_pair(get_optimizer(name))] + combined_cases(name, option_cases(name)):
        seeds = [SEEDS[i % 2] for i in range(len(configs))]
        try:
            batched = run_batched(problem, configs, seeds, STEPS, 1, recipe=recipe, measure_cost=False)
        except UsageError:
            continue
        for k, (config, seed) in enumerate(zip(configs, seeds)):
            loop = run_loop(problem, config, seed, STEPS, 1, recipe=recipe, measure_cost=False)
            problem_text = _mismatch(batched, k, loop)
            if problem_text:
                failures.append(f"{name} with {recipe.label() or schedule}: {config.label} (lr={config.lr}, "
                                f"seed {seed}): {problem_text}")
    assert not failures, "\n".join(failures)


# ---- the derivation itself -------------------------------------------------------------------------------

def test_string_choices_are_discovered():
    """Choices come from Literal annotations (A2Grad, DASH, Kron's Optional[Literal]), validate_options lists
    (Apollo), the entry's declared valid values (L-BFGS) and preset tables (Muon's Newton–Schulz presets)."""
    assert set(string_choices("a2grad", "variant")) == {"inc", "exp"}
    assert set(string_choices("apollodqn", "weight_decay_type")) == {"decoupled", "stable"}
    assert set(string_choices("apollodqn", "rebound")) == {"belief"}
    assert set(string_choices("dash", "inverse_root_method")) == {"eigh"}
    assert "quintic" in string_choices("muon", "ns_coeffs")
    assert string_choices("lbfgs", "line_search_fn") == ("strong_wolfe",)
    kron = next(e for e in ENTRIES if e.name == "kron")
    assert set(_none_alternatives(kron, "memory_save_mode")) == {"one_diag", "smart_one_diag", "all_diag"}


def test_every_entry_gets_options():
    """Every hyperparameter but lr of every rule's entry gets a derived value that its check and its class accept
    (alone or with a companion setting), or a reason in SKIP: no option goes untested silently."""
    untested = {}
    for name in NAMES:
        entry = next(e for e in ENTRIES if e.name == name)
        covered = {key for key, _ in option_cases(name)}
        missing = [k for k in entry.params if k != "lr" and k not in covered and (name, k) not in SKIP]
        if missing:
            untested[name] = missing
    assert untested == {}, (f"no value derived (or every one refused) for {untested}: teach derived_values the "
                             "type, or give the reason in SKIP")


# ---- networks: per-tensor statistics under every option (slow) ---------------------------------------------

MLP = "mnist-mlp(width=6, depth=2, batch_size=20, train_size=120, test_size=40, precision='float64', eval_every=3)"
NETWORK_STEPS = 4


def _network_mismatch(batched, k: int, loop) -> str | None:
    if not np.array_equal(batched.steps, loop.steps):
        return "recorded steps differ"
    if batched.status[k] != loop.status[0] or batched.end_step[k] != loop.end_step[0]:
        return (f"status/end step: batched {batched.status[k]}@{batched.end_step[k]}, "
                f"loop {loop.status[0]}@{loop.end_step[0]}")
    for what, b, ref in (("loss", batched.loss[:, k], loop.loss[:, 0]),
                         ("gradient norm", batched.grad_norm[:, k], loop.grad_norm[:, 0]),
                         *((column, batched.extra[column][:, k], loop.extra[column][:, 0])
                           for column in ("test_loss", "train_loss_avg"))):
        try:
            np.testing.assert_allclose(b, ref, rtol=RTOL, atol=1e-300, equal_nan=True)
        except AssertionError as error:
            lines = [line for line in str(error).splitlines() if "relative" in line.lower()]
            return f"{what} differs ({lines[0].strip() if lines else 'mismatch'})"
    return None


def _network_rules() -> list[str]:
    """The entries whose rules the batched network engine takes (its needs: no VECTORS, CLOSURE, SEEDS or HESSIAN);
    that it refuses the others is tests/test_engine_contract.py's."""
    from optbench.engines.batched_rules import RULES, missing_needs
    from optbench.engines.network import BATCHED_PROVIDES
    from optbench.optimizers import get_optimizer_entry

    return [n for n in NAMES if not missing_needs(RULES[get_optimizer_entry(n).batched], BATCHED_PROVIDES)]


@pytest.mark.slow
@pytest.mark.parametrize("name", _network_rules())
def test_every_option_on_a_network(network_data, name):
    """The same options on a small MLP (several parameter tensors: matrices and biases), at the default lr."""
    from optbench.engines.network import run_network, run_network_batched

    problem = get_problem(MLP)
    failures = []
    cases = option_cases(name)
    every = [(key, value, pair[0]) for key, values in cases for value, pair, _ in values]
    every += [("every option at once", "", combined[0]) for combined in combined_cases(name, cases)]
    for key, value, config in every:
        try:
            batched = run_network_batched(problem, [config], [0], NETWORK_STEPS, 1)
        except UsageError:
            continue
        loop = run_network(problem, config, 0, NETWORK_STEPS, 1)
        problem_text = _network_mismatch(batched, 0, loop)
        if problem_text:
            failures.append(f"{name} on the MLP: {key}={value!r}: {config.label}: {problem_text}")
    assert not failures, "\n".join(failures)
