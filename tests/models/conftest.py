from __future__ import annotations

import pytest
import torch


@pytest.fixture
def one_torch_thread():
    """Run model tests on one intra-op thread (restored afterwards).

    These models are tiny: with two threads on a busy 2-core runner every op waits
    for a descheduled peer thread, and a few fine-tuning steps take ten times longer.
    """
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)
