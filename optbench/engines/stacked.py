"""K trials of one optimizer that differ only in lr, as **one** real optimizer object.

The side-by-side pass (:mod:`optbench.engines.trials`) keeps one optimizer object per trial, so its floor is
the library's own ``step()`` once per trial and step, framework overhead included. Many optimizers of the
catalogue are **linear in lr**: the step is ``x ← x − η·u`` where the direction ``u`` does not depend on η (the
decoupled decay ``x ← x(1 − ηλ)`` is of that form too: ``u`` holds ``λx``). K configurations of such a class that
differ only in η share one object stepped with η = 1, and each trial's point is rescaled after the step:

    P ← x;  P.grad ← g;  step() with lr = 1;  u = x − P;  x ← x − η_k u   (trial k)

so the update is the library's own code, not a re-implementation. Three layouts (:data:`LAYOUTS`), fastest first:

- ``stacked``: one ``[K·d]`` parameter for all K trials, for classes that are also **elementwise** (each
  coordinate's update depends only on that coordinate): one library ``step()`` does every trial's work;
- ``tensors``: K parameters ``[d]`` in one parameter group, for classes whose statistics are per tensor (a norm,
  an RMS, a factored second moment): one ``step()`` call, the class's loop over its parameters inside it;
- ``groups``: K parameters in K parameter groups, each with its trial's own lr and no rescaling, for classes
  that use η other than as a factor of the step (AdaBound's bounds) but keep no statistic across groups: it saves
  only the per-object overhead (measured 1.3–2× over one object per trial).

Rows that ended (diverged, escaped) stop moving, and their slots get a zero point and a zero gradient, so no
non-finite value reaches the shared state. Every trial starts from the same point (one seed), as the
verification does.

Which classes qualify, and in which layout, is not assumed: it is **measured**. :func:`sharing_mismatch` runs a
class both ways (shared, and one object per trial as the library ships it) over lrs from 1e-5 to 3, on the
gradients of three problems with and without clipping and on adversarial gradient streams (rows of scales 1e-4
to 1e4, gradients orthogonal or parallel to the point, zero gradients), comparing the update map step by step;
:data:`optbench.optimizers.stacking.SHARED` holds each class that agrees to 1e-12 relative in float64 with the
fastest layout it passes (``python -m optbench.engines.stacked`` regenerates it; ``tests/test_stacking.py``
re-checks every entry, and, marked slow, that the table is complete). A class that couples its parameters
(D-Adaptation's estimate over all of them, Muon's group policy) or draws random numbers fails that comparison in
every layout and keeps one object per trial.

Only configurations at the class's defaults (nothing but ``lr`` set) share an object: that is what was
verified. The result differs from one object per trial by rounding only (``x − η(x − P)`` against ``x − ηu``).
"""

from __future__ import annotations

import math

import torch

from optbench.engines.recorder import GroupTrace, Recorder
from optbench.engines.step_rng import StepRandomness, isolated

VERIFY_LRS = (1e-5, 1e-3, 0.1, 3.0)
VERIFY_PROBLEMS = ("rosenbrock(start=(-2.0, 2.0))", "rastrigin(start=(-2.0, 3.5))", "styblinski-tang(dim=3)")
VERIFY_STEPS = 60
VERIFY_RTOL = 1e-12  # every listed class agrees to 1e-13 here; an ill-conditioned update (DASH's matrix roots) does not
STACKED, TENSORS, GROUPS = "stacked", "tensors", "groups"
LAYOUTS = (STACKED, TENSORS, GROUPS)  # fastest first


def can_share(optimizer) -> bool:
    """Whether ``optimizer`` (a config) may share an object: a verified class, nothing but lr set."""
    return optimizer.entry.shared_layout is not None and set(optimizer.given) <= {"lr"}


def share_groups(configs: list) -> tuple[list[list[int]], list[int]]:
    """(groups of indices that share an object, each of two or more configs of one class; the other indices)."""
    by_name: dict[str, list[int]] = {}
    rest = []
    for k, config in enumerate(configs):
        if can_share(config):
            by_name.setdefault(config.entry.name, []).append(k)
        else:
            rest.append(k)
    groups = [ks for ks in by_name.values() if len(ks) > 1]
    rest += [ks[0] for ks in by_name.values() if len(ks) == 1]
    return groups, sorted(rest)


