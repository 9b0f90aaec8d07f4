"""Training engines for the network track.

``run_network`` (the reference) trains one run with a real optimizer object; ``run_network_batched`` trains K
configurations (learning rates × seeds × other float hyperparameters) of one architecture at once with
torch.func: the K parameter vectors are one ``[K, P]`` tensor, forward and backward are ``vmap``-ed over it,
and the update is the batched rule of :mod:`optbench.engines.batched_rules` applied to the flattened
parameters; layer-wise rules (LAMB, LARS) get the parameter tensors' column ranges (a
:class:`~optbench.engines.layout.ParamLayout`) and take their norms per tensor, as the library classes do.
Each configuration reproduces its loop run.

The hot loop stays on the device: the dataset lives there as uint8 tensors, each epoch's order is one
permutation per run (drawn on the CPU from the run seed, so every device sees the same batches; one host→
device copy per epoch), and bytes become standardised inputs per batch on the device. The host waits
only at recorded rows, evaluations and every ``SYNC_EVERY`` steps. Evaluation (test loss and accuracy over
the whole test set, mean train loss since the previous evaluation) is kept out of ``wall_time_s``.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from optbench.cost import PeakMemory
from optbench.engines.batched_rules import ACCUMULATED, JOINT, LAYERS
from optbench.engines.loop import backward
from optbench.engines.recipe import PLAIN, Recipe, StepRecipe
from optbench.engines.recorder import DIVERGED, DONE, GroupTrace, RecorderBase, StepTicker, record_steps
from optbench.engines.step_rng import StepRandomness, isolated
from optbench.problems.base import AUGMENTATION, BUFFERS, DROPOUT, PARAM_GROUPS, Problem
from optbench.randomness import derive_seed

SYNC_EVERY = 50  # steps between host checks for "every run has ended" and progress updates
EVAL_BATCH = 1000  # test examples per evaluation forward pass
MAX_NET_GROUP = 32  # configurations per batched network group (memory: K copies of weights and activations)
NOISE_SCALE_BIG = 8  # the noise-scale estimate's big batch: this many times the run's batch size
NOISE_SCALE_PAIRS = 16  # (small, big) gradient pairs per estimate: ≈ 9 × 16 training steps of compute


def train_dtype(problem) -> torch.dtype:
    """Networks train in float32 (bf16 autocast keeps float32 weights) unless the spec says float64."""
    return torch.float64 if problem.precision == "float64" else torch.float32


def _autocast(problem, device: torch.device):
    if problem.precision == "bf16" and device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


def uses_channels_last(problem, device: torch.device) -> bool:
    return device.type == "cuda" and getattr(problem, "channels_last", False)


def cross_entropy(logits: torch.Tensor, y: torch.Tensor, label_smoothing: float = 0.0) -> torch.Tensor:
    """Mean cross-entropy over every prediction: logits ``[..., classes]`` against labels ``[...]`` (one label
    per example for classifiers, one per position for language models)."""
    return F.cross_entropy(logits.flatten(0, -2), y.flatten(), label_smoothing=label_smoothing)


class Augmentation:
    """airbench's augmentation, on the device: each training example is padded by ``pad`` pixels (reflect),
    cropped back at a random offset in ``[-pad, pad]²`` and flipped horizontally with probability 1/2. The
    offsets and flips are drawn once per epoch for every example, from the run seed on the CPU (one host→
    device copy per epoch, as the batch order), so every engine and device sees the same inputs."""

    def __init__(self, seed: int, n: int, pad: int, per_epoch: int, device):
        self.generator = torch.Generator().manual_seed(derive_seed(seed, "augment"))
        self.n, self.pad, self.per_epoch, self.device = n, pad, per_epoch, device
        self.epoch = -1
        self.offsets: torch.Tensor | None = None  # drawn per epoch, on the first call of each
        self.flips: torch.Tensor | None = None

    def __call__(self, t: int, idx: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """The augmented inputs ``x`` [b, C, H, W] of the examples ``idx`` at step ``t``."""
        if t // self.per_epoch != self.epoch:
            self.epoch = t // self.per_epoch
            self.offsets = torch.randint(0, 2 * self.pad + 1, (self.n, 2), generator=self.generator).to(self.device)
            self.flips = (torch.rand(self.n, generator=self.generator) < 0.5).to(self.device)
        assert self.offsets is not None and self.flips is not None  # the first call starts epoch 0
        b, _, h, w = x.shape
        padded = F.pad(x, (self.pad,) * 4, mode="reflect")
        off = self.offsets[idx]
        rows = (off[:, 0, None] + torch.arange(h, device=x.device))[:, None, :, None]  # [b, 1, H, 1]
        cols = (off[:, 1, None] + torch.arange(w, device=x.device))[:, None, None, :]  # [b, 1, 1, W]
        channels = torch.arange(x.shape[1], device=x.device)[None, :, None, None]
        cropped = padded[torch.arange(b, device=x.device)[:, None, None, None], channels, rows, cols]
        return torch.where(self.flips[idx][:, None, None, None], cropped.flip(-1), cropped)


class DropoutMasks:
    """Dropout masks for one run: before each forward pass of step t the default generator is seeded from
    the run seed and t, so the step's gradient and every closure call of that step see the same masks (one
    sampled function per step, like the mini-batch), and a run is reproducible. The engine runs inside
    ``torch.random.fork_rng``, leaving the caller's random state as it was."""

    def __init__(self, seed: int):
        self.seed = seed
        self.step_seed = 0

    def begin_step(self, t: int) -> None:
        self.step_seed = derive_seed(self.seed, f"dropout-{t}")
        self.reseed()

    def reseed(self) -> None:
        torch.manual_seed(self.step_seed)


