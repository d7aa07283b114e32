"""AC-RE with ``stochastic=False`` (configs/explain/acre_squares.yaml's setting): when the inpainting pass
regenerates the whole image (γ ≤ 0, or a change mask that covers every pixel after dilation), the returned
image is the deterministic chain R_τ(pe) itself, so success on the final image agrees with the attack's.
Spec latent_and_regression.md §5.2 items 4 and 7."""
import pytest
import torch

from tests.methods.test_acre import images, method, mixed_targets, regressor

pytestmark = pytest.mark.usefixtures("one_thread")


def test_full_regeneration_returns_the_chain_of_the_pre_explanation():
    x, f, index = images(6), regressor(), torch.arange(6) + 40
    target = mixed_targets(f, x)
    m = method(stochastic=False, inpaint=0.0, max_iterations=15)
    out = m(x, target, f, index=index)
    assert bool((out.extras["inpaint_mask"] == 1).all())  # γ = 0: nothing is kept from x
    pe = out.extras["pre_explanation"]
    with torch.no_grad():
        chain = m.chain(pe, index, 0).clamp(0, 1)  # deterministic: the noise index does not matter
    torch.testing.assert_close(out.x_cf, chain, rtol=0, atol=1e-12)
    reached = out.extras["attack_reached"]
    assert 0 < int(reached.sum()) < 6, "the toy setting must have samples that reach and samples that do not"
    # a sample frozen when it reached keeps that iterate, so its final prediction is the one that reached
    # (the others' attack_pred is of the iterate before their last step)
    torch.testing.assert_close(out.pred_cf[reached], out.extras["attack_pred"][reached], rtol=0, atol=1e-12)
    assert bool(out.success[reached].all())


def test_stochastic_final_image_is_a_fresh_draw_not_the_attack_chain():
    """The contrast: with noise the inpainting pass draws new noise, so the final image (and its prediction,
    what success is judged on) differ from the attack's last chain output even when everything is regenerated."""
    x, f, index = images(6), regressor(), torch.arange(6) + 40
    m = method(stochastic=True, inpaint=0.0, max_iterations=15)
    out = m(x, mixed_targets(f, x), f, index=index)
    assert bool((out.extras["inpaint_mask"] == 1).all())
    assert not torch.allclose(out.pred_cf, out.extras["attack_pred"], rtol=0, atol=1e-6)
