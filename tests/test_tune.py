"""optbench tune: equal budgets, batched ask/tell, resumable studies, shared PostgreSQL studies."""

import json
import os
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path

import pytest
from cli_invoke import invoke
from hypothesis import given
from hypothesis import strategies as st

from optbench.engines.recipe import Recipe
from optbench.errors import SpecError, UsageError
from optbench.optimizers import get_optimizer
from optbench.problems import get_problem
from optbench.tuning import get_protocol, parse_space, tune_one
from optbench.tuning.protocols import DEEPOBS_GRID


def _optbench(*args, env=None):
    return subprocess.run([shutil.which("optbench"), *args], capture_output=True, text=True, timeout=300, env=env)


def test_space_parsing_and_errors():
    dims = parse_space("momentum=0.5:0.99,lr=1e-4:1:log")
    assert dims["momentum"].low == 0.5 and not dims["momentum"].log and dims["lr"].log
    for bad in ("momentum=0.9", "lr=0:1:log", "x=2:1", "m=a:b"):
        with pytest.raises(SpecError):
            parse_space(bad)


def test_batched_tuning_budget_and_failures(tmp_path):
    res = tune_one(get_problem("rosenbrock"), get_optimizer("sgd"), protocol=get_protocol("tpe"), trials=40,
                   dims=parse_space(""), steps=100, out_dir=tmp_path, batch=16)
    assert sum(res.states.values()) == 40 and res.states.get("fail", 0) > 0  # large lrs diverge: failed trials
    assert 1e-5 <= res.best_params["lr"] <= 10 and res.best_value < 10
    again = tune_one(get_problem("rosenbrock"), get_optimizer("sgd"), protocol=get_protocol("tpe"), trials=40,
                     dims=parse_space(""), steps=100, out_dir=tmp_path, batch=16)
    assert again.evaluated_here == 0 and again.best_value == res.best_value  # resumed from the journal


def test_grid_protocol_is_deepobs_grid(tmp_path):
    res = tune_one(get_problem("valley"), get_optimizer("adam"), protocol=get_protocol("grid"), dims={},
                   steps=50, out_dir=tmp_path)
    assert res.budget == 36 and len(DEEPOBS_GRID) == 36
    assert min(DEEPOBS_GRID) == pytest.approx(1e-5) and max(DEEPOBS_GRID) == pytest.approx(1e2)
    with pytest.raises(SpecError):
        get_protocol("grid").budget(10)


def test_tune_cli_writes_normal_results(tmp_path):
    out = tmp_path / "t"
    r = _optbench("tune", "-p", "rosenbrock", "-o", "adam,sgd-momentum", "--trials", "24", "--seeds", "2",
                  "--steps", "100", "--protocol", "random", "--out", str(out))
    assert r.returncode == 0, r.stderr
    manifest = json.loads((out / "manifest.json").read_text())
    (record,) = manifest["tuning"]
    assert record["protocol"] == "random" and record["budget"] == 24 and len(record["studies"]) == 2
    show = invoke("show", out)
    assert show.exit_code == 0 and "adam" in show.stdout
    from optbench.results import load_summary

    assert len(load_summary(out)) == 4  # 2 optimizers × 2 fresh seeds


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


PG_BIN = Path("/usr/lib/postgresql/15/bin")
_pg_bin = PG_BIN if (PG_BIN / "initdb").exists() else (Path(shutil.which("initdb")).parent if shutil.which("initdb")
                                                         else None)


