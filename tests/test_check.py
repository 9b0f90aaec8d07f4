"""optbench check: the comparison (pure pandas, on synthetic summaries) and its CI outputs."""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET

import numpy as np
import pandas as pd
import pytest

from optbench.check.compare import (
    ConfigMismatch,
    Tolerances,
    compare,
    environment_differences,
    hparam_changes,
    mann_whitney_p,
)
from optbench.check.output import junit_xml, markdown_summary
from optbench.errors import UsageError


def summary(values: dict[tuple[str, float], list[float]], *, seeds=None, status=None, hparams=None):
    """A summary with one row per (problem, lr, seed): final_loss = best_loss = the value."""
    rows = []
    for (problem, lr), losses in values.items():
        for i, loss in enumerate(losses):
            seed = (seeds or range(len(losses)))[i]
            rows.append({"run_id": f"{problem}-{lr}-{seed}", "problem": problem, "optimizer_label": "adam",
                         "lr": lr, "batch_size": pd.NA, "seed": seed, "steps": 100, "final_loss": loss,
                         "best_loss": loss, "steps_to_target": 50 if loss < 1 else pd.NA,
                         "status": (status or {}).get((problem, seed), "done"),
                         "hparams": hparams or json.dumps({"lr": lr, "eps": 1e-8})})
    df = pd.DataFrame(rows)
    df["batch_size"] = df["batch_size"].astype("Int64")
    df["steps_to_target"] = df["steps_to_target"].astype("Int64")
    return df


BASE = {("rosenbrock", 0.01): [0.5], ("valley", 0.01): [0.2, 0.3, 0.4]}


def test_identical_results_pass_bitwise():
    table = compare(summary(BASE), summary(BASE))
    assert table["passed"].all()
    assert set(table["metric"]) == {"final_loss", "best_loss", "steps_to_target", "diverged"}  # no test_acc
    assert (table["detail"] == "bitwise equal").all()


@pytest.mark.parametrize("factor,direction", [(1.03, "worse"), (0.97, "better"), (1 + 1e-5, "worse")])
def test_exact_mode_fails_small_changes_either_way(factor, direction):
    new = {k: [v * factor for v in vs] for k, vs in BASE.items()}
    table = compare(summary(new), summary(BASE))
    failed = table[~table["passed"]]
    assert set(failed["metric"]) == {"final_loss", "best_loss"}
    assert (failed["direction"] == direction).all()
    assert failed["verdict"].str.startswith("FAIL").all()


def test_exact_mode_tolerates_last_bit_noise_and_honours_rtol():
    new = {k: [v * (1 + 1e-12) for v in vs] for k, vs in BASE.items()}
    assert compare(summary(new), summary(BASE))["passed"].all()
    new = {k: [v * 1.03 for v in vs] for k, vs in BASE.items()}
    assert compare(summary(new), summary(BASE), Tolerances(rtol=0.05))["passed"].all()
    bitwise = Tolerances(rtol=0.0, atol=0.0)
    new = {k: [v * (1 + 1e-12) for v in vs] for k, vs in BASE.items()}
    assert not compare(summary(new), summary(BASE), bitwise)["passed"].all()


def test_worse_only_direction_forgives_improvements():
    better = {k: [v * 0.9 for v in vs] for k, vs in BASE.items()}
    tol = Tolerances(metrics={"final_loss": {"direction": "worse"}, "best_loss": {"direction": "worse"}})
    table = compare(summary(better), summary(BASE), tol)
    assert table["passed"].all()
    assert (table.loc[table["metric"] == "final_loss", "verdict"] == "pass (better)").all()


def test_per_metric_override_and_disable():
    new = {k: [v * 1.03 for v in vs] for k, vs in BASE.items()}
    tol = Tolerances.from_dict({"mode": "exact", "metrics": {"final_loss": {"rtol": 0.05},
                                                             "best_loss": {"enabled": False}}})
    table = compare(summary(new), summary(BASE), tol)
    assert table["passed"].all() and "best_loss" not in set(table["metric"])


