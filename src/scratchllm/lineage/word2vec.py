"""Word2Vec (Mikolov et al. 2013): skip-gram or CBOW with negative sampling, on our tokenizers.

The first widely used learned token embeddings, and the ancestor of a GPT's input embedding
table. Training pairs come from a sliding window over the token stream; the loss asks that the
score u_context . v_input of a real pair be high and that of `negatives` noise tokens be low:

    loss = -log sigmoid(u_o . v) - sum_k log sigmoid(-u_k . v),   u_k ~ unigram^0.75

skip-gram: v = v_center, predict each context token;  CBOW: v = mean(v_context), predict center.
Frequent tokens are subsampled (token w kept with probability (sqrt(f/t) + 1) t/f, f its share
of the corpus, as in the reference C implementation), which speeds training and improves rare
words. Training runs through the shared `Trainer`; vectors are compared by cosine similarity and
exported in the plain-text word2vec format ("V D" header, then "token v1 .. vD" per line).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from scratchllm.errors import ConfigError, DataError
from scratchllm.train.config import TrainConfig

MODES = ("skipgram", "cbow")
SPACE_MARK = "\u2581"  # stands for a space inside a token (BPE tokens start with one)


@dataclass
class Word2VecConfig:
    vocab_size: int  # ids of the tokenizer the vectors belong to
    dim: int = 100  # vector size
    mode: str = "skipgram"  # "skipgram" (center predicts context) | "cbow" (context -> center)
    window: int = 5  # largest distance; each center draws its own window from 1..window
    negatives: int = 5  # noise tokens per positive pair
    subsample: float = 1e-3  # threshold t of frequent-token subsampling; 0 keeps every token
    ns_exponent: float = 0.75  # noise distribution = unigram counts ** ns_exponent

    def __post_init__(self) -> None:
        for name in ("vocab_size", "dim", "window", "negatives"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ConfigError(f"Word2VecConfig.{name}={value!r} must be a positive integer")
        if self.mode not in MODES:
            raise ConfigError(f"Word2VecConfig.mode={self.mode!r} must be one of {MODES}")
        if self.subsample < 0:
            raise ConfigError(f"Word2VecConfig.subsample={self.subsample} must be >= 0")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Word2VecConfig:
        unknown = sorted(set(d) - {f.name for f in fields(cls)})
        if unknown:
            raise ConfigError(f"unknown Word2VecConfig field(s): {', '.join(unknown)}")
        return cls(**d)


class Word2Vec(nn.Module):
    """Input vectors v (the embeddings one keeps) and output vectors u (used only to train)."""

    def __init__(self, cfg: Word2VecConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.in_embed = nn.Embedding(cfg.vocab_size, cfg.dim)
        self.out_embed = nn.Embedding(cfg.vocab_size, cfg.dim)
        # The reference implementation's init: small uniform inputs, zero outputs.
        nn.init.uniform_(self.in_embed.weight, -0.5 / cfg.dim, 0.5 / cfg.dim)
        nn.init.zeros_(self.out_embed.weight)

    def forward(self, inputs: Tensor, input_mask: Tensor, candidates: Tensor) -> Tensor:
        """Scores [B, 1+K] of candidates [B, 1+K] (the true target first) for the mean input
        vector of inputs [B, W] (W = 1 for skip-gram, the context for CBOW; mask 0 = unused)."""
        mask = input_mask.to(self.in_embed.weight.dtype)[..., None]  # [B, W, 1]
        v = (self.in_embed(inputs) * mask).sum(1) / mask.sum(1).clamp(min=1.0)  # [B, D]
        return torch.einsum("bd,bkd->bk", v, self.out_embed(candidates))  # [B, 1+K]

    @property
    def vectors(self) -> Tensor:
        """The learned embeddings [V, D]."""
        return self.in_embed.weight


def negative_sampling_loss(model: nn.Module, batch: Any) -> tuple[Tensor, int]:
    """Mean over pairs of -log s(u_o.v) - sum_k log s(-u_k.v); `loss_fn` for the `Trainer`."""
    inputs, mask, candidates = batch
    scores = model(inputs, mask, candidates)  # [B, 1+K]
    loss = -(F.logsigmoid(scores[:, 0]) + F.logsigmoid(-scores[:, 1:]).sum(-1)).mean()
    return loss, int(candidates.shape[0])


# ------------------------------------------------------------------------------------- data


def keep_probabilities(counts: np.ndarray, t: float) -> np.ndarray:
    """P(keep) per token id: (sqrt(f/t) + 1) * t/f clipped to 1; all ones when t == 0."""
    if t == 0:
        return np.ones(len(counts))
    f = counts / max(counts.sum(), 1)
    with np.errstate(divide="ignore", invalid="ignore"):
        p = (np.sqrt(f / t) + 1.0) * t / f
    return np.where(counts > 0, np.minimum(p, 1.0), 0.0)


class Word2VecLoader:
    """Endless batches (inputs [B, W], mask [B, W], candidates [B, 1+K]); each epoch redraws
    subsampling and windows. Resumable: everything random is seeded by (seed, epoch, position)."""

    def __init__(
        self,
        docs: Sequence[np.ndarray],
        cfg: Word2VecConfig,
        batch_size: int,
        *,
        seed: int = 0,
        ignore_ids: Sequence[int] = (),
    ) -> None:
        ignore = np.zeros(cfg.vocab_size, dtype=bool)
        ignore[list(ignore_ids)] = True
        self.docs = [
            np.asarray(d, dtype=np.int64)[~ignore[np.asarray(d, dtype=np.int64)]] for d in docs
        ]
        self.counts = np.bincount(np.concatenate(self.docs), minlength=cfg.vocab_size)
        if self.counts.sum() < 2:
            raise DataError("word2vec needs at least two (non-special) tokens of text")
        self.cfg, self.batch_size, self.seed = cfg, batch_size, seed
        self.keep = keep_probabilities(self.counts, cfg.subsample)
        noise = self.counts.astype(np.float64) ** cfg.ns_exponent
        self.noise_cdf = np.cumsum(noise / noise.sum())
        self.epoch, self.pos = 0, 0
        self._pairs: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None

    def epoch_pairs(self, epoch: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(inputs [N, W], mask [N, W], targets [N]) of one epoch, shuffled."""
        rng = np.random.default_rng([self.seed, epoch])
        kept = [d[rng.random(len(d)) < self.keep[d]] for d in self.docs]
        ids = np.concatenate(kept)
        doc = np.concatenate([np.full(len(d), i) for i, d in enumerate(kept)])
        n, w = len(ids), self.cfg.window
        reach = rng.integers(1, w + 1, size=n)  # each center's own window (closer = likelier)
        # Context slot j of center i sits at offset d = +-(1..w); valid if inside the window and
        # the same document.
        offsets = np.concatenate([-np.arange(w, 0, -1), np.arange(1, w + 1)])  # [2w]
        where = np.arange(n)[:, None] + offsets[None]  # [N, 2w]
        inside = (where >= 0) & (where < n) & (np.abs(offsets)[None] <= reach[:, None])
        where = np.clip(where, 0, n - 1)
        inside &= doc[where] == doc[:, None]
        context = ids[where]
        if self.cfg.mode == "skipgram":
            centre_idx, slot = np.nonzero(inside)
            inputs, targets = ids[centre_idx][:, None], context[centre_idx, slot]
            mask = np.ones_like(inputs, dtype=bool)
        else:
            rows = inside.any(axis=1)
            inputs, mask, targets = context[rows], inside[rows], ids[rows]
        order = rng.permutation(len(targets))
        return inputs[order], mask[order], targets[order]

    def batches(self) -> Iterator[tuple[Tensor, Tensor, Tensor]]:
        while True:
            if self._pairs is None:
                self._pairs = self.epoch_pairs(self.epoch)
            inputs, mask, targets = self._pairs
            if self.pos >= len(targets):
                self.epoch, self.pos, self._pairs = self.epoch + 1, 0, None
                continue
            end = self.pos + self.batch_size
            rng = np.random.default_rng([self.seed, self.epoch, self.pos, 1])
            noise = np.searchsorted(
                self.noise_cdf, rng.random((len(targets[self.pos : end]), self.cfg.negatives))
            )
            noise = np.minimum(noise, self.cfg.vocab_size - 1)  # guard float round-off at 1.0
            candidates = np.concatenate([targets[self.pos : end, None], noise], axis=1)
            batch = (inputs[self.pos : end], mask[self.pos : end], candidates)
            self.pos = end
            yield tuple(torch.from_numpy(np.ascontiguousarray(x)) for x in batch)  # type: ignore[misc]

    def state_dict(self) -> dict[str, Any]:
        return {"epoch": self.epoch, "pos": self.pos}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.epoch, self.pos, self._pairs = int(state["epoch"]), int(state["pos"]), None


