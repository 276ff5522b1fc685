from __future__ import annotations

import itertools
import json
import os
import random

import numpy as np
import pytest
import torch
from data_tokenizer import WrongVocab

from scratchllm.data.loaders import ShardSampler
from scratchllm.data.shards import open_shards, prepare_shards, read_index
from scratchllm.data.sources import Document, is_validation
from scratchllm.errors import DataError
from scratchllm.tokenizer import BPETokenizer


def corpus(n: int = 40) -> list[Document]:
    rng = random.Random(0)
    words = ["alpha", "beta", "gamma", "délta", "ε", "<|endoftext|>", "z"]
    return [
        Document(f"doc{i}", " ".join(rng.choice(words) for _ in range(rng.randrange(1, 60))))
        for i in range(n)
    ]


def prepare(docs, tok, out, **kw):
    kw.setdefault("shard_tokens", 300)
    kw.setdefault("chunk_bytes", 500)
    kw.setdefault("val_fraction", 0.25)
    kw.setdefault("workers", 1)
    return prepare_shards(docs, tok, out, source="corpus", **kw)


def shard_bytes(out) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(out.iterdir())}


def test_round_trip_decodes_to_documents(tmp_path, byte_tokenizer) -> None:
    docs = corpus()
    report = prepare(docs, byte_tokenizer, tmp_path)
    index = read_index(tmp_path)
    assert index.complete and index.settings.dtype == "uint16"
    assert len(index.splits["train"]) > 2  # several shards, documents straddling them
    assert all(s.tokens == 300 for s in index.splits["train"][:-1])
    for split in ("train", "val"):
        want = [d for d in docs if (split == "val") == is_validation(d.name, 0.25)]
        ids = np.concatenate(open_shards(tmp_path, split)).tolist()
        text = byte_tokenizer.decode(ids)
        assert text == "".join(d.text + "<|endoftext|>" for d in want)
        assert report.documents[split] == len(want) and report.tokens[split] == len(ids)
    assert report.text_bytes == sum(len(d.text.encode()) for d in docs)
    assert report.bytes_per_token < 1.0  # bytes tokenizer: one id per byte plus separators


def test_prepare_twice_is_byte_identical(tmp_path, byte_tokenizer) -> None:
    prepare(corpus(), byte_tokenizer, tmp_path / "a")
    prepare(corpus(), byte_tokenizer, tmp_path / "b")
    assert shard_bytes(tmp_path / "a") == shard_bytes(tmp_path / "b")
    before = shard_bytes(tmp_path / "a")
    report = prepare(corpus(), byte_tokenizer, tmp_path / "a")  # already complete: nothing to do
    assert report.resumed_from == 40 and shard_bytes(tmp_path / "a") == before


def interrupted(docs, after: int):
    for i, doc in enumerate(docs):
        if i == after:
            raise KeyboardInterrupt
        yield doc


@pytest.mark.parametrize("after", [1, 7, 23, 39])
def test_interrupted_prepare_resumes(tmp_path, byte_tokenizer, after: int) -> None:
    prepare(corpus(), byte_tokenizer, tmp_path / "full")
    with pytest.raises(KeyboardInterrupt):
        prepare(interrupted(corpus(), after), byte_tokenizer, tmp_path / "cut")
    assert not read_index(tmp_path / "cut").complete
    with pytest.raises(DataError, match="has not finished"):
        open_shards(tmp_path / "cut")
    for shard in (tmp_path / "cut").glob("train_*.bin"):  # bytes written after the last commit
        with open(shard, "ab") as fh:
            fh.write(b"\x01\x02junk")
    report = prepare(corpus(), byte_tokenizer, tmp_path / "cut")
    assert report.resumed_from <= after
    assert shard_bytes(tmp_path / "cut") == shard_bytes(tmp_path / "full")


def test_other_settings_refused_unless_overwrite(tmp_path, byte_tokenizer) -> None:
    prepare(corpus(), byte_tokenizer, tmp_path)
    with pytest.raises(DataError, match="shard_tokens: 300 -> 400"):
        prepare(corpus(), byte_tokenizer, tmp_path, shard_tokens=400)
    prepare(corpus(), byte_tokenizer, tmp_path, shard_tokens=400, overwrite=True)
    assert json.loads((tmp_path / "index.json").read_text())["settings"]["shard_tokens"] == 400


def test_empty_corpus_is_an_error(tmp_path, byte_tokenizer) -> None:
    with pytest.raises(DataError, match="no documents"):
        prepare([], byte_tokenizer, tmp_path)


