"""Recipe module tests share recipe_loader.py; torch runs on one thread (small CPU convolutions on
two shared cores are far slower with two)."""

import pytest


@pytest.fixture(autouse=True, scope="session")
def _one_torch_thread():
    import torch

    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)
