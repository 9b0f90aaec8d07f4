"""optbench.analysis is pandas and numpy only: importing it, and computing with it, loads neither matplotlib nor
torch; its helpers agree with the copies they replaced."""

from __future__ import annotations

import math
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest

from optbench.formatting import fmt_change, fmt_g, fmt_int, fmt_num, fmt_value, is_missing

ANALYSIS_USE = """
import sys
import numpy as np, pandas as pd
import optbench.analysis
from optbench.analysis import cost, grids, summary
rows = []
for bs in (4, 16):
    for lr in (0.01, 0.1):
        for seed in (0, 1):
            rows.append(dict(run_id=f"{bs}-{lr}-{seed}", problem=f"noisy-quadratic(batch_size={bs})",
                             family="noisy-quadratic", optimizer="sgd", optimizer_label="sgd", lr=lr,
                             batch_size=bs, seed=seed, status="done", final_loss=lr * bs + seed, best_loss=lr,
                             dist_to_min=1.0, steps_to_target=np.nan, target=1e-3, f_min=0.0, wall_time_s=0.1,
                             final_step=10, hparams="{}"))
runs = pd.DataFrame(rows)
table = summary.aggregate(runs)
found = grids.grids(runs, "final_loss")
assert len(found) == 1 and found[0].best_cell() == (4, 0.01), found
assert grids.rule_comparisons(runs, found) == []
print(",".join(m for m in ("matplotlib", "torch") if m in sys.modules) or "none")
"""


def test_analysis_imports_and_computes_without_matplotlib_or_torch():
    r = subprocess.run([sys.executable, "-c", ANALYSIS_USE], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "none"


def test_rank_orders_the_comparison_table_and_the_best_configurations():
    from optbench.analysis.summary import aggregate, rank
    from optbench.report.data import best_configs

    runs = pd.DataFrame([dict(run_id=f"{o}{lr}", problem="p", optimizer=o, optimizer_label=o, lr=lr, batch_size=None,
                              seed=0, status="diverged" if (o, lr) == ("a", 0.1) else "done",
                              final_loss={("a", 0.1): 0.0, ("a", 0.01): 3.0, ("b", 0.1): 2.0, ("b", 0.01): 1.0}[o, lr],
                              best_loss=0.0, dist_to_min=0.0, steps_to_target=np.nan, target=1e-3, f_min=0.0,
                              wall_time_s=0.0) for o in "ab" for lr in (0.1, 0.01)])
    table = aggregate(runs)
    assert list(zip(table["optimizer_label"], table["lr"])) == [("b", 0.01), ("b", 0.1), ("a", 0.01), ("a", 0.1)]
    assert table.equals(rank(table))  # aggregate's order is rank's
    best = best_configs(table.assign(family="p"))
    assert list(zip(best["optimizer_label"], best["lr"])) == [("b", 0.01), ("a", 0.01)]  # diverged ranks last


def test_last_test_accuracy_is_the_last_recorded_value_per_run():
    from optbench.analysis.summary import last_test_accuracy, with_test_acc

    steps = pd.DataFrame({"run_id": ["r1", "r1", "r1", "r2", "r2"], "step": [20, 0, 10, 0, 10],
                          "test_acc": [np.nan, 0.1, 0.5, 0.2, np.nan]})
    assert last_test_accuracy(steps).to_dict() == {"r1": 0.5, "r2": 0.2}
    assert last_test_accuracy(steps.drop(columns="test_acc")) is None
    summary = pd.DataFrame({"run_id": ["r2", "r1", "r3"]})
    assert with_test_acc(summary, steps)["test_acc"].tolist()[:2] == [0.2, 0.5]


@pytest.mark.parametrize("value, missing", [(None, True), (math.nan, True), (np.float32("nan"), True),
                                            (pd.NA, True), (0.0, False), (np.float64(2.0), False), ("x", False),
                                            (math.inf, False)])
def test_is_missing(value, missing):
    assert is_missing(value) is missing


def test_the_merged_formatters_keep_their_texts():
    assert [fmt_num(v) for v in (None, math.nan, 0, 1234.5678, 1e-5, math.inf)] == \
        ["—", "—", "0", "1235", "1.000e-05", "inf"]
    assert [fmt_g(v) for v in (1 / 3, math.nan, "n/a")] == ["0.333333", "nan", "n/a"]
    assert [fmt_int(v) for v in (3.0, None, math.nan, "x")] == ["3", "—", "—", "—"]
    assert fmt_value(600, "steps_to_target", steps=500) == "never" and fmt_value(0.25, "diverged") == "25%"
    assert [fmt_change(v) for v in (0.0123, -5e-5, math.nan, math.inf, 0)] == ["+1.23%", "-5.0e-05", "—", "+inf", "0"]
