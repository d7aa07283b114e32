"""EvaluationCounter counts exactly the forwards/backwards of tiny networks."""
from __future__ import annotations

import pytest
import torch
from torch import nn

from cflight.metrics import EvaluationCounter


def _chain(params_grad: bool) -> tuple[nn.Module, nn.Module]:
    enc, head = nn.Linear(4, 3), nn.Linear(3, 2)
    return enc.requires_grad_(params_grad), head.requires_grad_(params_grad)


@pytest.mark.parametrize("case", ["input_grad", "param_grad"])
def test_three_forwards_two_backwards_of_a_chain(case: str) -> None:
    # the counterfactual case: frozen networks, only the image requires grad; and training: only parameters do
    enc, head = _chain(params_grad=case == "param_grad")
    x = torch.rand(5, 4, requires_grad=case == "input_grad")
    counter = EvaluationCounter({"enc": enc, "head": head})
    with counter:
        for i in range(3):
            out = head(enc(x))
            if i < 2:
                out.sum().backward()
    for name in ("enc", "head"):
        c = counter.counts[name]
        assert (c.forward_calls, c.forward_samples, c.backward_calls, c.backward_samples) == (3, 15, 2, 10)
    s = counter.summary(num_images=5)
    assert s["evaluations_per_image"]["enc"] == {"forward": 3.0, "backward": 2.0}
    assert s["calls"]["head"] == {"forward": 3, "backward": 2}
    assert s["seconds"] >= 0 and s["seconds_per_image"] == s["seconds"] / 5 and s["peak_memory_mb"] > 0


class _TwoOut(nn.Module):
    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return x * 2, x * 3


def test_partial_graphs_no_grad_and_multiple_outputs() -> None:
    enc, head = _chain(params_grad=False)
    two = _TwoOut()
    x = torch.rand(2, 4, requires_grad=True)
    counter = EvaluationCounter({"enc": enc, "head": head, "two": two})
    with counter:
        z = enc(x)
        head(z)  # forward only: its output never gets a gradient
        a, b = two(z)
        (z.sum() + a.sum() + b.sum()).backward()  # one backward through `two`, however many outputs
        with torch.no_grad():
            head(enc(x))
    assert counter.counts["enc"].backward_calls == 1 and counter.counts["enc"].forward_calls == 2
    assert counter.counts["head"].backward_calls == 0 and counter.counts["head"].forward_calls == 2
    assert counter.counts["two"].backward_calls == 1
    enc(x)  # outside the block: not counted, hooks removed
    assert counter.counts["enc"].forward_calls == 2
    with counter:  # re-entering accumulates
        enc(x)
    assert counter.counts["enc"].forward_samples == 6
    counter.reset()
    assert counter.counts["enc"].forward_calls == 0


class _Generator(nn.Module):
    """A generator evaluated through ``decode`` (never ``forward``), whose ``forward`` calls ``decode``."""

    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(2, 4)

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        return self.fc(z)

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        return x[:, :2]

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.decode(z)


def test_decode_and_encode_count_and_nested_calls_count_once() -> None:
    gen, head = _Generator().requires_grad_(False), nn.Linear(4, 2).requires_grad_(False)
    z = torch.rand(3, 2, requires_grad=True)
    counter = EvaluationCounter({"gen": gen, "head": head})
    with counter:
        head(gen.decode(z)).sum().backward()  # one forward + backward through decode
        gen(z)  # forward → decode: one evaluation, not two
        gen.encode(torch.rand(3, 4))
    c = counter.counts["gen"]
    assert (c.forward_calls, c.forward_samples, c.backward_calls) == (3, 9, 1)
    assert "decode" not in gen.__dict__ and "forward" not in gen.__dict__  # the class's methods are back
    gen.decode(z)
    assert counter.counts["gen"].forward_calls == 3


def test_find_networks_lists_a_wrappers_networks_and_skips_parameterless_modules() -> None:
    from cflight.metrics.cost import find_networks

    class Classifier(nn.Module):
        num_classes = 2

        def __init__(self) -> None:
            super().__init__()
            self.fc = nn.Linear(4, 2)

    class Projection(nn.Module):  # a wrapper of two networks (GAN projection: the GAN and a feature net)
        def __init__(self) -> None:
            super().__init__()
            self.gan, self.features = _Generator(), Classifier()

    class Method(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.generator = Projection()
            self.denoiser = nn.Sequential(nn.Linear(4, 4), nn.Linear(4, 4))  # no network inside: one network
            self.schedule = nn.Module()  # no parameters
            self.schedule.register_buffer("betas", torch.ones(3))

    nets = find_networks(Method())
    assert sorted(nets) == ["denoiser", "generator.features", "generator.gan"]


def test_peak_memory_is_measured_per_block_where_linux_allows() -> None:
    from cflight.metrics.cost import _reset_rss_peak, _rss_peak_mb

    if not _reset_rss_peak():
        pytest.skip("no /proc/self/clear_refs: the peak counts from the process's start here")
    big = torch.ones(40_000_000)  # 160 MB resident (a large block: mmap-ed, returned to the OS when freed)
    big.add_(1)
    del big
    before = _rss_peak_mb()  # includes the 160 MB
    counter = EvaluationCounter({"enc": nn.Linear(2, 2)})
    with counter:
        nn.Linear(2, 2)(torch.rand(1, 2))
    assert counter.memory_source == "process_peak_rss_in_blocks"
    assert 0 < counter.peak_memory_mb < before - 100  # the earlier allocation is not this block's peak
