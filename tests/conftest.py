"""Shared test settings: hypothesis without deadlines (torch warm-up makes first calls slow); the one-thread fixture."""

import pytest
from hypothesis import settings

settings.register_profile("optbench", deadline=None, max_examples=100)
settings.load_profile("optbench")


@pytest.fixture
def one_thread():
    """Tiny models: one thread avoids OpenMP spin-waits that make them 10× slower on a busy 2-core box."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
