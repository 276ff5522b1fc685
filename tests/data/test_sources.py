from __future__ import annotations

import json
import threading
import warnings
from pathlib import Path

import pytest

from scratchllm.data.sources import Document, read_text_sources, split_documents
from scratchllm.errors import DataError


def test_directory_recursive_sorted_with_globs(tmp_path) -> None:
    (tmp_path / "sub").mkdir()
    (tmp_path / "b.txt").write_text("bee")
    (tmp_path / "a.md").write_text("ay")
    (tmp_path / "sub" / "c.txt").write_text("sea")
    (tmp_path / "skip.txt").write_text("no")
    (tmp_path / "data.csv").write_text("x,y")
    docs = read_text_sources(tmp_path, exclude=["skip.*"])
    assert [(d.name, d.text) for d in docs] == [
        ("a.md", "ay"),
        ("b.txt", "bee"),
        ("sub/c.txt", "sea"),
    ]
    globbed = read_text_sources(str(tmp_path / "**" / "*.txt"))
    assert [d.text for d in globbed] == ["bee", "no", "sea"]


def test_missing_path_named(tmp_path) -> None:
    with pytest.raises(DataError, match="nope"):
        read_text_sources(tmp_path / "nope")


def test_empty_file_skipped_and_empty_corpus_refused(tmp_path) -> None:
    (tmp_path / "empty.txt").write_text("  \n")
    with pytest.warns(UserWarning, match="empty.txt"), pytest.raises(DataError, match="no text"):
        read_text_sources(tmp_path)
    (tmp_path / "full.txt").write_text("text")
    with pytest.warns(UserWarning, match="skipping empty"):
        assert [d.text for d in read_text_sources(tmp_path)] == ["text"]


def test_undecodable_bytes_replaced_and_counted(tmp_path) -> None:
    (tmp_path / "bad.txt").write_bytes(b"ok \xff\xfe ok \xc3")
    with pytest.warns(UserWarning, match=r"replaced 3 undecodable"):
        (doc,) = read_text_sources(tmp_path / "bad.txt")
    assert doc.text == "ok \ufffd\ufffd ok \ufffd"


def test_jsonl_field_and_line_numbers(tmp_path) -> None:
    path = tmp_path / "d.jsonl"
    path.write_text(
        "\n".join(json.dumps(r) for r in [{"body": "one"}, {"body": "two"}, {"x": 1}]) + "\n"
    )
    with pytest.raises(DataError, match=r"d.jsonl:3: record has no field 'body'"):
        read_text_sources(path, text_field="body")
    path.write_text('{"body": "one"}\n\n{"body": "two"}\n')
    docs = read_text_sources(path, text_field="body")
    assert [(d.name, d.text) for d in docs] == [("d.jsonl:1", "one"), ("d.jsonl:3", "two")]
    path.write_text('{"body": "one"}\nnot json\n')
    with pytest.raises(DataError, match=r"d.jsonl:2: not valid JSON"):
        read_text_sources(path, text_field="body")


def test_parquet_column(tmp_path) -> None:
    pa = pytest.importorskip("pyarrow")
    pq = pytest.importorskip("pyarrow.parquet")
    path = tmp_path / "d.parquet"
    pq.write_table(pa.table({"content": ["alpha", "", "beta"], "n": [1, 2, 3]}), path)
    with pytest.warns(UserWarning, match="skipped 1 empty"):
        docs = read_text_sources(path, column="content")
    assert [(d.name, d.text) for d in docs] == [("d.parquet#0", "alpha"), ("d.parquet#2", "beta")]
    with pytest.raises(DataError, match="no column 'text'"):
        read_text_sources(path)


def test_builtin_corpus() -> None:
    docs = read_text_sources("builtin")
    assert len(docs) > 10 and all(d.text for d in docs)
    assert len({d.name for d in docs}) == len(docs)


def test_split_by_document_is_deterministic() -> None:
    docs = [Document(f"doc{i}", f"text {i}") for i in range(50)]
    train, val = split_documents(docs, 0.2, seed=1)
    assert len(val) == 10 and len(train) == 40
    assert (train, val) == split_documents(docs, 0.2, seed=1)
    assert val != split_documents(docs, 0.2, seed=2)[1]
    assert {d.name for d in train}.isdisjoint(d.name for d in val)
    assert split_documents(docs[:2], 0.01)[1] != []


