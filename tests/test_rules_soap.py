"""SOAP, SWATS, Fromage, Amos, AdamG, FTRL and SRMM (engines/rules_soap.py): each rule against the update formula
its docstring states (the paper's, with the library's documented changes), written here independently in plain
torch float64, one configuration at a time, for several steps on small ``[K, d]`` inputs with per-configuration
hyperparameters; the option branches the registry defaults do not reach against the class (batched == loop, to
1e-8, on analytic problems and, where the network engine takes the rule, an MLP and a CNN); the refusals; and the
state each rule declares against the real class's."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from test_engine_contract import CNN, MLP, _analytic_group, _network_group

from optbench.cost import probe_state_bytes_per_param
from optbench.engines.batched import run_batched, stack_hyperparams
from optbench.engines.batched_rules import RULES
from optbench.engines.capabilities import choose_engine, engine_supports
from optbench.engines.layout import ParamLayout
from optbench.engines.loop import run_loop
from optbench.engines.recipe import Recipe
from optbench.errors import UsageError
from optbench.optimizers import get_optimizer
from optbench.problems import get_problem

X0 = [[0.7, -1.3, 0.2], [-0.4, 0.9, 1.1]]
G = [[[0.5, -2.0, 0.03], [1.0, 0.3, -0.7]],
     [[-0.4, 1.5, 0.6], [0.2, -0.8, 0.1]],
     [[0.3, 0.2, -1.1], [-0.6, 0.5, 0.4]],
     [[0.1, -0.9, 0.5], [0.7, 0.05, -0.3]],
     [[-0.2, 0.4, 0.8], [0.3, -0.2, 0.9]]]


def _close(actual, expected, what, rtol=1e-12):
    np.testing.assert_allclose(np.asarray(actual), np.asarray(expected), rtol=rtol, atol=1e-300, err_msg=what)


def _run_rule(specs, grads=G, x0=X0, shapes=None):
    """The rule of ``specs`` (one spec per configuration, same rule and non-float settings) driven by hand on the
    gradients ``grads[t][k]``: the ``[K, d]`` points after each step."""
    configs = [get_optimizer(s) for s in specs]
    rule = RULES[configs[0].entry.batched]
    hp = stack_hyperparams(configs, torch.float64, "cpu")
    x = torch.tensor(x0, dtype=torch.float64)
    state = rule.init(x, hp)
    state["layout"] = ParamLayout(shapes) if shapes else ParamLayout.vector(x.shape[-1])
    path = []
    for t, g in enumerate(grads, start=1):
        rule.step(x, torch.tensor(g, dtype=torch.float64), state, hp, t)
        path.append(x.clone())
    return path


def _t(values):
    return torch.tensor(values, dtype=torch.float64)


def _check(specs, formula, grads=G, x0=X0, shapes=None):
    """The rule's path against ``formula(k, x0_k, grads_k) -> [points]`` per configuration."""
    path = _run_rule(specs, grads, x0, shapes)
    for k in range(len(specs)):
        expected = formula(k, _t(x0[k]), [_t(g[k]) for g in grads])
        for t, point in enumerate(expected):
            _close(path[t][k], point, f"{specs[k]} step {t + 1}")


# ---- SOAP -----------------------------------------------------------------------------------------------

SOAP_SPECS = ["soap(lr=0.01, betas=(0.9, 0.99), weight_decay=0.1, eps=1e-3)",
              "soap(lr=0.05, betas=(0.5, 0.8), weight_decay=0.0, eps=1e-8)"]


def _soap_formula(spec, normalize=False, correct_bias=True):
    hp = get_optimizer(spec).hyperparams
    lr, (b1, b2), wd, eps = hp["lr"], hp["betas"], hp["weight_decay"], hp["eps"]

    def formula(k, x, grads):
        x, m, v, out = x.clone(), torch.zeros_like(x), torch.zeros_like(x), []
        for t, g in enumerate(grads, start=1):
            if t > 1:  # Q = I on a vector; the first step only starts the (empty) statistics
                n = t - 1
                m = b1 * m + (1 - b1) * g
                v = b2 * v + (1 - b2) * g * g
                u = m / (v.sqrt() + eps)
                if normalize:
                    u = u / ((u * u).mean().sqrt() + eps)
                scale = math.sqrt(1 - b2 ** n) / (1 - b1 ** n) if correct_bias else 1.0
                x = (x - lr * scale * u) * (1 - lr * wd)
            out.append(x.clone())
        return out

    return formula


