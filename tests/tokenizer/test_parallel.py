"""Parallel encoding of many texts and files gives the ids of a plain encode."""

from __future__ import annotations

import regex
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from scratchllm.tokenizer import encode_files, encode_many
from scratchllm.tokenizer.parallel import split_for_workers


def test_encode_many_matches(small_bpe, sample_text):
    texts = [sample_text[i : i + 300] for i in range(0, 3000, 300)]
    expected = [small_bpe.encode(t) for t in texts]
    assert encode_many(small_bpe, texts, processes=1) == expected
    assert encode_many(small_bpe, texts, processes=2) == expected


def test_safe_split_preserves_ids(gpt2, data_dir):
    text = (data_dir / "tinyshakespeare.txt").read_text(encoding="utf-8")[:300_000]
    for tok in (gpt2,):
        parts = split_for_workers(text, tok.pattern, chunk_chars=20_000)
        assert len(parts) > 10 and "".join(parts) == text
        assert sum((tok.encode(p) for p in parts), []) == tok.encode(text)


# Lines of letters, digits, punctuation and whitespace runs (the cuts sit after newlines).
PIECES = ["a", "b", "1", ".", "'s", " ", "  ", "\n", "\n\n", "\r\n", "\t", " \n", "\n ", "é"]
LINES = st.lists(st.one_of(st.sampled_from(PIECES), st.characters()), max_size=60).map("".join)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(text=LINES, chunk_chars=st.integers(1, 12))
def test_any_split_encodes_like_the_whole(small_bpe, small_bpe_gpt4, text, chunk_chars):
    """Wherever the cuts fall, the parts join back to the text, the pre-tokenizer splits them into
    the pieces of the whole (so no vocabulary can merge across a cut), and their ids are the ids of
    the whole, under both the GPT-2 and the GPT-4 pattern."""
    for tok in (small_bpe, small_bpe_gpt4):
        parts = split_for_workers(text, tok.pattern, chunk_chars=chunk_chars)
        assert "".join(parts) == text
        assert all(len(p) >= chunk_chars for p in parts[:-1])  # no cut before chunk_chars
        pieces = [piece for p in parts for piece in regex.findall(tok.pattern, p)]
        assert pieces == regex.findall(tok.pattern, text)
        ids = tok.encode(text, disallowed_special=())
        assert sum((tok.encode(p, disallowed_special=()) for p in parts), []) == ids


def test_encode_files(small_bpe, sample_text, tmp_path):
    paths = []
    for i in range(3):
        path = tmp_path / f"{i}.txt"
        path.write_text(sample_text * (i + 1))
        paths.append(path)
    arrays = encode_files(small_bpe, paths, processes=2, append_eot=True)
    for path, arr in zip(paths, arrays):
        assert arr.tolist() == small_bpe.encode(path.read_text()) + [small_bpe.eot_id]


def test_encode_files_keeps_carriage_returns(small_bpe, tmp_path, capsys, monkeypatch):
    import io

    from scratchllm.cli import main

    raw = "a\r\nb\rc\n" * 5
    path = tmp_path / "crlf.txt"
    path.write_bytes(raw.encode())
    (ids,) = encode_files(small_bpe, [path], processes=1)
    assert ids.tolist() == small_bpe.encode(raw)
    small_bpe.save(tmp_path / "tok")
    assert (
        main(["tokenizer", "encode", "--tokenizer", str(tmp_path / "tok"), "--file", str(path)])
        == 0
    )
    from_file = capsys.readouterr().out
    monkeypatch.setattr("sys.stdin", io.StringIO(raw, newline=""))
    assert main(["tokenizer", "encode", "--tokenizer", str(tmp_path / "tok")]) == 0
    assert capsys.readouterr().out == from_file
