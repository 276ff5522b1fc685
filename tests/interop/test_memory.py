"""Loading a checkpoint costs about one copy of the weights (measured in fresh processes).

A GPT-2-shaped random checkpoint of ~100 MiB keeps the test quick; the gpt2-medium figure comes
from running `python tests/interop/peak_rss.py` (docs/weights.md).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from peak_rss import write_checkpoint

SCRIPT = Path(__file__).with_name("peak_rss.py")
LIMIT = 1.5  # peak growth / weights size, the bound the issue sets


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="needs Linux /proc")
def test_peak_memory_of_a_load(tmp_path):
    size = write_checkpoint(tmp_path, n_embd=384, n_layer=6, n_head=6, vocab=50257)
    cmd = [sys.executable, str(SCRIPT), "--measure", str(tmp_path), "ours"]
    out = json.loads(subprocess.run(cmd, check=True, capture_output=True, timeout=300).stdout)
    ratio = (out["peak"] - out["before"]) / size
    assert out["ok"] and ratio < LIMIT, f"peak grew {ratio:.2f}x the weights ({size} bytes)"
