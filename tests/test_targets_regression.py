"""Regression target policies (Ha & Bender 2025, spec §2.2)."""
import pytest
import torch

from cflight.targets import FixedValue, SeveralValues, SquaresMirror
from cflight.types import RegressionTarget
from cflight.validation import BadInputError


def test_fixed_value_skips_images_already_within_tolerance():
    target, keep = FixedValue(0.8, tolerance=0.05)(torch.tensor([[0.1], [0.78], [0.9]]), {})
    assert isinstance(target, RegressionTarget) and target.value.tolist() == pytest.approx([0.8] * 3)
    assert keep.tolist() == [True, False, True]


def test_squares_mirror_moves_the_red_to_the_other_half_with_the_reference_cast():
    y = torch.tensor([0.0, 100 / 255, 127 / 255, 128 / 255, 1.0, 127.9999 / 255])
    target, keep = SquaresMirror()(torch.zeros(6, 1), {"target": y})
    expected = [128, 228, 255, 0, 127, 255]  # the last: 127.9999 truncates to 127 (the reference's uint8 cast)
    assert (target.value * 255).round().tolist() == expected and bool(keep.all())
    rounded, _ = SquaresMirror(cast="round")(torch.zeros(6, 1), {"target": y})
    assert round(float(rounded.value[-1]) * 255) == 0  # ... and rounds to 128 with cast="round"
    with pytest.raises(BadInputError, match="needs batches with a 'target' key"):
        SquaresMirror()(torch.zeros(2, 1), {})


def test_several_values_give_image_major_rows():
    policy = SeveralValues([0.2, 0.5, 0.8], tolerance=0.05)
    assert policy.targets_per_image == 3 and policy.task == "regression"
    target, keep = policy(torch.tensor([[0.5], [0.1]]), {})
    assert target.value.tolist() == pytest.approx([0.2, 0.5, 0.8, 0.2, 0.5, 0.8])
    assert keep.tolist() == [True, False, True, True, True, True]  # image 0 already is 0.5


def test_regression_policies_refuse_a_classifier_and_bad_arguments():
    with pytest.raises(BadInputError, match="needs a regressor .* use a class policy"):
        FixedValue(0.5)(torch.zeros(2, 3), {})
    with pytest.raises(ValueError, match="tolerance must be >= 0"):
        FixedValue(0.5, tolerance=-1)
    with pytest.raises(ValueError, match="cast must be"):
        SquaresMirror(cast="floor")
    with pytest.raises(ValueError, match="at least one"):
        SeveralValues([])
