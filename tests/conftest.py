"""Set-up shared by the whole suite."""

from __future__ import annotations

import pytest


@pytest.fixture(autouse=True, scope="session")
def one_torch_thread():
    """Run every test on one torch intra-op thread (restored afterwards).

    The models here are tiny and pytest-xdist already runs one worker per core: with
    torch's own thread pool on top, every op waits for a descheduled peer thread and
    a few training steps take ten times longer.
    """
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)
