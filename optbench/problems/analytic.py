"""Analytic landscapes: closed-form losses on R^d, batched over leading dimensions.

Every function maps a tensor of points ``[..., d]`` to losses ``[...]`` and computes in the points'
dtype (float64 by default). Each problem knows its dimension, default start, plot bounds, global
minima and the target used for "steps to target" (first step with ``loss - f* <= target``; for the
saddles, which have no minimum, the first step with ``loss <= target``).

Options shared by every analytic problem:

- ``start``: a tuple of ``dim`` numbers, or ``'random'`` (uniform in the plot bounds, from the run seed).
- ``noise``: standard deviation σ of Gaussian noise added to every gradient coordinate, seeded per run.
  The recorded loss is always the exact loss; noise only perturbs what the optimizer sees.

The stochastic sample model (every noisy problem: ``noise > 0``, and the noisy quadratic at any batch size).
At step t a run draws one sample ξ_t ~ N(0, diag(σ²)) (σ² = ``noise_std()²``: ``noise²`` plus the problem's
own ``noise_variance(batch_size)``), which defines the sampled function of that step

    f̃_t(x) = f(x) + ⟨ξ_t, x − x_t⟩        (x_t: the iterate the step starts from),

and every oracle the optimizer calls during that step is an oracle of f̃_t (:meth:`AnalyticProblem.sampled_loss`):
the gradient ∇f̃_t(x) = ∇f(x) + ξ_t, the loss value f̃_t(x) at any x, the directional derivative
∇f̃_t(x)·v = ∇f(x)·v + ξ_t·v, and the Hessian (and Hessian-vector products) ∇²f̃_t = ∇²f, which the noise
leaves exact. It is the linear (first-order) model of a mini-batch loss around x_t whose gradient noise is
ξ_t, so gradient, zero-order and forward-gradient methods see the same noise: SPSA's central difference
(f̃_t(x + cΔ) − f̃_t(x − cΔ)) / 2c = (f(x + cΔ) − f(x − cΔ)) / 2c + ξ_t·Δ. The loss value at x_t itself is
f(x_t): a mini-batch's constant offset is not modelled (it cancels in every difference a method takes within
a step). Exactly one ξ_t is drawn per step whatever the method calls (SGD's gradient, SPSA's two loss
values, L-BFGS's many evaluations), from the run's :class:`~optbench.problems.rng.NormalStream`, so a seed means
the same noise for every method, and gradient methods see ∇f(x_t) + ξ_t exactly as they always have.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from optbench.errors import SpecError
from optbench.params import Param, nonnegative, positive
from optbench.problems.base import ProblemEntry, register_problem
from optbench.problems.rng import NormalStream, torch_rand
from optbench.randomness import derive_seed
from optbench.spec import Spec


def _xp(x):
    """The array namespace of ``x``: numpy for numpy arrays (the batched engine's numpy path), else torch."""
    if isinstance(x, np.ndarray):
        return np
    import torch

    return torch


def _stack(x, parts):
    """``stack(parts, -1)`` in the namespace of ``x``; numpy fills a preallocated array (``np.stack`` costs
    several times the arithmetic at ``[1000]``)."""
    if isinstance(x, np.ndarray):
        out = np.empty(parts[0].shape + (len(parts),), dtype=x.dtype)
        for i, part in enumerate(parts):
            out[..., i] = part
        return out
    import torch

    return torch.stack(parts, -1)


ESCAPE_MARGIN = 0.5  # a run of an unbounded problem "escapes" beyond bounds widened by this share of their width
BLOWUP_FACTOR = 1e6  # a run diverges when loss - f* exceeds this multiple of max(1, f(start) - f*)


@dataclass(eq=False)
class AnalyticProblem:
    """A closed-form problem. ``loss`` takes ``[..., d]`` points and returns ``[...]`` losses; on a noisy
    problem the optimizer's oracles are those of ``sampled_loss`` (the module docstring's sample model)."""

    name: str
    spec: Spec
    config: dict[str, Any]
    dim: int
    fn: Callable[[Any], Any]
    bounds: tuple[tuple[float, float], ...]
    minima_points: tuple[tuple[float, ...], ...]
    f_min: float | None
    target: float
    default_start: tuple[float, ...]
    noise_variance: Callable[[int], Any] | None = None  # batch_size -> per-coordinate variance [d]
    grad_fn: Callable[[Any], Any] | None = None  # closed-form gradient [..., d] -> [..., d] (else autograd)
    formula: str = ""
    kind: str = "analytic"
    # loss and gradient take numpy arrays too (the batched engine's numpy path); registered problems say so
    numpy: bool = False
    # a numpy form of the loss alone where ``fn`` is torch-only (the noisy quadratic's spectrum): what the report
    # draws landscapes with (:meth:`numpy_loss`), so it needs no torch
    numpy_fn: Callable[[Any], Any] | None = None

    # ---- identity -------------------------------------------------------------------------
    @property
    def label(self) -> str:
        return str(self.spec)

    @property
    def unbounded(self) -> bool:
        return self.f_min is None

    @property
    def has_batch_size(self) -> bool:
        return self.noise_variance is not None

    @property
    def batch_size(self) -> int | None:
        return self.config.get("batch_size") if self.has_batch_size else None

    @property
    def noise(self) -> float:
        return float(self.config.get("noise", 0.0))

    @property
    def is_noisy(self) -> bool:
        return self.noise > 0 or self.has_batch_size

    # ---- math -----------------------------------------------------------------------------
    def loss(self, x):
        """Loss at points ``x`` of shape ``[..., d]``."""
        if x.shape[-1] != self.dim:
            raise ValueError(f"{self.name} expects points of dimension {self.dim}, got shape {tuple(x.shape)}")
        return self.fn(x)

    def numpy_loss(self, x):
        """Loss at numpy points ``x`` ``[..., d]`` without torch: ``fn`` itself where it takes numpy arrays
        (``numpy``), else ``numpy_fn``; None when the problem has no numpy form (a user's problem)."""
        fn = self.fn if self.numpy else self.numpy_fn
        if fn is None:
            return None
        if x.shape[-1] != self.dim:
            raise ValueError(f"{self.name} expects points of dimension {self.dim}, got shape {tuple(x.shape)}")
        return fn(x)

    def grad(self, x):
        """Exact gradient at ``x`` (``[..., d]``): the closed form where the problem has one, else autograd."""
        return self.loss_and_grad(x)[1]

    def loss_and_grad(self, x):
        """``(loss [...], gradient [..., d])`` at ``x``. Problems with a closed-form gradient (every registered
        one; each is tested against autograd to 1e-12) skip the autograd graph, which is about two thirds
        of the time of a small batched step; the loop engine, the reference, keeps autograd."""
        import torch

        if self.grad_fn is not None:
            return self.loss(x), self.grad_fn(x)
        with torch.enable_grad():
            xg = x.detach().requires_grad_(True)
            loss = self.loss(xg)
            (g,) = torch.autograd.grad(loss.sum(), xg)
        return loss.detach(), g

    @property
    def minima(self):
        """Global minima as a ``[M, d]`` float64 tensor (M = 0 for problems unbounded below)."""
        import torch

        return torch.tensor(self.minima_points, dtype=torch.float64).reshape(-1, self.dim)

    @property
    def start(self):
        """The configured start as a ``[d]`` tensor, or the string ``'random'``."""
        import torch

        start = self.config.get("start")
        if start == "random":
            return "random"
        return torch.tensor(start if start is not None else self.default_start, dtype=torch.float64)

    def start_points(self, seeds: Sequence[int], dtype=None, device=None):
        """Start points ``[K, d]`` for runs with these seeds (random starts drawn from each seed)."""
        import torch

        dtype = dtype or torch.float64
        start = self.start
        if isinstance(start, str):
            lo = torch.tensor([b[0] for b in self.bounds], dtype=torch.float64)
            hi = torch.tensor([b[1] for b in self.bounds], dtype=torch.float64)
            rows = []
            for seed in seeds:
                g = torch.Generator().manual_seed(derive_seed(seed, "start"))
                rows.append(lo + torch.rand(self.dim, generator=g, dtype=torch.float64) * (hi - lo))
            points = torch.stack(rows)
        else:
            points = start.expand(len(seeds), self.dim).clone()
        return points.to(dtype=dtype, device=device)

    def start_points_numpy(self, seeds: Sequence[int]) -> np.ndarray:
        """:meth:`start_points` as a float64 numpy array, bit for bit, without torch (random starts from
        the same Mersenne Twister draws: :func:`optbench.problems.rng.torch_rand`)."""
        start = self.config.get("start")
        if start == "random":
            lo = np.array([b[0] for b in self.bounds], dtype=np.float64)
            hi = np.array([b[1] for b in self.bounds], dtype=np.float64)
            return np.stack([lo + torch_rand(derive_seed(seed, "start"), self.dim) * (hi - lo) for seed in seeds])
        point = np.array(start if start is not None else self.default_start, dtype=np.float64)
        return np.tile(point, (len(seeds), 1))

    def noise_std_numpy(self) -> np.ndarray | None:
        """:meth:`noise_std` in float64 numpy, for problems whose noise is ``noise=σ`` only (``self.numpy``)."""
        if self.noise_variance is not None:
            raise ValueError(f"{self.name}: its noise variance is a torch function")
        return None if self.noise == 0 else np.full(self.dim, math.sqrt(self.noise**2))

    def escape_box_numpy(self) -> tuple[np.ndarray, np.ndarray]:
        """:meth:`escape_box` as float64 numpy arrays."""
        lo = np.array([b[0] for b in self.bounds], dtype=np.float64)
        hi = np.array([b[1] for b in self.bounds], dtype=np.float64)
        width = hi - lo
        return lo - ESCAPE_MARGIN * width, hi + ESCAPE_MARGIN * width

    def noise_std(self, dtype=None, device=None):
        """Per-coordinate standard deviation ``[d]`` of the gradient noise, or None when exact."""
        import torch

        var = torch.zeros(self.dim, dtype=torch.float64)
        if self.noise_variance is not None:
            var = var + self.noise_variance(self.batch_size)
        var = var + self.noise**2
        if not bool((var > 0).any()):
            return None
        return var.sqrt().to(dtype=dtype or torch.float64, device=device)

    def sampled_loss(self, x, anchor, sample):
        """The step's sampled function f̃_t(x) = f(x) + ⟨ξ_t, x − x_t⟩ at points ``x`` ``[..., d]`` (module
        docstring: the stochastic sample model), for the sample ``ξ_t`` (``[d]``, or None on a noise-free
        problem: then f itself) drawn at the step's start ``x_t`` = ``anchor``; differentiable in ``x``."""
        loss = self.loss(x)
        return loss if sample is None else loss + self.sample_offset(x, anchor, sample)

    @staticmethod
    def sample_offset(x, anchor, sample):
        """⟨ξ_t, x − x_t⟩ ``[...]``: what the step's sample adds to the loss value at ``x``."""
        return ((x - anchor) * sample).sum(-1)

    def noise_stream(self, seeds: Sequence[int], dtype=None, device=None) -> NormalStream | None:
        """The runs' gradient-noise stream (:class:`optbench.problems.rng.NormalStream`), drawing torch
        tensors of ``dtype`` on ``device``; None on a noise-free problem."""
        if self.noise_std() is None:
            return None
        import torch

        return NormalStream(list(seeds), self.dim, torch_dtype=dtype or torch.float64, device=device)

    def escape_box(self):
        """``(lo, hi)`` tensors beyond which a run of an unbounded problem counts as escaped."""
        import torch

        lo = torch.tensor([b[0] for b in self.bounds], dtype=torch.float64)
        hi = torch.tensor([b[1] for b in self.bounds], dtype=torch.float64)
        width = hi - lo
        return lo - ESCAPE_MARGIN * width, hi + ESCAPE_MARGIN * width

    def blowup_level(self, start_loss: float) -> float:
        if self.f_min is None:
            return math.inf
        return self.f_min + BLOWUP_FACTOR * max(1.0, start_loss - self.f_min)

    def blowup_levels(self, start_losses: np.ndarray) -> np.ndarray:
        """:meth:`blowup_level` of each of a numpy array of start losses (NaN counts as 1, as ``max`` does)."""
        if self.f_min is None:
            return np.full(np.shape(start_losses), math.inf)
        return self.f_min + BLOWUP_FACTOR * np.fmax(1.0, start_losses - self.f_min)

    def distance_to_minimum(self, x):
        """Euclidean distance from points ``[..., d]`` to the nearest global minimum (NaN when none); a
        numpy array in, a numpy array out (the results tables are numpy), else torch."""
        if isinstance(x, np.ndarray):
            m = np.asarray(self.minima_points, dtype=np.float64).reshape(-1, self.dim)
            if not len(m):
                return np.full(x.shape[:-1], np.nan)
            return np.sqrt(((x[..., None, :] - m) ** 2).sum(-1)).min(-1)
        import torch

        m = self.minima.to(dtype=x.dtype, device=x.device)
        if m.numel() == 0:
            return torch.full(x.shape[:-1], float("nan"), dtype=x.dtype, device=x.device)
        return torch.cdist(x.reshape(-1, self.dim), m).min(dim=-1).values.reshape(x.shape[:-1])

    def describe(self) -> dict[str, Any]:
        return {
            "name": self.name, "spec": self.label, "kind": self.kind, "dim": self.dim,
            "bounds": self.bounds, "minima": self.minima_points, "f_min": self.f_min, "target": self.target,
            "start": self.config.get("start") or self.default_start, "noise": self.noise,
            "batch_size": self.batch_size, "formula": self.formula,
        }


# ---- registration helpers -------------------------------------------------------------------

def _start_check(value: Any) -> bool:
    return value == "random" or (isinstance(value, tuple) and all(
        isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) for v in value))