def test_parallel_workers_and_long_documents(tmp_path) -> None:
    long_doc = Document("long", "\n".join(d.text for d in corpus(30)))  # cut into pieces
    docs = [*corpus(), long_doc]
    tok = BPETokenizer.train([d.text for d in docs], 300)
    prepare(docs, tok, tmp_path / "one", workers=1, val_fraction=0.0)
    prepare(docs, tok, tmp_path / "two", workers=2, val_fraction=0.0)
    assert shard_bytes(tmp_path / "one") == shard_bytes(tmp_path / "two")
    ids = np.concatenate(open_shards(tmp_path / "two", "train")).tolist()
    want = [t for d in docs for t in [*tok.encode_ordinary(d.text), tok.eot_id]]
    assert ids == want
    assert read_index(tmp_path / "two").documents("train") == len(docs)


def take(sampler: ShardSampler, k: int):
    return list(itertools.islice(sampler.batches(), k))


def test_shard_sampler_windows_and_resume(tmp_path, byte_tokenizer) -> None:
    prepare(corpus(), byte_tokenizer, tmp_path)
    shards = open_shards(tmp_path, "train")
    make = lambda: ShardSampler(shards, 4, 16, seed=3)  # noqa: E731
    reference = take(make(), 70)
    for x, y in reference:
        assert x.shape == y.shape == (4, 16) and torch.equal(x[:, 1:], y[:, :-1])
    # every row of every batch is a real window of 17 consecutive ids of one shard
    windows = {tuple(s[o : o + 17].tolist()) for s in shards for o in range(len(s) - 16)}
    for x, y in reference:
        for row_x, row_y in zip(x.tolist(), y.tolist()):
            assert tuple(row_x + row_y[-1:]) in windows
    rng = random.Random(1)
    for stop in (rng.randrange(0, 60) for _ in range(50)):
        sampler = make()
        take(sampler, stop)
        resumed = make()
        resumed.load_state_dict(sampler.state_dict())
        for (x, y), (rx, ry) in zip(take(resumed, 8), reference[stop : stop + 8]):
            assert torch.equal(x, rx) and torch.equal(y, ry)


def test_shard_sampler_too_short(byte_tokenizer) -> None:
    with pytest.raises(DataError, match=r"max_length\+1 = 65"):
        ShardSampler([np.arange(30, dtype=np.uint16)], 2, 64)


@pytest.mark.parametrize("crash_at_commit", [2, 4])
def test_one_big_document_commits_inside_and_resumes(
    tmp_path, killed_after_commit, crash_at_commit
):
    big = Document("big", "\n".join(d.text for d in corpus(40)))  # ~5 chunks of 500 bytes
    tok = BPETokenizer.train([big.text], 300)
    prepare([big], tok, tmp_path / "full", val_fraction=0.0)
    with killed_after_commit(crash_at_commit) as commits:
        prepare([big], tok, tmp_path / "cut", val_fraction=0.0)
    assert commits[-1][0] == 0 and commits[-1][1] > 0  # progress inside the one document
    assert 0 < read_index(tmp_path / "cut").text_bytes < len(big.text.encode())  # and its bytes
    prepare([big], tok, tmp_path / "cut", val_fraction=0.0)
    assert shard_bytes(tmp_path / "cut") == shard_bytes(tmp_path / "full")


def test_resume_inside_a_document_keeps_the_documents_after_it(tmp_path, killed_after_commit):
    """A resume inside a long document skips that document's written pieces only: the short and
    long documents after it are written whole."""
    big = Document("big", "\n".join(d.text for d in corpus(40)))  # ~5 pieces of 500 bytes
    docs = [big, Document("short", "alpha beta"), Document("big2", big.text[::-1]), *corpus(5)]
    tok = BPETokenizer.train([d.text for d in docs], 300)
    prepare(docs, tok, tmp_path / "full", val_fraction=0.0)
    with killed_after_commit(3):
        prepare(docs, tok, tmp_path / "cut", val_fraction=0.0)
    assert read_index(tmp_path / "cut").next_piece > 0  # interrupted inside `big`
    report = prepare(docs, tok, tmp_path / "cut", val_fraction=0.0)
    assert report.documents["train"] == len(docs)
    assert shard_bytes(tmp_path / "cut") == shard_bytes(tmp_path / "full")


def _orphan_check(fake_parent: int) -> None:
    import scratchllm.data.shard_workers as shard_workers

    try:
        shard_workers._exit_when_orphaned(fake_parent)  # exits with 1: the "parent" is not ours
    except BaseException:
        os._exit(3)
    os._exit(0)


