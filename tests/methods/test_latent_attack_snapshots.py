"""LatentAttack's progression snapshots and reconstruction (the paper's MNIST progression figure, spec §1.7)."""
import pytest
import torch

from cflight.methods import LatentAttack
from cflight.methods.latent_attack import snapshot_padding
from cflight.types import ClassTarget
from cflight.viz.progression import columns_to_show, progression_from_output, progression_strip
from tests.helpers import LinearClassifier, LinearDecoder, images


@pytest.fixture
def setup():
    torch.manual_seed(0)
    return LinearDecoder(), LinearClassifier(num_classes=3), images(6)


def _target(n=6, thr=0.9):
    return ClassTarget(torch.tensor([0, 1, 2, 0, 1, 2][:n]), thr)


def test_snapshots_are_the_iterates_every_k_steps(setup):
    gen, clf, x = setup
    out = LatentAttack(gen, lr=0.05, max_steps=40, snapshot_every=10)(x, _target(), clf)
    snaps, steps, lat = out.extras["snapshots"], out.extras["snapshot_steps"], out.extras["snapshot_latents"]
    assert snaps.shape == (6, 5, *x.shape[1:]) and steps.shape == (6, 5) and lat.shape == (6, 5, 4)
    torch.testing.assert_close(snaps[:, 0], out.extras["reconstruction"])
    torch.testing.assert_close(snaps[:, -1], out.x_cf)  # the last slot (step 40 or padding) is the result
    torch.testing.assert_close(lat[:, 0], out.extras["latent0"])
    grid = torch.arange(5) * 10
    assert torch.equal(steps, torch.minimum(grid[None], out.steps[:, None]))
    # slot s is exactly the counterfactual a run stopped after s·k steps returns, for samples still running
    for s in (1, 2):
        short = LatentAttack(gen, lr=0.05, max_steps=10 * s)(x, _target(), clf)
        running = out.steps >= 10 * s
        torch.testing.assert_close(snaps[running, s], short.x_cf[running])


def test_snapshots_pad_a_stopped_sample_with_its_result(setup):
    gen, clf, x = setup
    out = LatentAttack(gen, lr=0.05, max_steps=60, snapshot_every=5)(x, _target(thr=0.5), clf)
    assert bool((out.steps < 60).any())  # some sample stopped early
    for b in range(6):
        after = torch.arange(13) * 5 > out.steps[b]
        assert torch.equal(out.extras["snapshots"][b, after], out.x_cf[b].expand(int(after.sum()), *x.shape[1:]))
        assert (out.extras["snapshot_steps"][b, after] == out.steps[b]).all()


def test_snapshots_do_not_depend_on_batch_composition(setup):
    gen, clf, x = setup
    whole = LatentAttack(gen, lr=0.05, max_steps=30, snapshot_every=10)(x, _target(), clf)
    chunked = LatentAttack(gen, lr=0.05, max_steps=30, snapshot_every=10, max_batch_size=2)(x, _target(), clf)
    for key in ("snapshots", "snapshot_steps", "snapshot_latents"):
        torch.testing.assert_close(chunked.extras[key], whole.extras[key])
    assert "snapshots" not in LatentAttack(gen, max_steps=5)(x, _target(), clf).extras  # off by default
    with pytest.raises(ValueError, match="snapshot_every"):
        LatentAttack(gen, snapshot_every=-1)


def test_snapshot_padding_math():
    snaps, z = torch.zeros(2, 3, 1, 2, 2), torch.zeros(2, 3, 4)
    x_final, z_final = torch.ones(2, 1, 2, 2), torch.ones(2, 4)
    out = snapshot_padding(snaps, z, x_final, z_final, torch.tensor([0, 4]), every=2)
    assert out["snapshots"][0, 1:].eq(1).all() and out["snapshots"][0, 0].eq(0).all()  # stopped at 0
    assert out["snapshots"][1].eq(0).all()  # ran through slot 2 (step 4)
    assert out["snapshot_steps"].tolist() == [[0, 0, 0], [0, 2, 4]]


def test_reconstruct_matches_run_and_caches_latents(setup):
    gen, clf, x = setup
    method = LatentAttack(gen, max_steps=0)
    index = torch.arange(10, 16)
    recon = method.reconstruct(x, index)
    calls = []
    original = method.initial_latent
    method.initial_latent = lambda *a: calls.append(1) or original(*a)
    out = method(x[2:], ClassTarget(torch.zeros(4, dtype=torch.long), 0.9), clf, index=index[2:])
    assert not calls  # reused the latents reconstruct() computed for these images
    torch.testing.assert_close(out.extras["reconstruction"], recon[2:])
    assert method._z0_cache is None  # one batch only
    method.reconstruct(x, index)
    method(x.flip(0), ClassTarget(torch.zeros(6, dtype=torch.long), 0.9), clf, index=index)
    assert calls  # other images under the same indices: encoded afresh


def test_progression_strip_renders(tmp_path, setup):
    gen, clf, x = setup
    out = LatentAttack(gen, lr=0.05, max_steps=40, snapshot_every=5)(x, _target(), clf)
    grid = progression_from_output(out.extras, str(tmp_path / "p.png"), captions=["0→0"] * 6, max_images=3,
                                   max_columns=4, cell=16)
    assert grid.shape == (3 * (16 + 14), 5 * 16, 3) and grid.dtype.name == "uint8"
    assert (tmp_path / "p.png").stat().st_size > 0
    assert columns_to_show(9, 4) == [0, 3, 5, 8] and columns_to_show(3, None) == [0, 1, 2]
    with pytest.raises(ValueError, match="snapshot_every"):
        progression_from_output({})
    with pytest.raises(ValueError, match=r"\[N, S, C, H, W\]"):
        progression_strip(torch.zeros(2, 1, 4, 4))