def _common_params() -> dict[str, Param]:
    return {
        "start": Param(None, "start point: a tuple of dim numbers, or 'random' (uniform in the bounds)",
                       _start_check, "a tuple of numbers or 'random'", types=(tuple, list, str)),
        "noise": nonnegative("σ of the Gaussian sample noise, seeded per run: added to each gradient coordinate "
                              "and seen by every other oracle of the step (loss values, directional "
                              "derivatives)", 0.0),
    }


def _dim_param(default: int = 2) -> Param:
    return Param(default, "dimension", lambda v: isinstance(v, int) and 1 <= v <= 100_000,
                 "an integer in [1, 100000]", types=(int,))


def _analytic(name: str, doc: str, params: dict[str, Param] | None = None, has_batch_size: bool = False,
              tags: tuple[str, ...] = ()):
    """Decorator: register ``make(config) -> dict of AnalyticProblem fields`` as problem ``name``."""

    def wrap(make: Callable[[dict[str, Any]], dict[str, Any]]):
        def build(spec: Spec, config: dict[str, Any]) -> AnalyticProblem:
            fields = make(config)
            # every registered landscape computes in numpy too, except those whose noise model is torch's
            problem = AnalyticProblem(name=name, spec=spec, config=config, formula=doc,
                                      numpy=fields.get("noise_variance") is None, **fields)
            start = config.get("start")
            if isinstance(start, tuple) and len(start) != problem.dim:
                raise SpecError(
                    f"problem {name!r}: start={start!r} has {len(start)} coordinates; "
                    f"this problem has dimension {problem.dim}."
                )
            return problem

        register_problem(ProblemEntry(name, build, {**_common_params(), **(params or {})},
                                      doc, "analytic", has_batch_size, tags))
        return make

    return wrap


