"""BPE training: the readable reference (incremental pair counts and a lazy heap) and rustbpe.

Both pick, at every step, the pair with the highest count; among equal counts the smallest
(left id, right id). New ids are 256, 257, ... in merge order, so both produce the same merge list.
"""

from __future__ import annotations

import heapq
from collections import Counter, defaultdict
from collections.abc import Iterable

import regex

from scratchllm.errors import TokenizerError
from scratchllm.tokenizer.fast import rustbpe_available

Pair = tuple[int, int]
# Characters of a training text pre-tokenized at a time by the reference trainer.
COUNT_PART_CHARS = 1 << 20


def count_pieces(texts: Iterable[str], pattern: str) -> Counter[str]:
    """How often each pre-tokenized piece occurs; training works on distinct pieces only.

    A long text is pre-tokenized a part at a time (``split_stream`` cuts where that changes
    nothing), not into one list of all its pieces (about 60 bytes each)."""
    from scratchllm.tokenizer.parallel import split_stream

    compiled = regex.compile(pattern)
    counts: Counter[str] = Counter()
    for text in texts:
        for part in split_stream([text], pattern, COUNT_PART_CHARS):
            counts.update(compiled.findall(part))
    return counts


def _merge_word(word: list[int], pair: Pair, new_id: int) -> list[int]:
    """Replace every non-overlapping occurrence of `pair`, left to right."""
    a, b = pair
    out: list[int] = []
    i, n = 0, len(word)
    while i < n:
        if i + 1 < n and word[i] == a and word[i + 1] == b:
            out.append(new_id)
            i += 2
        else:
            out.append(word[i])
            i += 1
    return out


def train_reference(
    texts: Iterable[str], n_merges: int, pattern: str, progress: bool = False
) -> list[Pair]:
    """Learn up to `n_merges` merges. Pair counts are updated only for the words a merge touches,
    and stale heap entries are fixed when popped, so a merge costs what it changes, not a recount.
    """
    pieces = count_pieces(texts, pattern)
    words = [list(p.encode("utf-8")) for p in pieces]
    counts = list(pieces.values())
    pair_counts: dict[Pair, int] = defaultdict(int)
    where: dict[Pair, set[int]] = defaultdict(set)
    for wi, word in enumerate(words):
        c = counts[wi]
        for pair in zip(word, word[1:]):
            pair_counts[pair] += c
            where[pair].add(wi)
    heap = [(-c, pair) for pair, c in pair_counts.items()]
    heapq.heapify(heap)
    merges: list[Pair] = []
    bar = _progress_bar(n_merges, progress)
    while len(merges) < n_merges and heap:
        neg, pair = heapq.heappop(heap)
        current = pair_counts.get(pair, 0)
        if current != -neg:  # stale entry: counts of old pairs only ever go down
            if current > 0:
                heapq.heappush(heap, (-current, pair))
            continue
        new_id = 256 + len(merges)
        merges.append(pair)
        touched: set[Pair] = set()
        for wi in where.pop(pair, ()):
            word = words[wi]
            new_word = _merge_word(word, pair, new_id)
            if len(new_word) == len(word):
                continue  # stale position: the pair left this word in an earlier merge
            c = counts[wi]
            for p in zip(word, word[1:]):
                pair_counts[p] -= c
            for p in zip(new_word, new_word[1:]):
                pair_counts[p] += c
                if new_id in p:
                    where[p].add(wi)
                    touched.add(p)
            words[wi] = new_word
        pair_counts.pop(pair, None)
        for p in touched:
            if pair_counts[p] > 0:
                heapq.heappush(heap, (-pair_counts[p], p))
        if bar is not None:
            bar.update(1)
    if bar is not None:
        bar.close()
    return merges


def train_rustbpe(texts: Iterable[str], n_merges: int, pattern: str) -> list[bytes]:
    """Learn merges with the `rustbpe` package (Rust, parallel); returns tokens in id order."""
    import rustbpe

    tok = rustbpe.Tokenizer()
    tok.train_from_iterator(iter(texts), 256 + n_merges, pattern=pattern)
    ranked = sorted(tok.get_mergeable_ranks(), key=lambda item: item[1])
    return [bytes(t) for t, _ in ranked]


def tokens_from_merges(merges: list[Pair]) -> list[bytes]:
    """Byte strings of ids 0..255+len(merges)."""
    tokens = [bytes([b]) for b in range(256)]
    for a, b in merges:
        tokens.append(tokens[a] + tokens[b])
    return tokens


def merges_from_tokens(tokens: list[bytes]) -> list[Pair]:
    """Recover the merge list from tokens in id order (ids 0..255 are the single bytes in order).

    Each token's parts are found by encoding its bytes with the ranks below it; that split is
    unique when the vocabulary was built by merges.
    """
    from scratchllm.tokenizer.bpe import bpe_merge

    if [t for t in tokens[:256]] != [bytes([b]) for b in range(256)]:
        raise TokenizerError("merges need ids 0..255 to be the single bytes in order")
    ranks: dict[bytes, int] = {t: i for i, t in enumerate(tokens[:256])}
    merges: list[Pair] = []
    for i, tok in enumerate(tokens[256:], start=256):
        parts = bpe_merge(tok, ranks)
        if len(parts) != 2:
            raise TokenizerError(f"token {i} ({tok!r}) is not the merge of two earlier tokens")
        merges.append((parts[0], parts[1]))
        ranks.setdefault(tok, i)
    return merges


def train_merges(
    texts: Iterable[str], n_merges: int, pattern: str, *, backend: str = "auto", progress: bool
) -> tuple[list[bytes], list[Pair] | None]:
    """Tokens in id order and the merge list (None when rustbpe's vocabulary hides it).

    "auto" prefers rustbpe when it is installed.
    """
    if backend not in ("auto", "rustbpe", "reference"):
        raise TokenizerError(f"unknown training backend {backend!r} (auto, rustbpe, reference)")
    if backend == "rustbpe" and not rustbpe_available():
        raise TokenizerError("backend='rustbpe' but the rustbpe package is not installed")
    if n_merges == 0:
        return tokens_from_merges([]), []
    if backend == "rustbpe" or (backend == "auto" and rustbpe_available()):
        tokens = train_rustbpe(texts, n_merges, pattern)
        try:
            merges: list[Pair] | None = merges_from_tokens(tokens)
        except TokenizerError:
            merges = None
        return tokens, merges
    merges = train_reference(texts, n_merges, pattern, progress)
    return tokens_from_merges(merges), merges


def _progress_bar(total: int, enabled: bool):
    if not enabled:
        return None
    from tqdm import tqdm

    return tqdm(total=total, desc="bpe merges", unit="merge")
