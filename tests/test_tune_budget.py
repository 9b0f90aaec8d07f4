"""Tuning budgets across processes and storages: every process sharing a study draws distinct trials, the
evaluated trials number exactly the budget, a study holding more trials is read from its first N, and
trials left RUNNING by a killed process are re-issued."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from optbench.optimizers import get_optimizer
from optbench.problems import get_problem
from optbench.tuning import get_protocol, parse_space, tune_one
from optbench.tuning.protocols import DEEPOBS_GRID

# one tuning process: waits for the file GO (so that all of them race), tunes adam on rosenbrock in the
# shared STORAGE, writes its study record to OUT
CHILD = r"""
import json, pathlib, sys, time
from optbench.optimizers import get_optimizer
from optbench.problems import get_problem
from optbench.tuning import get_protocol, parse_space, tune_one
go, storage, protocol, trials, batch, out, block = sys.argv[1:8]
if block == "block":  # stand in for a long evaluation, to be killed in it
    import optbench.tuning.study as study_module
    def blocked(*args, **kwargs):
        pathlib.Path(out + ".evaluating").write_text("")
        time.sleep(600)
    study_module._evaluate = blocked
pathlib.Path(out + ".ready").write_text("")
deadline = time.time() + 120
while not pathlib.Path(go).exists() and time.time() < deadline:
    time.sleep(0.01)
res = tune_one(get_problem("rosenbrock"), get_optimizer("adam"), protocol=get_protocol(protocol),
               trials=None if trials == "-" else int(trials), dims=parse_space(""), steps=20, storage=storage,
               out_dir=out + ".dir", batch=int(batch))
pathlib.Path(out).write_text(json.dumps(res.record()))
"""


def _children(tmp_path, storage: str, protocol: str, trials: str, batch: int, n: int, block: bool = False):
    """``n`` processes of :data:`CHILD`, started together once each has imported everything."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path), "OMP_NUM_THREADS": "1"}
    go = tmp_path / "go"
    outs = [tmp_path / f"child{i}.json" for i in range(n)]
    procs = [subprocess.Popen([sys.executable, "-c", CHILD, str(go), storage, protocol, trials, str(batch), str(out),
                               "block" if block else "run"], env=env, stderr=subprocess.PIPE, text=True)
             for out in outs]
    _wait_for([Path(f"{o}.ready") for o in outs], procs)
    go.write_text("")
    return procs, outs


def _wait_for(paths, procs, timeout_s: float = 120) -> None:
    deadline = time.time() + timeout_s
    while not all(p.exists() for p in paths):
        assert time.time() < deadline, "child processes did not get ready"
        assert all(p.poll() is None for p in procs), [p.stderr.read() for p in procs if p.poll() is not None]
        time.sleep(0.05)


def _storage_trials(storage: str, optimizer: str = "adam"):
    import optuna
    from optuna.storages import JournalStorage
    from optuna.storages.journal import JournalFileBackend

    store = storage if "://" in storage else JournalStorage(JournalFileBackend(storage))
    (name,) = [s.study_name for s in optuna.get_all_study_summaries(store) if f"|{optimizer}|" in s.study_name]
    return optuna.load_study(study_name=name, storage=store).get_trials(deepcopy=False)


def _evaluated(trials):
    """Trials that ran: complete, pruned, or failed with a run status (diverged); not those closed unrun."""
    return [t for t in trials if t.state.name in ("COMPLETE", "PRUNED")
            or (t.state.name == "FAIL" and "status" in t.user_attrs)]


@pytest.mark.parametrize("kind,protocol,budget,batch", [("journal", "tpe", 12, 3), ("sqlite", "tpe", 12, 3),
                                                        ("sqlite", "grid", 36, 12)])
def test_processes_sharing_a_study_draw_distinct_trials_and_spend_exactly_the_budget(tmp_path, kind, protocol,
                                                                                     budget, batch):
    """Two processes racing on one study (the tpe protocol's 10 random start-up trials were drawn twice)."""
    storage = f"sqlite:///{tmp_path / 'study.db'}" if kind == "sqlite" else str(tmp_path / "study.journal")
    procs, outs = _children(tmp_path, storage, protocol, "-" if protocol == "grid" else str(budget), batch, n=2)
    for p in procs:
        _, err = p.communicate(timeout=300)
        assert p.returncode == 0, err
    trials = _storage_trials(storage)
    evaluated = _evaluated(trials)
    assert len(evaluated) == budget
    lrs = [t.params["lr"] for t in evaluated]
    assert len(set(lrs)) == budget  # no point evaluated twice (each process used to draw the same start-up points)
    if protocol == "grid":
        assert sorted(lrs) == sorted(DEEPOBS_GRID)
    assert all(t.state.name in ("COMPLETE", "FAIL") for t in trials)  # nothing left running or waiting
    best = min(t.value for t in evaluated if t.state.name == "COMPLETE")
    for out in outs:  # every process waited for the others' last trials: one verdict from the whole budget
        record = json.loads(out.read_text())
        assert sum(record["trials"].values()) == budget and record["trials_used"] == budget
        assert record["best_value"] == best and record["trials_not_used"].get("abandoned", 0) == 0


