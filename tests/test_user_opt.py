"""User optimizers (``file.py:Class``, ``pkg.mod:Class``): loading, validation, and errors reported as
the user's, with their traceback and not optbench's."""

from __future__ import annotations

import textwrap

import pytest
import torch

from optbench.errors import SpecError, UserCodeError
from optbench.optimizers import get_optimizer
from optbench.optimizers.user import user_traceback

GOOD = '''
import torch


class PlainSGD(torch.optim.Optimizer):
    """x <- x - lr g."""

    def __init__(self, params, lr=0.1):
        super().__init__(params, dict(lr=lr))

    @torch.no_grad()
    def step(self, closure=None):
        for group in self.param_groups:
            for p in group["params"]:
                p.add_(p.grad, alpha=-group["lr"])


class NoClosure(PlainSGD):
    @torch.no_grad()
    def step(self):
        super().step()


class NeedsClosure(PlainSGD):
    def step(self, closure):
        with torch.enable_grad():
            closure()
        return super().step()


class BrokenStep(PlainSGD):
    def step(self, closure=None):
        raise ValueError("bad step in user code")


class BrokenInit(torch.optim.Optimizer):
    def __init__(self, params, lr=0.1):
        raise RuntimeError("bad init in user code")
'''


@pytest.fixture
def opt_file(tmp_path, monkeypatch):
    path = tmp_path / "user_opts.py"
    path.write_text(GOOD)
    monkeypatch.chdir(tmp_path)
    return path


def _one_step(config):
    p = torch.nn.Parameter(torch.tensor([1.0, -2.0], dtype=torch.float64))
    opt = config.entry.build([p], config.hyperparams)
    p.grad = p.detach().clone()

    def closure():
        p.grad = p.detach().clone()
        return (p**2).sum() / 2

    opt.step(closure) if config.entry.needs_closure else opt.step()
    return p.detach()


def test_file_optimizer_builds_steps_and_validates(opt_file):
    config = get_optimizer(f"{opt_file.name}:PlainSGD(lr=0.5)")
    assert config.lr == 0.5 and config.label == "user_opts.py:PlainSGD(lr=0.5)"
    assert torch.allclose(_one_step(config), torch.tensor([0.5, -1.0], dtype=torch.float64))
    assert not get_optimizer(f"{opt_file.name}:NoClosure").entry.needs_closure
    needs = get_optimizer(f"{opt_file.name}:NeedsClosure")
    assert needs.entry.needs_closure
    assert torch.allclose(_one_step(needs), torch.tensor([0.9, -1.8], dtype=torch.float64))
    with pytest.raises(SpecError, match="Unknown key 'momentum'"):
        get_optimizer(f"{opt_file.name}:PlainSGD(momentum=0.9)")
    with pytest.raises(SpecError, match="out of range"):
        get_optimizer(f"{opt_file.name}:PlainSGD(lr=-1)")
    with pytest.raises(SpecError, match="classes there: .*PlainSGD"):
        get_optimizer(f"{opt_file.name}:Nope")
    with pytest.raises(SpecError, match="does not exist"):
        get_optimizer("missing_file.py:X")
    with pytest.raises(SpecError, match="not installed"):
        get_optimizer("no_such_pkg_xyz.optim:X")


def test_errors_in_user_code_carry_only_their_frames(opt_file):
    with pytest.raises(UserCodeError) as info:
        _one_step(get_optimizer(f"{opt_file.name}:BrokenStep"))
    assert "failed in step()" in str(info.value)
    tb = info.value.user_traceback
    assert "bad step in user code" in tb and "user_opts.py" in tb and "optbench" not in tb
    with pytest.raises(UserCodeError, match="Constructing your optimizer") as info:
        _one_step(get_optimizer(f"{opt_file.name}:BrokenInit"))
    assert "bad init in user code" in info.value.user_traceback


def test_import_error_in_user_file(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "raises.py").write_text(textwrap.dedent("""
        import torch
        raise ImportError("cannot find my_cuda_kernels")
    """))
    with pytest.raises(UserCodeError) as info:
        get_optimizer("raises.py:X")
    assert "raises.py" in info.value.user_traceback and "importlib" not in info.value.user_traceback


def test_user_traceback_keeps_the_whole_trace_when_no_user_frame():
    try:
        raise KeyError("x")
    except KeyError as exc:
        assert "KeyError" in user_traceback(exc)


def test_source_edit_changes_the_run_identity(opt_file):
    from optbench.optimizers.user import user_optimizer_entry

    entry = user_optimizer_entry(f"{opt_file.name}:PlainSGD")
    assert len(entry.source_sha) == 16