# ---------------------------------------------------------------------------------- vectors


def token_label(text: str) -> str:
    """A token's text as one whitespace-free word (the word2vec text format splits on spaces)."""
    return (
        "".join(
            SPACE_MARK if ch == " " else (repr(ch)[1:-1] if ch.isspace() else ch) for ch in text
        )
        or "<empty>"
    )


class WordVectors:
    """Named vectors with cosine-similarity neighbours and analogies."""

    def __init__(self, words: Sequence[str], vectors: np.ndarray | Tensor) -> None:
        if isinstance(vectors, Tensor):
            vectors = vectors.detach().float().cpu().numpy()
        vectors = np.asarray(vectors, dtype=np.float32)
        if vectors.ndim != 2 or vectors.shape[0] != len(words):
            raise DataError(f"{len(words)} words but vectors of shape {vectors.shape}")
        self.words = list(words)
        self.vectors = vectors
        self.index = {w: i for i, w in enumerate(self.words)}  # a later duplicate wins
        norms = np.linalg.norm(vectors, axis=1, keepdims=True)
        self.unit = vectors / np.maximum(norms, 1e-12)

    def __len__(self) -> int:
        return len(self.words)

    @property
    def dim(self) -> int:
        return self.vectors.shape[1]

    def lookup(self, word: str) -> int:
        """Row of `word`; also tries lowercase and the space-prefixed form BPE tokens have."""
        for cand in (word, word.lower(), SPACE_MARK + word, SPACE_MARK + word.lower()):
            if cand in self.index:
                return self.index[cand]
        raise DataError(f"word {word!r} is not among the {len(self)} vectors")

    def nearest(
        self, vector: np.ndarray, k: int = 10, exclude: Sequence[int] = ()
    ) -> list[tuple[str, float]]:
        """The k words whose vectors have the highest cosine with `vector`."""
        if k < 1:
            raise ConfigError(f"k must be >= 1, got {k}")
        v = np.asarray(vector, dtype=np.float32)
        sims = self.unit @ (v / max(float(np.linalg.norm(v)), 1e-12))
        sims[list(exclude)] = -np.inf
        top = np.argsort(-sims, kind="stable")[:k]
        return [(self.words[i], float(sims[i])) for i in top if np.isfinite(sims[i])]

    def neighbours(self, word: str, k: int = 10) -> list[tuple[str, float]]:
        i = self.lookup(word)
        return self.nearest(self.unit[i], k, exclude=[i])

    def similarity(self, a: str, b: str) -> float:
        return float(self.unit[self.lookup(a)] @ self.unit[self.lookup(b)])

    def analogy(self, a: str, b: str, c: str, k: int = 5) -> list[tuple[str, float]]:
        """a is to b as c is to ?: nearest to b - a + c (unit vectors), inputs excluded."""
        ia, ib, ic = self.lookup(a), self.lookup(b), self.lookup(c)
        return self.nearest(self.unit[ib] - self.unit[ia] + self.unit[ic], k, exclude=[ia, ib, ic])

    def save_word2vec(self, path: str | Path) -> Path:
        """Plain-text word2vec format: "V D", then one "word v1 ... vD" line per word."""
        from scratchllm.train.checkpoint import atomic_write_bytes

        lines = [f"{len(self)} {self.dim}"]
        for word, vec in zip(self.words, self.vectors, strict=True):
            lines.append(word + " " + " ".join(f"{x:.6g}" for x in vec))
        path = Path(path)
        atomic_write_bytes(path, ("\n".join(lines) + "\n").encode("utf-8"))
        return path

    @classmethod
    def load_word2vec(cls, path: str | Path) -> WordVectors:
        path = Path(path)
        try:
            lines = path.read_text(encoding="utf-8").splitlines()
        except FileNotFoundError:
            raise DataError(f"{path}: file not found") from None
        try:
            n, d = (int(x) for x in lines[0].split())
        except (IndexError, ValueError):
            raise DataError(f"{path}:1: expected a 'count dim' header") from None
        words, rows = [], []
        for lineno, line in enumerate(lines[1 : n + 1], start=2):
            parts = line.rstrip().split(" ")
            if len(parts) != d + 1:
                raise DataError(f"{path}:{lineno}: expected a word and {d} numbers")
            try:
                rows.append([float(x) for x in parts[1:]])
            except ValueError:
                raise DataError(f"{path}:{lineno}: not a number in {parts[1:]!r}") from None
            words.append(parts[0])
        if len(words) != n:
            raise DataError(f"{path}: header says {n} vectors, file has {len(words)}")
        return cls(words, np.array(rows, dtype=np.float32).reshape(n, d))

    @classmethod
    def from_embedding(
        cls, weight: Tensor | np.ndarray, tokenizer: Any, skip_ids: Sequence[int] = ()
    ) -> WordVectors:
        """The rows of an embedding table [V, D], named by the tokenizer's tokens."""
        skip = set(skip_ids)
        keep = [i for i in range(len(weight)) if i not in skip]
        words = [token_label(tokenizer.decode([i])) for i in keep]
        rows = weight[keep] if isinstance(weight, np.ndarray) else weight.detach()[keep]
        return cls(words, rows)


