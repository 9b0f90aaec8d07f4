"""The batched L-BFGS rule (engines.rules_lbfgs) against torch.optim.LBFGS, its two-loop recursion against the dense
BFGS inverse-Hessian formula, and the refusal of the strong-Wolfe line search (``Rule.refuses``). The batched-vs-loop
contract itself is tests/test_engine_contract.py's."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from optbench.engines.batched import run_batched, stack_hyperparams, supports_batched
from optbench.engines.batched_rules import RULES
from optbench.engines.capabilities import batched_unsupported_reason, choose_engine
from optbench.engines.loop import run_loop
from optbench.engines.recipe import Recipe
from optbench.errors import UsageError
from optbench.optimizers import get_optimizer
from optbench.problems import get_problem

RULE = RULES["lbfgs"]


def rosenbrock(x):
    return (1 - x[..., 0]) ** 2 + 100 * (x[..., 1] - x[..., 0] ** 2) ** 2


def _loss_grad_at(fn):
    """``loss_grad_at`` of ``fn`` over ``[K, d]`` points, as the engine provides it (autograd per row)."""
    def loss_grad_at(points):
        with torch.enable_grad():
            xg = points.detach().requires_grad_(True)
            loss = fn(xg)
            (grad,) = torch.autograd.grad(loss.sum(), xg)
        return loss.detach(), grad
    return loss_grad_at


def _class_steps(fn, start, spec, steps):
    """torch.optim.LBFGS itself on ``fn`` from ``start``: the points after each step, and its state."""
    config = get_optimizer(spec)
    param = torch.nn.Parameter(start.clone())
    opt = config.entry.build([param], config.hyperparams, dtype=torch.float64)

    def closure():
        opt.zero_grad()
        loss = fn(param)
        loss.backward()
        return loss

    points = []
    for _ in range(steps):
        opt.step(closure)
        points.append(param.detach().clone())
    return torch.stack(points), opt.state[param]


# Variants in one group: per-configuration lr, max_iter, max_eval, history_size and tolerances (all float columns)
# so that some configurations end their inner loop early (tolerance_grad, tolerance_change, the evaluation budget,
# a short history that drops pairs) while the others go on.
GROUP = ["lbfgs", "lbfgs(lr=0.5, history_size=2)", "lbfgs(lr=0.2, max_iter=3, history_size=1)",
         "lbfgs(tolerance_grad=1e-2)", "lbfgs(lr=0.3, tolerance_change=1e-3)"]
EVAL_BUDGET = ["lbfgs(max_eval=4)", "lbfgs(lr=0.5, max_eval=7, max_iter=5)", "lbfgs(lr=0.7, max_eval=30)"]


@pytest.mark.parametrize("specs", [GROUP, EVAL_BUDGET], ids=["tolerances-history", "max-eval"])
def test_rule_reproduces_the_class_step_by_step(specs):
    """Each configuration of one batched call follows its own torch.optim.LBFGS: points after every step, and the
    state the class carries across steps (iteration count, kept pairs, last step length)."""
    steps = 6
    starts = torch.tensor([[-1.2, 1.0], [0.5, -0.3], [-0.7, 0.2], [1.5, 1.5], [0.0, 0.8]], dtype=torch.float64)
    starts = starts[: len(specs)]
    configs = [get_optimizer(s) for s in specs]
    hp = stack_hyperparams(configs, torch.float64, "cpu")
    x = starts.clone()
    state = RULE.init(x, hp)
    batched = []
    for t in range(1, steps + 1):
        state["loss_grad_at"] = _loss_grad_at(rosenbrock)
        RULE.step(x, None, state, hp, t)
        batched.append(x.clone())
    batched = torch.stack(batched, 1)  # [K, steps, d]
    iterations = []
    for k, spec in enumerate(specs):
        points, class_state = _class_steps(rosenbrock, starts[k], spec, steps)
        np.testing.assert_allclose(batched[k].numpy(), points.numpy(), rtol=1e-12, atol=1e-300, err_msg=spec)
        assert int(state["n_iter"][k]) == class_state["n_iter"], spec
        assert int(state["num_old"][k]) == len(class_state["old_dirs"]), spec
        assert float(state["t"][k]) == pytest.approx(float(class_state["t"]), rel=1e-12)
        iterations.append(class_state["n_iter"])
    assert len(set(iterations)) > 1  # the configurations' inner loops did end at different iterations


@pytest.mark.parametrize("problem_spec, recipe, dtype", [
    ("rosenbrock(noise=0.1)", Recipe(), torch.float64),  # one sampled function per step for every closure call
    ("rosenbrock", Recipe(clip_norm=1.0), torch.float64),  # each closure's gradient clipped as clip_grad_norm_
    ("beale(noise=0.05)", Recipe(clip_norm=2.0, clip_value=1.5), torch.float64),
    ("rosenbrock(start=(-2.0, 2.0))", Recipe(clip_norm=1.0), torch.float32),  # the gallery's settings
])
def test_batched_engine_equals_the_loop_engine_with_noise_and_clipping(problem_spec, recipe, dtype):
    """To the bit on these 2-D problems (a dot product of two products rounds one way), in float32 too."""
    problem = get_problem(problem_spec)
    specs = ["lbfgs(lr=0.1)", "lbfgs(lr=0.05, history_size=3, max_iter=4)", "lbfgs(lr=0.02, tolerance_change=1e-4)"]
    configs, seeds = [get_optimizer(s) for s in specs], [0, 3, 5]
    batched = run_batched(problem, configs, seeds, 12, 1, recipe=recipe, dtype=dtype)
    for k, (config, seed) in enumerate(zip(configs, seeds)):
        loop = run_loop(problem, config, seed, 12, 1, recipe=recipe, dtype=dtype)
        assert batched.status[k] == loop.status[0] and batched.end_step[k] == loop.end_step[0]
        rows = batched.steps <= loop.end_step[0]
        np.testing.assert_array_equal(batched.coords[rows, k], loop.coords[rows, 0])
        # the state the real class keeps when its run stops (d, g_prev and the kept pairs) per configuration
        assert batched.cost["state_bytes_per_param"][k] == loop.cost["state_bytes_per_param"][0], config.label


def test_two_loop_recursion_is_the_bfgs_inverse_hessian():
    """Nocedal & Wright 2006, Algorithm 7.4: the two-loop recursion returns −H g with H the BFGS inverse-Hessian
    approximation built from H₀ = γI (γ = yᵀs/yᵀy of the newest pair) by H ← (I − ρsyᵀ)H(I − ρysᵀ) + ρssᵀ over the
    kept pairs, oldest first (eq. 7.19). On a 4-d quadratic, one iteration per step (max_iter=1), the direction
    each step takes is checked against that dense matrix."""
    A = torch.tensor([[4.0, 1.0, 0.0, 0.5], [1.0, 3.0, 0.2, 0.0], [0.0, 0.2, 2.0, 0.3], [0.5, 0.0, 0.3, 1.0]],
                     dtype=torch.float64)
    b = torch.tensor([1.0, -2.0, 0.5, 0.3], dtype=torch.float64)

    def quadratic(x):
        return 0.5 * ((x @ A) * x).sum(-1) - x @ b

    configs = [get_optimizer("lbfgs(lr=0.2, max_iter=1, history_size=3)")]
    hp = stack_hyperparams(configs, torch.float64, "cpu")
    x = torch.tensor([[1.0, 1.0, -1.0, 2.0]], dtype=torch.float64)
    state = RULE.init(x, hp)
    for t in range(1, 8):
        state["loss_grad_at"] = _loss_grad_at(quadratic)
        before = x.clone()
        RULE.step(x, None, state, hp, t)
        g = before[0] @ A - b
        if t == 1:
            continue  # d = −g, step min(1, 1/‖g‖₁)·lr
        m = int(state["num_old"][0])
        ys, ss = state["dirs"][0, :m], state["stps"][0, :m]
        assert m == min(t - 1, 3)
        torch.testing.assert_close(ys, ss @ A, rtol=1e-10, atol=1e-12)  # y = A s on a quadratic
        H = float(ys[-1] @ ss[-1] / (ys[-1] @ ys[-1])) * torch.eye(4, dtype=torch.float64)
        for y, s in zip(ys, ss):
            rho = 1.0 / float(y @ s)
            left = torch.eye(4, dtype=torch.float64) - rho * torch.outer(s, y)
            H = left @ H @ left.T + rho * torch.outer(s, s)
        torch.testing.assert_close(state["d"][0], -H @ g, rtol=1e-10, atol=1e-12)
        torch.testing.assert_close(x[0], before[0] + 0.2 * state["d"][0], rtol=1e-12, atol=1e-14)


def test_full_history_on_a_scaled_identity_converges_at_the_second_iteration():
    """On f = ½c‖x‖² the first pair gives H₀ = yᵀs/yᵀy = 1/c = the exact inverse Hessian: the second iteration is
    the Newton step (lr = 1) and lands on the minimum. (max_eval = 3: the default ⌊1.25·2⌋ = 2 ends the step after
    the first iteration's evaluation, as the class does.)"""
    c = 3.0
    configs = [get_optimizer("lbfgs(max_iter=2, max_eval=3)"), get_optimizer("lbfgs(max_iter=1, max_eval=3)")]
    hp = stack_hyperparams(configs, torch.float64, "cpu")
    x = torch.tensor([[1.0, -2.0, 0.5], [1.0, -2.0, 0.5]], dtype=torch.float64)
    state = RULE.init(x, hp)
    state["loss_grad_at"] = _loss_grad_at(lambda p: 0.5 * c * (p * p).sum(-1))
    RULE.step(x, None, state, hp, 1)
    np.testing.assert_allclose(x[0].numpy(), 0.0, atol=1e-15)
    assert float(x[1].abs().max()) > 0.1  # one iteration only: the scaled gradient step
    assert state["n_iter"].tolist() == [2, 1]


# ---- the strong-Wolfe line search is refused, with its reason, wherever engine support is decided -----------

WOLFE = "lbfgs(line_search_fn='strong_wolfe')"


def test_the_strong_wolfe_line_search_is_refused_with_the_reason():
    problem, wolfe = get_problem("rosenbrock"), get_optimizer(WOLFE)
    reason = RULE.refuses(wolfe.hyperparams)
    assert reason is not None and "without a line search" in reason
    assert RULE.refuses(get_optimizer("lbfgs").hyperparams) is None
    assert batched_unsupported_reason(problem, wolfe) == reason
    assert not supports_batched(wolfe) and supports_batched(get_optimizer("lbfgs"))
    assert choose_engine("auto", problem, wolfe) == "loop"
    assert choose_engine("auto", problem, get_optimizer("lbfgs")) == "batched"
    with pytest.raises(UsageError, match="does not support 'lbfgs' on rosenbrock: its batched rule mirrors"):
        choose_engine("batched", problem, wolfe)
    with pytest.raises(UsageError, match="without a line search"):
        run_batched(problem, [get_optimizer("lbfgs"), wolfe], [0, 0], 3)


def test_a_sweep_runs_strong_wolfe_on_the_loop_engine_and_the_rest_batched():
    from optbench.sweep.plan import plan_groups
    from optbench.sweep.spec import Run

    problem = get_problem("rosenbrock")
    runs = [Run(problem, get_optimizer(spec), 0, 5, 1, "float64", "cpu", Recipe())
            for spec in ("lbfgs(lr=0.5)", WOLFE, "lbfgs(lr=0.1)")]
    engines = {run.optimizer.label: engine for engine, group in plan_groups(runs, "auto") for run in group}
    assert engines == {"lbfgs(lr=0.5)": "batched", "lbfgs(line_search_fn='strong_wolfe')": "loop",
                       "lbfgs(lr=0.1)": "batched"}
    with pytest.raises(UsageError, match="without a line search"):
        plan_groups(runs, "batched")
