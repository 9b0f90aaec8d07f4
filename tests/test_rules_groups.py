"""MADGRAD, Ranger, AdaBound, AdaFactor, A2Grad, AccSGD and ASGD (engines/rules_groups.py): each rule against the
update formula its docstring states (the paper's, with the library's documented changes), written here by hand in
plain torch float64 with a loop over configurations, for several steps on small ``[K, d]`` inputs with
per-configuration hyperparameters; against the class on the branches the registry defaults of
tests/test_engine_contract.py do not reach; and the state each rule declares against the class's."""

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

RTOL = 1e-12
STEPS = 7
D = 4
MLP = "mnist-mlp(width=6, depth=2, batch_size=20, train_size=120, test_size=40, precision='float64', eval_every=3)"
CNN = "cifar10-cnn(channels=(3, 3, 4), hidden=(5,), batch_size=8, train_size=32, test_size=16, precision='float64', " \
      "eval_every=3)"

# settings that take the branches the registry defaults do not (each spec is one batched group with two lrs)
VARIANTS = {
    "madgrad": ["madgrad(lr=0.01, momentum=0.0)",
                "madgrad(lr=0.01, weight_decay=0.1)",
                "madgrad(lr=0.01, weight_decay=0.1, weight_decouple=True, momentum=0.5, eps=0.0)",
                "madgrad(lr=0.01, momentum=0.0, eps=0.0, weight_decay=0.05, weight_decouple=True)"],
    "ranger": ["ranger(lr=0.01, degenerated_to_sgd=True, k=3, alpha=0.8)",
               "ranger(lr=0.01, use_gc=False, weight_decay=0.1, weight_decouple=False, n_sma_threshold=4)",
               "ranger(lr=0.01, gc_conv_only=True, weight_decay=0.05, fixed_decay=True, betas=(0.8, 0.99), eps=1e-3)",
               "ranger(lr=0.01, weight_decay=0.1, k=1, betas=(0.9, 0.9))"],
    "adabound": ["adabound(lr=0.01, ams_bound=True, final_lr=0.5, gamma=0.1)",
                 "adabound(lr=0.01, weight_decay=0.1, weight_decouple=False, betas=(0.5, 0.9))",
                 "adabound(lr=0.01, weight_decay=0.05, fixed_decay=True, eps=1e-3)"],
    "adafactor": ["adafactor(lr=0.01, betas=(None, 0.999), weight_decay=0.1, clip_threshold=0.5)",
                  "adafactor(lr=0.01, relative_step=False, scale_parameter=False, betas=(0.5, 0.9), decay_rate=-0.5)",
                  "adafactor(lr=0.01, warmup_init=True, weight_decay=0.05)",
                  "adafactor(lr=0.01, relative_step=False, weight_decay=0.1, clip_threshold=0.1)"],
    "a2grad": ["a2grad(variant='inc', beta=1.0, lips=5.0)", "a2grad(variant='exp', rho=0.9, lips=2.0)"],
    "accsgd": ["accsgd(lr=0.001, weight_decay=0.1, kappa=100.0, xi=5.0, constant=0.5)"],
    "asgd": ["asgd(lr=0.01, weight_decay=0.1, weight_decouple=False, amplifier=0.5, dampening=0.5)",
             "asgd(lr=0.01, weight_decay=0.05, fixed_decay=True, theta=0.5, eps=1e-3)"],
}
NAMES = list(VARIANTS)


def _close(actual, expected, what, rtol=RTOL):
    np.testing.assert_allclose(np.asarray(actual), np.asarray(expected), rtol=rtol, atol=1e-300, equal_nan=True,
                               err_msg=what)


def _inputs(seed=0, K=3, d=D, steps=STEPS):
    generator = torch.Generator().manual_seed(seed)
    x0 = torch.randn(K, d, generator=generator, dtype=torch.float64)
    grads = [torch.randn(K, d, generator=generator, dtype=torch.float64) for _ in range(steps)]
    return x0, grads


def _drive(specs, x0, grads, shapes=None):
    """The rule of ``specs`` (one group, one configuration per row of ``x0``) driven by hand: the points after each
    of ``grads`` ``[K, P]``, and the configurations' hyperparameter dicts."""
    configs = [get_optimizer(s) for s in specs]
    rule = RULES[configs[0].entry.batched]
    hp = stack_hyperparams(configs, torch.float64, "cpu")
    x = x0.clone()
    state = rule.init(x, hp)
    state["layout"] = ParamLayout(shapes or [(x.shape[-1],)])
    path = []
    for t, g in enumerate(grads, start=1):
        rule.step(x, g.clone(), state, hp, t)
        path.append(x.clone())
    return path, [c.hyperparams for c in configs]


