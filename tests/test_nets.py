"""The network track: problem contract, on-device training, evaluation columns, batched == loop, CLI."""

from __future__ import annotations

import json
import logging
import math

import numpy as np
import pytest
import torch

from optbench.data import store
from optbench.data.synthetic import write_dataset
from optbench.engines.network import run_network, run_network_batched
from optbench.engines.recipe import Recipe
from optbench.errors import SpecError, UsageError
from optbench.optimizers import get_optimizer
from optbench.problems import get_problem

SMALL = "mnist-mlp(width=16, depth=2, batch_size=50, train_size=400, test_size=100)"


pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py


@pytest.fixture
def data_dir(tmp_path, monkeypatch):
    root = tmp_path / "data"
    write_dataset("mnist", root / "mnist", n_train=1000, n_test=200)
    monkeypatch.setenv(store.DATA_ENV, str(root))
    return root


def test_problem_contract(data_dir):
    p = get_problem("mnist-mlp")
    assert p.kind == "network" and p.name == "mnist-mlp" and p.label == "mnist-mlp"
    assert p.dim == 784 * 1000 + 1000 + 1000 * 500 + 500 + 500 * 100 + 100 + 100 * 10 + 10  # DeepOBS mnist_mlp
    assert p.has_batch_size and p.batch_size == 128 and p.f_min == 0.0 and p.target == 0.1 and not p.unbounded
    json.dumps(p.config)
    assert p.config["widths"] == (1000, 500, 100) and p.config["data"].startswith("unofficial:")
    assert torch.isnan(p.distance_to_minimum(torch.zeros(3, 0))).all()
    q = get_problem("mnist-mlp(width=512, depth=3)", batch_size=32)
    assert q.config["widths"] == (512, 512, 512) and q.batch_size == 32 and q.label != p.label
    assert p.steps_per_epoch() == math.ceil(1000 / 128)


@pytest.mark.parametrize("spec, message", [
    ("mnist-mlp(widths=(8,), width=4)", "either widths"),
    ("mnist-mlp(bogus=1)", "Unknown key 'bogus'"),
    ("mnist-mlp(batch_size=0)", "batch_size=0"),
    ("mnist-mlp(precision='float16')", "precision"),
    ("cifar10-cnn(channels=(4, 4))", "channels"),
])
def test_bad_specs_are_rejected(data_dir, spec, message):
    with pytest.raises(SpecError, match=message):
        get_problem(spec)


def test_inputs_are_standardised_on_the_device(data_dir):
    data = get_problem(SMALL.replace("train_size=400", "train_size=1000")).device_data("cpu")
    x = data.inputs(data.train_x, torch.float64)
    assert x.shape == (1000, 1, 28, 28) and data.train_x.dtype == torch.uint8 and data.train_y.dtype == torch.int64
    assert abs(float(x.mean())) < 1e-9 and abs(float(x.std(unbiased=False)) - 1) < 1e-9


def test_same_seed_same_numbers(data_dir):
    p, opt = get_problem(SMALL), get_optimizer("sgd-momentum(lr=0.05)")
    a, b, c = (run_network(p, opt, s, 20, 2) for s in (0, 0, 1))
    for key in ("loss", "grad_norm"):
        assert np.array_equal(getattr(a, key), getattr(b, key))
    assert np.array_equal(a.extra["test_loss"], b.extra["test_loss"], equal_nan=True)
    assert not np.allclose(a.loss, c.loss)


def test_learns_a_tiny_dataset_to_high_accuracy(data_dir):
    p = get_problem("mnist-mlp(width=64, depth=1, batch_size=50)")
    trace = run_network(p, get_optimizer("adam(lr=1e-3)"), 0, 3 * p.steps_per_epoch(), 10)
    assert trace.status == ["done"]
    evaluated = ~np.isnan(trace.extra["test_acc"][:, 0])
    assert list(trace.steps[evaluated]) == [0, 20, 40, 60]  # step 0, each epoch, the end
    assert trace.extra["test_acc"][0, 0] < 0.5 and trace.extra["test_acc"][-1, 0] >= 0.95
    epoch_loss = trace.extra["train_loss_avg"][evaluated, 0]
    assert np.isnan(epoch_loss[0]) and epoch_loss[3] < epoch_loss[1] and trace.end_loss[0] < 0.3


