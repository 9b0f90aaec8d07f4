"""A study's trial budget as slots claimed in the storage, so that every process sharing a study counts
the same trials and their number is exactly the budget.

A budget of N trials is N **slots** 0..N-1. A trial's slot is its user attribute ``slot`` when it was
created with one (a re-issued slot, enqueued with the attribute, so the storage writes both at once);
else (a fresh trial) its storage-assigned trial number minus the number of lower-numbered trials created
with a slot. Numbers are unique, dense and handed out atomically by every Optuna storage (PostgreSQL and
MySQL lock the study row, SQLite serialises writers, a journal orders its log), and every lower-numbered
trial exists, with the attributes it was created with, before a trial is created: so every process computes
the same slot for a trial, and two processes never take the same fresh slot. ``slot`` is only ever written
when a trial is created (never set later), or the slots of higher-numbered trials would move.

- A trial is **closed** when it was told FAIL without a run status (``over_budget``, ``duplicate`` or
  ``abandoned`` in its user attribute ``released``, or ``over_budget`` from older versions): it was never
  evaluated and counts for nothing. Every other FAIL carries the run's ``status`` (diverged, escaped):
  evaluated, part of the budget.
- The **holder** of slot s < N is the lowest-numbered trial with slot s that is not closed. A trial is
  claimed when, read after it was created, it holds its slot; any other is closed at once (``over_budget``
  for s ≥ N, ``duplicate`` otherwise) and never evaluated. Every trial of lower number exists before a
  trial is created and closing is final, so a slot never has two evaluated holders: over all processes
  the evaluated trials that count number at most N, and exactly N once every slot's holder is finished.
- A slot with no holder (its trial was abandoned, or closed as over budget under a smaller budget that
  a larger ``--trials`` now extends) is **re-issued**: a trial with that slot is enqueued, and the first
  process to ask takes it.
- The trials a study's results are read from (:func:`used_trials`) are the finished holders of slots
  0..N-1: a study that holds more trials than the budget (a run with a larger ``--trials`` before) is read
  as its first N trials by slot (by trial number), never as all of them.

Crashed processes: a claimed trial carries the user attribute ``owner`` (a token per process), and every
process working on a shared study renews a lease, the study user attribute ``lease:TOKEN`` (Unix time),
every :data:`LEASE_RENEW_S` seconds. A RUNNING trial whose owner's lease is older than
:data:`LEASE_EXPIRY_S` (a process killed with kill -9, a machine that went away), or one that has no owner
and stayed so for :data:`LEASE_EXPIRY_S` as this process observes it (left by older versions), is
**abandoned**: closed, and its slot re-issued, by the next process that reads the study.
"""

from __future__ import annotations

import os
import socket
import threading
import time
import uuid

SLOT = "slot"  # user attribute: the budget slot a trial takes
OWNER = "owner"  # user attribute: the token of the process evaluating the trial
RELEASED = "released"  # user attribute: why a trial was closed without being evaluated
LEASE_PREFIX = "lease:"  # study user attribute lease:TOKEN = Unix time of the owner's last renewal
LEASE_RENEW_S = 10.0
LEASE_EXPIRY_S = 120.0  # a lease not renewed for this long is a dead process's (clocks may differ by less)
POLL_S = 0.5  # wait between reads of a study whose last slots other processes are evaluating


def slot_map(trials) -> dict[int, int]:
    """trial number → slot, for every trial of a study (see the module docstring)."""
    out, reissued = {}, 0
    for t in sorted(trials, key=lambda t: t.number):
        if SLOT in t.user_attrs:
            out[t.number] = int(t.user_attrs[SLOT])
            reissued += 1
        else:
            out[t.number] = t.number - reissued
    return out


def next_fresh_slot(trials) -> int:
    """The slot the next fresh trial of a study takes (numbers are dense: 0..len-1)."""
    return len(trials) - sum(SLOT in t.user_attrs for t in trials)


