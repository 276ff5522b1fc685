from __future__ import annotations

import numpy as np
import pytest

from scratchllm.cli import main
from scratchllm.data.shards import open_shards
from scratchllm.tokenizer import BPETokenizer


@pytest.mark.parametrize("argv", [["data"], ["data", "prepare"], ["data", "info"]])
def test_help(argv, capsys) -> None:
    with pytest.raises(SystemExit) as exc:
        main([*argv, "--help"])
    assert exc.value.code == 0
    assert "shards" in capsys.readouterr().out


def test_prepare_and_info(tmp_path, capsys) -> None:
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    texts = [f"Document number {i}. " * (i + 3) for i in range(12)]
    for i, text in enumerate(texts):
        (corpus / f"{i:02d}.txt").write_text(text)
    tok = BPETokenizer.train(texts, 300)
    tok.save(tmp_path / "tok")
    argv = ["data", "prepare", "--data", str(corpus), "--tokenizer", str(tmp_path / "tok")]
    argv += ["--out", str(tmp_path / "shards"), "--workers", "1", "--val-fraction", "0.3"]
    assert main([*argv, "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert "bytes/token" in out and "train:" in out
    ids = np.concatenate(
        open_shards(tmp_path / "shards", "train") + open_shards(tmp_path / "shards", "val")
    )
    assert tok.decode(ids.tolist()).count("<|endoftext|>") == 12
    assert main(["data", "info", str(tmp_path / "shards")]) == 0
    assert "complete" in capsys.readouterr().out
    assert main(["data", "info", str(tmp_path)]) == 2
    assert "no shard index" in capsys.readouterr().err

    # a truncated shard is reported the way the training loader sees it, not as complete
    shard = tmp_path / "shards" / "train_000000.bin"
    shard.write_bytes(shard.read_bytes()[:-2])
    assert main(["data", "info", str(tmp_path / "shards")]) == 2
    captured = capsys.readouterr()
    assert "DAMAGED" in captured.out and "complete" not in captured.out
    assert "train_000000.bin: missing or not" in captured.err
    shard.unlink()
    assert main(["data", "info", str(tmp_path / "shards")]) == 2
    assert "DAMAGED" in capsys.readouterr().out
