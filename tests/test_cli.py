"""The CLI: one end-to-end test per command here through a real subprocess of the installed ``optbench`` script
(run, show, list; the others beside their features), the rest in-process (tests/cli_invoke.py) or on the Python
API where they are about numbers."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from cli_invoke import invoke

import optbench

OPTBENCH = shutil.which("optbench") or str(Path(sys.executable).parent / "optbench")


def cli(*args: str, cwd: Path | None = None, timeout: float = 120) -> subprocess.CompletedProcess:
    env = {**os.environ, "COLUMNS": "160"}
    return subprocess.run([OPTBENCH, *args], capture_output=True, text=True, cwd=cwd, timeout=timeout, env=env)


def test_main_job_prints_comparison_and_writes_results(tmp_path):
    out = tmp_path / "res"
    r = cli("run", "--problem", "saddle", "--opt", "adam,sgd-momentum", "--out", str(out))
    assert r.returncode == 0, r.stderr
    assert "saddle" in r.stdout and "adam" in r.stdout and "sgd-momentum" in r.stdout
    assert "escaped" in r.stdout  # momentum leaves the saddle within the default budget
    assert (out / "manifest.json").exists()
    import optbench

    df = optbench.load_results(out)
    assert {"run_id", "problem", "optimizer", "lr", "seed", "step", "loss", "status", "x0", "x1"} <= set(df.columns)
    assert df["step"].min() == 0
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["environment"]["torch"]
    assert manifest["sweeps"][0]["command"].startswith("optbench run")


def test_json_summary_and_resume(tmp_path):
    out = tmp_path / "res"
    args = ["run", "-p", "rosenbrock", "-o", "adam,nag", "--lr", "1e-3,1e-2", "--seeds", "2", "--steps", "50",
            "--out", str(out), "--json"]
    first = invoke(*args)
    assert first.exit_code == 0, first.stderr
    data = json.loads(first.stdout)
    assert data["runs"] == 8 and data["skipped"] == 0
    labels = {row["optimizer_label"] for row in data["summary"]}
    assert labels == {"adam", "nag"}
    again = json.loads(invoke(*args).stdout)
    assert again["skipped"] == 8
    assert again["summary"] == data["summary"]


def test_quiet_prints_nothing(tmp_path):
    r = invoke("run", "-p", "valley", "-o", "sgd", "--steps", "10", "-q", "--out", str(tmp_path / "r"))
    assert r.exit_code == 0 and r.stdout == "" and r.stderr == ""


def test_show_and_csv_export(tmp_path):
    out = tmp_path / "res"
    optbench.run("beale", "adam", steps=20, out=out)
    csv = tmp_path / "steps.csv"
    r = cli("show", str(out), "--csv", str(csv))
    assert r.returncode == 0, r.stderr
    assert "beale" in r.stdout
    assert csv.read_text().splitlines()[0].startswith("run_id,")
    assert len(csv.read_text().splitlines()) == 22  # header + steps 0..20


def test_list_json():
    r = cli("list", "optimizers", "--json")
    assert r.returncode == 0
    names = {e["name"] for e in json.loads(r.stdout)}
    assert {"sgd", "sgd-momentum", "nag", "adam", "lbfgs", "lion", "newton", "spsa", "forward-grad"} <= names
    r = invoke("list", "problems", "--json")
    names = {e["name"] for e in json.loads(r.stdout)}
    assert {"rosenbrock", "saddle", "monkey-saddle", "valley", "noisy-quadratic"} <= names


def test_list_optimizers_states_deviations_from_the_papers():
    from optbench.optimizers import OPTIMIZERS

    rows = json.loads(invoke("list", "optimizers", "--json").stdout)
    assert {e["name"]: e["deviations"] for e in rows} == {n: e.deviations for n, e in OPTIMIZERS.items()}
    assert all(e["deviations"].strip() for e in rows)
    r = invoke("list", "optimizers", env={"COLUMNS": "160"})
    assert r.exit_code == 0 and "differs from the paper" in r.stdout
    words = set(r.stdout.replace("│", " ").split())  # cells wrap: check words of the deviations column
    assert {"lamb-paper.", "sm3-paper", "adafactor-paper.", "maximum", "Zeiler's"} <= words


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["run", "-p", "saddle", "-o", "adamm"], "Did you mean 'adam'"),
        (["run", "-p", "sadle", "-o", "adam"], "Did you mean 'saddle'"),
        (["run", "-p", "saddle", "-o", "adam(lr=-1)"], "lr=-1"),
        (["run", "-p", "saddle", "-o", "sgd-momentum(momentum=1.5)"], "momentum=1.5"),
        (["run", "-p", "saddle", "-o", "adam(betaz=(0.9, 0.99))"], "Did you mean 'betas'"),
        (["run", "-p", "saddle", "-o", "adam(lr='fast')"], "wrong type"),
        (["run", "-p", "rosenbrock(start=(1, 2, 3))", "-o", "adam"], "dimension 2"),
        (["run", "-p", "rosenbrock", "-o", "adam", "--batch-size", "32"], "--batch-size"),
        (["run", "-p", "saddle", "-o", "adam", "--engine", "fast"], "valid engines"),
        (["run", "-p", "saddle", "-o", "adam", "--lr", "abc"], "--lr"),
        (["run", "-p", "saddle", "-o", "adam(lr=1e-3)", "--lr", "1e-2"], "given twice"),
        (["run", "-p", "saddle", "-o", "alig", "--engine", "batched"], "batched engine does not support"),
        (["run", "-p", "saddle", "-o", "lbfgs(line_search_fn='strong_wolfe')", "--engine", "batched"],
         "without a line search"),  # a setting its rule refuses (Rule.refuses)
        (["run", "-p", "saddle", "-o", "adam(lr=__import__('os'))"], "not a literal"),
        (["run", "-p", "saddle", "-o", "missing_file.py:Opt"], "does not exist"),
        (["show", "/nonexistent/results"], "does not exist"),
        (["list", "optimisers"], "Did you mean 'optimizers'"),
    ],
)
def test_usage_errors_exit_2_with_one_clear_message(args, needle, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    r = invoke(*args)
    assert r.exit_code == 2, (r.stdout, r.stderr)
    assert needle in r.stderr
    assert "Traceback" not in r.stderr


def test_cuda_request_without_cuda_is_a_usage_error(tmp_path):
    import torch

    if torch.cuda.is_available():
        pytest.skip("a CUDA device is present")
    r = invoke("run", "-p", "saddle", "-o", "adam", "--device", "cuda", "--out", tmp_path / "r")
    assert r.exit_code == 2 and "no CUDA device" in r.stderr


def test_user_optimizer_error_shows_user_traceback(tmp_path):
    bad = tmp_path / "bad_opt.py"
    bad.write_text("import torch\nraise RuntimeError('boom in user code')\n")
    r = invoke("run", "-p", "saddle", "-o", f"{bad}:Opt", "--steps", "5", "--out", tmp_path / "r")
    assert r.exit_code == 2
    assert "boom in user code" in r.stderr and "bad_opt.py" in r.stderr


def test_every_command_has_help():
    r = invoke("--help")
    assert r.exit_code == 0
    for command in ("run", "list", "show", "report", "tune", "check", "baseline", "data"):
        h = invoke(command, "--help")
        assert h.exit_code == 0 and "Usage" in h.stdout


def test_an_output_directory_that_cannot_be_created_is_a_usage_error(tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    bad = str(blocker / "out")
    for args in (["run", "-p", "rosenbrock", "-o", "adam", "--steps", "5"],
                 ["tune", "-p", "rosenbrock", "-o", "adam", "--trials", "3", "--steps", "5"]):
        result = invoke(*args, "--out", bad)
        assert result.exit_code == 2, result.stderr
        assert "cannot create this directory" in result.stdout + result.stderr
        assert "Traceback" not in result.stdout + result.stderr