class BatchOrder:
    """Mini-batch indices ``[K, b]`` for K runs: a fresh permutation of the training set per epoch and run,
    from the run seed. The last batch of an epoch is smaller when ``batch_size`` does not divide ``n``."""

    def __init__(self, seeds: Sequence[int], n: int, batch_size: int, device):
        self.generators = [torch.Generator().manual_seed(derive_seed(s, "batches")) for s in seeds]
        self.n, self.batch_size, self.device = n, batch_size, device
        self.per_epoch = -(-n // batch_size)
        self.i = self.per_epoch
        self.perm: torch.Tensor | None = None  # this epoch's order, drawn by the first next() of each

    def next(self) -> torch.Tensor:
        if self.i == self.per_epoch:
            perms = [torch.randperm(self.n, generator=g) for g in self.generators]
            self.perm = torch.stack(perms).to(self.device, non_blocking=True)
            self.i = 0
        assert self.perm is not None  # the first next() starts an epoch
        idx = self.perm[:, self.i * self.batch_size: (self.i + 1) * self.batch_size]
        self.i += 1
        return idx


class NetRecorder(RecorderBase):
    """What both network engines record for K runs: rows at the record grid plus every evaluation step,
    run ends (divergence: NaN/inf loss or loss above the problem's blow-up level), evaluation columns."""

    def __init__(self, problem, num_runs: int, steps: int, record_every: int, device, extra_steps=()):
        every = problem.eval_every
        self.eval_steps = set(range(0, steps + 1, every)) | {steps}
        grid = sorted(set(record_steps(steps, record_every)) | self.eval_steps | set(extra_steps))
        super().__init__(problem, num_runs, steps, grid, device)
        R, K = len(grid), num_runs
        opts = dict(dtype=torch.float64, device=device)
        self.loss = torch.full((R, K), math.nan, **opts)
        self.grad_norm = torch.full((R, K), math.nan, **opts)
        self.bits_per_byte = getattr(problem, "reports_bits_per_byte", False)
        # evaluation columns: test loss and accuracy (bits per byte too for a byte-level model), or a user task's
        # test_loss and test_<metric>s
        self.metrics = tuple(getattr(problem, "metric_columns", ("test_loss", "test_acc")))
        columns = (*self.metrics, "train_loss_avg") + (("test_bpb",) if self.bits_per_byte else ())
        self.extra = {k: np.full((R, K), math.nan) for k in columns}
        self.end_loss = torch.full((K,), math.nan, **opts)
        self.end_grad_norm = torch.full((K,), math.nan, **opts)
        self.end_wall = torch.zeros(K, **opts)
        self.window_sum = torch.zeros(K, **opts)  # train losses since the previous evaluation
        self.window_count = 0
        self.blowup: torch.Tensor | None = None

    def observe(self, t: int, loss: torch.Tensor, grad_norm: Callable[[], torch.Tensor],
                evaluate: Callable[[], dict[str, np.ndarray]]) -> None:
        """Step ``t``: mini-batch ``loss`` [K]; ``grad_norm()`` and ``evaluate()`` (``{column: [K]}`` for every
        column of ``self.metrics``) are called only when this step is recorded / evaluated."""
        loss = loss.detach().to(torch.float64)
        if t == 0:
            self.blowup = torch.tensor([self.problem.blowup_level(v) for v in loss.tolist()], dtype=torch.float64,
                                       device=self.device)
        assert self.blowup is not None  # set at step 0
        bad = ~torch.isfinite(loss) | (loss > self.blowup)
        ended = self.active & bad
        ending = self.active if t == self.steps else ended
        row = self.row_of.get(t)
        gn = None
        if row is not None:
            self.synchronize()
            gn = grad_norm().detach().to(torch.float64)
            self.loss[row], self.grad_norm[row] = loss, gn
        elapsed = self.elapsed()
        if row is not None:  # the same reading for the row and a run ending here
            self.wall[row] = elapsed
        self.end_step = torch.where(ending, t, self.end_step)
        self.end_loss = torch.where(ending, loss, self.end_loss)
        if gn is not None:
            self.end_grad_norm = torch.where(ending, gn, self.end_grad_norm)
        self.end_wall = torch.where(ending, elapsed, self.end_wall)
        self.active = self.active & ~ended
        self.diverged = self.diverged | ended
        if t in self.eval_steps:
            with self.exclude_time():
                alive = self.active.cpu().numpy()
                metrics = evaluate()
                mean = (self.window_sum / self.window_count).cpu().numpy() if self.window_count else math.nan
                columns = [*((m, metrics[m]) for m in self.metrics), ("train_loss_avg", mean)]
                if self.bits_per_byte:  # a byte-level model's loss in nats per byte, in bits
                    columns.append(("test_bpb", metrics["test_loss"] / math.log(2)))
                for name, values in columns:
                    self.extra[name][row] = np.where(alive, values, math.nan)
                self.window_sum.zero_()
                self.window_count = 0
        self.window_sum += loss
        self.window_count += 1

    def finish(self, memory: PeakMemory | None = None) -> GroupTrace:
        """The trace, with cost columns ``examples_per_s`` (a batched group's K runs share its clock: 1/K each,
        as ``step_time_s``; :mod:`optbench.time_to_result`) and (given ``memory``) the work item's peak memory."""
        from optbench.time_to_result import examples_seen

        def np_(t):
            return t.detach().cpu().numpy()

        K = self.K
        status = [DIVERGED if d else DONE for d in np_(self.diverged).tolist()]
        n_train, batch = self.problem.n_train, self.problem.batch_size
        end_step, end_train_s = np_(self.end_step), np_(self.end_wall) / K
        with np.errstate(divide="ignore", invalid="ignore"):
            throughput = np.where(end_train_s > 0, examples_seen(end_step, n_train, batch) / end_train_s, math.nan)
        cost = {"examples_per_s": throughput.astype(np.float64), **(memory.results(K) if memory else {})}
        return GroupTrace(
            steps=np.asarray(self.grid, dtype=np.int64),
            loss=np_(self.loss),
            grad_norm=np_(self.grad_norm),
            coords=None,
            wall_time_s=np.repeat(self.wall[:, None], K, axis=1),
            status=status,
            end_step=np_(self.end_step),
            end_loss=np_(self.end_loss),
            end_grad_norm=np_(self.end_grad_norm),
            end_x=np.zeros((K, 0)),
            end_wall_time_s=np_(self.end_wall),
            extra=self.extra,
            cost=cost,
        )


def _evaluate(logits_fn: Callable[[torch.Tensor], torch.Tensor], data, dtype, K: int, channels_last: bool):
    """``{test_loss, test_acc}`` ([K] each) over the whole test set; ``logits_fn(x)`` returns ``[K, b, classes]``."""
    n = data.test_y.numel()  # predictions: examples (classifiers) or positions (language models)
    total = torch.zeros(K, dtype=torch.float64, device=data.test_y.device)
    correct = torch.zeros(K, dtype=torch.float64, device=data.test_y.device)
    with torch.no_grad():
        for i in range(0, n, EVAL_BATCH):
            x = data.inputs(data.test_x[i: i + EVAL_BATCH], dtype)
            if channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
            y = data.test_y[i: i + EVAL_BATCH]
            logits = logits_fn(x).to(dtype)
            losses = F.cross_entropy(logits.flatten(0, -2), y.flatten().repeat(K), reduction="none").view(K, -1)
            total += losses.sum(1).double()
            correct += (logits.argmax(-1) == y).view(K, -1).sum(1).double()
    return {"test_loss": (total / n).cpu().numpy(), "test_acc": (correct / n).cpu().numpy()}


class NetClosure:
    """The closure for optimizers that re-evaluate the loss (L-BFGS, SPSA, forward gradients): the loss on
    the current mini-batch, with backward; ``loss_at(values)`` evaluates it at other parameter values."""

    def __init__(self, model, forward, names, loss_fn, masks: DropoutMasks | None = None):
        self.model, self.forward, self.names, self.loss_fn = model, forward, names, loss_fn
        self.masks = masks
        self.x = self.y = None
        self.create_graph = False  # backward(create_graph=True), for optimizers taking Hessian-vector products

    def __call__(self) -> torch.Tensor:
        for p in self.model.parameters():
            p.grad = None
        if self.masks is not None:
            self.masks.reseed()
        with torch.enable_grad():
            loss = self.loss_fn(self.forward(self.x), self.y)
            backward(loss, self.create_graph)
        return loss.detach()

    def loss_at(self, values: list[torch.Tensor]) -> torch.Tensor:
        params = dict(zip(self.names, values))
        if self.masks is not None:
            self.masks.reseed()
        return self.loss_fn(torch.func.functional_call(self.model, params, (self.x,)), self.y)


def _grad_norm(params: list[torch.Tensor]) -> torch.Tensor:
    grads = [p.grad for p in params if p.grad is not None]
    if not grads:
        return torch.tensor(math.nan, dtype=torch.float64, device=params[0].device)
    total_norm = getattr(torch.nn.utils, "get_total_norm", None)  # torch >= 2.6: one fused (foreach) call
    if total_norm is not None:
        return total_norm(grads).double()
    return torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(g) for g in grads]).double())