class SharedObject:
    """One library object holding K trials' points in ``layout``; :meth:`step` moves trial k from x to
    x − η_k(x − P) (``stacked``, ``tensors``: the object at lr = 1) or to P (``groups``: trial k's parameter group
    has lr η_k), and leaves ended trials where they are."""

    def __init__(self, entry, hyperparams: dict, layout: str, x: torch.Tensor, seed: int,
                 lrs: torch.Tensor | None = None):
        if layout not in LAYOUTS:
            raise ValueError(f"unknown layout {layout!r}")
        self.layout, (self.K, self.d) = layout, x.shape
        if layout == STACKED:
            self.params = [torch.nn.Parameter(x.reshape(-1).clone())]
        else:
            self.params = [torch.nn.Parameter(row.clone()) for row in x]
        groups: list = self.params
        if layout == GROUPS:
            if lrs is None:
                raise ValueError("the groups layout needs each trial's lr")
            groups = [{"params": [p], "lr": float(lr)} for p, lr in zip(self.params, lrs.reshape(-1).tolist())]
        self.optimizer = entry.build(groups, {**hyperparams, "lr": 1.0}, dtype=x.dtype, seed=seed)

    def step(self, x: torch.Tensor, grad: torch.Tensor, lr: torch.Tensor,
             live: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(the points after one step from ``x`` [K, d] with gradients ``grad``, lrs ``lr`` [K, 1], for the trials
        where ``live`` [K, 1] holds (the others keep their point); the direction x − P the object took)."""
        with torch.no_grad():
            points, grads = torch.where(live, x, 0.0), torch.where(live, grad, 0.0)
            if self.layout == STACKED:
                self.params[0].copy_(points.reshape(-1))
                self.params[0].grad = grads.reshape(-1)
            else:
                for k, p in enumerate(self.params):
                    p.copy_(points[k])
                    p.grad = grads[k].clone()
        self.optimizer.step()
        with torch.no_grad():
            moved = (self.params[0].detach().view(self.K, self.d) if self.layout == STACKED
                     else torch.stack([p.detach() for p in self.params]))
            direction = x - moved
            if self.layout == GROUPS:  # each group stepped with its own lr: P is the next point
                return torch.where(live, moved, x), direction
            return torch.where(live, x - lr * direction, x), direction


def run_shared(problem, configs: list, seed: int, steps: int, record_every: int = 1, *, device="cpu",
               dtype=torch.float64, clip_norm: float | None = None, clip_value: float | None = None,
               layout: str | None = None) -> GroupTrace:
    """Run K = len(configs) configurations of one class (differing in lr only) from the start of ``seed`` as one
    object in the class's layout (or ``layout``); run k equals the side-by-side run of ``configs[k]`` (without
    cost metrics).

    As in the side-by-side pass: every row's loss and gradient in one autograd call, each row clipped as
    ``clip_grad_norm_`` clips a lone parameter, and a run stops at the step the recorder ends it."""
    from optbench.engines.trials import _exact_rows, _unrecord_after_end, clip_rows_

    entry = configs[0].entry
    if any(c.entry.name != entry.name for c in configs):
        raise ValueError("run_shared: one optimizer class per call")
    K = len(configs)
    x = problem.start_points([seed], dtype=dtype, device=device)[0].expand(K, -1).clone()
    lr = torch.tensor([float(c.hyperparams["lr"]) for c in configs], dtype=dtype, device=device)[:, None]
    with isolated(device):
        randomness = StepRandomness(seed, device)  # as run_loop seeds it (a class that draws does not share)
        randomness.before(-1)
        shared = SharedObject(entry, configs[0].hyperparams, layout or entry.shared_layout, x, seed, lrs=lr)
        rec = Recorder(problem, K, steps, record_every, device, dtype)
        for t in range(steps + 1):
            loss, grad = _exact_rows(problem, x)
            rec.observe(t, x, loss, grad)
            if t == steps:
                break
            live = rec.active[:, None]
            if not bool(live.any()):
                break
            if clip_norm is not None or clip_value is not None:
                clip_rows_(grad, clip_norm, clip_value)
            randomness.before(t)
            x, _ = shared.step(x, grad, lr, live)
    trace = rec.finish()
    _unrecord_after_end(trace)
    return trace


def _problem_source(problem, clip):
    """Gradients of a real problem at the trials' points (each row clipped as ``clip_grad_norm_`` would)."""
    from optbench.engines.trials import _exact_rows, clip_rows_

    def gradients(t: int, x: torch.Tensor) -> torch.Tensor:
        _, grad = _exact_rows(problem, x)
        return grad if clip is None else clip_rows_(grad, clip, None)

    return gradients