def test_soap_on_a_vector_is_adam_after_a_statistics_step():
    path = _run_rule(SOAP_SPECS)
    assert torch.equal(path[0], _t(X0))  # step 1 moves nothing
    _check(SOAP_SPECS, lambda k, x, g: _soap_formula(SOAP_SPECS[k])(k, x, g))


@pytest.mark.parametrize("options, normalize, correct_bias", [("normalize_gradient=True", True, True),
                                                              ("correct_bias=False", False, False)])
def test_soap_options(options, normalize, correct_bias):
    specs = [s[:-1] + f", {options})" for s in SOAP_SPECS]
    _check(specs, lambda k, x, g: _soap_formula(specs[k], normalize, correct_bias)(k, x, g))


SOAP_VARIANTS = ["soap(lr=0.01, normalize_gradient=True, weight_decay=0.1)",
                 "soap(lr=0.01, correct_bias=False, betas=(0.8, 0.9), weight_decay=0.0)",
                 "soap(lr=0.02, precondition_frequency=2, shampoo_beta=0.5, max_precondition_dim=1)"]


@pytest.mark.parametrize("spec", SOAP_VARIANTS)
@pytest.mark.parametrize("problem_spec", ["beale", "rosenbrock(noise=0.1)"])
def test_soap_variants_equal_the_class(spec, problem_spec):
    config = get_optimizer(spec)
    _analytic_group(get_problem(problem_spec), [config, config.with_hyperparams(lr=config.lr / 2)], [0, 7])


def test_soap_refuses_preconditioned_vectors_and_networks(network_data):
    for option in ("precondition_1d", "merge_dims"):
        config = get_optimizer(f"soap({option}=True)")
        assert option in RULES["soap"].refuses(config.hyperparams)
        assert not engine_supports("batched", get_problem("beale"), config)
        assert choose_engine("auto", get_problem("beale"), config, {}, "cuda") == "loop"
    for network in (MLP, CNN):
        assert not engine_supports("batched", get_problem(network), get_optimizer("soap"))
        with pytest.raises(UsageError, match="does not support"):
            choose_engine("batched", get_problem(network), get_optimizer("soap"), {}, "cuda")


# ---- SWATS ----------------------------------------------------------------------------------------------

def _swats_formula(spec, sizes):
    """Keskar & Socher's Algorithm 1 as the library runs it (docstring of the rule), one configuration."""
    hp = get_optimizer(spec).hyperparams
    lr0, (b1, b2), eps, wd = hp["lr"], hp["betas"], hp["eps"], hp["weight_decay"]

    def formula(k, x, grads):
        x, out = x.clone(), []
        m, v, vmax, buf = (torch.zeros_like(x) for _ in range(4))
        lam, lr, sgd = [0.0] * len(sizes), lr0, False
        for t, g in enumerate(grads, start=1):
            if wd and hp["weight_decouple"]:
                x = x * (1 - wd * (1.0 if hp["fixed_decay"] else lr))
            elif wd:
                g = g + wd * x
            if sgd:
                buf = b1 * buf + g
                u = (1 - b1) * buf + (b1 * buf if hp["nesterov"] else 0.0)
                x = x - lr * u
            else:
                m = b1 * m + (1 - b1) * g
                v = b2 * v + (1 - b2) * g * g
                vmax = torch.maximum(vmax, v)
                second = vmax if hp["ams_bound"] else v
                p = -lr * math.sqrt(1 - b2 ** t) / (1 - b1 ** t) * m / ((second + 1e-15).sqrt() + eps)
                x = x + p
                new_lr = None
                for i, (p_l, g_l) in enumerate(zip(p.split(sizes), g.split(sizes))):
                    pg = float(p_l @ g_l)
                    if pg != 0:
                        gamma = float(p_l @ p_l) / -pg
                        lam[i] = b2 * lam[i] + (1 - b2) * gamma
                        hat = lam[i] / (1 - b2 ** t)
                        if t > 1 and hat > 0 and abs(hat - gamma) <= 1e-8 + eps * abs(gamma):
                            new_lr = hat
                if new_lr is not None:
                    sgd, lr = True, new_lr
            out.append(x.clone())
        return out

    return formula


