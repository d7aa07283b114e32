"""Local and global attribution invariants (spec latent_and_regression.md §5.1 items 7–8)."""
import json
import os
import socket

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch import nn

from cflight.attribution import GlobalAttribution, latent_attribution, summarise, top_k


class Logistic(nn.Module):
    def __init__(self, d=6, k=4, seed=0):
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        self.lin = nn.Linear(d, k)
        with torch.no_grad():
            self.lin.weight.copy_(torch.randn(k, d, generator=g))
            self.lin.bias.copy_(torch.randn(k, generator=g))

    def forward(self, z):
        return torch.sigmoid(self.lin(z))


def test_local_attribution_invariants():
    a = Logistic()
    w, w2 = torch.randn(5, 6), torch.randn(5, 6)
    assert (latent_attribution(a, w, w) == 0).all()
    torch.testing.assert_close(latent_attribution(a, w, w2), -latent_attribution(a, w2, w))
    s = latent_attribution(a, w, w2 * 10)
    assert ((s > -1) & (s < 1)).all()
    # sign rule for logistic descriptors: sign(s_k) = sign(beta_k . (w' - w))
    beta = a.lin.weight
    assert torch.equal(torch.sign(s), torch.sign((w2 * 10 - w) @ beta.T))


def test_top_k_ranks_by_magnitude_keeps_sign():
    ranked = top_k(torch.tensor([0.1, -0.5, 0.3]), ["a", "b", "c"], k=2)
    assert ranked == [("b", -0.5), ("c", pytest.approx(0.3))]
    with pytest.raises(ValueError, match="names"):
        top_k(torch.zeros(2), ["a"], 1)


def _metric(scores, direction, source, target, k=4, c=3):
    m = GlobalAttribution(k, c)
    m.update(scores, direction, source, target)
    return m.compute()


def test_global_mean_order_flip_and_single():
    torch.manual_seed(0)
    s, d = torch.rand(8, 4) * 2 - 1, torch.tensor([1, -1, 1, 1, -1, 1, -1, 1])
    src, tgt = torch.randint(0, 3, (8,)), torch.randint(0, 3, (8,))
    r = _metric(s, d, src, tgt)
    torch.testing.assert_close(r["overall"], (s.double() * d.double()[:, None]).mean(0))
    perm = torch.randperm(8)
    torch.testing.assert_close(_metric(s[perm], d[perm], src[perm], tgt[perm])["overall"], r["overall"])
    torch.testing.assert_close(_metric(s, -d, src, tgt)["overall"], -r["overall"])
    one = _metric(s[:1], torch.tensor([1]), src[:1], tgt[:1])
    torch.testing.assert_close(one["overall"], s[0].double())


def test_each_counterfactual_uses_its_own_original():
    """Regression test for the reference notebook's stale-index bug (every w0_i was the same vector)."""
    a = Logistic()
    w0 = torch.randn(4, 6)
    w_cf = w0 + 0.5
    s = latent_attribution(a, w0, w_cf)
    stale = latent_attribution(a, w0[:1].expand(4, -1), w_cf)
    for i in range(4):
        torch.testing.assert_close(s[i], a(w_cf[i:i + 1])[0] - a(w0[i:i + 1])[0])
    assert not torch.allclose(s, stale)


def test_summary_is_json_and_ranked():
    s = torch.tensor([[0.1, -0.6, 0.2, 0.0]])
    out = summarise(_metric(s, torch.tensor([1]), torch.tensor([0]), torch.tensor([2])), ["a", "b", "c", "d"],
                    ["zero", "one", "two"], k=2)
    json.dumps(out)
    assert [e["descriptor"] for e in out["overall"]][:2] == ["b", "c"] and out["overall"][0]["score"] < 0
    assert out["by_pair"][0]["source"] == "zero" and out["by_pair"][0]["target"] == "two"


def _worker(rank, port, s, d, src, tgt, out_path):
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=2)
    m = GlobalAttribution(4, 3)
    m.update(s[rank::2], d[rank::2], src[rank::2], tgt[rank::2])
    r = m.compute()
    if rank == 0:
        torch.save({k: v for k, v in r.items()}, out_path)
    dist.destroy_process_group()


@pytest.mark.timeout(120)
def test_ddp_reduction_equals_single_process(tmp_path):
    torch.manual_seed(1)
    s, d = torch.rand(9, 4) * 2 - 1, torch.where(torch.rand(9) > 0.5, 1, -1)
    src, tgt = torch.randint(0, 3, (9,)), torch.randint(0, 3, (9,))
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    mp.spawn(_worker, args=(port, s, d, src, tgt, str(tmp_path / "r.pt")), nprocs=2, join=True)
    two = torch.load(tmp_path / "r.pt")
    one = _metric(s, d, src, tgt)
    for key in ["overall", "by_target", "by_pair", "count"]:
        torch.testing.assert_close(two[key], one[key], equal_nan=True)
