"""benchmarks/pgd_vs_torchattacks.py: agreement measures on constructed inputs, and a smoke run on a tiny
model (skipped without torchattacks, a benchmark-only dependency)."""
import math

import pytest
import torch

from benchmarks import pgd_vs_torchattacks as B
from cflight.methods import functional as Fn
from tests.methods.test_svce import TinyMLP


def test_loss_agreement_on_constructed_losses():
    a = torch.tensor([1.0, 2.0, -3.0, 0.0], dtype=torch.float64)
    # equal, within 1e-4 relative, off by 0.1, within the absolute floor
    b = torch.tensor([1.0, 2.0 + 1e-5, -3.1, 5e-7], dtype=torch.float64)
    out = B.loss_agreement(a, b)
    assert out["share_within_tol"] == 0.75
    assert math.isclose(out["max_abs_diff"], 0.1, rel_tol=1e-6)
    assert math.isclose(out["mean_abs_diff"], (1e-5 + 0.1 + 5e-7) / 4, rel_tol=1e-6)
    assert math.isclose(out["mean_diff_cflight_minus_peer"], (-1e-5 + 0.1 - 5e-7) / 4, rel_tol=1e-6)
    assert B.loss_agreement(a, a)["share_within_tol"] == 1.0 and B.loss_agreement(a, a)["max_abs_diff"] == 0
    with pytest.raises(ValueError, match="one shape"):
        B.loss_agreement(a, b[:3])


def test_success_rate_and_per_image_loss():
    labels = torch.tensor([0, 1, 2, 1])
    pred = torch.tensor([0, 2, 2, 0])
    assert B.success_rate(pred, labels, targeted=True) == 0.5
    assert B.success_rate(pred, labels, targeted=False) == 0.5
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Identity())
    x = torch.log(torch.tensor([[0.5, 0.25, 0.25], [0.1, 0.8, 0.1]])).reshape(2, 1, 1, 3)  # logits = log p
    loss, p = B.per_image_loss(model, x, torch.tensor([0, 1]), targeted=False)
    torch.testing.assert_close(loss, -torch.log(torch.tensor([0.5, 0.8])).double())
    assert torch.equal(p, torch.tensor([0, 1]))
    loss_t, _ = B.per_image_loss(model, x, torch.tensor([1, 2]), targeted=True)
    torch.testing.assert_close(loss_t, torch.log(torch.tensor([0.25, 0.1])).double())


def test_apgd_start_is_torchattacks_start_in_ball_and_box():
    x = torch.rand(3, 1, 6, 6)
    s = B.apgd_start(x, 0.3, seed=0)
    assert torch.equal(s, B.apgd_start(x, 0.3, seed=0))
    assert (s >= 0).all() and (s <= 1).all()
    assert (Fn.lp_norm(s - x, math.inf) <= 0.3 + 1e-6).all()