# the first configuration sees the same gradient twice, so its projected rate γ repeats and it switches to SGD at
# step 2; the second one's gradients vary and it stays on Adam (without decay, which changes the gradient)
G_SWITCH = [[G[0][0], G[0][1]], [G[0][0], G[1][1]], *G[2:]]
SWATS_PAIRS = [
    ["swats(lr=0.01, betas=(0.9, 0.99), eps=1e-10)", "swats(lr=0.05, betas=(0.8, 0.999), eps=1e-3)"],
    ["swats(lr=0.01, nesterov=True, ams_bound=True, eps=1e-10)",
     "swats(lr=0.05, nesterov=True, ams_bound=True, betas=(0.5, 0.9))"],
    ["swats(lr=1e-4, weight_decay=0.1, nesterov=True)", "swats(lr=0.05, weight_decay=0.2, nesterov=True)"],
    ["swats(lr=1e-4, weight_decay=0.1, weight_decouple=True)",
     "swats(lr=0.05, weight_decay=0.2, weight_decouple=True)"],
    ["swats(lr=1e-4, weight_decay=0.1, weight_decouple=True, fixed_decay=True)",
     "swats(lr=0.05, weight_decay=0.01, weight_decouple=True, fixed_decay=True)"],
]


@pytest.mark.parametrize("specs", SWATS_PAIRS, ids=range(len(SWATS_PAIRS)))
@pytest.mark.parametrize("shapes", [None, [(2,), (1,)]], ids=["vector", "two-tensors"])
def test_swats_follows_the_paper_and_switches_to_sgd(specs, shapes):
    sizes = [3] if shapes is None else [2, 1]
    _check(specs, lambda k, x, g: _swats_formula(specs[k], sizes)(k, x, g), grads=G_SWITCH, shapes=shapes)


def test_swats_switches_per_configuration_with_the_last_eligible_tensors_rate():
    config = get_optimizer("swats(lr=0.01, eps=1e-10)")
    rule = RULES["swats"]
    hp = stack_hyperparams([config, config.with_hyperparams(lr=0.05)], torch.float64, "cpu")
    x = _t(X0)
    state = rule.init(x, hp)
    state["layout"] = ParamLayout([(2,), (1,)])
    for t, g in enumerate(G_SWITCH[:2], start=1):
        rule.step(x, _t(g), state, hp, t)
    assert state["sgd"][:, 0].tolist() == [True, False]
    corrected = state["exp_avg2"] / (1 - 0.999 ** 2)
    assert float(state["group_lr"][0]) == float(corrected[0, 1])  # both tensors eligible: the last one's rate
    assert float(state["group_lr"][1]) == 0.05
    assert rule.slots_in(state).tolist() == [2 + 2 / 3 + 1, 2 + 2 / 3]


SWATS_VARIANTS = ["swats(lr=1e-4, nesterov=True, weight_decay=0.01)",
                  "swats(lr=1e-4, ams_bound=True, weight_decay=0.1, weight_decouple=True)",
                  "swats(lr=0.1, eps=0.1, betas=(0.5, 0.9), weight_decay=0.01, weight_decouple=True, fixed_decay=True)"]


@pytest.mark.parametrize("spec", SWATS_VARIANTS)
@pytest.mark.parametrize("problem_spec", ["beale", "rosenbrock(noise=0.1)"])
def test_swats_variants_equal_the_class(spec, problem_spec):
    config = get_optimizer(spec)
    _analytic_group(get_problem(problem_spec), [config, config.with_hyperparams(lr=config.lr / 2)], [0, 7])


@pytest.mark.parametrize("spec", SWATS_VARIANTS[:2])
@pytest.mark.parametrize("network", [MLP, CNN], ids=["mlp", "cnn"])
def test_swats_variants_equal_the_class_on_networks(network_data, spec, network):
    config = get_optimizer(spec)
    problem = get_problem(network)
    assert engine_supports("batched", problem, config)
    _network_group(problem, [config, config.with_hyperparams(lr=config.lr * 3)], [0, 7])


def test_swats_under_a_schedule_takes_the_scheduled_lr_after_switching():
    """The loop engine sets the group's lr before every step of a schedule, over SWATS's switched lr."""
    problem, recipe = get_problem("rosenbrock"), Recipe(schedule="cosine")
    configs = [get_optimizer("swats(lr=1e-4)"), get_optimizer("swats(lr=0.1, eps=0.1)")]
    batched = run_batched(problem, configs, [0, 0], 20, 1, recipe=recipe, measure_cost=False)
    for k, config in enumerate(configs):
        loop = run_loop(problem, config, 0, 20, 1, recipe=recipe, measure_cost=False)
        _close(batched.coords[:, k], loop.coords[:, 0], config.label, rtol=1e-8)


# ---- Fromage --------------------------------------------------------------------------------------------