def _square(lo: float, hi: float, dim: int) -> tuple[tuple[float, float], ...]:
    return tuple((lo, hi) for _ in range(dim))


# ---- the problems ---------------------------------------------------------------------------

@_analytic("rosenbrock", "Rosenbrock: Σ b(x[i+1] − x[i]²)² + (1 − x[i])²; minimum 0 at (1, …, 1).",
           {"dim": Param(2, "dimension (>= 2)", lambda v: isinstance(v, int) and 2 <= v <= 100_000,
                         "an integer in [2, 100000]", types=(int,)),
            "b": positive("curvature of the valley", 100.0)}, tags=("valley", "classic"))
def _rosenbrock(c):
    d, b = c["dim"], c["b"]

    def fn(x):
        return (b * (x[..., 1:] - x[..., :-1] ** 2) ** 2 + (1 - x[..., :-1]) ** 2).sum(-1)

    def grad(x):
        # with r_i = x[i+1] − x[i]²: ∂/∂x[i] = −4b r_i x[i] − 2(1 − x[i]) (as a left end), + 2b r_{i−1}
        a = x[..., :-1]
        r = x[..., 1:] - a * a
        left = -4 * b * r * a - 2 * (1 - a)
        if d == 2:
            return _stack(x, (left[..., 0], 2 * b * r[..., 0]))
        g = _xp(x).zeros_like(x)
        g[..., :-1] = left
        g[..., 1:] += 2 * b * r
        return g

    start = tuple(-1.2 if i % 2 == 0 else 1.0 for i in range(d))
    bounds = ((-2.0, 2.0), (-1.0, 3.0)) + _square(-2.0, 2.0, d - 2)
    return dict(dim=d, fn=fn, grad_fn=grad, bounds=bounds, minima_points=((1.0,) * d,), f_min=0.0,
                target=1e-4, default_start=start)


