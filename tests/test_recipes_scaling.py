"""The linear / square-root learning-rate scaling recipe of the batch-size × lr study (Goyal et al. 2017)."""

from __future__ import annotations

import json
import math

import pytest

from optbench.engines.recipe import Recipe
from optbench.errors import UsageError
from optbench.optimizers import get_optimizer
from optbench.problems import get_problem
from optbench.sweep.spec import Sweep


def _sweep(**kw):
    return Sweep.build([get_problem("noisy-quadratic(dim=4)")], [get_optimizer("sgd")], lrs=[0.01, 0.1],
                 batch_sizes=[4, 16, 64], steps=20, **kw)


@pytest.mark.parametrize("rule, power", [("linear", 1.0), ("sqrt", 0.5)])
def test_lrs_follow_the_rule(rule, power):
    runs = _sweep(lr_scaling=rule, base_batch_size=16).expand()
    assert len(runs) == 6
    for run in runs:
        assert run.recipe.base_batch_size == 16
        base = run.optimizer.given["lr"] / (run.problem.batch_size / 16) ** power
        assert min(abs(base - 0.01), abs(base - 0.1)) < 1e-15
        assert run.optimizer_label == f"sgd+{rule}-scaling(base_batch_size=16)"
        assert run.identity["recipe"] == {"lr_scaling": rule, "base_batch_size": 16}
    lrs = sorted(r.optimizer.lr for r in runs if r.problem.batch_size == 64)
    assert lrs == pytest.approx([0.01 * 4**power, 0.1 * 4**power], rel=1e-15)


def test_default_base_is_the_smallest_batch_and_identity_unchanged_without_scaling():
    scaled = _sweep(lr_scaling="linear").expand()
    assert {r.recipe.base_batch_size for r in scaled} == {4}
    assert sorted({r.optimizer.lr for r in scaled if r.problem.batch_size == 16}) == pytest.approx([0.04, 0.4])
    plain = _sweep().expand()
    for run in plain:
        assert run.recipe == Recipe() and "recipe" not in run.identity and run.optimizer_label == "sgd"
        assert run.recipe.lr_scaling is None and run.recipe.base_batch_size is None
    assert {r.run_id for r in plain}.isdisjoint(r.run_id for r in scaled)
    # the scaled run at the base batch size has the base lr but is its own run (its own label)
    at_base = [r for r in scaled if r.problem.batch_size == 4]
    assert sorted(r.optimizer.lr for r in at_base) == [0.01, 0.1]


@pytest.mark.parametrize("kw, message", [
    (dict(lr_scaling="cubic"), "Unknown --lr-scaling"),
    (dict(base_batch_size=8), "needs --lr-scaling"),
    (dict(lr_scaling="linear", base_batch_size=0), "at least 1"),
])
def test_bad_settings(kw, message):
    with pytest.raises(UsageError, match=message):
        _sweep(**kw).expand()
    with pytest.raises(UsageError, match="batch size"):
        Sweep([get_problem("valley")], [get_optimizer("sgd")], recipe=Recipe(lr_scaling="linear")).expand()


def test_cli_end_to_end(tmp_path):
    out = tmp_path / "r"
    from cli_invoke import invoke

    proc = invoke("run", "-p", "noisy-quadratic(dim=4)", "-o", "sgd", "--lr", "0.01", "--batch-size", "4,16",
                  "--lr-scaling", "linear", "--steps", "30", "--schedule", "warmup-linear(warmup=5)", "--out", out,
                  "--json")
    assert proc.exit_code == 0, proc.stderr
    rows = json.loads(proc.stdout)["summary"]
    assert {(r["batch_size"], r["lr"]) for r in rows} == {(4, 0.01), (16, 0.04)}
    assert all(r["optimizer_label"] == "sgd+warmup-linear(warmup=5)+linear-scaling(base_batch_size=4)" for r in rows)
    sweep = json.loads((out / "manifest.json").read_text())["sweeps"][0]
    assert sweep["lr_scaling"] == "linear" and sweep["base_batch_size"] == 4
    from optbench.results import load_summary

    summary = load_summary(out)
    assert {json.loads(r)["lr_scaling"] for r in summary["recipe"]} == {"linear"}
    assert math.isclose(summary.loc[summary["batch_size"] == 16, "lr"].iloc[0], 0.04)


def test_suite_keys(tmp_path):
    from optbench.suite import load_suite

    path = tmp_path / "s.toml"
    path.write_text('[[sweep]]\nproblems = ["noisy-quadratic(dim=4)"]\noptimizers = ["sgd"]\nlr = [0.01]\n'
                    'batch_size = [4, 8]\nlr_scaling = "sqrt"\nbase_batch_size = 2\n')
    (sweep,) = load_suite(path).sweeps
    assert {r.problem.batch_size: r.optimizer.lr for r in sweep.expand()} == pytest.approx({4: 0.01 * 2**0.5,
                                                                                           8: 0.02})
