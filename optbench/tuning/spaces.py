"""Search spaces: what a tuning study varies for each optimizer.

By default only the learning rate is searched, log-uniformly over ``[1e-5, 10]`` (six decades around
every registered default, wide enough to contain both the best rate and rates that diverge; DeepOBS and
Crowded Valley both tune lr on a log scale over a comparably wide range). Other hyperparameters are
opt-in with ``--space``::

    --space 'momentum=0.5:0.99'               uniform on [0.5, 0.99]
    --space 'lr=1e-4:1:log,beta2=0.9:0.9999'  lr log-uniform on [1e-4, 1]; beta2 uniform
    --space 'eps=1e-10:1e-6:log'

``beta1``/``beta2`` address the two halves of a ``betas`` pair. A key applies to every optimizer of the
study that has that hyperparameter (others are tuned without it); a key that none of them has is an
error. A hyperparameter the optimizer spec fixes (``adam(lr=1e-3)``) is not searched.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from optbench.errors import SpecError


@dataclass(frozen=True)
class Dim:
    """One searched hyperparameter: ``low``..``high``, log-uniform when ``log``."""

    name: str
    low: float
    high: float
    log: bool = False

    def __str__(self) -> str:
        return f"{self.name}={self.low:g}:{self.high:g}{':log' if self.log else ''}"


DEFAULT_LR = Dim("lr", 1e-5, 10.0, log=True)
_BETA_KEYS = {"beta1": 0, "beta2": 1}


def parse_space(text: str | None) -> dict[str, Dim]:
    """Parse ``'key=LOW:HIGH[:log],...'``; an empty text is the default space (lr only)."""
    dims: dict[str, Dim] = {}
    for part in (text or "").split(","):
        part = part.strip()
        if not part:
            continue
        key, eq, bounds = part.partition("=")
        key = key.strip()
        pieces = bounds.split(":")
        if not eq or not key.isidentifier() or len(pieces) not in (2, 3) or (
                len(pieces) == 3 and pieces[2].strip() not in ("log", "lin")):
            raise SpecError(f"Bad search-space entry {part!r}: write key=LOW:HIGH or key=LOW:HIGH:log, "
                            "e.g. 'momentum=0.5:0.99' or 'lr=1e-4:1:log'.")
        try:
            low, high = float(pieces[0]), float(pieces[1])
        except ValueError:
            raise SpecError(f"Bad bounds in search-space entry {part!r}: LOW and HIGH must be numbers.") from None
        log = len(pieces) == 3 and pieces[2].strip() == "log"
        if not (math.isfinite(low) and math.isfinite(high) and low < high) or (log and low <= 0):
            raise SpecError(f"Bad bounds in search-space entry {part!r}: need LOW < HIGH"
                            f"{' and LOW > 0 for a log scale' if log else ''}.")
        if key in dims:
            raise SpecError(f"Search-space key {key!r} is given twice.")
        dims[key] = Dim(key, low, high, log)
    return dims


def space_for(optimizer, dims: dict[str, Dim]) -> list[Dim]:
    """The dimensions searched for one optimizer config: lr (default range unless overridden) plus the
    opt-in keys it has and does not fix in its spec."""
    params, given = optimizer.entry.params, optimizer.given
    out = []
    if "lr" in params and "lr" not in given:
        out.append(dims.get("lr", DEFAULT_LR))
    for key, dim in dims.items():
        if key == "lr":
            continue
        base = "betas" if key in _BETA_KEYS else key
        if base in params and base not in given:
            out.append(dim)
    return out


def check_space(optimizers, dims: dict[str, Dim]) -> None:
    """Every opt-in key must belong to at least one optimizer of the study."""
    for key in dims:
        base = "betas" if key in _BETA_KEYS else key
        if not any(base in o.entry.params for o in optimizers):
            raise SpecError(f"--space key {key!r} is not a hyperparameter of "
                            f"{', '.join(o.name for o in optimizers)}.")


def apply(optimizer, values: dict[str, float]):
    """The optimizer config with sampled values applied (beta1/beta2 folded into betas)."""
    updates: dict[str, object] = {}
    betas = list(optimizer.hyperparams.get("betas") or ())
    for key, value in values.items():
        if key in _BETA_KEYS:
            betas[_BETA_KEYS[key]] = float(value)
            updates["betas"] = tuple(betas)
        else:
            updates[key] = float(value)
    return optimizer.with_hyperparams(**updates)