@_analytic("saddle", "Saddle: x² − y²; a saddle point at the origin, unbounded below along y.",
           tags=("saddle",))
def _saddle(c):
    return dict(dim=2, fn=lambda x: x[..., 0] ** 2 - x[..., 1] ** 2,
                grad_fn=lambda x: _stack(x, (2 * x[..., 0], -2 * x[..., 1])), bounds=_square(-2.0, 2.0, 2),
                minima_points=(), f_min=None, target=-1.0, default_start=(1.5, 1e-3))


@_analytic("monkey-saddle", "Monkey saddle: x³ − 3xy²; a degenerate saddle at the origin, unbounded below.",
           tags=("saddle",))
def _monkey(c):
    def grad(x):
        a, b = x[..., 0], x[..., 1]
        return _stack(x, (3 * a**2 - 3 * b**2, -6 * a * b))

    return dict(dim=2, fn=lambda x: x[..., 0] ** 3 - 3 * x[..., 0] * x[..., 1] ** 2, grad_fn=grad,
                bounds=_square(-1.5, 1.5, 2), minima_points=(), f_min=None, target=-1.0,
                default_start=(0.5, 0.05))


@_analytic("valley", "Ill-conditioned quadratic ½(u² + κ v²), (u, v) = (x, y) rotated by `angle` degrees; "
           "minimum 0 at the origin.",
           {"kappa": Param(100.0, "condition number κ", lambda v: v >= 1, ">= 1"),
            "angle": Param(0.0, "rotation of the valley in degrees", lambda v: -360 <= v <= 360,
                           "in [-360, 360]")}, tags=("valley", "quadratic"))
