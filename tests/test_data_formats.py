"""The dataset readers on files written in the official formats."""

from __future__ import annotations

import gzip
import pickle

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from optbench.data.formats import read_cifar_batch, read_idx, write_cifar_batch, write_idx
from optbench.errors import DataError


@pytest.mark.parametrize("gz", [True, False])
def test_idx_round_trip_images_and_labels(tmp_path, gz):
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, size=(7, 28, 28), dtype=np.uint8)
    labels = rng.integers(0, 10, size=7, dtype=np.uint8)
    write_idx(tmp_path / "img", images, gz=gz)
    write_idx(tmp_path / "lab", labels, gz=gz)
    got_images, got_labels = read_idx(tmp_path / "img"), read_idx(tmp_path / "lab")
    assert got_images.dtype == torch.uint8 and got_images.shape == (7, 28, 28)
    assert got_labels.dtype == torch.uint8 and got_labels.shape == (7,)
    assert np.array_equal(got_images.numpy(), images) and np.array_equal(got_labels.numpy(), labels)


def test_idx_header_is_the_official_layout(tmp_path):
    write_idx(tmp_path / "f", np.zeros((2, 3, 4), np.uint8), gz=False)
    raw = (tmp_path / "f").read_bytes()
    assert raw[:4] == b"\x00\x00\x08\x03"  # magic 0x00000803: unsigned bytes, 3 dimensions
    assert raw[4:16] == (2).to_bytes(4, "big") + (3).to_bytes(4, "big") + (4).to_bytes(4, "big")
    assert len(raw) == 16 + 24


def test_gzip_is_recognised_by_content_not_name(tmp_path):
    write_idx(tmp_path / "plain-name", np.arange(5, dtype=np.uint8), gz=True)
    assert read_idx(tmp_path / "plain-name").tolist() == [0, 1, 2, 3, 4]


@pytest.mark.parametrize("payload, message", [
    (b"\x08\x00\x08\x01\x00\x00\x00\x01\x00", "bad magic"),
    (b"\x00\x00\x0d\x01\x00\x00\x00\x01\x00\x00\x00\x00", "not unsigned byte"),
    (b"\x00\x00\x08\x01\x00\x00\x00\x05\x01\x02", "declares"),
    (b"\x00\x00\x08\x03\x00\x00", "truncated"),
])
def test_bad_idx_files_are_data_errors(tmp_path, payload, message):
    (tmp_path / "bad").write_bytes(payload)
    with pytest.raises(DataError, match=message):
        read_idx(tmp_path / "bad")


def test_broken_gzip_is_a_data_error(tmp_path):
    (tmp_path / "bad.gz").write_bytes(gzip.compress(b"\x00\x00\x08\x01\x00\x00\x00\x01\x07")[:-6])
    with pytest.raises(DataError, match="gzip"):
        read_idx(tmp_path / "bad.gz")


@pytest.mark.parametrize("label_key", ["labels", "fine_labels"])
def test_cifar_batch_round_trip(tmp_path, label_key):
    rng = np.random.default_rng(1)
    images = rng.integers(0, 256, size=(5, 3, 32, 32), dtype=np.uint8)
    labels = rng.integers(0, 100, size=5)
    write_cifar_batch(tmp_path / "batch", images, labels, label_key)
    x, y = read_cifar_batch(tmp_path / "batch", label_key)
    assert x.dtype == torch.uint8 and x.shape == (5, 3, 32, 32) and y.dtype == torch.int64
    assert np.array_equal(x.numpy(), images) and y.tolist() == labels.tolist()
    # channel-major planes: the first 1024 bytes of a row are the red plane
    raw = pickle.loads((tmp_path / "batch").read_bytes(), encoding="bytes")[b"data"]
    assert np.array_equal(raw[0, :1024].reshape(32, 32), images[0, 0])


def test_cifar_reader_refuses_pickles_that_run_code(tmp_path):
    class Evil:
        def __reduce__(self):
            return (print, ("owned",))

    (tmp_path / "evil").write_bytes(pickle.dumps({b"data": Evil(), b"labels": [0]}))
    with pytest.raises(DataError, match="refusing"):
        read_cifar_batch(tmp_path / "evil")


def test_cifar_reader_names_a_missing_label_key(tmp_path):
    write_cifar_batch(tmp_path / "b", np.zeros((1, 3, 32, 32), np.uint8), [3], "fine_labels")
    with pytest.raises(DataError, match="'labels'"):
        read_cifar_batch(tmp_path / "b", "labels")


@pytest.mark.parametrize("raw", [
    b"\x80\x04\x8d" + b"\xff" * 8,  # BINBYTES8 with a length no file holds (OverflowError), as CI's random bytes were
    b"\x80\x04\x95\xff\xff\xff\xff\xff\xff\xff\x7f",  # a frame longer than the file
    b"\x80\x02]q\x00(K\x01e.",  # a valid pickle of a list, not a batch
    b"\x80\x04K\x01\x94h\xff\xff\xff\xff.",  # a memo index that was never stored
    b"",
])
def test_cifar_reader_says_which_file_is_damaged_for_any_broken_pickle(tmp_path, raw):
    """Damaged or foreign bytes are one DataError naming the file, whatever the unpickler trips over."""
    (tmp_path / "data_batch_1").write_bytes(raw)
    with pytest.raises(DataError, match="data_batch_1: not a CIFAR python batch"):
        read_cifar_batch(tmp_path / "data_batch_1")


@given(st.binary(max_size=64).map(lambda tail: b"\x80\x04" + tail) | st.binary(max_size=64))
def test_cifar_reader_never_fails_other_than_with_a_data_error(tmp_path_factory, raw):
    """Any bytes at all (random ones behind a protocol-4 header, where the unpickler goes furthest): a batch
    or a DataError, never another exception (which the CLI would report as an internal error)."""
    path = tmp_path_factory.mktemp("cifar") / "data_batch_1"
    path.write_bytes(raw)
    try:
        read_cifar_batch(path)
    except DataError:
        pass


def test_cifar_reader_names_labels_that_are_not_one_per_image(tmp_path):
    for labels in (3, [[1], [2]], [1, 2, 3]):  # a scalar, a column, too many
        (tmp_path / "b").write_bytes(pickle.dumps({b"data": np.zeros((2, 3072), np.uint8), b"labels": labels}))
        with pytest.raises(DataError, match="expected data"):
            read_cifar_batch(tmp_path / "b")
