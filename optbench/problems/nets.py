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
- ``dropout``: dropout probability of the model's dropout layers (0, the default: none; where they sit is
  each architecture's docstring). Masks are drawn from the run seed and the step, so every oracle of one
  step (the gradient, each closure call) sees the same masks, and runs are reproducible; evaluation runs the
  model in eval mode (no dropout, BatchNorm running statistics).
- ``no_decay``: parameter-group policy. ``True`` (= ``('bias', 'norm')``) puts every bias and every parameter
  of a normalisation layer (BatchNorm, LayerNorm, GroupNorm) in a group with ``weight_decay = 0``, the rule
  of nanoGPT, airbench and timm; a tuple picks categories from ``bias``, ``norm``, ``embedding``. The
  optimizer's own ``weight_decay`` applies to the other parameters. False (the default): one group.

``dropout`` and ``no_decay`` enter a run's identity and label only when set, so run ids of runs without them
are those of before. What the batched (vmap) network engine cannot run — BatchNorm buffers, dropout,
augmentation, parameter groups — each problem states in ``features`` (:mod:`optbench.engines.capabilities`).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from optbench.errors import SpecError
from optbench.params import Param
from optbench.problems.base import AUGMENTATION, BUFFERS, DROPOUT, PARAM_GROUPS, ProblemEntry, register_problem
from optbench.randomness import derive_seed
from optbench.spec import Spec

TARGET = 0.1  # train mini-batch cross-entropy counted as "reached"
BLOWUP_FACTOR = 100.0  # diverged: loss above this multiple of max(1, the loss at step 0)
PRECISIONS = ("float32", "float64", "bf16")
BN_MOMENTUM = 0.4  # airbench94's running-statistics momentum (its 0.6 is torch's 1 − 0.4)
NO_DECAY_CATEGORIES = ("bias", "norm", "embedding")


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
        "dropout": Param(0.0, "dropout probability of the model's dropout layers (0: none)",
                         lambda v: 0 <= v < 1, "in [0, 1)", types=(int, float)),
        "no_decay": Param(False, "weight_decay 0 for these parameters: True = ('bias', 'norm'), or a tuple of "
                          + ", ".join(NO_DECAY_CATEGORIES), _valid_no_decay,
                          "True, False or a tuple of " + ", ".join(NO_DECAY_CATEGORIES), types=(bool, tuple, list)),
    }


def _valid_no_decay(value: Any) -> bool:
    if isinstance(value, bool):
        return True
    return len(value) > 0 and all(v in NO_DECAY_CATEGORIES for v in value)


def resolve_recipe_options(config: dict[str, Any]) -> dict[str, Any]:
    """The config with ``dropout`` and ``no_decay`` normalised, and removed where they are the defaults: runs
    without them keep the identity (and run id) they had before these options existed."""
    out = dict(config)
    if not out.get("dropout"):
        out.pop("dropout", None)
    else:
        out["dropout"] = float(out["dropout"])
    no_decay = out.pop("no_decay", False)
    if no_decay is True:
        no_decay = ("bias", "norm")
    if no_decay:
        out["no_decay"] = tuple(c for c in NO_DECAY_CATEGORIES if c in no_decay)
    return out


@dataclass(frozen=True)
class EvalTarget:
    """The quality a problem's full-size run is meant to reach, on an evaluation column: ``test_acc ≥ 0.94``
    or ``test_loss ≤ 1.47``; ``source`` says where the number comes from. The steps-to-target columns count
    the training loss (``target``); this is the workload's result target, stated with the problem."""

    column: str  # "test_acc" or "test_loss"
    value: float
    source: str

    @property
    def higher_is_better(self) -> bool:
        return self.column == "test_acc"

    def __str__(self) -> str:
        return f"{self.column} {'≥' if self.higher_is_better else '≤'} {self.value:g} ({self.source})"


# ---- architectures -------------------------------------------------------------------------------
def build_mlp(in_features: int, widths: tuple[int, ...], n_classes: int, dropout: float = 0.0):
    """Flatten → [Linear → ReLU (→ Dropout)] per hidden width → Linear to the class logits."""
    import torch.nn as nn

    layers: list[nn.Module] = [nn.Flatten()]
    prev = in_features
    for w in widths:
        layers += [nn.Linear(prev, w), nn.ReLU()] + ([nn.Dropout(dropout)] if dropout else [])
        prev = w
    layers.append(nn.Linear(prev, n_classes))
    return nn.Sequential(*layers)