def test_worker_exits_when_its_parent_is_gone() -> None:
    """Workers of a prepare killed with SIGTERM/SIGKILL end on their own instead of blocking
    forever on the result pipe; here the watched parent pid is one that is not the parent."""
    import multiprocessing

    child = multiprocessing.get_context("fork").Process(target=_orphan_check, args=(-1,))
    child.start()
    child.join(60)
    assert child.exitcode == 1


def test_ids_outside_the_vocabulary_are_an_error_not_wrapped(tmp_path) -> None:
    with pytest.raises(DataError, match=r"token id 70000 is outside .* vocab_size 65536"):
        prepare([Document("b", "hi")], WrongVocab(), tmp_path)


def test_resume_over_changed_files_is_refused(tmp_path, byte_tokenizer) -> None:
    """Resuming skips documents by count, so files added, removed or edited since the interrupted
    run would shift every later document: refused, naming the cause."""
    from scratchllm.data.shards import prepare_path

    corpus_dir = tmp_path / "corpus"
    corpus_dir.mkdir()
    for i in range(5):
        (corpus_dir / f"{i}.txt").write_text(f"document {i} " * 20)
    out = tmp_path / "shards"
    prepare_path(corpus_dir, byte_tokenizer, out, workers=1, val_fraction=0.2)
    prepare_path(corpus_dir, byte_tokenizer, out, workers=1, val_fraction=0.2)  # same: fine
    (corpus_dir / "0a.txt").write_text("inserted before the others")
    with pytest.raises(DataError, match="source files: their names or sizes changed"):
        prepare_path(corpus_dir, byte_tokenizer, out, workers=1, val_fraction=0.2)
    report = prepare_path(
        corpus_dir, byte_tokenizer, out, workers=1, val_fraction=0.2, overwrite=True
    )
    assert sum(report.documents.values()) == 6


def test_a_split_left_empty_is_warned_about(tmp_path, byte_tokenizer) -> None:
    """One document (a single file such as tinyshakespeare.txt) cannot be split by document:
    asking for validation data and getting none is said, not silent."""
    docs = [Document("only.txt", "to be or not to be " * 50)]
    with pytest.warns(UserWarning, match=r"val_fraction=0.1 sent no document to 'val'"):
        report = prepare(docs, byte_tokenizer, tmp_path, val_fraction=0.1)
    assert report.documents == {"train": 1, "val": 0}


def test_default_workers_follow_the_affinity_mask(monkeypatch) -> None:
    """Under `taskset -c 0` or a scheduler's CPU set, prepare starts one worker per CPU it may
    use, not one per CPU of the machine."""
    from scratchllm.system import available_cpus

    if not hasattr(os, "sched_getaffinity"):
        pytest.skip("no CPU affinity on this platform")
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {3})
    monkeypatch.setattr(os, "cpu_count", lambda: 64)
    assert available_cpus() == 1


def test_resume_over_a_damaged_shard_says_how_to_recover(tmp_path, byte_tokenizer) -> None:
    with pytest.raises(KeyboardInterrupt):
        prepare(interrupted(corpus(), 30), byte_tokenizer, tmp_path)
    shard = tmp_path / "train_000000.bin"
    shard.write_bytes(shard.read_bytes()[:10])
    with pytest.raises(DataError, match=r"train_000000.bin: missing or shorter .* --overwrite"):
        prepare(corpus(), byte_tokenizer, tmp_path)
    prepare(corpus(), byte_tokenizer, tmp_path, overwrite=True)
    assert read_index(tmp_path).complete


@pytest.mark.parametrize(
    "edit,message",
    [
        ({"splits": []}, "'list' object has no attribute 'get'"),
        ({"splits": None}, "'NoneType' object has no attribute 'get'"),
        ({"settings.dtype": "x"}, "settings.dtype must be one of ('uint16', 'uint32'), got 'x'"),
        ({"settings.dtype": 5}, "settings.dtype must be one of ('uint16', 'uint32'), got 5"),
        ({"settings.dtype": "float64"}, "settings.dtype must be one of"),
    ],
)
def test_an_edited_index_is_a_named_error(tmp_path, byte_tokenizer, edit, message) -> None:
    """A non-object 'splits' (AttributeError) and a dtype numpy cannot read, or one shards are
    never written in, were tracebacks from `data info`, `eval` and `pretrain --shards`."""
    prepare(corpus(), byte_tokenizer, tmp_path)
    path = tmp_path / "index.json"
    index = json.loads(path.read_text())
    for key, value in edit.items():
        node, *rest = key.split(".")
        if rest:
            index[node][rest[0]] = value
        else:
            index[node] = value
    path.write_text(json.dumps(index))
    with pytest.raises(DataError, match="index.json: not a valid shard index") as info:
        read_index(tmp_path)
    assert message in str(info.value)