def test_smoke_run_on_a_tiny_model():
    pytest.importorskip("torchattacks")
    torch.manual_seed(0)
    x = torch.rand(4, 1, 6, 6)
    cases = (("pgd_linf_3", "linf", 0.1, 0.02, 3, False), ("pgd_l2_3_targeted", "l2", 0.5, 0.1, 3, True))
    rows = B.run_model("tiny", x, 1, torch.device("cpu"), cases=cases, apgd_steps=5,
                       load=lambda _: TinyMLP(dtype=torch.float32))
    assert [r["case"] for r in rows] == ["pgd_linf_3", "pgd_l2_3_targeted", "apgd_linf_5"]
    linf = rows[0]
    assert set(linf["timing"]) == {"torchattacks", "torchattacks_and_predict", "cflight_last", "cflight_best"}
    # PGD-3 from the image, the last iterate: 3 gradient steps on both sides (cflight: + 1 forward for aux)
    assert linf["evaluations_per_image"]["torchattacks"] == {"forward": 3.0, "backward": 3.0}
    # the same output as cflight's (the images and the model's output on them): one forward more
    assert linf["evaluations_per_image"]["torchattacks_and_predict"] == {"forward": 4.0, "backward": 3.0}
    assert linf["evaluations_per_image"]["cflight_last"] == {"forward": 4.0, "backward": 3.0}
    assert linf["evaluations_per_image"]["cflight_best"] == {"forward": 4.0, "backward": 3.0}
    assert linf["agreement_last_iterate"]["max_abs_diff"] < 1e-4  # the same algorithm on the same start
    assert rows[2]["evaluations_per_image"]["cflight"]["backward"] == 6.0  # x0 … x5
    for r in rows:
        assert all(t["images_per_s"] > 0 for t in r["timing"].values())
        assert set(r["speed_vs_torchattacks_same_output"]) == set(r["speed_vs_torchattacks"])
        assert set(r["extra_ms_per_step_vs_same_output"]) == set(r["speed_vs_torchattacks"])
    assert all(r["projection_ms_per_step"]["cflight_last"] > 0 for r in rows[:2])
    # the counterfactual's stopping rule runs on targeted cases only, beside (not in) the same-output ratios
    assert "early_stop_vs_torchattacks" not in linf and B.EARLY_STOP not in linf["timing"]
    early = rows[1]["early_stop_vs_torchattacks"]
    pair = {"torchattacks_and_predict", B.EARLY_STOP}
    assert set(early["success_rate"]) == set(early["mean_distance"]) == pair
    stopped = early["evaluations_per_image"][B.EARLY_STOP]
    assert stopped["forward"] <= 4.0 and stopped["backward"] <= 3.0  # never more than the full run
    assert early["speed_vs_torchattacks_same_images"] > 0
    assert B.EARLY_STOP not in rows[1]["speed_vs_torchattacks_same_output"]


def test_mean_distance_in_each_norm():
    x = torch.zeros(2, 1, 2, 2)
    adv = x.clone()
    adv[0, 0, 0, 0], adv[0, 0, 1, 1] = 0.3, -0.4  # image 0: l∞ 0.4, l2 0.5, l1 0.7; image 1 unchanged
    assert B.mean_distance(adv, x, "linf") == pytest.approx(0.2)
    assert B.mean_distance(adv, x, "l2") == pytest.approx(0.25)
    assert B.mean_distance(adv, x, "l1") == pytest.approx(0.35)


def test_early_stop_row_pairs_the_peer_and_the_stopped_run():
    row = {"success_rate": {"torchattacks_and_predict": 0.5, B.EARLY_STOP: 0.75, "cflight_last": 0.5},
           "mean_distance": {"torchattacks_and_predict": 2.0, B.EARLY_STOP: 1.0, "cflight_last": 2.0},
           "evaluations_per_image": {"torchattacks_and_predict": {"forward": 21.0, "backward": 20.0},
                                     B.EARLY_STOP: {"forward": 8.0, "backward": 7.0},
                                     "cflight_last": {"forward": 21.0, "backward": 20.0}}}
    meas = {"torchattacks_and_predict": {"wall": [2.0, 3.0, 2.2]}, B.EARLY_STOP: {"wall": [1.0, 1.1, 0.9]}}
    out = B.early_stop_row(row, meas)
    assert out["speed_vs_torchattacks_same_images"] == 2.2  # medians 2.2 / 1.0
    assert out["success_rate"] == {"torchattacks_and_predict": 0.5, B.EARLY_STOP: 0.75}
    assert out["evaluations_per_image"][B.EARLY_STOP] == {"forward": 8.0, "backward": 7.0}
    assert "not the same output" in out["note"]


def test_extra_ms_per_step_on_constructed_timings():
    meas = {"torchattacks_and_predict": {"wall": [1.0, 1.2, 5.0]}, "cflight_last": {"wall": [1.1, 1.4, 1.3]},
            "cflight_best": {"wall": [0.9, 1.0, 1.1]}}
    out = B.extra_ms_per_step(meas, ("cflight_last", "cflight_best"), steps=20)
    assert out == {"cflight_last": 5.0, "cflight_best": -10.0}  # medians 1.3 / 1.0 against 1.2, per step


