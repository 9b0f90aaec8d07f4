"""The network track: small classifiers on real datasets, trained with cross-entropy.

Each problem is a dataset (read from the official files, see :mod:`optbench.data.store`) and an
architecture. The loss is the mean cross-entropy of a mini-batch, so ``f* = 0`` is its lower bound and
the default target for "steps to target" is a training mini-batch loss of 0.1. Models are initialised
from the run seed (Glorot-uniform weights, zero biases, drawn in float64 on the CPU so that every engine,
device and dtype starts from the same numbers) and mini-batches come from a per-epoch permutation drawn
from the run seed. The stochastic sample of step t is its mini-batch B_t: every oracle of that step (the
gradient, the closure's loss and ``loss_at`` at other parameter values, JVPs through it) is the loss on B_t,
and the recorded training loss is that mini-batch loss at the iterate.

Options shared by every network problem:

- ``batch_size``: examples per step (a sweep axis via ``--batch-size``); the last batch of an epoch is
  smaller when it does not divide the training set, so an epoch is ``ceil(n_train / batch_size)`` steps.
- ``eval_every``: steps between evaluations of test loss/accuracy and the mean train loss since the
  previous evaluation (0, the default: once per epoch); there is always one at step 0 and at the end.
- ``precision``: ``float32`` (default), ``float64``, or ``bf16`` (bfloat16 autocast on CUDA, float32
  weights). Network runs use this, not ``--dtype`` (whose float64 default is for analytic problems).
- ``compile``: ``torch.compile`` the model (CUDA, loop engine).
- ``train_size`` / ``test_size``: use only the first N examples (quick runs; not comparable with runs on
  the full sets, and the label says so).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from optbench.errors import SpecError
from optbench.params import Param
from optbench.problems.base import ProblemEntry, derive_seed, register_problem
from optbench.spec import Spec

TARGET = 0.1  # train mini-batch cross-entropy counted as "reached"
BLOWUP_FACTOR = 100.0  # diverged: loss above this multiple of max(1, the loss at step 0)
PRECISIONS = ("float32", "float64", "bf16")


def _positive_int(doc: str, default: Any = None) -> Param:
    return Param(default, doc, lambda v: isinstance(v, int) and v >= 1, "an integer >= 1", types=(int,))


def _int_tuple(doc: str, default: Any, minimum: int = 1) -> Param:
    return Param(default, doc, lambda v: all(isinstance(w, int) and w >= 1 for w in v) and len(v) >= minimum,
                 f"a tuple of at least {minimum} integers >= 1", types=(tuple, list))


def _common_params(batch_size: int) -> dict[str, Param]:
    return {
        "batch_size": _positive_int("examples per step; a sweep axis via --batch-size", batch_size),
        "eval_every": Param(0, "steps between evaluations (0: once per epoch)", lambda v: v >= 0, ">= 0",
                            types=(int,)),
        "precision": Param("float32", "float32, float64 or bf16 (autocast, CUDA)", lambda v: v in PRECISIONS,
                           "one of " + ", ".join(PRECISIONS)),
        "compile": Param(False, "torch.compile the model (CUDA)"),
        "train_size": _positive_int("use the first N training examples (default: all)"),
        "test_size": _positive_int("use the first N test examples (default: all)"),
    }


# ---- architectures -------------------------------------------------------------------------------
def build_mlp(in_features: int, widths: tuple[int, ...], n_classes: int):
    """Flatten → [Linear → ReLU] per hidden width → Linear to the class logits."""
    import torch.nn as nn

    layers: list[nn.Module] = [nn.Flatten()]
    prev = in_features
    for w in widths:
        layers += [nn.Linear(prev, w), nn.ReLU()]
        prev = w
    layers.append(nn.Linear(prev, n_classes))
    return nn.Sequential(*layers)


def build_3c3d(in_channels: int, channels: tuple[int, int, int], hidden: tuple[int, ...], n_classes: int):
    """DeepOBS's 3c3d: conv 5×5 valid → pool, conv 3×3 valid → pool, conv 3×3 same → pool (3×3, stride 2,
    'same' padding), then fully connected layers ``hidden`` and the logits. 32×32 inputs → 3×3 maps."""
    import torch.nn as nn

    c1, c2, c3 = channels
    layers: list[nn.Module] = [
        nn.Conv2d(in_channels, c1, 5), nn.ReLU(), nn.MaxPool2d(3, 2, padding=1),
        nn.Conv2d(c1, c2, 3), nn.ReLU(), nn.MaxPool2d(3, 2, padding=1),
        nn.Conv2d(c2, c3, 3, padding=1), nn.ReLU(), nn.MaxPool2d(3, 2, padding=1),
        nn.Flatten(),
    ]
    prev = c3 * 3 * 3
    for h in hidden:
        layers += [nn.Linear(prev, h), nn.ReLU()]
        prev = h
    layers.append(nn.Linear(prev, n_classes))
    return nn.Sequential(*layers)


@dataclass
class NetData:
    """A dataset on one device: uint8 images, int64 labels, and the per-channel affine map
    ``x * scale + shift`` that turns bytes into standardised inputs (applied per batch, on the device)."""

    train_x: Any
    train_y: Any
    test_x: Any
    test_y: Any
    scale: Any  # [C, 1, 1]
    shift: Any

    @property
    def n_train(self) -> int:
        return len(self.train_y)

    def inputs(self, images, dtype):
        return images.to(dtype) * self.scale.to(dtype) + self.shift.to(dtype)


_DEVICE_DATA: dict[tuple, tuple[Any, NetData]] = {}


def _channel_stats(images):
    """Per-channel mean and standard deviation of uint8 images ``[N, C, H, W]`` scaled to [0, 1], exactly,
    from 256-bin histograms (no float copy of the dataset)."""
    import torch

    levels = torch.arange(256, dtype=torch.float64) / 255
    means, stds = [], []
    for c in range(images.shape[1]):
        counts = sum(torch.bincount(images[i: i + 4096, c].reshape(-1).long(), minlength=256).double()
                     for i in range(0, len(images), 4096))
        p = counts / counts.sum()
        mean = (p * levels).sum()
        means.append(mean)
        stds.append(((p * (levels - mean) ** 2).sum()).sqrt().clamp_min(1e-6))
    return torch.stack(means), torch.stack(stds)


@dataclass(eq=False)
class NetworkProblem:
    """A classifier on a dataset. ``build_model()`` makes the (uninitialised) module."""

    name: str
    spec: Spec
    config: dict[str, Any]
    dataset: str
    n_classes: int
    input_shape: tuple[int, int, int]
    build_model: Callable[[], Any]
    architecture: str
    formula: str = ""
    target: float = TARGET
    f_min: float = 0.0
    kind: str = "network"
    _dim: int | None = field(default=None, repr=False)

    # ---- identity (what runner and results read) ---------------------------------------------
    @property
    def label(self) -> str:
        return str(self.spec)

    @property
    def unbounded(self) -> bool:
        return False

    @property
    def has_batch_size(self) -> bool:
        return True

    @property
    def batch_size(self) -> int:
        return int(self.config["batch_size"])

    @property
    def dim(self) -> int:
        """Number of trainable parameters."""
        if self._dim is None:
            import torch

            with torch.device("meta"):
                self._dim = sum(p.numel() for p in self.build_model().parameters())
        return self._dim

    @property
    def precision(self) -> str:
        return self.config["precision"]

    def distance_to_minimum(self, x):
        import torch

        return torch.full(x.shape[:-1], math.nan, dtype=torch.float64)

    def blowup_level(self, start_loss: float) -> float:
        return BLOWUP_FACTOR * max(1.0, start_loss)

    # ---- data -----------------------------------------------------------------------------------
    def device_data(self, device) -> NetData:
        """The dataset on ``device`` (cached per process); normalisation statistics from the training set."""
        from optbench.data.store import load_dataset

        ds = load_dataset(self.dataset)
        key = (self.dataset, str(device), self.config["train_size"], self.config["test_size"])
        cached = _DEVICE_DATA.get(key)
        if cached is None or cached[0] is not ds:  # a new version of the files replaces the old tensors
            ntr, nte = self.config["train_size"], self.config["test_size"]
            train_x, train_y = ds.train_x[:ntr], ds.train_y[:ntr]
            test_x, test_y = ds.test_x[:nte], ds.test_y[:nte]
            if tuple(train_x.shape[1:]) != self.input_shape:
                from optbench.errors import DataError

                raise DataError(f"Dataset {self.dataset!r} has images of shape {tuple(train_x.shape[1:])}; "
                                f"{self.name} expects {self.input_shape}.")
            mean, std = _channel_stats(train_x)
            scale, shift = (1 / (255 * std))[:, None, None], (-mean / std)[:, None, None]
            _DEVICE_DATA.clear()  # one dataset on a device at a time
            cached = (ds, NetData(train_x.to(device), train_y.to(device), test_x.to(device), test_y.to(device),
                                  scale.to(device), shift.to(device)))
            _DEVICE_DATA[key] = cached
        return cached[1]

    @property
    def n_train(self) -> int:
        from optbench.data.store import load_dataset

        n = len(load_dataset(self.dataset).train_y)
        return min(n, self.config["train_size"] or n)

    def steps_per_epoch(self) -> int:
        return -(-self.n_train // self.batch_size)

    @property
    def eval_every(self) -> int:
        return int(self.config["eval_every"]) or self.steps_per_epoch()

    # ---- parameters -----------------------------------------------------------------------------
    def init_params(self, seed: int) -> dict[str, Any]:
        """Initial parameters for ``seed`` in float64 on the CPU: Glorot-uniform weights
        U(±√(6/(fan_in+fan_out))), zero biases."""
        import torch

        gen = torch.Generator().manual_seed(derive_seed(seed, "init"))
        with torch.device("meta"):
            model = self.build_model()
        out = {}
        for name, p in model.named_parameters():
            if p.ndim == 1:
                out[name] = torch.zeros(p.shape, dtype=torch.float64)
            else:
                receptive = math.prod(p.shape[2:])
                fan_in, fan_out = p.shape[1] * receptive, p.shape[0] * receptive
                bound = math.sqrt(6.0 / (fan_in + fan_out))
                out[name] = torch.empty(p.shape, dtype=torch.float64).uniform_(-bound, bound, generator=gen)
        return out

    def make_model(self, seed: int, device, dtype):
        """The module with the seed's initial parameters, on ``device`` in ``dtype``."""
        import torch

        model = self.build_model().to(dtype=dtype)  # before the copy: float64 runs keep every digit
        with torch.no_grad():
            for name, value in self.init_params(seed).items():
                model.get_parameter(name).copy_(value)
        return model.to(device=device)

    def describe(self) -> dict[str, Any]:
        return {"name": self.name, "label": self.label, "kind": self.kind, "dataset": self.dataset,
                "architecture": self.architecture, "dim": self.dim, "f_min": self.f_min, "target": self.target,
                "batch_size": self.batch_size, "formula": self.formula, "config": self.config}


