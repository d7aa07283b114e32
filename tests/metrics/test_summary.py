"""Reducible job summaries: per-slot mean differences."""
import torch

from cflight.metrics.summary import DifferenceMeans


def test_difference_means_per_slot_equal_the_direct_mean():
    g = torch.Generator().manual_seed(0)
    change, slot = torch.randn(10, 3, 4, 4, generator=g), torch.tensor([0, 1, 2, 0, 1, 2, 0, 1, 2, 0])
    metric = DifferenceMeans(3, (3, 4, 4))
    metric.update(change[:4], slot[:4])  # in two updates, as two shards
    metric.update(change[4:], slot[4:])
    out = metric.compute()
    for s in range(3):
        torch.testing.assert_close(out["mean"][s], change[slot == s].double().mean(0))
    assert out["counts"].tolist() == [4, 3, 3]
