"""The batched rule of L-BFGS (torch.optim.LBFGS without a line search), over a leading configuration axis.

Same contract as :mod:`optbench.engines.batched_rules` (registered into its ``RULES`` table): ``x`` is ``[K, d]``,
float hyperparameters are ``[K, 1]`` tensors (``max_iter``, ``max_eval`` and ``history_size`` too: integers are
per-configuration columns), one row per configuration. One optbench step is one call of the class's ``step``:
an inner loop of up to ``max_iter`` L-BFGS iterations, each calling the closure once, which this rule mirrors
operation for operation for every configuration at once. A configuration whose inner loop ended (a tolerance met,
its iteration or evaluation budget spent) is masked out and stays where it is while the others go on; its state
(``n_iter``, the history, ``d``, ``t``) is what the class leaves in ``optimizer.state``. The closure is the
step's sampled function f̃_t (``CLOSURE``: ``state["loss_grad_at"]`` gives f̃_t and ∇f̃_t at ``[K, d]`` points,
the gradient clipped as the loop engine's ``closure()`` clips it), so on a noisy problem every evaluation of a
step sees the same sample, as the loop engine's ``AnalyticClosure`` does.

Numbers: in float64 every operation is the class's, but its dot products (BLAS ``dot`` on one ``[d]`` vector)
are sums over the rows of ``[K, d]`` here, which round differently in the last bit; tests check the rule against
the class to 1e-8 relative. The class converts the loss to a Python float (``float(closure())``), so its test
``|f − f_prev| < tolerance_change`` runs in float64 whatever the parameter dtype: the rule keeps the losses in
float64 columns too (the tolerance there is the group's ``[K, 1]`` column, rounded to the run dtype in float32).
"""

from __future__ import annotations

import torch

from optbench.engines.batched_rules import CLOSURE, JOINT, _rule

YS_MIN = 1e-10  # torch.optim.LBFGS keeps a curvature pair only when yᵀs > 1e-10


