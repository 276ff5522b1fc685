"""A tiny byte-level stand-in tokenizer, so the data tests need no trained tokenizer, and a way
to kill ``data prepare`` right after one of its commits."""

from __future__ import annotations

import contextlib

import pytest
from data_tokenizer import ByteTokenizer  # noqa: E402


@pytest.fixture
def byte_tokenizer() -> ByteTokenizer:
    return ByteTokenizer()


@pytest.fixture
def killed_after_commit(monkeypatch):
    """``with killed_after_commit(n) as commits: prepare(...)``: the prepare raises
    KeyboardInterrupt right after writing its n-th index commit (as if killed then), which the
    block expects; ``commits`` holds (next_document, next_piece) of each commit."""
    import scratchllm.data.shards as shards

    @contextlib.contextmanager
    def kill(n: int):
        real, commits = shards._write_index, []

        def crashing(out, state):
            real(out, state)
            commits.append((state.next_document, state.next_piece))
            if len(commits) == n:
                raise KeyboardInterrupt  # killed right after this commit

        monkeypatch.setattr(shards, "_write_index", crashing)
        try:
            with pytest.raises(KeyboardInterrupt):
                yield commits
        finally:
            monkeypatch.setattr(shards, "_write_index", real)

    return kill