def special_ids(tokenizer: Any) -> list[int]:
    """Ids of the tokenizer's special tokens (never trained as words)."""
    return sorted(set((getattr(tokenizer, "special_tokens", None) or {}).values()))


def default_train_config(**overrides: Any) -> TrainConfig:
    """Settings that suit word2vec: big batches of pairs, Adam at 1e-2, no clipping or decay."""
    base = dict(
        max_steps=2000,
        batch_size=1024,
        lr=1e-2,
        min_lr=1e-3,
        warmup_steps=50,
        weight_decay=0.0,
        grad_clip=0.0,
        eval_interval=10**9,  # no validation set: the loop evaluates only at the end (a no-op)
        log_interval=50,
    )
    return TrainConfig(**(base | overrides))


# ------------------------------------------------------------------------------ train and runs

W2V_FORMAT = "scratchllm-word2vec"
VECTORS_FILE = "vectors.txt"


@dataclass
class Word2VecRun:
    model: Word2Vec
    tokenizer: Any
    vectors: WordVectors  # input vectors of every non-special token seen in training
    result: Any  # the Trainer's TrainResult


def train_word2vec(
    texts: Sequence[str],
    *,
    tokenizer: Any | None = None,
    min_count: int = 5,
    max_vocab: int | None = None,
    dim: int = 100,
    mode: str = "skipgram",
    window: int = 5,
    negatives: int = 5,
    subsample: float = 1e-3,
    train: TrainConfig | None = None,
    out_dir: str | Path | None = None,
    progress: bool = False,
) -> Word2VecRun:
    """Train word vectors on `texts` with any of our tokenizers (default: a lowercase word-level
    one of the words seen `min_count` times); writes a run directory when `out_dir` is given."""
    from scratchllm.tokenizer import WordTokenizer
    from scratchllm.train.loop import Trainer

    if out_dir is not None:  # an unusable out_dir fails now, not after training
        Path(out_dir).mkdir(parents=True, exist_ok=True)
    if tokenizer is None:
        tokenizer = WordTokenizer.train(
            texts, mode="word", min_freq=min_count, max_vocab=max_vocab, lowercase=True
        )
    cfg = Word2VecConfig(tokenizer.vocab_size, dim, mode, window, negatives, subsample)
    train = train or default_train_config()
    docs = [np.asarray(tokenizer.encode_ordinary(t), dtype=np.int64) for t in texts]
    skip = special_ids(tokenizer)
    loader = Word2VecLoader(docs, cfg, train.batch_size, seed=train.seed, ignore_ids=skip)
    torch.manual_seed(train.seed)
    model = Word2Vec(cfg)
    trainer = Trainer(
        model,
        train,
        loader,
        None,
        run_dir=out_dir,
        loss_fn=negative_sampling_loss,
        progress=progress,
    )
    result = trainer.fit()
    model.cpu().eval()
    seen = [i for i in np.nonzero(loader.counts)[0].tolist() if i not in set(skip)]
    vectors = WordVectors([token_label(tokenizer.decode([i])) for i in seen], model.vectors[seen])
    run = Word2VecRun(model, tokenizer, vectors, result)
    if out_dir is not None:
        save_word2vec_run(out_dir, run, train)
    return run