def _first_evaluated(storage, n: int):
    return sorted(_evaluated(_storage_trials(storage)), key=lambda t: t.number)[:n]


@pytest.mark.parametrize("where", ["default", "journal", "workers"])
def test_a_study_holding_more_trials_than_the_budget_is_read_from_its_first_n(tmp_path, where):
    problem, adam = get_problem("rosenbrock"), get_optimizer("adam")
    storage = str(tmp_path / "shared.journal") if where == "journal" else None
    kwargs = dict(protocol=get_protocol("random"), dims=parse_space(""), steps=20, out_dir=tmp_path / "out",
                  batch=8, storage=storage)
    tune_one(problem, adam, trials=30, **kwargs)  # e.g. a run killed with a larger --trials
    if where == "workers":
        from optbench.tuning.parallel import tune_parallel

        small, _ = tune_parallel([(problem, adam), (problem, get_optimizer("sgd"))], workers=2, trials=10,
                                 **kwargs)
    else:
        small = tune_one(problem, adam, trials=10, **kwargs)
    assert sum(small.states.values()) == 10 and small.evaluated_here == 0
    assert small.trials_used == 10 and small.trials_in_storage == 30 and small.not_used == {"beyond_budget": 20}
    first = _first_evaluated(storage or str(tmp_path / "out" / "tuning.journal"), 10)
    assert small.best_value == min(t.value for t in first if t.state.name == "COMPLETE")
    # random draws are a function of the slot: the first 10 of the 30 are what a 10-trial study draws
    fresh = tune_one(problem, adam, trials=10, **{**kwargs, "out_dir": tmp_path / "fresh", "storage": None})
    assert fresh.best_value == small.best_value
    assert [t.params for t in _first_evaluated(str(tmp_path / "fresh" / "tuning.journal"), 10)] == [
        t.params for t in first]


def test_tune_cli_states_the_trials_it_used_from_a_larger_study(tmp_path):
    out = tmp_path / "t"
    tune_one(get_problem("rosenbrock"), get_optimizer("adam"), protocol=get_protocol("random"), trials=30,
             dims=parse_space(""), steps=20, out_dir=out)
    from cli_invoke import invoke

    r = invoke("tune", "-p", "rosenbrock", "-o", "adam", "--trials", "10", "--protocol", "random", "--steps", "20",
               "--seeds", "1", "--out", out)
    assert r.exit_code == 0, r.stderr
    (record,) = json.loads((out / "manifest.json").read_text())["tuning"]
    (study,) = record["studies"]
    assert sum(study["trials"].values()) == 10 and study["budget"] == 10
    assert study["trials_used"] == 10 and study["trials_in_storage"] == 30 and study["trials_evaluated_here"] == 0
    assert "first N trials" in record["trials_rule"]
    text = " ".join(r.stdout.split())
    assert "10 trials each" in text and "the first 10 of 30 in the study" in text
    import pandas as pd

    from optbench.report import build_report

    build_report([out], tmp_path / "report", formats=("png",), figures=("curves",))
    (row,) = pd.read_csv(tmp_path / "report" / "tables" / "tuning.csv").to_dict("records")
    assert (row["budget"], row["trials_used"], row["trials_in_study"]) == (10, 10, 30)
    assert row["complete"] + row["failed"] == 10


def test_a_larger_budget_reissues_the_slots_of_trials_closed_over_budget(tmp_path):
    """Trials closed as over budget (a race under --trials 10) hold no slot: --trials 16 fills slots 10..15,
    re-issuing those whose trial numbers the closed trials took, without closing any more."""
    import optuna
    from optuna.storages import JournalStorage
    from optuna.storages.journal import JournalFileBackend
    from optuna.trial import TrialState

    storage = str(tmp_path / "s.journal")
    kwargs = dict(protocol=get_protocol("random"), dims=parse_space(""), steps=20, out_dir=tmp_path, batch=4,
                  storage=storage)
    first = tune_one(get_problem("rosenbrock"), get_optimizer("adam"), trials=10, **kwargs)
    study = optuna.load_study(study_name=first.study_name, storage=JournalStorage(JournalFileBackend(storage)))
    for _ in range(3):  # what a racing process leaves: trials 10..12 asked past the budget and closed
        trial = study.ask()
        trial.set_user_attr("released", "over_budget")
        study.tell(trial, state=TrialState.FAIL)
    res = tune_one(get_problem("rosenbrock"), get_optimizer("adam"), trials=16, **kwargs)
    trials = _storage_trials(storage)
    assert len(_evaluated(trials)) == 16 and res.evaluated_here == 6 and res.trials_used == 16
    assert len(trials) == 19 and res.not_used == {"over_budget": 3}  # no trial wasted on the way
    assert len({t.params["lr"] for t in _evaluated(trials)}) == 16


