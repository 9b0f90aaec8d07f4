"""Fault injection: the environment failing (full disk, permissions, signals, concurrent writers) and damaged
files never end in a traceback, a hang, an orphan process, or lost or stale results.

Real faults where this machine allows them: a tiny tmpfs for a full disk (root only: skipped otherwise), a
non-root user via ``setpriv`` for permissions (root ignores mode bits), real signals to real subprocesses,
parallel processes for the manifest. Sweeps are tiny.
"""

import errno
import functools
import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from contextlib import contextmanager
from pathlib import Path

import pytest

TINY = ["-p", "rosenbrock", "-o", "adam,sgd", "--lr", "1e-3,1e-2", "--steps", "50", "--engine", "loop", "-q"]
LINUX = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="Linux facilities (/proc, tmpfs, setpriv)")


def _optbench(*args, timeout=180, **kw):
    """The installed ``optbench`` in a real process: for the faults that need one (signals, another user, a
    full disk, a closed pipe)."""
    return subprocess.run([shutil.which("optbench"), *map(str, args)], capture_output=True, text=True,
                          timeout=timeout, **kw)


def _optbench_here(*args, env=None):
    """``optbench ARGS`` in this process (click's CliRunner, tests/cli_invoke.py): the exit code, stdout and stderr
    a user sees, without a Python + torch start-up, for the messages that need no real process."""
    from cli_invoke import invoke

    r = invoke(*args, env=env)
    return subprocess.CompletedProcess(args, r.exit_code, r.stdout, r.stderr)


def _assert_one_sentence(r, *needles, code=2):
    """Exit ``code``, no traceback, no 'Internal error', and each needle in stderr."""
    text = r.stderr
    assert r.returncode == code, (r.returncode, r.stdout, text)
    for bad in ("Traceback", "Internal error", "Exception ignored"):
        assert bad not in text, text
    spaced, joined = " ".join(text.split()), "".join(text.splitlines())  # rich wraps long lines
    for needle in needles:
        assert needle in spaced or needle in joined, (needle, text)


def _sweep(**kw):
    from optbench.optimizers import get_optimizer
    from optbench.problems import get_problem
    from optbench.sweep.spec import Sweep

    opts = kw.pop("opts", ("adam", "sgd", "rmsprop"))
    return Sweep([get_problem("rosenbrock")], [get_optimizer(o) for o in opts], lrs=kw.pop("lrs", [1e-3, 1e-2]),
                 seeds=[0], steps=kw.pop("steps", 30), engine=kw.pop("engine", "loop"), **kw)


def _rows(out):
    from optbench.results import load_results

    df = load_results(out).drop(columns=["wall_time_s"])
    return df.sort_values(["run_id", "step"]).reset_index(drop=True)


# ---------------------------------------------------------------------------------------------------------
# The error boundary: every errno kind of the environment is one sentence naming the path, exit 2.

@pytest.mark.parametrize("code", [errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM,
                                  errno.ENOTDIR, errno.EISDIR, errno.ENAMETOOLONG, errno.EFBIG, errno.EIO])
def test_os_errors_are_one_sentence_naming_the_path(code, capsys):
    import typer

    from optbench.cli.common import errors_handled

    @errors_handled
    def command():
        raise OSError(code, os.strerror(code), "/data/results/steps/chunk.parquet")

    with pytest.raises(typer.Exit) as exit_info:
        command()
    err = capsys.readouterr().err
    assert exit_info.value.exit_code == 2
    assert "/data/results/steps/chunk.parquet" in err and "Internal error" not in err and "Traceback" not in err
    assert len(err.strip().splitlines()) <= 3  # one sentence (wrapped at most twice)


def test_a_failed_write_names_its_file(tmp_path, monkeypatch):
    from optbench.results import atomic_write_bytes

    def full(fd, data):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr("os.fsync", lambda fd: full(fd, b""))
    with pytest.raises(OSError) as info:
        atomic_write_bytes(tmp_path / "steps" / "x.parquet", b"data")
    assert info.value.filename == str(tmp_path / "steps" / "x.parquet")
    assert not list((tmp_path / "steps").iterdir())  # no temporary left