def build_3c3d(in_channels: int, channels: tuple[int, int, int], hidden: tuple[int, ...], n_classes: int,
               dropout: float = 0.0):
    """DeepOBS's 3c3d: conv 5×5 valid → pool, conv 3×3 valid → pool, conv 3×3 same → pool (3×3, stride 2,
    'same' padding), then fully connected layers ``hidden`` (each ReLU, then dropout when asked) and the
    logits. 32×32 inputs → 3×3 maps."""
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
        layers += [nn.Linear(prev, h), nn.ReLU()] + ([nn.Dropout(dropout)] if dropout else [])
        prev = h
    layers.append(nn.Linear(prev, n_classes))
    return nn.Sequential(*layers)


def build_resnet(in_channels: int, stem: int, widths: tuple[int, ...], depth: int, n_classes: int,
                 dropout: float = 0.0):
    """An airbench-style CNN (Jordan 2024, *94% on CIFAR-10 in 3.29 seconds on a single GPU*, airbench94):
    a conv 3×3 stem of ``stem`` channels → BN → GELU, then one group per width w: conv 3×3 to w → max-pool
    2×2 → BN → GELU, followed by ``depth − 1`` residual units x + GELU(BN(conv 3×3(x))); then a global max
    pool, dropout when asked, and a bias-free linear layer to the logits. BatchNorm keeps running statistics
    with torch momentum 0.4 (airbench's ``momentum=0.6`` in its own convention), used for evaluation.
    airbench94's widths are (64, 256, 256) with two convolutions per group (``depth=2``); its frozen whitening
    stem, Lookahead, test-time flips and scaled logits are training-recipe parts that stay out of the problem."""
    import torch.nn as nn

    class ConvBN(nn.Sequential):
        def __init__(self, c_in: int, c_out: int, pool: bool):
            layers: list[nn.Module] = [nn.Conv2d(c_in, c_out, 3, padding=1, bias=False)]
            layers += [nn.MaxPool2d(2)] if pool else []
            super().__init__(*layers, nn.BatchNorm2d(c_out, momentum=BN_MOMENTUM), nn.GELU())

    class Residual(nn.Module):
        def __init__(self, c: int):
            super().__init__()
            self.unit = ConvBN(c, c, pool=False)

        def forward(self, x):
            return x + self.unit(x)

    layers: list[nn.Module] = [ConvBN(in_channels, stem, pool=False)]
    prev = stem
    for w in widths:
        layers += [ConvBN(prev, w, pool=True)] + [Residual(w) for _ in range(depth - 1)]
        prev = w
    layers += [nn.AdaptiveMaxPool2d(1), nn.Flatten()] + ([nn.Dropout(dropout)] if dropout else [])
    layers.append(nn.Linear(prev, n_classes, bias=False))
    return nn.Sequential(*layers)


def _is_norm(module) -> bool:
    import torch.nn as nn

    return isinstance(module, (nn.modules.batchnorm._NormBase, nn.LayerNorm, nn.GroupNorm))


def parameter_categories(model) -> dict[str, str]:
    """Each parameter's category for the ``no_decay`` policy: ``norm`` (a normalisation layer's weight or
    bias), ``bias``, ``embedding`` or ``weight``."""
    import torch.nn as nn

    out: dict[str, str] = {}
    for module_name, module in model.named_modules():
        for name, _ in module.named_parameters(recurse=False):
            full = f"{module_name}.{name}" if module_name else name
            if _is_norm(module):
                out[full] = "norm"
            elif isinstance(module, nn.Embedding):
                out[full] = "embedding"
            else:
                out[full] = "bias" if name == "bias" else "weight"
    return {n: out[n] for n, _ in model.named_parameters()}  # named_parameters' order, shared ones once


def model_features(model) -> frozenset[str]:
    """Which of BUFFERS and DROPOUT a module has (what the batched engine must refuse)."""
    import torch.nn as nn

    modules = list(model.modules())
    features = set()
    if any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in modules):
        features.add(BUFFERS)
    if any(isinstance(m, nn.Dropout) and m.p > 0 for m in modules) or bool(getattr(model, "dropout_p", 0)):
        features.add(DROPOUT)
    return frozenset(features)


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


