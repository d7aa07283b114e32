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
