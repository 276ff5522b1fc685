from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

from scratchllm.data.batching import block_causal_mask, pack_documents, pad_batch
from scratchllm.data.windows import IGNORE_INDEX

DOCS = [[5, 6, 7, 0], [8, 9, 0], [10, 11, 12, 13, 14, 0], [15, 0]]


def test_pad_batch() -> None:
    batch = pad_batch(DOCS, pad_id=99)
    assert batch.input_ids.tolist()[1] == [8, 9, 99, 99, 99]
    assert batch.target_ids.tolist()[1] == [9, 0, IGNORE_INDEX, IGNORE_INDEX, IGNORE_INDEX]
    assert batch.attention_mask.tolist()[3] == [True, False, False, False, False]
    short = pad_batch(DOCS, pad_id=99, max_length=2)
    assert short.input_ids.tolist()[2] == [10, 11] and short.target_ids.tolist()[2] == [11, 12]
    with pytest.raises(ValueError):
        pad_batch([], pad_id=0)


def test_pack_documents_layout() -> None:
    batch = pack_documents(DOCS, 4, pad_id=99)
    flat = [t for d in DOCS for t in d]  # 15 ids -> 14 pairs -> 4 rows of 4
    assert batch.input_ids.shape == (4, 4)
    assert batch.input_ids.flatten().tolist()[:15] == flat
    real = batch.target_ids.flatten()[:15]
    boundaries = {3, 6}  # the eot ending doc 0 and doc 1 at flat index 3 and 6 ...
    for i in range(15):
        if i in boundaries or i in (12, 14):  # doc 2's eot at 12; 14 is the last id of all
            assert real[i] == IGNORE_INDEX
        else:
            assert real[i] == flat[i + 1]
    assert batch.position_ids.tolist()[0] == [0, 1, 2, 3]
    assert batch.position_ids.tolist()[1] == [0, 1, 2, 0]
    assert batch.attention_mask.flatten().tolist() == [True] * 15 + [False]


DOC_LISTS = st.lists(st.lists(st.integers(1, 50), min_size=1, max_size=12), min_size=1, max_size=6)


@settings(max_examples=100, deadline=None)
@given(docs=DOC_LISTS, max_length=st.integers(1, 9))
def test_packing_any_documents(docs: list[list[int]], max_length: int) -> None:
    """Every id after the first is the target of the id before it exactly once (or IGNORE_INDEX
    where a document starts), positions restart at each document and row, nothing is lost."""
    flat = [t for d in docs for t in d]
    doc_of = [i for i, d in enumerate(docs) for _ in d]
    if len(flat) < 2:
        with pytest.raises(ValueError):
            pack_documents(docs, max_length, pad_id=0)
        return
    batch = pack_documents(docs, max_length, pad_id=0)
    rows = -(-(len(flat) - 1) // max_length)  # ceil: each row predicts max_length ids
    assert batch.input_ids.shape == batch.target_ids.shape == (rows, max_length)
    n = min(len(flat), rows * max_length)  # input positions holding real ids
    x, y = batch.input_ids.flatten().tolist(), batch.target_ids.flatten().tolist()
    seg, pos = batch.segment_ids.flatten().tolist(), batch.position_ids.flatten().tolist()
    assert x[:n] == flat[:n] and set(x[n:]) <= {0}
    assert batch.attention_mask.flatten().tolist() == [True] * n + [False] * (len(x) - n)
    for p in range(n):
        same_doc = p + 1 < len(flat) and doc_of[p + 1] == doc_of[p]
        assert y[p] == (flat[p + 1] if same_doc else IGNORE_INDEX), p
        assert seg[p] == doc_of[p]
        row_start = p - p % max_length
        doc_start = doc_of.index(doc_of[p])
        assert pos[p] == p - max(row_start, doc_start), p
    assert set(y[n:]) <= {IGNORE_INDEX}
    mask = batch.block_causal_mask()[:, 0]
    s = batch.segment_ids
    i, j = torch.arange(max_length)[:, None], torch.arange(max_length)[None, :]
    assert torch.equal(mask, (s[:, :, None] == s[:, None, :]) & (j <= i))


def test_packed_attention_equals_separate_documents() -> None:
    torch.manual_seed(0)
    docs = [list(range(1, n + 1)) for n in (5, 3, 9, 2, 7)]
    batch = pack_documents(docs, 8, pad_id=0)
    b, t = batch.input_ids.shape
    emb = torch.randn(64, 16)
    q, k, v = (emb[batch.input_ids] @ torch.randn(16, 16) for _ in range(3))
    packed = F.scaled_dot_product_attention(
        q[:, None], k[:, None], v[:, None], attn_mask=batch.block_causal_mask()
    )[:, 0]
    flat_q, flat_k, flat_v = (z.reshape(b * t, 16) for z in (q, k, v))
    seg = batch.segment_ids.reshape(-1)
    row = torch.arange(b).repeat_interleave(t)
    for r in range(b):
        for s in seg[row == r].unique():
            if s < 0:
                continue
            sel = (row == r) & (seg == s)
            alone = F.scaled_dot_product_attention(
                flat_q[sel][None], flat_k[sel][None], flat_v[sel][None], is_causal=True
            )[0]
            assert torch.allclose(packed.reshape(b * t, 16)[sel], alone, atol=1e-6)
    assert not packed.isnan().any()


def test_block_causal_mask_shape_and_values() -> None:
    mask = block_causal_mask(torch.tensor([[0, 0, 1, 1, -1]]))
    assert mask.shape == (1, 1, 5, 5)
    expected = np.array(
        [
            [1, 0, 0, 0, 0],
            [1, 1, 0, 0, 0],
            [0, 0, 1, 0, 0],
            [0, 0, 1, 1, 0],
            [0, 0, 0, 0, 1],
        ],
        dtype=bool,
    )
    assert (mask[0, 0].numpy() == expected).all()
