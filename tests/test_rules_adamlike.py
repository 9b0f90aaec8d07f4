"""The Adam-family rules of engines/rules_adamlike.py: each rule against its paper's update (with the library's
documented deviations), written here by hand in plain torch float64 with Python-float hyperparameters, one
configuration at a time, independently of pytorch_optimizer and of the rules' code; K configurations with their own
hyperparameters are stepped together by the rule for several steps and compared to 1e-12. Then every option branch
the registry defaults of tests/test_engine_contract.py do not reach, against the class itself (the loop engine), on
analytic problems and on networks, and the state each rule declares."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from optbench.cost import probe_state_bytes_per_param
from optbench.engines.batched import run_batched, stack_hyperparams
from optbench.engines.batched_rules import RULES
from optbench.engines.capabilities import engine_supports
from optbench.engines.layout import ParamLayout
from optbench.engines.loop import run_loop
from optbench.engines.network import run_network, run_network_batched
from optbench.engines.recipe import Recipe
from optbench.optimizers import get_optimizer
from optbench.problems import get_problem

D = 4
STEPS = 6
GEN = torch.Generator().manual_seed(11)
X0 = torch.randn(3, D, dtype=torch.float64, generator=GEN)
CURVATURE = torch.rand(3, D, dtype=torch.float64, generator=GEN) + 0.5
SHIFTS = torch.randn(12, 3, D, dtype=torch.float64, generator=GEN)


def _grad(x, k, t):
    """Configuration k's gradient at step t: of a separable quadratic with a shift per step (a noisy gradient)."""
    return CURVATURE[k] * x + SHIFTS[t - 1, k]


def _rule_path(specs, steps=STEPS, layout=None, x0=None, grad=_grad, lrs=None):
    """The rule stepping the K = len(specs) configurations together: the ``[K, d]`` points after each step.
    ``lrs``: a learning rate per step (a schedule), the same for every configuration."""
    configs = [get_optimizer(s) for s in specs]
    rule = RULES[configs[0].entry.batched]
    hp = stack_hyperparams(configs, torch.float64, "cpu")
    x = (X0[:len(specs)] if x0 is None else x0).clone()
    state = rule.init(x, hp)
    state["layout"] = layout or ParamLayout.vector(x.shape[-1])
    path = []
    for t in range(1, steps + 1):
        if lrs is not None:
            hp["lr"] = torch.full_like(hp["lr"], lrs[t - 1])
        g = torch.stack([grad(x[k].clone(), k, t) for k in range(len(specs))])
        rule.step(x, g, state, hp, t)
        path.append(x.clone())
    return torch.stack(path)


def _hp(spec):
    """One configuration's hyperparameters as Python values, betas split as β₁, β₂ (, β₃)."""
    hp = dict(get_optimizer(spec).hyperparams)
    for i, beta in enumerate(hp.pop("betas", ())):
        hp[f"b{i + 1}"] = float(beta)
    return hp


def _check(specs, reference, **kwargs):
    """The rule's path equals ``reference(hp, k, steps)`` (the points of configuration k) to 1e-12."""
    steps = kwargs.get("steps", STEPS)
    path = _rule_path(specs, **kwargs)
    for k, spec in enumerate(specs):
        expected = torch.stack(reference(_hp(spec), k, steps))
        np.testing.assert_allclose(path[:, k].numpy(), expected.numpy(), rtol=1e-12, atol=1e-14, err_msg=spec)
    return path


def _rectifier(b2, t):
    """RAdam's ρ_t and r_t (r_t with the √(1 − β₂ᵗ) of v's bias correction, None where ρ_t ≤ 4)."""
    rho_inf = 2 / (1 - b2) - 1
    rho = rho_inf - 2 * t * b2**t / (1 - b2**t)
    if rho <= 4:
        return rho, None
    return rho, math.sqrt((1 - b2**t) * (rho - 4) * (rho - 2) * rho_inf / ((rho_inf - 4) * (rho_inf - 2) * rho))


# ---- AdaBelief ------------------------------------------------------------------------------------------

ADABELIEF = ["adabelief(lr=0.01, betas=(0.8, 0.99), weight_decay=0.1)", "adabelief(lr=0.03, eps=1e-3)",
             "adabelief(lr=0.02, betas=(0.5, 0.9), eps=1e-8, weight_decay=0.01, weight_decouple=True)"]


def _adabelief(h, k, steps, rectify=False, ams=False):
    x, m, s, smax, out = X0[k].clone(), 0.0, 0.0, torch.zeros(D, dtype=torch.float64), []
    for t in range(1, steps + 1):
        g = _grad(x, k, t)
        if h["weight_decouple"]:
            x = x * (1 - h["weight_decay"] * h["lr"])
        else:
            g = g + h["weight_decay"] * x
        m = h["b1"] * m + (1 - h["b1"]) * g
        s = h["b2"] * s + (1 - h["b2"]) * (g - m) ** 2 + h["eps"]
        if ams:
            smax = torch.maximum(smax, s)
        belief = smax if ams else s
        m_hat = m / (1 - h["b1"] ** t)
        if not rectify:
            x = x - h["lr"] * m_hat / (torch.sqrt(belief / (1 - h["b2"] ** t)) + h["eps"])
        else:
            rho, r = _rectifier(h["b2"], t)
            if rho >= h["n_sma_threshold"]:
                x = x - h["lr"] * r * m_hat / (torch.sqrt(belief) + h["eps"])
            elif h["degenerated_to_sgd"]:
                x = x - h["lr"] * m_hat
        out.append(x)
    return out


