"""Where each parameter tensor lives in a flattened ``[K, P]`` batch of parameter vectors.

The batched engines hold K configurations' parameters as one ``[K, P]`` tensor: an analytic problem's
single ``[d]`` vector, or a network's parameter tensors flattened and concatenated in
``named_parameters()`` order. Layer-wise rules (LAMB, LARS) need one norm per parameter tensor and per
configuration, as their library classes compute them parameter by parameter; a ``ParamLayout`` gives
those norms ``[K, L]`` (L = number of parameter tensors) and spreads per-tensor factors back over the
``[K, P]`` columns.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch


class ParamLayout:
    """The shapes of the L parameter tensors behind the P columns of a ``[K, P]`` tensor, in order."""

    def __init__(self, shapes: Sequence[Sequence[int]], device=None):
        self.shapes = tuple(tuple(int(n) for n in shape) for shape in shapes)
        if not self.shapes:
            raise ValueError("a layout needs at least one parameter tensor")
        self.sizes = [math.prod(shape) for shape in self.shapes]
        self.size = sum(self.sizes)
        self.single = len(self.shapes) == 1
        # per-tensor factors → columns: one repeat_interleave with these counts
        self._counts = torch.tensor(self.sizes, dtype=torch.int64, device=device)
        # columns of tensors with ndim > 1 (weight matrices, convolution kernels); LARS scales only those
        self._matrix_columns = torch.repeat_interleave(
            torch.tensor([len(shape) > 1 for shape in self.shapes], device=device), self._counts)
        self.has_matrices = bool(self._matrix_columns.any())

    @classmethod
    def vector(cls, dim: int, device=None) -> ParamLayout:
        """An analytic problem: one 1-D parameter of ``dim`` coordinates (what the loop engine optimizes)."""
        return cls([(dim,)], device)

    def norms(self, values: torch.Tensor) -> torch.Tensor:
        """‖values restricted to tensor l‖₂ for each row: ``[K, L]`` (``[K, 1]`` for one tensor).

        The only Python loop is over the L parameter tensors, each norm spanning all K rows: on a CPU it is
        about 100× faster than ``torch.segment_reduce`` over the same segments, and ``vector_norm`` keeps
        the library's own reduction (``index_add_`` would add in a nondeterministic order on CUDA)."""
        if self.single:
            return torch.linalg.vector_norm(values, dim=-1, keepdim=True)
        parts = values.split(self.sizes, dim=-1)
        return torch.stack([torch.linalg.vector_norm(part, dim=-1) for part in parts], dim=-1)

    def spread(self, per_tensor: torch.Tensor) -> torch.Tensor:
        """A ``[K, L]`` per-tensor factor as ``[K, P]`` columns (``[K, 1]`` stays as is, broadcasting)."""
        if self.single:
            return per_tensor
        return torch.repeat_interleave(per_tensor, self._counts, dim=-1)

    @property
    def matrix_columns(self) -> torch.Tensor:
        """``[P]`` bool: the columns that belong to a parameter tensor with ``ndim > 1``."""
        return self._matrix_columns