def test_long_messages_are_shortened(capsys):
    r = _optbench_here("run", "-p", "rosenbrock(" + "a" * 100_000 + "=1)", "-o", "adam")
    _assert_one_sentence(r, "characters left out")
    assert len(r.stderr) < 4000


# ---------------------------------------------------------------------------------------------------------
# A full disk (a real one: a small tmpfs)

@contextmanager
def _small_fs(path: Path, size: str):
    path.mkdir(parents=True, exist_ok=True)
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)],
                             capture_output=True, text=True)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here ({mounted.stderr.strip() or 'not permitted'}): needs root")
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], capture_output=True)


@LINUX
def test_a_full_disk_in_run_is_one_sentence_and_resumable(tmp_path):
    with _small_fs(tmp_path / "disk", "96k") as disk:
        out = disk / "res"
        args = ["run", "-p", "rosenbrock,saddle", "-o", "adam", "--lr", "1e-3:1e-1:40", "--seeds", "3",
                "--steps", "1000", "--engine", "batched", "-q", "--out", out]
        r = _optbench(*args)
        _assert_one_sentence(r, "no space left", str(out))
        assert not [p for p in out.rglob(".*.tmp")], "a failed write leaves no temporary"
        from optbench.results import chunk_problem

        for chunk in (out / "steps").glob("*.parquet"):  # what is there is whole
            assert chunk_problem(out, chunk.stem) is None
        done = len(list((out / "steps").glob("*.parquet")))
        subprocess.run(["mount", "-o", "remount,size=64m", str(disk)], check=True)
        r = _optbench(*args[:-1], out, "--json")
        assert r.returncode == 0, r.stderr
        assert json.loads(r.stdout)["skipped"] == 120 * done and json.loads(r.stdout)["runs"] == 240


@LINUX
def test_a_full_disk_in_report_leaves_no_partial_report(tmp_path):
    results = tmp_path / "res"
    assert _optbench_here("run", *TINY, "--out", results).returncode == 0
    with _small_fs(tmp_path / "disk", "32k") as disk:
        r = _optbench("report", results, "--out", disk / "report", "--format", "png", "--figures", "curves")
        _assert_one_sentence(r, "no space left")
        assert list(disk.iterdir()) == [], "no report, no staging directory left"


# ---------------------------------------------------------------------------------------------------------
# Permissions (as a non-root user: root ignores mode bits) and modes

AS_NOBODY = ["setpriv", "--reuid=nobody", "--regid=nogroup", "--clear-groups"]


@functools.lru_cache(maxsize=1)
def _nobody_cannot_run_optbench() -> str:
    """Why user nobody cannot import this checkout's optbench ('' when it can): a checkout under a private
    folder (a 0700 mktemp directory, say) is out of its reach, whatever optbench does."""
    r = subprocess.run([*AS_NOBODY, sys.executable, "-c", "import optbench.cli.app"], capture_output=True,
                       text=True, timeout=120, env={**os.environ, "HOME": "/tmp", "MPLCONFIGDIR": "/tmp"})
    return "" if r.returncode == 0 else (r.stderr.strip().splitlines() or ["exit status " + str(r.returncode)])[-1]


def _as_nobody(args, **kw):
    if shutil.which("setpriv") is None or os.geteuid() != 0:
        pytest.skip("needs root and setpriv to run as another user")
    if why := _nobody_cannot_run_optbench():
        pytest.skip(f"user nobody cannot run this checkout (a parent folder is private): {why}")
    env = {**os.environ, "HOME": "/tmp", "MPLCONFIGDIR": "/tmp"}
    return subprocess.run([*AS_NOBODY, *map(str, args)], capture_output=True, text=True, timeout=180, env=env, **kw)


@pytest.fixture
def shared_tmp(tmp_path):
    """A world-traversable folder (pytest's tmp_path is private to root)."""
    path = Path("/tmp") / f"optbench-faults-{os.getpid()}-{tmp_path.name}"
    path.mkdir(mode=0o755)
    os.chmod(path, 0o755)
    yield path
    shutil.rmtree(path, ignore_errors=True)


