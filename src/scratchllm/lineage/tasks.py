"""Synthetic sequence-to-sequence tasks, and the batching, loss and scoring every seq2seq model shares.

A task draws (source, target) pairs of token ids from a seeded generator, so that the RNN with
attention and the encoder-decoder Transformer train on exactly the same data through the shared
`Trainer`. Source and target have their own vocabularies; both start with the same three specials:

    0 = [PAD]   1 = [BOS]   2 = [EOS]

Tasks: `reverse_task` (copy backwards), `sort_task` (ascending order) and `translation_task`
(a toy translation between two made-up languages with their own words and word order).
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from functools import partial
from typing import Any, Protocol

import torch
from torch import Tensor, nn

from scratchllm.errors import ConfigError
from scratchllm.model.losses import logits_cross_entropy
from scratchllm.train.config import TrainConfig
from scratchllm.train.loop import Trainer

PAD_ID, BOS_ID, EOS_ID = 0, 1, 2
SPECIALS = ("[PAD]", "[BOS]", "[EOS]")
IGNORE_INDEX = -100  # targets with this id add nothing to the loss (padding)

Pair = tuple[list[int], list[int]]


@dataclass(frozen=True)
class Seq2SeqTask:
    """A named generator of (source ids, target ids) pairs; targets exclude [BOS]/[EOS]."""

    name: str
    src_tokens: tuple[str, ...]  # source vocabulary in id order (specials first)
    tgt_tokens: tuple[str, ...]  # target vocabulary in id order (specials first)
    max_src_len: int  # longest source the generator produces
    max_tgt_len: int  # longest target (without [BOS]/[EOS])
    draw: Callable[[random.Random], Pair]  # one random pair

    @property
    def src_vocab_size(self) -> int:
        return len(self.src_tokens)

    @property
    def tgt_vocab_size(self) -> int:
        return len(self.tgt_tokens)

    def sample(self, n: int, seed: int, exclude: set[tuple[int, ...]] | None = None) -> list[Pair]:
        """`n` pairs from a generator seeded with `seed`, skipping sources in `exclude`."""
        rng = random.Random(seed)
        pairs: list[Pair] = []
        for _ in range(100 * n):
            if len(pairs) == n:
                break
            src, tgt = self.draw(rng)
            if exclude is None or tuple(src) not in exclude:
                pairs.append((src, tgt))
        if len(pairs) < n:
            raise ConfigError(f"task {self.name!r}: could not draw {n} pairs outside the held-out")
        return pairs

    def src_text(self, ids: Sequence[int]) -> str:
        return " ".join(self.src_tokens[i] for i in ids)

    def tgt_text(self, ids: Sequence[int]) -> str:
        return " ".join(self.tgt_tokens[i] for i in ids)


def _symbols(n_symbols: int) -> tuple[str, ...]:
    return SPECIALS + tuple(str(i) for i in range(n_symbols))


def _check_lengths(n_symbols: int, min_len: int, max_len: int) -> None:
    if n_symbols < 2:
        raise ConfigError(f"n_symbols={n_symbols} must be >= 2")
    if not 1 <= min_len <= max_len:
        raise ConfigError(f"need 1 <= min_len={min_len} <= max_len={max_len}")


def reverse_task(n_symbols: int = 10, min_len: int = 3, max_len: int = 8) -> Seq2SeqTask:
    """Source: random symbols; target: the same symbols in reverse order."""
    _check_lengths(n_symbols, min_len, max_len)
    first = len(SPECIALS)

    def draw(rng: random.Random) -> Pair:
        src = [
            rng.randrange(first, first + n_symbols) for _ in range(rng.randint(min_len, max_len))
        ]
        return src, src[::-1]

    tokens = _symbols(n_symbols)
    return Seq2SeqTask("reverse", tokens, tokens, max_len, max_len, draw)


def sort_task(n_symbols: int = 10, min_len: int = 3, max_len: int = 8) -> Seq2SeqTask:
    """Source: random symbols; target: the same symbols in ascending order."""
    _check_lengths(n_symbols, min_len, max_len)
    first = len(SPECIALS)

    def draw(rng: random.Random) -> Pair:
        src = [
            rng.randrange(first, first + n_symbols) for _ in range(rng.randint(min_len, max_len))
        ]
        return src, sorted(src)

    tokens = _symbols(n_symbols)
    return Seq2SeqTask("sort", tokens, tokens, max_len, max_len, draw)


# The two made-up languages are built from these syllables (no real words on purpose).
_SRC_SYLLABLES = ("ka", "lo", "mi", "nu", "ré", "ta", "vo", "zi")
_TGT_SYLLABLES = ("bo", "dak", "fen", "gul", "hir", "jo", "pem", "sut")


def _words(syllables: Sequence[str], n: int, rng: random.Random) -> list[str]:
    """`n` distinct two-syllable words."""
    pool = [a + b for a in syllables for b in syllables if a != b]
    rng.shuffle(pool)
    return pool[:n]


def translation_task(n_nouns: int = 8, n_adjectives: int = 4, n_verbs: int = 4) -> Seq2SeqTask:
    """A toy translation: "[adj] noun [adj] noun verb" (verb last, adjectives first) in the
    source language becomes "noun [adj] verb noun [adj]" in the target language.

    Each word has one fixed translation; the model must learn the lexicon and the reordering.
    """
    for name, n in (("n_nouns", n_nouns), ("n_adjectives", n_adjectives), ("n_verbs", n_verbs)):
        if n < 1:
            raise ConfigError(f"{name}={n} must be >= 1")
    n_words = n_nouns + n_adjectives + n_verbs
    if n_words > len(_SRC_SYLLABLES) * (len(_SRC_SYLLABLES) - 1):
        raise ConfigError(f"{n_words} words do not fit the syllable inventory")
    lexicon_rng = random.Random(0)  # the languages themselves are fixed, whatever the data seed
    src_words = _words(_SRC_SYLLABLES, n_words, lexicon_rng)
    tgt_words = _words(_TGT_SYLLABLES, n_words, lexicon_rng)
    first = len(SPECIALS)
    nouns = range(first, first + n_nouns)
    adjectives = range(first + n_nouns, first + n_nouns + n_adjectives)
    verbs = range(first + n_nouns + n_adjectives, first + n_words)

    def draw(rng: random.Random) -> Pair:
        subj, obj, verb = rng.choice(nouns), rng.choice(nouns), rng.choice(verbs)
        subj_adj = [rng.choice(adjectives)] if rng.random() < 0.5 else []
        obj_adj = [rng.choice(adjectives)] if rng.random() < 0.5 else []
        src = [*subj_adj, subj, *obj_adj, obj, verb]
        tgt = [subj, *subj_adj, verb, obj, *obj_adj]  # same ids: word i translates to word i
        return src, tgt

    return Seq2SeqTask(
        "translate", SPECIALS + tuple(src_words), SPECIALS + tuple(tgt_words), 5, 5, draw
    )


TASKS: dict[str, Callable[[], Seq2SeqTask]] = {
    "reverse": reverse_task,
    "sort": sort_task,
    "translate": translation_task,
}


def get_task(name: str) -> Seq2SeqTask:
    if name not in TASKS:
        raise ConfigError(f"unknown seq2seq task {name!r}; known: {', '.join(TASKS)}")
    return TASKS[name]()


# ------------------------------------------------------------------------------------ batches


def collate(pairs: Sequence[Pair]) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """(src [B, S], src_mask [B, S], tgt_in [B, T], tgt_out [B, T]), right-padded.

    tgt_in = [BOS] + target (teacher forcing input), tgt_out = target + [EOS] with padding set to
    IGNORE_INDEX, so position t of the decoder learns to predict tgt_out[t] from tgt_in[: t + 1].
    """
    b = len(pairs)
    s = max(len(src) for src, _ in pairs)
    t = max(len(tgt) for _, tgt in pairs) + 1
    src = torch.full((b, s), PAD_ID, dtype=torch.long)
    tgt_in = torch.full((b, t), PAD_ID, dtype=torch.long)
    tgt_out = torch.full((b, t), IGNORE_INDEX, dtype=torch.long)
    for i, (x, y) in enumerate(pairs):
        src[i, : len(x)] = torch.tensor(x)
        tgt_in[i, : len(y) + 1] = torch.tensor([BOS_ID, *y])
        tgt_out[i, : len(y) + 1] = torch.tensor([*y, EOS_ID])
    return src, src != PAD_ID, tgt_in, tgt_out


class Seq2SeqLoader:
    """Endless batches of fresh random pairs (never a held-out source), resumable by counter."""

    def __init__(
        self,
        task: Seq2SeqTask,
        batch_size: int,
        *,
        seed: int = 0,
        exclude: set[tuple[int, ...]] | None = None,
    ) -> None:
        self.task, self.batch_size, self.seed = task, batch_size, seed
        self.exclude = exclude or set()
        self.step = 0  # batches delivered so far

    def batches(self) -> Iterator[tuple[Tensor, Tensor, Tensor, Tensor]]:
        while True:
            # Each batch has its own seed, so that resuming at step k gives the same batch k.
            pairs = self.task.sample(
                self.batch_size, self.seed * 1_000_003 + self.step, self.exclude
            )
            self.step += 1
            yield collate(pairs)

    def state_dict(self) -> dict[str, Any]:
        return {"step": self.step}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.step = int(state["step"])


def seq2seq_loss(
    model: nn.Module, batch: Any, *, label_smoothing: float = 0.0
) -> tuple[Tensor, int]:
    """Teacher-forced cross-entropy over the target tokens (padding ignored); for `Trainer`.

    `label_smoothing` eps trains against (1 - eps) on the target plus eps spread uniformly over
    the target vocabulary (Szegedy et al. 2016; eps = 0.1 in Vaswani et al. 2017).
    """
    src, src_mask, tgt_in, tgt_out = batch
    logits = model(src, tgt_in, src_mask=src_mask)  # [B, T, V]
    loss = logits_cross_entropy(logits, tgt_out, IGNORE_INDEX, label_smoothing=label_smoothing)
    return loss, int((tgt_out != IGNORE_INDEX).sum())


class GreedyDecoder(Protocol):
    def greedy_decode(self, src: Tensor, src_mask: Tensor, max_new_tokens: int) -> Tensor: ...


def strip_output(ids: Sequence[int]) -> list[int]:
    """Generated ids up to (not including) the first [EOS]."""
    out = []
    for i in ids:
        if i == EOS_ID:
            break
        out.append(int(i))
    return out


@torch.no_grad()
def exact_match(
    model: GreedyDecoder, pairs: Sequence[Pair], *, batch_size: int = 256, device: str = "cpu"
) -> float:
    """Fraction of pairs whose greedy output (up to [EOS]) equals the target exactly."""
    was_training = getattr(model, "training", False)
    if isinstance(model, nn.Module):
        model.eval()
    hits = 0
    for start in range(0, len(pairs), batch_size):
        chunk = pairs[start : start + batch_size]
        src, src_mask, _, _ = collate(chunk)
        longest = max(len(tgt) for _, tgt in chunk) + 1
        out = model.greedy_decode(src.to(device), src_mask.to(device), longest).tolist()
        hits += sum(strip_output(row) == tgt for row, (_, tgt) in zip(out, chunk, strict=True))
    if isinstance(model, nn.Module):
        model.train(was_training)
    return hits / max(len(pairs), 1)


# ----------------------------------------------------------------------------------- training


@dataclass
class Seq2SeqReport:
    steps: int  # optimizer steps trained
    seconds: float  # wall time of training (evaluations included)
    accuracy: float  # exact match on the held-out pairs at the end
    reached_target_at: int | None  # first evaluated step with accuracy >= target, if any
    history: list[tuple[int, float]]  # (step, held-out exact match) at every evaluation


def train_seq2seq(
    model: nn.Module,
    task: Seq2SeqTask,
    cfg: TrainConfig,
    *,
    n_heldout: int = 500,
    eval_every: int = 100,
    target: float | None = 0.95,
    seed: int = 0,
    label_smoothing: float = 0.0,
    progress: bool = False,
) -> Seq2SeqReport:
    """Train with the shared `Trainer` on fresh pairs; score exact match on held-out pairs every
    `eval_every` steps and stop at the first score >= `target` (None: run all cfg.max_steps).
    `label_smoothing` goes to `seq2seq_loss`."""
    if not 0.0 <= label_smoothing < 1.0:
        raise ConfigError(f"label_smoothing={label_smoothing} must be in [0, 1)")
    heldout = task.sample(n_heldout, seed=10_000 + seed)
    loader = Seq2SeqLoader(task, cfg.batch_size, seed=seed, exclude={tuple(s) for s, _ in heldout})
    loss_fn = partial(seq2seq_loss, label_smoothing=label_smoothing)
    trainer = Trainer(model, cfg, loader, None, loss_fn=loss_fn, progress=progress)
    device = str(trainer.device)
    history: list[tuple[int, float]] = []
    reached, start = None, time.perf_counter()
    while trainer.step < cfg.max_steps:
        trainer.fit(until_step=min(trainer.step + eval_every, cfg.max_steps))
        history.append((trainer.step, exact_match(model, heldout, device=device)))
        if target is not None and history[-1][1] >= target:
            reached = trainer.step
            break
    return Seq2SeqReport(
        trainer.step, time.perf_counter() - start, history[-1][1], reached, history
    )