SHAPES = [None, [(2,), (1,)], [(3, 1)], [(1, 1, 3)]]  # one vector; two vectors; a matrix; a 3-d kernel
SHAPE_IDS = ["vector", "two-tensors", "matrix", "kernel"]


def _slices(x, shapes):
    sizes = [3] if shapes is None else [math.prod(shape) for shape in shapes]
    return list(x.split(sizes))


def _fromage_formula(spec, shapes):
    hp = get_optimizer(spec).hyperparams
    lr, bound = hp["lr"], hp["p_bound"]

    def formula(k, x, grads):
        parts, out = [p.clone() for p in _slices(x, shapes)], []
        maxima = [float(p.norm()) * bound for p in parts] if bound is not None else None
        for g in grads:
            for i, (p, g_l) in enumerate(zip(parts, _slices(g, shapes))):
                ratio = float(p.norm() / g_l.norm()) if p.norm() > 0 and g_l.norm() > 0 else 1.0
                p = (p - lr * ratio * g_l) / math.sqrt(1 + lr * lr)
                if maxima is not None and p.norm() > maxima[i]:
                    p = p * (maxima[i] / p.norm())
                parts[i] = p
            out.append(torch.cat(parts))
        return out

    return formula


@pytest.mark.parametrize("bound", [None, (0.95, 1.05)], ids=["unbounded", "p_bound"])
@pytest.mark.parametrize("shapes", SHAPES, ids=SHAPE_IDS)
def test_fromage_follows_the_paper(bound, shapes):
    lrs = (0.1, 0.6)
    specs = [f"fromage(lr={lr})" if bound is None else f"fromage(lr={lr}, p_bound={b})" for lr, b in
             zip(lrs, bound or (None, None))]
    _check(specs, lambda k, x, g: _fromage_formula(specs[k], shapes)(k, x, g), shapes=shapes)


def test_fromage_bound_is_reached_and_a_zero_gradient_is_not_rescaled():
    path = _run_rule(["fromage(lr=0.6, p_bound=0.95)"], grads=[[[0.0, 0.0, 0.0]], [[1.0, 2.0, -1.0]]],
                     x0=[[0.3, -0.4, 0.0]])
    assert torch.allclose(path[0][0], _t([0.3, -0.4, 0.0]) / math.sqrt(1.36), rtol=1e-15)  # g = 0: plain shrink
    assert float(path[1][0].norm()) == pytest.approx(0.95 * 0.5, rel=1e-14)  # capped at b‖x₀‖


# ---- Amos -----------------------------------------------------------------------------------------------

def _amos_formula(spec, shapes):
    hp = get_optimizer(spec).hyperparams
    lr, beta, mu, l2, c, d, eps = (hp[n] for n in ("lr", "beta", "momentum", "extra_l2", "c_coef", "d_coef", "eps"))
    scales = [0.5] if shapes is None else [0.5 if len(s) <= 1 else math.sqrt((2 if len(s) == 2 else 1) / s[1])
                                           for s in shapes]

    def formula(k, x, grads):
        parts, out = [p.clone() for p in _slices(x, shapes)], []
        v, b, m = [0.0] * len(parts), [0.0] * len(parts), [torch.zeros_like(p) for p in parts]
        for t, g in enumerate(grads, start=1):
            for i, (p, g_l) in enumerate(zip(parts, _slices(g, shapes))):
                g2 = float((g_l * g_l).mean())
                v[i] = beta * v[i] + (1 - beta) * g2
                r = (1 - beta ** t) / (v[i] + eps)
                xi = lr * scales[i]
                gamma = lr * lr * g2 * r / math.sqrt(1 + c * math.sqrt(lr) * b[i])
                u = (p * (gamma - l2) / 2 + xi * math.sqrt(r) * g_l) / (1 + d * math.sqrt(xi) * b[i])
                b[i] = b[i] * (1 + gamma) + gamma
                if mu > 0:
                    m[i] = mu * m[i] + (1 - mu) * u
                    u = m[i]
                parts[i] = p - u
            out.append(torch.cat(parts))
        return out

    return formula


AMOS_SPECS = ["amos(lr=0.05, beta=0.9, c_coef=0.5, d_coef=0.1)",
              "amos(lr=0.2, beta=0.99, momentum=0.5, extra_l2=0.1, eps=1e-6)"]


@pytest.mark.parametrize("shapes", SHAPES, ids=SHAPE_IDS)
def test_amos_follows_the_paper(shapes):
    _check(AMOS_SPECS, lambda k, x, g: _amos_formula(AMOS_SPECS[k], shapes)(k, x, g), shapes=shapes)