def test_adabelief_follows_its_paper():
    _check(ADABELIEF, _adabelief)


def test_adabelief_coupled_decay_and_ams_bound():
    specs = ["adabelief(lr=0.01, weight_decay=0.1, weight_decouple=False, ams_bound=True)",
             "adabelief(lr=0.05, betas=(0.5, 0.9), weight_decay=0.3, weight_decouple=False, ams_bound=True)"]
    _check(specs, lambda h, k, n: _adabelief(h, k, n, ams=True))


@pytest.mark.parametrize("degenerated", [True, False])
def test_adabelief_rectified_steps_only_once_the_variance_is_tractable(degenerated):
    # β₂ = 0.9: ρ_t ≥ 5 from t = 6 on, so the first five steps are SGD steps or none
    specs = [f"adabelief(lr=0.01, betas=(0.9, 0.9), rectify=True, degenerated_to_sgd={degenerated})",
             f"adabelief(lr=0.05, betas=(0.5, 0.9), rectify=True, degenerated_to_sgd={degenerated}, eps=1e-6)"]
    path = _check(specs, lambda h, k, n: _adabelief(h, k, n, rectify=True), steps=9)
    if not degenerated:
        np.testing.assert_array_equal(path[4].numpy(), X0[:2].numpy())


# ---- Yogi -----------------------------------------------------------------------------------------------

def _yogi(h, k, steps):
    x, out = X0[k].clone(), []
    m = torch.full((D,), h["initial_accumulator"], dtype=torch.float64)
    v = m.clone()
    for t in range(1, steps + 1):
        g = _grad(x, k, t)
        if h["weight_decouple"]:
            x = x * (1 - h["weight_decay"] * (1 if h["fixed_decay"] else h["lr"]))
        else:
            g = g + h["weight_decay"] * x
        m = h["b1"] * m + (1 - h["b1"]) * g
        v = v - (1 - h["b2"]) * torch.sign(v - g * g) * g * g
        x = x - h["lr"] / (1 - h["b1"] ** t) * m / (torch.sqrt(v) / math.sqrt(1 - h["b2"] ** t) + h["eps"])
        out.append(x)
    return out


def test_yogi_follows_its_paper_with_the_librarys_bias_corrections():
    _check(["yogi(lr=0.01, weight_decay=0.1)", "yogi(lr=0.1, betas=(0.5, 0.9), initial_accumulator=0.5)",
            "yogi(lr=0.05, eps=1e-6)"], _yogi)


def test_yogi_coupled_and_fixed_decay():
    _check(["yogi(lr=0.01, weight_decay=0.1, weight_decouple=False)",
            "yogi(lr=0.05, weight_decay=0.3, weight_decouple=False, initial_accumulator=0.0)"], _yogi)
    _check(["yogi(lr=0.01, weight_decay=0.1, fixed_decay=True)"], _yogi)


# ---- AdamP ----------------------------------------------------------------------------------------------