# ---- MADGRAD ----------------------------------------------------------------------------------------------

def _madgrad_by_hand(x0, grads, hp):
    """Algorithm 1 of Defazio & Jelassi with the library's η + ε, coupled or decoupled decay: one configuration.
    Without momentum the class's rebuilt x₀ (x + s/∛ν) carries the decoupled decay: x₀ ← x₀ − (η + ε)λx."""
    lr = hp["lr"] + hp["eps"]
    c = 1.0 - hp["momentum"]
    wd = hp["weight_decay"]
    x, s, nu = x0.clone(), torch.zeros_like(x0), torch.zeros_like(x0)
    x0 = x0.clone()
    path = []
    for t, g in enumerate(grads, start=1):
        if not hp["weight_decouple"]:
            g = g + wd * x
        lam = lr * math.sqrt(t)
        s = s + lam * g
        nu = nu + lam * g * g
        root = nu ** (1.0 / 3.0) + hp["eps"]
        root = torch.where(root == 0, torch.inf, root)
        z = x0 - s / root
        new = (1 - c) * x + c * z
        if hp["weight_decouple"]:
            new = new - lr * wd * x
            if hp["momentum"] == 0.0:
                x0 = x0 - lr * wd * x
        x = new
        path.append(x)
    return path


@pytest.mark.parametrize("specs", [
    ["madgrad(lr=0.01)", "madgrad(lr=0.1, momentum=0.5, eps=1e-3)", "madgrad(lr=0.003, momentum=0.99)"],
    ["madgrad(lr=0.01, momentum=0.0)", "madgrad(lr=0.1, momentum=0.0, eps=0.0)", "madgrad(lr=0.05, momentum=0.0)"],
    ["madgrad(lr=0.01, weight_decay=0.1)", "madgrad(lr=0.1, weight_decay=0.0, momentum=0.0)",
     "madgrad(lr=0.05, weight_decay=0.3, momentum=0.7)"],
    ["madgrad(lr=0.01, weight_decay=0.1, weight_decouple=True)",
     "madgrad(lr=0.1, weight_decay=0.5, weight_decouple=True, momentum=0.0)",
     "madgrad(lr=0.05, weight_decay=0.0, weight_decouple=True, eps=0.0)"],
])
def test_madgrad_is_dual_averaging_with_a_cube_root_and_momentum_by_interpolation(specs):
    x0, grads = _inputs()
    grads[2][0, 1] = 0.0  # a coordinate whose ν stays 0 for a step with ε = 0: z there is x₀
    path, hps = _drive(specs, x0, grads)
    for k, hp in enumerate(hps):
        expected = _madgrad_by_hand(x0[k], [g[k] for g in grads], hp)
        for t, (got, want) in enumerate(zip(path, expected), start=1):
            _close(got[k], want, f"{specs[k]} step {t}")


def test_madgrad_without_momentum_rebuilds_the_start_point():
    """μ = 0: z_t = x₀ − s_t/∛ν_t with the true x₀, although the class rebuilds x₀ each step from x and the sums."""
    x0, grads = _inputs(1, K=1)
    path, _ = _drive(["madgrad(lr=0.1, momentum=0.0, eps=0.0)"], x0, grads)
    s = sum(0.1 * math.sqrt(t) * g for t, g in enumerate(grads, start=1))
    nu = sum(0.1 * math.sqrt(t) * g * g for t, g in enumerate(grads, start=1))
    _close(path[-1], x0 - s / nu ** (1 / 3), "z_T", rtol=1e-10)


# ---- Ranger -----------------------------------------------------------------------------------------------

SHAPES = [(2, 3), (3,), (2, 1, 2, 2)]  # a weight matrix, a bias, a convolution kernel: 17 columns


