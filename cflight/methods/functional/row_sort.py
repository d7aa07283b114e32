"""Row-wise sort of non-negative finite values: the dominant cost of the exact LMO and l1 projection
(spec dvce_svce.md §3.2, "O(d log d) per sample")."""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

__all__: list[str] = []


def _sort_rows(t: Tensor) -> tuple[Tensor, Tensor]:
    """Row-wise ``(sorted values, permutation)`` of a non-negative finite ``[B, d]`` tensor.

    The sort is the LMO's dominant cost. On CPU, ``torch.sort`` is several times slower than numpy, and a
    numpy argsort slows down on the many ties (zeros) of image thresholds; for float32 the row index is packed
    into the low bits of an int64 key built from the float's bit pattern (monotone for non-negative floats),
    so a plain, vectorised value sort gives both the sorted values and the permutation; other dtypes take
    numpy's stable argsort. On GPU: ``torch.sort``.
    """
    if t.device.type != "cpu":
        return torch.sort(t, dim=1)
    n = t.shape[1]
    if t.dtype == torch.float32 and n > 1:
        bits = max(1, (n - 1).bit_length())
        key = (t.contiguous().view(torch.int32).to(torch.int64) << bits) | torch.arange(n)
        key = torch.from_numpy(np.sort(key.numpy(), axis=1))
        order = key & ((1 << bits) - 1)
        return (key >> bits).to(torch.int32).view(torch.float32), order
    # stable: ties in index order, as the packed keys above (and ~2.5× faster than numpy's default
    # introsort on the ties of padded or image thresholds)
    order = torch.from_numpy(np.argsort(t.detach().numpy(), axis=1, kind="stable"))
    return t.gather(1, order), order
