"""Hyperparameter-branch variants (optbench.check.branches): a contract over every registry optimizer."""

from __future__ import annotations

import pytest

from optbench.check.branches import NOT_VARIED, alternative_value, branch_variants, candidate_values, probe_losses
from optbench.optimizers import get_optimizer, list_optimizers


@pytest.mark.parametrize("default,expected", [
    (False, True), (True, False), (0.0, 0.1), (0, 0.1), (1e-8, 1e-3), (-1e-9, -1e-3), (0.9, 0.8),
    (0.999, 0.998), (4e-3, 8e-3), (1.0, 2.0), (-0.8, -0.4), (20, None), ((0.9, 0.999), None), ("x", None),
    (None, None),
])
def test_alternative_values(default, expected):
    value = alternative_value(default)
    assert value == pytest.approx(expected) if expected is not None else value is None


FAST = ("adam", "sgd", "sgd-momentum")  # AMSGrad reached only late; helpers (nesterov, dampening need momentum)


def _names():
    """Every hand-written registry optimizer (the 3 of FAST by default, the rest with -m slow: each probes ~10
    runs); the generated pytorch_optimizer catalogue (optbench.optimizers.catalogue) is not checked here."""
    return [pytest.param(e.name, marks=() if e.name in FAST else pytest.mark.slow)
            for e in list_optimizers() if not e.generated]


@pytest.mark.parametrize("name", _names())
def test_every_variant_of_every_registry_optimizer_changes_the_numbers(name):
    """Each variant builds, sets a non-default value of one float/bool argument (plus at most one helper),
    and moves the probe's losses; every argument that can be varied is varied unless no helper reaches it."""
    config = get_optimizer(name)
    base = probe_losses(config)
    variants = branch_variants(config)
    assert len({v.label for v in variants}) == len(variants)
    varied = set()
    for variant in variants:
        assert 1 <= len(variant.given) <= 2 and not (set(variant.given) & NOT_VARIED)
        assert probe_losses(variant) not in (None, base)
        varied |= set(variant.given)
    unreached = set(candidate_values(config.entry)) - varied
    assert unreached == KNOWN_INERT.get(name, set()), unreached


# Arguments no probe reaches, for reasons the registry documents: LARS applies its trust ratio and weight
# decay to parameters with ndim > 1 only (an analytic problem is one 1-D vector); LAMB's max_grad_norm needs
# pre_norm=True, which optbench leaves off; Adafactor's update clipping (RMS of the update > d) does not
# trigger at 1 or 2 on the probe (nor adafactor-paper's, whose ε₂ = 1e-3 floor on RMS(x) is below the
# probe's parameter scale); L-BFGS's gradient never falls below tolerance_grad = 1e-3 there.
KNOWN_INERT: dict[str, set[str]] = {"lars": {"trust_coefficient", "weight_decay"}, "lamb": {"max_grad_norm"},
                                    "adafactor": {"clip_threshold"}, "adafactor-paper": {"clip_threshold", "eps2"},
                                    "lbfgs": {"tolerance_grad"}}


def test_user_class_variants_read_the_signature(tmp_path, monkeypatch):
    (tmp_path / "opt.py").write_text('''
import torch


class Heavy(torch.optim.Optimizer):
    def __init__(self, params, lr=1e-3, momentum=0, nesterov=False, foreach=None, reset_every: int = 0,
                 betas=(0.9, 0.99)):
        super().__init__(params, dict(lr=lr, momentum=momentum, nesterov=nesterov))

    @torch.no_grad()
    def step(self, closure=None):
        for group in self.param_groups:
            for p in group["params"]:
                st = self.state[p]
                buf = st.setdefault("buf", torch.zeros_like(p))
                buf.mul_(group["momentum"]).add_(p.grad)
                d = p.grad.add(buf, alpha=group["momentum"]) if group["nesterov"] else buf
                p.add_(d, alpha=-group["lr"])
''')
    monkeypatch.chdir(tmp_path)
    labels = [v.label for v in branch_variants(get_optimizer("opt.py:Heavy"))]
    # momentum=0 (an int, not annotated int) is a float switch; nesterov needs it; foreach, the int
    # reset_every and the tuple are not varied
    assert labels == ["opt.py:Heavy(momentum=0.1)", "opt.py:Heavy(momentum=0.1, nesterov=True)"]
