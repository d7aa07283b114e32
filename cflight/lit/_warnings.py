"""Third-party warnings that reach cflight's users on every run and that no user can act on."""
import warnings

# Lightning's own pytree helper (lightning.pytorch.utilities._pytree) still builds torch's deprecated LeafSpec, and
# torch 2.14 warns (FutureWarning) in every predict / fit loop that moves a batch
LEAFSPEC = r"`isinstance\(treespec, LeafSpec\)` is deprecated"


def silence_known_warnings() -> None:
    """Ignore :data:`LEAFSPEC` (only that message, only as a FutureWarning); called when ``cflight.lit`` loads."""
    warnings.filterwarnings("ignore", message=LEAFSPEC, category=FutureWarning)
