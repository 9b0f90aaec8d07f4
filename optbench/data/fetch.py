"""Getting datasets into the data directory: download from the official mirrors, or import local files.

Downloads go through pooch (progress bar, SHA-256 check) into a staging folder inside the data directory;
only files that match their published hash are moved into place (an atomic rename), and the staging
folder is removed whatever happens, so a failed or mismatched download leaves nothing behind.
"""

from __future__ import annotations

import json
import os
import shutil
import tarfile
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from optbench.data.store import (
    CHECKSUMS,
    MISSING,
    VERIFIED,
    DatasetInfo,
    DatasetStatus,
    archive_url,
    data_root,
    dataset_status,
    get_dataset_info,
    sha256_file,
)
from optbench.errors import DataError


@contextmanager
def _staging(root: Path) -> Iterator[Path]:
    root.mkdir(parents=True, exist_ok=True)
    stage = Path(tempfile.mkdtemp(dir=root, prefix=".staging-"))
    try:
        yield stage
    finally:
        shutil.rmtree(stage, ignore_errors=True)


def _place(src: Path, dest: Path) -> None:
    """Move (or copy, across file systems) ``src`` to ``dest`` atomically."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.parent / f".{dest.name}.tmp"
    shutil.copyfile(src, tmp)
    os.replace(tmp, dest)


def fetch_dataset(name: str, *, root: Path | None = None, force: bool = False,
                  progress: bool = True) -> DatasetStatus:
    """Download ``name`` from its official mirror (or ``$OPTBENCH_DATA_MIRROR``), verify, and install it."""
    import pooch
    import requests

    info = get_dataset_info(name)
    if not info.downloadable:
        raise DataError(f"Dataset {name!r} ({info.title}) has no download: install a file with "
                        f"`optbench data import {name} FILE`.")
    root = root or data_root()[0]
    if not force:
        status = dataset_status(name, root)
        if status.state == VERIFIED:
            return status
    with _staging(root) as stage:
        for archive in info.archives:
            url = archive_url(info, archive)
            try:
                path = Path(pooch.retrieve(url, known_hash=f"sha256:{archive.sha256}", fname=archive.name,
                                           path=stage, progressbar=progress))
            except ValueError as exc:  # pooch: hash mismatch (the bad file is already deleted)
                raise DataError(f"Download of {url} does not match its published SHA-256 "
                                f"({archive.sha256}); nothing was saved. {exc}") from None
            except (requests.RequestException, OSError) as exc:
                raise DataError(f"Could not download {archive.name} for {name!r} from {url}: "
                                f"{type(exc).__name__}: {exc}. Nothing was saved. If you have the files, use "
                                f"`optbench data import {name} PATH`.") from None
            if sha256_file(path) != archive.sha256:  # belt and braces: pooch checked it already
                raise DataError(f"Download of {url} does not match its published SHA-256; nothing was saved.")
        _install(info, root, stage, verified=True)
    return dataset_status(name, root)


def _install(info: DatasetInfo, root: Path, stage: Path, *, verified: bool) -> None:
    """Move the staged archives of ``info`` into place (extracting CIFAR batches)."""
    directory = root / info.name
    if info.format in ("idx", "text"):
        for archive in info.archives:
            _place(stage / archive.name, directory / archive.name)
        return
    _extract_cifar(info, stage / info.archives[0].name, directory, verified=verified)


def _extract_cifar(info: DatasetInfo, tarball: Path, directory: Path, *, verified: bool) -> None:
    """Extract the batch files (and only them, as regular files) from a CIFAR python tarball."""
    try:
        with tarfile.open(tarball, "r:*") as tar:
            members = {Path(m.name).name: m for m in tar.getmembers() if m.isfile()}
            absent = [f for f in info.files if f not in members]
            if absent:
                raise DataError(f"{tarball} is not the {info.title} python archive: it lacks {', '.join(absent)}.")
            directory.mkdir(parents=True, exist_ok=True)
            temporaries = {f: directory / f".{f}.tmp" for f in info.files}
            try:
                for f, tmp in temporaries.items():
                    src = tar.extractfile(members[f])
                    assert src is not None
                    with src, tmp.open("wb") as out:
                        shutil.copyfileobj(src, out)
                    check_dataset_file(info, tmp, shown=f"{tarball}:{members[f].name}")
                (directory / CHECKSUMS).unlink(missing_ok=True)
                for f, tmp in temporaries.items():  # every file is readable: only now replace the old ones
                    os.replace(tmp, directory / f)
            finally:
                for tmp in temporaries.values():
                    tmp.unlink(missing_ok=True)
    except (tarfile.TarError, EOFError, OSError) as exc:
        raise DataError(f"Could not read {tarball} as a tar archive: {exc}.") from None
    if verified:
        record = {"archive": info.archives[0].name, "archive_sha256": info.archives[0].sha256,
                  "files": {f: sha256_file(directory / f) for f in info.files}}
        tmp = directory / f".{CHECKSUMS}.tmp"
        tmp.write_text(json.dumps(record, indent=2))
        os.replace(tmp, directory / CHECKSUMS)


def check_dataset_file(info: DatasetInfo, path: Path, shown: str | None = None) -> None:
    """Read ``path`` as the dataset's format (an IDX array, or a CIFAR python batch with its labels), so
    that an import of random bytes fails now, naming the file, rather than at run time."""
    from optbench.data.formats import read_cifar_batch, read_idx

    try:
        if info.format == "idx":
            read_idx(path)
        else:
            read_cifar_batch(path, info.label_key)
    except DataError as exc:
        message = str(exc).replace(str(path), shown) if shown else str(exc)
        raise DataError(f"Cannot import {info.name!r}: {message} Nothing was installed.") from None


def _idx_candidates(path: Path, info: DatasetInfo) -> list[Path]:
    """Folders where a user's IDX files may be: PATH, PATH/raw, and torchvision's PATH/<Title>/raw."""
    names = [info.title, info.title.replace("-", ""), info.name, "FashionMNIST" if info.name == "fashion-mnist" else ""]
    dirs = [path, path / "raw"] + [path / n / "raw" for n in names if n]
    return [d for d in dirs if d.is_dir()]


def import_dataset(name: str, source: str | Path, *, root: Path | None = None) -> DatasetStatus:
    """Install files the user already has: IDX files (a folder, e.g. torchvision's ``MNIST/raw``), a
    CIFAR python tarball or extracted batch folder, or a text file (any encoding: it is read as bytes).
    Files that are not official are imported all the same; the returned status says so."""
    info = get_dataset_info(name)
    root = root or data_root()[0]
    source = Path(source).expanduser()
    if not source.exists():
        raise DataError(f"Cannot import {name!r}: {source} does not exist.")
    directory = root / name
    if info.format == "text":
        text = source if source.is_file() else source / info.train_files[0]
        if not text.is_file():
            raise DataError(f"Cannot import {name!r} from {source}: expected a text file (or a folder with "
                            f"{info.train_files[0]}).")
        _place(text, directory / info.train_files[0])
        return dataset_status(name, root)
    if info.format == "idx":
        found: dict[str, Path] = {}
        for folder in _idx_candidates(source, info) if source.is_dir() else []:
            for f in info.files:
                for candidate in (folder / f"{f}.gz", folder / f):
                    if f not in found and candidate.is_file():
                        found[f] = candidate
        missing = [f for f in info.files if f not in found]
        if missing:
            raise DataError(f"Cannot import {name!r} from {source}: no {', '.join(m + '(.gz)' for m in missing)} "
                            "there (looked in PATH, PATH/raw and PATH/<dataset>/raw).")
        for src in found.values():  # every file must read as what it claims before any is installed
            check_dataset_file(info, src)
        for f, src in found.items():
            for stale in (directory / f, directory / f"{f}.gz"):
                stale.unlink(missing_ok=True)
            _place(src, directory / src.name)
        return dataset_status(name, root)
    tarball = source if source.is_file() else source / info.archives[0].name
    if tarball.is_file():
        verified = sha256_file(tarball) == info.archives[0].sha256
        _extract_cifar(info, tarball, directory, verified=verified)
        return dataset_status(name, root)
    for folder in (source, *(source / d for d in ("cifar-10-batches-py", "cifar-100-python"))):
        if folder.is_dir() and all((folder / f).is_file() for f in info.files):
            for f in info.files:
                check_dataset_file(info, folder / f)
            (directory / CHECKSUMS).unlink(missing_ok=True)
            for f in info.files:
                _place(folder / f, directory / f)
            return dataset_status(name, root)
    raise DataError(f"Cannot import {name!r} from {source}: expected {info.archives[0].name} or a folder "
                    f"with {', '.join(info.files)}.")


def list_datasets(root: Path | None = None) -> list[DatasetStatus]:
    from optbench.data.store import DATASETS

    return [dataset_status(n, root) for n in DATASETS]


__all__ = ["fetch_dataset", "import_dataset", "list_datasets", "MISSING"]
