"""The one third-party warning cflight silences, and nothing else."""
import warnings

from torch.utils._pytree import LeafSpec

from cflight.lit._warnings import silence_known_warnings


def _leafspec_warnings() -> list:
    with warnings.catch_warnings(record=True) as seen:
        LeafSpec()  # what Lightning's pytree helper builds for every batch
    return [w for w in seen if "LeafSpec" in str(w.message)]


def test_lightnings_leafspec_warning_is_silenced_and_only_it():
    with warnings.catch_warnings():
        warnings.simplefilter("always")
        assert _leafspec_warnings(), "torch no longer warns: drop the filter"
        silence_known_warnings()
        assert not _leafspec_warnings()
        with warnings.catch_warnings(record=True) as other:
            warnings.warn("another FutureWarning", FutureWarning)
        assert len(other) == 1  # other warnings still reach the user