def test_divergence_and_steps_to_target_changes_fail():
    new = summary(BASE, status={("valley", 1): "diverged"})
    table = compare(new, summary(BASE)).set_index(["problem", "metric"])
    assert not table.loc[("valley", "diverged"), "passed"]
    slower = {("rosenbrock", 0.01): [1.5], ("valley", 0.01): [0.2, 0.3, 0.4]}  # never reaches the target
    table = compare(summary(slower, ), summary(BASE)).set_index(["problem", "metric"])
    assert not table.loc[("rosenbrock", "steps_to_target"), "passed"]
    assert table.loc[("rosenbrock", "steps_to_target"), "direction"] == "worse"


def test_statistical_mode_other_seeds_pass_and_shift_fails():
    rng = np.random.default_rng(0)
    base = {("noisy", 0.01): list(np.exp(rng.normal(0, 0.3, 16))), ("fixed", 0.01): [0.5] * 16}
    other = {("noisy", 0.01): list(np.exp(rng.normal(0, 0.3, 16))), ("fixed", 0.01): [0.5] * 16}
    stat = Tolerances(mode="statistical")
    new = summary(other, seeds=list(range(100, 116)))
    assert compare(new, summary(base), stat)["passed"].all()
    with pytest.raises(ConfigMismatch, match="Seeds differ"):
        compare(new, summary(base))  # exact mode compares seed by seed
    shifted = {("noisy", 0.01): other[("noisy", 0.01)], ("fixed", 0.01): [0.5 * 1.03] * 16}
    table = compare(summary(shifted), summary(base), stat).set_index(["problem", "metric"])
    assert not table.loc[("fixed", "final_loss"), "passed"]  # no seed noise: the 2% band decides
    assert table.loc[("noisy", "final_loss"), "passed"]
    rank = Tolerances(mode="statistical", test="rank")
    assert compare(new, summary(base), rank)["passed"].all()
    doubled = {("noisy", 0.01): [2 * v for v in other[("noisy", 0.01)]], ("fixed", 0.01): [0.5] * 16}
    table = compare(summary(doubled), summary(base), rank).set_index(["problem", "metric"])
    assert not table.loc[("noisy", "final_loss"), "passed"]


def test_mann_whitney_p():
    assert mann_whitney_p([1, 2, 3], [1, 2, 3]) == pytest.approx(1.0)
    assert mann_whitney_p([1.0] * 5, [1.0] * 5) == 1.0
    assert mann_whitney_p(range(20), range(100, 120)) < 1e-6


def test_missing_configurations_are_named():
    new = {("rosenbrock", 0.01): [0.5], ("beale", 0.1): [1.0]}
    with pytest.raises(ConfigMismatch) as info:
        compare(summary(new), summary(BASE))
    message = str(info.value)
    assert "missing from the new results (1)" in message and "valley / adam lr=0.01 steps=100" in message
    assert "not in the baseline (1)" in message and "beale / adam lr=0.1" in message
    assert isinstance(info.value, UsageError)


def test_bad_tolerances_are_usage_errors():
    with pytest.raises(UsageError, match="mode"):
        Tolerances(mode="fuzzy")
    with pytest.raises(UsageError, match="unknown metric"):
        Tolerances(metrics={"loss": {"rtol": 0.1}})
    with pytest.raises(UsageError, match="unknown key"):
        Tolerances.from_dict({"rtoll": 0.1})
    with pytest.raises(UsageError, match="rtol"):
        Tolerances.from_dict({"metrics": {"final_loss": {"rtol": -1}}})


def test_hparam_and_environment_notes():
    changed = summary(BASE, hparams=json.dumps({"lr": 0.01, "eps": 1e-6}))
    notes = hparam_changes(changed, summary(BASE))
    assert notes and "eps: 1e-08 → 1e-06" in notes[0]
    env = environment_differences({"environment": {"torch": "2.5", "platform": "a"}},
                                  {"environment": {"torch": "2.4", "platform": "a"}})
    assert env == ["torch: baseline 2.4, new 2.5"]