def _adversarial_source(seed: int):
    """Gradients built to expose coupling between rows, whatever the problem: each row its own scale (1e-4 to
    1e4, so a norm or RMS over the stacked tensor differs from the row's own), and on some steps a gradient
    orthogonal to the row's point in half the rows and parallel to it in the other half (what projection rules,
    AdamP/SGDP-like, test per tensor), or zero in one row."""
    generator = torch.Generator().manual_seed(seed)

    def gradients(t: int, x: torch.Tensor) -> torch.Tensor:
        K, d = x.shape
        scales = torch.logspace(-4, 4, K, dtype=x.dtype)[:, None]
        g = torch.randn(K, d, generator=generator, dtype=x.dtype) * scales
        if t % 5 == 2:  # half the rows orthogonal to their point, half parallel
            unit = x / x.norm(dim=-1, keepdim=True).clamp(min=1e-30)
            along = (g * unit).sum(-1, keepdim=True) * unit
            g = torch.where(torch.arange(K)[:, None] % 2 == 0, g - along, along)
        if t % 7 == 4:
            g[t % K] = 0.0
        return g

    return gradients


def _update_mismatch(entry, base, lrs, layout: str, x0: torch.Tensor, gradients, steps: int,
                     rtol: float) -> str | None:
    """Step one library object per lr and one shared object on the same points and gradients; the first
    disagreement of the shared object's points with the per-lr objects' points, or None."""
    dtype, K = x0.dtype, len(lrs)
    configs = [base.with_hyperparams(lr=lr) for lr in lrs]
    lr = torch.tensor([float(c.hyperparams["lr"]) for c in configs], dtype=dtype)[:, None]
    params = [torch.nn.Parameter(x0.clone()) for _ in configs]
    with isolated(x0.device):  # both sides draw what the engines would give them (engines.step_rng)
        randomness = StepRandomness(0, x0.device)
        each = []
        for c, p in zip(configs, params):
            randomness.before(-1)
            each.append(c.entry.build([p], c.hyperparams, dtype=dtype, seed=0))
        randomness.before(-1)
        shared = SharedObject(entry, base.hyperparams, layout, x0.expand(K, -1), seed=0, lrs=lr)
        return _first_mismatch(each, params, shared, lr, gradients, steps, rtol, randomness)


def _first_mismatch(each, params, shared, lr, gradients, steps: int, rtol: float, randomness) -> str | None:
    K = len(each)
    live = torch.ones(K, 1, dtype=torch.bool)
    for t in range(steps):
        x = torch.stack([p.detach().clone() for p in params])
        grad = gradients(t, x)
        live = live & torch.isfinite(x).all(-1, keepdim=True) & torch.isfinite(grad).all(-1, keepdim=True)
        if not bool(live.any()):
            return None
        for k in range(K):
            if live[k]:
                params[k].grad = grad[k].clone()
                randomness.before(t)
                each[k].step()
        randomness.before(t)
        predicted, direction = shared.step(x, grad, lr, live)
        with torch.no_grad():
            want = torch.stack([p.detach() for p in params])
            scale = torch.maximum(x.abs(), direction.abs()).clamp(min=1.0)
            gap = ((predicted - want).abs() / scale)[live.expand_as(x)]
        if gap.numel() and not bool((gap <= rtol).all()):
            return f"step {t + 1}: the shared update differs by {float(gap.nan_to_num(math.inf).max()):.1e} relative"
    return None