def _ranger_by_hand(x0, grads, hp, shapes):
    """RAdam in Lookahead with gradient centralisation, tensor by tensor, with the library's threshold ρ_t ≥ N,
    its r = ±1 below it and ε on √v: one configuration."""
    b1, b2, lr, eps, wd = hp["betas"][0], hp["betas"][1], hp["lr"], hp["eps"], hp["weight_decay"]
    sizes = [math.prod(shape) for shape in shapes]
    x, m, v, slow = x0.clone(), torch.zeros_like(x0), torch.zeros_like(x0), x0.clone()
    path = []
    for t, g in enumerate(grads, start=1):
        parts = []
        for part, shape in zip(g.split(sizes), shapes):
            if hp["use_gc"] and len(shape) > (3 if hp["gc_conv_only"] else 1):
                tensor = part.reshape(shape)
                part = (tensor - tensor.mean(dim=tuple(range(1, len(shape))), keepdim=True)).reshape(-1)
            parts.append(part)
        g = torch.cat(parts)
        if hp["weight_decouple"]:
            x = x * (1 - wd * (1.0 if hp["fixed_decay"] else lr))
        else:
            g = g + wd * x
        m = b1 * m + (1 - b1) * g
        v = b2 * v + (1 - b2) * g * g
        rho_inf = 2 / (1 - b2) - 1
        rho = rho_inf - 2 * t * b2**t / (1 - b2**t)
        if rho >= hp["n_sma_threshold"]:
            r = math.sqrt((1 - b2**t) * (rho - 4) * (rho - 2) * rho_inf / ((rho_inf - 4) * (rho_inf - 2) * rho))
            x = x - lr * r / (1 - b1**t) * m / (v.sqrt() + eps)
        else:
            r = 1.0 if hp["degenerated_to_sgd"] else -1.0
            x = x - lr * r / (1 - b1**t) * m
        if t % hp["k"] == 0:
            slow = slow + hp["alpha"] * (x - slow)
            x = slow.clone()
        path.append(x)
    return path


@pytest.mark.parametrize("specs", [
    ["ranger(lr=0.01)", "ranger(lr=0.1, betas=(0.9, 0.99), eps=1e-8, alpha=0.3)", "ranger(lr=0.03, k=2)"],
    ["ranger(lr=0.01, degenerated_to_sgd=True, k=3)", "ranger(lr=0.1, degenerated_to_sgd=True, n_sma_threshold=4)",
     "ranger(lr=0.05, degenerated_to_sgd=True, betas=(0.5, 0.6))"],
    ["ranger(lr=0.01, use_gc=False, weight_decay=0.1, weight_decouple=False)",
     "ranger(lr=0.1, use_gc=False, weight_decay=0.0, weight_decouple=False, k=4)",
     "ranger(lr=0.05, use_gc=False, weight_decay=0.3, weight_decouple=False, alpha=1.0)"],
    ["ranger(lr=0.01, gc_conv_only=True, weight_decay=0.1, fixed_decay=True)",
     "ranger(lr=0.1, gc_conv_only=True, weight_decay=0.2, fixed_decay=True)",
     "ranger(lr=0.05, gc_conv_only=True, k=1, fixed_decay=True)"],
    ["ranger(lr=0.01, weight_decay=0.1)", "ranger(lr=0.1, weight_decay=0.2, n_sma_threshold=6)",
     "ranger(lr=0.05, weight_decay=0.0)"],
])
def test_ranger_is_rectified_adam_in_lookahead_with_centralised_matrices(specs):
    x0, grads = _inputs(2, d=17, steps=13)
    path, hps = _drive(specs, x0, grads, SHAPES)
    for k, hp in enumerate(hps):
        expected = _ranger_by_hand(x0[k], [g[k] for g in grads], hp, SHAPES)
        for t, (got, want) in enumerate(zip(path, expected), start=1):
            _close(got[k], want, f"{specs[k]} step {t}")


def test_ranger_defaults_climb_the_averaged_gradient_until_rectified():
    """The library's r = −1 below the threshold: with ∇ = x the first five steps (β₂ = 0.999) move away from 0."""
    problem = get_problem("valley(kappa=1)")
    trace = run_batched(problem, [get_optimizer("ranger(lr=0.1)")], [0], 6, 1, measure_cost=False)
    loss = trace.loss[:, 0]
    assert all(loss[t + 1] > loss[t] for t in range(5)) and loss[6] < loss[5], loss


def test_ranger_refuses_thresholds_below_four():
    """Below ρ_t = 4 the rectification term is negative: the class's math.sqrt raises once 2 < ρ_t < 4 passes the
    threshold, so the rule refuses such thresholds (the loop engine runs them, and reports the class's error)."""
    assert RULES["ranger"].refuses(get_optimizer("ranger(n_sma_threshold=3)").hyperparams)
    assert RULES["ranger"].refuses(get_optimizer("ranger(n_sma_threshold=4)").hyperparams) is None


# ---- AdaBound ---------------------------------------------------------------------------------------------

