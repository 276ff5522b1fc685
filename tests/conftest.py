"""Shared fixtures: seeded torch, and ../shared/data when it is present."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from hypothesis import HealthCheck, settings

# Every property test runs without a per-example deadline and without the too_slow health check:
# both are wall-clock limits (200 ms per example by default), which a shared, loaded 2-core
# machine overruns now and then. The tests here all say deadline=None today; this profile keeps
# a new @given that forgets it from failing CI at random. Hypothesis' "ci" profile, when loaded,
# stays the parent.
settings.register_profile("scratchllm", deadline=None, suppress_health_check=[HealthCheck.too_slow])
settings.load_profile("scratchllm")

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