def _valley(c):
    kappa, theta = c["kappa"], math.radians(c["angle"])
    cos, sin = math.cos(theta), math.sin(theta)

    def fn(x):
        u = cos * x[..., 0] + sin * x[..., 1]
        v = -sin * x[..., 0] + cos * x[..., 1]
        return 0.5 * (u**2 + kappa * v**2)

    def grad(x):
        u = cos * x[..., 0] + sin * x[..., 1]
        kv = kappa * (-sin * x[..., 0] + cos * x[..., 1])
        return _stack(x, (cos * u - sin * kv, sin * u + cos * kv))

    s0 = (-2.0, 0.5)
    start = (cos * s0[0] - sin * s0[1], sin * s0[0] + cos * s0[1])
    return dict(dim=2, fn=fn, grad_fn=grad, bounds=_square(-2.5, 2.5, 2), minima_points=((0.0, 0.0),), f_min=0.0,
                target=1e-6, default_start=start)


@_analytic("beale", "Beale: (1.5 − x + xy)² + (2.25 − x + xy²)² + (2.625 − x + xy³)²; minimum 0 at (3, 0.5).",
           tags=("classic",))
def _beale(c):
    def fn(x):
        a, b = x[..., 0], x[..., 1]
        return (1.5 - a + a * b) ** 2 + (2.25 - a + a * b**2) ** 2 + (2.625 - a + a * b**3) ** 2

    def grad(x):
        a, b = x[..., 0], x[..., 1]
        b2, b3 = b**2, b**3
        t1, t2, t3 = 1.5 - a + a * b, 2.25 - a + a * b2, 2.625 - a + a * b3
        return _stack(x, (2 * (t1 * (b - 1) + t2 * (b2 - 1) + t3 * (b3 - 1)),
                            2 * a * (t1 + 2 * t2 * b + 3 * t3 * b2)))

    return dict(dim=2, fn=fn, grad_fn=grad, bounds=_square(-4.5, 4.5, 2), minima_points=((3.0, 0.5),), f_min=0.0,
                target=1e-6, default_start=(1.0, 1.5))


