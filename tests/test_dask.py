"""--executor dask: a real Dask scheduler and workers on 127.0.0.1 (the `dask scheduler` / `dask worker`
commands, each in its own process group, killed at the end); the same run ids and tables as a local run,
a worker killed mid-sweep, a client killed mid-sweep, a user's file the workers cannot import, an
unreachable scheduler, tuning in one shared study."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytest.importorskip("distributed")

LINUX = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
TIMING_COLUMNS = {"wall_time_s", "train_time_s", "seconds_to_result", "step_time_s", "train_step_time_s",
                  "peak_memory_bytes", "peak_rss_bytes", "examples_per_s"}  # measured, not computed
BROKEN_ON_WORKERS = "OPTBENCH_TEST_BROKEN_ON_WORKERS"  # set in the workers' environment only


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Cluster:
    """`dask scheduler` and N `dask worker` processes (no nanny: a killed worker stays dead) on 127.0.0.1."""

    def __init__(self, tmp: Path, workers: int = 2):
        self.file = tmp / "scheduler.json"
        self.procs: list[subprocess.Popen] = []
        self.workers: list[subprocess.Popen] = []
        try:
            self._start_all(tmp, workers)
        except BaseException:  # nothing started is left behind
            self.close()
            raise

    def _start_all(self, tmp: Path, workers: int) -> None:
        env = {**os.environ, "OMP_NUM_THREADS": "1", BROKEN_ON_WORKERS: "1"}
        dask = shutil.which("dask")
        assert dask, "the dask command is installed with distributed"
        self._start([dask, "scheduler", "--host", "127.0.0.1", "--port", str(_free_port()), "--no-dashboard",
                     "--scheduler-file", str(self.file)], env, tmp / "scheduler.log")
        deadline = time.time() + 60
        while not self.file.is_file() and time.time() < deadline:
            time.sleep(0.1)
        self.address = json.loads(self.file.read_text())["address"]
        self.workers = [self._start([dask, "worker", self.address, "--nthreads", "1", "--no-nanny", "--no-dashboard",
                                     "--host", "127.0.0.1"], env, tmp / f"worker{i}.log") for i in range(workers)]
        from distributed import Client

        with Client(self.address, timeout=30, set_as_default=False) as client:
            client.wait_for_workers(workers, timeout=120)
            # torch, optuna and the engines imported: the workers start tasks together
            client.run(exec, "import optbench.engines.batched, optbench.tuning.study")

    def _start(self, args, env, log: Path) -> subprocess.Popen:
        proc = subprocess.Popen(args, env=env, stdout=log.open("w"), stderr=subprocess.STDOUT,
                                start_new_session=True, cwd=log.parent)
        self.procs.append(proc)
        return proc

    def close(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
        for proc in self.procs:
            proc.wait(timeout=30)
        for proc in self.procs:  # nothing of theirs left: their process groups are empty
            with pytest.raises(ProcessLookupError):
                os.killpg(proc.pid, 0)


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    c = Cluster(tmp_path_factory.mktemp("dask"))
    yield c
    c.close()


@pytest.fixture
def own_cluster(tmp_path):
    c = Cluster(tmp_path)
    yield c
    c.close()


def _optbench(*args, timeout=300, **kw):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    env.pop(BROKEN_ON_WORKERS, None)
    return subprocess.run([shutil.which("optbench"), *map(str, args)], capture_output=True, text=True,
                          timeout=timeout, env=env, **kw)


def _tables(out: Path):
    """(steps, summary) without the measured columns, in a fixed order; and the chunk file names."""
    from optbench.results import load_results, load_summary

    steps = load_results(out).sort_values(["run_id", "step"], kind="stable").reset_index(drop=True)
    summary = load_summary(out).sort_values("run_id").reset_index(drop=True)
    chunks = sorted(p.name for p in (out / "steps").glob("*.parquet"))
    return (steps.drop(columns=[c for c in steps if c in TIMING_COLUMNS]),
            summary.drop(columns=[c for c in summary if c in TIMING_COLUMNS]), chunks)


def _assert_same_results(a: Path, b: Path, runs: int) -> None:
    import pandas.testing as pdt

    steps_a, summary_a, chunks_a = _tables(a)
    steps_b, summary_b, chunks_b = _tables(b)
    assert len(summary_a) == runs and list(summary_a["run_id"]) == list(summary_b["run_id"])
    assert chunks_a == chunks_b  # the same work items, the same chunk ids
    pdt.assert_frame_equal(summary_a, summary_b, check_exact=True)
    pdt.assert_frame_equal(steps_a, steps_b, check_exact=True)


SWEEP = ["-p", "rosenbrock,valley,noisy-quadratic", "-o", "adam,sgd,nag", "--lr", "1e-3,1e-2", "--seeds", "2",
         "--steps", "40", "-q"]  # 36 runs in batched groups


def _local(tmp_path, args, name="local") -> Path:
    """The same command run locally, in this process (one torch thread, like the workers)."""
    import torch
    from typer.testing import CliRunner

    from optbench.cli.app import app

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        r = CliRunner().invoke(app, ["run", *map(str, args), "--out", str(tmp_path / name)])
    finally:
        torch.set_num_threads(threads)
    assert r.exit_code == 0, r.output
    return tmp_path / name


def test_a_dask_sweep_has_the_run_ids_and_tables_of_a_local_run(cluster, tmp_path):
    local = _local(tmp_path, SWEEP)
    r = _optbench("run", *SWEEP, "--out", tmp_path / "dask", "--executor", "dask", "--scheduler", cluster.address)
    assert r.returncode == 0, r.stderr
    _assert_same_results(local, tmp_path / "dask", 36)
    r = _optbench("run", *SWEEP, "--out", tmp_path / "dask", "--executor", "dask", "--scheduler-file", cluster.file,
                  "--json")
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["skipped"] == 36  # resumed through the scheduler file: nothing to do


def test_a_suite_runs_on_dask(cluster, tmp_path):
    suite = tmp_path / "s.toml"
    suite.write_text('[[sweep]]\nproblems = ["rosenbrock"]\noptimizers = ["adam", "sgd"]\nlr = [1e-3, 1e-2]\n'
                     'steps = 30\n\n[[sweep]]\nproblems = ["saddle"]\noptimizers = ["adam"]\nseeds = 2\nsteps = 20\n'
                     'engine = "loop"\n')
    local = _local(tmp_path, ["--suite", suite, "-q"])
    r = _optbench("run", "--suite", suite, "-q", "--out", tmp_path / "dask", "--executor", "dask",
                  "--scheduler", cluster.address)
    assert r.returncode == 0, r.stderr
    _assert_same_results(local, tmp_path / "dask", 6)


BROKEN_OPTIMIZER = f"""
import os

