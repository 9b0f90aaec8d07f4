"""Shared trials (optbench.engines.stacked): K lr-only configurations of a class verified to be linear in lr (and
elementwise, or per tensor) share one library object. The verifier is tested on classes built to break each
assumption, every listed class is re-verified in its layout, and shared runs are compared with one object per
trial."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import torch

from optbench.engines.stacked import GROUPS, STACKED, TENSORS, can_share, run_shared, share_groups, sharing_mismatch
from optbench.engines.trials import _side_by_side, run_trials
from optbench.optimizers import get_optimizer, get_optimizer_entry, list_optimizers
from optbench.optimizers.stacking import SHARED
from optbench.problems import get_problem

ROSENBROCK = "rosenbrock(start=(-2.0, 2.0))"


class _Elementwise(torch.optim.Optimizer):
    """Momentum SGD with a per-coordinate RMS denominator: elementwise and linear in lr (stacks)."""

    def __init__(self, params, lr=0.01):
        super().__init__(params, {"lr": lr})

    @torch.no_grad()
    def step(self, closure=None):
        for group in self.param_groups:
            for p in group["params"]:
                state = self.state[p]
                if not state:
                    state["m"], state["v"] = torch.zeros_like(p), torch.zeros_like(p)
                state["m"].mul_(0.9).add_(p.grad)
                state["v"].mul_(0.99).addcmul_(p.grad, p.grad, value=0.01)
                p.addcdiv_(state["m"], state["v"].sqrt().add_(1e-8), value=-group["lr"])


class _TensorNorm(_Elementwise):
    """Divides by the gradient's norm over the whole tensor: couples the rows of a stacked parameter."""

    @torch.no_grad()
    def step(self, closure=None):
        for group in self.param_groups:
            for p in group["params"]:
                p.add_(p.grad / (p.grad.norm() + 1e-12), alpha=-group["lr"])


class _LrSquared(_Elementwise):
    """Steps by lr² · g: elementwise but not linear in lr."""

    @torch.no_grad()
    def step(self, closure=None):
        for group in self.param_groups:
            for p in group["params"]:
                p.add_(p.grad, alpha=-group["lr"] ** 2)


class _ProjectsWhenOrthogonal(_Elementwise):
    """Plain SGD, except that when the gradient is nearly orthogonal to the point (cosine over the tensor below
    0.05) it also shrinks the point: a coupling that the gradients of the usual problems rarely trigger."""

    @torch.no_grad()
    def step(self, closure=None):
        for group in self.param_groups:
            for p in group["params"]:
                cosine = (p * p.grad).sum() / (p.norm() * p.grad.norm() + 1e-30)
                if abs(float(cosine)) < 0.05:
                    p.mul_(0.5)
                p.add_(p.grad, alpha=-group["lr"])


def _entry(cls):
    base = get_optimizer_entry("sgd")
    from optbench.params import positive

    return replace(base, name=f"test:{cls.__name__}", target=f"{__name__}:{cls.__name__}", source="user",
                   params={"lr": positive("learning rate", 0.01)}, batched=None, fixed={})


class _JointNorm(_Elementwise):
    """Divides by the gradient norm over all its parameters at once: couples the trials in any layout."""

    @torch.no_grad()
    def step(self, closure=None):
        params = [p for group in self.param_groups for p in group["params"]]
        total = torch.sqrt(sum((p.grad**2).sum() for p in params)) + 1e-12
        for group in self.param_groups:
            for p in group["params"]:
                p.add_(p.grad / total, alpha=-group["lr"])


@pytest.mark.parametrize("layout", [STACKED, TENSORS, GROUPS])
def test_the_verifier_accepts_an_elementwise_lr_linear_class(layout):
    assert sharing_mismatch(_entry(_Elementwise), layout, steps=20) is None


def test_a_per_tensor_statistic_shares_only_as_one_tensor_per_trial():
    assert "differs" in sharing_mismatch(_entry(_TensorNorm), STACKED, steps=20)
    assert sharing_mismatch(_entry(_TensorNorm), TENSORS, steps=20) is None


@pytest.mark.parametrize("cls", [_LrSquared, _ProjectsWhenOrthogonal])  # η², a step that is not x − ηu
def test_an_lr_nonlinear_class_shares_only_as_one_group_per_trial(cls):
    for layout in (STACKED, TENSORS):
        assert "differs" in sharing_mismatch(_entry(cls), layout, steps=20)
    assert sharing_mismatch(_entry(cls), GROUPS, steps=20) is None


@pytest.mark.parametrize(("cls", "layout"), [(_ProjectsWhenOrthogonal, STACKED), (_ProjectsWhenOrthogonal, TENSORS),
                                             (_JointNorm, STACKED), (_JointNorm, TENSORS), (_JointNorm, GROUPS)])
def test_the_verifier_refuses_each_broken_assumption(cls, layout):
    reason = sharing_mismatch(_entry(cls), layout, steps=20)
    assert reason is not None and "differs" in reason


def test_the_verifier_finds_a_rare_coupling_that_no_verification_problem_triggers():
    """The adversarial gradient streams catch a projection that the three problems' gradients never trigger."""
    entry = _entry(_ProjectsWhenOrthogonal)
    assert sharing_mismatch(entry, STACKED, steps=20, problems=(ROSENBROCK,), lrs=(1e-3, 0.1)).startswith("adversarial")


