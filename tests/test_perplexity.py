"""Perplexity in sliding windows (scratchllm.perplexity, `scratchllm eval`)."""

from __future__ import annotations

import json
import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from scratchllm.cli import main
from scratchllm.model import EncoderModel, GPTModel, get_preset
from scratchllm.perplexity import perplexity, sliding_windows
from scratchllm.tokenizer import BPETokenizer
from scratchllm.train.checkpoint import save_run


@settings(max_examples=200, deadline=None)
@given(
    n=st.integers(2, 300),
    context=st.integers(2, 64),
    data=st.data(),
)
def test_windows_score_every_token_but_the_first_once(n, context, data):
    stride = data.draw(st.integers(1, context - 1))
    windows = sliding_windows(n, context, stride)
    scored = [t for w in windows for t in range(w.first + 1, w.end)]
    assert scored == list(range(1, n))  # each once, in order
    for i, w in enumerate(windows):
        assert w.begin == i * stride and w.end - w.begin <= context and w.begin <= w.first
        assert w.end - w.begin == context or w.end == n  # only the last window is short
        if i:  # the first scored token sees at least context - stride tokens before it
            assert w.first + 1 - w.begin >= context - stride


@pytest.mark.parametrize("context,stride", [(2, 1), (6, 5), (8, 3)])
def test_bad_strides_and_contexts_are_refused(context, stride):
    with pytest.raises(ValueError, match="stride must be between 1 and context - 1"):
        sliding_windows(10, context, context)
    with pytest.raises(ValueError, match="context must be at least 2"):
        sliding_windows(10, 1, 1)
    assert sliding_windows(10, context, stride)  # the edges themselves are fine


