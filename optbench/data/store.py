"""The datasets optbench knows, where their files live, whether they are the official ones, and loading.

Data directory: ``$OPTBENCH_DATA`` if set, else the platform cache directory (``~/.cache/optbench`` on
Linux, ``~/Library/Caches/optbench`` on macOS). Layout, one folder per dataset with the official file
names::

    <data dir>/mnist/train-images-idx3-ubyte.gz      (or unpacked: train-images-idx3-ubyte)
    <data dir>/mnist/train-labels-idx1-ubyte.gz
    <data dir>/mnist/t10k-images-idx3-ubyte.gz
    <data dir>/mnist/t10k-labels-idx1-ubyte.gz
    <data dir>/fashion-mnist/…                       (the same four names)
    <data dir>/cifar10/data_batch_1 … data_batch_5, test_batch, checksums.json
    <data dir>/cifar100/train, test, checksums.json
    <data dir>/tiny-shakespeare/input.txt            (a text corpus: one file, read as bytes)
    <data dir>/text/input.txt                        (any local text, `optbench data import text FILE`)

A dataset is *verified* when its files are the official ones: the IDX archives and text corpora match their
published SHA-256, and CIFAR batches match ``checksums.json``, which is written only when they were extracted from
an archive that matched its published SHA-256. Files that load but are not verified (a subset, a
re-compressed copy) still run, with a warning that results are not comparable with official runs.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from optbench.errors import DataError, unknown_name

log = logging.getLogger("optbench.data")

DATA_ENV = "OPTBENCH_DATA"
MIRROR_ENV = "OPTBENCH_DATA_MIRROR"  # base URL replacing every official one: <mirror>/<dataset>/<file>
CHECKSUMS = "checksums.json"
VERIFIED, UNOFFICIAL, MISSING = "verified", "unofficial", "missing"


@dataclass(frozen=True)
class Archive:
    """A file as published: its name at ``base_url`` and its SHA-256."""

    name: str
    sha256: str


@dataclass(frozen=True)
class DatasetInfo:
    """A dataset: its download archives, the files the loader reads, and what the loader checks."""

    name: str
    title: str
    base_url: str
    archives: tuple[Archive, ...]
    format: str  # "idx", "cifar" or "text"
    n_classes: int
    n_train: int  # official sizes
    n_test: int
    train_files: tuple[str, ...]  # idx: (images, labels); cifar: the training batches
    test_files: tuple[str, ...]
    label_key: str = "labels"  # cifar only
    homepage: str = ""
    shape: tuple[int, ...] = (1, 28, 28)  # [C, H, W] images; () for text corpora

    @property
    def files(self) -> tuple[str, ...]:
        return self.train_files + self.test_files

    @property
    def downloadable(self) -> bool:
        return bool(self.archives)


_IDX_FILES = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte",
              "t10k-labels-idx1-ubyte")


def _idx_archives(*hashes: str) -> tuple[Archive, ...]:
    return tuple(Archive(f"{n}.gz", h) for n, h in zip(_IDX_FILES, hashes))


DATASETS: dict[str, DatasetInfo] = {d.name: d for d in (
    DatasetInfo(
        "mnist", "MNIST", "https://ossci-datasets.s3.amazonaws.com/mnist/",
        _idx_archives("440fcabf73cc546fa21475e81ea370265605f56be210a4024d2ca8f203523609",
                      "3552534a0a558bbed6aed32b30c495cca23d567ec52cac8be1a0730e8010255c",
                      "8d422c7b0a1c1c79245a5bcf07fe86e33eeafee792b84584aec276f5a2dbc4e6",
                      "f7ae60f92e00ec6debd23a6088c31dbd2371eca3ffa0defaefb259924204aec6"),
        "idx", 10, 60000, 10000, _IDX_FILES[:2], _IDX_FILES[2:], homepage="http://yann.lecun.com/exdb/mnist/"),
    DatasetInfo(
        "fashion-mnist", "Fashion-MNIST", "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",
        _idx_archives("3aede38d61863908ad78613f6a32ed271626dd12800ba2636569512369268a84",
                      "a04f17134ac03560a47e3764e11b92fc97de4d1bfaf8ba1a3aa29af54cc90845",
                      "346e55b948d973a97e58d2351dde16a484bd415d4595297633bb08f03db6a073",
                      "67da17c76eaffca5446c3361aaab5c3cd6d1c2608764d35dfb1850b086bf8dd5"),
        "idx", 10, 60000, 10000, _IDX_FILES[:2], _IDX_FILES[2:],
        homepage="https://github.com/zalandoresearch/fashion-mnist"),
    DatasetInfo(
        "cifar10", "CIFAR-10", "https://www.cs.toronto.edu/~kriz/",
        (Archive("cifar-10-python.tar.gz", "6d958be074577803d12ecdefd02955f39262c83c16fe9348329d7fe0b5c001ce"),),
        "cifar", 10, 50000, 10000, tuple(f"data_batch_{i}" for i in range(1, 6)), ("test_batch",),
        homepage="https://www.cs.toronto.edu/~kriz/cifar.html", shape=(3, 32, 32)),
    DatasetInfo(
        "cifar100", "CIFAR-100", "https://www.cs.toronto.edu/~kriz/",
        (Archive("cifar-100-python.tar.gz", "85cd44d02ba6437773c5bbd22e183051d648de2e7d6b014e1ef29b855ba677a7"),),
        "cifar", 100, 50000, 10000, ("train",), ("test",), label_key="fine_labels",
        homepage="https://www.cs.toronto.edu/~kriz/cifar.html", shape=(3, 32, 32)),
    # text corpora: one file of bytes (tokens 0..255); the last TEXT_VALIDATION of it is the validation split
    DatasetInfo(
        "tiny-shakespeare", "Tiny Shakespeare", "https://raw.githubusercontent.com/karpathy/char-rnn/master/data/"
        "tinyshakespeare/",
        (Archive("input.txt", "86c4e6aa9db7c042ec79f339dcb96d42b0075e16b8fc2e86bf0ca57e2dc565ed"),),
        "text", 256, 1003855, 111539, ("input.txt",), (), homepage="https://github.com/karpathy/char-rnn",
        shape=()),
    DatasetInfo("text", "a local text file", "", (), "text", 256, 0, 0, ("input.txt",), (),
                homepage="`optbench data import text FILE`", shape=()),
)}

TEXT_VALIDATION = 0.1  # nanoGPT's split: the first 90% of the bytes train, the last 10% validate


def get_dataset_info(name: str) -> DatasetInfo:
    if name not in DATASETS:
        raise unknown_name("dataset", name, DATASETS)
    return DATASETS[name]


def data_root() -> tuple[Path, str]:
    """The data directory and where it came from (``$OPTBENCH_DATA`` or the platform cache dir)."""
    env = os.environ.get(DATA_ENV)
    if env:
        return Path(env).expanduser(), f"${DATA_ENV}"
    import platformdirs

    return Path(platformdirs.user_cache_dir("optbench", appauthor=False)), "the default cache directory"


def dataset_dir(name: str, root: Path | None = None) -> Path:
    return (root or data_root()[0]) / name


def archive_url(info: DatasetInfo, archive: Archive) -> str:
    mirror = os.environ.get(MIRROR_ENV)
    if mirror:
        return f"{mirror.rstrip('/')}/{info.name}/{archive.name}"
    return info.base_url + archive.name


_HASHES: dict[tuple[str, int, int], str] = {}


def sha256_file(path: Path) -> str:
    """SHA-256 of a file, cached per (path, size, mtime) for the life of the process."""
    st = path.stat()
    key = (str(path.resolve()), st.st_size, st.st_mtime_ns)
    if key not in _HASHES:
        h = hashlib.sha256()
        with path.open("rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                h.update(block)
        _HASHES[key] = h.hexdigest()
    return _HASHES[key]


@dataclass
class DatasetStatus:
    """What is on disk for one dataset: ``state`` is verified, unofficial or missing."""

    info: DatasetInfo
    directory: Path
    state: str
    paths: dict[str, Path] = field(default_factory=dict)  # loader file name → the file found
    missing: list[str] = field(default_factory=list)
    detail: str = ""

    @property
    def size_bytes(self) -> int:
        return sum(p.stat().st_size for p in self.paths.values())


def _find_idx(directory: Path, name: str) -> Path | None:
    for candidate in (directory / f"{name}.gz", directory / name):
        if candidate.is_file():
            return candidate
    return None


def dataset_status(name: str, root: Path | None = None, *, check_hashes: bool = True) -> DatasetStatus:
    info = get_dataset_info(name)
    directory = dataset_dir(name, root)
    paths: dict[str, Path] = {}
    missing: list[str] = []
    for f in info.files:
        p = _find_idx(directory, f) if info.format == "idx" else (directory / f if (directory / f).is_file() else None)
        if p is None:
            missing.append(f"{f}(.gz)" if info.format == "idx" else f)
        else:
            paths[f] = p
    if missing:
        return DatasetStatus(info, directory, MISSING, paths, missing, "missing: " + ", ".join(missing))
    if not check_hashes:
        return DatasetStatus(info, directory, UNOFFICIAL, paths)
    if info.format in ("idx", "text"):
        if not info.downloadable:
            return DatasetStatus(info, directory, UNOFFICIAL, paths, detail="a local file (no official version)")
        official = {a.name: a.sha256 for a in info.archives}
        bad = [p.name for p in paths.values() if official.get(p.name) != sha256_file(p)]
        if bad:
            return DatasetStatus(info, directory, UNOFFICIAL, paths,
                                 detail="not the official files: " + ", ".join(bad))
        return DatasetStatus(info, directory, VERIFIED, paths, detail="SHA-256 matches the official archives")
    marker = directory / CHECKSUMS
    try:
        recorded = json.loads(marker.read_text())["files"]
    except (OSError, ValueError, KeyError, TypeError):
        return DatasetStatus(info, directory, UNOFFICIAL, paths,
                             detail=f"no {CHECKSUMS}: not extracted from the official archive")
    bad = [f for f, p in paths.items() if recorded.get(f) != sha256_file(p)]
    if bad:
        return DatasetStatus(info, directory, UNOFFICIAL, paths, detail="changed since extraction: " + ", ".join(bad))
    return DatasetStatus(info, directory, VERIFIED, paths, detail="extracted from the official archive")


def missing_message(info: DatasetInfo, directory: Path, how: str, missing: list[str]) -> str:
    get = (f"Download it with `optbench data fetch {info.name}`, or import files you already have with "
           f"`optbench data import {info.name} PATH`" if info.downloadable
           else f"Import a file with `optbench data import {info.name} FILE`")
    return (f"Dataset {info.name!r} ({info.title}) is not available: looked in {directory} (from {how}); "
            f"missing {', '.join(missing)}. {get}; set ${DATA_ENV} to use another data directory.")


def require_dataset(name: str) -> DatasetStatus:
    """The dataset's status, raising DataError with the fetch/import commands when files are missing."""
    root, how = data_root()
    status = dataset_status(name, root, check_hashes=False)
    if status.state == MISSING:
        raise DataError(missing_message(status.info, status.directory, how, status.missing))
    return status