def save_word2vec_run(out_dir: str | Path, run: Word2VecRun, train: TrainConfig) -> None:
    """config.json, model.safetensors, tokenizer.json, vectors.txt (word2vec text format)."""
    from scratchllm.train.checkpoint import (
        CONFIG_FILE,
        WEIGHTS_FILE,
        atomic_write_json,
        save_weights,
    )

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    run.tokenizer.save(out_dir)
    save_weights(run.model, out_dir / WEIGHTS_FILE, metadata={"format": W2V_FORMAT})
    run.vectors.save_word2vec(out_dir / VECTORS_FILE)
    record = {"format": W2V_FORMAT, "version": 1, "word2vec": run.model.cfg.to_dict()}
    atomic_write_json(out_dir / CONFIG_FILE, record)
    atomic_write_json(out_dir / "train_config.json", train.to_dict())


def load_vectors(path: str | Path) -> WordVectors:
    """Vectors to query: a word2vec run directory or text file, or any GPT / encoder run
    directory (its input embedding table, special tokens left out)."""
    from scratchllm.interop.runs import load_any_run
    from scratchllm.train.checkpoint import CONFIG_FILE, read_json

    path = Path(path)
    if path.is_file():
        return WordVectors.load_word2vec(path)
    if (path / VECTORS_FILE).is_file():
        return WordVectors.load_word2vec(path / VECTORS_FILE)
    if not (path / CONFIG_FILE).is_file():
        raise DataError(f"{path}: neither a vectors file nor a run directory")
    record = read_json(path / CONFIG_FILE)
    if isinstance(record, dict) and record.get("format") == W2V_FORMAT:
        raise DataError(f"{path}: word2vec run without {VECTORS_FILE}")
    run = load_any_run(path)
    if run.tokenizer is None:
        raise DataError(f"{path}: the run has no tokenizer.json to name its embeddings")
    weight = run.model.embed.wte.weight
    return WordVectors.from_embedding(weight, run.tokenizer, special_ids(run.tokenizer))
