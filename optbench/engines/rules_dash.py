"""Batched rule of pytorch_optimizer's DASH (block Shampoo with Newton–Denman–Beavers inverse roots and Adam
grafting), whose K trials the gallery ran side by side, one real object each.

Same contract as :mod:`optbench.engines.batched_rules` (registered into its ``RULES`` table; ``x`` and ``g`` are
``[K, P]``, float hyperparameters ``[K, 1]`` tensors). The class's block matrices of one parameter tensor are
stacked along a leading axis; the rule stacks the K configurations' blocks along the same axis (configuration
major), so every batched matrix operation of the class runs once for all K, operation for operation.

The class estimates each statistic's spectral scale by a power iteration in bfloat16 from random starting vectors
drawn from torch's *global* generator at every recomputation of the inverse roots; the engines seed that generator
per run and step (:mod:`optbench.engines.step_rng`), so the rule draws the same vectors from one generator per
configuration seeded alike (``SEEDS``), statistic by statistic in the class's order. Batched matrix products and
norms on the CPU give each matrix of a batch the bits it has alone, so the bfloat16 estimate, to which the
inverse roots are sensitive, is the class's own.
"""

from __future__ import annotations

import math

import torch

from optbench.engines.batched_rules import LAYERS, SEEDS, _rule
from optbench.engines.step_rng import step_seed
from optbench.errors import UsageError

# integer settings that fix the shapes and the schedule of the computation: one value per batched group
SHARED_INTS = ("block_size", "precondition_frequency", "start_preconditioning_step", "newton_steps",
               "power_iteration_steps", "power_iteration_vectors")
POWER_SHIFT = 1e-6  # DASH.scale_matrix: added to the bfloat16 copy's diagonal before the power iteration
NORM_FLOOR = 1e-16  # added to the preconditioned update's norm before grafting


def _shared_int(hp, key: str) -> int:
    values = hp[key].reshape(-1).unique()
    if len(values) != 1:
        raise UsageError(f"dash: every configuration of one batched group needs the same {key} (got "
                         f"{', '.join(f'{v:g}' for v in values.tolist())}); run them with --engine loop.")
    return int(values[0])


def _matrix_shape(shape) -> tuple[tuple[int, int], bool]:
    """The class's 2-D view of a parameter tensor and whether it is preconditioned on one side only: the
    squeezed shape's first dimension × the rest, or (n, 1) for a vector or a scalar."""
    squeezed = [n for n in shape if n != 1]
    if len(squeezed) > 1:
        return (squeezed[0], math.prod(squeezed[1:])), False
    return (math.prod(shape), 1), True


