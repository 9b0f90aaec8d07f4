"""optbench baseline / check on the shipped CI suite, through the Python API (the code the CLI runs), and once
end to end through the installed ``optbench`` script on a small suite.

The user's optimizer is the point: a correct Adam and heavy-ball SGD written as user files are baselined,
then deliberately broken versions under the same labels (same file paths) must fail the check.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SUITE = ROOT / "problems" / "ci.toml"
BASELINE = ROOT / "results" / "baselines" / "ci"
OPTBENCH = shutil.which("optbench") or str(Path(sys.executable).with_name("optbench"))

ADAM = '''
import torch


class MyAdam(torch.optim.Optimizer):
    """Adam (Kingma & Ba 2015) with bias correction."""

    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8):
        super().__init__(params, dict(lr=lr, betas=betas, eps=eps))

    @torch.no_grad()
    def step(self, closure=None):
        for group in self.param_groups:
            b1, b2 = group["betas"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                st = self.state[p]
                if not st:
                    st["t"], st["m"], st["v"] = 0, torch.zeros_like(p), torch.zeros_like(p)
                st["t"] += 1
                st["m"].mul_(b1).add_(p.grad, alpha=1 - b1)
                st["v"].mul_(b2).addcmul_(p.grad, p.grad, value=1 - b2)
                m_hat = st["m"] / (1 - b1 ** st["t"])  # BIAS-M
                v_hat = st["v"] / (1 - b2 ** st["t"])  # BIAS-V
                p.addcdiv_(m_hat, v_hat.sqrt().add_(group["eps"]), value=-group["lr"])
'''
ADAM_NO_BIAS_CORRECTION = (ADAM.replace('st["m"] / (1 - b1 ** st["t"])  # BIAS-M', 'st["m"]')
                           .replace('st["v"] / (1 - b2 ** st["t"])  # BIAS-V', 'st["v"]'))

SGD = '''
import torch


class MySGD(torch.optim.Optimizer):
    """Heavy ball: b <- mu b + g, x <- x - lr b."""

    def __init__(self, params, lr=1e-3, momentum=0.9):
        super().__init__(params, dict(lr=lr, momentum=momentum))

    @torch.no_grad()
    def step(self, closure=None):
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is None:
                    continue
                st = self.state[p]
                if "buf" not in st:
                    st["buf"] = p.grad.clone()
                else:
                    st["buf"].mul_(group["momentum"]).add_(p.grad)
                # MOMENTUM
                p.add_(st["buf"], alpha=-group["lr"])
'''
SGD_MOMENTUM_TWICE = SGD.replace("# MOMENTUM", 'st["buf"].mul_(group["momentum"]).add_(p.grad)')


def optbench(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "COLUMNS": "200", "NO_COLOR": "1"}
    return subprocess.run([OPTBENCH, *map(str, args)], cwd=cwd, capture_output=True, text=True, env=env,
                          timeout=300)


SMALL_SUITE = """name = "small"
[[sweep]]
problems = ["rosenbrock"]
optimizers = ["adam(lr=0.01)"]
seeds = 2
steps = 40
[check]
branches = false
"""


def test_baseline_and_check_end_to_end(tmp_path):
    """The one real-process run of 'optbench baseline' and 'optbench check': exit codes 0, 0, 1 and what they
    print."""
    (tmp_path / "opt").mkdir()
    (tmp_path / "opt" / "sgd.py").write_text(SGD)
    (tmp_path / "small.toml").write_text(SMALL_SUITE)
    opts = "opt/sgd.py:MySGD(lr=0.001)"
    r = optbench("baseline", "--suite", "small.toml", "--out", "bl", "--opt", opts, cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert "Baseline of suite 'small': 2 runs" in r.stdout and "Commit it" in r.stdout
    r = optbench("check", "--suite", "small.toml", "--against", "bl", "--opt", opts, cwd=tmp_path)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "OK:" in r.stdout and "within tolerance" in r.stdout
    (tmp_path / "opt" / "sgd.py").write_text(SGD_MOMENTUM_TWICE)
    r = optbench("check", "--suite", "small.toml", "--against", "bl", "--opt", opts, "--markdown", "check.md",
                 cwd=tmp_path)
    assert r.returncode == 1, r.stdout + r.stderr
    assert "REGRESSION" in r.stdout and "opt/sgd.py:MySGD" in r.stdout and "Traceback" not in r.stderr
    assert (tmp_path / "check.md").read_text().startswith("## ❌")


def _failed_labels(result) -> set[str]:
    return set(result.failed["optimizer_label"].astype(str))


def test_broken_user_optimizers_fail_the_shipped_suite(tmp_path, monkeypatch):
    import optbench
    import optbench.optimizers.user as user

    monkeypatch.chdir(tmp_path)
    (tmp_path / "opt").mkdir()
    adam, sgd = tmp_path / "opt" / "adam.py", tmp_path / "opt" / "sgd.py"
    adam.write_text(ADAM)
    sgd.write_text(SGD)
    opts = "opt/adam.py:MyAdam,opt/sgd.py:MySGD"

    def check(**kwargs):
        monkeypatch.setattr(user, "_CACHE", {})  # the user's files changed under the same labels
        return optbench.check(suite=SUITE, baseline="bl", opt=opts, **kwargs)

    optbench.baseline(SUITE, "bl", opt=opts)
    assert (tmp_path / "bl" / "manifest.json").exists()

    result = check(junit="ok.xml")
    assert result.passed, result.failed  # a re-run of the same code passes (bitwise)
    ok = ET.parse(tmp_path / "ok.xml").getroot()
    assert int(ok.get("failures")) == 0 and int(ok.get("tests")) == len(ok.findall(".//testcase")) > 0

    adam.write_text(ADAM_NO_BIAS_CORRECTION)
    result = check(junit="bad.xml", markdown="report/check.md")
    assert not result.passed and "opt/adam.py:MyAdam" in _failed_labels(result)
    root = ET.parse(tmp_path / "bad.xml").getroot()
    failures = root.findall(".//failure")
    assert int(root.get("failures")) == len(failures) > 0
    assert int(root.get("tests")) == int(ok.get("tests"))  # one case per configuration and metric
    failed_cases = {c.get("classname") for c in root.findall(".//testcase") if c.find("failure") is not None}
    assert all("MyAdam" in c for c in failed_cases)  # the untouched SGD still passes
    md = (tmp_path / "report" / "check.md").read_text()
    assert md.startswith("## ❌") and "### Regressions" in md
    figures = list((tmp_path / "report" / "check-figures").glob("*.png"))
    assert figures and f"]({figures[0].relative_to(tmp_path / 'report').as_posix()})" in md

    adam.write_text(ADAM)
    sgd.write_text(SGD_MOMENTUM_TWICE)
    result = check(out="broken-sgd")  # its own directory: the runs of earlier checks (other sources) stay apart
    assert not result.passed and all("MySGD" in label for label in _failed_labels(result))

    # the same broken SGD also fails the statistical mode (its defaults catch few-percent changes): the same
    # deterministic runs compared as seed medians
    statistical = optbench.check(result.new_dir, "bl", mode="statistical")
    assert statistical.tolerances.mode == "statistical" and not statistical.passed
    assert all("MySGD" in label for label in _failed_labels(statistical))


def test_shipped_baseline_rerun_passes_and_other_seeds_pass_statistically(tmp_path, monkeypatch):
    import optbench
    from optbench.check.compare import ConfigMismatch

    monkeypatch.chdir(tmp_path)
    assert optbench.check(suite=SUITE, baseline=BASELINE, out="new").passed
    other = SUITE.read_text().replace("seeds = 16", f"seeds = {list(range(100, 116))}")
    assert other != SUITE.read_text()
    (tmp_path / "other.toml").write_text(other)
    two_dirs = optbench.check("new", BASELINE)
    assert two_dirs.passed and two_dirs.tolerances.mode == "exact"  # both deterministic: exact by default
    assert optbench.check(suite="other.toml", baseline=BASELINE, out="other", mode="statistical").passed
    with pytest.raises(ConfigMismatch, match="Seeds differ"):  # exact mode: seeds must match
        optbench.check("other", BASELINE)


def test_missing_configurations_exit_2(tmp_path, monkeypatch):
    from cli_invoke import invoke

    import optbench
    from optbench.errors import UsageError

    monkeypatch.chdir(tmp_path)
    optbench.run("rosenbrock", "adam", lrs=[0.01], steps=300, record_every=10, deterministic=True, out="partial")
    manifest = (tmp_path / "partial" / "manifest.json").read_text()
    assert '"deterministic": true' in manifest
    r = invoke("check", "partial", "--against", BASELINE)
    assert r.exit_code == 2
    assert "missing from the new results" in r.stderr and "himmelblau / sgd-momentum" in r.stderr
    with pytest.raises(UsageError, match="does not exist"):
        optbench.check("nowhere", BASELINE)
    r = invoke("check", "nowhere", "--against", BASELINE)
    assert r.exit_code == 2 and "does not exist" in r.stderr
    r = invoke("check")
    assert r.exit_code == 2


@pytest.mark.parametrize("args,message", [
    (["--device", "cuda"], "runs on the CPU"),
    (["--dtype", "float32"], "float64"),
])
def test_deterministic_run_refuses_gpu_and_float32(tmp_path, args, message):
    from cli_invoke import invoke

    r = invoke("run", "-p", "rosenbrock", "-o", "adam", "--steps", "5", "--deterministic", *args, "--out",
               tmp_path / "x")
    assert r.exit_code == 2 and message in r.stderr
