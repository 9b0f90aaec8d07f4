"""Readers (and, for tests and imports, writers) of the official dataset formats, into uint8 tensors.

- IDX (MNIST, Fashion-MNIST): a 4-byte magic ``0 0 <type> <ndim>``, then ``ndim`` big-endian uint32 sizes,
  then the values, row-major. Files may be gzip-compressed (recognised by their first two bytes, whatever
  the name). Only type 0x08 (unsigned byte) is used by these datasets.
- CIFAR python batches: a pickled dict with ``b"data"`` (a uint8 array ``[N, 3072]``, channel-major
  32×32 planes) and ``b"labels"`` (CIFAR-10) or ``b"fine_labels"`` (CIFAR-100). The pickles are read with
  an unpickler that only accepts the numpy reconstruction functions these files use, so a hostile file
  cannot run code.
"""

from __future__ import annotations

import gzip
import io
import pickle
import struct
from pathlib import Path

import numpy as np

from optbench.errors import DataError

IDX_UBYTE = 0x08
GZIP_MAGIC = b"\x1f\x8b"


def _open_maybe_gzip(path: Path) -> bytes:
    raw = Path(path).read_bytes()
    if raw[:2] == GZIP_MAGIC:
        try:
            return gzip.decompress(raw)
        except (OSError, EOFError) as exc:
            raise DataError(f"{path}: not a readable gzip file ({exc}).") from None
    return raw


def read_idx(path: str | Path):
    """Read an IDX file (gzip or not) into a uint8 tensor of its declared shape."""
    import torch

    path = Path(path)
    data = _open_maybe_gzip(path)
    if len(data) < 4 or data[0] != 0 or data[1] != 0:
        raise DataError(f"{path}: not an IDX file (bad magic number).")
    if data[2] != IDX_UBYTE:
        raise DataError(f"{path}: IDX element type 0x{data[2]:02x} is not unsigned byte (0x08).")
    ndim = data[3]
    header = 4 + 4 * ndim
    if len(data) < header:
        raise DataError(f"{path}: truncated IDX header.")
    shape = struct.unpack(f">{ndim}I", data[4:header])
    count = int(np.prod(shape)) if shape else 1
    if len(data) - header != count:
        raise DataError(f"{path}: IDX header declares {shape} ({count} bytes) but the file holds "
                        f"{len(data) - header} bytes of data.")
    array = np.frombuffer(data, dtype=np.uint8, count=count, offset=header).reshape(shape)
    return torch.from_numpy(array.copy())


def write_idx(path: str | Path, array, *, gz: bool | None = None) -> None:
    """Write a uint8 array as IDX; gzip-compressed when ``gz`` (default: when the name ends in .gz)."""
    path = Path(path)
    array = np.ascontiguousarray(np.asarray(array, dtype=np.uint8))
    payload = bytes([0, 0, IDX_UBYTE, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape) + array.tobytes()
    if gz is None:
        gz = path.suffix == ".gz"
    path.write_bytes(gzip.compress(payload, mtime=0) if gz else payload)


class _NumpyOnlyUnpickler(pickle.Unpickler):
    ALLOWED = {
        ("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
        ("numpy", "ndarray"), ("numpy", "dtype"), ("numpy.core.multiarray", "scalar"),
        ("numpy._core.multiarray", "scalar"), ("_codecs", "encode"),  # how protocol 2 stores bytes
    }

    def find_class(self, module, name):
        if (module, name) not in self.ALLOWED:
            raise pickle.UnpicklingError(f"refusing to load {module}.{name} from a dataset file")
        return super().find_class(module, name)


def read_cifar_batch(path: str | Path, label_key: str = "labels"):
    """Read one CIFAR python batch: images ``uint8 [N, 3, 32, 32]`` and labels ``int64 [N]``."""
    import torch

    path = Path(path)
    try:
        with path.open("rb") as f:
            batch = _NumpyOnlyUnpickler(f, encoding="bytes").load()
        data = np.asarray(batch[b"data"], dtype=np.uint8)
        labels = np.asarray(batch[label_key.encode()], dtype=np.int64)
    except (pickle.UnpicklingError, EOFError, KeyError, TypeError, ValueError, AttributeError, OverflowError,
            MemoryError, IndexError) as exc:
        raise DataError(f"{path}: not a CIFAR python batch with {label_key!r} ({type(exc).__name__}: {exc}).") \
            from None
    if data.ndim != 2 or data.shape[1] != 3 * 32 * 32 or labels.shape != (len(data),):
        raise DataError(f"{path}: expected data [N, 3072] and N labels, got {data.shape} and {labels.shape}.")
    return torch.from_numpy(data.reshape(-1, 3, 32, 32).copy()), torch.from_numpy(labels.copy())


def write_cifar_batch(path: str | Path, images, labels, label_key: str = "labels") -> None:
    """Write ``images`` uint8 ``[N, 3, 32, 32]`` and ``labels`` as a CIFAR python batch (protocol 2)."""
    images = np.asarray(images, dtype=np.uint8)
    batch = {b"batch_label": b"optbench", b"data": images.reshape(len(images), -1),
             label_key.encode(): [int(v) for v in np.asarray(labels)], b"filenames": []}
    buf = io.BytesIO()
    pickle.dump(batch, buf, protocol=2)
    Path(path).write_bytes(buf.getvalue())