def test_linear_model_is_seeded_and_classifies_mnist_shapes():
    a, b = B.linear_model(), B.linear_model()
    x = torch.rand(3, 1, 28, 28)
    assert torch.equal(a(x), b(x)) and a(x).shape == (3, 10)
    assert not torch.equal(a(x), B.linear_model(seed=1)(x))


def test_timed_runs_interleave_and_rotate_the_order():
    calls = []
    runners = {k: (lambda k=k: calls.append(k) or torch.zeros(1)) for k in "abc"}
    meas, outs = B.timed_runs(runners, 4, torch.device("cpu"))
    assert calls == list("abc" "bca" "cab" "abc")
    assert all(len(v["wall"]) == 4 for v in meas.values()) and set(outs) == set("abc")


def test_projection_ms_per_step_times_the_projection_alone_and_restores_it(monkeypatch):
    import time

    from cflight.methods import functional as Fn

    monkeypatch.setattr(Fn.BallBox, "project", lambda self, z: (time.sleep(0.01), z)[1])  # 10 ms a projection
    before = Fn.BallBox.project
    ball = Fn.BallBox(torch.zeros(2, 3), 0.1, "linf")

    def attack():
        for _ in range(4):  # 4 steps, each one projection, and other work beside it
            ball.project(torch.zeros(2, 3))
            time.sleep(0.03)
        return torch.zeros(1)

    ms = B.projection_ms_per_step(attack, steps=4, calls=2)
    assert 9.5 <= ms < 30  # the projection's 10 ms a step, not the other 30 ms (all of it would be >= 40)
    assert Fn.BallBox.project is before  # restored


class TinyConvNet(torch.nn.Module):
    """Two convolutions on 1×6×6 images (the second's weights differ between the layouts), a linear head."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        nn = torch.nn
        self.net = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.Conv2d(4, 4, 3, padding=1),
                                 nn.ReLU(), nn.Flatten(), nn.Linear(144, 3))

    def forward(self, x):
        return self.net(x)


def test_channels_last_variants_on_a_conv_model():
    pytest.importorskip("torchattacks")
    x = torch.rand(4, 1, 6, 6)
    assert B.channels_last_copy(TinyMLP(dtype=torch.float32)) is None  # no 4-D weights: no layout variants
    model = TinyConvNet()
    cl = B.channels_last_copy(model)
    assert cl is not model and cl.net[2].weight.is_contiguous(memory_format=torch.channels_last)
    assert model.net[2].weight.is_contiguous()  # the model as loaded is left as it is
    cases = (("pgd_l2_3", "l2", 0.5, 0.1, 3, False),)
    rows = B.run_model("tiny", x, 1, torch.device("cpu"), cases=cases, apgd_steps=4, load=lambda _: model)
    pgd, apgd = rows
    ours = "cflight_last" + B.CL
    assert {B.PEER_CL, ours} <= set(pgd["timing"]) and {B.PEER_CL, "cflight" + B.CL} <= set(apgd["timing"])
    assert set(pgd["speed_same_layout"]) == {ours} and ours in pgd["speed_vs_torchattacks_same_output"]
    assert set(pgd["channels_last_speedup"]) == {"torchattacks_and_predict", "cflight_last"}
    assert set(apgd["channels_last_speedup"]) == {"torchattacks_and_predict", "cflight"}
    # the same algorithm, the same evaluations, summation order only
    assert pgd["evaluations_per_image"][ours] == pgd["evaluations_per_image"]["cflight_last"]
    assert pgd["evaluations_per_image"][B.PEER_CL] == pgd["evaluations_per_image"]["torchattacks_and_predict"]
    assert pgd["agreement_channels_last"]["max_abs_diff"] < 1e-5
    assert apgd["agreement_channels_last"]["max_abs_diff"] < 1e-5