HIMMELBLAU_MINIMA = (
    (3.0, 2.0),
    (-2.805118086952745, 3.131312518250573),
    (-3.779310253377747, -3.283185991286170),
    (3.584428340330492, -1.848126526964404),
)


@_analytic("himmelblau", "Himmelblau: (x² + y − 11)² + (x + y² − 7)²; four global minima with value 0.",
           tags=("multimodal",))
def _himmelblau(c):
    def fn(x):
        a, b = x[..., 0], x[..., 1]
        return (a**2 + b - 11) ** 2 + (a + b**2 - 7) ** 2

    def grad(x):
        a, b = x[..., 0], x[..., 1]
        p, q = a**2 + b - 11, a + b**2 - 7
        return _stack(x, (4 * a * p + 2 * q, 2 * p + 4 * b * q))

    return dict(dim=2, fn=fn, grad_fn=grad, bounds=_square(-5.0, 5.0, 2), minima_points=HIMMELBLAU_MINIMA, f_min=0.0,
                target=1e-6, default_start=(0.0, 0.0))


@_analytic("rastrigin", "Rastrigin: A·d + Σ (x² − A cos 2πx); minimum 0 at the origin, many local minima.",
           {"dim": _dim_param(), "A": positive("amplitude of the cosine term", 10.0)}, tags=("multimodal",))
def _rastrigin(c):
    d, A = c["dim"], c["A"]

    def fn(x):
        return A * d + (x**2 - A * _xp(x).cos(2 * math.pi * x)).sum(-1)

    def grad(x):
        return 2 * x + (2 * math.pi * A) * _xp(x).sin(2 * math.pi * x)

    start = tuple(2.2 if i % 2 == 0 else -2.8 for i in range(d))
    return dict(dim=d, fn=fn, grad_fn=grad, bounds=_square(-5.12, 5.12, d), minima_points=((0.0,) * d,), f_min=0.0,
                target=1e-6, default_start=start)


@_analytic("ackley", "Ackley: −20 exp(−0.2 √(mean x²)) − exp(mean cos 2πx) + 20 + e; minimum 0 at the origin.",
           {"dim": _dim_param()}, tags=("multimodal",))
def _ackley(c):
    d = c["dim"]

    def fn(x):
        xp = _xp(x)
        # clamp keeps the gradient finite (zero) at the cone tip, where √ has no derivative
        if xp is np:
            r = np.sqrt(np.maximum((x**2).mean(-1), np.finfo(x.dtype).tiny))
        else:
            r = (x**2).mean(-1).clamp_min(xp.finfo(x.dtype).tiny).sqrt()
        return -20 * xp.exp(-0.2 * r) - xp.exp(xp.cos(2 * math.pi * x).mean(-1)) + 20 + math.e

    def grad(x):
        torch = _xp(x)  # numpy or torch: the same calls

        # ∂/∂x_i = 4 e^(−0.2 r) x_i / (d r) + (2π/d) e^(mean cos 2πx) sin 2πx_i; the first term is 0 where
        # the clamp is active (at the cone tip), as autograd's clamp gives
        ms = (x**2).mean(-1)
        tiny = torch.finfo(x.dtype).tiny
        r = torch.sqrt(torch.maximum(ms, torch.full_like(ms, tiny)))  # ms.clamp_min(tiny).sqrt()
        cone = torch.where(ms > tiny, 4 * torch.exp(-0.2 * r) / (d * r), torch.zeros_like(r))
        angle = 2 * math.pi * x
        wave = (2 * math.pi / d) * torch.exp(torch.cos(angle).mean(-1))
        return cone[..., None] * x + wave[..., None] * torch.sin(angle)

    start = tuple(2.5 if i % 2 == 0 else -3.5 for i in range(d))
    return dict(dim=d, fn=fn, grad_fn=grad, bounds=_square(-5.0, 5.0, d), minima_points=((0.0,) * d,), f_min=0.0,
                target=1e-4, default_start=start)


