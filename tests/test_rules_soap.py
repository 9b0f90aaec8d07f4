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


# ---- declared state ---------------------------------------------------------------------------------------

STATE_SPECS = ["soap", "soap(normalize_gradient=True)", "swats", "swats(ams_bound=True)"]


@pytest.mark.parametrize("spec", STATE_SPECS)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_rules_declare_the_state_their_class_keeps(spec, dtype):
    config = get_optimizer(spec)
    declared = RULES[config.entry.batched].slots_per_param(config.hyperparams, 5) * dtype.itemsize
    assert declared == probe_state_bytes_per_param(config, 5, dtype), spec