class NoiseScaleProbe:
    """The gradient noise scale B_simple at the current parameters (:mod:`optbench.noise_scale`), from
    ``NOISE_SCALE_PAIRS`` pairs of mini-batch gradients at B_small = the run's batch size and B_big =
    ``NOISE_SCALE_BIG`` × B_small. Examples are drawn with replacement (i.i.d., as the estimator assumes) by
    a generator of its own, seeded from the run seed and the step, and gradients come from
    ``torch.autograd.grad``: the training batches, ``.grad`` and the optimizer state are untouched, so the
    trajectory is bitwise the same as without the probe. Models without dropout or batch norm only."""

    def __init__(self, model, params, loss_fn, data, dtype, amp, seed: int, batch_size: int):
        self.model, self.params, self.loss_fn, self.data = model, params, loss_fn, data
        self.dtype, self.amp, self.seed = dtype, amp, seed
        self.b_small, self.b_big = batch_size, NOISE_SCALE_BIG * batch_size

    def _sq_norm(self, gen: torch.Generator, b: int) -> torch.Tensor:
        idx = torch.randint(self.data.n_train, (b,), generator=gen).to(self.data.train_y.device)
        x, y = self.data.inputs(self.data.train_x[idx], self.dtype), self.data.train_y[idx]
        with torch.enable_grad(), self.amp:
            loss = self.loss_fn(self.model(x), y)
        grads = torch.autograd.grad(loss, self.params)
        return sum(g.double().pow(2).sum() for g in grads)

    def __call__(self, t: int):
        from optbench.noise_scale import noise_scale_from_norms

        gen = torch.Generator().manual_seed(derive_seed(self.seed, f"noise-scale-{t}"))
        norms = torch.stack([torch.stack([self._sq_norm(gen, self.b_small), self._sq_norm(gen, self.b_big)])
                             for _ in range(NOISE_SCALE_PAIRS)]).cpu().numpy()  # one host sync
        return noise_scale_from_norms(norms[:, 0], norms[:, 1], self.b_small, self.b_big)