def sharing_mismatch(name, layout: str = STACKED, *, steps: int = VERIFY_STEPS, problems=VERIFY_PROBLEMS,
                     lrs=VERIFY_LRS, rtol: float = VERIFY_RTOL) -> str | None:
    """Why registry entry ``name`` (a name or an entry) must not share an object in ``layout`` (the first step
    where the shared object's update disagrees with one object per trial, or the error it raised), or None when
    every step agrees.

    The comparison is of the update map, not of whole trajectories (on Rastrigin at lr = 3 rounding alone grows
    by orders of magnitude in 60 steps): one library object per lr runs as shipped, and at every step the
    shared object is given the same points and gradients; its next points ``x − η(x − P)`` must equal theirs
    to ``VERIFY_RTOL`` · max(1, |x|, |u|) per coordinate (the rounding of ``x − P`` grows with both). The
    gradients come from each of ``problems``, with and without clipping to norm 1, and from adversarial streams
    (:func:`_adversarial_source`) at dimensions 2 and 5 that no real problem needs to hit: rows of scales 1e-4 to
    1e4, gradients orthogonal and parallel to the point, zero gradients."""
    from optbench.optimizers import get_optimizer_entry
    from optbench.optimizers.registry import OptimizerConfig
    from optbench.params import validate_kwargs
    from optbench.problems import get_problem

    entry = get_optimizer_entry(name) if isinstance(name, str) else name
    if (entry.unsupported or entry.needs_closure or entry.create_graph or entry.schedule_free or entry.seeded
            or entry.accumulates_grad):
        return ("its capabilities (closure, create_graph, schedule-free, random directions or momentum in .grad) "
                "need one object per run")
    if "lr" not in entry.params:
        return "it has no lr"
    base = OptimizerConfig(entry, validate_kwargs(f"optimizer {entry.name!r}", {}, entry.params), {})
    dtype = torch.float64
    cases = []
    for spec in problems:
        problem = get_problem(spec)
        x0 = problem.start_points([0], dtype=dtype, device="cpu")[0]
        cases += [(f"{problem.label}, clip {clip}", x0, _problem_source(problem, clip)) for clip in (None, 1.0)]
    for d in (2, 5):
        x0 = torch.linspace(-1.5, 2.0, d, dtype=dtype)
        cases.append((f"adversarial gradients, d = {d}", x0, _adversarial_source(d)))
    for label, x0, gradients in cases:
        try:
            reason = _update_mismatch(entry, base, lrs, layout, x0, gradients, steps, rtol)
        except Exception as exc:  # a class that fails here is simply not shared
            return f"{label}: {type(exc).__name__}: {exc}"
        if reason is not None:
            return f"{label}, {reason}"
    return None


def fastest_layout(name) -> tuple[str | None, str]:
    """(the fastest layout ``name`` passes in, or None; the last refusal's reason)."""
    reason = ""
    for layout in LAYOUTS:
        reason = sharing_mismatch(name, layout) or ""
        if not reason:
            return layout, ""
    return None, reason


def main() -> None:
    """Measure every registry entry and rewrite :mod:`optbench.optimizers.stacking`."""
    from pathlib import Path

    import optbench.optimizers.stacking as target
    from optbench.optimizers import list_optimizers

    found: dict[str, str] = {}
    for entry in list_optimizers():
        if entry.source == "user":
            continue  # user classes are not in the registry
        # classes with a batched rule too: their lr-only rounds on the loop engine (the tuner's --engine loop,
        # real objects) share one object instead of one per trial
        layout, reason = fastest_layout(entry.name)
        if layout is not None:
            found[entry.name] = layout
        print(f"{entry.name:24s} {layout or 'no: ' + reason}", flush=True)
    body = "".join(f"    {n!r}: {found[n]!r},\n" for n in sorted(found))
    text = Path(target.__file__).read_text()
    head = text[: text.index("SHARED")]
    Path(target.__file__).write_text(f"{head}SHARED = {{\n{body}}}\n")
    counts = {layout: sum(v == layout for v in found.values()) for layout in LAYOUTS}
    print(f"{counts}; {sum(counts.values())} share an object")


if __name__ == "__main__":
    main()