def test_divergence_is_detected(data_dir):
    trace = run_network(get_problem(SMALL), get_optimizer("sgd(lr=1e6)"), 0, 200, 10)
    assert trace.status == ["diverged"] and trace.end_step[0] < 200


@pytest.mark.parametrize("spec", ["sgd-momentum", "adam", "rmsprop"])
def test_batched_reproduces_loop_in_float64(data_dir, spec):
    p = get_problem(SMALL.replace(")", ", precision='float64', eval_every=5)"))
    lrs, seeds = [1e-3, 1e-2], [0, 1]
    configs = [(get_optimizer(spec).with_hyperparams(lr=lr), s) for lr in lrs for s in seeds]
    batched = run_network_batched(p, [c for c, _ in configs], [s for _, s in configs], 10, 3)
    assert batched.loss.shape == (len(batched.steps), 4)
    for k, (opt, seed) in enumerate(configs):
        loop = run_network(p, opt, seed, 10, 3)
        assert np.array_equal(loop.steps, batched.steps)
        np.testing.assert_allclose(batched.loss[:, k], loop.loss[:, 0], rtol=1e-10)
        np.testing.assert_allclose(batched.grad_norm[:, k], loop.grad_norm[:, 0], rtol=1e-10)
        np.testing.assert_allclose(batched.extra["test_acc"][:, k], loop.extra["test_acc"][:, 0], rtol=0)
        np.testing.assert_allclose(batched.extra["test_loss"][:, k], loop.extra["test_loss"][:, 0], rtol=1e-10)


@pytest.mark.parametrize("spec, amsgrad", [("adam", False), ("adamw", False), ("adam", True), ("adamw", True)])
def test_fused_batched_update_reproduces_loop_in_float64(data_dir, spec, amsgrad, monkeypatch):
    """Adam and AdamW take torch's fused kernel (one call per configuration, optbench.engines.fused), each
    configuration with its own lr, betas, ε and weight decay, equal to K real torch.optim runs."""
    from optbench.engines import fused

    calls = []
    original = fused.FusedUpdate.step
    monkeypatch.setattr(fused.FusedUpdate, "step", lambda self, grads: calls.append(1) or original(self, grads))
    p = get_problem(SMALL.replace(")", ", precision='float64', eval_every=5)"))
    configs = [(get_optimizer(spec).with_hyperparams(lr=lr, betas=betas, eps=eps, weight_decay=wd, amsgrad=amsgrad), s)
               for lr, betas, eps, wd, s in [(1e-3, (0.9, 0.999), 1e-8, 0.0, 0), (1e-2, (0.8, 0.99), 1e-6, 0.1, 1),
                                             (3e-3, (0.95, 0.9), 1e-3, 0.01, 0)]]
    batched = run_network_batched(p, [c for c, _ in configs], [s for _, s in configs], 10, 3)
    assert len(calls) == 10
    for k, (opt, seed) in enumerate(configs):
        loop = run_network(p, opt, seed, 10, 3)
        np.testing.assert_allclose(batched.loss[:, k], loop.loss[:, 0], rtol=1e-10)
        np.testing.assert_allclose(batched.grad_norm[:, k], loop.grad_norm[:, 0], rtol=1e-10)
        np.testing.assert_allclose(batched.extra["test_loss"][:, k], loop.extra["test_loss"][:, 0], rtol=1e-10)