def trial_slot(study, trial) -> int:
    """The slot of one trial of ``study`` (for samplers: reads the study's cached trials when it has no
    ``slot`` attribute)."""
    if SLOT in trial.user_attrs:
        return int(trial.user_attrs[SLOT])
    below = study._get_trials(deepcopy=False, use_cache=True)
    return trial.number - sum(SLOT in t.user_attrs for t in below if t.number < trial.number)


def is_closed(trial) -> bool:
    """Told FAIL without a run status: never evaluated (over budget, duplicate, abandoned)."""
    from optuna.trial import TrialState

    return trial.state == TrialState.FAIL and "status" not in trial.user_attrs


def is_evaluated(trial) -> bool:
    """Finished after a run: complete, pruned, or failed with the run's status (diverged, escaped)."""
    from optuna.trial import TrialState

    return trial.state in (TrialState.COMPLETE, TrialState.PRUNED) or (
        trial.state == TrialState.FAIL and "status" in trial.user_attrs)


def holders(trials, budget: int) -> dict:
    """slot → the lowest-numbered trial with that slot that is not closed, for slots 0..budget-1."""
    out: dict = {}
    slots = slot_map(trials)
    for t in sorted(trials, key=lambda t: t.number):
        s = slots[t.number]
        if s < budget and s not in out and not is_closed(t):
            out[s] = t
    return out


def used_trials(trials, budget: int) -> list:
    """The trials a study's results are read from: the evaluated holders of slots 0..budget-1, by slot."""
    held = holders(trials, budget)
    return [held[s] for s in sorted(held) if is_evaluated(held[s])]


def used_copies(trials, budget: int) -> list:
    """Copies of :func:`used_trials` carrying their slots explicitly, for a study they are added to (where
    their numbers change)."""
    import copy

    slots = slot_map(trials)
    out = []
    for t in used_trials(trials, budget):
        c = copy.copy(t)
        c.user_attrs = {**t.user_attrs, SLOT: slots[t.number]}
        out.append(c)
    return out


def close(study, trial_id: int, reason: str) -> bool:
    """Close a trial unevaluated (FAIL, ``released = reason``); False when it had finished meanwhile."""
    from optuna.exceptions import UpdateFinishedTrialError
    from optuna.trial import TrialState

    try:
        study._storage.set_trial_user_attr(trial_id, RELEASED, reason)
        return study._storage.set_trial_state_values(trial_id, TrialState.FAIL)
    except UpdateFinishedTrialError:
        return False


class Lease:
    """This process's claim on the trials it runs in a shared study: a token, renewed in a background thread
    as the study user attribute ``lease:TOKEN``; :meth:`abandon_stale` closes the trials of dead processes."""

    def __init__(self, study):
        self.study = study
        self.token = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self._stop = threading.Event()
        self._ownerless: dict[int, float] = {}  # trial id → when this process first saw it RUNNING, no owner
        self._renew()
        self._thread = threading.Thread(target=self._run, name="optbench-lease", daemon=True)
        self._thread.start()

    def _renew(self) -> None:
        self.study.set_user_attr(LEASE_PREFIX + self.token, time.time())

    def _run(self) -> None:
        while not self._stop.wait(LEASE_RENEW_S):
            try:
                self._renew()
            except Exception:  # noqa: BLE001 - a storage hiccup: the next renewal retries
                pass

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)

    def abandon_stale(self, trials) -> int:
        """Close every RUNNING trial of a dead process (see the module docstring); returns how many."""
        from optuna.trial import TrialState

        leases = self.study.user_attrs
        now, seen_now, closed = time.time(), time.monotonic(), 0
        for t in trials:
            if t.state != TrialState.RUNNING:
                continue
            owner = t.user_attrs.get(OWNER)
            if owner is None:
                stale = seen_now - self._ownerless.setdefault(t._trial_id, seen_now) > LEASE_EXPIRY_S
            else:
                renewed = leases.get(LEASE_PREFIX + owner)
                stale = owner != self.token and (renewed is None or now - float(renewed) > LEASE_EXPIRY_S)
            if stale and close(self.study, t._trial_id, "abandoned"):
                closed += 1
        return closed