def test_amos_extra_l2_grows_the_weights():
    """The library's deviation: x(γ − λ₂)/2 in the update, so with no gradient x ← x(1 + λ₂/2) (the authors' code
    shrinks it, x ← x(1 − λ₂))."""
    (x1,) = _run_rule(["amos(lr=0.1, extra_l2=0.2)"], grads=[[[0.0, 0.0, 0.0]]], x0=[[1.0, -2.0, 0.5]])
    _close(x1[0], _t([1.0, -2.0, 0.5]) * 1.1, "zero gradient")


# ---- AdamG ----------------------------------------------------------------------------------------------

def _adamg_formula(spec):
    hp = get_optimizer(spec).hyperparams
    lr, (b1, b2, b3), p, q, wd, eps = hp["lr"], hp["betas"], hp["p"], hp["q"], hp["weight_decay"], hp["eps"]

    def formula(k, x, grads):
        x, out = x.clone(), []
        m, v, r = (torch.zeros_like(x) for _ in range(3))
        for t, g in enumerate(grads, start=1):
            if wd and hp["weight_decouple"]:
                x = x * (1 - wd * (1.0 if hp["fixed_decay"] else lr))
            elif wd:
                g = g + wd * x
            v = b2 * v + (1 - b2) * g * g
            r = b3 * r + (1 - b3) * p * v ** q
            m = b1 * m + (1 - b1) * r * g
            eta = min(lr, 1 / math.sqrt(t))  # the golden step size, times the lr multiplier below 1/√t
            x = x - eta / (1 - b1 ** t) * m / ((v / (1 - b2 ** t)).sqrt() + eps)
            out.append(x.clone())
        return out

    return formula


@pytest.mark.parametrize("options", ["", ", weight_decay=0.1", ", weight_decay=0.1, weight_decouple=True",
                                     ", weight_decay=0.1, weight_decouple=True, fixed_decay=True"])
def test_adamg_follows_the_paper(options):
    specs = [f"adamg(lr=1.0{options})", f"adamg(lr=0.5, betas=(0.9, 0.99, 0.8), p=0.5, q=0.3, eps=1e-4{options})"]
    _check(specs, lambda k, x, g: _adamg_formula(specs[k])(k, x, g))


# ---- FTRL -----------------------------------------------------------------------------------------------

def _ftrl_formula(spec):
    hp = get_optimizer(spec).hyperparams
    alpha, c, beta, l1, l2 = hp["lr"], -hp["lr_power"], hp["beta"], hp["lambda_1"], hp["lambda_2"]

    def formula(k, x, grads):
        x, out = x.clone(), []
        z, n = torch.zeros_like(x), torch.zeros_like(x)
        for g in grads:
            sigma = ((n + g * g) ** c - n ** c) / alpha
            z = z + g - sigma * x
            n = n + g * g
            x = torch.where(z.abs() <= l1, 0.0, (torch.sign(z) * l1 - z) / ((beta + n.sqrt()) / alpha + l2))
            out.append(x.clone())
        return out

    return formula


@pytest.mark.parametrize("specs", [
    ["ftrl(lr=0.1)", "ftrl(lr=0.5, beta=1.0, lambda_1=1.0, lambda_2=0.2)"],  # one shared power: √
    ["ftrl(lr=0.1, lr_power=-0.3, lambda_1=1.0)", "ftrl(lr=0.5, lr_power=-0.5, beta=0.1, lambda_2=1.0)"],
], ids=["shared-power", "powers"])
def test_ftrl_follows_the_paper(specs):
    path = _run_rule(specs)
    assert any(bool((point == 0).any()) for point in path)  # λ₁ zeroes some coordinates
    _check(specs, lambda k, x, g: _ftrl_formula(specs[k])(k, x, g))


# ---- SRMM -----------------------------------------------------------------------------------------------

def _srmm_formula(spec):
    hp = get_optimizer(spec).hyperparams
    lr, beta, memory = hp["lr"], hp["beta"], hp["memory_length"]

    def formula(k, x, grads):
        x, out = x.clone(), []
        g_bar, x_bar = torch.zeros_like(x), torch.zeros_like(x)
        for t, g in enumerate(grads, start=1):
            w = ((t % memory) + 1) ** -beta if memory is not None else 1.0
            g_bar = (1 - w) * g_bar + w * g
            x_bar = (1 - w) * x_bar + w * x
            x = x_bar = x_bar - lr * g_bar
            out.append(x.clone())
        return out

    return formula