import torch

if os.environ.get({BROKEN_ON_WORKERS!r}):
    import a_module_only_the_client_has  # noqa: F401


class MySGD(torch.optim.SGD):
    def __init__(self, params, lr=0.01):
        super().__init__(params, lr=lr)
"""


def test_a_file_the_workers_cannot_import_is_reported_once(cluster, tmp_path):
    (tmp_path / "my_opt.py").write_text(BROKEN_OPTIMIZER)
    r = _optbench("run", "-p", "rosenbrock,valley,saddle", "-o", "my_opt.py:MySGD", "--lr", "1e-3:1e-1:4",
                  "--engine", "loop", "--steps", "20", "-q", "--out", tmp_path / "res", "--executor", "dask",
                  "--scheduler", cluster.address, cwd=tmp_path)  # 12 items, each would fail
    assert r.returncode == 2, r.stderr
    assert r.stderr.count("a_module_only_the_client_has") >= 1
    assert r.stderr.count("Error in your code") == 1, r.stderr  # once, not per item
    assert "Dask worker" in r.stderr and "Internal error" not in r.stderr
    assert not list((tmp_path / "res" / "steps").glob("*.parquet"))


def test_an_unreachable_scheduler_is_one_sentence_within_seconds(tmp_path):
    address = f"tcp://127.0.0.1:{_free_port()}"
    t0 = time.perf_counter()
    r = _optbench("run", "-p", "rosenbrock", "-o", "adam", "--steps", "5", "--out", tmp_path / "r",
                  "--executor", "dask", "--scheduler", address, timeout=60)
    assert r.returncode == 2, r.stderr
    assert address in r.stderr and "Traceback" not in r.stderr
    assert len(r.stderr.strip().splitlines()) <= 3  # one sentence (rich may wrap it)
    assert time.perf_counter() - t0 < 45  # the connect timeout (5 s) plus the CLI's start-up on a busy machine


@pytest.mark.parametrize("args, needle", [
    (["--scheduler", "tcp://127.0.0.1:1"], "--scheduler needs --executor dask"),
    (["--executor", "dask"], "--executor dask needs --scheduler"),
    (["--executor", "dask", "--scheduler", "tcp://h:1", "--workers", "2"], "--workers 2 applies to --executor local"),
    (["--executor", "spark"], "Unknown --executor 'spark'"),
    (["--executor", "dask", "--scheduler-file", "no/such.json"], "no such file"),
])
def test_executor_options_are_checked(args, needle):
    from typer.testing import CliRunner

    from optbench.cli.app import app

    r = CliRunner().invoke(app, ["run", "-p", "rosenbrock", "-o", "adam", "--steps", "5", *args])
    assert r.exit_code == 2, r.output
    assert needle in r.output


def test_every_problem_travels_to_a_worker_unchanged():
    """A run rebuilt from its portable form (the local pool and dask both send runs so) has the same run id
    and the same labels, for every registered problem that builds here, with and without --batch-size (the
    label was 'noisy-quadratic(batch_size=1)' on a worker, 'noisy-quadratic' locally)."""
    from optbench.errors import OptbenchError
    from optbench.optimizers import get_optimizer
    from optbench.problems import get_problem, list_problems
    from optbench.sweep.parallel import _portable, _rebuild
    from optbench.sweep.spec import Run

    entries = list_problems()
    checked, names = 0, [entry.name for entry in entries]
    for name in names:
        for overrides in ({}, {"batch_size": 7}):
            try:
                problem = get_problem(name, **overrides)
            except OptbenchError:  # no batch size (or data missing here)
                continue
            run = Run(problem, get_optimizer("adam"), 3, 10, 2)
            again = _rebuild(_portable(run), None)
            assert (again.run_id, again.problem.label, again.optimizer_label) == (
                run.run_id, run.problem.label, run.optimizer_label), name
            checked += 1
    analytic = [e for e in entries if e.kind == "analytic"]  # (network problems need their data to build)
    assert checked >= len(analytic) + sum(e.has_batch_size for e in analytic) > len(analytic)


def test_a_worker_reports_the_users_error_as_a_value(tmp_path, monkeypatch):
    """The task returns the error (the scheduler would not retry an exception either, but a value always
    pickles and carries the user's traceback)."""
    from optbench.executors.dask import compute_item, future_result
    from optbench.optimizers import get_optimizer
    from optbench.problems import get_problem
    from optbench.sweep.parallel import _portable
    from optbench.sweep.spec import Run

    monkeypatch.chdir(tmp_path)
    (tmp_path / "my_opt.py").write_text(BROKEN_OPTIMIZER)
    problem_spec, batch, _, fields, run_id = _portable(Run(get_problem("rosenbrock"), get_optimizer("sgd"), 0, 5, 1))
    monkeypatch.setenv(BROKEN_ON_WORKERS, "1")  # the worker's environment: the import fails there
    result = compute_item("loop", [(problem_spec, batch, "my_opt.py:MySGD", fields, run_id)], False, str(tmp_path))
    assert result[0] == "error" and result[1] == "UserCodeError"
    assert "a_module_only_the_client_has" in result[3]  # the user's traceback travels

    class Done:
        status = "finished"

        def result(self):
            return result

    from optbench.errors import UserCodeError

    with pytest.raises(UserCodeError, match="Dask worker"):
        future_result(Done(), "work item")


def test_device_cuda_is_the_workers_device(monkeypatch):
    """With a distributed executor the client need not have the GPU: the run ids hash the device type only,
    and a worker without one says so in one sentence."""
    import torch

    from optbench.executors import DEVICES_ON_WORKERS
    from optbench.executors.dask import check_worker_device
    from optbench.optimizers import get_optimizer
    from optbench.problems import get_problem
    from optbench.sweep.spec import Sweep

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    sweep = Sweep([get_problem("rosenbrock")], [get_optimizer("adam")], steps=5, device="cuda")
    token = DEVICES_ON_WORKERS.set(True)
    try:
        runs = sweep.expand()
    finally:
        DEVICES_ON_WORKERS.reset(token)
    assert {r.device for r in runs} == {"cuda"}
    from optbench.errors import UsageError

    with pytest.raises(UsageError, match="no CUDA device is available here"):
        sweep.expand()  # a local run still checks this machine
    with pytest.raises(UsageError, match="has no CUDA device; start GPU workers"):
        check_worker_device("cuda")


def test_file_storages_are_made_absolute_and_probed(tmp_path, monkeypatch):
    from optbench.errors import UsageError
    from optbench.tuning.on_dask import probe_error, shared_storage, write_probe

    monkeypatch.chdir(tmp_path)
    assert shared_storage("sqlite:///t.db", "out") == ("sqlite:///" + str(tmp_path / "t.db"), tmp_path / "t.db")
    assert shared_storage(None, "out") == (str(tmp_path / "out" / "tuning.journal"),
                                           tmp_path / "out" / "tuning.journal")
    assert shared_storage("postgresql://u@h/db", "out") == ("postgresql://u@h/db", None)
    with pytest.raises(UsageError, match="in memory"):
        shared_storage("sqlite:///:memory:", "out")
    probe, token = write_probe(tmp_path / "out" / "tuning.journal")
    assert probe_error(probe, token, "x") is None
    Path(probe).unlink()  # what a worker on another host sees: no such file
    message = probe_error(probe, token, "sqlite:///t.db")
    assert message.startswith("--storage sqlite:///t.db: the Dask worker on") and "postgresql://" in message


def test_tuning_on_dask_shares_one_study_with_the_exact_budget(cluster, tmp_path):
    import optuna

    from optbench.tuning.budget import is_evaluated, used_trials

    out = tmp_path / "tune"
    r = _optbench("tune", "-p", "rosenbrock", "-o", "adam", "--trials", "12", "--batch", "1", "--steps", "30",
                  "--seeds", "1", "-q", "--out", out, "--executor", "dask", "--scheduler", cluster.address)
    assert r.returncode == 0, r.stderr
    storage = optuna.storages.JournalStorage(optuna.storages.journal.JournalFileBackend(str(out / "tuning.journal")))
    (summary,) = optuna.get_all_study_summaries(storage)
    trials = optuna.load_study(study_name=summary.study_name, storage=storage).get_trials()
    assert sum(map(is_evaluated, trials)) == 12  # two workers in one study: exactly the budget, none past it
    assert len(used_trials(trials, 12)) == 12
    owners = {t.user_attrs.get("owner", "").rsplit(":", 2)[1] for t in trials if is_evaluated(t)}
    assert len(owners) == 2, "both workers took trials of the one study"
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["tuning"][-1]["executor"] == "dask"
    assert not list(out.glob(".optbench-probe-*"))


KILL_SWEEP = ["-p", "rosenbrock,saddle", "-o", "adam,sgd", "--lr", "1e-3:1e-1:3", "--seeds", "2", "--steps", "600",
              "--engine", "loop", "-q"]  # 24 loop items


def _first_chunk(out: Path, proc: subprocess.Popen, timeout: float = 180) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        if (out / "steps").is_dir() and any((out / "steps").glob("*.parquet")):
            return
        if proc.poll() is not None:
            pytest.fail(f"the sweep ended before its first chunk: {proc.communicate()}")
        time.sleep(0.05)
    proc.kill()
    pytest.fail("no chunk was written")


@LINUX
@pytest.mark.slow
def test_a_worker_killed_mid_sweep_loses_only_its_items(own_cluster, tmp_path):
    out = tmp_path / "dask"
    proc = subprocess.Popen([shutil.which("optbench"), "run", *KILL_SWEEP, "--out", str(out), "--executor", "dask",
                             "--scheduler", own_cluster.address], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    _first_chunk(out, proc)
    os.kill(own_cluster.workers[0].pid, signal.SIGKILL)  # mid-sweep: its item in flight is run elsewhere
    _, err = proc.communicate(timeout=600)
    assert proc.returncode == 0, err
    assert own_cluster.workers[0].wait(timeout=10) == -signal.SIGKILL
    _assert_same_results(_local(tmp_path, KILL_SWEEP), out, 24)


@LINUX
@pytest.mark.slow
def test_a_client_killed_mid_sweep_resumes_with_the_same_command(cluster, tmp_path):
    out = tmp_path / "dask"
    command = [shutil.which("optbench"), "run", *KILL_SWEEP, "--out", str(out), "--executor", "dask",
               "--scheduler", cluster.address]
    proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    _first_chunk(out, proc)
    proc.send_signal(signal.SIGKILL)
    proc.communicate(timeout=60)
    kept = len(list((out / "steps").glob("*.parquet")))
    assert 1 <= kept < 24
    r = subprocess.run([*command, "--json"], capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["skipped"] >= kept  # the finished chunks are kept, not run again
    assert not list(out.rglob(".*.tmp"))
    _assert_same_results(_local(tmp_path, KILL_SWEEP), out, 24)
