"""Counts and sizes on the command line are range-checked by argparse, naming the flag."""

from __future__ import annotations

import numpy as np
import pytest

from scratchllm.cli import build_parser
from scratchllm.errors import ConfigError

CASES = [
    (["embed", "neighbours", "--run", "r", "w", "-k", "-1"], "argument -k: must be >= 1, got -1"),
    (["embed", "neighbours", "--run", "r", "w", "-k", "0"], "argument -k: must be >= 1, got 0"),
    (["embed", "analogy", "--run", "r", "a", "b", "c", "-k", "0"], "argument -k: must be >= 1"),
    (["embed", "word2vec", "--data", "d", "--out", "o", "--batch-size", "0"], "--batch-size: must"),
    (["embed", "word2vec", "--data", "d", "--out", "o", "--window", "0"], "--window: must be >= 1"),
    (["embed", "text", "--run", "r", "x", "--batch-size", "0"], "--batch-size: must be >= 1"),
    (["inspect", "attention", "--run", "r", "--text", "t", "--head", "-1"], "--head: must be >= 0"),
    (["inspect", "next-token", "--run", "r", "--text", "t", "--k", "0"], "--k: must be >= 1"),
    (["inspect", "tokens", "--run", "r", "--text", "t", "--width", "0"], "--width: must be >= 1"),
    (["classify", "--run", "r", "x", "--batch-size", "0"], "--batch-size: must be >= 1, got 0"),
    (
        ["data", "prepare", "--data", "d", "--tokenizer", "t", "--out", "o", "--workers", "0"],
        "--workers",
    ),
    (
        ["finetune", "classify", "--data", "d", "--out", "o", "--epochs", "0"],
        "--epochs: must be >= 1",
    ),
    (
        ["finetune", "dpo", "--base", "b", "--data", "d", "--out", "o", "--steps", "0"],
        "--steps: must",
    ),
    (["embed", "neighbours", "--run", "r", "w", "-k", "x"], "argument -k: invalid int value: 'x'"),
]


@pytest.mark.parametrize(("argv", "message"), CASES)
def test_out_of_range_int_flags_are_usage_errors(argv, message, capsys):
    with pytest.raises(SystemExit) as exc:
        build_parser().parse_args(argv)
    assert exc.value.code == 2
    assert message in capsys.readouterr().err


def test_word2vec_no_progress_and_hidden_quiet_alias(capsys):
    parser = build_parser()
    base = ["embed", "word2vec", "--data", "d", "--out", "o"]
    assert parser.parse_args([*base, "--no-progress"]).no_progress is True
    assert parser.parse_args([*base, "--quiet"]).no_progress is True
    assert parser.parse_args(base).no_progress is False
    with pytest.raises(SystemExit):
        parser.parse_args(["embed", "word2vec", "--help"])
    out = capsys.readouterr().out
    assert "--no-progress" in out and "--quiet" not in out


def test_vectors_nearest_rejects_k_below_one():
    from scratchllm.lineage.word2vec import WordVectors

    vectors = WordVectors(["a", "b", "c"], np.eye(3, dtype=np.float32))
    assert [w for w, _ in vectors.neighbours("a", 2)] == ["b", "c"]
    with pytest.raises(ConfigError, match="k must be >= 1, got -1"):
        vectors.neighbours("a", -1)