@LINUX
@pytest.mark.parametrize("where", ["out", "steps", "parent"])
def test_an_unwritable_out_fails_before_any_compute(shared_tmp, where):
    out = shared_tmp / "res"
    if where == "parent":
        target = shared_tmp / "locked" / "res"
        (shared_tmp / "locked").mkdir(mode=0o755)
    else:
        target = out
        (out / "steps").mkdir(parents=True)
        (out / "summary").mkdir()
        for d in (out, out / "steps", out / "summary"):
            os.chmod(d, 0o777)
        os.chmod(out / "steps" if where == "steps" else out, 0o555)
    started = time.time()
    r = _as_nobody([shutil.which("optbench"), "run", "-p", "rosenbrock", "-o", "adam", "--steps", "200000",
                    "--engine", "loop", "--out", target])
    _assert_one_sentence(r, "ermission denied")
    assert time.time() - started < 60, "the 200,000-step run must not have been computed"


@LINUX
@pytest.mark.parametrize("option", ["--csv", "--summary-csv"])
def test_an_unwritable_export_path_is_one_sentence(shared_tmp, option):
    results = shared_tmp / "res"
    assert _optbench_here("run", *TINY, "--out", results).returncode == 0
    (shared_tmp / "locked").mkdir(mode=0o755)
    r = _as_nobody([shutil.which("optbench"), "show", results, option, shared_tmp / "locked" / "x.csv"])
    _assert_one_sentence(r, option, "ermission denied")


def test_check_outputs_are_checked_before_the_suite_runs(tmp_path, monkeypatch):
    (tmp_path / "file").write_text("")
    monkeypatch.chdir(Path(__file__).parents[1])
    for option in ("--junit", "--markdown"):
        r = _optbench_here("check", "--suite", "problems/ci.toml", "--against", "results/baselines/ci", option,
                           tmp_path / "file" / "out.xml")
        _assert_one_sentence(r, option, "not a directory")


@pytest.mark.parametrize("umask", [0o022, 0o002, 0o077])
def test_results_files_honour_the_umask(tmp_path, umask):
    from optbench.results import MANIFEST, STEPS_DIR, SUMMARY_DIR
    from optbench.runner import run_sweep

    old = os.umask(umask)
    try:
        run_sweep(_sweep(opts=("adam",), lrs=[1e-3]), tmp_path / "res")
    finally:
        os.umask(old)
    files = [tmp_path / "res" / MANIFEST, *(tmp_path / "res" / STEPS_DIR).iterdir(),
             *(tmp_path / "res" / SUMMARY_DIR).iterdir()]
    assert len(files) == 3
    for f in files:
        assert f.stat().st_mode & 0o777 == 0o666 & ~umask, f


@LINUX
def test_another_user_can_read_shared_results(shared_tmp):
    results = shared_tmp / "res"
    old = os.umask(0o022)
    try:
        assert _optbench_here("run", *TINY, "--out", results).returncode == 0
    finally:
        os.umask(old)
    r = _as_nobody([shutil.which("optbench"), "show", results, "--json"])
    assert r.returncode == 0, r.stderr


# ---------------------------------------------------------------------------------------------------------
# Damaged chunks, manifests and leftovers

def _zero(path):
    path.write_bytes(b"")


def _truncate(path):
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


def _garbage(path):
    path.write_bytes(os.urandom(path.stat().st_size))


def _remove(path):
    path.unlink()


def _other_runs(path):  # a whole, readable file holding another chunk's runs
    other = sorted(p for p in path.parent.glob("*.parquet") if p != path)[0]
    shutil.copyfile(other, path)


DAMAGES = [("steps", _zero), ("steps", _truncate), ("steps", _garbage), ("steps", _other_runs),
           ("summary", _zero), ("summary", _truncate), ("summary", _remove), ("summary", _other_runs)]


@pytest.fixture(scope="module")
def clean_results(tmp_path_factory):
    from optbench.runner import run_sweep

    out = tmp_path_factory.mktemp("clean") / "res"
    run_sweep(_sweep(), out)
    return out


