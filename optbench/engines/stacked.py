"""K trials of one optimizer that differ only in lr, as **one** real optimizer object over a stacked parameter.

The side-by-side pass (:mod:`optbench.engines.trials`) keeps one optimizer object per trial, so its floor is
the library's own ``step()`` once per trial and step. Most optimizers of the catalogue are **elementwise and
linear in lr**: each coordinate's update depends only on that coordinate's gradients, state and value, and
the step is ``x ← x − η·u`` where the direction ``u`` does not depend on η (the decoupled decay
``x ← x(1 − ηλ)`` is of that form too: ``u`` holds ``λx``). For such a class, K configurations that differ
only in η are one object over a ``[K·d]`` parameter stepped with η = 1:

    P ← x (all K rows, flattened);  P.grad ← g;  step() with lr = 1;  u = x − P;  x ← x − η_k u  (row k)

so every step costs one library ``step()`` for all K trials, and the update is the library's own code, not a
re-implementation. Rows that ended (diverged, escaped) stop moving, and their slots in the object get a zero
point and a zero gradient, so no non-finite value reaches the shared state.

Which classes qualify is not assumed: it is **measured**. :func:`stacking_mismatch` runs a class both ways
(stacked, and one object per trial as the library ships it) over lrs from 1e-5 to 3, on the gradients of three
problems with and without clipping and on adversarial gradient streams (rows of scales 1e-4 to 1e4, gradients
orthogonal or parallel to the point, zero gradients), and :data:`optbench.optimizers.stacking.STACKABLE` lists the
entries that agree to 1e-9 relative in float64 (``python -m optbench.engines.stacked`` regenerates it;
``tests/test_stacking.py`` checks every listed entry, and, marked slow, that the list is complete). Any class that
couples coordinates (a norm over the tensor, a projection on the parameter), keeps copies of the parameter
(Lookahead's slow weights), uses η other than as a factor of the step (AdaBound's bounds, D-Adaptation's estimate)
or draws random numbers fails that comparison and keeps one object per trial.

Only configurations at the class's defaults (nothing but ``lr`` set) stack: that is what was verified. In
float32 the result differs from one object per trial by rounding only (``x − η(x − P)`` against ``x − ηu``).
"""

from __future__ import annotations

import math

import torch

from optbench.engines.recorder import GroupTrace, Recorder

VERIFY_LRS = (1e-5, 1e-3, 0.1, 3.0)
VERIFY_PROBLEMS = ("rosenbrock(start=(-2.0, 2.0))", "rastrigin(start=(-2.0, 3.5))", "styblinski-tang(dim=3)")
VERIFY_STEPS = 60
VERIFY_RTOL = 1e-9


def can_stack(optimizer) -> bool:
    """Whether ``optimizer`` (a config) may share a stacked object: a verified class, nothing but lr set."""
    return optimizer.entry.stacks and set(optimizer.given) <= {"lr"}


def stack_groups(configs: list) -> tuple[list[list[int]], list[int]]:
    """(groups of indices that stack, each of two or more configs of one class; the other indices)."""
    by_name: dict[str, list[int]] = {}
    rest = []
    for k, config in enumerate(configs):
        if can_stack(config):
            by_name.setdefault(config.entry.name, []).append(k)
        else:
            rest.append(k)
    groups = [ks for ks in by_name.values() if len(ks) > 1]
    rest += [ks[0] for ks in by_name.values() if len(ks) == 1]
    return groups, sorted(rest)


def run_stacked(problem, configs: list, seed: int, steps: int, record_every: int = 1, *, device="cpu",
                dtype=torch.float64, clip_norm: float | None = None, clip_value: float | None = None) -> GroupTrace:
    """Run K = len(configs) configurations of one class (differing in lr only) from the start of ``seed`` as one
    object over a ``[K·d]`` parameter; run k equals the side-by-side run of ``configs[k]`` (without cost metrics).

    As in the side-by-side pass: every row's loss and gradient in one autograd call, each row clipped as
    ``clip_grad_norm_`` clips a lone parameter, and a run stops at the step the recorder ends it."""
    from optbench.engines.trials import _exact_rows, _unrecord_after_end, clip_rows_

    entry = configs[0].entry
    if any(c.entry.name != entry.name for c in configs):
        raise ValueError("run_stacked: one optimizer class per call")
    K = len(configs)
    x = problem.start_points([seed], dtype=dtype, device=device)[0].expand(K, -1).clone()
    d = x.shape[-1]
    lr = torch.tensor([float(c.hyperparams["lr"]) for c in configs], dtype=dtype, device=device)[:, None]
    stacked = torch.nn.Parameter(x.reshape(-1).clone())
    optimizer = entry.build([stacked], {**configs[0].hyperparams, "lr": 1.0}, dtype=dtype, seed=seed)
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
        with torch.no_grad():
            stacked.copy_(torch.where(live, x, 0.0).reshape(-1))
        stacked.grad = torch.where(live, grad, 0.0).reshape(-1)
        optimizer.step()
        with torch.no_grad():
            direction = x - stacked.detach().view(K, d)
            x = torch.where(live, x - lr * direction, x)
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


