"""Shared fixtures: seeded torch, and ../shared/data when it is present."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

# The shared data folder sits beside the repository (../shared/data); tests skip when it is absent.
SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


@pytest.fixture
def shared_data() -> Path:
    if not SHARED_DATA.is_dir():
        pytest.skip(f"shared data not found at {SHARED_DATA}")
    return SHARED_DATA


@pytest.fixture
def one_thread():
    """One intra-op thread for tiny models: on a shared 2-core machine, two spinning threads cost
    far more CPU than they save (measured: ~15x slower per step under load)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(autouse=True)
def _seed_and_threads():
    torch.manual_seed(0)
    yield