@pytest.mark.parametrize(("folder", "damage"), DAMAGES, ids=[f"{f}-{d.__name__.strip('_')}" for f, d in DAMAGES])
def test_a_damaged_chunk_is_set_aside_and_its_runs_run_again(tmp_path, clean_results, folder, damage):
    from optbench.errors import DataError, OptbenchWarning
    from optbench.results import load_results, load_summary
    from optbench.runner import run_sweep

    out = tmp_path / "res"
    shutil.copytree(clean_results, out)
    chunk = sorted((out / folder).glob("*.parquet"))[0]
    damage(chunk)
    if folder == "steps" and damage is not _other_runs:
        with pytest.raises(DataError, match=chunk.stem):  # reading names the file and what to do
            load_results(out)
    with pytest.warns(OptbenchWarning, match=f"Damaged results chunk {chunk.stem}"):
        outcome = run_sweep(_sweep(), out)
    assert outcome.runs_done >= 1 and outcome.runs_skipped == outcome.runs_total - outcome.runs_done
    assert list((out / folder).glob(f"{chunk.stem}.parquet.damaged")) or damage is _remove
    import pandas as pd

    pd.testing.assert_frame_equal(_rows(out), _rows(clean_results))
    assert len(load_summary(out)) == len(load_summary(clean_results))
    again = run_sweep(_sweep(), out)  # and now it is whole: nothing to run
    assert again.runs_done == 0


def test_the_cli_says_in_one_line_which_chunk_it_set_aside(tmp_path):
    out = tmp_path / "res"
    assert _optbench_here("run", *TINY, "--out", out).returncode == 0
    chunk = sorted((out / "steps").glob("*.parquet"))[0]
    chunk.write_bytes(b"")
    r = _optbench_here("report", out, "--out", tmp_path / "rep", "--figures", "curves", "--format", "png")
    _assert_one_sentence(r, chunk.stem, "damaged")
    r = _optbench_here("run", *TINY, "--out", out)
    assert r.returncode == 0, r.stderr
    notes = [line for line in r.stderr.splitlines() if line.startswith("Note:")]
    assert len(notes) == 1 and chunk.stem in notes[0]


@pytest.mark.parametrize("damage", [_zero, _truncate, _garbage])
def test_a_damaged_manifest_is_named_then_set_aside_before_the_work(tmp_path, clean_results, damage):
    from optbench.errors import DataError, OptbenchWarning
    from optbench.results import read_manifest
    from optbench.runner import run_sweep

    out = tmp_path / "res"
    shutil.copytree(clean_results, out)
    damage(out / "manifest.json")
    with pytest.raises(DataError, match="manifest.json"):  # readers name it
        read_manifest(out)
    with pytest.warns(OptbenchWarning, match="manifest.json.damaged"):
        outcome = run_sweep(_sweep(opts=("adam", "sgd", "rmsprop", "nag")), out)
    assert outcome.runs_done == 2  # nag's two runs are new
    manifest = read_manifest(out)
    assert [s["completed"] for s in manifest["sweeps"]] == [2]  # the new runs are recorded, not lost
    assert (out / "manifest.json.damaged").exists()


def test_the_cli_names_a_damaged_manifest(tmp_path):
    out = tmp_path / "res"
    assert _optbench_here("run", *TINY, "--out", out).returncode == 0
    _truncate(out / "manifest.json")
    r = _optbench_here("report", out, "--out", tmp_path / "rep", "--figures", "curves", "--format", "png")
    _assert_one_sentence(r, "manifest.json", "damaged")
    r = _optbench_here("run", *TINY, "--out", out)
    assert r.returncode == 0 and "manifest.json.damaged" in r.stderr, r.stderr


def test_stale_temporaries_are_removed_and_live_ones_kept(tmp_path):
    from optbench.runner import run_sweep

    out = tmp_path / "res"
    run_sweep(_sweep(opts=("adam",), lrs=[1e-3]), out)
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    stale = out / "steps" / f".abc.parquet.{dead.pid}.x1y2.tmp"
    old_style = out / "summary" / ".abc.parquet.q9w8e7.tmp"
    live = out / "steps" / f".def.parquet.{os.getpid()}.x1y2.tmp"
    for f in (stale, old_style, live):
        f.write_bytes(b"partial")
    os.utime(old_style, (time.time() - 7200, time.time() - 7200))
    run_sweep(_sweep(opts=("adam",), lrs=[1e-3]), out)
    assert not stale.exists() and not old_style.exists() and live.exists()


# ---------------------------------------------------------------------------------------------------------
# Signals and orphans: real signals to a real `optbench run --workers 2`

def _children(pid: int) -> list[int]:
    kids = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            kids.append(int(stat.parent.name))
    return kids


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state not in ("Z", "X")  # a zombie has exited (its parent, now init, may not reap it at once)