def _adabound_by_hand(x0, grads, hp, lrs=None):
    """The clipped bias-corrected Adam rate of the library (and the authors' code), per coordinate: one
    configuration; ``lrs`` the lr of each step (a schedule), the bounds following η/η₀."""
    b1, b2, eps, wd, gamma = hp["betas"][0], hp["betas"][1], hp["eps"], hp["weight_decay"], hp["gamma"]
    x, m, v, vmax = x0.clone(), torch.zeros_like(x0), torch.zeros_like(x0), torch.zeros_like(x0)
    path = []
    for t, g in enumerate(grads, start=1):
        lr = hp["lr"] if lrs is None else lrs[t - 1]
        final = hp["final_lr"] * lr / hp["lr"]
        lower, upper = final * (1 - 1 / (gamma * t + 1)), final * (1 + 1 / (gamma * t))
        if hp["weight_decouple"]:
            x = x * (1 - wd * (1.0 if hp["fixed_decay"] else lr))
        else:
            g = g + wd * x
        m = b1 * m + (1 - b1) * g
        v = b2 * v + (1 - b2) * g * g
        vmax = torch.maximum(vmax, v)
        second = vmax if hp["ams_bound"] else v
        rate = lr * math.sqrt(1 - b2**t) / (1 - b1**t) / ((second + 1e-15).sqrt() + eps)
        x = x - rate.clamp(lower, upper) * m
        path.append(x)
    return path


@pytest.mark.parametrize("specs", [
    ["adabound(lr=0.01)", "adabound(lr=0.1, final_lr=0.01, gamma=0.1)", "adabound(lr=0.001, betas=(0.5, 0.9))"],
    ["adabound(lr=0.01, ams_bound=True)", "adabound(lr=0.1, ams_bound=True, gamma=10.0)",
     "adabound(lr=0.03, ams_bound=True, eps=0.1)"],
    ["adabound(lr=0.01, weight_decay=0.1, weight_decouple=False)",
     "adabound(lr=0.1, weight_decay=0.5, weight_decouple=False, final_lr=1.0)",
     "adabound(lr=0.03, weight_decay=0.0, weight_decouple=False)"],
    ["adabound(lr=0.01, weight_decay=0.1)", "adabound(lr=0.1, weight_decay=0.5)", "adabound(lr=0.03)"],
    ["adabound(lr=0.01, weight_decay=0.1, fixed_decay=True)", "adabound(lr=0.1, weight_decay=0.5, fixed_decay=True)",
     "adabound(lr=0.03, weight_decay=0.2, fixed_decay=True)"],
])
def test_adabound_clips_the_adam_rate_between_bounds_that_meet_at_the_final_lr(specs):
    x0, grads = _inputs(3)
    path, hps = _drive(specs, x0, grads)
    for k, hp in enumerate(hps):
        expected = _adabound_by_hand(x0[k], [g[k] for g in grads], hp)
        for t, (got, want) in enumerate(zip(path, expected), start=1):
            _close(got[k], want, f"{specs[k]} step {t}")


def test_adabound_is_sgd_at_the_final_lr_once_the_bounds_close():
    """γ large: from the first step η_l ≈ η_u ≈ η*, so x ← x − η* m (momentum SGD on the averaged gradient)."""
    x0, grads = _inputs(4, K=1)
    path, _ = _drive(["adabound(lr=1.0, final_lr=0.05, gamma=1e12)"], x0, grads[:3])
    m = torch.zeros_like(x0)
    x = x0
    for g in grads[:3]:
        m = 0.9 * m + 0.1 * g
        x = x - 0.05 * m
    _close(path[-1], x, "x₃", rtol=1e-10)


def test_adabound_bounds_follow_a_schedule():
    """Under a schedule η* = final_lr·η_t/η₀ (η₀ the class's base_lrs): batched equals loop."""
    problem = get_problem("rosenbrock")
    configs, seeds = _group("adabound(lr=0.01, gamma=0.1)")
    _analytic_group(problem, configs, seeds, Recipe(schedule="cosine"))


# ---- AdaFactor --------------------------------------------------------------------------------------------

