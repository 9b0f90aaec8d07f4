"""Tuning protocols: how a study spends its trial budget. The protocol and the budget are recorded in
the results manifest next to every verdict they produce.

- ``tpe`` (default): Optuna's TPE in batches (:class:`BatchTPESampler`): the Parzen estimators are fitted
  once per round and every trial of the round is drawn from that fit. Budget: ``--trials`` (default 50).
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
from dataclasses import dataclass

from optbench.errors import SpecError, unknown_name

DEEPOBS_GRID = tuple(10 ** (-5 + 7 * i / 35) for i in range(36))  # 1e-5 .. 1e2, 36 values


@dataclass(frozen=True)
class Protocol:
    name: str
    doc: str
    default_trials: int
    fixed_trials: int | None = None  # the protocol defines its budget
    lr_grid: tuple[float, ...] | None = None

    def budget(self, trials: int | None) -> int:
        if self.fixed_trials is not None:
            if trials is not None and trials != self.fixed_trials:
                raise SpecError(f"Protocol {self.name!r} has a fixed budget of {self.fixed_trials} trials; "
                                f"drop --trials {trials} or use protocol 'random' or 'tpe'.")
            return self.fixed_trials
        return trials if trials is not None else self.default_trials

    def sampler(self, seed: int, dims):
        import optuna

        if self.lr_grid is not None:
            if [d.name for d in dims] != ["lr"]:
                raise SpecError(f"Protocol {self.name!r} searches the learning rate only; drop --space "
                                f"(got {', '.join(d.name for d in dims) or 'no learning rate'}).")
            # the grid points are enqueued into the study (see study.tune_one); GridSampler's own
            # study.stop() at exhaustion is not allowed under ask/tell
            return optuna.samplers.RandomSampler(seed=seed)
        if self.name.startswith("random"):
            return optuna.samplers.RandomSampler(seed=seed)
        return batch_tpe_sampler(seed)

    def pruner(self):
        import optuna

        if self.name == "tpe":
            return optuna.pruners.MedianPruner(n_startup_trials=10, n_warmup_steps=0)
        return optuna.pruners.NopPruner()


PROTOCOLS = {p.name: p for p in (
    Protocol("tpe", "Optuna TPE with a median pruner; budget --trials", 50),
    Protocol("random", "random search (Crowded Valley); budget --trials", 50),
    Protocol("random-small", "random search, Crowded Valley's small budget (25 trials)", 25, fixed_trials=25),
    Protocol("random-large", "random search, Crowded Valley's large budget (50 trials)", 50, fixed_trials=50),
    Protocol("grid", "DeepOBS's lr grid: 36 log-spaced rates in [1e-5, 1e2]", 36, fixed_trials=36,
             lr_grid=DEEPOBS_GRID),
)}


def get_protocol(name: str) -> Protocol:
    if name not in PROTOCOLS:
        raise unknown_name("protocol", name, PROTOCOLS)
    return PROTOCOLS[name]


def batch_tpe_sampler(seed: int, n_startup_trials: int = 10):
    """A ``BatchTPESampler`` (the class is defined on first use: optuna is imported lazily)."""
    return _batch_tpe_class()(seed=seed, n_startup_trials=n_startup_trials)


@functools.cache
def _batch_tpe_class():
    import os

    import numpy as np
    from optuna.samplers import TPESampler
    from optuna.samplers._tpe.sampler import _split_trials, default_gamma
    from optuna.trial import FrozenTrial, TrialState

    FAILBAD = os.environ.get("XB_FAILBAD", "1") == "1"
    CHUNK = int(os.environ.get("XB_CHUNK", "4"))

    class BatchTPESampler(TPESampler):
        def __init__(self, seed: int, n_startup_trials: int = 10):
            super().__init__(seed=seed, multivariate=True, n_startup_trials=n_startup_trials)
            self.round_size = 1
            self._queue: list[dict] = []

        def start_round(self, k: int) -> None:
            self.round_size, self._queue = max(1, k), []

        def sample_relative(self, study, trial, search_space):
            if not search_space:
                return {}
            finished = study._get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.PRUNED),
                                         use_cache=True)
            if len(finished) < self._n_startup_trials:
                return {}
            if not self._queue:
                self._queue = self._sample_round(study, finished, search_space, self.round_size)
            return self._queue.pop(0)

        def _sample_round(self, study, finished, search_space, k: int) -> list[dict]:
            below, above = _split_trials(study, finished, (self._gamma or default_gamma)(len(finished)))
            if FAILBAD:
                failed = study._get_trials(deepcopy=False, states=(TrialState.FAIL,), use_cache=True)
                above = above + [t for t in failed if "status" in t.user_attrs
                                 and all(n in t.params for n in search_space)]
            mpe_below = self._build_parzen_estimator(study, search_space, below, handle_below=True)
            n = self._n_ei_candidates
            out, pending = [], []
            while len(out) < k:
                mpe_above = self._build_parzen_estimator(study, search_space, above + pending, handle_below=False)
                c = min(CHUNK, k - len(out))
                samples = mpe_below.sample(self._rng.rng, c * n)
                acq = self._compute_acquisition_func(samples, mpe_below, mpe_above).reshape(c, n)
                pick = np.arange(c) * n + acq.argmax(axis=1)
                for i in pick:
                    params = {name: dist.to_external_repr(samples[name][i].item())
                              for name, dist in search_space.items()}
                    out.append(params)
                    pending.append(FrozenTrial(number=-1, state=TrialState.RUNNING, value=None, datetime_start=None,
                                               datetime_complete=None, params=params,
                                               distributions=dict(search_space), user_attrs={},
                                               system_attrs={}, intermediate_values={}, trial_id=-1))
            return out

    return BatchTPESampler
