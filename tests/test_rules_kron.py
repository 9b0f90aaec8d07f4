"""Kron's batched rule (a vector's diagonal PSGD preconditioner) against the update written out by hand, its
preconditioner-update schedule, and what it refuses. That it equals pytorch_optimizer's class to 1e-8 in
float64 (its probes from the seeded global generator included) is the registry-wide contract
(tests/test_engine_contract.py, tests/test_optimizers.py)."""

from __future__ import annotations

import math

import pytest
import torch

from optbench.engines.batched import stack_hyperparams
from optbench.engines.batched_rules import RULES
from optbench.engines.rules_kron import update_probability
from optbench.engines.step_rng import step_seed
from optbench.optimizers import get_optimizer

F64 = torch.float64


def _rule_run(specs, grads, x0, seeds):
    configs = [get_optimizer(s) for s in specs]
    hp = stack_hyperparams(configs, F64, "cpu")
    rule, x = RULES["kron"], x0.clone()
    state = rule.init(x, hp)
    state["seeds"] = seeds
    qs = []
    for t, g in enumerate(grads, start=1):
        rule.step(x, g.clone(), state, hp, t)
        qs.append(state["q"].clone())
    return x, qs


def _by_hand(lr, mu, grads, x0, seed):
    """The docstring's update for one configuration (the probe from step_seed's generator, float32)."""
    x, m, q = x0.clone(), torch.zeros_like(x0), torch.ones_like(x0)
    for t, g in enumerate(grads, start=1):
        m = mu * m + (1 - mu) * g
        h = m / (1 - mu ** t)
        v = torch.randn(len(x0), dtype=torch.float32, generator=torch.Generator().manual_seed(step_seed(seed, t - 1)))
        a, b = q * h, v.to(F64) / q
        q = q - 0.1 * (a * a - b * b) * q / ((a * a + b * b).abs().max() + torch.finfo(torch.bfloat16).tiny)
        u = q * q * h
        u = u * min(1.0, 1.1 / (float(u.square().mean().sqrt()) + 1e-6))
        x = x - lr * u
    return x


def test_rule_is_the_update_written_out():
    torch.manual_seed(0)
    grads = [torch.randn(2, 4, dtype=F64) for _ in range(6)]
    x0 = torch.randn(2, 4, dtype=F64)
    got, _ = _rule_run(["kron(lr=0.01, momentum=0.9)", "kron(lr=0.1, momentum=0.5)"], grads, x0, [0, 5])
    for k, (lr, mu, seed) in enumerate(((0.01, 0.9, 0), (0.1, 0.5, 5))):
        want = _by_hand(lr, mu, [g[k] for g in grads], x0[k], seed)
        torch.testing.assert_close(got[k], want, rtol=1e-5, atol=1e-7)  # the factor is kept in float32


def test_update_probability_schedule():
    assert float(update_probability(0, None)) == 1.0 and float(update_probability(499, None)) == 1.0
    assert math.isclose(float(update_probability(1500, None)), math.exp(-1.0), rel_tol=1e-6)
    assert math.isclose(float(update_probability(10_000, None)), 0.03, rel_tol=1e-6)
    assert math.isclose(float(update_probability(3, 0.25)), 0.25)


def test_a_fixed_probability_updates_the_factor_every_ceil_one_over_p_steps():
    torch.manual_seed(1)
    grads = [torch.randn(1, 3, dtype=F64) for _ in range(9)]
    _, qs = _rule_run(["kron(lr=0.01, pre_conditioner_update_probability=0.3)"], grads,
                      torch.zeros(1, 3, dtype=F64), [0])
    changed = [t for t in range(1, 9) if not torch.equal(qs[t], qs[t - 1])]
    assert torch.equal(qs[0], torch.ones_like(qs[0]))  # step 1: the counter is 1 < 1/0.3
    assert changed == [3, 7], changed  # steps 4 and 8 (0-based indices 3 and 7): ⌈1/0.3⌉ = 4


def test_weight_decay_does_not_touch_a_vector():
    torch.manual_seed(2)
    grads = [torch.randn(1, 3, dtype=F64) for _ in range(4)]
    x0 = torch.randn(1, 3, dtype=F64)
    plain, _ = _rule_run(["kron(lr=0.01)"], grads, x0, [0])
    decayed, _ = _rule_run(["kron(lr=0.01, weight_decay=0.5)"], grads, x0, [0])
    torch.testing.assert_close(plain, decayed, rtol=0, atol=0)


@pytest.mark.parametrize("spec, reason", [("kron(min_ndim_triangular=1)", "triangular")])
def test_settings_the_rule_does_not_mirror_are_refused(spec, reason):
    assert reason in RULES["kron"].refuses(get_optimizer(spec).hyperparams)
    assert RULES["kron"].refuses(get_optimizer("kron(min_ndim_triangular=1, memory_save_mode='all_diag')")
                                 .hyperparams) is None
