"""cflight.rng: Philox4x32-10 known answers, the documented counter layout, statistics, per-sample
independence of the batch, stream/step separation, 64-bit seeds and indices, and the device of every op."""
import math

import pytest
import torch
from scipy import stats
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten

from cflight import rng
from cflight.rng import Stream, per_sample_normal, per_sample_randint, per_sample_uniform, philox4x32

M32 = 0xFFFFFFFF

# Random123's kat_vectors for philox4x32_10: (counter, key, output).
KAT = [
    ((0, 0, 0, 0), (0, 0), (0x6627E8D5, 0xE169C58D, 0xBC57AC4C, 0x9B00DBD8)),
    ((M32,) * 4, (M32,) * 2, (0x408F276D, 0x41C83B0E, 0xA20BC7C6, 0x6D5451FD)),
    ((0x243F6A88, 0x85A308D3, 0x13198A2E, 0x03707344), (0xA4093822, 0x299F31D0),
     (0xD16CFE09, 0x94FDCCEB, 0x5001E420, 0x24126EA1)),
]


def philox_reference(ctr, key, rounds=10):
    """Scalar Philox4x32 with Python's unbounded ints, straight from the paper / Random123's philox.h."""
    c, (k0, k1) = list(ctr), key
    for r in range(rounds):
        if r:
            k0, k1 = (k0 + 0x9E3779B9) & M32, (k1 + 0xBB67AE85) & M32
        p0, p1 = 0xD2511F53 * c[0], 0xCD9E8D57 * c[2]
        c = [(p1 >> 32) ^ c[1] ^ k0, p1 & M32, (p0 >> 32) ^ c[3] ^ k1, p0 & M32]
    return tuple(c)