def test_batched_cnn_matches_loop_and_float32_is_close(tmp_path, monkeypatch):
    write_dataset("cifar10", tmp_path / "d" / "cifar10", n_train=60, n_test=20)
    monkeypatch.setenv(store.DATA_ENV, str(tmp_path / "d"))
    spec = "cifar10-cnn(channels=(4, 4, 8), hidden=(16,), batch_size=16, eval_every=4{})"
    opt = get_optimizer("adam(lr=1e-3)")
    for precision, rtol in ((", precision='float64'", 1e-10), ("", 1e-4)):
        p = get_problem(spec.format(precision))
        assert p.dim == (3 * 25 * 4 + 4) + (4 * 9 * 4 + 4) + (4 * 9 * 8 + 8) + (72 * 16 + 16) + (16 * 10 + 10)
        batched = run_network_batched(p, [opt, opt], [0, 1], 8, 2)
        loop = run_network(p, opt, 1, 8, 2)
        np.testing.assert_allclose(batched.loss[:, 1], loop.loss[:, 0], rtol=rtol)


def test_sweep_with_epochs_and_results_columns(data_dir, tmp_path):
    from optbench.optimizers import get_optimizer as opt
    from optbench.results import load_results, load_summary
    from optbench.runner import run_sweep
    from optbench.sweep.spec import Sweep

    p = get_problem(SMALL)
    sweep = Sweep([p], [opt("sgd"), opt("adam")], lrs=[1e-3, 1e-2], seeds=[0, 1], epochs=2, batch_sizes=[50, 100],
                  device="cpu", engine="batched")
    runs = sweep.expand()
    assert {(r.problem.batch_size, r.steps) for r in runs} == {(50, 16), (100, 8)}
    outcome = run_sweep(sweep, tmp_path / "out")
    assert outcome.engines == {"batched": 16}
    manifest = json.loads((tmp_path / "out" / "manifest.json").read_text())
    assert manifest["sweeps"][-1]["budget"] == {"kind": "epochs", "value": 2}
    steps = load_results(tmp_path / "out")
    assert {"test_loss", "test_acc", "train_loss_avg"} <= set(steps.columns)
    final = steps[steps.step == steps.groupby("run_id").step.transform("max")]
    assert len(final) == 16 and final.test_acc.notna().all()
    summary = load_summary(tmp_path / "out")
    assert (summary.status == "done").all() and summary.dist_to_min.isna().all()
    loop = run_sweep(Sweep([p], [opt("adam")], lrs=[1e-2], seeds=[1], epochs=2, batch_sizes=[50], engine="loop",
                           device="cpu"), tmp_path / "loop")
    assert loop.engines == {"loop": 1}
    auto = run_sweep(Sweep([p], [opt("sgd-momentum")], seeds=[0, 1], steps=2, device="cpu"), tmp_path / "auto")
    assert auto.engines == {"loop": 2}  # on a CPU, auto batches networks only where it pays: fused Adam/AdamW
    fused = run_sweep(Sweep([p], [opt("adam")], seeds=[0, 1], steps=2, device="cpu"), tmp_path / "fused")
    assert fused.engines == {"batched": 2}
    a = load_results(tmp_path / "loop")
    b = steps[(steps.optimizer == "adam") & (steps.lr == 1e-2) & (steps.seed == 1) & (steps.batch_size == 50)]
    np.testing.assert_allclose(a.loss.to_numpy(), b.loss.to_numpy(), rtol=1e-4)


def test_epochs_are_a_usage_error_for_analytic_problems():
    from optbench.sweep.spec import Sweep

    with pytest.raises(UsageError, match="--epochs applies to network problems"):
        Sweep([get_problem("rosenbrock")], [get_optimizer("sgd")], epochs=2).expand()


def test_unofficial_data_warns_once(tmp_path, monkeypatch, caplog):
    write_dataset("mnist", tmp_path / "w" / "mnist", n_train=20, n_test=5)
    monkeypatch.setenv(store.DATA_ENV, str(tmp_path / "w"))
    with caplog.at_level(logging.WARNING, logger="optbench.data"):
        get_problem("mnist-mlp")
        get_problem("mnist-mlp(width=8)")
    warnings = [r for r in caplog.records if "not comparable" in r.getMessage()]
    assert len(warnings) == 1 and "'mnist'" in warnings[0].getMessage()


