"""Which counterfactuals enter the global attribution (spec §1.6.4; the reference drops zero-gradient ones)."""
import pytest
import torch

from cflight.attribution import GlobalAttribution, global_rows


def test_global_rows_rules():
    valid = torch.tensor([True, True, False, False])
    zero = torch.tensor([False, True, False, True])
    assert global_rows(valid, zero).tolist() == [True, False, False, False]  # default: valid, nonzero gradient
    assert global_rows(valid, zero, "nonzero_grad").tolist() == [True, False, True, False]  # the reference
    assert global_rows(valid, zero, "all").tolist() == [True] * 4
    assert global_rows(valid, None).tolist() == valid.tolist()  # methods without a zero-gradient flag
    with pytest.raises(ValueError, match="global_rows"):
        global_rows(valid, zero, "some")


def test_include_equals_aggregating_the_subset_only():
    torch.manual_seed(0)
    s, d = torch.rand(6, 3) * 2 - 1, torch.tensor([1, -1, 1, 1, -1, 1])
    src, tgt = torch.tensor([0, 1, 2, 0, 1, 2]), torch.tensor([1, 2, 0, 1, 2, 0])
    keep = torch.tensor([True, False, True, True, False, False])
    masked, subset = GlobalAttribution(3, 3), GlobalAttribution(3, 3)
    masked.update(s, d, src, tgt, include=keep)
    subset.update(s[keep], d[keep], src[keep], tgt[keep])
    a, b = masked.compute(), subset.compute()
    assert int(a["count"]) == 3
    for key in ("overall", "by_target", "by_pair", "by_pair_count"):
        torch.testing.assert_close(a[key], b[key], equal_nan=True)
    # a zero-gradient sample adds zero change: kept (rule "all") it pulls the mean toward 0
    zero = torch.zeros(1, 3)
    diluted = GlobalAttribution(3, 3)
    diluted.update(torch.cat([s[:1], zero]), torch.tensor([1, 1]), torch.tensor([0, 0]), torch.tensor([1, 1]))
    torch.testing.assert_close(diluted.compute()["overall"], s[0].double() / 2)
    with pytest.raises(ValueError, match="include"):
        masked.update(s, d, src, tgt, include=keep[:2])