@dataclass(eq=False)
class Dataset:
    """A whole dataset in memory: uint8 images ``[N, C, H, W]`` and int64 labels ``[N]``; a text corpus holds
    its training and validation bytes ``[n]`` in ``train_x`` / ``test_x`` (no labels: the next byte is one)."""

    name: str
    train_x: Any
    train_y: Any
    test_x: Any
    test_y: Any
    n_classes: int
    official: bool
    fingerprint: str  # "official" or "unofficial:<sha-256 prefix of the files' hashes>"


_LOADED: dict[tuple, Dataset] = {}
_WARNED: set[str] = set()


def dataset_fingerprint(name: str) -> tuple[DatasetStatus, str]:
    """The dataset's status and fingerprint: ``"official"``, or ``"unofficial:<hash prefix>"`` with a
    warning (once per directory) that results are not comparable. DataError when files are missing."""
    require_dataset(name)
    status = dataset_status(name, data_root()[0])
    if status.state == VERIFIED:
        return status, "official"
    digest = hashlib.sha256("".join(sha256_file(status.paths[f]) for f in status.info.files).encode())
    if str(status.directory) not in _WARNED and status.info.downloadable:
        _WARNED.add(str(status.directory))
        log.warning("Warning: dataset %r in %s is not the official one (%s): results are not comparable with "
                    "runs on the official data.", name, status.directory, status.detail)
    return status, f"unofficial:{digest.hexdigest()[:12]}"


