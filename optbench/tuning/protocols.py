"""Tuning protocols: how a study spends its trial budget. The protocol and the budget are recorded in
the results manifest next to every verdict they produce.

- ``tpe`` (default): Optuna's TPE in rounds (``BatchTPESampler``): per round, half local steps around
  the best trials and half TPE candidates from one fit (constant liar within the round); diverged trials
  count as bad observations. Budget: ``--trials`` (default 50).
- ``random``: uniform random search in the space (log-uniform for log dimensions), as in Crowded Valley
  (Schmidt, Schneider & Hennig 2021, "Descending through a Crowded Valley"), whose budgets are 25 trials
  ("small budget") and 50 trials ("large budget"): ``random-small`` and ``random-large`` fix those.
- ``grid``: DeepOBS's learning-rate grid (Schneider, Balles & Hennig 2019): 36 log-spaced rates from
  1e-5 to 1e2; lr only, the budget is the grid.

Sivaprasad et al. 2020 ("Optimizer Benchmarking Needs to Account for Hyperparameter Tuning") argue for
exactly this: equal budgets per optimizer, with the protocol stated next to the result.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from optbench.errors import SpecError
from optbench.registry import Registry

DEEPOBS_GRID = tuple(10 ** (-5 + 7 * i / 35) for i in range(36))  # 1e-5 .. 1e2, 36 values


def no_pruner():
    """No pruning: every trial runs its whole budget (Optuna's ``NopPruner``)."""
    import optuna

    return optuna.pruners.NopPruner()


@dataclass(frozen=True)
class Protocol:
    """A tuning protocol: its budget and how it draws trials.

    ``make_sampler(seed, dims)`` builds the Optuna sampler; its draws are a function of ``seed`` and each
    trial's budget slot (see :mod:`optbench.tuning.budget`), not of the process, so processes sharing a study
    draw distinct trials and a slot re-issued after a crash gets the same random point again.
    ``make_pruner()`` builds the pruner of its studies under ``--pruner none`` (the default); another
    ``--pruner`` replaces it (:data:`PRUNERS`). Every protocol here prunes nothing. Both are module-level
    functions or partials of them: a protocol is pickled to worker processes.
    """

    name: str
    doc: str
    default_trials: int
    make_sampler: Callable[[int, Sequence[Any]], Any]
    fixed_trials: int | None = None  # the protocol defines its budget
    lr_grid: tuple[float, ...] | None = None  # the learning rates it evaluates (the study's lr range)
    make_pruner: Callable[[], Any] = no_pruner

    def budget(self, trials: int | None) -> int:
        if self.fixed_trials is not None:
            if trials is not None and trials != self.fixed_trials:
                raise SpecError(f"Protocol {self.name!r} has a fixed budget of {self.fixed_trials} trials; "
                                f"drop --trials {trials} or use protocol 'random' or 'tpe'.")
            return self.fixed_trials
        return trials if trials is not None else self.default_trials

    def sampler(self, seed: int, dims: Sequence[Any]):
        """The protocol's sampler for the searched dimensions ``dims``."""
        return self.make_sampler(seed, dims)


def tpe_sampler(seed: int, dims: Sequence[Any]):
    """Batch TPE drawing from each trial's budget slot (:func:`batch_tpe_sampler`)."""
    return batch_tpe_sampler(seed, slot_seeded=True)


def random_sampler(seed: int, dims: Sequence[Any]):
    """Uniform random search over ``dims`` (:func:`slot_random_sampler`)."""
    return slot_random_sampler(seed)


def lr_grid_sampler(grid: tuple[float, ...], protocol: str, seed: int, dims: Sequence[Any]):
    """Slot s evaluates ``grid[s]`` (the learning rate only); bind ``grid`` and ``protocol`` with
    ``functools.partial`` (a protocol travels to worker processes, so its callables must pickle). GridSampler's
    own study.stop() at exhaustion is not allowed under ask/tell, and its choice of point depends on what this
    process has seen."""
    if [d.name for d in dims] != ["lr"]:
        raise SpecError(f"Protocol {protocol!r} searches the learning rate only; drop --space "
                        f"(got {', '.join(d.name for d in dims) or 'no learning rate'}).")
    return slot_random_sampler(seed, grid={"lr": grid})


PROTOCOLS: Registry[Protocol] = Registry("protocol")
for _protocol in (
    Protocol("tpe", "Optuna TPE in rounds (batch TPE: local steps around the best and TPE candidates); "
             "budget --trials", 50, tpe_sampler),
    Protocol("random", "random search (Crowded Valley); budget --trials", 50, random_sampler),
    Protocol("random-small", "random search, Crowded Valley's small budget (25 trials)", 25, random_sampler,
             fixed_trials=25),
    Protocol("random-large", "random search, Crowded Valley's large budget (50 trials)", 50, random_sampler,
             fixed_trials=50),
    Protocol("grid", "DeepOBS's lr grid: 36 log-spaced rates in [1e-5, 1e2]", 36,
             functools.partial(lr_grid_sampler, DEEPOBS_GRID, "grid"), fixed_trials=36, lr_grid=DEEPOBS_GRID),
):
    PROTOCOLS.register(_protocol.name, _protocol)


def get_protocol(name: str) -> Protocol:
    return PROTOCOLS.get(name)


def median_pruner():
    """Prunes a trial whose intermediate loss is worse than the median of the trials before it at that
    step, after 5 complete trials (Optuna's ``MedianPruner``)."""
    import optuna

    return optuna.pruners.MedianPruner(n_startup_trials=5)


# ``--pruner``: name → make_pruner(); "none" leaves the protocol's own (``Protocol.make_pruner``).
PRUNERS: Registry[Callable[[], Any]] = Registry("pruner")
PRUNERS.register("none", no_pruner)
PRUNERS.register("median", median_pruner)


def slot_seed(seed: int, slot: int, name: str = "") -> int:
    """The seed of one trial's draws: a function of the sampler seed, the trial's budget slot and the
    parameter's name only (numpy's SeedSequence mixes them into independent streams)."""
    import zlib

    import numpy as np

    return int(np.random.SeedSequence([seed, slot, zlib.crc32(name.encode())]).generate_state(1)[0])


def slot_random_sampler(seed: int, grid: dict[str, tuple[float, ...]] | None = None):
    """Uniform random search (log-uniform on log dimensions) whose draw for a trial depends on ``seed`` and
    the trial's slot only; ``grid``: parameters whose value in slot s is ``grid[name][s]``."""
    return _slot_random_class()(seed=seed, grid=grid or {})


@functools.cache
def _slot_random_class():
    from optuna.samplers import RandomSampler
    from optuna.samplers._lazy_random_state import LazyRandomState

    from optbench.tuning.budget import trial_slot

    class SlotRandomSampler(RandomSampler):
        """``RandomSampler`` reseeded per (slot, parameter) from :func:`slot_seed`."""

        def __init__(self, seed: int, grid: dict[str, tuple[float, ...]]):
            super().__init__(seed=seed)
            self.base_seed, self.grid = seed, grid

        def sample_independent(self, study, trial, param_name, param_distribution):
            if param_name in self.grid:
                return self.grid[param_name][trial_slot(study, trial)]
            self._rng = LazyRandomState(slot_seed(self.base_seed, trial_slot(study, trial), param_name))
            return super().sample_independent(study, trial, param_name, param_distribution)

    return SlotRandomSampler


def batch_tpe_sampler(seed: int, n_startup_trials: int = 10, slot_seeded: bool = False):
    """A ``BatchTPESampler`` (the class is defined on first use: optuna is imported lazily). ``slot_seeded``:
    draw from the trial's budget slot (see :class:`Protocol`) instead of one stream per process."""
    return _batch_tpe_class()(seed=seed, n_startup_trials=n_startup_trials, slot_seeded=slot_seeded)


LOCAL_SHARE = 0.5  # share of each round (after the startup round) drawn around the best trials
LOCAL_TOP = 3  # ... around the best this many complete trials, in turn
LOCAL_SCALES = (1e-7, 0.2)  # ... with a step of N(0, s²) × range, s log-uniform in this interval: down to
# 1e-7 of the range, because on chaotic objectives the good lrs can be spikes ~1e-5 wide (relative), and
# up to 20 % to reach neighbouring basins
LIAR_CHUNK = 4  # g(x) is refitted with the round's pending trials every this many TPE candidates


@functools.cache
def _batch_tpe_class():
    import numpy as np
    from optuna.distributions import IntDistribution
    from optuna.samplers import TPESampler
    from optuna.samplers._tpe.sampler import _split_trials, default_gamma
    from optuna.trial import FrozenTrial, TrialState

    class BatchTPESampler(TPESampler):
        """TPE that asks in rounds. Per round of K trials (after ``n_startup_trials`` random ones):

        - half of them (:data:`LOCAL_SHARE`, rounded) are drawn around the best :data:`LOCAL_TOP` complete
          trials, one Gaussian step each in the space's own coordinates (log for log dimensions) with
          a scale drawn log-uniformly between 1e-7 and 20 % of the range: the zooming-in that plain
          TPE does one trial at a time (each of its asks sees the previous result), done within a round
          at every scale at once.
        - the rest are TPE candidates (Bergstra et al. 2011): the Parzen estimators l(x) (good trials)
          and g(x) (the rest) are fitted once per round, and each candidate is the best of
          ``n_ei_candidates`` draws from l by l(x)/g(x). Constant liar: every :data:`LIAR_CHUNK`
          candidates g is refitted with the round's candidates so far counted as bad (as Optuna's
          ``constant_liar`` does with RUNNING trials), so the candidates spread instead of all taking
          the same argmax.
        - diverged or escaped trials (told FAIL, user attribute ``status``) count as bad observations
          in g, as a trial whose value is infinite would in plain TPE; Optuna's own TPE ignores FAIL
          trials and so keeps proposing divergent rates. Failed trials never enter l or the best
          trials.

        ``start_round(k)`` announces the size of the next round; with ``k = 1`` this is exactly
        Optuna's TPE (same draws as ``TPESampler(seed=...)`` on the same objective, diverged trials
        counted as infinite losses).

        ``slot_seeded`` (what ``optbench tune`` uses): a random startup trial's point is drawn from
        :func:`slot_seed` of its budget slot, and each round's draws from the slot of the round's first
        trial, so processes sharing a study never repeat each other's points.
        """

        def __init__(self, seed: int, n_startup_trials: int = 10, slot_seeded: bool = False):
            super().__init__(seed=seed, multivariate=True, n_startup_trials=n_startup_trials)
            self.round_size = 1
            self._queue: list[dict] = []
            self._round_space: dict | None = None  # infer_relative_search_space of this round
            self.base_seed, self.slot_seeded = seed, slot_seeded

        def sample_independent(self, study, trial, param_name, param_distribution):
            if self.slot_seeded:
                from optuna.samplers._lazy_random_state import LazyRandomState

                from optbench.tuning.budget import trial_slot

                slot = trial_slot(study, trial)
                self._random_sampler._rng = LazyRandomState(slot_seed(self.base_seed, slot, param_name))
            return super().sample_independent(study, trial, param_name, param_distribution)

        def start_round(self, k: int) -> None:
            self.round_size, self._queue, self._round_space = max(1, k), [], None

        def infer_relative_search_space(self, study, trial):
            """Optuna's (the intersection of the finished trials' spaces), computed once per round: a round's
            trials are all asked before any is told, so within a round it cannot change here (and in a shared
            storage only with a first finished trial of another space, which optbench's studies never have)."""
            if self.round_size == 1 or not self._round_space:
                self._round_space = super().infer_relative_search_space(study, trial)
            return self._round_space

        def next_round_size(self, study, k: int) -> int:
            """The size of the next round, at most ``k``: the random startup trials make a round of their
            own (a round of 64 would otherwise spend 54 more trials at random), then rounds of ``k``."""
            done = sum(map(len, self._observed(study, None)))
            return min(k, self._n_startup_trials - done) if done < self._n_startup_trials else k

        def sample_relative(self, study, trial, search_space):
            if not search_space:
                return {}
            finished, bad = self._observed(study, search_space)
            if len(finished) + len(bad) < self._n_startup_trials:
                return {}
            if not self._queue:
                if self.slot_seeded:
                    from optuna.samplers._lazy_random_state import LazyRandomState

                    from optbench.tuning.budget import trial_slot

                    self._rng = LazyRandomState(slot_seed(self.base_seed, trial_slot(study, trial), "round"))
                self._queue = self._sample_round(study, finished, bad, search_space, self.round_size)
            return self._queue.pop(0)

        @staticmethod
        def _observed(study, search_space):
            """(complete and pruned trials, diverged trials): those told FAIL with a ``status`` (not the
            ``over_budget`` ones, never evaluated) and, given ``search_space``, with all its parameters."""
            finished = study._get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.PRUNED),
                                         use_cache=True)
            failed = study._get_trials(deepcopy=False, states=(TrialState.FAIL,), use_cache=True)
            bad = [t for t in failed if "status" in t.user_attrs
                   and (search_space is None or all(n in t.params for n in search_space))]
            return finished, bad

        def _sample_round(self, study, finished, bad, search_space, k: int) -> list[dict]:
            # gamma counts the diverged trials, and they join g in trial order: as infinite losses would
            n_below = (self._gamma or default_gamma)(len(finished) + len(bad))
            below, above = _split_trials(study, finished, n_below)
            above = sorted(above + bad, key=lambda t: t.number)
            out = self._local(finished, search_space, round(LOCAL_SHARE * k) if k > 1 else 0)
            mpe_below = self._build_parzen_estimator(study, search_space, below, handle_below=True)
            n = self._n_ei_candidates
            pending: list[FrozenTrial] = []  # this round's candidates, as running trials (the constant liar)
            while len(out) < k:
                mpe_above = self._build_parzen_estimator(study, search_space, above + pending, handle_below=False)
                c = min(LIAR_CHUNK, k - len(out))
                samples = mpe_below.sample(self._rng.rng, c * n)
                acq = self._compute_acquisition_func(samples, mpe_below, mpe_above).reshape(c, n)
                for i in np.arange(c) * n + acq.argmax(axis=1):
                    params = {name: dist.to_external_repr(samples[name][i].item())
                              for name, dist in search_space.items()}
                    out.append(params)
                    pending.append(FrozenTrial(
                        number=-1, trial_id=-1, state=TrialState.RUNNING, value=None, datetime_start=None,
                        datetime_complete=None, params=params, distributions=dict(search_space), user_attrs={},
                        system_attrs={}, intermediate_values={}))
            return out

        def _local(self, finished, search_space, m: int) -> list[dict]:
            """``m`` Gaussian steps around the best complete trials, at log-uniform scales."""
            complete = sorted((t for t in finished if t.state == TrialState.COMPLETE), key=lambda t: t.value)
            top = [t for t in complete[:LOCAL_TOP] if all(n in t.params for n in search_space)]
            if not top or m <= 0:
                return []
            rng, (s_lo, s_hi) = self._rng.rng, LOCAL_SCALES
            out = []
            for j in range(m):
                base, scale = top[j % len(top)], np.exp(rng.uniform(np.log(s_lo), np.log(s_hi)))
                params = {}
                for name, dist in search_space.items():
                    lo, hi, x0 = dist.low, dist.high, base.params[name]
                    if dist.log:
                        lo, hi, x0 = np.log(lo), np.log(hi), np.log(x0)
                    x = _reflect(x0 + rng.normal() * scale * (hi - lo), lo, hi)
                    value = float(np.clip(np.exp(x) if dist.log else x, dist.low, dist.high))
                    if isinstance(dist, IntDistribution):  # onto the grid, else Optuna re-samples it
                        value = int(dist.low + round((value - dist.low) / dist.step) * dist.step)
                    params[name] = value
                out.append(self._moved(params, base.params, search_space, rng))
            return out

        @staticmethod
        def _moved(params: dict, base: dict, search_space, rng) -> dict:
            """``params``, or, when rounding to the integer grids left it equal to ``base`` (a step smaller
            than half a grid cell in a space of integers only), ``base`` with one integer dimension moved
            by one grid step: the same point again would spend a trial on a known value."""
            ints = [n for n, d in search_space.items() if isinstance(d, IntDistribution) and d.high > d.low]
            if params != base or not ints:
                return params
            name = ints[rng.integers(len(ints))]
            dist, x0 = search_space[name], base[name]
            up = x0 + dist.step <= dist.high and (x0 - dist.step < dist.low or rng.random() < 0.5)
            return {**params, name: x0 + dist.step if up else x0 - dist.step}

    return BatchTPESampler


def _reflect(x: float, lo: float, hi: float) -> float:
    """``x`` folded back into ``[lo, hi]`` by reflection at the bounds. Clipping would put a point mass on each
    bound: local steps from a best trial near a bound then propose the bound itself again and again (the same
    trial evaluated twice, in one process or in two sharing a study); reflection keeps a continuous density."""
    if lo <= x <= hi:
        return float(x)  # exactly as drawn (what clipping kept too)
    span = hi - lo
    if span <= 0:
        return float(lo)
    y = (x - lo) % (2 * span)
    return float(lo + (span - abs(y - span)))