def test_directory_walk_skips_hidden_follows_links_once(tmp_path) -> None:
    """Hidden files and directories are left out (as glob does); a linked directory is walked,
    a symlink loop is not followed forever, and a file reached twice is read once."""
    root = tmp_path / "corpus"
    (root / "sub").mkdir(parents=True)
    (root / "sub" / "c.txt").write_text("sea")
    (root / "a.txt").write_text("ay")
    (root / ".hidden.txt").write_text("secret")
    (root / ".ipynb_checkpoints").mkdir()
    (root / ".ipynb_checkpoints" / "a-checkpoint.txt").write_text("old")
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "o.txt").write_text("out")
    (root / "linked").symlink_to(outside, target_is_directory=True)
    (root / "sub" / "loop").symlink_to(root, target_is_directory=True)
    (root / "z_again.txt").symlink_to(root / "a.txt")
    with pytest.warns(UserWarning, match=r"z_again.txt \(same file as a.txt\)"):
        docs = read_text_sources(root)
    assert [(d.name, d.text) for d in docs] == [
        ("a.txt", "ay"),
        ("linked/o.txt", "out"),
        ("sub/c.txt", "sea"),
    ]


def test_glob_names_are_relative_to_its_fixed_part(tmp_path, monkeypatch) -> None:
    """A glob names documents as the directory form does, wherever it is run from (the names
    decide the train/validation split), and honours exclude."""
    (tmp_path / "corpus" / "sub").mkdir(parents=True)
    (tmp_path / "corpus" / "b.txt").write_text("bee")
    (tmp_path / "corpus" / "sub" / "c.txt").write_text("sea")
    (tmp_path / "corpus" / "sub" / "skip.txt").write_text("no")
    absolute = read_text_sources(str(tmp_path / "corpus" / "**" / "*.txt"), exclude=["skip.*"])
    monkeypatch.chdir(tmp_path)
    relative = read_text_sources("corpus/**/*.txt", exclude=["skip.*"])
    names = [d.name for d in read_text_sources(tmp_path / "corpus", exclude=["skip.*"])]
    assert [d.name for d in absolute] == [d.name for d in relative] == names
    assert names == ["b.txt", "sub/c.txt"]


def test_bom_and_windows_newlines(tmp_path) -> None:
    """A UTF-8 byte order mark is not text, and CRLF/CR read as LF (as Python's text mode): the
    same text saved by a Windows editor gives the same document."""
    (tmp_path / "win.txt").write_bytes(b"\xef\xbb\xbfline one\r\nline two\rthree\r\n")
    (doc,) = read_text_sources(tmp_path / "win.txt")
    assert doc.text == "line one\nline two\nthree\n"
    path = tmp_path / "win.jsonl"
    path.write_bytes(b'\xef\xbb\xbf{"text": "a\\r\\nb"}\r\n{"text": "c"}\r\n')
    docs = read_text_sources(path)
    assert [(d.name, d.text) for d in docs] == [("win.jsonl:1", "a\r\nb"), ("win.jsonl:2", "c")]


def test_jsonl_record_errors_name_line_and_what_is_there(tmp_path) -> None:
    path = tmp_path / "d.jsonl"
    path.write_text('{"text": "ok"}\n["a", "list"]\n')
    with pytest.raises(DataError, match=r"d.jsonl:2: record is a JSON list, not an object"):
        read_text_sources(path)
    path.write_text('{"body": "x", "id": 1}\n')
    with pytest.raises(DataError, match=r"d.jsonl:1: record has no field 'text' \(fields: 'body'"):
        read_text_sources(path)


def test_parquet_column_that_is_not_text(tmp_path) -> None:
    pa = pytest.importorskip("pyarrow")
    pq = pytest.importorskip("pyarrow.parquet")
    path = tmp_path / "d.parquet"
    pq.write_table(pa.table({"text": [1, 2], "body": ["a", None]}), path)
    with pytest.raises(DataError, match=r"d.parquet: column 'text' holds int64, not text"):
        read_text_sources(path)
    with pytest.warns(UserWarning, match=r"skipped 1 empty or null row"):
        assert [d.text for d in read_text_sources(path, column="body")] == ["a"]


def test_binary_file_refused_naming_it(tmp_path) -> None:
    """A gzip file (or UTF-16 text) read as UTF-8 would be noise with U+FFFD everywhere."""
    import gzip

    (tmp_path / "a.txt").write_bytes(gzip.compress(b"some text " * 100))
    with pytest.raises(DataError, match=r"a.txt: not UTF-8 text \(a NUL byte at offset \d+\)"):
        read_text_sources(tmp_path)
    (tmp_path / "a.txt").write_text("hello", encoding="utf-16")
    with pytest.raises(DataError, match="UTF-16"):
        read_text_sources(tmp_path / "a.txt")


