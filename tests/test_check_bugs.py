"""The regression check against subtle optimizer bugs (tests/check_bugs.py), through the Python API.

A correct user optimizer is baselined on the shipped CI suite; the unchanged code must pass (also on two
threads), and each bugged version under the same label must fail, in exact and in statistical mode.
The fast test uses the suite's first sweep (deterministic) and two representative bugs: the smallest
change (an update rounded to float32) and a bug that makes the ``amsgrad=True`` branch inert (the check
still runs the baseline's variant); ``-m slow`` runs the whole bug matrix on the whole suite. docs/ci.md
lists the matrix's results.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from check_bugs import BUGS, CLASSES, SOURCES, bugged_source

ROOT = Path(__file__).resolve().parents[1]
SUITE = ROOT / "problems" / "ci.toml"


def _run(directory: Path, file: str, source: str, out: str, monkeypatch, *, first_sweep_only: bool,
         recorded=None, threads: int = 1):
    """Run the CI suite on ``opt/FILE:Class`` (written from ``source``) in ``directory``; returns
    (summary of this suite's runs, {label: variant specs})."""
    import torch

    import optbench.optimizers.user as user
    from optbench.check.baseline import add_branch_variants, run_suite_sweeps, suite_sweeps
    from optbench.results import load_summary

    (directory / "opt").mkdir(parents=True, exist_ok=True)
    (directory / "opt" / file).write_text(source)
    monkeypatch.chdir(directory)
    monkeypatch.setattr(user, "_CACHE", {})  # another directory's file under the same label
    suite, sweeps = suite_sweeps(SUITE, f"opt/{file}:{CLASSES[file]}")
    if first_sweep_only:
        sweeps = sweeps[:1]
    variants = add_branch_variants(suite, sweeps, recorded)
    torch.set_num_threads(threads)
    try:
        run_ids = run_suite_sweeps(sweeps, directory / out, "test")
    finally:
        torch.set_num_threads(1)
    summary = load_summary(directory / out)
    return summary[summary["run_id"].astype(str).isin(run_ids)].reset_index(drop=True), variants


def _failures(new, base, mode: str) -> int:
    from optbench.check.compare import Tolerances, compare, regressions

    return len(regressions(compare(new, base, Tolerances(mode=mode))))


def _baseline(tmp_path, file, monkeypatch, first_sweep_only):
    return _run(tmp_path / "base", file, SOURCES[file], "bl", monkeypatch, first_sweep_only=first_sweep_only)


def test_every_bug_replacement_applies():
    for bug in BUGS:
        assert bugged_source(bug) != SOURCES[bug[1]]
    assert len(BUGS) >= 20


FAST_BUGS = ["adam: update computed in float32", "adam: AMSGrad ignored"]


def test_representative_bugs_fail_and_unchanged_code_passes(tmp_path, monkeypatch):
    base, variants = _baseline(tmp_path, "adam.py", monkeypatch, True)
    assert {"opt/adam.py:MyAdam(amsgrad=True)", "opt/adam.py:MyAdam(weight_decay=0.1)",
            "opt/adam.py:MyAdam(eps=0.001)", "opt/adam.py:MyAdam(maximize=True)"} <= set(
        variants["opt/adam.py:MyAdam"])
    same, _ = _run(tmp_path / "same", "adam.py", SOURCES["adam.py"], "new", monkeypatch, first_sweep_only=True,
                   recorded=variants, threads=2)
    assert _failures(same, base, "exact") == 0 and _failures(same, base, "statistical") == 0
    for bug in [b for b in BUGS if b[0] in FAST_BUGS]:
        new, _ = _run(tmp_path / f"bug{BUGS.index(bug)}", "adam.py", bugged_source(bug), "new", monkeypatch,
                      first_sweep_only=True, recorded=variants)
        assert _failures(new, base, "exact") > 0, bug[0]
        assert _failures(new, base, "statistical") > 0, bug[0]


@pytest.mark.slow
@pytest.mark.parametrize("file", sorted(SOURCES))
def test_every_bug_fails_the_shipped_suite_in_both_modes(tmp_path, monkeypatch, file):
    base, variants = _baseline(tmp_path, file, monkeypatch, False)
    for threads in (1, 2):
        same, _ = _run(tmp_path / f"same{threads}", file, SOURCES[file], "new", monkeypatch,
                       first_sweep_only=False, recorded=variants, threads=threads)
        assert _failures(same, base, "exact") == 0 and _failures(same, base, "statistical") == 0
    missed = []
    for i, bug in enumerate(b for b in BUGS if b[1] == file):
        new, _ = _run(tmp_path / f"bug{i}", file, bugged_source(bug), "new", monkeypatch, first_sweep_only=False,
                      recorded=variants)
        exact, statistical = _failures(new, base, "exact"), _failures(new, base, "statistical")
        print(f"{bug[0]}: exact {exact} failed checks, statistical {statistical}")
        if not exact or not statistical:
            missed.append((bug[0], exact, statistical))
    assert not missed
