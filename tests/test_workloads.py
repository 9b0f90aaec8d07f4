"""The modern workloads: every network problem trains, the airbench-style ResNet (BatchNorm, on-device
augmentation), the byte-level transformer LM, dropout= and no_decay=, and the engine capabilities for them."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch

from optbench.data import store
from optbench.data.fetch import import_dataset
from optbench.data.synthetic import write_dataset
from optbench.engines.capabilities import batched_unsupported_reason, choose_engine
from optbench.engines.network import Augmentation, run_network, run_network_batched
from optbench.engines.recipe import Recipe
from optbench.errors import DataError, SpecError, UsageError
from optbench.optimizers import get_optimizer
from optbench.problems import get_problem, list_problems

REAL_TEXT = "/usr/share/common-licenses/GPL-3"
# the smallest useful size of every network problem: the contract below trains each one
TINY = {
    "mnist-mlp": "mnist-mlp(width=32, depth=1, batch_size=50)",
    "fashion-mnist-mlp": "fashion-mnist-mlp(width=32, depth=1, batch_size=50)",
    "cifar10-cnn": "cifar10-cnn(channels=(8, 8, 16), hidden=(32,), batch_size=50)",
    "cifar100-cnn": "cifar100-cnn(channels=(8, 8, 16), hidden=(32,), batch_size=50)",
    "cifar10-resnet": "cifar10-resnet(stem=8, widths=(8, 16, 16), batch_size=50, augment=0)",
    "cifar100-resnet": "cifar100-resnet(stem=8, widths=(8, 16, 16), batch_size=50, augment=0)",
    "text-lm": "text-lm(corpus='text', block_size=32, n_layer=1, n_head=2, n_embd=32, batch_size=32)",
}


pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py


@pytest.fixture
def data_dir(tmp_path, monkeypatch):
    root = tmp_path / "data"
    for name, n_train, noise in (("mnist", 400, 40), ("fashion-mnist", 400, 40), ("cifar10", 400, 40),
                                 ("cifar100", 500, 10)):  # 100 classes from 500 examples: less pixel noise
        write_dataset(name, root / name, n_train=n_train, n_test=100, noise=noise)
    import_dataset("text", REAL_TEXT, root=root)
    monkeypatch.setenv(store.DATA_ENV, str(root))
    return root


def _evaluated(trace, column="test_acc"):
    values = trace.extra[column][:, 0]
    return values[~np.isnan(values)]


def test_every_network_problem_has_a_tiny_size():
    assert set(TINY) == {e.name for e in list_problems() if e.kind == "network"}


@pytest.mark.parametrize("name", sorted(TINY))
def test_every_network_problem_trains(data_dir, name):
    p = get_problem(TINY[name])
    epochs = 4
    trace = run_network(p, get_optimizer("adam(lr=3e-3)"), 0, epochs * p.steps_per_epoch(), 5)
    assert trace.status == ["done"]
    loss, acc = _evaluated(trace, "test_loss"), _evaluated(trace)
    assert len(loss) == epochs + 1
    assert loss[-1] < 0.95 * loss[0], loss  # validation loss falls
    assert acc[-1] > acc[0] + 0.03, acc  # accuracy rises
    again = run_network(p, get_optimizer("adam(lr=3e-3)"), 0, 2 * p.steps_per_epoch(), 5)
    np.testing.assert_array_equal(again.loss[: len(again.steps)], trace.loss[: len(again.steps)])


def test_resnet_architecture_target_and_features(data_dir):
    p = get_problem("cifar10-resnet")
    assert p.eval_target is not None and (p.eval_target.column, p.eval_target.value) == ("test_acc", 0.94)
    assert "airbench94" in str(p.eval_target) and p.describe()["eval_target"] == str(p.eval_target)
    assert get_problem("cifar100-resnet").eval_target.column == "test_acc"
    assert get_problem("cifar10-resnet(widths=(8, 8, 8))").eval_target is None  # the target is the default size's
    assert p.features == {"batchnorm-buffers", "augmentation"} and p.channels_last and p.augment == 2
    model = p.make_model(0, "cpu", torch.float32)
    bn = [m for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    assert len(bn) == 7 and all(bool((m.weight == 1).all()) and not m.bias.any() for m in bn)
    with pytest.raises(SpecError, match="groups"):
        get_problem("cifar10-resnet(widths=(8, 8, 8, 8, 8, 8))")


@pytest.mark.parametrize("spec", [TINY["cifar10-resnet"], "mnist-mlp(width=8, dropout=0.1)",
                                  "mnist-mlp(width=8, no_decay=True)", TINY["cifar10-resnet"].replace("=0", "=2")])
def test_batched_engine_refuses_model_features_it_cannot_run(data_dir, spec):
    p, opt = get_problem(spec), get_optimizer("adam")
    assert p.features and batched_unsupported_reason(p, opt) is not None
    assert choose_engine("auto", p, opt, device="cuda") == "loop"
    with pytest.raises(UsageError, match="does not run models with"):
        choose_engine("batched", p, opt)
    with pytest.raises(UsageError, match="batched network engine does not support"):
        run_network_batched(p, [opt], [0], 2)


def test_batchnorm_running_statistics_move_once_per_step_and_evaluation_uses_them(data_dir):
    p = get_problem(TINY["cifar10-resnet"].replace(", augment=0", ""))
    data = p.device_data("cpu")
    model = p.make_model(0, "cpu", torch.float32)
    stem_bn = model[0][1]
    x = data.inputs(data.train_x[:50], torch.float32)
    model.train()
    model(x)
    assert int(stem_bn.num_batches_tracked) == 1 and float(stem_bn.running_mean.abs().sum()) > 0
    # a closure-calling optimizer evaluates the loss several times per step; statistics still move once per step
    trace = run_network(p, get_optimizer("lbfgs(lr=0.1)"), 0, 3, 1)
    assert trace.status == ["done"]
    model.eval()
    a, b = model(x[:10]), model(x[:10].flip(0)).flip(0)
    torch.testing.assert_close(a, b)  # eval mode: per-example outputs, no batch statistics


def test_augmentation_is_crop_and_flip_of_the_reflect_padded_image_and_seeded():
    x = torch.arange(2 * 3 * 6 * 6, dtype=torch.float32).view(2, 3, 6, 6)
    aug = Augmentation(seed=5, n=2, pad=2, per_epoch=1, device="cpu")
    out = aug(0, torch.arange(2), x)
    padded = torch.nn.functional.pad(x, (2,) * 4, mode="reflect")
    for i in range(2):
        dy, dx = aug.offsets[i].tolist()
        crop = padded[i, :, dy: dy + 6, dx: dx + 6]
        torch.testing.assert_close(out[i], crop.flip(-1) if aug.flips[i] else crop, rtol=0, atol=0)
    same = Augmentation(seed=5, n=2, pad=2, per_epoch=1, device="cpu")
    torch.testing.assert_close(same(0, torch.arange(2), x), out, rtol=0, atol=0)
    aug(1, torch.arange(2), x)  # a new epoch draws new offsets
    assert Augmentation(seed=5, n=2, pad=0, per_epoch=1, device="cpu")(0, torch.arange(2), x).shape == x.shape


def test_augmented_resnet_is_reproducible_and_differs_from_unaugmented(data_dir):
    spec = TINY["cifar10-resnet"]
    opt = get_optimizer("sgd-momentum(lr=0.02)")
    plain = run_network(get_problem(spec), opt, 0, 6, 1)
    augmented = [run_network(get_problem(spec.replace("augment=0", "augment=2")), opt, 0, 6, 1) for _ in range(2)]
    np.testing.assert_array_equal(augmented[0].loss, augmented[1].loss)
    assert plain.loss[0, 0] != augmented[0].loss[0, 0]


def test_dropout_and_no_decay_are_in_identity_and_label_only_when_set(data_dir):
    from optbench.sweep.spec import Sweep

    def run(spec):
        return Sweep([get_problem(spec)], [get_optimizer("adamw")], steps=2, device="cpu").expand()[0]

    base = run("mnist-mlp(width=8)")
    assert "dropout" not in base.identity["problem_config"] and "no_decay" not in base.identity["problem_config"]
    assert base.problem.label == "mnist-mlp(width=8)"
    assert run("mnist-mlp(width=8, dropout=0.0, no_decay=False)").problem.config == base.problem.config
    dropped, exempt = run("mnist-mlp(width=8, dropout=0.25)"), run("mnist-mlp(width=8, no_decay=True)")
    assert dropped.identity["problem_config"]["dropout"] == 0.25 and "dropout=0.25" in dropped.problem.label
    assert exempt.identity["problem_config"]["no_decay"] == ("bias", "norm") and "no_decay" in exempt.problem.label
    assert len({base.run_id, dropped.run_id, exempt.run_id}) == 3
    with pytest.raises(SpecError, match="no_decay"):
        get_problem("mnist-mlp(no_decay=('weights',))")
    with pytest.raises(SpecError, match="dropout"):
        get_problem("mnist-mlp(dropout=1.0)")


def test_no_decay_groups_exempt_biases_and_norm_parameters(data_dir):
    p = get_problem(TINY["cifar10-resnet"][:-1] + ", no_decay=True)")
    model = p.make_model(0, "cpu", torch.float32)
    decay, exempt = p.param_groups(model, weight_decay=True)
    names = {id(t): n for n, t in model.named_parameters()}
    assert exempt["weight_decay"] == 0.0 and "weight_decay" not in decay
    assert {names[id(t)] for t in exempt["params"]} == {n for n, t in model.named_parameters() if t.ndim == 1}
    assert all(t.ndim == 4 or t.ndim == 2 for t in decay["params"])
    assert p.param_groups(model, weight_decay=False) == list(model.parameters())
    lm = get_problem("text-lm(corpus='text', block_size=8, n_layer=1, n_head=1, n_embd=8, no_decay=('embedding',))")
    model = lm.make_model(0, "cpu", torch.float32)
    _, exempt = lm.param_groups(model, weight_decay=True)
    assert [t.shape for t in exempt["params"]] == [(256, 8), (8, 8)]  # token (tied with the head) and position


def test_no_decay_changes_a_decayed_run_and_nothing_else(data_dir):
    spec = "mnist-mlp(width=16, depth=1, batch_size=50{})"
    decayed = get_optimizer("adamw(lr=1e-2, weight_decay=0.5)")
    a = run_network(get_problem(spec.format("")), decayed, 0, 8, 1)
    b = run_network(get_problem(spec.format(", no_decay=True")), decayed, 0, 8, 1)
    assert not np.array_equal(a.loss, b.loss)
    plain = get_optimizer("adamw(lr=1e-2, weight_decay=0.0)")
    c = run_network(get_problem(spec.format("")), plain, 0, 8, 1)
    d = run_network(get_problem(spec.format(", no_decay=True")), plain, 0, 8, 1)
    np.testing.assert_array_equal(c.loss, d.loss)


def test_dropout_masks_are_seeded_per_step_and_leave_the_global_rng_alone(data_dir):
    p = get_problem("mnist-mlp(width=32, depth=2, batch_size=50, dropout=0.5)")
    opt = get_optimizer("sgd(lr=0.05)")
    torch.manual_seed(123)
    before = torch.random.get_rng_state()
    a = run_network(p, opt, 0, 10, 1)
    assert torch.equal(torch.random.get_rng_state(), before)
    b = run_network(p, opt, 0, 10, 1)
    np.testing.assert_array_equal(a.loss, b.loss)
    no_dropout = run_network(get_problem("mnist-mlp(width=32, depth=2, batch_size=50)"), opt, 0, 10, 1)
    assert a.loss[0, 0] != no_dropout.loss[0, 0]  # masks are active in training
    np.testing.assert_array_equal(a.extra["test_loss"][0], no_dropout.extra["test_loss"][0])  # eval mode: none
    # a closure-calling optimizer sees one sampled function per step: same masks in every closure call
    trace = run_network(p, get_optimizer("lbfgs(lr=0.5)"), 0, 4, 1)
    assert trace.status == ["done"] and np.isfinite(trace.loss).all()
    with pytest.raises(UsageError, match="noise-scale"):
        run_network(p, opt, 0, 4, 1, recipe=Recipe(noise_scale_every=2))


def test_language_model_on_real_text_learns_and_reports_bits_per_byte(data_dir):
    p = get_problem(TINY["text-lm"])
    assert p.dim == 256 * 32 + 32 * 32 + (2 * 32 + 32 * 96 + 96 + 32 * 32 + 32 + 2 * 32 + 32 * 128 + 128
                                          + 128 * 32 + 32) + 2 * 32  # tied head: no extra matrix
    data = p.device_data("cpu")
    raw = Path(REAL_TEXT).read_bytes()
    split = len(raw) - int(len(raw) * store.TEXT_VALIDATION)
    assert data.train_x.shape == ((split - 1) // 32, 32) and bytes(data.train_x[1].tolist()) == raw[32:64]
    assert bytes(data.train_y[0].tolist()) == raw[1:33] and data.test_x[0, 0] == raw[split]
    trace = run_network(p, get_optimizer("adam(lr=3e-3)"), 0, 2 * p.steps_per_epoch(), 10)
    loss, bpb = _evaluated(trace, "test_loss"), _evaluated(trace, "test_bpb")
    assert abs(loss[0] - math.log(256)) < 0.1  # an untrained model: uniform over bytes
    assert loss[-1] < 3.6 and bpb[-1] < 5.2
    np.testing.assert_allclose(bpb, loss / math.log(2), rtol=1e-12)
    assert p.eval_target is None
    assert get_problem("text-lm(corpus='text', dropout=0.2)").features == {"dropout"}


def test_language_model_batched_reproduces_loop(data_dir):
    p = get_problem("text-lm(corpus='text', block_size=16, n_layer=1, n_head=2, n_embd=16, batch_size=8, "
                    "train_size=40, test_size=10, precision='float64')")
    opt = get_optimizer("adam(lr=1e-2)")
    assert batched_unsupported_reason(p, opt) is None
    batched = run_network_batched(p, [opt, opt], [0, 1], 6, 2)
    loop = run_network(p, opt, 1, 6, 2)
    np.testing.assert_allclose(batched.loss[:, 1], loop.loss[:, 0], rtol=1e-10)
    np.testing.assert_allclose(batched.extra["test_bpb"][:, 1], loop.extra["test_bpb"][:, 0], rtol=1e-10)


def test_language_model_target_and_corpora(data_dir):
    with pytest.raises(DataError, match="optbench data fetch tiny-shakespeare"):
        get_problem("text-lm")  # the default corpus is not here
    import_dataset("tiny-shakespeare", REAL_TEXT)  # any file installs; it is not the official one
    assert store.dataset_status("tiny-shakespeare").state == store.UNOFFICIAL
    nano = get_problem("text-lm(n_layer=6, n_head=6, n_embd=384, block_size=256, dropout=0.2)")
    assert (nano.eval_target.column, nano.eval_target.value) == ("test_loss", 1.47)
    with pytest.raises(SpecError, match="multiple of n_head"):
        get_problem("text-lm(corpus='text', n_embd=10, n_head=4)")


# ---- on a GPU (deselected by default: python -m pytest -m gpu, on a machine with CUDA) ------------------------

needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device here")


@pytest.mark.gpu
@needs_cuda
@pytest.mark.parametrize("name", sorted(TINY))
def test_every_network_problem_trains_on_cuda(data_dir, name):
    """The CUDA path of every network problem: data on the device, the loss falls, the accuracy rises, and a
    second run with the same seed repeats the first to the float tolerance of the device's kernels."""
    p = get_problem(TINY[name])
    epochs = 4
    trace = run_network(p, get_optimizer("adam(lr=3e-3)"), 0, epochs * p.steps_per_epoch(), 5, device="cuda")
    assert trace.status == ["done"]
    loss, acc = _evaluated(trace, "test_loss"), _evaluated(trace)
    assert loss[-1] < 0.95 * loss[0], loss
    assert acc[-1] > acc[0] + 0.03, acc
    again = run_network(p, get_optimizer("adam(lr=3e-3)"), 0, epochs * p.steps_per_epoch(), 5, device="cuda")
    np.testing.assert_allclose(again.loss, trace.loss, rtol=1e-4, atol=1e-5)


@pytest.mark.gpu
@needs_cuda
def test_batched_mlp_on_cuda_equals_its_loop_runs(data_dir):
    """K configurations batched on the GPU train as the same K loop runs on the GPU (float tolerance)."""
    p = get_problem(TINY["mnist-mlp"])
    configs = [get_optimizer(f"adam(lr={lr})") for lr in (1e-3, 3e-3, 1e-2)]
    batched = run_network_batched(p, configs, [0, 1, 2], 20, 5, device="cuda")
    for k, config in enumerate(configs):
        loop = run_network(p, config, k, 20, 5, device="cuda")
        np.testing.assert_allclose(batched.loss[:, k], loop.loss[:, 0], rtol=1e-3, atol=1e-4)