STYBLINSKI_TANG_ARGMIN = -2.903534027771178  # root of 4x³ − 32x + 5 = 0 (global)


@_analytic("styblinski-tang", "Styblinski–Tang: ½ Σ (x⁴ − 16x² + 5x); minimum −39.16616570377142·d at "
           "x = −2.903534027771178 in every coordinate.", {"dim": _dim_param()}, tags=("multimodal",))
def _styblinski_tang(c):
    d = c["dim"]
    a = STYBLINSKI_TANG_ARGMIN
    f_min = d * 0.5 * (a**4 - 16 * a**2 + 5 * a)

    def fn(x):
        return 0.5 * (x**4 - 16 * x**2 + 5 * x).sum(-1)

    def grad(x):
        return 2 * x**3 - 16 * x + 2.5

    start = tuple(0.5 if i % 2 == 0 else 4.0 for i in range(d))
    return dict(dim=d, fn=fn, grad_fn=grad, bounds=_square(-5.0, 5.0, d), minima_points=((a,) * d,), f_min=f_min,
                target=1e-4, default_start=start)


@_analytic(
    "noisy-quadratic",
    "Noisy quadratic model (Zhang et al. 2019, 'Which Algorithmic Choices Matter at Which Batch Sizes?'): "
    "loss ½ Σ h_i x_i² with h_i = i^(−p); the gradient seen by the optimizer is H x + ε, ε ~ N(0, H / B) for "
    "batch size B, so gradient noise variance scales as 1/B. Every oracle of a step sees that step's one ε: "
    "loss values are ½ Σ h_i x_i² + ⟨ε, x − x_t⟩ (x_t the step's start; directional derivatives H x·v + ε·v; "
    "the Hessian H is exact). Minimum 0 at the origin.",
    {"dim": _dim_param(100),
     "power": Param(1.0, "curvature spectrum h_i = i^(-power)", lambda v: 0 <= v <= 4, "in [0, 4]"),
     "batch_size": Param(1, "batch size B (noise variance h_i / B); a sweep axis via --batch-size",
                         lambda v: isinstance(v, int) and v >= 1, "an integer >= 1", types=(int,))},
    has_batch_size=True, tags=("quadratic", "noisy"),
)
def _noisy_quadratic(c):
    d, p = c["dim"], c["power"]
    if p in (0.0, 1.0):  # torch's i^(−p) is 1 or the correctly rounded 1/i: numpy gives the same bits, without torch
        h_numpy = np.ones(d) if p == 0.0 else 1.0 / np.arange(1, d + 1, dtype=np.float64)
    else:  # torch's pow (not correctly rounded, unlike numpy's), which the target and every run id depend on
        import torch

        h_numpy = (torch.arange(1, d + 1, dtype=torch.float64) ** (-p)).numpy()
    h_list = h_numpy.tolist()
    spectrum = []  # the torch tensor of h, made on first use (a report draws the landscape without torch)

    def h_torch():
        if not spectrum:
            import torch

            spectrum.append(torch.from_numpy(h_numpy))
        return spectrum[0]

    def fn(x):
        return 0.5 * (h_torch().to(dtype=x.dtype, device=x.device) * x**2).sum(-1)

    def grad(x):
        return h_torch().to(dtype=x.dtype, device=x.device) * x

    def numpy_fn(x):
        return 0.5 * (h_numpy.astype(x.dtype) * x**2).sum(-1)

    bounds = tuple((-1.5, 1.5) for _ in range(d))
    return dict(dim=d, fn=fn, grad_fn=grad, numpy_fn=numpy_fn, bounds=bounds, minima_points=((0.0,) * d,), f_min=0.0,
                target=1e-3 * 0.5 * sum(h_list), default_start=(1.0,) * d,
                noise_variance=lambda batch_size: h_torch() / batch_size)
