"""Each picture function writes a PNG of the expected size that is not blank; attention weights
recomputed from a layer's projections reproduce that layer's output exactly."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

from scratchllm.generation import GREEDY, SamplingConfig
from scratchllm.model import GPTModel, get_preset
from scratchllm.model.attention import (
    BidirectionalAttention,
    CausalAttention,
    GroupedQueryAttention,
    MultiHeadAttention,
    SelfAttention,
    SimplifiedSelfAttention,
    merge_heads,
    repeat_kv,
    split_heads,
)
from scratchllm.model.embeddings import rope_cos_sin
from scratchllm.tokenizer import BPETokenizer, WordTokenizer
from scratchllm.viz import (
    attention_weights,
    attention_weights_of,
    next_token_probs,
    pca_2d,
    plot_attention,
    plot_embeddings,
    plot_next_token,
    plot_tokens,
    plot_training,
)
from scratchllm.viz.tokens import layout, token_pieces

TEXT = "the cat sat on the mat.\nthe dog ran, naïve 🙂"


def assert_picture(path: Path, size: tuple[int, int]) -> None:
    """PNG written, ``size`` pixels (±1 for rounding), more than one colour and real variation."""
    assert path.is_file() and path.stat().st_size > 0
    with Image.open(path) as image:
        assert image.format == "PNG"
        assert abs(image.width - size[0]) <= 1 and abs(image.height - size[1]) <= 1, image.size
        pixels = np.asarray(image.convert("RGB"), dtype=np.float64)
    assert len(np.unique(pixels.reshape(-1, 3), axis=0)) > 10
    assert pixels.std() > 5.0


@pytest.fixture(scope="module")
def tok() -> BPETokenizer:
    return BPETokenizer.train("the cat sat on the mat. the cat ate the rat.\n" * 40, 300)


@pytest.fixture(scope="module")
def model(tok: BPETokenizer) -> GPTModel:
    torch.manual_seed(0)
    return GPTModel(get_preset("tiny", vocab_size=tok.vocab_size)).eval()


def _rows(tokenizer, text: str, width: int) -> int:
    ids, pieces, joins = token_pieces(tokenizer, text)
    return max(b.row for b in layout(ids, pieces, width=width, gap=0 if joins else 1)) + 1


def test_plot_tokens_bpe_and_word(tok, tmp_path):
    path = plot_tokens(tok, TEXT, tmp_path / "t.png", width=30)
    rows = _rows(tok, TEXT, 30)
    assert rows >= 2  # the newline starts a second line
    assert_picture(path, (30 * 12 + 60, rows * 50 + 90))
    word = WordTokenizer.train("the cat sat on the mat")
    _, pieces, joins = token_pieces(word, "the cat sat on a mat")
    assert not joins and "[UNK]" in pieces
    assert_picture(plot_tokens(word, "the cat sat on a mat", tmp_path / "w.png"), (780, 140))


def test_layout_wraps_and_breaks_lines():
    boxes = layout([1, 2, 3], ["ab", "c\nd", "efgh"], width=4)
    # "efgh" does not fit after "d": it moves to a line of its own rather than being split
    assert [(b.row, b.col, b.text) for b in boxes] == [
        (0, 0, "ab"),
        (0, 2, "c\u21b5"),
        (1, 0, "d"),
        (2, 0, "efgh"),
    ]
    assert all(b.col + len(b.text) <= 4 for b in boxes)


PIECE = st.text(st.sampled_from("ab \n\t"), min_size=1, max_size=9)


@settings(max_examples=200, deadline=None)
@given(pieces=st.lists(PIECE, min_size=1, max_size=12), width=st.integers(1, 8))
def test_layout_of_any_pieces(pieces, width):
    """Boxes stay inside the width, never overlap, keep the text in reading order (spaces shown
    as ·, tabs as →, newlines as ↵ ending a line), follow each other on a line, and wrap only when
    the line is full or the next box would not fit on what is left of it."""
    boxes = layout(list(range(len(pieces))), pieces, width=width)
    assert all(0 <= b.col and b.col + len(b.text) <= width for b in boxes)
    cells = [(b.row, b.col + k) for b in boxes for k in range(len(b.text))]
    assert cells == sorted(set(cells))  # reading order, no cell drawn twice
    shown = "".join(p.replace(" ", "\u00b7").replace("\t", "\u2192") for p in pieces)
    assert "".join(b.text for b in boxes) == shown.replace("\n", "\u21b5")
    for index in range(len(pieces)):
        own = [b for b in boxes if b.index == index]
        assert own[0].first and not any(b.first for b in own[1:])
    for before, after in zip(boxes, boxes[1:]):
        room = width - before.col - len(before.text)  # left on before's line
        if before.text.endswith("\u21b5"):
            assert (after.row, after.col) == (before.row + 1, 0)
        elif after.row > before.row:  # wrapped: the line was full, or the next box did not fit
            assert after.row == before.row + 1 and after.col == 0
            assert room == 0 or len(after.text) > room
        else:
            assert (after.row, after.col) == (before.row, before.col + len(before.text))


def test_plot_attention(model, tok, tmp_path):
    path = plot_attention(
        model, tok, "the cat sat on the mat", tmp_path / "a.png", layer=-1, head=3
    )
    assert_picture(path, (510, 410))  # six tokens: 0.35 * 6 + 2 inches, plus 1 for the bar
    with pytest.raises(ValueError, match="layer 5 out of range"):
        plot_attention(model, tok, "the cat", tmp_path / "x.png", layer=5)
    with pytest.raises(ValueError, match="head 4 out of range"):
        plot_attention(model, tok, "the cat", tmp_path / "x.png", head=4)


def test_plot_embeddings(model, tok, tmp_path):
    path = plot_embeddings(model, tok, ["the", " cat", " mat", " rat", "dog"], tmp_path / "e.png")
    assert_picture(path, (700, 600))
    xy = pca_2d(model.embed.wte.weight)
    assert xy.shape == (tok.vocab_size, 2)
    assert abs(float(xy[:, 0].mean())) < 1e-5  # centred


def test_plot_next_token(model, tok, tmp_path):
    cfg = SamplingConfig(temperature=0.7, top_k=3)
    assert_picture(plot_next_token(model, tok, "the cat", tmp_path / "n.png", cfg), (1100, 450))
    after = next_token_probs(model, tok, "the cat", cfg)
    assert int((after > 0).sum()) == 3 and abs(float(after.sum()) - 1) < 1e-5
    greedy = next_token_probs(model, tok, "the cat", GREEDY)
    assert int(greedy.argmax()) == int(next_token_probs(model, tok, "the cat").argmax())


def test_plot_training_one_and_two_runs(tmp_path):
    for name, scale in (("a", 1.0), ("b", 1.3)):
        run = tmp_path / name
        run.mkdir()
        rows = [
            {
                "step": s,
                "loss": scale * 5 / (1 + s),
                "lr": 1e-3 * min(1, s / 5),
                "tokens_per_s": 1000.0 + s,
            }
            for s in range(1, 30)
        ] + [{"step": 29, "val_loss": scale * 0.5}]
        (run / "metrics.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    assert_picture(plot_training([tmp_path / "a"], tmp_path / "one.png"), (1500, 420))
    assert_picture(
        plot_training([tmp_path / "a", tmp_path / "b"], tmp_path / "two.png"), (1500, 420)
    )
    with pytest.raises(FileNotFoundError, match="metrics.jsonl"):
        plot_training([tmp_path], tmp_path / "none.png")


def _reference_output(module, x, weights, rope=None):
    """What the module computes from our weights: weights @ v (then the output projection)."""
    if isinstance(module, SimplifiedSelfAttention):
        return (weights @ x[:, None])[:, 0]
    if isinstance(module, GroupedQueryAttention):
        v = repeat_kv(
            split_heads(module.v_proj(x), module.n_kv_head), module.n_head // module.n_kv_head
        )
        return module.out_proj(merge_heads(weights @ v))
    if isinstance(module, MultiHeadAttention):
        v = split_heads(module.qkv(x).chunk(3, dim=-1)[2], module.n_head)
        return module.out_proj(merge_heads(weights @ v))
    return (weights @ module.v_proj(x)[:, None])[:, 0]


@pytest.mark.parametrize(
    "make",
    [
        lambda: SimplifiedSelfAttention(),
        lambda: SelfAttention(8, 6),
        lambda: CausalAttention(8, 6),
        lambda: MultiHeadAttention(8, 2, impl="math"),
        lambda: BidirectionalAttention(8, 2),
        lambda: GroupedQueryAttention(8, 4, 2),
    ],
    ids=["simplified", "self", "causal", "multi-head", "bidirectional", "grouped-query"],
)
def test_recomputed_weights_reproduce_the_layer(make):
    torch.manual_seed(0)
    module = make().eval()
    x = torch.randn(2, 5, 8) * 0.5
    weights = attention_weights_of(module, x)
    assert torch.allclose(weights.sum(-1), torch.ones(weights.shape[:-1]), atol=1e-5)
    if module.causal:
        assert float(weights.triu(1).abs().max()) == 0.0
    with torch.no_grad():
        assert torch.allclose(_reference_output(module, x, weights), module(x), atol=1e-5)


def test_weights_of_a_rope_gqa_model_match_its_layer():
    torch.manual_seed(0)
    cfg = get_preset("tiny-llama", vocab_size=50)
    model = GPTModel(cfg).eval()
    idx = torch.randint(0, 50, (1, 7))
    weights = attention_weights(model, idx, layer=1)  # [1, 4, 7, 7]
    assert weights.shape == (1, 4, 7, 7)
    seen = {}
    attn = model.blocks[1].attn
    handle = attn.register_forward_hook(lambda m, a, out: seen.update(x=a[0], out=out))
    with torch.no_grad():
        model(idx)
    handle.remove()
    rope = rope_cos_sin(torch.arange(7), cfg.head_dim, cfg.rope_theta, torch.float32)
    assert torch.allclose(attention_weights_of(attn, seen["x"], rope=rope), weights)
    with torch.no_grad():
        assert torch.allclose(_reference_output(attn, seen["x"], weights), seen["out"], atol=1e-5)