def _survivors(kids: list[int], wait_s: float = 20) -> list[int]:
    """The processes of ``kids`` still alive after up to ``wait_s`` seconds; each is killed (no test leaves one)."""
    deadline = time.time() + wait_s
    while time.time() < deadline and any(_alive(k) for k in kids):
        time.sleep(0.05)
    survivors = [k for k in kids if _alive(k)]
    for k in survivors:
        os.kill(k, signal.SIGKILL)
    return survivors


WORKER_ARGS = ["run", "-p", "rosenbrock,saddle", "-o", "adam,sgd", "--lr", "1e-3:1e-1:3", "--seeds", "2",
               "--steps", "600", "--engine", "loop", "-q", "--workers", "2"]


def _start_workers(out: Path):
    proc = subprocess.Popen([shutil.which("optbench"), *WORKER_ARGS, "--out", str(out)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 120
    while time.time() < deadline:  # two workers up and at least one chunk written by them
        kids = _children(proc.pid)
        if len(kids) >= 3 and (out / "steps").is_dir() and any((out / "steps").glob("*.parquet")):
            return proc, kids
        time.sleep(0.05)
    proc.kill()
    pytest.fail("the workers did not start")


@LINUX
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGKILL])
def test_no_worker_outlives_its_parent(tmp_path, sig):
    out = tmp_path / "res"
    proc, kids = _start_workers(out)
    os.kill(proc.pid, sig)
    _, err = proc.communicate(timeout=60)
    survivors = _survivors(kids)
    assert not survivors, f"workers or the resource tracker outlived the parent ({sig.name})"
    if sig == signal.SIGTERM:  # like Ctrl-C: finished runs kept, said so, exit 143
        assert proc.returncode == 143, err
        assert "finished runs are saved" in err and "Traceback" not in err
        manifest = json.loads((out / "manifest.json").read_text())
        assert manifest["sweeps"][-1]["interrupted"] is True
    kept = len(list((out / "steps").glob("*.parquet")))
    assert kept >= 1
    r = _optbench_here(*WORKER_ARGS[:-2], "--out", out, "--json")  # resume here (serial: no start-up of workers)
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["skipped"] == kept
    assert not list(out.rglob(".*.tmp")), "temporaries of killed workers are removed on resume"


GALLERY_ARGS = ["gallery", "--opt", "adam,sgd,lion,adabelief", "--trials", "1500", "--steps", "200", "--workers", "2",
                "-q"]