def run_network(problem: Problem, optimizer, seed: int, steps: int, record_every: int = 1, *, device="cpu",
                dtype=None, progress=None, recipe: Recipe = PLAIN) -> GroupTrace:
    """Train one run with a real optimizer object (K = 1). ``dtype`` (the sweep's, meant for analytic problems)
    is ignored: networks train in the problem's ``precision``. ``recipe`` (:class:`Recipe`): schedule, clipping,
    label smoothing and the noise-scale probe; ``recipe.noise_scale_every=N`` estimates the gradient
    noise scale at steps 0, N, 2N, … ≤ ``steps`` (:class:`NoiseScaleProbe`; extra columns ``noise_scale`` and
    ``noise_scale_stderr``, NaN elsewhere; the time it takes is kept out of ``wall_time_s``).

    The model trains in train mode and is evaluated in eval mode (BatchNorm: batch statistics for training,
    running statistics for evaluation; dropout off). BatchNorm's running statistics move once per step, with
    the step's own forward pass: the optimizer's extra closure calls (L-BFGS, SPSA, …) leave them as they were.
    Dropout masks come from :class:`DropoutMasks`, augmentation from :class:`Augmentation`.

    A ``create_graph`` optimizer gets ``backward(create_graph=True)``; a ``schedule_free`` one is put in
    ``eval()`` for the recorded loss, gradient norm and evaluation of every step (the point it reports) and in
    ``train()`` for a second forward/backward on the same batch that its step uses."""
    features: frozenset[str] = getattr(problem, "features", frozenset())
    if recipe.noise_scale_every and features & {BUFFERS, DROPOUT}:
        from optbench.errors import UsageError

        raise UsageError(f"--noise-scale-every needs a model without BatchNorm or dropout; {problem.label} has "
                         f"{', '.join(sorted(features & {BUFFERS, DROPOUT}))}.")
    device = torch.device(device)
    with isolated(device):  # dropout masks and the optimizer's own draws seed the global generator
        return _run_network(problem, optimizer, seed, steps, record_every, device, progress, recipe, features)