def _network(name: str, doc: str, dataset: str, arch_params: dict[str, Param], batch_size: int,
             make: Callable[[dict[str, Any], Any], tuple[Callable[[], Any], str, dict[str, Any]]]) -> None:
    def build(spec: Spec, config: dict[str, Any]) -> NetworkProblem:
        from optbench.data.store import dataset_fingerprint, get_dataset_info

        info = get_dataset_info(dataset)
        builder, arch, resolved = make({**config, "_given": tuple(spec.kwargs)}, info)
        _, fingerprint = dataset_fingerprint(dataset)  # DataError (fetch/import commands) when missing
        full = {**config, **resolved, "dataset": dataset, "data": fingerprint}
        return NetworkProblem(name, spec, full, dataset, info.n_classes, info.shape, builder, arch, doc)

    register_problem(ProblemEntry(name, build, {**arch_params, **_common_params(batch_size)}, doc, "network",
                                  True, ("network", dataset)))


def _mlp_params() -> dict[str, Param]:
    return {
        "widths": _int_tuple("hidden layer widths", (1000, 500, 100), minimum=0),
        "width": _positive_int("hidden width of every layer (with depth; replaces widths)"),
        "depth": _positive_int("number of hidden layers (with width; replaces widths)"),
    }


def _make_mlp(config: dict[str, Any], info) -> tuple[Callable[[], Any], str, dict[str, Any]]:
    widths = tuple(config["widths"])
    if config["width"] is not None or config["depth"] is not None:
        if "widths" in config.get("_given", ()):
            raise SpecError("Give either widths=(…) or width=/depth=, not both.")
        widths = (config["width"] or 512,) * (config["depth"] or 3)
    in_features = math.prod(info.shape)
    arch = f"mlp {in_features}-" + "-".join(map(str, widths + (info.n_classes,)))
    return (lambda: build_mlp(in_features, widths, info.n_classes)), arch, {"widths": widths}


