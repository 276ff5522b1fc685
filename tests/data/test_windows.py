from __future__ import annotations

import numpy as np
import pytest
import torch
from data_tokenizer import WrongVocab
from hypothesis import given, settings
from hypothesis import strategies as st

from scratchllm.data.encode import encode_documents, token_dtype
from scratchllm.data.sources import Document
from scratchllm.data.windows import IGNORE_INDEX, WindowDataset, num_windows
from scratchllm.errors import DataError

PAIRS = [(4, 4), (4, 1), (4, 2), (8, 3), (8, 8), (8, 11), (256, 128), (1, 1)]


def reference_windows(n: int, max_length: int, stride: int, last: str) -> list[int]:
    """Window starts, written the plain way: full windows, then a tail window if needed."""
    starts = list(range(0, n - max_length, stride))
    if last == "pad":
        covered = starts[-1] + max_length if starts else 0
        nxt = starts[-1] + stride if starts else 0
        if (not starts and n >= 2) or (starts and covered < n - 1 and nxt < n - 1):
            starts.append(nxt)
    return starts


@pytest.mark.parametrize("max_length,stride", PAIRS)
@pytest.mark.parametrize("last", ["drop", "pad"])
def test_num_windows_matches_enumeration(max_length: int, stride: int, last: str) -> None:
    for n in range(0, 3 * max_length + 2 * stride + 5):
        expected = len(reference_windows(n, max_length, stride, last))
        assert num_windows(n, max_length, stride, last) == expected, n


@pytest.mark.parametrize("max_length,stride", PAIRS)
def test_windows_contents_and_shift(max_length: int, stride: int) -> None:
    ids = np.arange(1000, 1000 + 3 * max_length + 7)
    ds = WindowDataset(ids, max_length, stride, last="pad", pad_id=0)
    starts = reference_windows(len(ids), max_length, stride, "pad")
    assert len(ds) == len(starts)
    for i, s in enumerate(starts):
        x, y = ds[i]
        assert x.dtype == y.dtype == torch.long and x.shape == y.shape == (max_length,)
        real = min(max_length, len(ids) - 1 - s)
        assert x[:real].tolist() == ids[s : s + real].tolist()
        assert y[:real].tolist() == ids[s + 1 : s + 1 + real].tolist()
        assert (x[real:] == 0).all() and (y[real:] == IGNORE_INDEX).all()


@settings(max_examples=300, deadline=None)
@given(
    n=st.integers(0, 80),
    max_length=st.integers(1, 12),
    stride=st.integers(1, 16),
    last=st.sampled_from(["drop", "pad"]),
)
def test_windows_cover_the_corpus(n: int, max_length: int, stride: int, last: str) -> None:
    """Window i starts at i * stride; its targets are its inputs shifted by one; with stride <=
    max_length the windows leave no target out under "pad" and fewer than `stride` under "drop";
    get_batch stacks exactly what indexing gives, the padded window included."""
    ids = np.arange(1000, 1000 + n)
    kwargs = {"pad_id": 0} if last == "pad" else {}
    if n < (2 if last == "pad" else max_length + 1):
        with pytest.raises(DataError):
            WindowDataset(ids, max_length, stride, last=last, **kwargs)
        return
    ds = WindowDataset(ids, max_length, stride, last=last, **kwargs)
    assert len(ds) == num_windows(n, max_length, stride, last)
    covered: list[int] = []
    for i in range(len(ds)):
        x, y = ds[i]
        s = i * stride
        assert ds.start(i) == s and x.shape == y.shape == (max_length,)
        real = int((y != IGNORE_INDEX).sum())
        assert 1 <= real <= max_length and (real == max_length or last == "pad")
        assert x[:real].tolist() == ids[s : s + real].tolist()
        assert y[:real].tolist() == ids[s + 1 : s + 1 + real].tolist()
        assert (x[real:] == 0).all() and (y[real:] == IGNORE_INDEX).all()
        covered += range(s + 1, s + 1 + real)  # positions used as targets
    if stride <= max_length:
        missed = set(range(1, n)) - set(covered)
        assert (not missed) if last == "pad" else missed == set(range(n - len(missed), n))
        assert len(missed) < stride
    bx, by = ds.get_batch(list(range(len(ds))))
    assert torch.equal(bx, torch.stack([ds[i][0] for i in range(len(ds))]))
    assert torch.equal(by, torch.stack([ds[i][1] for i in range(len(ds))]))


