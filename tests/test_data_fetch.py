"""The data directory, downloads against a loopback HTTP server, imports, `optbench data`, missing data."""

from __future__ import annotations

import dataclasses
import hashlib
import http.server
import io
import json
import os
import socket
import subprocess
import sys
import tarfile
import threading
from pathlib import Path

import pytest

from optbench.data import store
from optbench.data.fetch import fetch_dataset, import_dataset
from optbench.data.synthetic import write_dataset
from optbench.errors import DataError, UsageError

OPTBENCH = str(Path(sys.executable).with_name("optbench"))


class _Server(http.server.ThreadingHTTPServer):
    files: dict[str, bytes]
    broken: set[str]


class _Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self):  # noqa: N802
        body = self.server.files.get(self.path)
        if body is None:
            self.send_error(404)
            return
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.path in self.server.broken:  # a transfer cut half-way
            self.wfile.write(body[: len(body) // 2])
            self.wfile.flush()
            self.connection.shutdown(socket.SHUT_RDWR)
            return
        self.wfile.write(body)

    def log_message(self, *args):
        pass


@pytest.fixture
def server():
    srv = _Server(("127.0.0.1", 0), _Handler)
    srv.files, srv.broken = {}, set()
    thread = threading.Thread(target=srv.serve_forever, daemon=True)
    thread.start()
    yield srv
    srv.shutdown()
    srv.server_close()


@pytest.fixture
def data_dir(tmp_path, monkeypatch):
    root = tmp_path / "data"
    monkeypatch.setenv(store.DATA_ENV, str(root))
    return root


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _mnist_files(tmp_path) -> dict[str, bytes]:
    src = write_dataset("mnist", tmp_path / "src", n_train=50, n_test=20)
    return {p.name: p.read_bytes() for p in sorted(src.iterdir())}


def _with_hashes(monkeypatch, name: str, hashes: dict[str, str]) -> None:
    """Register ``name`` with these 'official' hashes (the test's files stand in for the real ones)."""
    info = store.DATASETS[name]
    archives = tuple(dataclasses.replace(a, sha256=hashes[a.name]) for a in info.archives)
    monkeypatch.setitem(store.DATASETS, name, dataclasses.replace(info, archives=archives))


def _serve(server, monkeypatch, dataset: str, files: dict[str, bytes]) -> None:
    for name, body in files.items():
        server.files[f"/{dataset}/{name}"] = body
    monkeypatch.setenv(store.MIRROR_ENV, f"http://127.0.0.1:{server.server_address[1]}/")


def _leftovers(root: Path) -> list[Path]:
    return [p for p in root.rglob("*") if p.is_file()] if root.exists() else []


def test_data_root_defaults_to_the_platform_cache(monkeypatch):
    monkeypatch.delenv(store.DATA_ENV, raising=False)
    root, how = store.data_root()
    assert root.name == "optbench" and "cache" in str(root).lower() and how == "the default cache directory"
    monkeypatch.setenv(store.DATA_ENV, "/somewhere/else")
    assert store.data_root() == (Path("/somewhere/else"), "$OPTBENCH_DATA")


def test_official_registry_has_urls_and_sha256():
    assert [n for n, info in store.DATASETS.items() if not info.downloadable] == ["text"]  # import only
    shakespeare = store.DATASETS["tiny-shakespeare"]
    assert store.archive_url(shakespeare, shakespeare.archives[0]) == (
        "https://raw.githubusercontent.com/karpathy/char-rnn/master/data/tinyshakespeare/input.txt")
    for info in (i for i in store.DATASETS.values() if i.downloadable):
        assert info.archives and info.base_url.startswith("http")
        for a in info.archives:
            assert len(a.sha256) == 64 and int(a.sha256, 16) >= 0


def test_fetch_downloads_verifies_and_installs(server, data_dir, monkeypatch, tmp_path):
    files = _mnist_files(tmp_path)
    _with_hashes(monkeypatch, "mnist", {n: _sha(b) for n, b in files.items()})
    _serve(server, monkeypatch, "mnist", files)
    status = fetch_dataset("mnist", progress=False)
    assert status.state == store.VERIFIED
    assert sorted(p.name for p in _leftovers(data_dir)) == sorted(files)  # no staging files left
    assert (data_dir / "mnist" / "train-images-idx3-ubyte.gz").read_bytes() == files["train-images-idx3-ubyte.gz"]
    ds = store.load_dataset("mnist")
    assert ds.official and ds.train_x.shape == (50, 1, 28, 28) and ds.test_y.shape == (20,)


def test_fetch_with_a_hash_mismatch_leaves_nothing(server, data_dir, monkeypatch, tmp_path):
    files = _mnist_files(tmp_path)
    hashes = {n: _sha(b) for n, b in files.items()}
    hashes["t10k-images-idx3-ubyte.gz"] = "0" * 64
    _with_hashes(monkeypatch, "mnist", hashes)
    _serve(server, monkeypatch, "mnist", files)
    with pytest.raises(DataError, match="does not match its published SHA-256"):
        fetch_dataset("mnist", progress=False)
    assert _leftovers(data_dir) == []


def test_fetch_with_a_broken_transfer_leaves_nothing(server, data_dir, monkeypatch, tmp_path):
    files = _mnist_files(tmp_path)
    _with_hashes(monkeypatch, "mnist", {n: _sha(b) for n, b in files.items()})
    _serve(server, monkeypatch, "mnist", files)
    server.broken.add("/mnist/train-images-idx3-ubyte.gz")
    with pytest.raises(DataError, match="nothing was saved|Nothing was saved"):
        fetch_dataset("mnist", progress=False)
    assert _leftovers(data_dir) == []


def test_fetch_offline_is_one_clear_error(data_dir, monkeypatch):
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    monkeypatch.setenv(store.MIRROR_ENV, f"http://127.0.0.1:{port}")
    with pytest.raises(DataError, match=r"Could not download .*'mnist'.*optbench data import mnist PATH"):
        fetch_dataset("mnist", progress=False)
    assert _leftovers(data_dir) == []


def _cifar_tarball(tmp_path) -> bytes:
    src = write_dataset("cifar10", tmp_path / "cifar-src", n_train=50, n_test=10)
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        for p in sorted(src.iterdir()):
            tar.add(p, arcname=f"cifar-10-batches-py/{p.name}")
        meta = json.dumps({"note": "not read"}).encode()
        info = tarfile.TarInfo("cifar-10-batches-py/batches.meta")
        info.size = len(meta)
        tar.addfile(info, io.BytesIO(meta))
    return buf.getvalue()


def test_fetch_cifar_extracts_batches_and_records_checksums(server, data_dir, monkeypatch, tmp_path):
    tarball = _cifar_tarball(tmp_path)
    _with_hashes(monkeypatch, "cifar10", {"cifar-10-python.tar.gz": _sha(tarball)})
    _serve(server, monkeypatch, "cifar10", {"cifar-10-python.tar.gz": tarball})
    assert fetch_dataset("cifar10", progress=False).state == store.VERIFIED
    names = sorted(p.name for p in _leftovers(data_dir))
    assert names == sorted([*store.DATASETS["cifar10"].files, "checksums.json"])
    ds = store.load_dataset("cifar10")
    assert ds.official and ds.train_x.shape == (50, 3, 32, 32) and ds.train_x.dtype.is_floating_point is False
    (data_dir / "cifar10" / "test_batch").write_bytes((data_dir / "cifar10" / "data_batch_1").read_bytes())
    assert store.dataset_status("cifar10").state == store.UNOFFICIAL  # changed since extraction


def test_import_a_torchvision_raw_folder(data_dir, monkeypatch, tmp_path):
    raw = tmp_path / "tv" / "MNIST" / "raw"
    write_dataset("mnist", raw, n_train=30, n_test=10)  # .gz files
    write_dataset("mnist", raw, n_train=30, n_test=10, gz=False)  # and torchvision's unpacked copies
    files = {p.name: p.read_bytes() for p in raw.glob("*.gz")}
    status = import_dataset("mnist", tmp_path / "tv")
    assert status.state == store.UNOFFICIAL  # the test files are not the official archives
    assert sorted(p.name for p in _leftovers(data_dir)) == sorted(files)  # the .gz files, preferred
    _with_hashes(monkeypatch, "mnist", {n: _sha(b) for n, b in files.items()})
    assert store.dataset_status("mnist").state == store.VERIFIED


def test_import_unpacked_idx_files_and_cifar_tarball(data_dir, tmp_path):
    write_dataset("fashion-mnist", tmp_path / "fm", n_train=20, n_test=5, gz=False)
    assert import_dataset("fashion-mnist", tmp_path / "fm").state == store.UNOFFICIAL
    assert store.load_dataset("fashion-mnist").train_x.shape == (20, 1, 28, 28)
    (tmp_path / "c.tar.gz").write_bytes(_cifar_tarball(tmp_path))
    status = import_dataset("cifar10", tmp_path / "c.tar.gz")
    assert status.state == store.UNOFFICIAL and "checksums.json" in status.detail
    assert not (data_dir / "cifar10" / "checksums.json").exists()


def test_import_errors_name_what_is_missing(data_dir, tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="train-images-idx3-ubyte"):
        import_dataset("mnist", tmp_path / "empty")
    with pytest.raises(DataError, match="does not exist"):
        import_dataset("mnist", tmp_path / "nowhere")
    with pytest.raises(UsageError, match="Unknown dataset 'mnits'.*Did you mean 'mnist'"):
        import_dataset("mnits", tmp_path)


def test_missing_data_message_names_dataset_directory_and_commands(data_dir):
    from optbench.problems import get_problem

    with pytest.raises(DataError) as err:
        get_problem("mnist-mlp")
    text = str(err.value)
    for part in ("'mnist'", str(data_dir / "mnist"), "$OPTBENCH_DATA", "optbench data fetch mnist",
                 "optbench data import mnist PATH"):
        assert part in text


def _cli(args, env_extra, **kw):
    env = {**os.environ, "OMP_NUM_THREADS": "1", **env_extra}
    r = subprocess.run([OPTBENCH, *args], capture_output=True, text=True, env=env, timeout=120, **kw)
    r.stderr = " ".join(r.stderr.split())  # rich wraps long messages at the terminal width
    return r


def test_cli_missing_data_is_exit_2_without_traceback(tmp_path):
    from cli_invoke import invoke

    r = invoke("run", "-p", "cifar10-cnn", "-o", "sgd", "--steps", "2", "--out", tmp_path / "r",
               env={store.DATA_ENV: str(tmp_path / "nodata")})
    stderr = " ".join(r.stderr.split())  # rich wraps long messages at the terminal width
    assert r.exit_code == 2, stderr
    assert "optbench data fetch cifar10" in stderr and "Traceback" not in stderr
    assert not (tmp_path / "r").exists()


def test_cli_fetch_mismatch_and_list(server, tmp_path):
    files = _mnist_files(tmp_path)  # served under the official names, but not the official bytes
    env = {store.DATA_ENV: str(tmp_path / "d"),
           store.MIRROR_ENV: f"http://127.0.0.1:{server.server_address[1]}"}
    for name, body in files.items():
        server.files[f"/mnist/{name}"] = body
    r = _cli(["data", "fetch", "mnist", "-q"], env)
    assert r.returncode == 2 and "does not match its published SHA-256" in r.stderr and "Traceback" not in r.stderr
    assert _leftovers(tmp_path / "d") == []
    r = _cli(["data", "import", "mnist", str(tmp_path / "src")], env)
    assert r.returncode == 0 and "unofficial" in r.stdout, r.stderr
    r = _cli(["data", "list", "--json"], env)
    listing = json.loads(r.stdout)
    states = {d["name"]: d["state"] for d in listing["datasets"]}
    assert states == {"mnist": "unofficial", "fashion-mnist": "missing", "cifar10": "missing", "cifar100": "missing",
                      "tiny-shakespeare": "missing", "text": "missing"}
    assert listing["data_dir"] == str(tmp_path / "d")


def test_fetch_a_text_corpus_verifies_it_and_text_has_no_download(server, data_dir, monkeypatch):
    body = Path("/usr/share/common-licenses/GPL-3").read_bytes()
    _with_hashes(monkeypatch, "tiny-shakespeare", {"input.txt": _sha(body)})
    _serve(server, monkeypatch, "tiny-shakespeare", {"input.txt": body})
    status = fetch_dataset("tiny-shakespeare", progress=False)
    assert status.state == store.VERIFIED and (data_dir / "tiny-shakespeare" / "input.txt").read_bytes() == body
    ds = store.load_dataset("tiny-shakespeare")
    assert ds.official and bytes(ds.train_x.tolist()) + bytes(ds.test_x.tolist()) == body
    with pytest.raises(DataError, match="optbench data import text FILE"):
        fetch_dataset("text", progress=False)
    with pytest.raises(DataError, match="Import a file with `optbench data import text FILE`"):
        store.load_dataset("text")
