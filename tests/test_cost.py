"""Cost metrics: state bytes per parameter equal the known values, both engines fill them in, and the
summary table carries step times and the overhead relative to SGD."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
import torch

from optbench.analysis.cost import overhead_vs_sgd
from optbench.analysis.summary import aggregate
from optbench.cost import COST_COLUMNS, StepTimer, probe_state_bytes_per_param, state_bytes_per_param
from optbench.engines.batched import run_batched
from optbench.engines.loop import run_loop
from optbench.optimizers import get_optimizer
from optbench.problems import get_problem
from optbench.results import load_summary
from optbench.runner import run_sweep
from optbench.sweep.spec import Sweep


def stepped(spec: str, shape, steps: int = 2, dtype=torch.float64):
    config = get_optimizer(spec)
    param = torch.nn.Parameter(torch.randn(*shape, dtype=dtype))
    opt = config.entry.build([param], config.hyperparams, dtype=dtype)
    for _ in range(steps):
        param.grad = torch.randn_like(param)
        opt.step()
    return opt


@pytest.mark.parametrize("spec, multiple", [
    ("sgd", 0), ("sgd-momentum", 1), ("nag", 1), ("adam", 2), ("adamw", 2), ("adam(amsgrad=True)", 3),
    ("adagrad", 1), ("rmsprop", 1), ("lion", 1), ("adamax", 2),
])
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_state_bytes_known_multiples(spec, multiple, dtype):
    opt = stepped(spec, (7, 3), dtype=dtype)
    assert state_bytes_per_param(opt) == multiple * dtype.itemsize


def test_state_bytes_reach_queues_and_objects_but_not_the_parameters():
    """Tensors in deques and in the attributes of objects kept in the state count, each once (shared, or met
    again through a cycle); a parameter the state points back to and scalar tensors do not."""
    from collections import deque
    from types import SimpleNamespace

    from optbench.cost import state_bytes

    param, shared = torch.zeros(10), torch.zeros(4)
    holder = SimpleNamespace(stats=torch.zeros(3, 3), param=param, again=shared, step=torch.tensor(3.0))
    holder.me = holder
    state = {param: {"queue": deque([torch.zeros(10), shared]), "pre": holder, "m": shared, "lr": 0.1}}
    assert state_bytes(state, exclude=[param]) == 4 * (10 + 4 + 9)
    assert state_bytes(state) == 4 * (10 + 4 + 9 + 10)  # without exclude, the parameter itself counts


@pytest.mark.parametrize("spec, shape, slots", [
    ("adashift(keep_num=3)", (6,), 2 + 3),  # exp_avg, exp_avg_sq and the queue of 3 gradients, once full
    ("scalableshampoo", (6,), 2),  # its momentum and the graft's (held by an object); a vector has no statistics
])
def test_state_held_in_queues_and_objects_is_measured(spec, shape, slots):
    assert state_bytes_per_param(stepped(spec, shape, steps=5)) == slots * 8


def test_adafactor_is_sublinear_on_a_matrix():
    n, m = 64, 32
    factored = stepped("adafactor(betas=(None, 0.999))", (n, m))
    assert state_bytes_per_param(factored) == pytest.approx((n + m) / (n * m) * 8)
    assert state_bytes_per_param(factored) < 0.1 * 8
    with_momentum = stepped("adafactor", (n, m))  # β₁ keeps a full first moment
    assert state_bytes_per_param(with_momentum) == pytest.approx(8 + (n + m) / (n * m) * 8)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_eight_bit_state_is_the_same_bytes_in_every_dtype_on_both_engines(dtype):
    """FlashAdamW keeps its moments in bytes (plus float16 scales) whatever the parameters' dtype: the batched
    engine's declared state equals the loop engine's measurement in float32 as in float64."""
    problem, config = get_problem("rosenbrock(dim=5)"), get_optimizer("flashadamw")
    loop = run_loop(problem, config, 0, 6, dtype=dtype)
    group = run_batched(problem, [config], [0], 6, dtype=dtype)
    expected = (2 * 5 + 2 * 2) / 5  # a byte per moment and parameter, two float16 scales per group of 32
    assert loop.cost["state_bytes_per_param"][0] == group.cost["state_bytes_per_param"][0] == expected


@pytest.mark.parametrize("spec", ["sgd", "sgd-momentum", "adam(amsgrad=True)", "nadam", "adagrad"])
def test_engines_report_the_same_state_bytes(spec):
    problem = get_problem("noisy-quadratic(dim=6)")
    config = get_optimizer(spec)
    loop = run_loop(problem, config, 0, 20, 5)
    group = run_batched(problem, [config, config], [0, 1], 20, 5)
    assert set(loop.cost) == set(COST_COLUMNS) == set(group.cost)
    assert loop.cost["state_bytes_per_param"][0] == group.cost["state_bytes_per_param"][1]
    assert group.cost["state_bytes_per_param"][0] == probe_state_bytes_per_param(config, 6, torch.float64)
    for trace in (loop, group):
        assert trace.cost["step_time_s"][0] > 0
        assert trace.cost["train_step_time_s"][0] >= trace.cost["step_time_s"][0]
        assert math.isnan(trace.cost["peak_memory_bytes"][0])  # CPU does not report it


def test_measure_cost_off_and_timer_medians():
    problem = get_problem("valley")
    assert run_loop(problem, get_optimizer("sgd"), 0, 10, 1, measure_cost=False).cost == {}
    timer = StepTimer(20, "cpu", per_run=4)
    for t in range(20):
        timer.record(t, 0.0, 1.0, 1.0 + (100.0 if t < 5 else 2.0))  # warm-up iterations are left out
    out = timer.results(4, 8.0)
    assert out["step_time_s"].tolist() == [0.5] * 4 and out["train_step_time_s"][0] == 0.75


def test_overhead_vs_sgd():
    summary = pd.DataFrame({
        "problem": ["p", "p", "p", "q"], "batch_size": [np.nan] * 4, "engine": ["loop"] * 4,
        "optimizer": ["sgd", "sgd", "adam", "adam"], "schedule": ["constant"] * 4,
        "train_step_time_s": [1.0, 3.0, 4.0, 1.0]})
    np.testing.assert_allclose(overhead_vs_sgd(summary), [0.5, 1.5, 2.0, np.nan])


def test_cost_columns_in_results_and_table(tmp_path):
    sweep = Sweep([get_problem("valley")], [get_optimizer("sgd"), get_optimizer("adam")], seeds=[0, 1], steps=30,
                  schedules=["constant", "cosine"])
    run_sweep(sweep, tmp_path)
    summary = load_summary(tmp_path)
    for c in COST_COLUMNS:
        assert c in summary
    assert sorted(summary["state_bytes_per_param"].unique()) == [0.0, 16.0]
    assert set(summary["schedule"]) == {"constant", "cosine"}
    table = aggregate(summary).set_index("optimizer_label")
    assert table.loc["sgd", "overhead_vs_sgd"] == 1.0
    assert table.loc["adam+cosine", "overhead_vs_sgd"] > 0
    assert table.loc["adam", "state_bytes_per_param"] == 16.0


@pytest.mark.parametrize("spec", [
    "sgd", "sgd(momentum=0.5)", "sgd-momentum", "nag", "rmsprop", "rmsprop(momentum=0.5)", "rmsprop(centered=True)",
    "adam", "adam(amsgrad=True)", "adamw", "adamw(amsgrad=True)", "adagrad", "adadelta", "adamax", "nadam", "radam",
    "lion", "lars", "lars(momentum=0.0)", "lamb", "newton", "adopt", "schedulefreeadamw", "muon", "prodigy",
    "shampoo", "shampoo(momentum=0.5)", "dadaptadagrad", "dadaptadam", "dadaptadan", "dadaptlion", "dadaptsgd",
    "spsa", "forward-grad", "gravity", "gravity(alpha=0.1, beta=0.5)",
])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_batched_rules_declare_the_state_their_class_keeps(spec, dtype):
    """The batched engine's state bytes come from each rule's declaration; it must equal the real class."""
    from optbench.engines.batched_rules import RULES
    from optbench.optimizers import get_optimizer

    config = get_optimizer(spec)
    declared = RULES[config.entry.batched].slots_per_param(config.hyperparams, 5) * dtype.itemsize
    assert declared == probe_state_bytes_per_param(config, 5, dtype)
