"""InterFaceGAN closed form (spec §5.1 item 9)."""
import pytest
import torch
from torch import nn

from cflight.methods import InterFaceGANEdit
from cflight.methods.interfacegan import closed_form_step
from cflight.types import ClassTarget
from tests.helpers import LinearClassifier, LinearDecoder, images


def test_closed_form_reaches_p_star_along_beta():
    torch.manual_seed(0)
    w, beta, b = torch.randn(5, 8, dtype=torch.float64), torch.randn(5, 8, dtype=torch.float64), torch.randn(5, dtype=torch.float64)
    p_star = torch.tensor([0.75, 0.25, 0.9, 0.1, 0.5], dtype=torch.float64)
    w2 = closed_form_step(w, beta, b, p_star)
    torch.testing.assert_close(torch.sigmoid((w2 * beta).sum(1) + b), p_star, atol=1e-6, rtol=0)
    delta = w2 - w
    cos = (delta * beta).sum(1).abs() / (delta.norm(dim=1) * beta.norm(dim=1))
    torch.testing.assert_close(cos, torch.ones(5, dtype=torch.float64))


@pytest.mark.parametrize("classes", [3, 1])
def test_method_moves_latent_to_head_probability(classes):
    gen = LinearDecoder(latent_dim=4)
    head = nn.Linear(4, classes)
    x = images(4)
    if classes == 1:
        target = ClassTarget(torch.ones(4, dtype=torch.long), torch.tensor([0.75, 0.25, 0.75, 0.25]), torch.tensor([1, -1, 1, -1]))
    else:
        target = ClassTarget(torch.tensor([0, 1, 2, 0]), 0.75)
    out = InterFaceGANEdit(gen, head)(x, target, LinearClassifier(num_classes=max(classes, 2)))
    z = out.latent
    if classes == 1:
        p = torch.sigmoid(head(z))[:, 0]
        torch.testing.assert_close(p, torch.tensor([0.75, 0.25, 0.75, 0.25]), atol=1e-5, rtol=0)
    else:
        p = torch.sigmoid(head(z)).gather(1, target.classes[:, None])[:, 0]
        torch.testing.assert_close(p, torch.full((4,), 0.75), atol=1e-5, rtol=0)
    torch.testing.assert_close(out.x_cf, gen.decode(z), atol=1e-6, rtol=0)


def test_invalid_margin():
    with pytest.raises(ValueError, match="margin"):
        InterFaceGANEdit(LinearDecoder(), nn.Linear(4, 1), margin=0.7)