def _adafactor_by_hand(x0, grads, hp, shapes):
    """Algorithms 4 (matrices: row and column sums R, C, V = RC/1ᵀR) and 5 (vectors) of Shazeer & Stern with the
    library's β₂ cap, first moment over the scaled update and decoupled decay; a kernel's leading dimensions index
    separate matrices of its last two: one configuration."""
    beta1, beta2 = hp["betas"]
    wd, d = hp["weight_decay"], hp["clip_threshold"]
    sizes = [math.prod(shape) for shape in shapes]
    x = x0.clone()
    m = torch.zeros_like(x0)
    v = [torch.zeros(shape[:-1] + (1,), dtype=x0.dtype) if len(shape) >= 2 else torch.zeros(shape, dtype=x0.dtype)
         for shape in shapes]
    c = [torch.zeros(shape[:-2] + (1, shape[-1]), dtype=x0.dtype) if len(shape) >= 2 else None for shape in shapes]
    path = []
    for t, g in enumerate(grads, start=1):
        beta2_t = min(beta2, 1 - t ** hp["decay_rate"])
        rho = hp["lr"] if not hp["relative_step"] else min(1e-6 * t if hp["warmup_init"] else 1e-2, 1 / math.sqrt(t))
        new_parts, m_parts = [], []
        for i, (p, grad, mom, shape) in enumerate(zip(x.split(sizes), g.split(sizes), m.split(sizes), shapes)):
            rms = p.square().mean().sqrt()
            alpha = max(1e-3, rms.item()) * rho if hp["scale_parameter"] else rho
            p = p * (1 - wd * alpha)
            u = grad * grad + 1e-30
            if len(shape) >= 2:
                u = u.reshape(shape)
                v[i] = beta2_t * v[i] + (1 - beta2_t) * u.sum(dim=-1, keepdim=True)  # R: sums over columns
                c[i] = beta2_t * c[i] + (1 - beta2_t) * u.sum(dim=-2, keepdim=True)  # C: sums over rows
                second = (v[i] @ c[i]) / v[i].sum(dim=-2, keepdim=True)
                update = (grad.reshape(shape) / second.sqrt()).reshape(-1)
            else:
                v[i] = beta2_t * v[i] + (1 - beta2_t) * u
                update = grad / v[i].sqrt()
            update = update / max(1.0, update.square().mean().sqrt().item() / d) * alpha
            if beta1 is not None:
                mom = beta1 * mom + (1 - beta1) * update
                update = mom
            m_parts.append(mom)
            new_parts.append(p - update)
        x, m = torch.cat(new_parts), torch.cat(m_parts)
        path.append(x)
    return path


@pytest.mark.parametrize("specs", [
    ["adafactor", "adafactor(betas=(0.5, 0.99), decay_rate=-0.5)", "adafactor(clip_threshold=0.2)"],
    ["adafactor(betas=(None, 0.999))", "adafactor(betas=(None, 0.999), clip_threshold=0.3, weight_decay=0.1)",
     "adafactor(betas=(None, 0.999), decay_rate=-0.6)"],
    ["adafactor(lr=0.1, relative_step=False, scale_parameter=False)",
     "adafactor(lr=0.01, relative_step=False, scale_parameter=False, betas=(0.8, 0.3), weight_decay=0.2)",
     "adafactor(lr=0.3, relative_step=False, scale_parameter=False, clip_threshold=10.0)"],
    ["adafactor(warmup_init=True)", "adafactor(warmup_init=True, weight_decay=0.5)",
     "adafactor(warmup_init=True, betas=(0.0, 0.999))"],
    ["adafactor(lr=0.1, relative_step=False, weight_decay=0.1)", "adafactor(lr=0.02, relative_step=False)",
     "adafactor(lr=0.5, relative_step=False, betas=(0.9, 0.5))"],
])
@pytest.mark.parametrize("shapes", [[(D,)], SHAPES], ids=["vector", "network"])
def test_adafactor_factors_matrices_and_clips_the_relative_step(specs, shapes):
    d = sum(math.prod(shape) for shape in shapes)
    x0, grads = _inputs(5, d=d)
    path, hps = _drive(specs, x0, grads, shapes)
    for k, hp in enumerate(hps):
        expected = _adafactor_by_hand(x0[k], [g[k] for g in grads], hp, shapes)
        for t, (got, want) in enumerate(zip(path, expected), start=1):
            _close(got[k], want, f"{specs[k]} step {t}", 1e-11)


def test_adafactor_without_beta1_groups_as_one_setting():
    """betas=(None, β₂) is not a numeric pair: configurations share it (and β₂) as one group setting."""
    configs = [get_optimizer("adafactor(betas=(None, 0.999))"), get_optimizer("adafactor(betas=(None, 0.999))")]
    hp = stack_hyperparams(configs, torch.float64, "cpu")
    assert hp["betas"] == (None, 0.999) and "beta1" not in hp


# ---- A2Grad -----------------------------------------------------------------------------------------------

