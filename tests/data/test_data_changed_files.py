"""`data prepare` reads a source file more than once: a file that changes in between is named
in a SourceChangedError, its half-written shards are discarded, and running again starts afresh."""

from __future__ import annotations

import json
import os

import pytest

import scratchllm.data.shard_workers as shard_workers
from scratchllm.data.shards import prepare_path, read_index
from scratchllm.data.sources import FileStamp, SourceChangedError, iter_file_text


def make_corpus(root, n: int = 3):
    root.mkdir()
    for i in range(n):
        (root / f"{i}.txt").write_text(f"document {i} says hello. " * 8)
    return root


def touch_later(path) -> None:
    """Move the modified time on by a second (file systems with coarse times too)."""
    st = path.stat()
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))


def change_after_first_chunk(monkeypatch, change) -> None:
    """Call ``change()`` once the first chunk (the first file) has been encoded."""
    real, calls = shard_workers._encode_pieces, []

    def encode(pieces):
        calls.append(1)
        if len(calls) == 1:
            change()
        return real(pieces)

    monkeypatch.setattr(shard_workers, "_encode_pieces", encode)


def shard_files(out) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(out.glob("*.bin"))}


KW = {"workers": 1, "chunk_bytes": 50, "shard_tokens": 64, "val_fraction": 0.0}


@pytest.mark.parametrize(
    ("name", "edit", "match"),
    [
        ("1.txt", "grow", r"1.txt changed while being prepared \(184 bytes, now 191\)"),
        ("1.txt", "same size", r"1.txt changed while being prepared \(modified"),
        ("1.txt", "replace", r"1.txt changed while being prepared \(replaced by another"),
        ("0.txt", "grow", r"0.txt changed while being prepared \(184 bytes, now 191\)"),
        ("2.txt", "remove", r"2.txt changed while being prepared \(it was removed\)"),
    ],
)
def test_a_file_changed_during_prepare_is_named_and_discarded(
    tmp_path, monkeypatch, byte_tokenizer, name, edit, match
) -> None:
    """A file not yet read (1.txt), one already read (0.txt: caught by the check at the end),
    edited in place, grown, replaced (a new inode, as editors save) or removed."""
    root = make_corpus(tmp_path / "corpus")
    path = root / name

    def change() -> None:
        text = path.read_text()
        if edit == "grow":
            path.write_text(text + "more...")
        elif edit == "same size":
            path.write_text(text.upper())
            touch_later(path)
        elif edit == "replace":
            (root / "new.tmp").write_text(text)
            os.replace(root / "new.tmp", path)
        else:
            path.unlink()

    change_after_first_chunk(monkeypatch, change)
    out = tmp_path / "shards"
    with pytest.raises(SourceChangedError, match=match + r".*discarded; run again"):
        prepare_path(root, byte_tokenizer, out, **KW)
    state = read_index(out)
    assert (state.next_document, state.tokens(), state.complete) == (0, 0, False)
    assert shard_files(out) == {}
    monkeypatch.undo()  # nothing changes now: a plain rerun completes, as a fresh run does
    report = prepare_path(root, byte_tokenizer, out, **KW)
    assert report.resumed_from == 0 and read_index(out).complete
    prepare_path(root, byte_tokenizer, tmp_path / "fresh", **KW)
    assert shard_files(out) == shard_files(tmp_path / "fresh")


def test_an_unchanged_run_passes_every_check(tmp_path, byte_tokenizer) -> None:
    root = make_corpus(tmp_path / "corpus")
    report = prepare_path(root, byte_tokenizer, tmp_path / "shards", **KW)
    assert report.documents["train"] == 3
    index = json.loads((tmp_path / "shards" / "index.json").read_text())
    assert index["settings"]["source_files"]  # recorded as before


def test_a_file_growing_while_it_is_streamed_is_caught_before_its_last_part(tmp_path) -> None:
    path = tmp_path / "log.txt"
    path.write_text("line\n" * 100)
    parts = iter_file_text(path, read_bytes=64, stamp=FileStamp.read(path))
    next(parts)
    with open(path, "a") as fh:
        fh.write("appended\n")
    with pytest.raises(SourceChangedError, match=r"log.txt changed while being read \(500 bytes"):
        list(parts)


def test_a_stamp_from_before_is_checked_when_the_file_is_opened(tmp_path) -> None:
    path = tmp_path / "a.txt"
    path.write_text("same size")
    stamp = FileStamp.read(path)
    touch_later(path)
    with pytest.raises(SourceChangedError, match=r"a.txt changed while being read \(modified"):
        next(iter_file_text(path, stamp=stamp))
    assert "".join(iter_file_text(path)) == "same size"  # no stamp: itself as opened


def test_a_file_changed_before_a_resume_reads_it_is_caught_too(
    tmp_path, monkeypatch, byte_tokenizer, killed_after_commit
) -> None:
    """A resume reads the documents already done again (to skip them): held to the stamps too."""
    import scratchllm.data.shards as shards

    root = make_corpus(tmp_path / "corpus")
    out = tmp_path / "shards"
    with killed_after_commit(2):
        prepare_path(root, byte_tokenizer, out, **KW)
    assert read_index(out).next_document >= 1
    real = shards.iter_file_documents

    def edited_after_stamping(files, *args, **kwargs):
        (root / "0.txt").write_text((root / "0.txt").read_text().upper())
        touch_later(root / "0.txt")
        return real(files, *args, **kwargs)

    monkeypatch.setattr(shards, "iter_file_documents", edited_after_stamping)
    with pytest.raises(SourceChangedError, match=r"0.txt changed while being prepared"):
        prepare_path(root, byte_tokenizer, out, **KW)
    assert read_index(out).next_document == 0 and shard_files(out) == {}


def test_a_jsonl_file_appended_to_while_it_is_read(tmp_path, monkeypatch, byte_tokenizer) -> None:
    path = tmp_path / "d.jsonl"
    path.write_text("".join(json.dumps({"text": f"record {i} " * 10}) + "\n" for i in range(5)))

    def append() -> None:
        with open(path, "a") as fh:
            fh.write(json.dumps({"text": "late"}) + "\n")

    change_after_first_chunk(monkeypatch, append)
    with pytest.raises(SourceChangedError, match=r"d.jsonl changed while being prepared"):
        prepare_path(path, byte_tokenizer, tmp_path / "shards", **KW)
