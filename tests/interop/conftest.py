"""Fixtures of the interop tests: one tiny random transformers model per supported case."""

from __future__ import annotations

import pytest
from interop_helpers import CASES, hf_model


@pytest.fixture(params=sorted(CASES))
def case(request):
    kind, extra = CASES[request.param]
    return kind, hf_model(kind, **extra)