@pytest.fixture
def postgres():
    pytest.importorskip("psycopg2")
    if _pg_bin is None:
        pytest.skip("PostgreSQL binaries (initdb, pg_ctl) are not installed")
    as_user: list[str] = []
    root = tempfile.mkdtemp(prefix="optbench-pg-")
    if os.geteuid() == 0:  # postgres refuses to run as root: run it as the postgres user
        if not shutil.which("runuser") or subprocess.run(["id", "postgres"], capture_output=True).returncode:
            pytest.skip("running as root without a 'postgres' user or runuser")
        as_user = ["runuser", "-u", "postgres", "--"]
        shutil.chown(root, "postgres")
    data, port = os.path.join(root, "data"), _free_port()
    r = subprocess.run([*as_user, str(_pg_bin / "initdb"), "-D", data, "-A", "trust", "-U", "optbench"],
                       capture_output=True, text=True)
    if r.returncode:
        pytest.skip(f"initdb failed: {r.stderr[-300:]}")
    r = subprocess.run([*as_user, str(_pg_bin / "pg_ctl"), "-D", data, "-w", "-l", os.path.join(root, "log"),
                        "-o", f"-p {port} -k {root} -c listen_addresses=127.0.0.1", "start"],
                       capture_output=True, text=True)
    if r.returncode:
        pytest.skip(f"pg_ctl start failed: {r.stderr[-300:]}")
    try:
        yield f"postgresql://optbench@127.0.0.1:{port}/postgres"
    finally:
        subprocess.run([*as_user, str(_pg_bin / "pg_ctl"), "-D", data, "-m", "immediate", "stop"],
                       capture_output=True)
        shutil.rmtree(root, ignore_errors=True)