def test_cli_run_on_a_network(data_dir, tmp_path, caplog):
    out = tmp_path / "r"
    from cli_invoke import invoke

    r = invoke("run", "-p", SMALL, "-o", "adam", "--epochs", "1", "--out", str(out), "--json",
               env={store.DATA_ENV: str(data_dir)})
    assert r.exit_code == 0, r.stderr
    # in-process the warning goes to pytest's log capture (a real process prints it on stderr: logging's last resort)
    assert any("not comparable" in rec.getMessage() for rec in caplog.records) and "Traceback" not in r.stderr
    assert json.loads(r.stdout)["runs"] == 1
    r = invoke("run", "-p", "rosenbrock", "-o", "adam", "--epochs", "1", "--out", str(out))
    assert r.exit_code == 2 and "network problems" in r.stderr


def test_noise_scale_probe_records_estimates_without_changing_the_trajectory(data_dir):
    p = get_problem(SMALL)
    opt = get_optimizer("adam(lr=0.01)")
    plain = run_network(p, opt, 3, 24, 8)
    probed = run_network(p, opt, 3, 24, 8, recipe=Recipe(noise_scale_every=8))
    assert plain.steps.tolist() == probed.steps.tolist()  # 8, 16, 24 are on the record grid already
    for name in ("loss", "grad_norm", "end_loss", "end_grad_norm", "end_step"):
        assert np.array_equal(getattr(plain, name), getattr(probed, name)), name  # bitwise
    for name in ("test_loss", "test_acc", "train_loss_avg"):
        assert np.array_equal(plain.extra[name], probed.extra[name], equal_nan=True), name
    ns = probed.extra["noise_scale"][:, 0]
    at = {int(s) for s in probed.steps[np.isfinite(ns)]}
    assert at == {0, 8, 16, 24}  # single estimates are noisy (stderr alongside), so only finite
    assert np.isfinite(probed.extra["noise_scale_stderr"][:, 0][np.isfinite(ns)]).all()
    assert "noise_scale" not in plain.extra
    # steps off the record grid join it (recorded rows only; the losses at common steps are the same)
    odd = run_network(p, opt, 3, 24, 8, recipe=Recipe(noise_scale_every=5))
    assert {0, 5, 10, 15, 20} <= set(odd.steps.tolist())
    common = np.isin(odd.steps, plain.steps)
    assert np.array_equal(odd.loss[common], plain.loss)


def test_noise_scale_in_results(data_dir, tmp_path):
    from optbench.results import load_results, load_summary
    from optbench.runner import run_sweep
    from optbench.sweep.spec import Sweep

    p = get_problem(SMALL)
    sweep = Sweep([p], [get_optimizer("sgd(lr=0.1)")], steps=16, device="cpu", recipe=Recipe(noise_scale_every=8))
    run_sweep(sweep, tmp_path / "r")
    steps, summary = load_results(tmp_path / "r"), load_summary(tmp_path / "r")
    rows = steps.dropna(subset=["noise_scale"])
    assert rows["step"].tolist() == [0, 8, 16] and (rows["noise_scale_stderr"] > 0).all()
    assert summary["noise_scale"].iloc[0] == rows["noise_scale"].iloc[-1]  # the last estimate
    assert summary["optimizer_label"].iloc[0] == "sgd+noise-scale(every=8)"
    assert json.loads(summary["recipe"].iloc[0]) == {"noise_scale_every": 8}
    plain = Sweep([p], [get_optimizer("sgd(lr=0.1)")], steps=16, device="cpu").expand()[0]
    assert "recipe" not in plain.identity and plain.optimizer_label == "sgd"
    with pytest.raises(UsageError, match="network problems only"):
        Sweep([get_problem("noisy-quadratic")], [get_optimizer("sgd")], recipe=Recipe(noise_scale_every=8)).expand()
