"""MethodComparison: every method on the same inputs, primary first, per-method chunking, bad arguments."""
import pytest
import torch

from cflight.methods import LatentAttack, MethodComparison
from cflight.types import ClassTarget, CounterfactualOutput
from tests.helpers import LinearClassifier, LinearDecoder, images
from tests.toy_methods import ScaleMethod


def _target(n):
    return ClassTarget(torch.ones(n, dtype=torch.long), 0.5)


def test_primary_fills_the_output_and_others_are_comparisons():
    x, model = images(5), LinearClassifier(num_classes=3)
    cmp = MethodComparison({"same": ScaleMethod(1.0), "half": ScaleMethod(0.5)}, primary="half")
    out = cmp(x, _target(5), model)
    assert cmp.names == ["half", "same"]
    torch.testing.assert_close(out.x_cf, 0.5 * x)
    assert list(out.comparisons) == ["same"]
    torch.testing.assert_close(out.comparisons["same"].x_cf, x)
    assert out.comparisons["same"].comparisons == {}


def test_each_method_equals_its_own_run_and_keeps_its_chunking():
    x, model = images(7), LinearClassifier(num_classes=3)
    chunked = ScaleMethod(0.5, max_batch_size=3)
    attack = LatentAttack(LinearDecoder(), lr=0.05, max_steps=30, seed=2)
    cmp = MethodComparison({"attack": attack, "scale": chunked})  # primary defaults to the first
    out = cmp(x, _target(7), model, index=torch.arange(10, 17))
    alone = LatentAttack(LinearDecoder(), lr=0.05, max_steps=30, seed=2)
    alone = alone(x, _target(7), model, index=torch.arange(10, 17))
    torch.testing.assert_close(out.x_cf, alone.x_cf)  # same per-sample seeds as a job of its own
    assert chunked.calls == 3  # 7 images in chunks of 3


def test_comparisons_survive_detach_and_cat():
    x, model = images(4), LinearClassifier(num_classes=3)
    cmp = MethodComparison({"a": ScaleMethod(0.9), "b": ScaleMethod(0.2)})
    parts = [cmp(x[:2], _target(2), model), cmp(x[2:], _target(2), model)]
    whole = CounterfactualOutput.cat(parts).detach_cpu()
    torch.testing.assert_close(whole.comparisons["b"].x_cf, 0.2 * x)
    torch.testing.assert_close(whole.comparisons["b"].extras["factor"], torch.full((4,), 0.2))


@pytest.mark.parametrize("methods, primary, message", [
    ({}, None, "at least one method"),
    ({"a b": ScaleMethod()}, None, "letters, digits"),
    ({"a/b": ScaleMethod()}, None, "letters, digits"),
    ({"a": ScaleMethod()}, "b", "primary 'b' is not one of"),
    ({"a": MethodComparison({"x": ScaleMethod()})}, None, "itself a MethodComparison"),
])
def test_bad_arguments(methods, primary, message):
    with pytest.raises(ValueError, match=message):
        MethodComparison(methods, primary)
    with pytest.raises(TypeError, match="expected a CounterfactualMethod"):
        MethodComparison({"a": torch.nn.Identity()})
