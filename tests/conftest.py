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


@pytest.fixture(autouse=True)
def _seed_and_threads():
    torch.manual_seed(0)
    yield
