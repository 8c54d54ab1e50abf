"""A fixture for the scoring/masks tests: one torch thread while they run.

Their tensors are tiny, and on a small shared machine two threads cost far more in
synchronisation than they gain (5× slower measured on 2 busy cores).
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import torch


@pytest.fixture(autouse=True, scope="module")
def single_thread() -> Iterator[None]:
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)
