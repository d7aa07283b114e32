"""Shard files and streaming assembly: durable, compact, checksummed, read back in index order."""
import os

import pytest
import torch

import cflight.lit.shards as S
from cflight.lit.assembly import make_plan, rows_in_index_order
from cflight.lit.fingerprint import differences, fingerprint, settings


def _rows(index, size=4):
    index = torch.as_tensor(index)
    g = torch.Generator().manual_seed(int(index[0]))
    return {"index": index, "image": torch.rand(len(index), 1, size, size, generator=g),
            "x_cf": torch.rand(len(index), 1, size, size, generator=g), "l1": torch.rand(len(index), generator=g),
            "threshold": torch.tensor(0.5).expand(len(index))}  # a stride-0 column, as ExplainModule makes


def test_images_round_trip_as_uint8_within_quantisation_and_float32_exactly(tmp_path):
    rows = _rows([3, 1, 2])
    S.write_shard(str(tmp_path / "a.pt"), rows, "fp")
    S.write_shard(str(tmp_path / "b.pt"), rows, "fp", image_dtype=torch.float32)
    a, b = S.read_rows(str(tmp_path / "a.pt")), S.read_rows(str(tmp_path / "b.pt"))
    assert a["image"].dtype == torch.float32 and (a["image"] - rows["image"]).abs().max() <= 0.5 / 255 + 1e-7
    assert torch.equal(a["l1"], rows["l1"]) and torch.equal(b["x_cf"], rows["x_cf"])
    assert (tmp_path / "a.pt").stat().st_size < (tmp_path / "b.pt").stat().st_size


def test_every_write_is_fsynced_and_leaves_no_temp(tmp_path, monkeypatch):
    synced = []
    real = os.fsync
    monkeypatch.setattr(S.os, "fsync", lambda fd: (synced.append(fd), real(fd)))
    S.write_shard(str(tmp_path / "a.pt"), _rows([0, 1]), "fp", suffix=".0")
    assert len(synced) == 2  # the file, then its directory (the rename)
    assert os.listdir(tmp_path) == ["a.pt"]


@pytest.mark.parametrize("damage", ["truncate", "empty", "garbage", "flip", "old_format"])
def test_damaged_shards_are_detected(tmp_path, damage):
    path = tmp_path / "s.pt"
    S.write_shard(str(path), _rows([0, 1, 2]), "fp")
    data = bytearray(path.read_bytes())
    if damage == "truncate":
        path.write_bytes(bytes(data[: len(data) // 2]))
    elif damage == "empty":
        path.write_bytes(b"")
    elif damage == "garbage":
        path.write_bytes(os.urandom(len(data)))
    elif damage == "flip":
        stored = S.read_rows(str(path), ["l1"])["l1"].numpy().tobytes()
        data[bytes(data).find(stored)] ^= 0x01
        path.write_bytes(bytes(data))
    else:
        torch.save({"index": torch.arange(3)}, path)  # a shard of the previous format
    with pytest.raises(S.CorruptShard, match="s.pt"):
        S.verify(str(path))


def test_rows_come_in_index_order_holding_only_overlapping_shards(tmp_path):
    # two ranks' interleaved shards (DistributedSampler), in 6 batches of 4
    for rank in (0, 1):
        for b in range(3):
            idx = torch.arange(rank + 8 * b, 8 * (b + 1), 2)
            S.write_shard(str(tmp_path / S.shard_name(idx)), _rows(idx), "fp")
    plan = make_plan([S.read_info(p) for p in S.shard_paths(str(tmp_path))])
    open_now, most = set(), 0

    def load(i):
        nonlocal most
        open_now.add(i)
        most = max(most, len(open_now))
        return [(int(k) // S.SLOTS, i) for k in plan.kept_keys[i]]

    out = []
    for idx, shard in rows_in_index_order(plan, load):
        out.append(idx)
        if all(k // S.SLOTS <= idx for k in plan.kept_keys[shard].tolist()):
            open_now.discard(shard)  # the last row of its shard was released
    assert out == list(range(24))
    assert most <= 3  # never all six shards at once


def test_duplicate_index_counts_once_in_the_first_shard_and_unreadable_are_kept(tmp_path):
    S.write_shard(str(tmp_path / S.shard_name(torch.tensor([0, 1]))), _rows([0, 1]), "fp")
    S.write_shard(str(tmp_path / S.shard_name(torch.tensor([1, 2, 7]))), _rows([1, 2]), "fp",
                  unreadable=torch.tensor([7]))
    plan = make_plan([S.read_info(p) for p in S.shard_paths(str(tmp_path))])
    assert (plan.keys() // S.SLOTS).tolist() == [0, 1, 2] and plan.unreadable.tolist() == [7]


def test_fingerprint_sees_hyper_parameters_not_counters():
    class Method(torch.nn.Module):
        def __init__(self, lr=0.1, steps=10):
            super().__init__()
            self.lr, self.steps, self.calls = lr, steps, 0
            self.net = torch.nn.Linear(2, 2)

    a, b = Method(), Method(lr=0.2)
    a_before = settings(a)
    a.calls = 5
    assert settings(a) == a_before and fingerprint(settings(a)) != fingerprint(settings(b))
    assert differences({"s": settings(a)}, {"s": settings(b)}) == ["s.lr: 0.1 → 0.2"]


def test_fingerprint_covers_the_target_policy_and_skips_speed_options():
    from cflight.lit import ExplainModule
    from cflight.methods import LatentAttack
    from cflight.targets import SecondMostLikely
    from tests.helpers import LinearClassifier, LinearDecoder

    def job(threshold=0.5, max_batch_size=None):
        return settings(ExplainModule(LatentAttack(LinearDecoder(), max_batch_size=max_batch_size),
                                      LinearClassifier(), target_policy=SecondMostLikely(threshold)))

    assert job()["target_policy.threshold"] == 0.5
    assert fingerprint(job()) != fingerprint(job(threshold=0.7))
    assert fingerprint(job()) == fingerprint(job(max_batch_size=2))  # chunking does not change results
