"""The training tests run tiny models in this process: one intra-op thread each (see
`one_thread` in tests/conftest.py), except the real-text run of test_quality.py, whose GPT-2-sized
output layer does use both cores."""

from __future__ import annotations

import pytest


@pytest.fixture(autouse=True)
def _tiny_models_on_one_thread(request):
    if request.node.path.name != "test_quality.py":
        request.getfixturevalue("one_thread")
    yield