def _run_network(problem, optimizer, seed, steps, record_every, device, progress, recipe: Recipe,
                 features) -> GroupTrace:
    label_smoothing, noise_scale_every = recipe.label_smoothing, recipe.noise_scale_every
    dtype = train_dtype(problem)
    data = problem.device_data(device)
    memory = PeakMemory(device)  # after the data, which every run of the problem shares
    model = problem.make_model(seed, device, dtype)
    channels_last = uses_channels_last(problem, device)
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    names = [n for n, _ in model.named_parameters()]
    params = list(model.parameters())
    groups = (problem.param_groups(model, "weight_decay" in optimizer.hyperparams)
              if PARAM_GROUPS in features else params)
    randomness = StepRandomness(seed, device)  # what the class draws from torch's global generator
    randomness.before(-1)
    opt = optimizer.entry.build(groups, optimizer.hyperparams, dtype=dtype, seed=seed)
    forward = torch.compile(model) if problem.config["compile"] and device.type == "cuda" else model
    amp = _autocast(problem, device)
    masks = DropoutMasks(seed) if DROPOUT in features else None
    buffers = list(model.buffers()) if BUFFERS in features and optimizer.entry.needs_closure else []
    augment = (Augmentation(seed, data.n_train, problem.augment, problem.steps_per_epoch(), device)
               if AUGMENTATION in features else None)

    own = getattr(problem, "criterion", None)  # a user training task's own loss (optbench.problems.user)
    if own is not None:
        loss_fn = own(dtype, label_smoothing)
    else:
        def loss_fn(logits, y):
            return cross_entropy(logits.to(dtype), y, label_smoothing)

    closure = NetClosure(model, forward, names, loss_fn, masks)
    per_step = StepRecipe(recipe, opt, optimizer, steps)
    order = BatchOrder([seed], data.n_train, problem.batch_size, device)
    probe_steps = range(0, steps + 1, noise_scale_every) if noise_scale_every else range(0)
    rec = NetRecorder(problem, 1, steps, record_every, device, extra_steps=probe_steps)
    probe = None
    if noise_scale_every:
        probe = NoiseScaleProbe(model, params, loss_fn, data, dtype, amp, seed, problem.batch_size)
        for name in ("noise_scale", "noise_scale_stderr"):
            rec.extra[name] = np.full((len(rec.grid), 1), math.nan)

    def evaluate():
        model.eval()
        try:
            if hasattr(problem, "evaluate"):  # a user training task: its loss and metrics
                return problem.evaluate(forward, data, dtype, EVAL_BATCH)
            return _evaluate(lambda x: forward(x)[None], data, dtype, 1, channels_last)
        finally:
            model.train()

    model.train()
    needs_closure, accumulates = optimizer.entry.needs_closure, optimizer.entry.accumulates_grad
    schedule_free, create_graph = optimizer.entry.schedule_free, optimizer.entry.create_graph
    closure.create_graph = create_graph
    ticker = StepTicker(progress, 1, steps, SYNC_EVERY)
    for t in range(steps + 1):
        idx = order.next()[0]
        x, y = data.inputs(data.train_x[idx], dtype), data.train_y[idx]
        if augment is not None:
            x = augment(t, idx, x)
        if channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        if schedule_free and t > 0:  # before the first step both points are x₀ (SPlus has no state to switch)
            opt.eval()  # record and evaluate the point the method reports (x), train at its training point (y)
        kept = [p.grad for p in params] if accumulates else None  # the class's buffers in .grad (SCIONLight)
        for p in params:
            p.grad = None
        if masks is not None:
            masks.begin_step(t)
        with amp:
            logits = forward(x)
        loss = loss_fn(logits, y)
        backward(loss, create_graph)  # create_graph: Hessian-vector products of .grad
        rec.observe(t, loss.detach()[None], lambda: _grad_norm(params)[None], evaluate)
        if kept is not None:  # backward() adds to .grad: each buffer plus this step's gradient
            for p, buffer in zip(params, kept):
                if buffer is not None and p.grad is not None:
                    p.grad.add_(buffer)
        if schedule_free and 0 < t < steps:
            opt.train()
            for p in params:
                p.grad = None
            with amp:
                logits = forward(x)
            backward(loss_fn(logits, y), create_graph)
        if probe is not None and t % noise_scale_every == 0 and bool(rec.active[0]):
            with rec.exclude_time():  # measurement, not training: out of wall_time_s
                estimate = probe(t)
                rec.extra["noise_scale"][rec.row_of[t], 0] = estimate.b_simple
                rec.extra["noise_scale_stderr"][rec.row_of[t], 0] = estimate.stderr
        if t == steps:
            break
        if ticker.tick(t, rec):
            break
        per_step.clip_(params)
        per_step.set_lr(t)
        randomness.before(t)
        if needs_closure:
            closure.x, closure.y = x, y
            kept = [b.clone() for b in buffers]  # running statistics after this step's own forward pass
            opt.step(closure)
            for b, value in zip(buffers, kept):
                b.copy_(value)
        else:
            opt.step()
    ticker.close()
    for p in params:
        p.grad = None  # create_graph leaves a reference cycle between a parameter and its gradient
    return rec.finish(memory)