def _adamp(h, k, steps, x0=None, grad=_grad, shapes=((D,),)):
    """AdamP with its projection, parameter tensor by parameter tensor (``shapes``: the tensors in x's columns)."""
    x = (X0[k] if x0 is None else x0[k]).clone()
    m, v, out, branches = torch.zeros_like(x), torch.zeros_like(x), [], []
    for t in range(1, steps + 1):
        g = grad(x.clone(), k, t)
        m = h["b1"] * m + (1 - h["b1"]) * g
        v = h["b2"] * v + (1 - h["b2"]) * g * g
        direction = h["b1"] * m + (1 - h["b1"]) * g if h["nesterov"] else m
        u = direction * math.sqrt(1 - h["b2"] ** t) / (torch.sqrt(v) + h["eps"])
        ratio = torch.ones_like(x)
        start = 0
        for shape in shapes:
            n = math.prod(shape)
            if len(shape) > 1:
                w, gw, uw = (y[start:start + n].reshape(shape[0], -1) for y in (x, g, u))

                def cos(a, b):
                    return abs(float((a * b).sum())) / (max(float(a.norm()), h["eps"]) * max(float(b.norm()), h["eps"]))

                rows = [cos(gw[i], w[i]) for i in range(shape[0])]
                if max(rows) < h["delta"] / math.sqrt(n // shape[0]):
                    unit = w / (w.norm(dim=1, keepdim=True) + h["eps"])
                    uw = uw - unit * (unit * uw).sum(dim=1, keepdim=True)
                    branch = "channel"
                elif cos(gw.flatten(), w.flatten()) < h["delta"] / math.sqrt(n):
                    unit = w / (w.norm() + h["eps"])
                    uw = uw - unit * (unit * uw).sum()
                    branch = "layer"
                else:
                    branch = "none"
                branches.append(branch)
                u = u.clone()
                u[start:start + n] = uw.flatten()
                if branch != "none":
                    ratio[start:start + n] = h["wd_ratio"]
            start += n
        if h["weight_decouple"]:
            x = x * (1 - h["weight_decay"] * (1 if h["fixed_decay"] else h["lr"]) * ratio)
        x = x - h["lr"] / (1 - h["b1"] ** t) * u
        out.append(x)
    return out, branches


def test_adamp_on_a_vector_is_adam_with_decoupled_decay():
    specs = ["adamp(lr=0.01, weight_decay=0.1)", "adamp(lr=0.05, betas=(0.5, 0.9), eps=1e-3, weight_decay=0.5)"]
    _check(specs, lambda h, k, n: _adamp(h, k, n)[0])
    _check([s[:-1] + ", nesterov=True)" for s in specs], lambda h, k, n: _adamp(h, k, n)[0])
    _check(["adamp(lr=0.02, fixed_decay=True, weight_decay=0.01)"], lambda h, k, n: _adamp(h, k, n)[0])


def test_adamp_coupled_decay_has_no_effect():
    """weight_decouple=False: the class adds λx to the gradient after the update was formed from it."""
    with_decay = _rule_path(["adamp(lr=0.01, weight_decay=0.5, weight_decouple=False)"])
    without = _rule_path(["adamp(lr=0.01)"])
    np.testing.assert_array_equal(with_decay.numpy(), without.numpy())


MATRIX_SHAPES = ((2, 3), (3,))  # a weight matrix and a bias
W0 = torch.tensor([[1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.2, -0.3, 0.5]], dtype=torch.float64).repeat(3, 1)


def _matrix_grad(x, k, t):
    """Rows nearly orthogonal to the weights' rows (a scale-invariant layer) for the first two configurations; for
    the third, rows ±parallel to the weights with opposite signs, so only the whole tensor is orthogonal to them."""
    w = x[:6].reshape(2, 3)
    if k < 2:
        g = torch.stack([torch.linalg.cross(w[0], torch.tensor([0.3, 0.2, 1.0 + t], dtype=torch.float64)),
                         torch.linalg.cross(w[1], torch.tensor([1.0, -0.5 * t, 0.4], dtype=torch.float64))])
    else:
        g = torch.stack([w[0] / w[0].norm() ** 2, -w[1] / w[1].norm() ** 2])
    return torch.cat([g.flatten(), SHIFTS[t - 1, k, :3]])


def test_adamp_projects_scale_invariant_weights_per_channel_or_per_tensor():
    specs = ["adamp(lr=0.01, weight_decay=0.1, delta=0.5, wd_ratio=0.2)",
             "adamp(lr=0.02, weight_decay=0.2, delta=0.0)",
             "adamp(lr=0.05, weight_decay=0.1, delta=1.0, wd_ratio=0.5, betas=(0.5, 0.9))"]
    layout = ParamLayout(MATRIX_SHAPES)
    path = _rule_path(specs, steps=4, layout=layout, x0=W0, grad=_matrix_grad)
    taken = []
    for k, spec in enumerate(specs):
        expected, branches = _adamp(_hp(spec), k, 4, x0=W0, grad=_matrix_grad, shapes=MATRIX_SHAPES)
        np.testing.assert_allclose(path[:, k].numpy(), torch.stack(expected).numpy(), rtol=1e-12, atol=1e-14)
        taken.append(branches[0])
    assert taken == ["channel", "none", "layer"]


# ---- LaProp ---------------------------------------------------------------------------------------------

def _laprop(h, k, steps, lrs=None, centered_after=None, ams=False):
    x, m, v, mu, vmax, lr_avg, out = X0[k].clone(), 0.0, 0.0, 0.0, torch.zeros(D, dtype=torch.float64), 0.0, []
    for t in range(1, steps + 1):
        lr = h["lr"] if lrs is None else lrs[t - 1]
        g = _grad(x, k, t)
        v = h["b2"] * v + (1 - h["b2"]) * g * g
        second = v
        if centered_after is not None:
            mu = h["b2"] * mu + (1 - h["b2"]) * g
            if t > centered_after:
                second = v - mu * mu
        if ams:
            vmax = torch.maximum(vmax, second)
            second = vmax
        denominator = (torch.sqrt(second + 1e-15) + h["eps"]) / math.sqrt(1 - h["b2"] ** t)
        m = h["b1"] * m + (1 - h["b1"]) * lr * g / denominator
        lr_avg = h["b1"] * lr_avg + (1 - h["b1"]) * lr  # 1 − β₁ᵗ times lr under a constant lr
        step = float(torch.tensor(1 / (lr_avg / lr), dtype=torch.float32))  # the class's float32 step
        x = x - step * m
        if h["weight_decouple"]:
            x = x * (1 - h["weight_decay"] * (1 if h["fixed_decay"] else lr))
        out.append(x)
    return out


def test_laprop_normalises_the_gradient_before_the_momentum():
    specs = ["laprop(lr=0.01, weight_decay=0.1)", "laprop(lr=0.05, betas=(0.5, 0.9), eps=1e-6)",
             "laprop(lr=0.02, weight_decay=0.01)"]
    _check(specs, _laprop)


def test_laprop_bias_correction_follows_a_schedule():
    lrs = [0.01, 0.02, 0.04, 0.03, 0.01, 0.005]
    _check(["laprop(lr=0.01)", "laprop(lr=0.01, betas=(0.5, 0.99))"], lambda h, k, n: _laprop(h, k, n, lrs), lrs=lrs)


def test_laprop_centered_and_ams_bound():
    specs = ["laprop(lr=0.01, centered=True, steps_before_using_centered=2, ams_bound=True)",
             "laprop(lr=0.03, centered=True, steps_before_using_centered=3, ams_bound=True, betas=(0.5, 0.6))"]
    path = _rule_path(specs)
    for k, (spec, after) in enumerate(zip(specs, (2, 3))):
        expected = torch.stack(_laprop(_hp(spec), k, STEPS, centered_after=after, ams=True))
        np.testing.assert_allclose(path[:, k].numpy(), expected.numpy(), rtol=1e-12, atol=1e-14)


def test_laprop_coupled_decay_has_no_effect():
    """weight_decouple=False: the class adds λx to the gradient after the step used it."""
    np.testing.assert_array_equal(_rule_path(["laprop(lr=0.01, weight_decay=0.5, weight_decouple=False)"]).numpy(),
                                  _rule_path(["laprop(lr=0.01)"]).numpy())


# ---- QHAdam ---------------------------------------------------------------------------------------------

def _qhadam(h, k, steps, float32_weights=False):
    x, m, v, w1, w2, out = X0[k].clone(), 0.0, 0.0, 0.0, 0.0, []
    nu1, nu2 = h["nus"]
    for t in range(1, steps + 1):
        g = _grad(x, k, t)
        if h["weight_decouple"]:
            x = x * (1 - h["weight_decay"] * h["lr"])
        else:
            g = g + h["weight_decay"] * x
        if float32_weights:  # the library: debiased averages by lerp with 1/w, w ← βw + 1 in float32
            f32 = np.float32
            w1, w2 = f32(w1) * f32(h["b1"]) + f32(1.0), f32(w2) * f32(h["b2"]) + f32(1.0)
            m = m + float(f32(1.0) / w1) * (g - m)
            v = v + float(f32(1.0) / w2) * (g * g - v)
            m_hat, v_hat = m, v
        else:  # the paper
            m = h["b1"] * m + (1 - h["b1"]) * g
            v = h["b2"] * v + (1 - h["b2"]) * g * g
            m_hat, v_hat = m / (1 - h["b1"] ** t), v / (1 - h["b2"] ** t)
        x = x - h["lr"] * ((1 - nu1) * g + nu1 * m_hat) / (torch.sqrt((1 - nu2) * g * g + nu2 * v_hat) + h["eps"])
        out.append(x)
    return out


QHADAM = ["qhadam(lr=0.01, nus=(0.7, 1.0), weight_decay=0.1)", "qhadam(lr=0.05, nus=(1.0, 1.0), betas=(0.5, 0.9))",
          "qhadam(lr=0.02, nus=(0.5, 0.8), eps=1e-3)"]


def test_qhadam_follows_its_paper():
    """The library's float32 weights 1/w_t make its debiased averages float32-accurate (1e-7)."""
    path = _rule_path(QHADAM)
    for k, spec in enumerate(QHADAM):
        expected = torch.stack(_qhadam(_hp(spec), k, STEPS))
        np.testing.assert_allclose(path[:, k].numpy(), expected.numpy(), rtol=1e-6, err_msg=spec)


def test_qhadam_debiases_with_float32_weights():
    _check(QHADAM, lambda h, k, n: _qhadam(h, k, n, float32_weights=True))
    _check(["qhadam(lr=0.01, nus=(0.7, 0.9), weight_decay=0.1, weight_decouple=True)"],
           lambda h, k, n: _qhadam(h, k, n, float32_weights=True))


# ---- DiffGrad -------------------------------------------------------------------------------------------

def _diffgrad(h, k, steps, rectify=False, ams=False):
    x, m, v, prev, vmax, out = X0[k].clone(), 0.0, 0.0, 0.0, torch.zeros(D, dtype=torch.float64), []
    for t in range(1, steps + 1):
        g = _grad(x, k, t)
        if h["weight_decouple"]:
            x = x * (1 - h["weight_decay"] * h["lr"])
        else:
            g = g + h["weight_decay"] * x
        m = h["b1"] * m + (1 - h["b1"]) * g
        v = h["b2"] * v + (1 - h["b2"]) * g * g
        if ams:
            vmax = torch.maximum(vmax, v)
        friction = torch.sigmoid(torch.abs(prev - g))
        denominator = torch.sqrt((vmax if ams else v) + 1e-15) + h["eps"]
        if not rectify:
            x = x - h["lr"] * math.sqrt(1 - h["b2"] ** t) / (1 - h["b1"] ** t) * friction * m / denominator
        else:
            rho, r = _rectifier(h["b2"], t)
            if rho >= h["n_sma_threshold"]:
                x = x - h["lr"] * r / (1 - h["b1"] ** t) * friction * m / denominator
            elif h["degenerated_to_sgd"]:
                x = x - h["lr"] / (1 - h["b1"] ** t) * m
        prev = g
        out.append(x)
    return out


def test_diffgrad_follows_its_paper():
    _check(["diffgrad(lr=0.01, weight_decay=0.1)", "diffgrad(lr=0.05, betas=(0.5, 0.9), eps=1e-3)",
            "diffgrad(lr=0.02)"], _diffgrad)


def test_diffgrad_coupled_decay_and_ams_bound():
    _check(["diffgrad(lr=0.01, weight_decay=0.1, weight_decouple=False, ams_bound=True)",
            "diffgrad(lr=0.05, betas=(0.5, 0.9), weight_decay=0.2, weight_decouple=False, ams_bound=True)"],
           lambda h, k, n: _diffgrad(h, k, n, ams=True))


@pytest.mark.parametrize("degenerated", [True, False])
def test_diffgrad_rectified(degenerated):
    _check([f"diffgrad(lr=0.01, betas=(0.9, 0.9), rectify=True, degenerated_to_sgd={degenerated}, ams_bound=True)",
            f"diffgrad(lr=0.05, betas=(0.5, 0.9), rectify=True, degenerated_to_sgd={degenerated}, ams_bound=True)"],
           lambda h, k, n: _diffgrad(h, k, n, rectify=True, ams=h["ams_bound"]), steps=9)


# ---- PAdam ----------------------------------------------------------------------------------------------

def _padam(h, k, steps):
    x, m, v, out = X0[k].clone(), 0.0, 0.0, []
    for t in range(1, steps + 1):
        g = _grad(x, k, t)
        if h["weight_decouple"]:
            x = x * (1 - h["weight_decay"] * h["lr"])
        else:
            g = g + h["weight_decay"] * x
        m = h["b1"] * m + (1 - h["b1"]) * g
        v = h["b2"] * v + (1 - h["b2"]) * g * g
        step = h["lr"] * math.sqrt(1 - h["b2"] ** t) / (1 - h["b1"] ** t)
        x = x - step * m / (torch.sqrt(v) + h["eps"]) ** (2 * h["partial"])
        out.append(x)
    return out


def test_padam_follows_its_paper_without_the_running_maximum():
    # p = ½ (Adam's √v), ¼ (a square root of it: torch's pow special case) and ⅛, coupled decay
    _check(["padam(lr=0.01, partial=0.5, weight_decay=0.1)", "padam(lr=0.05, partial=0.25, betas=(0.5, 0.9))",
            "padam(lr=0.1, partial=0.125, eps=1e-3, weight_decay=0.01)"], _padam)
    _check(["padam(lr=0.01, weight_decay=0.1, weight_decouple=True)"], _padam)


# ---- AdaMod ---------------------------------------------------------------------------------------------

def _adamod(h, k, steps):
    x, m, v, s, out = X0[k].clone(), 0.0, 0.0, 0.0, []
    for t in range(1, steps + 1):
        g = _grad(x, k, t)
        if h["weight_decouple"]:
            x = x * (1 - h["weight_decay"] * h["lr"])
        else:
            g = g + h["weight_decay"] * x
        m = h["b1"] * m + (1 - h["b1"]) * g
        v = h["b2"] * v + (1 - h["b2"]) * g * g
        eta = h["lr"] * math.sqrt(1 - h["b2"] ** t) / (1 - h["b1"] ** t) / (torch.sqrt(v) + h["eps"])
        s = h["b3"] * s + (1 - h["b3"]) * eta
        x = x - torch.minimum(eta, s) * m
        out.append(x)
    return out


def test_adamod_bounds_the_step_by_its_average():
    _check(["adamod(lr=0.01, weight_decay=0.1)", "adamod(lr=0.05, betas=(0.5, 0.9, 0.7), eps=1e-3)",
            "adamod(lr=0.02, betas=(0.9, 0.99, 0.5))"], _adamod)
    _check(["adamod(lr=0.01, weight_decay=0.1, weight_decouple=False)"], _adamod)


# ---- AdamC ----------------------------------------------------------------------------------------------

def _adamc(h, k, steps, ams=False):
    x, m, v, vmax, out = X0[k].clone(), 0.0, 0.0, torch.zeros(D, dtype=torch.float64), []
    for t in range(1, steps + 1):
        g = _grad(x, k, t)
        if h["weight_decouple"]:
            x = x * (1 - h["weight_decay"] * (1 if h["fixed_decay"] else h["lr"]))
        else:
            g = g + h["weight_decay"] * x
        m = h["b1"] * m + (1 - h["b1"]) * g
        v = h["b2"] * v + (1 - h["b2"]) * g * g
        vmax = torch.maximum(vmax, v)
        second = vmax if ams else v
        denominator = (torch.sqrt(second + 1e-15) + h["eps"]) / math.sqrt(1 - h["b2"] ** t)
        x = x - h["lr"] / (1 - h["b1"] ** t) * m / denominator
        out.append(x)
    return out


def test_adamc_is_adamw_without_normalised_layers():
    _check(["adamc(lr=0.01, weight_decay=0.1)", "adamc(lr=0.05, betas=(0.5, 0.9), eps=1e-3, weight_decay=0.5)",
            "adamc(lr=0.02)"], _adamc)
    _check(["adamc(lr=0.01, weight_decay=0.1, fixed_decay=True, ams_bound=True)",
            "adamc(lr=0.03, weight_decay=0.2, fixed_decay=True, ams_bound=True, betas=(0.5, 0.6))"],
           lambda h, k, n: _adamc(h, k, n, ams=True))
    _check(["adamc(lr=0.01, weight_decay=0.1, weight_decouple=False)"], _adamc)


# ---- EXAdam ---------------------------------------------------------------------------------------------

def _exadam(h, k, steps):
    x, m, v, out = X0[k].clone(), 0.0, 0.0, []
    for t in range(1, steps + 1):
        g = _grad(x, k, t)
        if h["weight_decouple"]:
            x = x * (1 - h["weight_decay"] * (1 if h["fixed_decay"] else h["lr"]))
        else:
            g = g + h["weight_decay"] * x
        m = h["b1"] * m + (1 - h["b1"]) * g
        v = h["b2"] * v + (1 - h["b2"]) * g * g
        d1 = 1 + v / (v + h["eps"]) * h["b2"] ** t
        d2 = 1 + m * m / (m * m + h["eps"]) * h["b1"] ** t
        m_tilde = m / (1 - h["b1"] ** t) * d1
        v_tilde = v / (1 - h["b2"] ** t) * d2
        g_tilde = g / (1 - h["b1"] ** t) * d1
        x = x - h["lr"] * (m_tilde + g_tilde) / (torch.sqrt(v_tilde) + h["eps"])
        out.append(x)
    return out


def test_exadam_follows_its_paper():
    _check(["exadam(lr=0.01, weight_decay=0.1)", "exadam(lr=0.05, betas=(0.5, 0.9), eps=1e-3)",
            "exadam(lr=0.02, eps=0.1)"], _exadam)
    _check(["exadam(lr=0.01, weight_decay=0.1, weight_decouple=False)"], _exadam)
    _check(["exadam(lr=0.01, weight_decay=0.1, fixed_decay=True)"], _exadam)


# ---- AdaSmooth ------------------------------------------------------------------------------------------

def _adasmooth(h, k, steps):
    x, v, out = X0[k].clone(), 0.0, []
    moves = []  # Δx since the previous step's point after its decay
    previous = x.clone()
    for t in range(1, steps + 1):
        g = _grad(x, k, t)
        if h["weight_decouple"]:
            x = x * (1 - h["weight_decay"] * h["lr"])
        else:
            g = g + h["weight_decay"] * x
        moves.append(x - previous)
        ratio = torch.abs(sum(moves)) / (sum(torch.abs(d) for d in moves) + h["eps"])
        c = (h["b2"] - h["b1"]) * ratio + (1 - h["b2"])
        v = c * c * g * g + (1 - c * c) * v
        previous = x.clone()
        x = x - h["lr"] * g / torch.sqrt(v + h["eps"])
        out.append(x)
    return out


def test_adasmooth_follows_its_paper_over_all_steps_so_far():
    _check(["adasmooth(lr=0.01, weight_decay=0.1)", "adasmooth(lr=0.05, betas=(0.3, 0.9), eps=1e-4)",
            "adasmooth(lr=0.02, betas=(0.5, 0.7))"], _adasmooth)
    _check(["adasmooth(lr=0.01, weight_decay=0.1, weight_decouple=True)"], _adasmooth)


# ---- RAdam (pytorch_optimizer) --------------------------------------------------------------------------

def _radam(h, k, steps):
    x, m, v, out = X0[k].clone(), 0.0, 0.0, []
    for t in range(1, steps + 1):
        g = _grad(x, k, t)
        rho, r = _rectifier(h["b2"], t)
        rectified = rho >= h["n_sma_threshold"]
        if h["weight_decouple"] and (rectified or h["degenerated_to_sgd"]):
            x = x * (1 - h["weight_decay"] * (1 if h["fixed_decay"] else h["lr"]))
        m = h["b1"] * m + (1 - h["b1"]) * g
        v = h["b2"] * v + (1 - h["b2"]) * g * g
        if rectified:
            x = x - h["lr"] * r / (1 - h["b1"] ** t) * m / (torch.sqrt(v) + h["eps"])
        elif h["degenerated_to_sgd"]:
            x = x - h["lr"] / (1 - h["b1"] ** t) * m
        out.append(x)
    return out


@pytest.mark.parametrize("degenerated", [False, True])
def test_po_radam_rectifies_from_rho_5(degenerated):
    # β₂ = 0.9: ρ_t ≥ 5 from t = 6; β₂ = 0.8: from t = 7 (ρ∞ = 9); 0.999: from t = 6; by default no step before
    specs = [f"po.radam(lr=0.01, betas=(0.9, 0.9), weight_decay=0.1, degenerated_to_sgd={degenerated})",
             f"po.radam(lr=0.05, betas=(0.5, 0.8), eps=1e-3, degenerated_to_sgd={degenerated})",
             f"po.radam(lr=0.02, weight_decay=0.01, degenerated_to_sgd={degenerated})"]
    path = _check(specs, _radam, steps=9)
    if not degenerated:
        np.testing.assert_array_equal(path[:5, 0].numpy(), X0[[0] * 5].numpy())
    _check([s[:-1] + ", fixed_decay=True)" for s in specs[:2]], _radam, steps=9)


def test_po_radam_coupled_decay_is_never_applied():
    np.testing.assert_array_equal(
        _rule_path(["po.radam(lr=0.01, betas=(0.9, 0.9), weight_decay=0.5, weight_decouple=False)"], steps=9).numpy(),
        _rule_path(["po.radam(lr=0.01, betas=(0.9, 0.9))"], steps=9).numpy())


# ---- AdaMax (pytorch_optimizer) -------------------------------------------------------------------------

def _adamax(h, k, steps):
    x, m, u, out = X0[k].clone(), 0.0, torch.zeros(D, dtype=torch.float64), []
    for t in range(1, steps + 1):
        g = _grad(x, k, t)
        if h["weight_decouple"]:
            x = x * (1 - h["weight_decay"] * h["lr"])
        else:
            g = g + h["weight_decay"] * x
        m = h["b1"] * m + (1 - h["b1"]) * g
        u = torch.maximum(h["b2"] * u, torch.abs(g) + h["eps"])
        x = x - h["lr"] / (1 - h["b1"] ** t) * m / u
        out.append(x)
    return out


def test_po_adamax_follows_its_paper_with_eps_inside_the_max():
    _check(["po.adamax(lr=0.01, weight_decay=0.1)", "po.adamax(lr=0.05, betas=(0.5, 0.9), eps=1e-3)",
            "po.adamax(lr=0.02, eps=0.5)"], _adamax)
    _check(["po.adamax(lr=0.01, weight_decay=0.1, weight_decouple=True)"], _adamax)


# ---- batched == the class on the branches the defaults do not reach --------------------------------------

VARIANTS = {
    "adabelief": ["adabelief(lr=0.01, weight_decay=0.1, weight_decouple=False, eps=1e-8)",
                  "adabelief(lr=0.01, rectify=True, weight_decay=0.05, fixed_decay=True)",
                  "adabelief(lr=0.01, rectify=True, degenerated_to_sgd=False, ams_bound=True, betas=(0.5, 0.9))",
                  "adabelief(lr=0.01, ams_bound=True, weight_decay=0.1)"],
    "yogi": ["yogi(lr=0.01, weight_decay=0.1, weight_decouple=False, initial_accumulator=0.1)",
             "yogi(lr=0.01, weight_decay=0.05, fixed_decay=True, betas=(0.5, 0.9))"],
    "adamp": ["adamp(lr=0.01, weight_decay=0.1, nesterov=True)",
              "adamp(lr=0.01, weight_decay=0.1, delta=1.0, wd_ratio=0.5)",
              "adamp(lr=0.01, weight_decay=0.05, delta=5.0, fixed_decay=True, betas=(0.5, 0.9))",
              "adamp(lr=0.01, weight_decay=0.1, weight_decouple=False, delta=1.0)"],
    "laprop": ["laprop(lr=0.01, centered=True, steps_before_using_centered=3, weight_decay=0.1)",
               "laprop(lr=0.01, ams_bound=True, weight_decay=0.05, fixed_decay=True)",
               "laprop(lr=0.01, centered=True, steps_before_using_centered=2, ams_bound=True, betas=(0.5, 0.9))",
               "laprop(lr=0.01, weight_decay=0.1, weight_decouple=False)"],
    "qhadam": ["qhadam(lr=0.01, nus=(0.7, 1.0), weight_decay=0.1)",
               "qhadam(lr=0.01, nus=(0.5, 0.8), weight_decay=0.1, weight_decouple=True, betas=(0.5, 0.9))"],
    "diffgrad": ["diffgrad(lr=0.01, weight_decay=0.1, weight_decouple=False, ams_bound=True)",
                 "diffgrad(lr=0.01, rectify=True, weight_decay=0.05)",
                 "diffgrad(lr=0.01, rectify=True, degenerated_to_sgd=False, ams_bound=True, betas=(0.5, 0.9))"],
    "padam": ["padam(lr=0.01, partial=0.125, weight_decay=0.1)",
              "padam(lr=0.01, partial=0.5, weight_decay=0.1, weight_decouple=True)"],
    "adamod": ["adamod(lr=0.01, weight_decay=0.1, weight_decouple=False, betas=(0.5, 0.9, 0.7))",
               "adamod(lr=0.01, weight_decay=0.05, fixed_decay=True)"],
    "adamc": ["adamc(lr=0.01, weight_decay=0.1, ams_bound=True)",
              "adamc(lr=0.01, weight_decay=0.1, weight_decouple=False, betas=(0.5, 0.9))"],
    "exadam": ["exadam(lr=0.01, weight_decay=0.1, weight_decouple=False)",
               "exadam(lr=0.01, weight_decay=0.05, fixed_decay=True, betas=(0.5, 0.9))"],
    "adasmooth": ["adasmooth(lr=0.01, weight_decay=0.1, weight_decouple=True, betas=(0.3, 0.9))",
                  "adasmooth(lr=0.01, weight_decay=0.1)"],
    "po.radam": ["po.radam(lr=0.01, degenerated_to_sgd=True, weight_decay=0.1)",
                 "po.radam(lr=0.01, weight_decay=0.1, weight_decouple=False, betas=(0.8, 0.9))",
                 "po.radam(lr=0.01, n_sma_threshold=6, weight_decay=0.05, fixed_decay=True, betas=(0.8, 0.9))"],
    "po.adamax": ["po.adamax(lr=0.01, weight_decay=0.1)",
                  "po.adamax(lr=0.01, weight_decay=0.1, weight_decouple=True, betas=(0.5, 0.9))"],
}
NAMES = list(VARIANTS)
MLP = "mnist-mlp(width=6, depth=2, batch_size=20, train_size=120, test_size=40, precision='float64', eval_every=3)"
CNN = "cifar10-cnn(channels=(3, 3, 4), hidden=(5,), batch_size=8, train_size=32, test_size=16, precision='float64', " \
      "eval_every=3)"


def _close(actual, expected, what):
    np.testing.assert_allclose(actual, expected, rtol=1e-8, atol=1e-300, equal_nan=True, err_msg=what)


def _group(spec):
    config = get_optimizer(spec)
    return [config, config.with_hyperparams(lr=config.lr * 3)], [0, 7]


@pytest.mark.parametrize("spec", [s for name in NAMES for s in VARIANTS[name]])
@pytest.mark.parametrize("problem_spec", ["beale", "rosenbrock(noise=0.1)"])
def test_variants_batched_equal_loop(spec, problem_spec):
    problem = get_problem(problem_spec)
    configs, seeds = _group(spec)
    assert all(engine_supports("batched", problem, c) for c in configs)
    steps = 15
    batched = run_batched(problem, configs, seeds, steps, 1, measure_cost=False)
    for k, (config, seed) in enumerate(zip(configs, seeds)):
        loop = run_loop(problem, config, seed, steps, 1, measure_cost=False)
        assert batched.status[k] == loop.status[0] and batched.end_step[k] == loop.end_step[0], config.label
        rows = batched.steps < loop.end_step[0]
        _close(batched.loss[rows, k], loop.loss[rows, 0], f"{config.label} loss")
        _close(batched.coords[rows, k], loop.coords[rows, 0], f"{config.label} coordinates")
        _close(batched.end_x[k], loop.end_x[0], f"{config.label} final parameters")


@pytest.mark.parametrize("spec", ["laprop(lr=0.01, weight_decay=0.1)", "adamod(lr=0.01)", "adasmooth(lr=0.05)"])
def test_under_a_schedule_batched_equals_loop(spec):
    """LaProp's bias correction averages the learning rates; AdaMod and AdaSmooth divide by them."""
    problem = get_problem("rosenbrock")
    configs, seeds = _group(spec)
    recipe = Recipe(schedule="cosine")
    batched = run_batched(problem, configs, seeds, 15, 1, recipe=recipe, measure_cost=False)
    for k, (config, seed) in enumerate(zip(configs, seeds)):
        loop = run_loop(problem, config, seed, 15, 1, recipe=recipe, measure_cost=False)
        _close(batched.coords[:, k], loop.coords[:, 0], f"{config.label} coordinates")


@pytest.mark.parametrize("spec", [s for name in NAMES for s in VARIANTS[name]])
@pytest.mark.parametrize("problem_spec", [MLP, CNN], ids=["mlp", "cnn"])
def test_variants_on_networks_batched_equal_loop(network_data, spec, problem_spec):
    problem = get_problem(problem_spec)
    configs, seeds = _group(spec)
    assert all(engine_supports("batched", problem, c) for c in configs)
    batched = run_network_batched(problem, configs, seeds, 6, 1)
    for k, (config, seed) in enumerate(zip(configs, seeds)):
        loop = run_network(problem, config, seed, 6, 1)
        _close(batched.loss[:, k], loop.loss[:, 0], f"{config.label} loss")
        _close(batched.extra["test_loss"][:, k], loop.extra["test_loss"][:, 0], f"{config.label} test loss")


@pytest.mark.parametrize("name, dtype", [(name, dtype) for name in NAMES for dtype in (torch.float32, torch.float64)
                                         if (name, dtype) != ("qhadam", torch.float32)])
def test_rules_declare_the_state_their_class_keeps(name, dtype):
    for spec in [name, *VARIANTS[name]]:
        config = get_optimizer(spec)
        declared = RULES[config.entry.batched].slots_per_param(config.hyperparams, 5) * dtype.itemsize
        assert declared == pytest.approx(probe_state_bytes_per_param(config, 5, dtype), rel=1e-12), spec


def test_qhadam_state_has_two_float32_weights_per_tensor():
    """QHAdam's weights w₁, w₂ are float32 [1] tensors whatever the parameters' dtype: 8 bytes per tensor, which the
    rule declares as 1/dim slots, exact for float64 parameters (the float32 measurement is 2·4 + 8/dim bytes)."""
    config = get_optimizer("qhadam")
    assert probe_state_bytes_per_param(config, 5, torch.float32) == pytest.approx(2 * 4 + 8 / 5, rel=1e-12)
    assert probe_state_bytes_per_param(config, 5, torch.float64) == pytest.approx(2 * 8 + 8 / 5, rel=1e-12)
