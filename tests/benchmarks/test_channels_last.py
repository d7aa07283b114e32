"""benchmarks/channels_last.py: both layouts give the same outputs and gradients up to summation order, and a
run on one shipped network writes a results file with its provenance."""
import json

import pytest
import torch

from benchmarks import channels_last as B

pytestmark = pytest.mark.usefixtures("one_thread")


def test_measure_compares_the_two_layouts_of_one_network():
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Conv2d(2, 4, 3, padding=1), torch.nn.ReLU(), torch.nn.Conv2d(4, 3, 3),
                              torch.nn.Flatten()).eval().requires_grad_(False)
    x = torch.rand(5, 2, 6, 6)
    row = B.measure(net, lambda m, t: m(t), x, backward=True, repeats=2)
    assert set(row["ms"]) == {"default", "channels_last"} and row["speedup"] > 0
    assert row["max_rel_diff"]["output"] < 1e-5 and row["max_rel_diff"]["input_gradient"] < 1e-5
    assert net[2].weight.is_contiguous()  # the network measured is left in its layout (a copy is converted)
    out, g = B.one_pass(net, lambda m, t: m(t), x, backward=True)
    assert g.shape == x.shape and out.shape == (5, 48)
    assert B.one_pass(net, lambda m, t: m(t), x, backward=False)[1] is None
    forward_only = B.measure(net, lambda m, t: m(t), x, backward=False, repeats=1)
    assert forward_only["max_rel_diff"]["input_gradient"] is None


def test_run_on_a_shipped_network_records_provenance(tmp_path):
    out = tmp_path / "cl.json"
    B.main(["--networks", "mnist_vae", "--repeats", "1", "--out", str(out)])
    res = json.load(open(out))
    assert {"command", "git", "machine"} <= set(res) and "benchmarks/channels_last.py" in res["command"]
    (row,) = res["networks"]
    assert row["network"] == "mnist_vae" and row["input_shape"] == [256, 64]
    assert row["forward_backward"]["max_rel_diff"]["input_gradient"] < 1e-4


def test_unknown_network_is_refused():
    with pytest.raises(SystemExit):
        B.main(["--networks", "nope"])