def _a2grad_by_hand(x0, grads, hp, shapes):
    """Accelerated SGD in the three sequences: the gradient at x̲_t, z_t = z_{t−1} − c_t g_t with
    c_t = 1/(γ_t + βh_t) per tensor (h from the squared deviation of g from the plain mean of g₁…g_t),
    x̄_t = (1 − a_t)x̄_{t−1} + a_t z_t and x̲_{t+1} = (1 − a_{t+1})x̄_t + a_{t+1}z_t, a₁ = 1, a_t = 2/(t + 2):
    one configuration; returns the x̲_{t+1}."""
    sizes = [math.prod(shape) for shape in shapes]
    a = lambda t: 1.0 if t == 1 else 2 / (t + 2)  # noqa: E731
    z, bar, under = x0.clone(), x0.clone(), x0.clone()
    v = [0.0] * len(shapes)
    v_exp = [0.0] * len(shapes)
    seen, path = [], []
    for t, g in enumerate(grads, start=1):
        seen.append(g)
        mean = sum(seen) / t
        gamma = 2 * hp["lips"] / (t + 1)
        c = []
        for i, part in enumerate((g - mean).split(sizes)):
            delta = float((part * part).sum())
            if hp["variant"] == "uni":
                v[i] += delta
            elif hp["variant"] == "inc":
                v[i] = (t / (t + 1)) ** 2 * v[i] + delta
            else:
                v_exp[i] = hp["rho"] * v_exp[i] + (1 - hp["rho"]) * delta
                v[i] = max(v[i], v_exp[i])
            h = math.sqrt(v[i]) * (1.0 if hp["variant"] == "uni" else math.sqrt(t + 1))
            c.append(torch.full((sizes[i],), 1 / (gamma + hp["beta"] * h), dtype=g.dtype))
        z = z - torch.cat(c) * g
        bar = (1 - a(t)) * bar + a(t) * z
        under = (1 - a(t + 1)) * bar + a(t + 1) * z
        path.append(under)
    return path


@pytest.mark.parametrize("variant", ["uni", "inc", "exp"])
@pytest.mark.parametrize("shapes", [[(D,)], SHAPES], ids=["vector", "network"])
def test_a2grad_is_accelerated_sgd_with_an_adaptive_step(variant, shapes):
    specs = [f"a2grad(variant='{variant}')", f"a2grad(variant='{variant}', beta=1.0, lips=3.0, rho=0.9)",
             f"a2grad(variant='{variant}', beta=0.1, lips=50.0, rho=0.2)"]
    d = sum(math.prod(shape) for shape in shapes)
    x0, grads = _inputs(6, d=d)
    path, hps = _drive(specs, x0, grads, shapes)
    for k, hp in enumerate(hps):
        expected = _a2grad_by_hand(x0[k], [g[k] for g in grads], hp, shapes)
        for t, (got, want) in enumerate(zip(path, expected), start=1):
            _close(got[k], want, f"{specs[k]} step {t}", 1e-11)


# ---- AccSGD -----------------------------------------------------------------------------------------------

@pytest.mark.parametrize("specs", [
    ["accsgd(lr=0.001)", "accsgd(lr=0.01, kappa=100.0, xi=5.0)", "accsgd(lr=0.003, constant=0.3)"],
    ["accsgd(lr=0.001, weight_decay=0.1)", "accsgd(lr=0.01, weight_decay=0.5, kappa=10.0, xi=2.0, constant=0.9)",
     "accsgd(lr=0.003, weight_decay=0.0)"],
])
def test_accsgd_couples_a_short_and_a_long_step(specs):
    """Algorithm 1 of Kidambi et al. as their code writes it: α = 1 − c²ξ/κ, β = 1 − α, ζ = c/(c + β),
    b ← β((1/β − 1)b − (ηκ/c)g + x), x ← ζ(x − ηg) + (1 − ζ)b."""
    x0, grads = _inputs(7)
    path, hps = _drive(specs, x0, grads)
    for k, hp in enumerate(hps):
        lr, kappa, xi, c, wd = hp["lr"], hp["kappa"], hp["xi"], hp["constant"], hp["weight_decay"]
        alpha = 1 - c * c * xi / kappa
        beta = 1 - alpha
        zeta = c / (c + beta)
        x, b = x0[k].clone(), x0[k].clone()
        for t, g in enumerate(grads, start=1):
            g = g[k] + wd * x
            b = beta * ((1 / beta - 1) * b - lr * kappa / c * g + x)
            x = zeta * (x - lr * g) + (1 - zeta) * b
            _close(path[t - 1][k], x, f"{specs[k]} step {t}", 1e-11)