def _cnn_params() -> dict[str, Param]:
    return {
        "channels": _int_tuple("channels of the three conv layers", (64, 96, 128), minimum=3),
        "hidden": _int_tuple("widths of the fully connected layers", (512, 256), minimum=0),
    }


def _make_cnn(config: dict[str, Any], info) -> tuple[Callable[[], Any], str, dict[str, Any]]:
    channels, hidden = tuple(config["channels"]), tuple(config["hidden"])
    if len(channels) != 3:
        raise SpecError(f"channels={channels!r}: the 3c3d network has exactly three conv layers.")
    arch = f"3c3d conv{channels} fc{hidden + (info.n_classes,)}"
    return (lambda: build_3c3d(info.shape[0], channels, hidden, info.n_classes)), arch, {}


_network("mnist-mlp", "MLP on MNIST, cross-entropy: 784-1000-500-100-10 ReLU by default (DeepOBS mnist_mlp); "
         "widths=(…) or width=/depth=. f* = 0, target: train loss 0.1.", "mnist", _mlp_params(), 128, _make_mlp)
_network("fashion-mnist-mlp", "MLP on Fashion-MNIST, cross-entropy: 784-1000-500-100-10 ReLU by default "
         "(DeepOBS fmnist_mlp). f* = 0, target: train loss 0.1.", "fashion-mnist", _mlp_params(), 128, _make_mlp)
_network("cifar10-cnn", "3c3d CNN on CIFAR-10, cross-entropy (DeepOBS cifar10_3c3d, without augmentation and "
         "L2): conv 64-96-128, fc 512-256-10. f* = 0, target: train loss 0.1.", "cifar10", _cnn_params(), 128,
         _make_cnn)
_network("cifar100-cnn", "3c3d CNN on CIFAR-100, cross-entropy (DeepOBS cifar100_3c3d, without augmentation "
         "and L2): conv 64-96-128, fc 512-256-100. f* = 0, target: train loss 0.1.", "cifar100", _cnn_params(),
         128, _make_cnn)