def reference_loss(logits_of, ids: list[int], context: int, stride: int) -> float:
    """Each token i >= 1 predicted on its own from the tokens its window shows before it: the
    window k that scores i is the first whose end (k * stride + context) is past i."""
    total = 0.0
    for i in range(1, len(ids)):
        k = 0 if i < context else -(-(i + 1 - context) // stride)
        start = k * stride
        logits = logits_of(torch.tensor([ids[start:i]]))[0, -1]
        total -= torch.log_softmax(logits.double(), -1)[ids[i]].item()
    return total / (len(ids) - 1)


@pytest.mark.parametrize("context,stride", [(16, 8), (16, 15), (16, 1), (12, 5)])
def test_perplexity_matches_transformers_token_by_token(context, stride):
    transformers = pytest.importorskip("transformers")
    from scratchllm.interop.hf_convert import gpt_from_gpt2

    torch.manual_seed(0)
    hf_cfg = transformers.GPT2Config(n_embd=32, n_layer=2, n_head=4, n_positions=16, vocab_size=97)
    hf = transformers.GPT2LMHeadModel(hf_cfg).eval()
    ours = gpt_from_gpt2(hf).eval()
    ids = torch.randint(0, 97, (45,)).tolist()
    expected = reference_loss(lambda x: hf(input_ids=x).logits, ids, context, stride)
    report = perplexity(ours, ids, context=context, stride=stride, batch_size=3)
    assert report.tokens == len(ids) - 1
    assert report.loss == pytest.approx(expected, rel=1e-5)
    assert report.perplexity == pytest.approx(math.exp(expected), rel=1e-5)
    one = perplexity(ours, ids, context=context, stride=stride, batch_size=1)
    assert one.loss == pytest.approx(report.loss, rel=1e-6)  # batching changes nothing


def byte_run(path, context_length=32):
    tok = BPETokenizer([bytes([b]) for b in range(256)], special_tokens={"<|endoftext|>": 256})
    torch.manual_seed(0)
    cfg = get_preset("tiny", vocab_size=257, context_length=context_length, init_std=0.3)
    model = GPTModel(cfg).eval()
    save_run(path, model, cfg, tok)
    return model, tok


def test_eval_command_reports_the_library_figures(tmp_path, capsys):
    model, tok = byte_run(tmp_path / "run")
    text = "the cat sat on the mat, and then the cat sat on the hat. " * 3
    (tmp_path / "a.txt").write_text(text, encoding="utf-8")
    argv = ["eval", "--run", str(tmp_path / "run"), "--data", str(tmp_path / "a.txt")]
    assert main([*argv, "--stride", "20", "--json"]) == 0
    got = json.loads(capsys.readouterr().out)
    expected = perplexity(model, tok.encode(text), context=32, stride=20)
    assert got["loss"] == pytest.approx(expected.loss, rel=1e-6)
    assert got["tokens"] == len(text) - 1 and got["context"] == 32 and got["stride"] == 20
    # one byte a token: bits per byte is the loss in bits
    assert got["bits_per_byte"] == pytest.approx(expected.loss / math.log(2), rel=1e-9)
    assert main(argv) == 0  # the default stride: half the context
    out = capsys.readouterr().out
    assert "stride 16" in out and "perplexity:" in out and "bits per byte:" in out


def test_eval_joins_documents_with_end_of_text(tmp_path, capsys):
    model, tok = byte_run(tmp_path / "run")
    corpus = tmp_path / "docs"
    corpus.mkdir()
    (corpus / "1.txt").write_text("first document here", encoding="utf-8")
    (corpus / "2.txt").write_text("and a second one", encoding="utf-8")
    argv = ["eval", "--run", str(tmp_path / "run"), "--data", str(corpus), "--json"]
    assert main(argv) == 0
    got = json.loads(capsys.readouterr().out)
    ids = tok.encode("first document here") + [tok.eot_id] + tok.encode("and a second one")
    assert got["loss"] == pytest.approx(perplexity(model, ids, context=32).loss, rel=1e-6)
    assert got["tokens"] == len(ids) - 1
    # the scored tokens' bytes: all but the first character; the end-of-text token counts none
    scored_bytes = len("first document here") - 1 + len("and a second one")
    bits = got["loss"] * got["tokens"] / math.log(2)
    assert got["bits_per_byte"] == pytest.approx(bits / scored_bytes, rel=1e-9)


def test_eval_scores_a_split_of_prepared_shards(tmp_path, capsys):
    from scratchllm.data.shards import open_shards, prepare_shards
    from scratchllm.data.sources import Document

    model, tok = byte_run(tmp_path / "run")
    docs = [Document(f"doc{i}", f"document number {i} says hello. " * (i + 1)) for i in range(40)]
    prepare_shards(docs, tok, tmp_path / "shards", val_fraction=0.3, shard_tokens=300, workers=1)
    val = open_shards(tmp_path / "shards", "val")
    assert len(val) > 1  # several shards: they are read as one sequence
    ids = torch.cat([torch.from_numpy(a.astype("int64")) for a in val])
    argv = ["eval", "--run", str(tmp_path / "run"), "--data", str(tmp_path / "shards"), "--json"]
    assert main(argv) == 0
    got = json.loads(capsys.readouterr().out)
    assert got["tokens"] == len(ids) - 1
    assert got["loss"] == pytest.approx(perplexity(model, ids, context=32).loss, rel=1e-6)
    assert got["bits_per_byte"] is not None
    assert main([*argv, "--split", "train"]) == 0
    assert json.loads(capsys.readouterr().out)["tokens"] > got["tokens"]
    other = BPETokenizer([bytes([b]) for b in range(256)], special_tokens={"<|other|>": 256})
    save_run(tmp_path / "other", model, model.cfg, other)
    argv[2] = str(tmp_path / "other")
    assert main(argv) == 2
    assert "prepared with another tokenizer than the run's" in capsys.readouterr().err


@pytest.mark.parametrize(
    "extra,text,message",
    [
        (["--stride", "32"], "some text to score", "stride must be between 1 and context - 1"),
        (["--context", "64"], "some text to score", "longer than the model's 32"),
        ([], "x", "1 token(s); perplexity needs at least 2"),
    ],
)
def test_eval_bad_input_is_one_line(tmp_path, capsys, extra, text, message):
    byte_run(tmp_path / "run")
    (tmp_path / "a.txt").write_text(text, encoding="utf-8")
    argv = ["eval", "--run", str(tmp_path / "run"), "--data", str(tmp_path / "a.txt"), *extra]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and message in err, err


def test_eval_refuses_an_encoder_run(tmp_path, capsys):
    cfg = get_preset("tiny", vocab_size=257, context_length=32)
    tok = BPETokenizer([bytes([b]) for b in range(256)], special_tokens={"<|endoftext|>": 256})
    save_run(tmp_path / "bert", EncoderModel(cfg), cfg, tok)
    (tmp_path / "a.txt").write_text("some text", encoding="utf-8")
    argv = ["eval", "--run", str(tmp_path / "bert"), "--data", str(tmp_path / "a.txt")]
    assert main(argv) == 2
    assert "needs a decoder (GPT) run" in capsys.readouterr().err


def test_window_count_without_making_the_windows() -> None:
    from scratchllm.perplexity import count_sliding_windows, iter_sliding_windows

    for n in range(0, 40):
        for context in (2, 3, 6, 16):
            for stride in range(1, context):
                expected = sliding_windows(n, context, stride)
                assert count_sliding_windows(n, context, stride) == len(expected)
                assert list(iter_sliding_windows(n, context, stride)) == expected