def test_trials_of_a_killed_process_are_reissued_on_resume(tmp_path, monkeypatch):
    """kill -9 in the middle of a round leaves its trials RUNNING in a shared storage; once the dead
    process's lease has expired, the next process closes them as abandoned and evaluates their slots (the
    same random points again), so the study still ends with exactly the budget of evaluated trials."""
    import optbench.tuning.budget as budget_module

    storage = str(tmp_path / "s.journal")
    procs, outs = _children(tmp_path, storage, "random", "12", 3, n=1, block=True)
    _wait_for([Path(f"{outs[0]}.evaluating")], procs)
    running = [t for t in _storage_trials(storage) if t.state.name == "RUNNING"]
    assert len(running) == 3 and all("owner" in t.user_attrs for t in running)
    os.kill(procs[0].pid, signal.SIGKILL)
    procs[0].wait(timeout=30)
    monkeypatch.setattr(budget_module, "LEASE_EXPIRY_S", 0.5)
    time.sleep(0.6)
    res = tune_one(get_problem("rosenbrock"), get_optimizer("adam"), protocol=get_protocol("random"), trials=12,
                   dims=parse_space(""), steps=20, storage=storage, out_dir=tmp_path, batch=3)
    trials = _storage_trials(storage)
    assert len(_evaluated(trials)) == 12 and not [t for t in trials if t.state.name == "RUNNING"]
    abandoned = [t for t in trials if t.user_attrs.get("released") == "abandoned"]
    assert sorted(t.number for t in abandoned) == sorted(t.number for t in running)
    assert res.trials_used == 12 and res.evaluated_here == 12 and res.not_used == {"abandoned": 3}
    assert {t.params["lr"] for t in running} <= {t.params["lr"] for t in _evaluated(trials)}


def test_an_interrupted_round_hands_its_slots_back_at_once(tmp_path, monkeypatch):
    """Ctrl-C (or an error) in the middle of a round in a shared storage closes that round's trials as
    abandoned on the way out, so the next process re-issues them without waiting for a lease to expire."""
    import optbench.tuning.study as study_module

    storage = str(tmp_path / "s.journal")
    kwargs = dict(protocol=get_protocol("random"), trials=9, dims=parse_space(""), steps=20, storage=storage,
                  out_dir=tmp_path, batch=3)
    real, calls = study_module._evaluate, []

    def interrupted_second_round(*args, **kw):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real(*args, **kw)

    monkeypatch.setattr(study_module, "_evaluate", interrupted_second_round)
    with pytest.raises(KeyboardInterrupt):
        tune_one(get_problem("rosenbrock"), get_optimizer("adam"), **kwargs)
    trials = _storage_trials(storage)
    assert [t.user_attrs.get("released") for t in trials] == [None] * 3 + ["abandoned"] * 3
    monkeypatch.setattr(study_module, "_evaluate", real)
    res = tune_one(get_problem("rosenbrock"), get_optimizer("adam"), **kwargs)
    assert res.evaluated_here == 6 and res.trials_used == 9 and res.not_used == {"abandoned": 3}
    assert len(_evaluated(_storage_trials(storage))) == 9


def test_results_of_trials_abandoned_while_running_are_dropped_not_counted(tmp_path, monkeypatch):
    """A process that stalled past its lease finds its round abandoned by another when it tells the
    results: it drops them, and the re-issued slots are evaluated once, so the budget stays exact."""
    import optuna
    from optuna.storages import JournalStorage
    from optuna.storages.journal import JournalFileBackend

    import optbench.tuning.study as study_module
    from optbench.tuning.budget import close

    storage = str(tmp_path / "s.journal")
    real, calls = study_module._evaluate, []

    def another_process_abandons_the_first_round(*args, **kw):
        calls.append(1)
        if len(calls) == 1:
            store = JournalStorage(JournalFileBackend(storage))
            other = optuna.load_study(study_name=optuna.get_all_study_summaries(store)[0].study_name, storage=store)
            for t in other.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,)):
                assert close(other, t._trial_id, "abandoned")
        return real(*args, **kw)

    monkeypatch.setattr(study_module, "_evaluate", another_process_abandons_the_first_round)
    res = tune_one(get_problem("rosenbrock"), get_optimizer("adam"), protocol=get_protocol("random"), trials=6,
                   dims=parse_space(""), steps=20, storage=storage, out_dir=tmp_path, batch=3)
    trials = _storage_trials(storage)
    assert len(_evaluated(trials)) == 6 and res.evaluated_here == 6 and res.trials_used == 6
    assert res.not_used == {"abandoned": 3} and len(trials) == 9


def test_a_live_process_keeps_its_trials(tmp_path):
    """A RUNNING trial whose owner renews its lease is never taken from it."""
    import optuna
    from optuna.storages import JournalStorage
    from optuna.storages.journal import JournalFileBackend

    from optbench.tuning.budget import OWNER, Lease

    study = optuna.create_study(storage=JournalStorage(JournalFileBackend(str(tmp_path / "s.journal"))))
    mine, other = Lease(study), Lease(study)
    try:
        trial = study.ask()
        trial.set_user_attr(OWNER, mine.token)
        assert other.abandon_stale(study.get_trials(deepcopy=False)) == 0
        assert study.get_trials(deepcopy=False)[0].state.name == "RUNNING"
    finally:
        mine.stop()
        other.stop()
