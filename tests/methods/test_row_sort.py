"""The row sort of the LMO and the projections: torch.sort's values, a permutation that gives them, and ties in
index order (a stable sort), for the float32 packed-key path and numpy's path for other dtypes alike."""
from __future__ import annotations

import pytest
import torch

from cflight.methods.functional.row_sort import _sort_rows


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_sort_rows_is_a_stable_sort(dtype):
    g = torch.Generator().manual_seed(0)
    t = torch.rand(16, 300, generator=g, dtype=dtype)
    t[t < 0.5] = 0.0  # many ties at zero, as image thresholds have
    t[:, ::7] = 2.0  # and ties at a padding value
    t[3] = 1.0  # a row of ties only
    values, order = _sort_rows(t)
    ref = torch.sort(t, dim=1, stable=True)
    assert values.dtype == dtype and order.dtype == torch.int64
    assert torch.equal(values, ref.values)
    assert torch.equal(t.gather(1, order), values)
    assert torch.equal(order, ref.indices)  # ties keep their index order