# ---- ASGD -------------------------------------------------------------------------------------------------

def _asgd_by_hand(points, grads, hp, shapes):
    """Malitsky & Mishchenko's adaptive step with the library's differences of float32 norms, amplifier, ε and
    decay, the step sizes in Python floats: one configuration, one step from each of ``points`` (the rule's own
    x_{t−1}: a float32 norm rounds to one of two neighbours on a last-bit change of x, which the bound amplifies,
    so a trajectory rounded otherwise parts from the class's within a few steps)."""
    sizes = [math.prod(shape) for shape in shapes]

    def root(value):  # torch's float32 square root, as the class takes it (not always the correctly rounded one)
        return torch.tensor(value, dtype=torch.float32).sqrt().item()

    def norms(x, g):
        squares_x = [np.float32(float(torch.linalg.vector_norm(p)) ** 2) for p in x.split(sizes)]
        squares_g = [np.float32(float(torch.linalg.vector_norm(p))) ** 2 for p in g.split(sizes)]
        return (np.float32(root(sum(squares_x, np.float32(0)))), np.float32(root(sum(squares_g, np.float32(0)))))

    lr, theta, wd = hp["lr"], hp["theta"], hp["weight_decay"]
    prev, path = None, []
    for x, g in zip(points, grads):
        current = norms(x, g)
        prev = prev or current
        dx, dg = float(current[0] - prev[0]), float(current[1] - prev[1])
        prev = current
        new = lr * math.sqrt(1 + hp["amplifier"] * theta)
        if dx > 0 and dg > 0:
            new = min(new, dx / (hp["dampening"] * dg)) + hp["eps"]
        theta, lr = new / lr, new
        if hp["weight_decouple"]:
            x = x * (1 - wd * (1.0 if hp["fixed_decay"] else lr))
        else:
            g = g + wd * x
        path.append(x - lr * g)
    return path