class DeviceData(Protocol):
    """What the engines read from ``device_data()``: :class:`NetData` and the user problems' own data."""

    train_x: Any
    train_y: Any
    test_x: Any
    test_y: Any

    @property
    def n_train(self) -> int: ...

    def inputs(self, images, dtype): ...


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
    input_shape: tuple[int, ...]  # [C, H, W] images; (block_size,) for language models
    build_model: Callable[[], Any]
    architecture: str
    formula: str = ""
    target: float = TARGET
    f_min: float = 0.0
    kind: str = "network"
    augment: int = 0  # random crop of ±augment pixels (reflect padding) and horizontal flip per example
    channels_last: bool = False  # channels_last memory format on CUDA
    eval_target: EvalTarget | None = None  # the quality a full run should reach (a test metric)
    _dim: int | None = field(default=None, repr=False)
    _features: frozenset[str] | None = field(default=None, repr=False)

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

    @property
    def features(self) -> frozenset[str]:
        """Model and training features the engines must honour (BUFFERS, DROPOUT, AUGMENTATION, PARAM_GROUPS)."""
        if self._features is None:
            import torch

            with torch.device("meta"):
                features = set(model_features(self.build_model()))
            if self.augment:
                features.add(AUGMENTATION)
            if self.config.get("no_decay"):
                features.add(PARAM_GROUPS)
            self._features = frozenset(features)
        return self._features

    def param_groups(self, model, weight_decay: bool) -> list[Any]:
        """The optimizer's parameters: one list, or with ``no_decay`` (and an optimizer that has a
        ``weight_decay``) two groups, the second with ``weight_decay = 0``."""
        params = list(model.parameters())
        no_decay = self.config.get("no_decay")
        if not no_decay or not weight_decay:
            return params
        categories = parameter_categories(model)
        named = dict(model.named_parameters())
        decay = [named[n] for n, c in categories.items() if c not in no_decay]
        exempt = [named[n] for n, c in categories.items() if c in no_decay]
        return [{"params": decay}, {"params": exempt, "weight_decay": 0.0}]

    def distance_to_minimum(self, x):
        import torch

        return torch.full(x.shape[:-1], math.nan, dtype=torch.float64)

    def blowup_level(self, start_loss: float) -> float:
        return BLOWUP_FACTOR * max(1.0, start_loss)

    # ---- data -----------------------------------------------------------------------------------
    def device_data(self, device) -> DeviceData:
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
        U(±√(6/(fan_in+fan_out))), zero biases; normalisation layers start as the identity (weight 1,
        bias 0), drawing nothing."""
        import torch

        gen = torch.Generator().manual_seed(derive_seed(seed, "init"))
        with torch.device("meta"):
            model = self.build_model()
        categories = parameter_categories(model)
        out = {}
        for name, p in model.named_parameters():
            if categories[name] == "norm":
                out[name] = (torch.ones if name.endswith("weight") else torch.zeros)(p.shape, dtype=torch.float64)
            elif p.ndim == 1:
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
                "eval_target": str(self.eval_target) if self.eval_target else None,
                "batch_size": self.batch_size, "formula": self.formula, "config": self.config}


Make = Callable[[dict[str, Any], Any], tuple[Callable[[], Any], str, dict[str, Any], dict[str, Any]]]


def _network(name: str, doc: str, dataset: str, arch_params: dict[str, Param], batch_size: int, make: Make,
             target: float = TARGET) -> None:
    """Register a classifier on ``dataset``. ``make(config, dataset_info)`` returns the model builder, the
    architecture string, resolved config entries and extra :class:`NetworkProblem` fields."""
    def build(spec: Spec, config: dict[str, Any]) -> NetworkProblem:
        from optbench.data.store import dataset_fingerprint, get_dataset_info

        info = get_dataset_info(dataset)
        builder, arch, resolved, fields = make({**config, "_given": tuple(spec.kwargs)}, info)
        _, fingerprint = dataset_fingerprint(dataset)  # DataError (fetch/import commands) when missing
        full = resolve_recipe_options({**config, **resolved, "dataset": dataset, "data": fingerprint})
        return NetworkProblem(name, spec, full, dataset, info.n_classes, info.shape, builder, arch, doc,
                              target=target, **fields)

    register_problem(ProblemEntry(name, build, {**arch_params, **_common_params(batch_size)}, doc, "network",
                                  True, ("network", dataset)))


def _mlp_params() -> dict[str, Param]:
    return {
        "widths": _int_tuple("hidden layer widths", (1000, 500, 100), minimum=0),
        "width": _positive_int("hidden width of every layer (with depth; replaces widths)"),
        "depth": _positive_int("number of hidden layers (with width; replaces widths)"),
    }


def _make_mlp(config: dict[str, Any], info):
    widths = tuple(config["widths"])
    if config["width"] is not None or config["depth"] is not None:
        if "widths" in config.get("_given", ()):
            raise SpecError("Give either widths=(…) or width=/depth=, not both.")
        widths = (config["width"] or 512,) * (config["depth"] or 3)
    in_features = math.prod(info.shape)
    arch = f"mlp {in_features}-" + "-".join(map(str, widths + (info.n_classes,)))
    dropout = float(config["dropout"])
    return (lambda: build_mlp(in_features, widths, info.n_classes, dropout)), arch, {"widths": widths}, {}


def _cnn_params() -> dict[str, Param]:
    return {
        "channels": _int_tuple("channels of the three conv layers", (64, 96, 128), minimum=3),
        "hidden": _int_tuple("widths of the fully connected layers", (512, 256), minimum=0),
    }


def _make_cnn(config: dict[str, Any], info):
    channels, hidden = tuple(config["channels"]), tuple(config["hidden"])
    if len(channels) != 3:
        raise SpecError(f"channels={channels!r}: the 3c3d network has exactly three conv layers.")
    arch = f"3c3d conv{channels} fc{hidden + (info.n_classes,)}"
    dropout = float(config["dropout"])
    return ((lambda: build_3c3d(info.shape[0], channels, hidden, info.n_classes, dropout)), arch, {},
            {"channels_last": info.shape[0] > 1})


def _resnet_params() -> dict[str, Param]:
    return {
        "stem": _positive_int("channels of the stem convolution", 32),
        "widths": _int_tuple("channels of each conv group (each halves the resolution)", (64, 256, 256)),
        "depth": _positive_int("convolutions per group: 1 + (depth − 1) residual units", 2),
        "augment": Param(2, "random crop of ±N pixels (reflect padding) + horizontal flip, on the device "
                         "(0: off)", lambda v: 0 <= v <= 8, "an integer in 0..8", types=(int,)),
    }


RESNET_EVAL_TARGETS = {
    "cifar10": (0.94, "airbench94's test accuracy with the default widths (Jordan 2024); optbench's recipe-free "
                      "training needs more epochs than airbench's 9.9"),
    "cifar100": (0.60, "optbench's choice for the default widths: no published airbench figure"),
}


def _make_resnet(config: dict[str, Any], info):
    stem, widths, depth = int(config["stem"]), tuple(config["widths"]), int(config["depth"])
    if info.shape[1] % (2 ** len(widths)):
        raise SpecError(f"widths={widths!r}: {len(widths)} groups halve {info.shape[1]}×{info.shape[2]} inputs "
                        f"{len(widths)} times; use at most {int(math.log2(info.shape[1]))} groups.")
    arch = f"resnet stem{stem} widths{widths} depth{depth} bn"
    dropout = float(config["dropout"])
    fields: dict[str, Any] = {"augment": int(config["augment"]), "channels_last": True}
    defaults = {"stem": 32, "widths": (64, 256, 256), "depth": 2}
    if all(tuple(config[k]) == v if isinstance(v, tuple) else config[k] == v for k, v in defaults.items()):
        value, source = RESNET_EVAL_TARGETS[info.name]
        fields["eval_target"] = EvalTarget("test_acc", value, source)
    return ((lambda: build_resnet(info.shape[0], stem, widths, depth, info.n_classes, dropout)), arch,
            {"widths": widths}, fields)


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
_network("cifar10-resnet", "airbench-style CNN with BatchNorm on CIFAR-10 (Jordan 2024, airbench94): stem 32, "
         "conv–pool–BN–GELU groups 64-256-256 with a residual unit each, max pool, linear; random crop ±2 px + "
         "flip on the device. f* = 0, target: train loss 0.1; result target: test accuracy ≥ 0.94 (airbench94).",
         "cifar10", _resnet_params(), 512, _make_resnet)
_network("cifar100-resnet", "airbench-style CNN with BatchNorm on CIFAR-100: as cifar10-resnet with 100 "
         "classes. f* = 0, target: train loss 0.1; result target: test accuracy ≥ 0.60 (optbench's choice).",
         "cifar100", _resnet_params(), 512, _make_resnet)