def _batched_grad_norm(grads) -> torch.Tensor:
    """‖g‖₂ per configuration ``[K]`` from per-parameter ``[K, n]`` gradients: the norm of the per-tensor norms
    (as ``_grad_norm`` of the loop engine and ``torch.nn.utils.clip_grad_norm_``)."""
    return torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(g, dim=1) for g in grads], dim=1), dim=1)


# what run_network_batched gives a rule (batched_rules.Rule.needs): each parameter tensor's layout (norms per
# tensor), and all tensors in one step for a rule with a whole-model statistic
BATCHED_PROVIDES = frozenset({LAYERS, JOINT, ACCUMULATED})


def _accumulated(grad, state):
    """The gradient a step of an ``ACCUMULATED`` rule sees: added to the buffer the class left in ``.grad``."""
    buffer = state.get("grad_buffer")
    return grad if buffer is None else grad + buffer
BATCHED_RECIPE: frozenset[str] = frozenset()  # no schedule, clipping, label smoothing, … (they run on the loop)
# the model features (NetworkProblem.features) it runs: none of BatchNorm buffers (vmap cannot update K sets of
# running statistics in place), dropout (one mask stream per run), augmentation or parameter groups
BATCHED_FEATURES: frozenset[str] = frozenset()


def run_network_batched(problem, optimizers: Sequence[Any], seeds: Sequence[int], steps: int,
                        record_every: int = 1, *, device="cpu", dtype=None, progress=None) -> GroupTrace:
    """Train K = len(seeds) configurations (``optimizers[k]`` with ``seeds[k]``) of one batched rule at once."""
    from torch.func import functional_call, grad_and_value, vmap

    from optbench.engines.batched import stack_hyperparams
    from optbench.engines.batched_rules import RULES, check_needs
    from optbench.engines.fused import fused_update
    from optbench.engines.layout import ParamLayout

    if len(optimizers) != len(seeds):
        raise ValueError("one optimizer config per seed")
    check_needs(optimizers[0], BATCHED_PROVIDES, "batched network engine")
    unsupported = set(getattr(problem, "features", ())) - BATCHED_FEATURES
    if unsupported:
        from optbench.errors import UsageError

        raise UsageError(f"The batched network engine does not support {', '.join(sorted(unsupported))} "
                         f"({problem.label}); use --engine loop.")
    device = torch.device(device)
    dtype = train_dtype(problem)
    K = len(seeds)
    data = problem.device_data(device)
    memory = PeakMemory(device)
    model = problem.build_model().to(device=device, dtype=dtype)  # the architecture; its own weights unused
    shapes = {n: p.shape for n, p in model.named_parameters()}
    inits = [problem.init_params(s) for s in seeds]
    # one [K, *shape] tensor per parameter, updated in place through its [K, numel] view: no flattened copy of
    # all parameters, and gradients stay per parameter (vmap returns them so)
    views = {n: torch.stack([init[n] for init in inits]).to(device, dtype).contiguous() for n in shapes}
    columns = {n: v.view(K, -1) for n, v in views.items()}
    hp = stack_hyperparams(optimizers, dtype, device)
    rule = RULES[optimizers[0].entry.batched]
    # Adam and AdamW: torch's fused kernel, one call per configuration (optbench.engines.fused); else the rule,
    # tensor by tensor (as torch.optim)
    fused = fused_update(optimizers[0].entry.batched, optimizers, list(columns.values()))
    joint = fused is None and JOINT in rule.needs  # one step over all tensors: [K, P] joined each step
    sizes = [columns[n].shape[1] for n in shapes]
    if joint:
        states = {"": rule.init(torch.cat(list(columns.values()), dim=1), hp)}
        states[""]["layout"] = ParamLayout(list(shapes.values()), device)
    else:
        states = {} if fused is not None else {n: rule.init(columns[n], hp) for n in shapes}
    if fused is None and not joint and LAYERS in rule.needs:  # a layer-wise rule's norms: each tensor its layer
        for n, shape in shapes.items():
            states[n]["layout"] = ParamLayout([shape], device)
    amp = _autocast(problem, device)

    def loss_fn(params, x, y):
        with amp:
            logits = functional_call(model, params, (x,))
        return cross_entropy(logits.to(dtype), y)

    grad_and_loss = vmap(grad_and_value(loss_fn))
    batched_logits = vmap(lambda p, x: functional_call(model, p, (x,)), in_dims=(0, None))
    order = BatchOrder(seeds, data.n_train, problem.batch_size, device)
    rec = NetRecorder(problem, K, steps, record_every, device)
    evaluate = lambda: _evaluate(lambda x: batched_logits(views, x), data, dtype, K, False)  # noqa: E731
    shape = problem.input_shape
    ticker = StepTicker(progress, K, steps, SYNC_EVERY)
    for t in range(steps + 1):
        idx = order.next()
        b = idx.shape[1]
        x = data.inputs(data.train_x[idx.reshape(-1)], dtype).view(K, b, *shape)
        y = data.train_y[idx]
        grads, loss = grad_and_loss(views, x, y)
        g = {n: grads[n].reshape(K, -1) for n in shapes}
        rec.observe(t, loss, lambda: _batched_grad_norm(g.values()), evaluate)  # noqa: B023
        if t == steps:
            break
        if fused is not None:
            fused.step(list(g.values()))
        elif joint:
            whole = torch.cat(list(columns.values()), dim=1)
            rule.step(whole, _accumulated(torch.cat([g[n] for n in shapes], dim=1), states[""]), states[""], hp,
                      t + 1)
            for column, part in zip(columns.values(), whole.split(sizes, dim=1)):
                column.copy_(part)
        else:
            for n in shapes:
                rule.step(columns[n], _accumulated(g[n], states[n]), states[n], hp, t + 1)
        if ticker.tick(t, rec):
            break
    ticker.close()
    return rec.finish(memory)