@pytest.mark.parametrize("specs", [["srmm(lr=0.1, memory_length=3)", "srmm(lr=0.05, beta=0.8, memory_length=100)"],
                                   ["srmm(lr=0.1, memory_length=None)", "srmm(lr=0.3, beta=0.2, memory_length=None)"]],
                         ids=["memory", "no-memory"])
def test_srmm_follows_the_paper(specs):
    _check(specs, lambda k, x, g: _srmm_formula(specs[k])(k, x, g))


def test_srmm_first_step_pulls_toward_the_origin():
    """The library's weights are offset by one: w₁ = 2^(−β), so from zero averages x̄₁ = 2^(−β)x₀ − η·2^(−β)g₀
    (the paper's w₁ = 1 gives x₀ − ηg₀)."""
    (x1,) = _run_rule(["srmm(lr=0.1, beta=0.5)"], grads=[[[0.0, 1.0, 0.0]]], x0=[[1.0, -2.0, 0.5]])
    _close(x1[0], (_t([1.0, -2.0, 0.5]) - 0.1 * _t([0.0, 1.0, 0.0])) * 2 ** -0.5, "first step")


def test_swats_small_learning_rates_switch_on_the_absolute_tolerance():
    """|λ̂ − γ| ≤ 1e-8 + ε|γ|: γ is of the order of η, so at η = 1e-9 the first comparison switches even though λ̂
    and γ differ by far more than the relative ε (the gradients of G differ from step to step)."""
    config = get_optimizer("swats(lr=1e-9)")
    hp = stack_hyperparams([config, config.with_hyperparams(lr=0.05)], torch.float64, "cpu")
    rule, x = RULES["swats"], _t(X0)
    state = rule.init(x, hp)
    state["layout"] = ParamLayout.vector(3)
    for t, g in enumerate(G[:2], start=1):
        rule.step(x, _t(g), state, hp, t)
    assert state["sgd"][:, 0].tolist() == [True, False]


# ---- the options against the classes ----------------------------------------------------------------------

VARIANTS = ["fromage(lr=0.05, p_bound=1.01)", "amos(lr=0.01, momentum=0.9, extra_l2=0.01, c_coef=0.5, d_coef=0.1)",
            "adamg(lr=0.5, weight_decay=0.1, betas=(0.9, 0.99, 0.8))", "adamg(weight_decay=0.1, weight_decouple=True)",
            "adamg(lr=0.7, weight_decay=0.1, weight_decouple=True, fixed_decay=True, p=0.5, q=0.3)",
            "ftrl(lr=0.5, lr_power=-0.3, beta=0.5, lambda_1=0.01, lambda_2=0.1)", "ftrl(lr=0.2, lambda_1=0.1)",
            "srmm(lr=0.01, memory_length=4, beta=0.8)", "srmm(lr=0.01, memory_length=None)"]


@pytest.mark.parametrize("spec", VARIANTS)
@pytest.mark.parametrize("problem_spec", ["beale", "rosenbrock(noise=0.1)"])
def test_variants_equal_the_class(spec, problem_spec):
    config = get_optimizer(spec)
    _analytic_group(get_problem(problem_spec), [config, config.with_hyperparams(lr=config.lr / 2)], [0, 7])


@pytest.mark.parametrize("spec", VARIANTS)
@pytest.mark.parametrize("network", [MLP, CNN], ids=["mlp", "cnn"])
def test_variants_equal_the_class_on_networks(network_data, spec, network):
    config = get_optimizer(spec)
    problem = get_problem(network)
    assert engine_supports("batched", problem, config)
    _network_group(problem, [config, config.with_hyperparams(lr=config.lr / 2)], [0, 7])


# ---- declared state ---------------------------------------------------------------------------------------

STATE_SPECS = ["soap", "soap(normalize_gradient=True)", "swats", "swats(ams_bound=True)", "fromage",
               "fromage(p_bound=2.0)", "amos", "amos(momentum=0.5)", "adamg", "ftrl", "srmm",
               "srmm(memory_length=None)"]


@pytest.mark.parametrize("spec", STATE_SPECS)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_rules_declare_the_state_their_class_keeps(spec, dtype):
    config = get_optimizer(spec)
    declared = RULES[config.entry.batched].slots_per_param(config.hyperparams, 5) * dtype.itemsize
    assert declared == probe_state_bytes_per_param(config, 5, dtype), spec
