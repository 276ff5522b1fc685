"""Word2Vec: planted co-occurrence structure is recovered; data, vectors and files behave."""

from __future__ import annotations

import random

import numpy as np
import pytest

from scratchllm.errors import ConfigError, DataError
from scratchllm.lineage.word2vec import (
    Word2VecConfig,
    Word2VecLoader,
    WordVectors,
    default_train_config,
    keep_probabilities,
    load_vectors,
    token_label,
    train_word2vec,
)

GROUPS = {"animal": [f"cat{i}" for i in range(8)], "tool": [f"saw{i}" for i in range(8)]}


def planted_corpus(n: int = 300, seed: int = 0) -> list[str]:
    """Sentences whose words all come from one group: words co-occur only within their group."""
    rng = random.Random(seed)
    return [" ".join(rng.choices(GROUPS[rng.choice(list(GROUPS))], k=8)) for _ in range(n)]


@pytest.mark.parametrize("mode", ["skipgram", "cbow"])
def test_neighbours_come_from_the_same_group(mode, tmp_path):
    train = default_train_config(max_steps=150, batch_size=256, lr=2e-2, device="cpu")
    run = train_word2vec(
        planted_corpus(), min_count=1, dim=16, mode=mode, window=3, train=train, out_dir=tmp_path
    )
    group_of = {w: g for g, words in GROUPS.items() for w in words}
    assert set(run.vectors.words) == set(group_of)  # specials are not vectors
    for word, group in group_of.items():
        found = [w for w, _ in run.vectors.neighbours(word, 5)]
        assert all(group_of[w] == group for w in found), (word, found)
    loaded = load_vectors(tmp_path)  # the run directory's vectors.txt
    assert loaded.neighbours("cat0", 3)[0][0] == run.vectors.neighbours("cat0", 3)[0][0]
    assert (tmp_path / "metrics.jsonl").is_file() and (tmp_path / "config.json").is_file()


def test_pairs_stay_inside_the_window_and_the_document():
    docs = [np.arange(3, 13), np.arange(20, 25)]
    cfg = Word2VecConfig(vocab_size=30, window=2, subsample=0.0)
    inputs, mask, targets = Word2VecLoader(docs, cfg, 8).epoch_pairs(0)
    assert inputs.shape[1] == 1 and mask.all()
    centre, context = inputs[:, 0], targets
    assert (np.abs(centre - context) <= 2).all() and (centre != context).all()
    assert ((centre < 20) == (context < 20)).all()  # never across documents
    cbow_cfg = Word2VecConfig(vocab_size=30, window=2, subsample=0.0, mode="cbow")
    ctx, ctx_mask, centres = Word2VecLoader(docs, cbow_cfg, 8).epoch_pairs(0)
    assert ctx.shape == (15, 4) and ctx_mask.any(axis=1).all()
    assert (np.abs(ctx - centres[:, None])[ctx_mask] <= 2).all()


def test_loader_resumes_exactly_and_ignores_specials():
    docs = [np.array([0, 5, 6, 7, 0, 8, 9] * 20)]
    cfg = Word2VecConfig(vocab_size=10, window=2, negatives=3)
    loader = Word2VecLoader(docs, cfg, 16, seed=3, ignore_ids=[0])
    assert loader.counts[0] == 0
    it = loader.batches()
    next(it)
    state = loader.state_dict()
    expected = next(it)
    again = Word2VecLoader(docs, cfg, 16, seed=3, ignore_ids=[0])
    again.load_state_dict(state)
    for a, b in zip(next(again.batches()), expected, strict=True):
        assert a.equal(b)
    assert expected[2].shape == (16, 4) and expected[2].max() < 10


def test_subsampling_keeps_rare_words_and_thins_frequent_ones():
    p = keep_probabilities(np.array([0, 1, 10, 100_000]), 1e-3)
    assert p[0] == 0 and p[1] == 1.0 and p[2] == 1.0 and 0 < p[3] < 0.2
    assert (keep_probabilities(np.array([5, 5]), 0.0) == 1).all()


def test_vectors_cosine_analogy_and_text_format(tmp_path):
    words = ["man", "woman", "king", "queen", "apple"]
    vecs = np.array([[1, 0, 0], [1, 1, 0], [1, 0, 1], [1, 1, 1], [-1, 0, 0]], dtype=np.float32)
    wv = WordVectors(words, vecs)
    assert wv.neighbours("king", 1)[0][0] == "queen"
    assert wv.analogy("man", "woman", "king", 1)[0][0] == "queen"
    assert wv.similarity("man", "apple") == pytest.approx(-1.0)
    path = wv.save_word2vec(tmp_path / "v.txt")
    assert path.read_text().splitlines()[0] == "5 3"
    back = WordVectors.load_word2vec(path)
    assert back.words == words and np.allclose(back.vectors, vecs)
    with pytest.raises(DataError, match="not among"):
        wv.neighbours("banana")
    (tmp_path / "bad.txt").write_text("2 3\nx 1 2\n")
    with pytest.raises(DataError, match="bad.txt:2"):
        WordVectors.load_word2vec(tmp_path / "bad.txt")


def test_vectors_from_a_directory_whose_config_is_not_an_object(tmp_path):
    """config.json holding a JSON list was an AttributeError traceback (list has no .get)."""
    from scratchllm.errors import CheckpointError
    from scratchllm.lineage.word2vec import load_vectors

    (tmp_path / "config.json").write_text("[1]")
    with pytest.raises(CheckpointError, match="config.json: not a scratchllm run config"):
        load_vectors(tmp_path)


def test_token_labels_have_no_whitespace():
    assert token_label(" the") == "\u2581the"
    assert token_label("\n") == "\\n"
    assert WordVectors(["\u2581the"], np.ones((1, 2))).lookup("the") == 0


def test_config_errors():
    with pytest.raises(ConfigError, match="mode"):
        Word2VecConfig(vocab_size=10, mode="glove")
    with pytest.raises(ConfigError, match="window"):
        Word2VecConfig(vocab_size=10, window=0)


def test_tinyshakespeare_slice_gives_related_pronouns(shared_data):
    text = (shared_data / "tinyshakespeare.txt").read_text(encoding="utf-8")[:300_000]
    lines = [text]
    train = default_train_config(max_steps=300, batch_size=1024, device="cpu")
    run = train_word2vec(lines, min_count=3, dim=32, train=train)
    found = {w for w, _ in run.vectors.neighbours("thou", 15)}
    archaic = {"thee", "thy", "thyself", "art", "dost", "hast", "wilt", "shalt", "canst", "wouldst"}
    assert found & archaic, found
