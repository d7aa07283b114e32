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
