"""Parallel encoding of many texts and files gives the ids of a plain encode."""

from __future__ import annotations

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
