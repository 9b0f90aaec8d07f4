"""--workers N: the same results as one process, written by worker processes."""

import shutil
import subprocess

import pytest


@pytest.mark.slow
def test_workers_match_serial(tmp_path):
    from optbench.results import load_summary

    args = ["run", "-p", "rosenbrock,valley", "-o", "adam,sgd", "--lr", "1e-3,1e-2", "--steps", "50",
            "--engine", "loop", "-q"]
    for name, extra in (("serial", []), ("parallel", ["--workers", "2"])):
        r = subprocess.run([shutil.which("optbench"), *args, *extra, "--out", str(tmp_path / name)],
                           capture_output=True, text=True, timeout=300)
        assert r.returncode == 0, r.stderr
    a = load_summary(tmp_path / "serial").set_index("run_id").sort_index()
    b = load_summary(tmp_path / "parallel").set_index("run_id").sort_index()
    assert list(a.index) == list(b.index) and len(a) == 8
    assert (a["final_loss"] == b["final_loss"]).all()
