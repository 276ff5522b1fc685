"""`scratchllm tokenizer ...` end to end on tiny data."""

from __future__ import annotations

import pytest

from scratchllm.cli import main


def test_help(capsys):
    for action in ("train", "encode", "decode", "info", "show"):
        with pytest.raises(SystemExit) as exc:
            main(["tokenizer", action, "--help"])
        assert exc.value.code == 0
        assert "usage" in capsys.readouterr().out


def test_train_encode_decode_info(tmp_path, sample_text, capsys):
    data = tmp_path / "corpus.txt"
    data.write_text(sample_text)
    out = tmp_path / "tok"
    args = ["--data", str(data), "--vocab-size", "300", "--out", str(out)]
    assert main(["tokenizer", "train", *args, "--backend", "reference"]) == 0
    assert "vocab_size" in capsys.readouterr().out
    assert main(["tokenizer", "encode", "--tokenizer", str(out), "the quick fox"]) == 0
    ids = capsys.readouterr().out.split()
    assert main(["tokenizer", "decode", "--tokenizer", str(out), *ids]) == 0
    assert capsys.readouterr().out == "the quick fox\n"
    assert main(["tokenizer", "info", "--tokenizer", str(out), "--file", str(data)]) == 0
    assert "bytes_per_token" in capsys.readouterr().out
    assert main(["tokenizer", "show", "--tokenizer", str(out), "--plain", "the fox"]) == 0
    assert "|" in capsys.readouterr().out


def test_errors_exit_2(tmp_path, sample_text, capsys):
    data = tmp_path / "c.txt"
    data.write_text(sample_text)
    bad = ["tokenizer", "train", "--data", str(data), "--vocab-size", "10", "--out", str(tmp_path)]
    assert main(bad) == 2
    assert "vocab_size=10" in capsys.readouterr().err
    assert main(["tokenizer", "info", "--tokenizer", str(tmp_path / "missing")]) == 2
    word = tmp_path / "w"
    assert (
        main(["tokenizer", "train", "--data", str(data), "--kind", "word", "--out", str(word)]) == 0
    )
    assert main(["tokenizer", "decode", "--tokenizer", str(word), "123456"]) == 2
    assert "123456" in capsys.readouterr().err


def test_gpt2_directory(data_dir, capsys):
    assert main(["tokenizer", "encode", "--tokenizer", str(data_dir), "Hello, world!"]) == 0
    assert capsys.readouterr().out.split() == ["15496", "11", "995", "0"]