def test_two_processes_share_one_postgres_study(tmp_path, postgres):
    budget = 60
    args = ["tune", "-p", "rosenbrock", "-o", "adam", "--trials", str(budget), "--batch", "8", "--steps", "100",
            "--seeds", "1", "--storage", postgres, "-q"]
    procs = [subprocess.Popen([shutil.which("optbench"), *args, "--out", str(tmp_path / f"p{i}")],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for i in range(2)]
    t0 = time.time()
    for p in procs:
        _, err = p.communicate(timeout=300)
        assert p.returncode == 0, err
    import optuna

    (summary,) = optuna.study.get_all_study_summaries(storage=postgres.replace("postgresql://", "postgresql+psycopg2://"))
    trials = optuna.load_study(study_name=summary.study_name, storage=postgres.replace("postgresql://", "postgresql+psycopg2://")).get_trials(deepcopy=False)
    evaluated = [t for t in trials if "released" not in t.user_attrs]  # closed trials: over budget, never run
    assert len(evaluated) == budget, (len(trials), time.time() - t0)
    assert all(t.state.name in ("COMPLETE", "FAIL") for t in trials)  # nothing left running or waiting
    assert len({t.number for t in trials}) == len(trials)
    lrs = [t.params["lr"] for t in evaluated]
    repeated = [(t.number, t.params["lr"], t.user_attrs) for t in evaluated if lrs.count(t.params["lr"]) > 1]
    assert not repeated, repeated  # the two processes drew distinct trials
    for i in range(2):  # each verdict is read from the whole budget, once both processes are done
        (record,) = json.loads((tmp_path / f"p{i}" / "manifest.json").read_text())["tuning"]
        assert record["studies"][0]["trials_used"] == budget
        assert sum(record["studies"][0]["trials"].values()) == budget


def test_batch_tpe_fits_once_per_round_and_draws_distinct_trials(tmp_path, monkeypatch):
    from optbench.tuning.protocols import _batch_tpe_class

    fits = []
    cls = _batch_tpe_class()
    original = cls._sample_round
    monkeypatch.setattr(cls, "_sample_round", lambda self, *a: fits.append(a[-1]) or original(self, *a))
    res = tune_one(get_problem("rosenbrock"), get_optimizer("adam"), protocol=get_protocol("tpe"), trials=80,
                   dims=parse_space(""), steps=50, out_dir=tmp_path, batch=20)
    assert fits == [20, 20, 20, 10]  # 10 random startup trials in a round of their own, then one fit per round
    assert sum(res.states.values()) == 80 and res.evaluated_here == 80


def test_batch_tpe_beats_random_search_at_equal_budget(tmp_path):
    """Adaptive rounds must search better than random search with the same trials (rosenbrock, 8 seeds;
    at 100 steps good rates are narrow needles in [0.84, 9.4], so random search wins a draw now and then)."""
    wins = 0
    for seed in range(8):
        best = {}
        for name in ("tpe", "random"):
            best[name] = tune_one(get_problem("rosenbrock"), get_optimizer("adam"), protocol=get_protocol(name),
                                  trials=150, dims=parse_space(""), steps=100, out_dir=tmp_path / f"{name}{seed}",
                                  batch=30, seed=seed).best_value
        wins += best["tpe"] <= best["random"]
    assert wins >= 6


def test_batch_tpe_in_rounds_of_one_is_optunas_tpe():
    """With rounds of one trial the sampler is Optuna's TPE (same seed, same trials), diverged trials told
    as FAIL with a status counting as infinite losses; with rounds of 8 it tells the failures to TPE too."""
    import math

    import optuna
    from optuna.trial import TrialState

    from optbench.tuning.protocols import batch_tpe_sampler

    optuna.logging.set_verbosity(optuna.logging.WARNING)

    def f(lr):  # a 1-D stand-in for a tuning objective: diverges above lr = 1
        return math.inf if lr > 1 else (math.log10(lr) + 2) ** 2 + 0.1 * math.sin(40 * math.log(lr))

    peer = optuna.create_study(sampler=optuna.samplers.TPESampler(seed=3))
    peer.optimize(lambda t: f(t.suggest_float("lr", 1e-5, 10, log=True)), n_trials=40)
    for k in (1, 8):
        sampler = batch_tpe_sampler(3)
        study = optuna.create_study(sampler=sampler)
        while len(study.trials) < 40:
            sampler.start_round(k)
            for trial in [study.ask() for _ in range(k)]:
                value = f(trial.suggest_float("lr", 1e-5, 10, log=True))
                if math.isfinite(value):
                    study.tell(trial, value)
                else:
                    trial.set_user_attr("status", "diverged")
                    study.tell(trial, state=TrialState.FAIL)
        if k == 1:
            assert [t.params["lr"] for t in study.trials] == [t.params["lr"] for t in peer.trials]
        else:  # failures are bad evidence: few trials are spent above lr = 1 once TPE starts
            assert sum(t.params["lr"] > 1 for t in study.trials[10:]) <= 3
            assert study.best_value <= sorted(t.value for t in peer.trials)[2]


def test_kill_mid_study_loses_only_the_round_in_flight(tmp_path):
    """The journal gets each finished round in one write; a crash in round 3 leaves rounds 1-2, and a
    re-run evaluates exactly the rest of the budget."""
    from optuna.storages import JournalStorage
    from optuna.storages.journal import JournalFileBackend

    import optbench.tuning.study as study_mod

    calls = []
    real = study_mod._evaluate

    def crash_third(*args, **kwargs):
        calls.append(1)
        if len(calls) == 3:
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    kwargs = dict(protocol=get_protocol("random"), trials=50, dims=parse_space(""), steps=30, out_dir=tmp_path,
                  batch=10)
    study_mod._evaluate = crash_third
    try:
        with pytest.raises(KeyboardInterrupt):
            tune_one(get_problem("rosenbrock"), get_optimizer("adam"), **kwargs)
    finally:
        study_mod._evaluate = real
    import optuna

    storage = JournalStorage(JournalFileBackend(str(tmp_path / "tuning.journal")))
    (summary,) = optuna.get_all_study_summaries(storage)
    assert summary.n_trials == 20  # two whole rounds, nothing of the third, no RUNNING leftovers
    res = tune_one(get_problem("rosenbrock"), get_optimizer("adam"), **kwargs)
    assert res.evaluated_here == 30 and sum(res.states.values()) == 50


def test_parallel_workers_match_budget_and_resume(tmp_path):
    from optbench.tuning.parallel import tune_parallel

    pairs = [(get_problem("rosenbrock"), get_optimizer(o)) for o in ("adam", "sgd", "lion")]
    kwargs = dict(workers=2, protocol=get_protocol("tpe"), trials=40, dims=parse_space(""), steps=50,
                  storage=None, out_dir=tmp_path, batch=20)
    seen = []
    results = tune_parallel(pairs, progress=lambda n, failed: seen.append(n), **kwargs)
    assert [r.optimizer for r in results] == ["adam", "sgd", "lion"] and sum(seen) == 120
    assert all(sum(r.states.values()) == 40 and r.best_value is not None for r in results)
    again = tune_parallel(pairs, **kwargs)  # resumed from the one journal the parent wrote
    assert [r.evaluated_here for r in again] == [0, 0, 0]
    assert [r.best_value for r in again] == [r.best_value for r in results]


def _best_label(problem, optimizer, result):
    """An after_study: runs in the worker, returns what the parent then finds as the result's ``after``."""
    return (problem.label, result.best_config.label, result.best_value)


def _full_disk(problem, optimizer, result):
    import errno

    raise OSError(errno.ENOSPC, "No space left on device", "/full/figures/adam.png")


def test_parallel_after_study_runs_in_the_worker_and_its_errors_keep_their_kind(tmp_path):
    """after_study sees the worker's result of its study (the same best as the parent's summary of the journal);
    an environment error there (a full disk) is raised in the parent as that OSError, not as a worker's
    traceback, so the CLI says one sentence."""
    import errno

    from optbench.tuning.parallel import tune_parallel

    pairs = [(get_problem("rosenbrock"), get_optimizer(o)) for o in ("adam", "sgd")]
    kwargs = dict(workers=2, protocol=get_protocol("tpe"), trials=12, dims=parse_space(""), steps=20,
                  storage=None, batch=6)
    results = tune_parallel(pairs, out_dir=tmp_path / "a", after_study=_best_label, **kwargs)
    assert [r.after for r in results] == [(r.problem, r.best_config.label, r.best_value) for r in results]
    assert tune_parallel(pairs, out_dir=tmp_path / "b", **kwargs)[0].after is None
    with pytest.raises(OSError) as raised:
        tune_parallel(pairs, out_dir=tmp_path / "c", after_study=_full_disk, **kwargs)
    assert raised.value.errno == errno.ENOSPC and raised.value.filename == "/full/figures/adam.png"


def test_tune_cli_workers_clip_norm_and_quiet_progress(tmp_path):
    out = tmp_path / "w"
    r = invoke("tune", "-p", "rosenbrock(start=(-2.0, 2.0))", "-o", "adam,sgd", "--trials", "30,sgd=40",
               "--steps", "50", "--seeds", "1", "--batch", "10", "--workers", "2", "--clip-norm", "1",
               "--out", str(out), "--report", "--report-figures", "trajectories", "--report-format", "png",
               env={"CI": "1"})
    assert r.exit_code == 0, r.stderr
    assert "trials:" not in r.stderr and "━" not in r.stderr  # no progress bar in CI / without a terminal
    (record,) = json.loads((out / "manifest.json").read_text())["tuning"]
    assert record["clip_norm"] == 1.0 and record["workers"] == 2 and record["budgets"] == {"adam": 30, "sgd": 40}
    assert all("clip_norm=1" in s["study"] for s in record["studies"])
    assert {s["optimizer"]: sum(s["trials"].values()) for s in record["studies"]} == {"adam": 30, "sgd": 40}
    assert {s["optimizer"]: s["budget"] for s in record["studies"]} == {"adam": 30, "sgd": 40}
    assert "unequal budgets adam 30, sgd 40" in " ".join(r.stdout.split())
    assert (out / "report" / "index.html").exists()  # --report: drawn in the same process
    assert list((out / "report" / "figures").glob("trajectories*.png"))
    bad = invoke("tune", "-p", "rosenbrock", "-o", "adam", "--clip-norm", "-1", "--out", str(tmp_path / "b"))
    assert bad.exit_code == 2 and "clip-norm" in bad.stderr


def test_trial_budgets_parsing():
    from optbench.tuning.orchestrate import trial_budgets

    opts = [get_optimizer(o) for o in ("adam", "sgd", "sgd(momentum=0.5)")]
    tpe = get_protocol("tpe")
    assert trial_budgets(None, opts, tpe) == [50, 50, 50]  # the protocol's default
    assert trial_budgets("600", opts, tpe) == [600, 600, 600]
    assert trial_budgets("600,sgd=1200", opts, tpe) == [600, 1200, 1200]  # by name: both sgd configs
    assert trial_budgets("sgd=80", opts, tpe) == [50, 80, 80]
    assert trial_budgets(None, opts, get_protocol("random-small")) == [25, 25, 25]  # a fixed budget
    with pytest.raises(SpecError, match="fixed budget of 25"):
        trial_budgets("600,sgd=1200", opts, get_protocol("random-small"))
    for bad, words in (("x", "whole number"), ("0", "at least 1"), ("10,20", "one plain budget"),
                       ("10,lion=5", "not one of the optimizers"), ("10,sgd=5,sgd=6", "twice"),
                       ("10,sgd=1.5", "whole number")):
        with pytest.raises(UsageError, match=words):
            trial_budgets(bad, opts, tpe)


@given(default=st.one_of(st.none(), st.integers(1, 10**6)),
       overrides=st.dictionaries(st.sampled_from(["adam", "sgd", "lion"]), st.integers(1, 10**6)),
       spaces=st.sampled_from(["", " "]))
def test_trial_budgets_round_trip(default, overrides, spaces):
    from optbench.tuning.orchestrate import trial_budgets

    opts = [get_optimizer(o) for o in ("adam", "sgd", "lion")]
    parts = ([str(default)] if default is not None else []) + [f"{k}{spaces}={spaces}{v}" for k, v in overrides.items()]
    text = f",{spaces}".join(parts)
    expected = [overrides.get(o.name, default if default is not None else 50) for o in opts]
    assert trial_budgets(text or None, opts, get_protocol("tpe")) == expected


def test_clip_value_reaches_every_trial(tmp_path):
    """--clip-value is part of the study and of each trial's run: the best trial's loss is what the batched
    engine gives that configuration with the same clipping (and not without it)."""
    import torch

    from optbench.engines.batched import run_batched
    from optbench.tuning.study import TUNE_SEED

    problem, opt = get_problem("rosenbrock(start=(-2.0, 2.0))"), get_optimizer("sgd")
    res = tune_one(problem, opt, protocol=get_protocol("random"), trials=12, dims=parse_space(""), steps=60,
                   out_dir=tmp_path, batch=12, recipe=Recipe(clip_value=0.5))
    assert "|clip_value=0.5" in res.study_name
    best = get_optimizer(f"sgd(lr={res.best_params['lr']!r})")
    for clip, same in ((0.5, True), (None, False)):
        trace = run_batched(problem, [best], [TUNE_SEED], 60, recipe=Recipe(clip_value=clip), measure_cost=False)
        assert (float(trace.end_loss[0]) == pytest.approx(res.best_value, rel=1e-12)) is same
    assert torch.get_default_dtype() == torch.float32  # untouched


def test_tune_recipe_options_are_checked_and_recorded(tmp_path, monkeypatch):
    from optbench.data import store
    from optbench.data.synthetic import write_dataset

    bad = invoke("tune", "-p", "rosenbrock", "-o", "sgd", "--label-smoothing", "0.1", "--out", str(tmp_path / "b"))
    assert bad.exit_code == 2 and "network" in bad.stderr and "Traceback" not in bad.stderr
    bad = invoke("tune", "-p", "rosenbrock", "-o", "sgd", "--clip-value", "0", "--out", str(tmp_path / "b"))
    assert bad.exit_code == 2 and "--clip-value" in bad.stderr
    write_dataset("mnist", tmp_path / "data" / "mnist", n_train=200, n_test=50)
    monkeypatch.setenv(store.DATA_ENV, str(tmp_path / "data"))
    from typer.testing import CliRunner

    from optbench.cli.app import app

    out = tmp_path / "net"
    r = CliRunner().invoke(app, ["tune", "-p", "mnist-mlp(width=8, depth=1, batch_size=50, train_size=200, "
                                 "test_size=50)", "-o", "sgd", "--trials", "2", "--steps", "4", "--seeds", "1",
                                 "--label-smoothing", "0.1", "--protocol", "random", "--out", str(out), "-q"])
    assert r.exit_code == 0, r.output
    (record,) = json.loads((out / "manifest.json").read_text())["tuning"]
    assert record["label_smoothing"] == 0.1 and "label_smoothing=0.1" in record["studies"][0]["study"]
    from optbench.results import load_summary

    summary = load_summary(out)
    assert len(summary) == 1 and "label-smoothing" in summary["optimizer_label"][0]


def test_bad_storage_urls_are_usage_errors():
    """An unreachable server, a missing driver or a URL SQLAlchemy cannot parse: one sentence each, the
    password masked, no traceback (UsageError → exit 2 in the CLI)."""
    from optbench.tuning.study import _without_password, rdb_storage

    assert _without_password("postgresql://me:s3cret@db:5432/optbench") == "postgresql://me:***@db:5432/optbench"
    assert _without_password("sqlite:///x.db") == "sqlite:///x.db"
    assert _without_password("postgresql://u:ab/cd@db/x") == "postgresql://u:***@db/x"  # a '/' in the password
    assert _without_password("postgresql://:secret@db/x") == "postgresql://:***@db/x"  # no user name
    with pytest.raises(UsageError, match=r"not a database URL") as info:
        rdb_storage("postgresql://me:s3cret@db:notaport/x", attempts=1)
    assert "s3cret" not in str(info.value)
    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with pytest.raises(UsageError, match=r"me:\*\*\*@127\.0\.0\.1.*cannot open the database") as info:
        rdb_storage(f"postgresql://me:s3cret@127.0.0.1:{port}/optbench", attempts=1)
    assert "s3cret" not in str(info.value)
    with pytest.raises(UsageError, match="driver is not installed|cannot open the database"):
        rdb_storage("mysql://me:pw@127.0.0.1:1/optbench", attempts=1)
    with pytest.raises(UsageError, match="not a database URL"):
        rdb_storage("nosuchdb://x", attempts=1)


def test_unwritable_journal_storage_is_a_usage_error(tmp_path):
    from optbench.tuning.study import open_storage

    blocker = tmp_path / "file"
    blocker.write_text("")
    with pytest.raises(UsageError, match="cannot open this journal file"):
        open_storage(str(blocker / "sub" / "study.journal"), tmp_path)


def test_local_steps_never_repeat_the_base_point_on_integer_grids():
    """A local step smaller than half a grid cell rounds back onto its base trial; in a space of integers
    only, that would re-evaluate a known point, so one integer dimension moves by one step instead."""
    import numpy as np
    from optuna.distributions import FloatDistribution, IntDistribution

    from optbench.tuning.protocols import _batch_tpe_class

    moved = _batch_tpe_class()._moved
    rng = np.random.default_rng(0)
    space = {"warmup": IntDistribution(0, 10)}
    assert {moved({"warmup": 0}, {"warmup": 0}, space, rng)["warmup"] for _ in range(20)} == {1}
    assert {moved({"warmup": 10}, {"warmup": 10}, space, rng)["warmup"] for _ in range(20)} == {9}
    assert {moved({"warmup": 5}, {"warmup": 5}, space, rng)["warmup"] for _ in range(50)} == {4, 6}
    mixed = {**space, "lr": FloatDistribution(1e-5, 10, log=True)}
    assert moved({"warmup": 5, "lr": 0.11}, {"warmup": 5, "lr": 0.1}, mixed, rng) == {"warmup": 5, "lr": 0.11}
    assert moved({"warmup": 4}, {"warmup": 4}, {"warmup": IntDistribution(4, 4)}, rng) == {"warmup": 4}


def test_local_steps_fold_back_at_the_bounds_instead_of_piling_on_them():
    """A local step beyond a bound is reflected back inside: clipping put a point mass on the bound, so a best
    trial near it made the sampler propose the bound itself again (two processes sharing a study evaluated
    lr = 10.0 twice)."""
    import numpy as np
    from hypothesis import given
    from hypothesis import strategies as st

    from optbench.tuning.protocols import _reflect

    @given(st.floats(-1e3, 1e3), st.floats(-10, 10), st.floats(1e-3, 10))
    def inside(x, lo, width):
        hi = lo + width
        y = _reflect(x, lo, hi)
        assert lo - 1e-9 <= y <= hi + 1e-9
        if lo <= x <= hi:
            assert y == x

    inside()
    rng = np.random.default_rng(0)
    draws = [_reflect(np.log(10.0) + rng.normal() * 0.3, np.log(1e-5), np.log(10.0)) for _ in range(1000)]
    assert len(set(draws)) == len(draws)  # from a trial at the upper bound: never the bound itself twice
