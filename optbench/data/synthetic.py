"""Small datasets written in the official formats, for tests and benchmarks (never for results).

``write_dataset("mnist", dir, n_train=…, n_test=…)`` writes IDX files (gzip by default) or CIFAR python
batches with the official names into ``dir``, so the real readers, the store and the CLI all run on them.
The images are learnable: each class has its own random template; an example is its class template plus
pixel noise.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from optbench.data.formats import write_cifar_batch, write_idx
from optbench.data.store import get_dataset_info


def make_examples(n: int, shape: tuple[int, ...], n_classes: int, *, seed: int = 0, noise: float = 40.0):
    """``n`` uint8 images of ``shape`` and their labels: class template + Gaussian noise."""
    rng = np.random.default_rng(seed)
    templates = np.random.default_rng(12345).integers(0, 256, size=(n_classes, *shape)).astype(np.float64)
    labels = rng.integers(0, n_classes, size=n)
    images = templates[labels] + rng.normal(0, noise, size=(n, *shape))
    return np.clip(images, 0, 255).astype(np.uint8), labels.astype(np.uint8 if n_classes <= 256 else np.int64)


def write_dataset(name: str, directory: str | Path, *, n_train: int = 600, n_test: int = 100, seed: int = 0,
                  gz: bool = True, noise: float = 40.0) -> Path:
    """Write a synthetic ``name`` dataset (official file names and formats) into ``directory``."""
    info = get_dataset_info(name)
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    train = make_examples(n_train, info.shape, info.n_classes, seed=seed, noise=noise)
    test = make_examples(n_test, info.shape, info.n_classes, seed=seed + 1, noise=noise)
    if info.format == "idx":
        suffix = ".gz" if gz else ""
        for fname, array in zip(info.files, (train[0][:, 0], train[1], test[0][:, 0], test[1])):
            write_idx(directory / f"{fname}{suffix}", array, gz=gz)
        return directory
    parts = np.array_split(np.arange(n_train), len(info.train_files))
    for fname, rows in zip(info.train_files, parts):
        write_cifar_batch(directory / fname, train[0][rows], train[1][rows], info.label_key)
    write_cifar_batch(directory / info.test_files[0], test[0], test[1], info.label_key)
    return directory