def _update_mismatch(entry, base, lrs, x0: torch.Tensor, gradients, steps: int) -> str | None:
    """Step one library object per lr and one stacked object on the same points and gradients; the first
    disagreement of ``x − η(x − P)`` with the per-lr objects' points, or None."""
    dtype, K = x0.dtype, len(lrs)
    configs = [base.with_hyperparams(lr=lr) for lr in lrs]
    lr = torch.tensor([float(c.hyperparams["lr"]) for c in configs], dtype=dtype)[:, None]
    params = [torch.nn.Parameter(x0.clone()) for _ in configs]
    each = [c.entry.build([p], c.hyperparams, dtype=dtype, seed=0) for c, p in zip(configs, params)]
    stacked = torch.nn.Parameter(x0.repeat(K))
    shared = entry.build([stacked], {**base.hyperparams, "lr": 1.0}, dtype=dtype, seed=0)
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
                each[k].step()
        with torch.no_grad():
            stacked.copy_(torch.where(live, x, 0.0).reshape(-1))
        stacked.grad = torch.where(live, grad, 0.0).reshape(-1)
        shared.step()
        with torch.no_grad():
            direction = x - stacked.detach().view_as(x)
            predicted = x - lr * direction
            want = torch.stack([p.detach() for p in params])
            scale = torch.maximum(x.abs(), direction.abs()).clamp(min=1.0)
            gap = ((predicted - want).abs() / scale)[live.expand_as(x)]
        if gap.numel() and not bool((gap <= VERIFY_RTOL).all()):
            return f"step {t + 1}: the stacked update differs by {float(gap.nan_to_num(math.inf).max()):.1e} relative"
    return None


def stacking_mismatch(name, *, steps: int = VERIFY_STEPS, problems=VERIFY_PROBLEMS, lrs=VERIFY_LRS) -> str | None:
    """Why registry entry ``name`` must not be stacked (the first step where the stacked object's update
    disagrees with one object per trial, or the error it raised), or None when every step agrees.

    The comparison is of the update map, not of whole trajectories (on Rastrigin at lr = 3 rounding alone grows
    by orders of magnitude in 60 steps): one library object per lr runs as shipped, and at every step the
    stacked object is given the same points and gradients; its next points ``x − η(x − P)`` must equal theirs
    to ``VERIFY_RTOL`` · max(1, |x|, |u|) per coordinate (the rounding of ``x − P`` grows with both). The
    gradients come from each of ``problems``, with and without clipping to norm 1, and from adversarial streams
    (:func:`_adversarial_source`) at dimensions 2 and 5 that no real problem needs to hit: rows of scales 1e-4 to
    1e4, gradients orthogonal and parallel to the point, zero gradients."""
    from optbench.optimizers import get_optimizer_entry
    from optbench.optimizers.registry import OptimizerConfig
    from optbench.params import validate_kwargs
    from optbench.problems import get_problem

    entry = get_optimizer_entry(name) if isinstance(name, str) else name  # a name or a registry entry
    if entry.unsupported or entry.needs_closure or entry.create_graph or entry.schedule_free or entry.seeded:
        return "its capabilities (closure, create_graph, schedule-free or random directions) need one object per run"
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
            reason = _update_mismatch(entry, base, lrs, x0, gradients, steps)
        except Exception as exc:  # a class that fails here is simply not stacked
            return f"{label}: {type(exc).__name__}: {exc}"
        if reason is not None:
            return f"{label}, {reason}"
    return None


def main() -> None:
    """Measure every registry entry and rewrite :mod:`optbench.optimizers.stacking`."""
    from pathlib import Path

    import optbench.optimizers.stacking as target
    from optbench.optimizers import list_optimizers

    names, refused = [], {}
    for entry in list_optimizers():
        if entry.batched is not None or entry.source == "user":
            continue  # a batched rule is faster still; user classes are not in the registry
        reason = stacking_mismatch(entry.name)
        (refused.__setitem__(entry.name, reason) if reason else names.append(entry.name))
        print(f"{entry.name:24s} {'stacks' if reason is None else 'no: ' + reason}")
    body = "".join(f"    {n!r},\n" for n in sorted(names))
    text = Path(target.__file__).read_text()
    head = text[: text.index("STACKABLE")]
    Path(target.__file__).write_text(f"{head}STACKABLE = frozenset({{\n{body}}})\n")
    print(f"{len(names)} stack, {len(refused)} do not")


if __name__ == "__main__":
    main()
