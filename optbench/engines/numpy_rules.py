"""The batched update rules in numpy, for analytic sweeps on a CPU without importing torch.

Each rule here is the numpy form of the rule of the same name in :mod:`optbench.engines.batched_rules`
(same formulas, same references; that module's docstrings give them), over the same layout: ``x`` and
``g`` are ``[K, d]`` float64 arrays, float hyperparameters are ``[K, 1]`` arrays — or plain Python floats
when every configuration of the group has the same value (:func:`stack_hyperparams`), so a learning-rate
sweep computes each bias correction once for the whole group instead of once per configuration — and
boolean or string hyperparameters are shared. ``step`` updates ``x`` in place; ``t`` counts from 1.

Why a second copy rather than one rule over the array API (``array_api_compat``): measured on the
1000 × 1000 Adam sweep, the torch rules written against a namespace lose their in-place ``mul_``/
``addcmul_`` forms, so either the torch path's trajectories change in the last bits (and with them the
committed CI baseline) or every rule carries both spellings; and ``array_api_compat`` adds a wrapper call
per operation, which is what dominates at ``[1000, 2]``. The torch rules stay the reference for the GPU
and for the rules not ported here; tests run every rule here against the loop engine (real optimizer
objects) to 1e-8 relative, as the torch rules are, and assert that each has a torch twin with the same
needs (so the capability decision does not depend on which path runs).

Rules that need a Hessian, per-tensor norms or a reported point (Newton, LARS, LAMB, Schedule-Free), and
NAdam (whose Π_t torch keeps in float32 unless the default dtype is float64), stay on the torch path.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from optbench.engines.grouping import is_float_like as _is_float_like

State = dict[str, Any]


@dataclass(frozen=True)
class NumpyRule:
    init: Callable[[np.ndarray, dict[str, Any]], State]
    step: Callable[[np.ndarray, np.ndarray, State, dict[str, Any], int], None]
    state_slots: Callable[[dict[str, Any]], int]  # parameter-sized state tensors of the mirrored class


RULES: dict[str, NumpyRule] = {}


def _rule(name: str):
    def wrap(cls):
        RULES[name] = NumpyRule(cls.init, cls.step, cls.slots)
        return cls

    return wrap


def stack_hyperparams(optimizers: Sequence[Any]) -> dict[str, Any]:
    """K hyperparameter dicts as ``[K, 1]`` float64 arrays — or one Python float where all K agree — for
    float values (``betas`` become ``beta1``, ``beta2``), and the shared value for the rest."""
    # the seeds of a configuration share its optimizer object: each distinct one is read once
    distinct = list({id(o): o for o in optimizers}.values())
    position = {id(o): i for i, o in enumerate(distinct)}
    of_run = np.array([position[id(o)] for o in optimizers], dtype=np.int64)
    first = optimizers[0].hyperparams
    out: dict[str, Any] = {}

    def column(values: list[float]):
        array = np.array(values, dtype=np.float64)
        return values[0] if (array == array[0]).all() else array[of_run][:, None]

    for key, value in first.items():
        if _is_float_like(value):
            if isinstance(value, tuple):
                for i in range(len(value)):
                    name = f"beta{i + 1}" if key == "betas" else f"{key}{i}"
                    out[name] = column([float(o.hyperparams[key][i]) for o in distinct])
            else:
                out[key] = column([float(o.hyperparams[key]) for o in distinct])
        else:
            out[key] = value  # the group key (engines.batched.group_key) makes these equal
    return out


def _decayed(g, x, weight_decay):
    """d = g + λx (no work when λ = 0 for the whole group)."""
    if isinstance(weight_decay, float) and weight_decay == 0.0:
        return g
    return g + weight_decay * x


def _decouple(x, factor):
    if not (isinstance(factor, float) and factor == 1.0):
        x *= factor


@_rule("sgd")
class _SGD:
    slots = staticmethod(lambda hp: int(hp["momentum"] != 0))  # as batched_rules

    @staticmethod
    def init(x, hp):
        return {"buf": None}

    @staticmethod
    def step(x, g, state, hp, t):
        d = _decayed(g, x, hp["weight_decay"])
        momentum = hp["momentum"]
        if np.any(momentum != 0):
            if state["buf"] is None:
                buf = d.copy()
            else:
                buf = state["buf"] * momentum + (1 - hp["dampening"]) * d
            state["buf"] = buf
            with_momentum = d + momentum * buf if hp["nesterov"] else buf
            d = np.where(momentum != 0, with_momentum, d)
        x -= hp["lr"] * d


@_rule("adagrad")
class _Adagrad:
    slots = staticmethod(lambda hp: 1)  # as batched_rules

    @staticmethod
    def init(x, hp):
        return {"sum": np.zeros_like(x) + hp["initial_accumulator_value"]}

    @staticmethod
    def step(x, g, state, hp, t):
        d = _decayed(g, x, hp["weight_decay"])
        clr = hp["lr"] / (1 + (t - 1) * hp["lr_decay"])
        state["sum"] += d * d
        x -= clr * d / (np.sqrt(state["sum"]) + hp["eps"])


@_rule("rmsprop")
class _RMSprop:
    slots = staticmethod(lambda hp: 1 + int(hp["momentum"] > 0) + int(hp["centered"]))  # as batched_rules

    @staticmethod
    def init(x, hp):
        return {"sq": np.zeros_like(x), "avg": np.zeros_like(x), "buf": np.zeros_like(x)}

    @staticmethod
    def step(x, g, state, hp, t):
        d = _decayed(g, x, hp["weight_decay"])
        alpha = hp["alpha"]
        sq = state["sq"]
        sq *= alpha
        sq += (1 - alpha) * d * d
        if hp["centered"]:
            state["avg"] += (1 - alpha) * (d - state["avg"])
            avg = np.sqrt(sq - state["avg"] * state["avg"])
        else:
            avg = np.sqrt(sq)
        avg = avg + hp["eps"]
        momentum = hp["momentum"]
        buf = state["buf"]
        buf *= momentum
        buf += d / avg
        x -= np.where(momentum > 0, hp["lr"] * buf, hp["lr"] * d / avg)


@_rule("adadelta")
class _Adadelta:
    slots = staticmethod(lambda hp: 2)  # as batched_rules

    @staticmethod
    def init(x, hp):
        return {"sq": np.zeros_like(x), "acc": np.zeros_like(x)}

    @staticmethod
    def step(x, g, state, hp, t):
        d = _decayed(g, x, hp["weight_decay"])
        rho, eps = hp["rho"], hp["eps"]
        sq, acc = state["sq"], state["acc"]
        sq *= rho
        sq += (1 - rho) * d * d
        delta = np.sqrt(acc + eps) / np.sqrt(sq + eps) * d
        acc *= rho
        acc += (1 - rho) * delta * delta
        x -= hp["lr"] * delta


def _adam_moments(d, state, hp):
    beta1, beta2 = hp["beta1"], hp["beta2"]
    m, v = state["m"], state["v"]
    m += (1 - beta1) * (d - m)
    v *= beta2
    v += (1 - beta2) * d * d


@_rule("adam")
class _Adam:
    slots = staticmethod(lambda hp: 2 + int(hp["amsgrad"]))  # as batched_rules

    decoupled = False

    @classmethod
    def init(cls, x, hp):
        return {"m": np.zeros_like(x), "v": np.zeros_like(x), "vmax": np.zeros_like(x)}

    @classmethod
    def step(cls, x, g, state, hp, t):
        if cls.decoupled:
            _decouple(x, 1 - hp["lr"] * hp["weight_decay"])
            d = g
        else:
            d = _decayed(g, x, hp["weight_decay"])
        _adam_moments(d, state, hp)
        bc1 = 1 - hp["beta1"] ** t
        bc2_sqrt = np.sqrt(1 - hp["beta2"] ** t)
        v = state["v"]
        if hp["amsgrad"]:
            np.maximum(state["vmax"], v, out=state["vmax"])
            v = state["vmax"]
        denom = np.sqrt(v) / bc2_sqrt + hp["eps"]
        x -= (hp["lr"] / bc1) * state["m"] / denom


@_rule("adamw")
class _AdamW(_Adam):
    decoupled = True


@_rule("adamax")
class _Adamax:
    slots = staticmethod(lambda hp: 2)  # as batched_rules

    @staticmethod
    def init(x, hp):
        return {"m": np.zeros_like(x), "u": np.zeros_like(x)}

    @staticmethod
    def step(x, g, state, hp, t):
        d = _decayed(g, x, hp["weight_decay"])
        state["m"] += (1 - hp["beta1"]) * (d - state["m"])
        state["u"] = np.maximum(state["u"] * hp["beta2"], np.abs(d) + hp["eps"])
        x -= hp["lr"] / (1 - hp["beta1"] ** t) * state["m"] / state["u"]


@_rule("radam")
class _RAdam:
    slots = staticmethod(lambda hp: 2)  # as batched_rules

    @staticmethod
    def init(x, hp):
        return {"m": np.zeros_like(x), "v": np.zeros_like(x)}

    @staticmethod
    def step(x, g, state, hp, t):
        lr, beta1, beta2 = hp["lr"], hp["beta1"], hp["beta2"]
        if hp["decoupled_weight_decay"]:
            _decouple(x, 1 - lr * hp["weight_decay"])
            d = g
        else:
            d = _decayed(g, x, hp["weight_decay"])
        _adam_moments(d, state, hp)
        bc1, bc2 = 1 - beta1**t, 1 - beta2**t
        m_hat = state["m"] / bc1
        rho_inf = 2 / (1 - beta2) - 1
        rho_t = rho_inf - 2 * t * beta2**t / bc2
        rect = np.sqrt(np.maximum((rho_t - 4) * (rho_t - 2) * rho_inf / ((rho_inf - 4) * (rho_inf - 2) * rho_t), 0))
        adaptive = np.sqrt(bc2) / (np.sqrt(state["v"]) + hp["eps"])
        x -= np.where(rho_t > 5.0, m_hat * lr * adaptive * rect, m_hat * lr)


@_rule("lion")
class _Lion:
    slots = staticmethod(lambda hp: 1)  # as batched_rules

    @staticmethod
    def init(x, hp):
        return {"m": np.zeros_like(x)}

    @staticmethod
    def step(x, g, state, hp, t):
        lr = hp["lr"]
        if hp["weight_decouple"]:
            _decouple(x, 1 - hp["weight_decay"] * (1.0 if hp["fixed_decay"] else lr))
        else:
            g = _decayed(g, x, hp["weight_decay"])
        m = state["m"]
        update = np.sign(hp["beta1"] * m + (1 - hp["beta1"]) * g)
        x -= lr * update
        m *= hp["beta2"]
        m += (1 - hp["beta2"]) * g


@_rule("adopt")
class _ADOPT:
    slots = staticmethod(lambda hp: 2)  # as batched_rules

    @staticmethod
    def init(x, hp):
        return {"m": np.zeros_like(x), "v": np.zeros_like(x)}

    @staticmethod
    def step(x, g, state, hp, t):
        lr = hp["lr"]
        if hp["weight_decouple"]:
            _decouple(x, 1 - hp["weight_decay"] * (1.0 if hp["fixed_decay"] else lr))
        else:
            g = _decayed(g, x, hp["weight_decay"])
        m, v = state["m"], state["v"]
        if t == 1:
            v += g * g
            return
        clip = t ** 0.25
        normed = np.clip(g / np.maximum(np.sqrt(v), hp["eps"]), -clip, clip)
        m += (1 - hp["beta1"]) * (normed - m)
        x -= lr * m
        v *= hp["beta2"]
        v += (1 - hp["beta2"]) * g * g
