"""One intra-op thread for these tiny models: on a shared 2-core machine, two spinning threads
cost far more CPU than they save (measured: ~15x slower per step under load)."""

from __future__ import annotations

import pytest


@pytest.fixture(autouse=True)
def _one_thread(one_thread):  # tests/conftest.py
    yield
