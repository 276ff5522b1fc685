"""`scratchllm embed`: --help, word2vec then neighbours/analogy, text embeddings of a run."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from scratchllm.cli import main
from scratchllm.lineage.sentence import SentenceEmbedder
from scratchllm.model import GPTModel, get_preset
from scratchllm.tokenizer import WordTokenizer
from scratchllm.train.checkpoint import save_run


@pytest.mark.parametrize("sub", [[], ["word2vec"], ["neighbours"], ["analogy"], ["text"]])
def test_help(sub, capsys):
    with pytest.raises(SystemExit) as exc:
        main(["embed", *sub, "--help"])
    assert exc.value.code == 0
    assert "usage" in capsys.readouterr().out


def test_word2vec_then_neighbours(tmp_path, capsys):
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("\n".join(["red green blue red green blue", "one two three one two"] * 50))
    out = tmp_path / "w2v"
    args = ["embed", "word2vec", "--data", str(corpus), "--out", str(out), "--dim", "8"]
    assert (
        main([*args, "--steps", "20", "--min-count", "1", "--device", "cpu", "--no-progress"]) == 0
    )
    assert (out / "vectors.txt").read_text().startswith("6 8\n")
    capsys.readouterr()
    assert main(["embed", "neighbours", "--run", str(out), "red", "-k", "2", "--json"]) == 0
    record = json.loads(capsys.readouterr().out)
    assert record["word"] == "red" and len(record["neighbours"]) == 2
    assert main(["embed", "analogy", "--run", str(out), "red", "green", "one", "-k", "1"]) == 0
    assert main(["embed", "neighbours", "--run", str(out), "purple"]) == 2
    assert "purple" in capsys.readouterr().err


def test_text_and_gpt_input_embedding_neighbours(tmp_path, capsys):
    tok = WordTokenizer.train(["the cat sat on the mat", "a dog ran"], mode="word")
    model = GPTModel(get_preset("tiny", vocab_size=tok.vocab_size))
    save_run(tmp_path / "run", model, model.cfg, tok)
    run = str(tmp_path / "run")
    assert main(["embed", "text", "--run", run, "the cat", "a dog", "--pooling", "last"]) == 0
    lines = [json.loads(x) for x in capsys.readouterr().out.splitlines()]
    assert [x["text"] for x in lines] == ["the cat", "a dog"]
    # the command prints what the library computes for the same run (a thin shell over it)
    last = SentenceEmbedder(model.eval(), tok, "last").embed(["the cat", "a dog"])
    printed = torch.tensor([x["embedding"] for x in lines])
    torch.testing.assert_close(printed, last, atol=1e-5, rtol=0)
    assert main(["embed", "text", "--run", run, "the cat", "--out", str(tmp_path / "e.npy")]) == 0
    mean = SentenceEmbedder(model, tok, "mean").embed(["the cat"])  # the default pooling
    torch.testing.assert_close(torch.from_numpy(np.load(tmp_path / "e.npy")), mean)
    assert main(["embed", "text", "--run", run, "the cat", "a dog", "--query", "cat"]) == 0
    assert len(capsys.readouterr().out.splitlines()) == 2
    assert main(["embed", "neighbours", "--run", run, "cat", "-k", "3"]) == 0
    assert capsys.readouterr().out.startswith("cat: ")
    assert main(["embed", "text", "--run", run]) == 2