def test_capabilities_that_need_one_object_per_run_are_never_stacked():
    for name in ("sophiah", "schedulefreesgd", "alig", "spsa"):
        assert "capabilities" in sharing_mismatch(name, TENSORS)
        assert name not in SHARED


@pytest.mark.parametrize("name", sorted(SHARED))
def test_every_listed_class_still_shares_in_its_layout(name):
    """Every entry of SHARED passes the verifier again in its layout (a library upgrade that couples trials
    fails here); shortened: one problem and the adversarial streams, 25 steps."""
    assert sharing_mismatch(name, SHARED[name], steps=25, problems=(ROSENBROCK,)) is None


@pytest.mark.slow
def test_the_table_is_exactly_the_classes_that_pass_in_their_fastest_layout():
    """Complete: every registry class is listed with the fastest layout it passes in, or passes none."""
    from optbench.engines.stacked import fastest_layout

    found = {}
    for entry in list_optimizers():
        layout, _ = fastest_layout(entry.name)
        if layout is not None:
            found[entry.name] = layout
    assert found == SHARED


@pytest.mark.parametrize("name", ["adabelief", "tiger", "sgdw", "ademamix", "came", "novograd", "adabound", "soap"])
@pytest.mark.parametrize("clip", [None, 1.0])
def test_shared_runs_equal_one_object_per_trial(name, clip):
    """Whole recorded trajectories, statuses and end steps, with a run that diverges (lr 30 unclipped)."""
    problem = get_problem(ROSENBROCK)
    configs = [get_optimizer(name).with_hyperparams(lr=lr) for lr in (1e-4, 3e-3, 0.1, 30.0)]
    want = _side_by_side(problem, configs, 0, 40, 1, device="cpu", dtype=torch.float64, clip_norm=clip,
                         clip_value=None)
    got = run_shared(problem, configs, 0, 40, 1, dtype=torch.float64, clip_norm=clip)
    assert got.status == want.status and np.array_equal(got.end_step, want.end_step)
    np.testing.assert_allclose(got.loss, want.loss, rtol=1e-8, atol=1e-12)
    np.testing.assert_allclose(got.coords, want.coords, rtol=1e-8, atol=1e-12)
    np.testing.assert_allclose(got.end_loss, want.end_loss, rtol=1e-8, atol=1e-12)


def test_a_run_that_ends_stops_moving_and_leaves_no_nan_in_the_others():
    problem = get_problem(ROSENBROCK)
    configs = [get_optimizer("sgdw").with_hyperparams(lr=lr) for lr in (1e-3, 50.0)]
    trace = run_shared(problem, configs, 0, 30, 1, dtype=torch.float64)
    assert trace.status == ["done", "diverged"]
    assert np.isfinite(trace.loss[:, 0]).all()
    assert np.isnan(trace.loss[int(trace.end_step[1]) + 1:, 1]).all()


def test_only_lr_only_configs_of_listed_classes_share():
    assert can_share(get_optimizer("adabelief(lr=0.01)"))
    assert not can_share(get_optimizer("adabelief(lr=0.01, weight_decay=0.1)"))  # not what was verified
    assert not can_share(get_optimizer("sophiah"))  # create_graph: one object per run, not listed
    configs = [get_optimizer(s) for s in ("adabelief(lr=0.1)", "tiger", "adabelief(lr=1e-3)", "mars",
                                          "adabelief(eps=1e-8)")]
    groups, rest = share_groups(configs)
    assert groups == [[0, 2]] and rest == [1, 3, 4]


def test_run_trials_shares_what_it_can_and_keeps_the_order():
    """A round mixing shared classes, a side-by-side one and a set hyperparameter: each run equals its
    one-object-per-trial run, in the caller's order."""
    problem = get_problem(ROSENBROCK)
    specs = ["adabelief(lr=0.1)", "mars(lr=0.01)", "adabelief(lr=0.003)", "adabelief(lr=0.01, eps=1e-8)",
             "tiger(lr=0.01)", "came(lr=0.01)", "tiger(lr=0.001)", "came(lr=0.1)", "madgrad(lr=0.1)",
             "madgrad(lr=0.01)"]
    configs = [get_optimizer(s) for s in specs]
    got = run_trials(problem, configs, 0, 30, 5, dtype=torch.float64)
    want = _side_by_side(problem, configs, 0, 30, 5, device="cpu", dtype=torch.float64, clip_norm=None,
                         clip_value=None)
    np.testing.assert_allclose(got.loss, want.loss, rtol=1e-8)
    assert got.status == want.status


def test_listing_states_the_capability():
    import dataclasses

    entry = get_optimizer_entry("adabelief")
    assert entry.shared_layout == STACKED
    # listed where the gallery's rounds share the object: without a batched rule (with one, the rule runs them)
    assert any("elementwise and linear in lr" in c for c in dataclasses.replace(entry, batched=None).capabilities())
    assert not any("share one object" in c for c in entry.capabilities())
    assert get_optimizer_entry("came").shared_layout == TENSORS
    assert get_optimizer_entry("madgrad").shared_layout == GROUPS
    assert get_optimizer_entry("sophiah").shared_layout is None
    assert len(SHARED) >= 75