def test_jsonl_bad_bytes_warned_once_per_file(tmp_path) -> None:
    path = tmp_path / "d.jsonl"
    path.write_bytes(b"".join(b'{"text": "x\xff %d"}\n' % i for i in range(50)))
    with pytest.warns(UserWarning) as caught:
        docs = read_text_sources(path)
    assert len(docs) == 50 and docs[0].text == "x\ufffd 0"
    messages = [str(w.message) for w in caught]
    assert messages == [
        f"{path}: replaced 50 undecodable byte sequence(s) with U+FFFD on 50 "
        "line(s) (1, 2, 3, 4, 5 ...)"
    ]


def test_glob_through_a_symlink_loop_keeps_the_short_names(tmp_path) -> None:
    """A ``**`` glob does not follow a link back to an ancestor (glob.glob did, until the OS
    stopped it, and then warned about every file read twice): each file once, under the name the
    directory walk gives it."""
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "loop").symlink_to(tmp_path, target_is_directory=True)
    (tmp_path / "z.txt").write_text("zed")
    (tmp_path / "sub" / "a.txt").write_text("ay")
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # nothing reached twice, so nothing to warn about
        docs = read_text_sources(str(tmp_path / "**" / "*.txt"))
    assert [(d.name, d.text) for d in docs] == [("sub/a.txt", "ay"), ("z.txt", "zed")]
    assert [d.name for d in read_text_sources(tmp_path)] == ["sub/a.txt", "z.txt"]


def test_glob_through_two_symlink_loops_ends(tmp_path) -> None:
    """Two links back to the root: glob.glob's ``**`` took 2**40 paths (it never ended)."""
    for name in ("a", "b"):
        (tmp_path / "corpus" / name).mkdir(parents=True)
        (tmp_path / "corpus" / name / "up").symlink_to("..", target_is_directory=True)
        (tmp_path / "corpus" / name / f"{name}.md").write_text(name)
    (tmp_path / "corpus" / "top.txt").write_text("top")
    found: list = []
    worker = threading.Thread(
        target=lambda: found.extend(read_text_sources(str(tmp_path / "corpus" / "**" / "*"))),
        daemon=True,
    )
    worker.start()
    worker.join(timeout=30)
    assert not worker.is_alive(), "the glob walk did not end"
    assert [d.name for d in found] == ["a/a.md", "b/b.md", "top.txt"]


@pytest.mark.parametrize(
    ("pattern", "names"),
    [
        ("**/*.txt", ["a.txt", "d/b.txt", "d/e/c.txt"]),
        ("d/**/*.txt", ["b.txt", "e/c.txt"]),
        ("**/e/*.txt", ["d/e/c.txt"]),
        ("d/**", ["b.txt", "e/c.txt", "e/x.md"]),
        ("*/*.txt", ["d/b.txt"]),
        ("**/?.md", ["d/e/x.md"]),
    ],
)
def test_glob_patterns_match_as_glob_does(tmp_path, monkeypatch, pattern, names) -> None:
    import glob

    for rel in ("a.txt", "d/b.txt", "d/e/c.txt", "d/e/x.md", "d/.hidden/h.txt"):
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_text(rel)
    monkeypatch.chdir(tmp_path)
    docs = read_text_sources(pattern, include=["*"])
    assert [d.name for d in docs] == names
    base = tmp_path / pattern.split("**")[0] if "**" in pattern else tmp_path
    by_glob = sorted(p for p in glob.glob(pattern, recursive=True) if Path(p).is_file())
    assert [Path(p).relative_to(base.relative_to(tmp_path)).as_posix() for p in by_glob] == names


def test_directory_walk_lists_each_directory_once(tmp_path, monkeypatch) -> None:
    """A link back to an ancestor (or a second link to a directory) is not listed again."""
    import os

    root = tmp_path / "corpus"
    (root / "a" / "deep").mkdir(parents=True)
    (root / "a" / "deep" / "x.txt").write_text("x")
    (root / "a" / "up").symlink_to("..", target_is_directory=True)
    (root / "a" / "deep" / "top").symlink_to(root, target_is_directory=True)
    (root / "b").symlink_to(root / "a", target_is_directory=True)
    listed: list[str] = []
    real = os.scandir

    def scandir(path):
        listed.append(os.path.realpath(path))
        return real(path)

    monkeypatch.setattr(os, "scandir", scandir)
    assert [d.name for d in read_text_sources(root)] == ["a/deep/x.txt"]
    assert sorted(listed) == sorted({str(root), str(root / "a"), str(root / "a" / "deep")})
