"""DASH's batched rule against the paper's update written out by hand (float64, exact inverse roots by
eigendecomposition), the Newton–Denman–Beavers roots against exact ones, and its group restrictions. That the
rule equals pytorch_optimizer's class to 1e-8 (power iteration draws included) is the registry-wide contract
(tests/test_engine_contract.py, with DASH's option variants)."""

from __future__ import annotations

import pytest
import torch

from optbench.engines.batched import stack_hyperparams
from optbench.engines.batched_rules import RULES
from optbench.engines.layout import ParamLayout
from optbench.engines.rules_dash import newton_db
from optbench.errors import UsageError
from optbench.optimizers import get_optimizer

F64 = torch.float64


def _root(matrix: torch.Tensor, power: float, shift: float = 0.0) -> torch.Tensor:
    """matrix^power by eigendecomposition, the spectrum shifted by ``shift`` - min(lambda_min, 0) first."""
    values, vectors = torch.linalg.eigh(matrix)
    values = values + (shift - min(float(values.min()), 0.0))
    return vectors @ torch.diag(values ** power) @ vectors.T


def _run_rule(specs, shapes, grads, x0):
    configs = [get_optimizer(s) for s in specs]
    hp = stack_hyperparams(configs, F64, "cpu")
    rule = RULES["dash"]
    x = x0.clone()
    state = rule.init(x, hp)
    state["layout"], state["seeds"] = ParamLayout(shapes), [0] * len(specs)
    for t, g in enumerate(grads, start=1):
        rule.step(x, g.clone(), state, hp, t)
    return x


def _paper(lr, betas, eps, matrix_eps, momentum, nesterov, wd, grads, x0, shape):
    """One configuration, one parameter tensor: the docstring's update with exact roots (eigh)."""
    beta1, beta2 = betas
    x = x0.clone().reshape(shape if len(shape) == 2 else (-1, 1))
    one_sided = len(shape) == 1
    rows, cols = x.shape
    L, R = torch.zeros(rows, rows, dtype=F64), torch.zeros(cols, cols, dtype=F64)
    m, v, b = (torch.zeros_like(x) for _ in range(3))
    for t, g in enumerate(grads, start=1):
        G = g.reshape(x.shape)
        L = beta2 * L + (1 - beta2) * G @ G.T
        if not one_sided:
            R = beta2 * R + (1 - beta2) * G.T @ G
        v = beta2 * v + (1 - beta2) * G * G
        m = beta1 * m + (1 - beta1) * G
        graft = (m / (1 - beta1 ** t)) / ((v / (1 - beta2 ** t)).sqrt() + eps)
        eye_l, eye_r = torch.eye(rows, dtype=F64), torch.eye(cols, dtype=F64)
        # the library's eigh roots regularise twice: matrix_eps on the diagonal, then the spectrum shifted by it
        if one_sided:
            U = _root(L + matrix_eps * eye_l, -0.5, matrix_eps) @ m
        else:
            U = (_root(L + matrix_eps * eye_l, -0.25, matrix_eps) @ m
                 @ _root(R + matrix_eps * eye_r, -0.25, matrix_eps))
        U = U * graft.norm() / (U.norm() + 1e-16)
        b = momentum * b + U
        U = U + momentum * b if nesterov else b
        x = x * (1 - lr * wd) - lr * U
    return x.reshape(-1)


@pytest.mark.parametrize("shape", [(3,), (3, 4)], ids=["vector: one-sided", "matrix: two-sided"])
def test_rule_is_the_papers_update_with_exact_roots(shape):
    torch.manual_seed(0)
    n = int(torch.tensor(shape).prod())
    grads = [torch.randn(2, n, dtype=F64) for _ in range(5)]
    x0 = torch.randn(2, n, dtype=F64)
    settings = [dict(lr=0.01, betas=(0.9, 0.95), momentum=0.5, nesterov=True, wd=0.1),
                dict(lr=0.003, betas=(0.8, 0.9), momentum=0.2, nesterov=False, wd=0.0)]
    specs = [f"dash(lr={s['lr']}, betas={s['betas']}, momentum={s['momentum']}, weight_decay={s['wd']}, "
             f"nesterov={s['nesterov']}, inverse_root_method='eigh', precondition_frequency=1)" for s in settings]
    # the rule's nesterov is one value per group: one group per setting
    for k, (spec, s) in enumerate(zip(specs, settings)):
        got = _run_rule([spec], [shape], [g[k:k + 1] for g in grads], x0[k:k + 1])[0]
        want = _paper(s["lr"], s["betas"], 1e-8, 1e-10, s["momentum"], s["nesterov"], s["wd"],
                      [g[k] for g in grads], x0[k], shape)
        torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-12)


def test_configurations_of_a_group_differ_only_in_their_own_columns():
    torch.manual_seed(1)
    grads = [torch.randn(3, 4, dtype=F64) for _ in range(4)]
    x0 = torch.randn(3, 4, dtype=F64)
    specs = [f"dash(lr={lr}, betas={b})" for lr, b in ((0.01, (0.9, 0.95)), (0.1, (0.5, 0.9)), (0.03, (0.9, 0.95)))]
    together = _run_rule(specs, [(4,)], grads, x0)
    for k, spec in enumerate(specs):
        alone = _run_rule([spec], [(4,)], [g[k:k + 1] for g in grads], x0[k:k + 1])
        torch.testing.assert_close(together[k:k + 1], alone, rtol=0, atol=0)


def test_newton_denman_beavers_gives_the_roots():
    torch.manual_seed(2)
    a = torch.randn(4, 5, 5, dtype=F64)
    spd = a @ a.mT + 0.5 * torch.eye(5, dtype=F64)
    scale = 2 * torch.linalg.eigvalsh(spd)[:, -1].reshape(-1, 1, 1)
    inverse = newton_db(spd, scale, 20, inverse=True)
    square = newton_db(spd, scale, 20, inverse=False)
    for k in range(4):
        torch.testing.assert_close(inverse[k], _root(spd[k], -0.5), rtol=1e-9, atol=1e-10)
        torch.testing.assert_close(square[k], _root(spd[k], 0.5), rtol=1e-9, atol=1e-10)


@pytest.mark.parametrize("key, values", [("block_size", (4, 8)), ("newton_steps", (10, 5)),
                                          ("precondition_frequency", (10, 2))])
def test_a_group_needs_one_value_of_each_shape_setting(key, values):
    specs = [f"dash(lr=0.01, {key}={v})" for v in values]
    with pytest.raises(UsageError, match=key):
        _run_rule(specs, [(3,)], [torch.ones(2, 3, dtype=F64)], torch.zeros(2, 3, dtype=F64))