@LINUX
def test_no_tuning_worker_outlives_a_killed_gallery(tmp_path):
    """SIGKILL to `optbench gallery --workers 2` mid-tuning: its workers (which also re-run and draw) end with it
    instead of tuning on as orphans; the same command then finishes the gallery from the journal."""
    out = tmp_path / "g"
    proc = subprocess.Popen([shutil.which("optbench"), *GALLERY_ARGS, "--out", str(out)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 120
    kids: list[int] = []
    while time.time() < deadline and not (len(kids) >= 2 and (out / "tuning.journal").exists()):
        kids = _children(proc.pid)
        time.sleep(0.05)
    assert len(kids) >= 2 and proc.poll() is None, "the workers did not start"
    os.kill(proc.pid, signal.SIGKILL)
    proc.communicate(timeout=60)
    survivors = _survivors(kids)
    assert not survivors, "tuning workers outlived the gallery"
    r = _optbench(*GALLERY_ARGS, "--out", out, timeout=300)
    assert r.returncode == 0, r.stderr
    assert len(json.loads((out / "gallery.json").read_text())["entries"]) == 8
    assert len(list((out / "figures").rglob("*.png"))) == 8


@LINUX
def test_a_zombie_writers_temporary_is_stale(tmp_path):
    """A writer that exited but is not yet reaped (a killed worker whose parent died too, waiting for init) writes
    nothing more: its temporaries are removed; a live writer's are kept."""
    from optbench.results import remove_stale_temporaries

    child = os.fork()
    if child == 0:
        os._exit(0)
    deadline = time.time() + 10
    while time.time() < deadline and _alive(child):  # until it has exited (a zombie: not reaped below)
        time.sleep(0.01)
    try:
        zombie = tmp_path / f".chunk.parquet.{child}.abc.tmp"
        live = tmp_path / f".chunk.parquet.{os.getpid()}.abc.tmp"
        zombie.write_bytes(b"x")
        live.write_bytes(b"x")
        assert Path(f"/proc/{child}").exists()  # still a process entry: os.kill(pid, 0) alone says alive
        assert remove_stale_temporaries(tmp_path) == [zombie]
        assert live.exists()
    finally:
        os.waitpid(child, 0)


def test_sigterm_in_a_serial_run_acts_like_ctrl_c(tmp_path):
    out = tmp_path / "res"
    args = ["run", "-p", "rosenbrock", "-o", "adam,sgd,nag,rmsprop", "--lr", "1e-4:1e-1:8", "--steps", "4000",
            "--engine", "loop", "-q", "--out", str(out)]
    proc = subprocess.Popen([shutil.which("optbench"), *args], stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 120
    while time.time() < deadline and not (out / "steps").is_dir() or not any((out / "steps").glob("*.parquet")):
        time.sleep(0.05)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 143 and "Terminated" in err and "Traceback" not in err, err
    assert len(list((out / "steps").glob("*.parquet"))) >= 1


def test_a_parent_gone_before_the_worker_started_ends_the_worker():
    code = textwrap.dedent("""
        import os
        from optbench.sweep.parallel import die_with_parent
        die_with_parent(os.getppid() + 10**6)  # not our parent: as if it had died
        print("still here")
    """)
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert (r.returncode, r.stdout, r.stderr) == (1, "", "")  # ended by the check, not by an error


# ---------------------------------------------------------------------------------------------------------
# Concurrent writers of one manifest

def test_concurrent_sweeps_into_one_out_keep_every_manifest_record(tmp_path):
    out = tmp_path / "res"
    code = textwrap.dedent("""
        import sys
        from optbench.optimizers import get_optimizer
        from optbench.problems import get_problem
        from optbench.runner import run_sweep
        from optbench.sweep.spec import Sweep
        for i in range(3):
            lr = float(sys.argv[1]) * (i + 1)
            run_sweep(Sweep([get_problem("saddle")], [get_optimizer("sgd")], lrs=[lr], seeds=[0], steps=5,
                            engine="loop"), sys.argv[2], command=f"p{sys.argv[1]}-{i}")
    """)
    procs = [subprocess.Popen([sys.executable, "-c", code, f"1e-{k}", str(out)]) for k in (2, 3, 4)]
    assert [p.wait(timeout=180) for p in procs] == [0, 0, 0]
    manifest = json.loads((out / "manifest.json").read_text())
    commands = sorted(s["command"] for s in manifest["sweeps"])
    assert commands == sorted(f"p1e-{k}-{i}" for k in (2, 3, 4) for i in range(3))
    assert all("finished" in s for s in manifest["sweeps"])


def test_the_manifest_lock_serialises_updates():
    import tempfile
    import threading

    from optbench.results import update_manifest

    with tempfile.TemporaryDirectory() as d:
        def work(k):
            for i in range(25):
                update_manifest(d, lambda m, k=k, i=i: m.setdefault("n", []).append((k, i)))

        threads = [threading.Thread(target=work, args=(k,)) for k in range(6)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert len(json.loads((Path(d) / "manifest.json").read_text())["n"]) == 150


# ---------------------------------------------------------------------------------------------------------
# Reports appear whole

def test_a_failed_report_leaves_the_previous_one_whole(tmp_path, monkeypatch, clean_results):
    from optbench.report import build as build_module
    from optbench.report import build_report

    out = tmp_path / "report"
    build_report([clean_results], out, formats=["png"], figures=["curves"])
    before = sorted(p.relative_to(out) for p in out.rglob("*"))
    assert Path("index.html") in before

    def broken(self, figure):  # a figure that fails half-written
        (self.fig_dir / "half.png").write_bytes(b"\x89PNG")
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(build_module.Builder, "draw", broken)
    with pytest.raises(OSError) as info:
        build_report([clean_results], out, formats=["png"], figures=["curves"])
    assert info.value.filename == str(out)
    assert sorted(p.relative_to(out) for p in out.rglob("*")) == before
    assert [p.name for p in tmp_path.iterdir()] == ["report"], "no staging directory left"


def test_a_new_report_replaces_the_old_one_whole(tmp_path, clean_results):
    from optbench.report import build_report

    out = tmp_path / "report"
    build_report([clean_results], out, formats=["png"], figures=["curves"])
    (out / "figures" / "stale_from_an_old_report.png").write_bytes(b"old")
    build_report([clean_results], out, formats=["png"], figures=["curves"])
    assert not (out / "figures" / "stale_from_an_old_report.png").exists()
    (out / "my-notes.txt").write_text("keep me")  # a folder that also holds the user's own files keeps them
    build_report([clean_results], out, formats=["png"], figures=["curves"])
    assert (out / "my-notes.txt").read_text() == "keep me" and (out / "index.html").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["report"]


def test_a_report_left_by_a_killed_process_is_cleaned(tmp_path, clean_results):
    from optbench.report import build_report

    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    leftover = tmp_path / f".report.staging.{dead.pid}.abc123"
    (leftover / "figures").mkdir(parents=True)
    build_report([clean_results], tmp_path / "report", formats=["png"], figures=["curves"])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["report"]


# ---------------------------------------------------------------------------------------------------------
# Smaller cases

def test_version_alone():
    r = _optbench("--version")
    assert r.returncode == 0 and r.stdout.startswith("optbench "), r.stderr


def test_a_closed_stdout_is_not_an_internal_error():
    proc = subprocess.Popen([shutil.which("optbench"), "list", "optimizers", "--json"], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    proc.stdout.close()  # the reader is gone before the first byte (| head -1 after one line)
    err = proc.stderr.read()
    proc.wait(timeout=60)
    for bad in ("Traceback", "Internal error", "Exception ignored", "BrokenPipe"):
        assert bad not in err, err


def test_sys_exit_in_a_user_step_is_the_users_error(tmp_path):
    (tmp_path / "quitter.py").write_text(textwrap.dedent("""
        import sys
        import torch

        class Quitter(torch.optim.SGD):
            def __init__(self, params, lr=0.1):
                super().__init__(params, lr=lr)

            def step(self, closure=None):
                sys.exit(3)
    """))
    r = _optbench_here("run", "-p", "rosenbrock", "-o", f"{tmp_path / 'quitter.py'}:Quitter", "--steps", "5",
                       "--out", tmp_path / "res", "--engine", "loop")
    assert r.returncode == 2 and "Error in your code" in r.stderr and "SystemExit" in r.stderr, r.stderr


@pytest.mark.parametrize("dataset", ["mnist", "cifar10"])
def test_importing_random_bytes_fails_at_import_naming_the_file(tmp_path, dataset):
    from optbench.data.store import get_dataset_info

    info = get_dataset_info(dataset)
    source = tmp_path / "src"
    source.mkdir()
    for f in info.files:
        (source / f).write_bytes(os.urandom(4096))
    data = tmp_path / "data"
    r = _optbench_here("data", "import", dataset, source, env={"OPTBENCH_DATA": str(data)})
    _assert_one_sentence(r, info.files[0], "Nothing was installed")
    assert not (data / dataset).exists() or not any((data / dataset).iterdir())


def test_a_suite_file_that_is_not_utf8(tmp_path):
    suite = tmp_path / "s.toml"
    suite.write_bytes(b'name = "caf\xe9"\n')
    r = _optbench_here("run", "--suite", suite, "--out", tmp_path / "res")
    _assert_one_sentence(r, str(suite), "UTF-8")


def test_an_absurd_step_budget_is_refused_up_front(tmp_path):
    r = _optbench_here("run", "-p", "saddle", "-o", "adam", "--steps", "1000000000000", "--out", tmp_path / "res")
    _assert_one_sentence(r, "--steps 1000000000000", "GiB")


@pytest.mark.parametrize("extra", [["--pruner", "hyperband"], ["-o", "adam(lr=0.1)"]])
def test_tune_validates_before_printing_or_creating_anything(tmp_path, extra):
    args = ["tune", "-p", "rosenbrock", "-o", "adam", "--trials", "4", "--out", tmp_path / "t", *extra]
    r = _optbench_here(*args)
    _assert_one_sentence(r)
    assert "tuning" not in r.stderr.lower().replace("nothing to tune", "") and not (tmp_path / "t").exists()
