"""bench/tokenizer.py runs at its tiny size (so the benchmark itself is tested)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[2] / "bench" / "tokenizer.py"


def test_bench_quick(data_dir, capsys):
    pytest.importorskip("tokenizers")
    spec = importlib.util.spec_from_file_location("bench_tokenizer", BENCH)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    assert module.main(["--quick", "--only", "encode", "train"]) == 0
    out = capsys.readouterr().out
    assert "encode ours-fast" in out and "train ours-reference" in out
