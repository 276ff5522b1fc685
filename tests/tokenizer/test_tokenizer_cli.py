"""`scratchllm tokenizer ...` end to end on tiny data."""

from __future__ import annotations

import json

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
    from scratchllm.tokenizer import load_tokenizer

    assert ids == [str(i) for i in load_tokenizer(out).encode("the quick fox")]
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


def test_train_reads_sources_like_train_and_refuses_no_text(tmp_path, sample_text, capsys):
    (tmp_path / "empty.txt").write_text("")
    out = tmp_path / "tok"
    argv = ["tokenizer", "train", "--vocab-size", "300", "--out", str(out)]
    assert main([*argv, "--data", str(tmp_path / "empty.txt")]) == 2
    assert "no text found in" in capsys.readouterr().err
    assert not out.exists()
    # a directory of .md files and a .jsonl file's "text" fields, as `train` reads them
    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "a.md").write_text(sample_text)
    (tmp_path / "b.jsonl").write_text(
        json.dumps({"text": "zqzq " * 200, "other": "xkxk " * 300}) + "\n"
    )
    code = main([*argv, "--data", str(docs), str(tmp_path / "b.jsonl"), "--backend", "reference"])
    assert code == 0, capsys.readouterr().err
    from scratchllm.tokenizer import load_tokenizer

    tok = load_tokenizer(out)
    assert len(tok.encode(" zqzq")) == 1  # the .jsonl "text" field was trained on
    assert len(tok.encode(" xkxk")) > 1  # other fields were not


def test_train_notes_an_early_stop(tmp_path, capsys):
    data = tmp_path / "c.txt"
    data.write_text("ab ab ab cd")
    out = tmp_path / "tok"
    argv = ["tokenizer", "train", "--data", str(data), "--vocab-size", "1000", "--out", str(out)]
    assert main([*argv, "--backend", "reference"]) == 0
    captured = capsys.readouterr()
    assert "vocab_size 261" in captured.out  # 256 bytes + ' a'.. merges + <|endoftext|>
    assert "note: training stopped early with 261 ids instead of --vocab-size 1000" in captured.err


def test_train_empty_special_token_is_named(tmp_path, sample_text, capsys):
    data = tmp_path / "c.txt"
    data.write_text(sample_text)
    argv = ["tokenizer", "train", "--data", str(data), "--vocab-size", "300", "--special", ""]
    assert main([*argv, "--out", str(tmp_path / "tok")]) == 2
    err = capsys.readouterr().err
    assert "the text of a special token must be a non-empty string" in err
    assert "invalid or duplicate id" not in err


def test_encode_special_literal_names_the_flag(tmp_path, sample_text, capsys):
    data = tmp_path / "c.txt"
    data.write_text(sample_text)
    out = tmp_path / "tok"
    argv = ["tokenizer", "train", "--data", str(data), "--vocab-size", "300", "--out", str(out)]
    assert main([*argv, "--backend", "reference"]) == 0
    capsys.readouterr()
    assert main(["tokenizer", "encode", "--tokenizer", str(out), "Hi <|endoftext|>"]) == 2
    err = capsys.readouterr().err
    assert "--allow-special" in err and "allowed_special" not in err
    assert "'<|endoftext|>' at character 3" in err
    assert (
        main(["tokenizer", "encode", "--tokenizer", str(out), "--allow-special", "<|endoftext|>"])
        == 0
    )
    assert capsys.readouterr().out.split() == ["299"]