def normal_reference(seed, stream, index, step, e):
    """Element ``e`` of a row as the module docstring lays it out: block e // 2, Box–Muller."""
    idx = index % 2**64
    w = philox_reference((e // 2, stream << 24 | step, idx & M32, idx >> 32), (seed & M32, seed >> 32))
    u1 = (((w[0] << 21) | (w[1] >> 11)) + 1) * 2.0**-53
    u2 = (((w[2] << 21) | (w[3] >> 11)) + 1) * 2.0**-53
    trig = math.cos if e % 2 == 0 else math.sin
    return math.sqrt(-2 * math.log(u1)) * trig(2 * math.pi * u2)


@pytest.mark.parametrize("ctr, key, expected", KAT)
def test_known_answers(ctr, key, expected):
    assert philox_reference(ctr, key) == expected
    out = philox4x32(tuple(torch.tensor([c]) for c in ctr), key)
    assert tuple(int(w) for w in out) == expected


def test_vectorised_philox_matches_the_scalar_reference_on_random_words():
    g = torch.Generator().manual_seed(0)
    ctr = torch.randint(0, 2**32, (4, 64), generator=g, dtype=torch.int64)
    for col, word in enumerate((0, M32, 2**31, 2**16 - 1, 2**16)):  # carries at the 16/32-bit edges
        ctr[:, col] = word
    keys = [(0, 0), (M32, 1), (0x12345678, 0x9ABCDEF0)]
    for key in keys:
        for rounds in (1, 7, 10):
            out = torch.stack(philox4x32(tuple(ctr), key, rounds))
            ref = [philox_reference(tuple(int(c) for c in col), key, rounds) for col in ctr.T]
            assert out.T.tolist() == [list(r) for r in ref]


def test_normals_follow_the_documented_counter_layout():
    seed, stream, step, index = 2**40 + 12345, int(Stream.DIFFUSION_STEP), 199, [7, 2**33 + 1, -1]
    z = per_sample_normal((5,), seed, torch.tensor(index), stream=stream, step=step, dtype=torch.float64)
    ref = torch.tensor([[normal_reference(seed, stream, i, step, e) for e in range(5)] for i in index],
                       dtype=torch.float64)
    torch.testing.assert_close(z, ref, rtol=1e-13, atol=1e-13)


def test_normal_and_uniform_statistics():
    z = per_sample_normal((4000,), 3, torch.arange(50), dtype=torch.float64).flatten()
    n = z.numel()
    assert abs(float(z.mean())) < 4 / math.sqrt(n)
    assert abs(float(z.var()) - 1) < 4 * math.sqrt(2 / n)
    assert stats.kstest(z.numpy(), "norm").pvalue > 1e-3
    u = per_sample_uniform((4000,), 3, torch.arange(50), dtype=torch.float64).flatten()
    assert float(u.min()) > 0 and float(u.max()) <= 1
    assert stats.kstest(u.numpy(), "uniform").pvalue > 1e-3
    # rows (consecutive indices) are not correlated with each other
    rows = per_sample_normal((2000,), 3, torch.arange(2), dtype=torch.float64)
    assert abs(float(torch.corrcoef(rows)[0, 1])) < 4 / math.sqrt(2000)


def test_float32_path_without_float64(monkeypatch):
    monkeypatch.setattr(rng, "_has_float64", lambda device: False)  # as on mps
    z = per_sample_normal((4001,), 5, torch.arange(20))
    assert z.dtype == torch.float32 and z.shape == (20, 4001)
    assert stats.kstest(z.flatten().double().numpy(), "norm").pvalue > 1e-3
    u = per_sample_uniform((7,), 5, torch.arange(20))
    assert float(u.min()) > 0 and float(u.max()) <= 1


def test_randint_is_uniform_over_its_range_and_per_sample():
    t = per_sample_randint(7, (3000,), 2, torch.arange(4))
    assert t.dtype == torch.int64 and t.shape == (4, 3000)
    counts = torch.bincount(t.flatten(), minlength=7)
    assert counts.numel() == 7 and stats.chisquare(counts.numpy()).pvalue > 1e-3
    assert torch.equal(per_sample_randint(7, (3000,), 2, torch.tensor([3]))[0], t[3])
    assert (per_sample_randint(1, (5,), 0, torch.arange(2)) == 0).all()
    with pytest.raises(ValueError, match="high"):
        per_sample_randint(0, (), 0, torch.arange(2))


def test_rows_depend_only_on_their_own_index():
    big = 2**40 + 3
    a = per_sample_normal((3, 5), 1, torch.tensor([5, 9, big]))
    b = per_sample_normal((3, 5), 1, torch.tensor([big, 7, 5, 9]))
    one = per_sample_normal((3, 5), 1, torch.tensor([big]))
    assert torch.equal(a[0], b[2]) and torch.equal(a[1], b[3]) and torch.equal(a[2], b[0])
    assert torch.equal(one[0], a[2])
    assert a.shape == (3, 3, 5) and not torch.equal(a[0], a[1])


def test_indices_beyond_32_bits_are_distinct():
    idx = torch.tensor([3, 3 + 2**32, 3 + 2**40, 2**63 - 1, -1])
    z = per_sample_normal((8,), 0, idx)
    assert len({tuple(r.tolist()) for r in z}) == 5


def test_seed_bits_above_32_matter():
    idx = torch.arange(4)
    draws = [per_sample_normal((8,), s, idx) for s in (5, 5 + 2**32, 5 + 2**40, 5 + 2**63)]
    for i in range(len(draws)):
        for j in range(i):
            assert not torch.equal(draws[i], draws[j])


def test_streams_and_steps_are_separate_sequences():
    idx = torch.arange(3)
    keys = [(0, 0), (1, 0), (0, 1), (1, 1), (0, 2**24 - 1), (255, 0), (2, 3)]
    draws = {k: per_sample_normal((16,), 9, idx, stream=k[0], step=k[1]) for k in keys}
    flat = {k: tuple(v.flatten().tolist()) for k, v in draws.items()}
    assert len(set(flat.values())) == len(keys)
    # the same (stream, step) again gives the same numbers
    assert torch.equal(draws[(2, 3)], per_sample_normal((16,), 9, idx, stream=2, step=3))


def test_shapes_dtypes_and_empty_batches():
    idx = torch.tensor([4, 1])
    assert per_sample_normal((), 0, idx).shape == (2,)
    assert per_sample_normal((3,), 0, torch.tensor([], dtype=torch.long)).shape == (0, 3)
    assert per_sample_normal((0, 2), 0, idx).shape == (2, 0, 2)
    z64 = per_sample_normal((3, 3), 0, idx, dtype=torch.float64)
    assert torch.equal(per_sample_normal((3, 3), 0, idx, dtype=torch.float32), z64.float())
    assert per_sample_uniform((2,), 0, idx, dtype=torch.bfloat16).dtype == torch.bfloat16
    assert per_sample_normal((2,), 0, idx.to(torch.int32)).shape == (2, 2)


@pytest.mark.parametrize("kwargs, err, match", [
    ({"seed": -1}, ValueError, "seed"), ({"seed": 2**64}, ValueError, "seed"),
    ({"stream": 256}, ValueError, "stream"), ({"step": 2**24}, ValueError, "step"),
    ({"step": -1}, ValueError, "step"),
    ({"index": torch.tensor([1.0])}, TypeError, "index"), ({"dtype": torch.int64}, TypeError, "dtype"),
])
def test_out_of_range_arguments(kwargs, err, match):
    args = {"seed": 0, "index": torch.tensor([1]), **kwargs}
    with pytest.raises(err, match=match):
        per_sample_normal((2,), args.pop("seed"), args.pop("index"), **args)


class DeviceRecorder(TorchDispatchMode):
    """Records the device of every tensor any aten op receives or returns (factories included)."""

    def __init__(self) -> None:
        super().__init__()
        self.devices: list[tuple[str, torch.device]] = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for t in tree_flatten((args, kwargs, out))[0]:
            if isinstance(t, torch.Tensor):
                self.devices.append((str(func), t.device))
        return out


@pytest.mark.parametrize("fn", [per_sample_normal, per_sample_uniform])
def test_no_cpu_tensor_when_generating_elsewhere(fn):
    idx = torch.tensor([3, 2**40]).to("meta")
    with DeviceRecorder() as rec:
        out = fn((3, 5), 2**40 + 1, idx, stream=2, step=9, dtype=torch.float16)
    assert out.device.type == "meta" and out.shape == (2, 3, 5) and out.dtype == torch.float16
    assert rec.devices and all(d.type == "meta" for _, d in rec.devices), \
        sorted({f for f, d in rec.devices if d.type != "meta"})
    # the recorder does see CPU work: generating on the CPU is recorded as such
    with DeviceRecorder() as rec:
        fn((3,), 0, torch.arange(2))
    assert any(d.type == "cpu" for _, d in rec.devices)


def test_output_device_follows_the_index_or_the_argument():
    assert per_sample_normal((2,), 0, torch.arange(2).to("meta")).device.type == "meta"
    assert per_sample_normal((2,), 0, torch.arange(2), device="meta").device.type == "meta"


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_matches_cpu():
    idx = torch.tensor([0, 17, 2**40 + 5])
    cpu = per_sample_normal((3, 33), 2**50 + 1, idx, stream=4, step=3, dtype=torch.float64)
    gpu = per_sample_normal((3, 33), 2**50 + 1, idx.cuda(), stream=4, step=3, dtype=torch.float64)
    assert gpu.device.type == "cuda"
    torch.testing.assert_close(gpu.cpu(), cpu, rtol=1e-12, atol=1e-12)
    u = per_sample_uniform((9,), 1, idx.cuda())
    assert torch.equal(u.cpu(), per_sample_uniform((9,), 1, idx))