@pytest.mark.parametrize("specs", [
    ["asgd(lr=0.01)", "asgd(lr=0.1, amplifier=0.5, theta=0.2)", "asgd(lr=0.003, dampening=0.5, eps=1e-3)"],
    ["asgd(lr=0.01, weight_decay=0.1, weight_decouple=False)",
     "asgd(lr=0.1, weight_decay=0.5, weight_decouple=False, amplifier=1.0)", "asgd(lr=0.003, weight_decouple=False)"],
    ["asgd(lr=0.01, weight_decay=0.1)", "asgd(lr=0.1, weight_decay=0.5)", "asgd(lr=0.05, weight_decay=0.0)"],
    ["asgd(lr=0.01, weight_decay=0.1, fixed_decay=True)", "asgd(lr=0.1, weight_decay=0.02, fixed_decay=True)",
     "asgd(lr=0.05, fixed_decay=True)"],
])
@pytest.mark.parametrize("shapes", [[(D,)], SHAPES], ids=["vector", "network"])
def test_asgd_adapts_its_step_to_the_growth_of_the_norms(specs, shapes):
    d = sum(math.prod(shape) for shape in shapes)
    x0, grads = _inputs(8, d=d, steps=12)
    # norms that grow and shrink: each step's gradient pulls away from 0 or back
    grads = [g * (1.0 + 0.3 * t) * (-1) ** (t // 3) for t, g in enumerate(grads)]
    path, hps = _drive(specs, x0, grads, shapes)
    for k, hp in enumerate(hps):
        points = [x0[k]] + [x[k] for x in path[:-1]]
        expected = _asgd_by_hand(points, [g[k] for g in grads], hp, shapes)
        for t, (got, want) in enumerate(zip(path, expected), start=1):
            _close(got[k], want, f"{specs[k]} step {t}", 1e-11)


def test_asgd_takes_the_scheduled_lr_in_place_of_its_adapted_one():
    """Under a schedule the loop engine sets the group's lr before every step (overwriting the adapted one)."""
    problem = get_problem("rosenbrock(noise=0.1)")
    for schedule in ("cosine", "constant"):
        configs, seeds = _group("asgd(lr=0.002, amplifier=0.5)")
        _analytic_group(problem, configs, seeds, Recipe(schedule=schedule))


# ---- batched == loop on the branches the defaults do not reach; the state each rule declares ----------------

def _group(spec):
    config = get_optimizer(spec)
    if config.lr is None:  # A2Grad: no learning rate; the two runs differ by their seeds
        return [config, config], [0, 7]
    return [config, config.with_hyperparams(lr=config.lr / 2)], [0, 7]


def _analytic_group(problem, configs, seeds, recipe=Recipe(), steps=15):
    batched = run_batched(problem, configs, seeds[:len(configs)], steps, 1, recipe=recipe, measure_cost=False)
    for k, (config, seed) in enumerate(zip(configs, seeds)):
        loop = run_loop(problem, config, seed, steps, 1, recipe=recipe, measure_cost=False)
        assert batched.status[k] == loop.status[0] and batched.end_step[k] == loop.end_step[0], config.label
        rows = batched.steps < loop.end_step[0]
        _close(batched.loss[rows, k], loop.loss[rows, 0], f"{config.label} loss", 1e-8)
        _close(batched.coords[rows, k], loop.coords[rows, 0], f"{config.label} coordinates", 1e-8)
        _close(batched.end_x[k], loop.end_x[0], f"{config.label} final parameters", 1e-8)


def _network_group(problem, configs, seeds, steps=6):
    assert all(engine_supports("batched", problem, c) for c in configs)
    batched = run_network_batched(problem, configs, seeds[:len(configs)], steps, 1)
    for k, (config, seed) in enumerate(zip(configs, seeds)):
        loop = run_network(problem, config, seed, steps, 1)
        _close(batched.loss[:, k], loop.loss[:, 0], f"{config.label} loss", 1e-8)
        _close(batched.extra["test_loss"][:, k], loop.extra["test_loss"][:, 0], f"{config.label} test loss", 1e-8)


@pytest.mark.parametrize("spec", [s for name in NAMES for s in VARIANTS[name]])
@pytest.mark.parametrize("problem_spec", ["beale", "rosenbrock(noise=0.1)"])
def test_variants_batched_equal_loop(spec, problem_spec):
    problem = get_problem(problem_spec)
    configs, seeds = _group(spec)
    assert all(engine_supports("batched", problem, c) for c in configs)
    _analytic_group(problem, configs, seeds)


@pytest.mark.parametrize("spec", ["madgrad(lr=0.01)", "madgrad(lr=0.01, momentum=0.0, weight_decay=0.1, "
                                  "weight_decouple=True)", "ranger(lr=0.001, weight_decay=0.1)",
                                  "adafactor(lr=0.01, relative_step=False, weight_decay=0.1)", "accsgd(lr=0.003)",
                                  "asgd(lr=0.01)"])
def test_rules_follow_a_schedule(spec):
    """η_t of a cosine schedule inside each formula (MADGRAD's λ_t, AccSGD's long step, the decays)."""
    configs, seeds = _group(spec)
    _analytic_group(get_problem("rosenbrock(noise=0.1)"), configs, seeds, Recipe(schedule="cosine"))


@pytest.mark.parametrize("name", NAMES)
def test_defaults_in_float32_stay_near_the_class(name):
    """float32 (the gallery's dtype): the rules run and follow the class to float32 accuracy over 15 steps."""
    problem = get_problem("rosenbrock(noise=0.1)")
    configs, seeds = _group(name)
    batched = run_batched(problem, configs, seeds[:len(configs)], 15, 1, dtype=torch.float32, measure_cost=False)
    for k, (config, seed) in enumerate(zip(configs, seeds)):
        loop = run_loop(problem, config, seed, 15, 1, dtype=torch.float32, measure_cost=False)
        rows = batched.steps < min(batched.end_step[k], loop.end_step[0])
        _close(batched.loss[rows, k], loop.loss[rows, 0], f"{config.label} loss", 1e-3)


@pytest.mark.parametrize("spec", [s for name in NAMES for s in VARIANTS[name]])
def test_variants_on_a_cnn(network_data, spec):
    configs, seeds = _group(spec)
    _network_group(get_problem(CNN), configs, seeds)


@pytest.mark.parametrize("spec", [s for name in NAMES for s in [name, *VARIANTS[name]]])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_rules_declare_the_state_their_class_keeps(spec, dtype):
    config = get_optimizer(spec)
    declared = RULES[config.entry.batched].slots_per_param(config.hyperparams, 5) * dtype.itemsize
    if config.entry.name == "madgrad" and dtype == torch.float32:
        # its int64 step counter is 8 bytes whatever the dtype, declared as one slot: 4 of them in float32
        declared += 4 / 5
    assert declared == pytest.approx(probe_state_bytes_per_param(config, 5, dtype)), spec