def _regions(rows: int, cols: int, block: int):
    """``DASH.partition``'s regions: (row, col, rows, cols, height, width) of up to four equal-block batches."""
    row = 0
    for row_size in (rows // block * block, rows % block):
        col = 0
        for col_size in (cols // block * block, cols % block):
            if row_size and col_size:
                yield row, col, row_size, col_size, min(row_size, block), min(col_size, block)
            col += col_size
        row += row_size


def _blocks(matrix: torch.Tensor, region) -> torch.Tensor:
    """``[K, rows, cols]`` → the region's blocks ``[K·n, height, width]``, configuration major, each
    configuration's blocks in the class's order."""
    row, col, rows, cols, h, w = region
    K = matrix.shape[0]
    part = matrix[:, row:row + rows, col:col + cols]
    return part.reshape(K, rows // h, h, cols // w, w).transpose(2, 3).reshape(-1, h, w)


def _unblock(blocks: torch.Tensor, region, K: int) -> torch.Tensor:
    """The inverse of :func:`_blocks`: ``[K, rows, cols]`` of the region."""
    _, _, rows, cols, h, w = region
    return blocks.reshape(K, rows // h, cols // w, h, w).transpose(2, 3).reshape(K, rows, cols)


def newton_db(matrix: torch.Tensor, scale: torch.Tensor, steps: int, inverse: bool) -> torch.Tensor:
    """Newton–Denman–Beavers iterations for A^(−1/2) (``inverse``) or A^(1/2) of each matrix of the batch, with
    A scaled by ``scale`` first (Y₀ = A/s, T = (3I − ZY)/2 with Z₀ = I, Y ← YT, Z ← TZ): the result times
    s^(∓1/2). The operation order of ``pytorch_optimizer``'s ``compute_power_newton_db``."""
    y = matrix / scale
    correction = y.mul(-0.5)
    correction.diagonal(dim1=-2, dim2=-1).add_(1.5)
    z = correction.clone()
    if steps > 1 or not inverse:
        y = y @ correction
    for _ in range(1, steps - 1):
        correction = torch.bmm(z, y)
        correction.mul_(-0.5).diagonal(dim1=-2, dim2=-1).add_(1.5)
        y, z = torch.bmm(y, correction), torch.bmm(correction, z)
    if steps > 1:
        correction = torch.bmm(z, y)
        correction.mul_(-0.5).diagonal(dim1=-2, dim2=-1).add_(1.5)
        result = torch.bmm(correction, z) if inverse else torch.bmm(y, correction)
    else:
        result = z if inverse else y
    return result.div_(scale.sqrt()) if inverse else result.mul_(scale.sqrt())


def _power_scale(matrix: torch.Tensor, vectors: torch.Tensor, steps: int) -> torch.Tensor:
    """2·λ̂_max per matrix ``[n, 1, 1]``: ``steps`` power iterations in bfloat16 from ``vectors`` (the class's
    ``batched_power_iteration``, its Rayleigh quotient maximised over the starting vectors)."""
    dtype = matrix.dtype
    matrix = matrix.to(torch.bfloat16)
    matrix.diagonal(dim1=-2, dim2=-1).add_(POWER_SHIFT)
    tiny = torch.finfo(torch.bfloat16).tiny
    vectors = vectors / torch.linalg.vector_norm(vectors, dim=1, keepdim=True).clamp_min_(tiny)
    for _ in range(steps):
        product = torch.bmm(matrix, vectors)
        vectors = product / torch.linalg.vector_norm(product, dim=1, keepdim=True).clamp_min_(tiny)
    product = torch.bmm(matrix, vectors)
    return (vectors * product).sum(dim=1).amax(dim=1).view(-1, 1, 1).to(dtype).mul_(2.0)


def _per_config(values: torch.Tensor, per: int) -> torch.Tensor:
    """A ``[K, 1]`` column as ``[K·per, 1, 1]``: each configuration's value for each of its ``per`` matrices."""
    return values.reshape(-1, 1, 1).repeat_interleave(per, dim=0)


@_rule("dash", needs=[LAYERS, SEEDS])
class _DASH:
    """DASH (pytorch_optimizer.DASH; "Faster Shampoo via Batched Block Preconditioning and Efficient Inverse-Root
    Solvers", arXiv:2602.02016), local and layer-wise. Each parameter tensor is viewed as a matrix G (its squeezed
    first dimension × the rest; a vector as a column, preconditioned on the left only) cut into blocks of at most
    ``block_size``; per block, at step t (from 1), with (β₁, β₂) = ``betas``, β_g = ``grafting_beta`` or β₂:

        L ← β₂L + (1 − β₂)GGᵀ,  R ← β₂R + (1 − β₂)GᵀG (two-sided only),  v ← β_g v + (1 − β_g)G²,
        m ← β₁m + (1 − β₁)G (m = G when β₁ = 0),
        A = (m/(1 − β₁ᵗ)) / max(√(v/(1 − β_gᵗ)) + ε, tiny)  (the Adam graft; no bias correction unless
        ``correct_bias``),

    from t = ``start_preconditioning_step`` on, with the inverse roots recomputed at the first such step and every
    ``precondition_frequency`` steps: P_L = (L + ε_m I)^(−1/2) one-sided, else P_L = (L + ε_m I)^(−1/4) and
    P_R = (R + ε_m I)^(−1/4), by Newton–Denman–Beavers (``newton_steps``; the fourth root as the inverse square
    root of the square root) on the matrix scaled by twice its largest eigenvalue estimated in bfloat16 by
    ``power_iteration_steps`` power iterations from ``power_iteration_vectors`` random vectors
    (``matrix_scaling='frobenius'``: its bfloat16 Frobenius norm; ``inverse_root_method='eigh'``: the exact
    root of an eigendecomposition with the spectrum shifted to at least ε_m); the update U = P_L m P_R scaled to
    the graft's norm, U·‖A‖/(‖U‖ + 1e-16) (before: U = A); with ``momentum`` μ > 0, b ← μb + U and U ← U + μb
    (``nesterov``) or U ← b; then decoupled decay x ← x(1 − ηλ) and x ← x − ηU.

    Deviations from the paper: the inverse roots are recomputed at the class's schedule (the first
    preconditioning step, then every ``precondition_frequency``-th step counted from step 0), and the power
    iteration runs in bfloat16 whatever the parameters' dtype (as the reference implementation), so a float64
    run's scale is bfloat16-accurate; the rule does the same. The ``eigh`` roots regularise twice, ε_m on the
    diagonal and then the spectrum shifted by ε_m − min(λ_min, 0) (Distributed Shampoo's shift), so a singular
    statistic's root is that of L + 2ε_m I."""

    slots = staticmethod(lambda hp: 1 + int(hp["betas"][0] > 0) + int(hp["momentum"] > 0))
    # exp_avg_sq (, exp_avg, momentum) and per block one d × d statistic and its inverse root: on a [d] vector
    dim_slots = staticmethod(lambda hp, dim: 1 + int(hp["betas"][0] > 0) + int(hp["momentum"] > 0) + 2 * dim)

    @staticmethod
    def init(x, hp):
        return {"tensors": None}

    @staticmethod
    def _init_tensors(x, state, hp):
        K = x.shape[0]
        block = _shared_int(hp, "block_size")
        dtype = torch.float64 if x.dtype == torch.float64 else torch.float32
        tensors = []
        for shape in state["layout"].shapes:
            (rows, cols), one_sided = _matrix_shape(shape)
            blocks = []
            for region in _regions(rows, cols, block):
                h, w = region[4], region[5]
                n = (region[2] // h) * (region[3] // w)
                sizes = [(n, h)] if one_sided else ([(2 * n, h)] if h == w else [(n, h), (n, w)])
                zeros = torch.zeros(K * n, h, w, dtype=dtype, device=x.device)
                blocks.append({"region": region, "n": n, "v": zeros, "m": zeros.clone(), "mu": zeros.clone(),
                               "stats": [torch.zeros(K * c, s, s, dtype=dtype, device=x.device) for c, s in sizes],
                               "counts": [c for c, _ in sizes], "roots": None})
            tensors.append({"shape": (rows, cols), "one_sided": one_sided, "blocks": blocks})
        state["tensors"] = tensors

    @staticmethod
    def _inverse_roots(block, hp, generators, one_sided: bool):
        """The block's inverse roots, statistic by statistic (each configuration's random vectors drawn from its
        generator in the class's order)."""
        method, scaling = hp["inverse_root_method"], hp["matrix_scaling"]
        root = 2 if one_sided else 4
        roots = []
        for stat, count in zip(block["stats"], block["counts"]):
            regularized = stat.clone()
            matrix_eps = _per_config(hp["matrix_eps"], count).to(stat.dtype)
            regularized.diagonal(dim1=-2, dim2=-1).add_(matrix_eps.reshape(-1, 1))
            if method == "eigh":
                values, vectors = torch.linalg.eigh(regularized)
                eps = matrix_eps.reshape(-1, 1)
                values = (values + (eps - values.amin(dim=-1, keepdim=True).clamp_max(0.0))).pow(-1.0 / root)
                roots.append((vectors * values.unsqueeze(-2)) @ vectors.transpose(-2, -1))
                continue
            if scaling == "frobenius":
                scale = torch.linalg.vector_norm(regularized.to(torch.bfloat16), dim=(-2, -1), keepdim=True)
                scale = scale.to(stat.dtype)
            else:
                size, m = stat.shape[-1], _shared_int(hp, "power_iteration_vectors")
                vectors = torch.cat([torch.randn((count, size, m), dtype=torch.bfloat16, generator=gen)
                                     for gen in generators]).to(stat.device)
                scale = _power_scale(regularized, vectors, _shared_int(hp, "power_iteration_steps"))
            scale = scale.clamp_min_(torch.finfo(stat.dtype).tiny)
            steps = _shared_int(hp, "newton_steps")
            if root == 4:
                regularized = newton_db(regularized, scale, steps, inverse=False)
                scale = scale.sqrt()
            roots.append(newton_db(regularized, scale, steps, inverse=True))
        return roots

    @staticmethod
    def step(x, g, state, hp, t):
        if state["tensors"] is None:
            _DASH._init_tensors(x, state, hp)
        K = x.shape[0]
        layout, lr = state["layout"], hp["lr"]
        beta1, beta2 = hp["beta1"], hp["beta2"]
        graft_beta = beta2 if hp["grafting_beta"] is None else hp["grafting_beta"]
        if hp["correct_bias"]:
            bias1, bias2 = 1.0 - beta1 ** t, 1.0 - graft_beta ** t
        else:
            bias1 = bias2 = torch.ones_like(beta1)
        start, every = _shared_int(hp, "start_preconditioning_step"), _shared_int(hp, "precondition_frequency")
        generators = None
        if hp.get("maximize", False):
            g = -g
        steps = []
        for (grad_flat, p_flat), tensor in zip(zip(g.split(layout.sizes, dim=-1), x.split(layout.sizes, dim=-1)),
                                               state["tensors"]):
            rows, cols = tensor["shape"]
            dtype = tensor["blocks"][0]["v"].dtype
            grad = grad_flat.reshape(K, rows, cols).to(dtype)
            direction = torch.empty_like(grad)
            for block in tensor["blocks"]:
                region, n = block["region"], block["n"]
                G = _blocks(grad, region)
                b1 = _per_config(beta1, n).to(dtype)
                gb = _per_config(graft_beta, n).to(dtype)
                stats = block["stats"]
                _DASH._accumulate(stats[0], G, G.transpose(1, 2), beta2, K, n, first=True)
                if not tensor["one_sided"]:
                    _DASH._accumulate(stats[-1], G.transpose(1, 2), G, beta2, K, n, first=False)
                block["v"] = block["v"] * gb + (1.0 - gb) * G * G
                m = torch.where(b1 > 0.0, torch.lerp(block["m"], G, 1.0 - b1), G)
                block["m"] = m
                denominator = (block["v"] / _per_config(bias2, n).to(dtype)).sqrt() + _per_config(
                    hp["eps"], n).to(dtype)
                graft = (m / _per_config(bias1, n).to(dtype)) / denominator.clamp_min(torch.finfo(dtype).tiny)
                if t >= start:
                    graft_norm = torch.linalg.vector_norm(graft, dim=(1, 2), keepdim=True)
                    if block["roots"] is None or t % every == 0:
                        if generators is None:
                            generators = [torch.Generator().manual_seed(step_seed(seed, t - 1))
                                          for seed in state["seeds"]]
                        block["roots"] = _DASH._inverse_roots(block, hp, generators, tensor["one_sided"])
                    roots = block["roots"]
                    update = _DASH._left(roots[0], n, K) @ m
                    if not tensor["one_sided"]:
                        update = update @ _DASH._right(roots[-1], n, K)
                    update = update * (graft_norm / (torch.linalg.vector_norm(update, dim=(1, 2), keepdim=True)
                                                     + NORM_FLOOR))
                else:
                    update = graft
                mu = _per_config(hp["momentum"], n).to(dtype)
                buffer = block["mu"] * mu + update
                block["mu"] = torch.where(mu > 0.0, buffer, block["mu"])
                moved = update + mu * buffer if hp["nesterov"] else buffer
                update = torch.where(mu > 0.0, moved, update)
                row, col, nrows, ncols = region[:4]
                direction[:, row:row + nrows, col:col + ncols] = _unblock(update, region, K)
            steps.append(direction.to(p_flat.dtype).reshape(K, -1))
        update = torch.cat(steps, dim=-1) if len(steps) > 1 else steps[0]
        wd = hp["weight_decay"]
        x.copy_(torch.where(wd != 0.0, x * (1.0 - wd * lr), x))
        x.sub_(lr * update)

    @staticmethod
    def _accumulate(stat, a, b, beta2, K: int, n: int, first: bool):
        """``stat[:n] ← β₂ stat + (1 − β₂) a b`` per configuration (``stat[-n:]`` for the right factor), by
        ``baddbmm`` with the configuration's β₂ as the class calls it (once for all K when they share β₂)."""
        count = stat.shape[0] // K
        view = stat.view(K, count, *stat.shape[1:])
        part = view[:, :n] if first else view[:, -n:]
        a, b = a.reshape(K, n, *a.shape[1:]), b.reshape(K, n, *b.shape[1:])
        betas = beta2.reshape(-1).tolist()
        if len(set(betas)) == 1:
            flat_part = part.reshape(K * n, *part.shape[2:])
            flat_part.baddbmm_(a.reshape(K * n, *a.shape[2:]), b.reshape(K * n, *b.shape[2:]),
                               beta=betas[0], alpha=1.0 - betas[0])
            part.copy_(flat_part.view_as(part))
        else:
            for k, beta in enumerate(betas):
                part[k].baddbmm_(a[k], b[k], beta=beta, alpha=1.0 - beta)

    @staticmethod
    def _left(root, n: int, K: int):
        view = root.view(K, -1, *root.shape[1:])
        return view[:, :n].reshape(K * n, *root.shape[1:])

    @staticmethod
    def _right(root, n: int, K: int):
        view = root.view(K, -1, *root.shape[1:])
        return view[:, -n:].reshape(K * n, *root.shape[1:])