def load_dataset(name: str) -> Dataset:
    """Load (once per process and file version) a dataset from the data directory.

    Raises DataError when files are missing or unreadable; logs a warning when they are not the
    official ones.
    """
    import numpy as np
    import torch

    from optbench.data.formats import read_cifar_batch, read_idx

    status = require_dataset(name)
    info = status.info
    key = (name, *sorted((str(p), p.stat().st_size, p.stat().st_mtime_ns) for p in status.paths.values()))
    if key in _LOADED:
        return _LOADED[key]
    status, fingerprint = dataset_fingerprint(name)
    if info.format == "text":
        raw = np.frombuffer(status.paths[info.train_files[0]].read_bytes(), dtype=np.uint8)
        cut = len(raw) - int(len(raw) * TEXT_VALIDATION)  # training bytes before it, validation after
        if cut < 2 or len(raw) - cut < 2:
            raise DataError(f"Dataset {name!r}: {status.paths[info.train_files[0]]} holds {len(raw)} bytes; a "
                            "text corpus needs at least 20 to split into training and validation text.")
        tokens = torch.from_numpy(raw.copy())
        ds = Dataset(name, tokens[:cut], None, tokens[cut:], None, info.n_classes, status.state == VERIFIED,
                     fingerprint)
        for old in [k for k in _LOADED if k[0] == name]:
            del _LOADED[old]
        _LOADED[key] = ds
        return ds
    if info.format == "idx":
        parts = [read_idx(status.paths[f]) for f in info.files]
        for i, (images, labels) in enumerate(((parts[0], parts[1]), (parts[2], parts[3]))):
            split = "train" if i == 0 else "test"
            if images.ndim != 3 or labels.ndim != 1 or len(images) != len(labels):
                raise DataError(f"Dataset {name!r}: {split} images {tuple(images.shape)} and labels "
                                f"{tuple(labels.shape)} do not form an [N, H, W] / [N] pair.")
        train_x, train_y, test_x, test_y = parts[0][:, None], parts[1].long(), parts[2][:, None], parts[3].long()
    else:
        train = [read_cifar_batch(status.paths[f], info.label_key) for f in info.train_files]
        test = [read_cifar_batch(status.paths[f], info.label_key) for f in info.test_files]
        train_x, train_y = torch.cat([t[0] for t in train]), torch.cat([t[1] for t in train])
        test_x, test_y = torch.cat([t[0] for t in test]), torch.cat([t[1] for t in test])
    for split, y in (("train", train_y), ("test", test_y)):
        if len(y) == 0:
            raise DataError(f"Dataset {name!r}: the {split} split is empty.")
        if int(y.min()) < 0 or int(y.max()) >= info.n_classes:
            raise DataError(f"Dataset {name!r}: {split} labels must be in 0..{info.n_classes - 1}, "
                            f"found {int(y.min())}..{int(y.max())}.")
    official = status.state == VERIFIED
    ds = Dataset(name, train_x, train_y, test_x, test_y, info.n_classes, official, fingerprint)
    for old in [k for k in _LOADED if k[0] == name]:  # keep one version of each dataset in memory
        del _LOADED[old]
    _LOADED[key] = ds
    return ds