def _dot(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Row-wise inner products ``[K]`` of two ``[K, d]`` tensors (the class's ``a.dot(b)`` per configuration)."""
    return torch.linalg.vecdot(a, b)  # (a * b).sum(-1), to the bit, in one operation


def _grow(tensor: torch.Tensor, capacity: int) -> torch.Tensor:
    """``tensor`` ``[K, C, ...]`` padded with zeros along its history axis to ``capacity`` slots."""
    if tensor.shape[1] >= capacity:
        return tensor
    pad = tensor.new_zeros((tensor.shape[0], capacity - tensor.shape[1], *tensor.shape[2:]))
    return torch.cat([tensor, pad], 1)


@_rule("lbfgs", needs=[CLOSURE, JOINT])
class _LBFGS:
    """L-BFGS (torch.optim.LBFGS with ``line_search_fn=None``; Liu & Nocedal 1989, "On the limited memory BFGS
    method for large scale optimization"; Nocedal & Wright 2006, Algorithm 7.4). One step: f, g = closure() at
    x; stop if max|g| ≤ tolerance_grad. Then up to max_iter iterations k (max_eval closure calls in all, default
    ⌊1.25·max_iter⌋):

    - direction: the very first iteration of the run d = −g, H₀ = 1, no history; later, y = g − g_prev,
      s = t·d_prev, and when yᵀs > 1e-10 the pair (y, s, ρ = 1/yᵀs) is appended (the oldest dropped beyond
      history_size) and H₀ = yᵀs/yᵀy; then the two-loop recursion d = −H g: q = −g; for i newest → oldest:
      αᵢ = ρᵢ sᵢᵀq, q ← q − αᵢyᵢ; r = H₀q; for i oldest → newest: βᵢ = ρᵢ yᵢᵀr, r ← r + (αᵢ − βᵢ)sᵢ; d = r;
    - step length: t = min(1, 1/‖g‖₁)·lr at the run's first iteration, else t = lr (no line search);
      stop before moving if gᵀd > −tolerance_change;
    - x ← x + t·d, then (unless k = max_iter) f, g = closure() at the new x;
    - stop when k = max_iter, the evaluations reach max_eval, max|g| ≤ tolerance_grad,
      max|t·d| ≤ tolerance_change or |f − f_prev| < tolerance_change.

    The iteration count, history, d, t, g_prev and f_prev carry over to the next step. Refused:
    ``line_search_fn='strong_wolfe'`` (runs on the loop engine)."""

    @staticmethod
    def refuses(hp):
        if hp.get("line_search_fn") is not None:
            return (f"its batched rule mirrors torch.optim.LBFGS without a line search, not "
                    f"line_search_fn={hp['line_search_fn']!r}")
        return None

    @staticmethod
    def slots_in(state):
        # d and prev_flat_grad once the run has iterated, plus one y and one s per kept pair (ρ, α, t, H₀: 0-d)
        iterated = state["n_iter"] > 0
        return torch.where(iterated, 2 + 2 * state["num_old"], 0)

    @staticmethod
    def init(x, hp):
        K, dim = x.shape
        integers = dict(dtype=torch.int64, device=x.device)
        return {"n_iter": torch.zeros(K, **integers), "num_old": torch.zeros(K, **integers),
                "d": torch.zeros_like(x), "t": torch.zeros_like(x[:, :1]), "prev_grad": torch.zeros_like(x),
                "prev_loss": torch.zeros(K, dtype=torch.float64, device=x.device),
                "H_diag": torch.ones_like(x[:, :1]), "dirs": x.new_zeros((K, 0, dim)), "stps": x.new_zeros((K, 0, dim)),
                "ro": x.new_zeros((K, 0))}

    @staticmethod
    def step(x, g, state, hp, t):
        loss_grad_at = state["loss_grad_at"]
        lr = hp["lr"]
        max_iter = hp["max_iter"][:, 0]
        max_eval = (torch.div(max_iter * 5, 4, rounding_mode="floor") if hp["max_eval"] is None
                    else hp["max_eval"][:, 0])
        tolerance_grad = hp["tolerance_grad"][:, 0]
        tolerance_change = hp["tolerance_change"][:, 0]
        loss, grad = loss_grad_at(x)
        loss = loss.to(torch.float64)  # the class's float(closure())
        evals = torch.ones_like(state["n_iter"])
        # runs the engine has ended (diverged, escaped) are not stepped, as their loop runs are not: a NaN gradient
        # meets no tolerance and would run max_iter iterations every step
        active = state.get("running", True) & ~(grad.abs().amax(-1) <= tolerance_grad)
        n_iter = 0
        while bool(active.any()):
            n_iter += 1
            state["n_iter"] += active.long()
            first = active & (state["n_iter"] == 1)
            direction = -grad
            later = active & ~first
            if bool(later.any()):
                direction = _lbfgs_direction(grad, later, state, hp)
            state["d"] = torch.where(active[:, None], direction, state["d"])
            state["prev_grad"] = torch.where(active[:, None], grad, state["prev_grad"])
            state["prev_loss"] = torch.where(active, loss, state["prev_loss"])
            inverse = 1.0 / grad.abs().sum(-1, keepdim=True)
            first_t = torch.where(inverse < 1.0, inverse * lr, lr)  # min(1, 1/‖g‖₁)·lr, NaN → lr as Python's min
            state["t"] = torch.where(active[:, None], torch.where(first[:, None], first_t, lr), state["t"])
            d, step_size = state["d"], state["t"]
            active = active & ~(_dot(grad, d) > -tolerance_change)  # gᵀd: not a descent direction
            x.copy_(torch.where(active[:, None], torch.addcmul(x, step_size, d), x))
            evaluate = active & (n_iter != max_iter)
            optimal = torch.zeros_like(active)
            if bool(evaluate.any()):
                new_loss, new_grad = loss_grad_at(x)
                loss = torch.where(evaluate, new_loss.to(torch.float64), loss)
                grad = torch.where(evaluate[:, None], new_grad, grad)
                optimal = evaluate & (new_grad.abs().amax(-1) <= tolerance_grad)
                evals = evals + evaluate.long()
            stop = ((n_iter == max_iter) | (evals >= max_eval) | optimal
                    | ((d * step_size).abs().amax(-1) <= tolerance_change)
                    | ((loss - state["prev_loss"]).abs() < tolerance_change.to(torch.float64)))
            active = active & ~stop


def _lbfgs_direction(grad, later, state, hp):
    """For the configurations in ``later`` (past the run's first iteration): update the history with
    (y, s) = (g − g_prev, t·d_prev) where yᵀs > 1e-10, then d = −H g by the two-loop recursion over each
    configuration's own pairs (rows of other configurations are returned unchanged from −g)."""
    y = grad - state["prev_grad"]
    s = state["d"] * state["t"]
    ys = _dot(y, s)
    accept = later & (ys > YS_MIN)
    if bool(accept.any()):
        history = hp["history_size"][:, 0]
        num_old = state["num_old"]
        full = accept & (num_old >= history)
        if bool(full.any()):  # drop the oldest pair: shift that configuration's history by one
            for key in ("dirs", "stps", "ro"):
                shape = (-1,) + (1,) * (state[key].dim() - 1)
                state[key] = torch.where(full.view(shape), state[key].roll(-1, 1), state[key])
                state[key][full, -1] = 0  # the dropped pair wrapped round to the last slot: no stale values kept
        num_old = torch.where(accept & ~full, num_old + 1, num_old)
        needed = int(num_old.max())
        if needed > state["dirs"].shape[1]:  # grow the buffers by doubling, at most to the largest history
            capacity = max(needed, min(2 * state["dirs"].shape[1], int(history.max())))
            for key in ("dirs", "stps", "ro"):
                state[key] = _grow(state[key], capacity)
        rows = accept.nonzero()[:, 0]
        slot = num_old[rows] - 1
        state["dirs"][rows, slot] = y[rows]
        state["stps"][rows, slot] = s[rows]
        state["ro"][rows, slot] = 1.0 / ys[rows]
        state["H_diag"] = torch.where(accept[:, None], (ys / _dot(y, y))[:, None], state["H_diag"])
        state["num_old"] = num_old
    num_old = state["num_old"]
    longest = int(num_old[later].max())
    # slots past a configuration's own history get ρ = 0, so α = β = 0 there and q, r stay as they are (q − 0·y = q
    # to the bit: the buffers hold finite values or zeros); rows outside ``later`` are discarded at the end
    slots = torch.arange(longest, device=grad.device)
    ro = torch.where(later[:, None] & (slots < num_old[:, None]), state["ro"][:, :longest], 0.0).unbind(1)
    dirs, stps = state["dirs"][:, :longest].unbind(1), state["stps"][:, :longest].unbind(1)
    q = -grad
    alphas = [q[:, :1]] * longest
    for i in range(longest - 1, -1, -1):
        alpha = (_dot(stps[i], q) * ro[i])[:, None]
        alphas[i] = alpha
        q = torch.addcmul(q, dirs[i], -alpha)
    r = q * state["H_diag"]
    for i in range(longest):
        beta = (_dot(dirs[i], r) * ro[i])[:, None]
        r = torch.addcmul(r, stps[i], alphas[i] - beta)
    return torch.where(later[:, None], r, -grad)