def test_verdict_exact_counts(shared_data, byte_tokenizer) -> None:
    text = (shared_data / "the-verdict.txt").read_text(encoding="utf-8")
    ids = encode_documents([Document("verdict", text)], byte_tokenizer)
    n = len(ids)
    assert n == len(text.encode("utf-8")) + 1  # bytes plus one end-of-text
    for max_length, stride in [(4, 4), (4, 1), (256, 128), (256, 256), (1024, 512)]:
        ds = WindowDataset(ids, max_length, stride)
        assert len(ds) == len(range(0, n - max_length, stride))
        x, y = ds[len(ds) - 1]
        s = (len(ds) - 1) * stride
        assert x.tolist() == ids[s : s + max_length].tolist()
        assert y.tolist() == ids[s + 1 : s + max_length + 1].tolist()
        bx, by = ds.get_batch([0, len(ds) - 1])
        assert torch.equal(bx[1], x) and torch.equal(by[1], y)


def test_memmap_is_not_copied(tmp_path) -> None:
    path = tmp_path / "ids.bin"
    np.arange(100, dtype=np.uint16).tofile(path)
    mm = np.memmap(path, dtype=np.uint16, mode="r")
    ds = WindowDataset(mm, 10, 5)
    assert ds.ids is mm
    x, y = ds[3]
    assert x.tolist() == list(range(15, 25)) and y.tolist() == list(range(16, 26))


def test_tensor_and_list_inputs() -> None:
    for ids in (list(range(20)), torch.arange(20), np.arange(20, dtype=np.int32)):
        x, y = WindowDataset(ids, 4, 4)[1]
        assert x.tolist() == [4, 5, 6, 7] and y.tolist() == [5, 6, 7, 8]


def test_too_short_names_both_numbers() -> None:
    with pytest.raises(DataError, match=r"corpus has 5 tokens.*max_length\+1 = 9"):
        WindowDataset(list(range(5)), 8, 4)
    assert len(WindowDataset(list(range(5)), 8, 4, last="pad", pad_id=0)) == 1


def test_bad_arguments() -> None:
    with pytest.raises(ValueError, match="stride"):
        WindowDataset(list(range(50)), 8, 0)
    with pytest.raises(ValueError, match="pad_id"):
        WindowDataset(list(range(50)), 8, 4, last="pad")
    with pytest.raises(IndexError):
        WindowDataset(list(range(50)), 8, 4)[100]


def test_encode_documents_separators(byte_tokenizer) -> None:
    docs = [Document("a", "hi"), Document("b", "yo")]
    ids = encode_documents(docs, byte_tokenizer, bos_id=257)
    assert ids.tolist() == [257, 104, 105, 256, 257, 121, 111, 256]
    assert ids.dtype == np.uint16 and token_dtype(100_000) == np.uint32


def test_verdict_gpt2_counts(shared_data) -> None:
    from scratchllm.tokenizer import BPETokenizer

    tok = BPETokenizer.from_gpt2_files(shared_data / "encoder.json", shared_data / "vocab.bpe")
    text = (shared_data / "the-verdict.txt").read_text(encoding="utf-8")
    ids = encode_documents([text], tok, eot=False)
    assert len(ids) == 5145  # "LLMs from scratch", chapter 2: the story is 5145 GPT-2 tokens
    for max_length, stride in [(4, 4), (4, 1), (256, 128), (256, 256)]:
        # the book's GPTDatasetV1 loop: for i in range(0, len(token_ids) - max_length, stride)
        expected = len(range(0, len(ids) - max_length, stride))
        assert len(WindowDataset(ids, max_length, stride)) == expected
    x, y = WindowDataset(ids, 4, 1)[0]
    # the book's first window ("I HAD always thought" -> "HAD always thought Jack")
    assert x.tolist() == [40, 367, 2885, 1464] and y.tolist() == [367, 2885, 1464, 1807]


def test_ids_outside_the_vocabulary_are_an_error_not_wrapped() -> None:
    with pytest.raises(DataError, match=r"'b': token id 70000 is outside .* vocab_size 65536"):
        encode_documents([Document("b", "hi")], WrongVocab())
