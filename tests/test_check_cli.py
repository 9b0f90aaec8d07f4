"""optbench baseline / check end to end, through the installed ``optbench`` script on the shipped CI suite.

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


def test_broken_user_optimizers_fail_the_shipped_suite(tmp_path):
    (tmp_path / "opt").mkdir()
    adam, sgd = tmp_path / "opt" / "adam.py", tmp_path / "opt" / "sgd.py"
    adam.write_text(ADAM)
    sgd.write_text(SGD)
    opts = "opt/adam.py:MyAdam,opt/sgd.py:MySGD"
    r = optbench("baseline", "--suite", SUITE, "--out", "bl", "--opt", opts, cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert (tmp_path / "bl" / "manifest.json").exists()

    r = optbench("check", "--suite", SUITE, "--against", "bl", "--opt", opts, "--junit", "ok.xml", cwd=tmp_path)
    assert r.returncode == 0, r.stdout + r.stderr  # a re-run of the same code passes (bitwise)
    assert "OK:" in r.stdout
    ok = ET.parse(tmp_path / "ok.xml").getroot()
    assert int(ok.get("failures")) == 0 and int(ok.get("tests")) == len(ok.findall(".//testcase")) > 0

    adam.write_text(ADAM_NO_BIAS_CORRECTION)
    r = optbench("check", "--suite", SUITE, "--against", "bl", "--opt", opts, "--junit", "bad.xml",
                 "--markdown", "report/check.md", cwd=tmp_path)
    assert r.returncode == 1, r.stdout + r.stderr
    assert "REGRESSION" in r.stdout and "opt/adam.py:MyAdam" in r.stdout
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
    r = optbench("check", "--suite", SUITE, "--against", "bl", "--opt", opts, cwd=tmp_path)
    assert r.returncode == 1, r.stdout + r.stderr
    assert "MySGD" in r.stdout and "MyAdam" not in r.stdout.split("tolerances:")[0]

    # the same broken SGD also fails the statistical mode (its defaults catch few-percent changes)
    r = optbench("check", "--suite", SUITE, "--against", "bl", "--opt", opts, "--mode", "statistical",
                 cwd=tmp_path)
    assert r.returncode == 1, r.stdout + r.stderr


def test_shipped_baseline_rerun_passes_and_other_seeds_pass_statistically(tmp_path):
    r = optbench("check", "--suite", SUITE, "--against", BASELINE, "--out", "new", cwd=tmp_path)
    assert r.returncode == 0, r.stdout + r.stderr
    other = SUITE.read_text().replace("seeds = 16", f"seeds = {list(range(100, 116))}")
    assert other != SUITE.read_text()
    (tmp_path / "other.toml").write_text(other)
    r = optbench("check", "new", "--against", BASELINE, cwd=tmp_path)  # two directories
    assert r.returncode == 0, r.stdout + r.stderr
    r = optbench("check", "--suite", "other.toml", "--against", BASELINE, "--out", "other", "--mode",
                 "statistical", cwd=tmp_path)
    assert r.returncode == 0, r.stdout + r.stderr
    r = optbench("check", "other", "--against", BASELINE, cwd=tmp_path)  # exact mode: seeds must match
    assert r.returncode == 2 and "Seeds differ" in r.stderr


def test_missing_configurations_exit_2(tmp_path):
    r = optbench("run", "-p", "rosenbrock", "-o", "adam", "--lr", "0.01", "--steps", "300", "--record-every",
                 "10", "--deterministic", "--out", "partial", "-q", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    manifest = (tmp_path / "partial" / "manifest.json").read_text()
    assert '"deterministic": true' in manifest
    r = optbench("check", "partial", "--against", BASELINE, cwd=tmp_path)
    assert r.returncode == 2
    assert "missing from the new results" in r.stderr and "himmelblau / sgd-momentum" in r.stderr
    r = optbench("check", "nowhere", "--against", BASELINE, cwd=tmp_path)
    assert r.returncode == 2 and "does not exist" in r.stderr
    r = optbench("check", cwd=tmp_path)
    assert r.returncode == 2


@pytest.mark.parametrize("args,message", [
    (["--device", "cuda"], "runs on the CPU"),
    (["--dtype", "float32"], "float64"),
])
def test_deterministic_run_refuses_gpu_and_float32(tmp_path, args, message):
    r = optbench("run", "-p", "rosenbrock", "-o", "adam", "--steps", "5", "--deterministic", *args, "--out", "x",
                 cwd=tmp_path)
    assert r.returncode == 2 and message in r.stderr