def test_junit_counts_and_markdown():
    new = {k: [v * 1.1 for v in vs] for k, vs in BASE.items()}
    table = compare(summary(new), summary(BASE))
    root = ET.fromstring(junit_xml(table, suite_name="optbench check: ci"))
    cases = root.findall(".//testcase")
    assert int(root.get("tests")) == len(cases) == len(table) == 8
    assert int(root.get("failures")) == len(root.findall(".//failure")) == 4
    text = markdown_summary(table, baseline="b", new="n", tolerances=Tolerances().describe())
    assert text.startswith("## ❌") and "### Regressions" in text and "| valley / adam lr=0.01" in text


def test_optimizer_state_memory_growth_fails_the_check(tmp_path):
    """An optimizer that starts keeping more state (here: an extra parameter copy) fails even when its
    losses are unchanged; a baseline without the measurement does not block the check."""
    import optbench
    from optbench.check.compare import compare
    from optbench.runner import run_sweep
    from optbench.sweep.spec import Sweep

    run_sweep(Sweep([optbench.get_problem("rosenbrock")], [optbench.get_optimizer("adam")], steps=20), tmp_path)
    base = optbench.load_summary(tmp_path)
    assert base["state_bytes_per_param"].tolist() == [16.0]  # Adam: two float64 moments
    grown = base.assign(state_bytes_per_param=24.0)
    verdicts = compare(grown, base)
    row = verdicts[verdicts["metric"] == "state_bytes_per_param"].iloc[0]
    assert not row["passed"] and row["direction"] == "worse"
    assert verdicts[verdicts["metric"] != "state_bytes_per_param"]["passed"].all()
    older = base.drop(columns=["state_bytes_per_param"])
    assert compare(base, older)["passed"].all()


@pytest.mark.parametrize("mode", ["exact", "statistical"])
def test_default_tolerance_absorbs_other_kernels_and_catches_a_float32_update(mode):
    """docs/ci.md: another CPU's kernels moved losses by at most 3.9e-11 relative; an update rounded to
    float32 moves them by ~1.4e-7. The deterministic configuration ("fixed", one value for every seed) is
    where both modes must tell them apart."""
    base = {("fixed", 0.01): [0.5] * 4}
    tol = Tolerances(mode=mode)
    machine = {("fixed", 0.01): [0.5 * (1 + 3.9e-11)] * 4}
    assert compare(summary(machine), summary(base), tol)["passed"].all()
    float32 = {("fixed", 0.01): [0.5 * (1 + 1.4e-7)] * 4}
    failed = compare(summary(float32), summary(base), tol).query("not passed")
    assert set(failed["metric"]) == {"final_loss", "best_loss"}


def test_losses_of_diverged_runs_are_not_compared_but_divergence_is():
    base = summary({("rosenbrock", 0.01): [7e12]}, status={("rosenbrock", 0): "diverged"})
    chaotic = summary({("rosenbrock", 0.01): [2.4e17]}, status={("rosenbrock", 0): "diverged"})
    assert compare(chaotic, base)["passed"].all()  # the blow-up's value depends on the last bits
    assert compare(chaotic, base, Tolerances(mode="statistical"))["passed"].all()
    done = summary({("rosenbrock", 0.01): [7e12]})
    table = compare(done, base).set_index("metric")
    assert not table.loc["diverged", "passed"] and not table.loc["final_loss", "passed"]


def test_statistical_noise_of_values_on_a_grid_is_not_zero():
    """Steps to target are recorded every N steps: more than half the seeds can share one value (MAD 0)
    while the rest vary; another draw of seeds must then not be held to equality."""
    from optbench.check.compare import _median_se

    assert _median_se([100] * 9 + [110, 120, 130, 90, 80, 140, 150]) > 0
    assert _median_se([100] * 16) == 0
