"""Fixed-pair and per-index target policies, and FlipBinary's direction rule (spec §1.3, §1.7)."""
import pytest
import torch

from cflight.targets import RECONSTRUCTION_LOGITS, FlipBinary, IndexTargets, PairTargets, read_index_targets
from cflight.validation import BadInputError


def _logits(pred, k=10):
    return torch.nn.functional.one_hot(torch.tensor(pred), k).float() * 5


def test_pair_targets_by_label_skip_unpaired_and_reached():
    policy = PairTargets([[4, 9], [1, 7]])
    labels = torch.tensor([4, 1, 3, 4, 1])
    logits = _logits([4, 1, 3, 9, 4])  # row 3 is already predicted 9: nothing to explain
    target, keep = policy(logits, {"label": labels, "index": torch.arange(5)})
    assert keep.tolist() == [True, True, False, False, True]
    assert target.classes[keep].tolist() == [9, 7, 7] and float(target.threshold) == 0.5
    assert policy.target_classes == {9, 7}


def test_pair_targets_by_prediction():
    target, keep = PairTargets([[4, 9]], by="prediction")(_logits([4, 2]), {"index": torch.arange(2)})
    assert keep.tolist() == [True, False] and int(target.classes[0]) == 9
    with pytest.raises(BadInputError, match="label"):
        PairTargets([[4, 9]])(_logits([4]), {"index": torch.arange(1)})


@pytest.mark.parametrize("pairs, match", [([], "at least one"), ([[4, 4]], "same source"),
                                          ([[4, 9], [4, 7]], "two pairs"), ([[1, 2, 3]], r"\[source, target\]"),
                                          ([[-1, 2]], "class index")])
def test_pair_targets_bad_pairs(pairs, match):
    with pytest.raises(ValueError, match=match):
        PairTargets(pairs)
    with pytest.raises(ValueError, match="by"):
        PairTargets([[1, 2]], by="guess")


def test_index_targets_from_mapping_and_csv(tmp_path):
    policy = IndexTargets({89: 9, 3: 7})
    target, keep = policy(_logits([4, 1, 7]), {"index": torch.tensor([89, 5, 3])})
    assert keep.tolist() == [True, False, False]  # index 5 is not listed, index 3 already predicted 7
    assert int(target.classes[0]) == 9
    path = tmp_path / "targets.csv"
    path.write_text("index,target\n89,9\n3,7\n")
    assert read_index_targets(str(path)) == {89: 9, 3: 7} and IndexTargets(csv=str(path)).targets == {89: 9, 3: 7}
    path.write_text("index,target\n89,9\n89,7\n")
    with pytest.raises(BadInputError, match="two targets"):
        IndexTargets(csv=str(path))
    path.write_text("idx,cls\n1,2\n")
    with pytest.raises(BadInputError, match="'index' and 'target'"):
        IndexTargets(csv=str(path))
    with pytest.raises(ValueError, match="exactly one"):
        IndexTargets()
    with pytest.raises(FileNotFoundError, match="index,target"):
        IndexTargets(csv=str(tmp_path / "missing.csv"))


def test_flip_binary_direction_from_reconstruction_or_original():
    logits = torch.tensor([[-2.0], [2.0]])  # p(x) < 0.5, > 0.5
    recon = torch.tensor([[2.0], [-2.0]])  # the reconstruction says the opposite
    batch = {RECONSTRUCTION_LOGITS: recon}
    ref, _ = FlipBinary()(logits, batch)  # default: the reference's rule, on the reconstruction
    assert ref.direction.tolist() == [-1, 1] and ref.threshold.tolist() == [0.25, 0.75]
    orig, _ = FlipBinary(direction_from="original")(logits, batch)
    assert orig.direction.tolist() == [1, -1]
    assert FlipBinary().uses_reconstruction and not FlipBinary(direction_from="original").uses_reconstruction
    alone, _ = FlipBinary()(logits, {})  # no reconstruction given (pixel methods): the original is the start
    assert alone.direction.tolist() == [1, -1]
    with pytest.raises(ValueError, match="direction_from"):
        FlipBinary(direction_from="latent")
