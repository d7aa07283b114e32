"""Shared pytest fixtures."""
import pytest
import torch


@pytest.fixture
def one_thread():
    """Tiny networks run faster on one thread (and do not fight other processes for the cores)."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(autouse=True)
def _seeded():
    """Every test starts from the same RNG state, so a failure reproduces and no test passes by luck of order."""
    torch.manual_seed(0)
    yield


@pytest.fixture(autouse=True)
def _no_dangling_wandb_run():
    """A W&B run a test leaves open would be reused by the next test's WandbLogger (Lightning attaches to
    ``wandb.run``), which then logs into the wrong directory: finish it after every test."""
    yield
    import sys

    wandb = sys.modules.get("wandb")
    if wandb is not None and getattr(wandb, "run", None) is not None:
        wandb.finish()
