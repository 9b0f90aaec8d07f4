"""Arrow columns straight from numpy buffers and Python strings.

``pyarrow.array`` inspects its input for pandas objects and so imports pandas (~0.4 s) on its first call,
even for a plain numpy array; a sweep run with ``-q`` would pay that import only to write its results.
These constructors build the same arrays from raw buffers (``pyarrow.Array.from_buffers``), which never
touches pandas. Semantics follow ``pyarrow.array(numpy_array)``: NaN stays a float NaN, not a null.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pyarrow as pa


def numeric(values, dtype=None) -> pa.Array:
    """A numeric Arrow array over ``values`` (any array-like of ints or floats; no nulls)."""
    array = np.ascontiguousarray(values, dtype=dtype)
    if array.ndim != 1:
        array = array.reshape(-1)
    if array.dtype == np.bool_:
        raise TypeError("numeric() takes ints or floats; booleans are bit-packed in Arrow")
    return pa.Array.from_buffers(pa.from_numpy_dtype(array.dtype), len(array), [None, pa.py_buffer(array)])


def optional_int64(values: Sequence[int | None]) -> pa.Array:
    """An int64 Arrow array where ``None`` entries are nulls."""
    valid = np.array([v is not None for v in values], dtype=bool)
    data = np.array([v if v is not None else 0 for v in values], dtype=np.int64)
    bitmap = None if valid.all() else pa.py_buffer(np.packbits(valid, bitorder="little"))
    return pa.Array.from_buffers(pa.int64(), len(data), [bitmap, pa.py_buffer(data)])


def strings(values: Sequence[str]) -> pa.Array:
    """A UTF-8 string Arrow array (under 2 GiB of text, as every per-run column here is)."""
    encoded = [v.encode() for v in values]
    offsets = np.zeros(len(encoded) + 1, dtype=np.int64)
    np.cumsum([len(e) for e in encoded], out=offsets[1:])
    if offsets[-1] >= 2**31:
        raise ValueError("strings(): more than 2 GiB of text in one column")
    return pa.Array.from_buffers(pa.string(), len(encoded),
                                 [None, pa.py_buffer(offsets.astype(np.int32)), pa.py_buffer(b"".join(encoded))])


def codes(values: Sequence[str], take=None) -> tuple[np.ndarray, list[str]]:
    """(int32 position of each value among the distinct values, the distinct values in first-seen order);
    given ``take`` (indices into ``values``), the positions of ``values[take]``."""
    uniq = list(dict.fromkeys(values))
    pos = {v: i for i, v in enumerate(uniq)}
    indices = np.array([pos[v] for v in values], dtype=np.int32)
    return (indices if take is None else indices[take]), uniq


def dictionary(indices, values: Sequence[str]) -> pa.DictionaryArray:
    """A dictionary-encoded string column: ``values[indices[i]]`` in row i (indices as int32)."""
    return pa.DictionaryArray.from_arrays(numeric(indices, np.int32), strings(values))


def table(columns: dict[str, pa.Array]) -> pa.Table:
    """A table from named Arrow arrays (``pyarrow.table`` of a dict would also probe for pandas)."""
    return pa.Table.from_arrays(list(columns.values()), names=list(columns))
