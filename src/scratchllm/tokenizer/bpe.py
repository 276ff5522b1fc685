"""Byte-level BPE: the readable reference encoder/decoder, with tiktoken as a same-answer fast path.

A token is a byte string; its id is its merge rank (the 256 single bytes first, then one id per
learned merge, then the special tokens). Encoding splits text with a regex into pieces and, within a
piece, repeatedly merges the adjacent pair whose concatenation has the lowest rank -- exactly the
rule tiktoken applies, so the two paths give the same ids (tests prove it).
"""

from __future__ import annotations

import heapq
from collections.abc import Iterable, Mapping, Sequence
from itertools import chain
from pathlib import Path
from typing import Any

import regex

from scratchllm.errors import DisallowedSpecialError, TokenizerError
from scratchllm.tokenizer.patterns import resolve_pattern

ENDOFTEXT = "<|endoftext|>"
# Pieces longer than this use the O(n log n) heap merge instead of the simple O(n^2) scan.
LONG_PIECE = 128
# Cached pieces; natural-language text has a few tens of thousands of distinct pieces.
CACHE_LIMIT = 200_000


def fix_surrogates(text: str) -> str:
    """Lone surrogates cannot be UTF-8 encoded; they become U+FFFD (tiktoken does the same)."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return text.encode("utf-16", "surrogatepass").decode("utf-16", "replace")
    return text


def _merge_short(piece: bytes, ranks: Mapping[bytes, int]) -> list[int]:
    """Merge the lowest-ranked adjacent pair until none is in the vocabulary (ties: leftmost)."""
    parts = [piece[i : i + 1] for i in range(len(piece))]
    get = ranks.get
    while len(parts) > 1:
        best_rank, best = None, -1
        for i in range(len(parts) - 1):
            rank = get(parts[i] + parts[i + 1])
            if rank is not None and (best_rank is None or rank < best_rank):
                best_rank, best = rank, i
        if best < 0:
            break
        parts[best : best + 2] = [parts[best] + parts[best + 1]]
    return [ranks[p] for p in parts]


def _merge_long(piece: bytes, ranks: Mapping[bytes, int]) -> list[int]:
    """Same result as `_merge_short`, in O(n log n): a linked list of parts and a heap of pairs.

    Parts are named by their start offset; a heap entry (rank, start, mid, end) is still valid when
    the part at `start` still ends at `mid` and the next one still ends at `end`.
    """
    n = len(piece)
    nxt = list(range(1, n + 1))  # nxt[s]: start of the part after the part starting at s
    prv = list(range(-1, n - 1))
    alive = [True] * n
    heap: list[tuple[int, int, int, int]] = []

    def push(start: int) -> None:
        mid = nxt[start]
        if mid < n:
            end = nxt[mid]
            rank = ranks.get(piece[start:end])
            if rank is not None:
                heap.append((rank, start, mid, end))

    for s in range(n - 1):
        push(s)
    heapq.heapify(heap)
    while heap:
        rank, start, mid, end = heapq.heappop(heap)
        if not alive[start] or nxt[start] != mid or not alive[mid] or nxt[mid] != end:
            continue
        alive[mid] = False
        nxt[start] = end
        if end < n:
            prv[end] = start
        for s in (prv[start], start):
            if s >= 0:
                mid2 = nxt[s]
                if mid2 < n:
                    rank2 = ranks.get(piece[s : nxt[mid2]])
                    if rank2 is not None:
                        heapq.heappush(heap, (rank2, s, mid2, nxt[mid2]))
    out, s = [], 0
    while s < n:
        out.append(ranks[piece[s : nxt[s]]])
        s = nxt[s]
    return out


def bpe_merge(piece: bytes, ranks: Mapping[bytes, int]) -> list[int]:
    """Token ids of one pre-tokenized piece (all 256 single bytes must be in `ranks`)."""
    rank = ranks.get(piece)
    if rank is not None:
        return [rank]
    if len(piece) > LONG_PIECE:
        return _merge_long(piece, ranks)
    return _merge_short(piece, ranks)


class BPETokenizer:
    """Byte-level BPE tokenizer (GPT-2 style): any text encodes, any id sequence decodes to bytes."""

    def __init__(
        self,
        tokens: Sequence[bytes],
        pattern: str = "gpt2",
        special_tokens: Mapping[str, int] | None = None,
        *,
        merges: Sequence[tuple[int, int]] | None = None,
        name: str = "scratchllm-bpe",
        use_fast: bool | None = None,
    ) -> None:
        """`tokens[i]` is the byte string of id i; special tokens take ids from len(tokens) on."""
        self.tokens: list[bytes] = [bytes(t) for t in tokens]
        self.pattern = resolve_pattern(pattern)
        self.merges = [tuple(m) for m in merges] if merges is not None else None
        self.name = name
        specials = dict(special_tokens or {})
        self._check(specials)
        self._specials = specials
        # First id wins when two merges produce the same bytes (tiktoken keeps one rank per bytes).
        self.ranks: dict[bytes, int] = {}
        for i, t in enumerate(self.tokens):
            self.ranks.setdefault(t, i)
        self._decoder: dict[int, bytes] = dict(enumerate(self.tokens))
        self._decoder.update({i: s.encode("utf-8") for s, i in specials.items()})
        self._use_fast = use_fast
        self._setup()

    def _check(self, specials: dict[str, int]) -> None:
        have = {bytes([b]) for b in range(256)}
        if not have <= set(self.tokens):
            raise TokenizerError("a byte-level BPE vocabulary must contain all 256 single bytes")
        n = len(self.tokens)
        seen: set[int] = set()
        for s, i in specials.items():
            if not s or not isinstance(i, int) or i < n or i in seen:
                raise TokenizerError(f"special token {s!r} has invalid or duplicate id {i!r}")
            seen.add(i)

    def _setup(self) -> None:
        """Build what is derived (compiled regexes, cache, tiktoken core); also after unpickling."""
        self._regex = regex.compile(self.pattern)
        self._cache: dict[str, list[int]] = {}
        self._special_re = (
            regex.compile("|".join(regex.escape(s) for s in sorted(self._specials, key=len)[::-1]))
            if self._specials
            else None
        )
        self._fast = None
        if self._use_fast is not False:
            from scratchllm.tokenizer.fast import build_encoding

            self._fast = build_encoding(self.name, self.pattern, self.ranks, self._specials)
            if self._fast is None and self._use_fast:
                raise TokenizerError("use_fast=True needs tiktoken, which is not importable")

    def __getstate__(self) -> dict[str, Any]:
        keep = ("tokens", "pattern", "merges", "name", "_specials", "_use_fast", "ranks")
        return {k: self.__dict__[k] for k in keep}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._decoder = dict(enumerate(self.tokens))
        self._decoder.update({i: s.encode("utf-8") for s, i in self._specials.items()})
        self._setup()

    def __repr__(self) -> str:
        return (
            f"BPETokenizer(name={self.name!r}, vocab_size={self.vocab_size}, "
            f"special_tokens={len(self._specials)}, fast={self.is_fast})"
        )

    # ----------------------------------------------------------------- properties
    @property
    def vocab_size(self) -> int:
        """Number of ids: learned tokens plus special tokens (the model's embedding rows)."""
        return max(len(self.tokens), max(self._specials.values(), default=-1) + 1)

    @property
    def special_tokens(self) -> dict[str, int]:
        return dict(self._specials)

    @property
    def eot_id(self) -> int | None:
        """Id of `<|endoftext|>`, the document separator, if this vocabulary has it."""
        return self._specials.get(ENDOFTEXT)

    @property
    def is_fast(self) -> bool:
        """True when encoding runs through tiktoken's core."""
        return self._fast is not None

    def with_fast(self, use_fast: bool) -> BPETokenizer:
        """The same vocabulary with the fast path forced on or off (for tests and benchmarks)."""
        return BPETokenizer(
            self.tokens,
            self.pattern,
            self._specials,
            merges=self.merges,
            name=self.name,
            use_fast=use_fast,
        )

    # ----------------------------------------------------------------- training and files
    @classmethod
    def train(
        cls,
        texts: Iterable[str] | str,
        vocab_size: int,
        *,
        pattern: str = "gpt2",
        special_tokens: Sequence[str] = (ENDOFTEXT,),
        backend: str = "auto",
        progress: bool = False,
    ) -> BPETokenizer:
        """Learn merges until `vocab_size` ids (256 bytes + merges + specials) exist.

        `backend`: "auto" (rustbpe when importable, else the reference), "rustbpe" or "reference";
        both pick the most frequent pair, ties to the smallest (left id, right id).
        """
        from scratchllm.tokenizer.training import train_merges

        specials = list(dict.fromkeys(special_tokens))
        for s in specials:
            if not isinstance(s, str) or not s:
                raise TokenizerError(
                    f"special token {s!r}: the text of a special token must be a non-empty string"
                )
        n_merges = vocab_size - 256 - len(specials)
        if isinstance(vocab_size, bool) or not isinstance(vocab_size, int) or n_merges < 0:
            raise TokenizerError(
                f"vocab_size={vocab_size!r} is too small: it must be at least 256 bytes + "
                f"{len(specials)} special tokens = {256 + len(specials)}"
            )
        regex_str = resolve_pattern(pattern)
        if isinstance(texts, str):
            texts = [texts]
        tokens, merges = train_merges(
            texts, n_merges, regex_str, backend=backend, progress=progress
        )
        special_ids = {s: len(tokens) + i for i, s in enumerate(specials)}
        return cls(tokens, regex_str, special_ids, merges=merges)

    def save(self, directory: str | Path) -> Path:
        """Write `directory/tokenizer.json` (format in docs/tokenizer.md); returns the file path."""
        from scratchllm.tokenizer.files import save_bpe

        return save_bpe(self, directory)

    @classmethod
    def load(cls, path: str | Path, *, use_fast: bool | None = None) -> BPETokenizer:
        """Load our own format from a directory holding tokenizer.json or from the file itself."""
        from scratchllm.tokenizer.files import load_bpe

        return load_bpe(path, use_fast=use_fast)

    @classmethod
    def from_gpt2_files(
        cls, encoder_json: str | Path, vocab_bpe: str | Path, *, use_fast: bool | None = None
    ) -> BPETokenizer:
        """OpenAI's GPT-2 `encoder.json` + `vocab.bpe` (ids identical to tiktoken's "gpt2")."""
        from scratchllm.tokenizer.files import read_gpt2_files

        return read_gpt2_files(encoder_json, vocab_bpe, use_fast=use_fast)

    @classmethod
    def from_tiktoken_file(
        cls,
        path: str | Path,
        *,
        pattern: str = "gpt2",
        special_tokens: Mapping[str, int] | None = None,
        use_fast: bool | None = None,
    ) -> BPETokenizer:
        """A `.tiktoken` rank file (base64 token, space, rank per line); the pattern is not in it."""
        from scratchllm.tokenizer.files import read_tiktoken_file

        return read_tiktoken_file(path, pattern, special_tokens, use_fast=use_fast)

    def to_tiktoken_file(self, path: str | Path) -> Path:
        """Write the ranks as a `.tiktoken` file (`tiktoken.load.load_tiktoken_bpe` reads it)."""
        from scratchllm.tokenizer.files import write_tiktoken_file

        return write_tiktoken_file(self, path)

    def to_tiktoken(self) -> Any:
        """A `tiktoken.Encoding` with our ranks, pattern and special tokens."""
        from scratchllm.tokenizer.fast import build_encoding

        enc = build_encoding(self.name, self.pattern, self.ranks, self._specials)
        if enc is None:
            raise TokenizerError("tiktoken is not importable")
        return enc

    # ----------------------------------------------------------------- encoding
    def _specials_arg(
        self, allowed_special: Iterable[str] | str, disallowed_special: Iterable[str] | str
    ) -> tuple[set[str], set[str]]:
        if allowed_special == "all":
            allowed = set(self._specials)
        else:
            allowed = set(allowed_special)
            unknown = allowed - set(self._specials)
            if unknown:
                raise TokenizerError(
                    f"allowed_special names unknown special tokens {sorted(unknown)}; "
                    f"this tokenizer has {sorted(self._specials)}"
                )
        if disallowed_special == "all":
            disallowed = set(self._specials) - allowed
        else:
            disallowed = set(disallowed_special)
        return allowed, disallowed

    @staticmethod
    def _raise_if_disallowed(text: str, disallowed: set[str]) -> None:
        # str.find is a C scan; far cheaper than a regex over a large text.
        found = [(pos, s) for s in disallowed if (pos := text.find(s)) >= 0]
        if found:
            pos, literal = min(found)
            raise DisallowedSpecialError(
                f"text contains the special token {literal!r} at character {pos}; "
                f"pass allowed_special={{{literal!r}}} to encode it as a special token, or "
                f"disallowed_special=() to encode it as ordinary text",
                literal,
                pos,
            )

    def encode(
        self,
        text: str,
        *,
        allowed_special: Iterable[str] | str = frozenset(),
        disallowed_special: Iterable[str] | str = "all",
    ) -> list[int]:
        """Ids of `text`. A special token's literal in the text raises unless it is allowed, so user
        text cannot forge a document boundary or a chat turn (tiktoken's rule)."""
        if not isinstance(text, str):
            raise TokenizerError(f"encode expects str, got {type(text).__name__}")
        allowed, disallowed = self._specials_arg(allowed_special, disallowed_special)
        self._raise_if_disallowed(text, disallowed)
        if self._fast is not None:  # tiktoken replaces lone surrogates itself
            return self._fast.encode(text, allowed_special=allowed, disallowed_special=())
        text = fix_surrogates(text)
        if not allowed:
            return self._encode_ordinary_ref(text)
        pattern = "|".join(regex.escape(s) for s in sorted(allowed, key=len)[::-1])
        out: list[int] = []
        start = 0
        for match in regex.finditer(pattern, text):
            out += self._encode_ordinary_ref(text[start : match.start()])
            out.append(self._specials[match.group()])
            start = match.end()
        out += self._encode_ordinary_ref(text[start:])
        return out

    def encode_ordinary(self, text: str) -> list[int]:
        """Ids of `text` with special-token literals treated as plain text (never raises)."""
        if not isinstance(text, str):
            raise TokenizerError(f"encode_ordinary expects str, got {type(text).__name__}")
        if self._fast is not None:
            return self._fast.encode_ordinary(text)
        return self._encode_ordinary_ref(fix_surrogates(text))

    def _encode_ordinary_ref(self, text: str) -> list[int]:
        """The reference: regex pieces, each merged once by `bpe_merge` and then served from the
        per-piece cache (the lookups and the concatenation run as C loops over the pieces)."""
        cache, ranks = self._cache, self.ranks
        pieces = self._regex.findall(text)
        for piece in set(pieces).difference(cache):
            cache[piece] = bpe_merge(piece.encode("utf-8"), ranks)
        out = list(chain.from_iterable(map(cache.__getitem__, pieces)))
        if len(cache) > CACHE_LIMIT:  # bounded memory: start afresh rather than track recency
            cache.clear()
        return out

    def encode_batch(
        self,
        texts: Sequence[str],
        *,
        num_threads: int = 8,
        allowed_special: Iterable[str] | str = frozenset(),
        disallowed_special: Iterable[str] | str = "all",
    ) -> list[list[int]]:
        """Ids of each text; the fast path spreads the batch over threads (tiktoken releases the GIL)."""
        allowed, disallowed = self._specials_arg(allowed_special, disallowed_special)
        for text in texts:
            self._raise_if_disallowed(text, disallowed)
        if self._fast is not None:
            return self._fast.encode_batch(
                list(texts), num_threads=num_threads, allowed_special=allowed, disallowed_special=()
            )
        return [self.encode(t, allowed_special=allowed, disallowed_special=()) for t in texts]

    # ----------------------------------------------------------------- decoding
    def decode_bytes(self, ids: Iterable[int]) -> bytes:
        """Concatenated bytes of `ids`; an id outside the vocabulary raises naming it."""
        if hasattr(ids, "tolist"):
            ids = ids.tolist()  # numpy arrays and torch tensors
        ids = list(ids)
        try:
            return b"".join(map(self._decoder.__getitem__, ids))
        except (KeyError, TypeError):
            for pos, i in enumerate(ids):
                if i not in self._decoder:
                    raise TokenizerError(
                        f"token id {i!r} at position {pos} is outside the vocabulary "
                        f"(0..{self.vocab_size - 1})"
                    ) from None
            raise

    def decode(self, ids: Iterable[int], errors: str = "replace") -> str:
        """Text of `ids`; invalid UTF-8 becomes U+FFFD, or raises with `errors="strict"`."""
        data = self.decode_bytes(ids)
        try:
            return data.decode("utf-8", errors=errors)
        except UnicodeDecodeError as exc:
            raise TokenizerError(
                f"ids decode to invalid UTF-8 at byte {exc.start} ({data[exc.start : exc.end]!r})"
            ) from None

    def id_to_token(self, token_id: int) -> bytes:
        """The bytes of one id."""
        return self.decode_bytes([token_id])

    def token_to_id(self, token: bytes | str) -> int:
        """Id of a whole token given as bytes, or a special token given as its text."""
        if isinstance(token, str):
            if token in self._specials:
                return self._specials[token]
            token = token.encode("utf-8")
        if token not in self.ranks:
            raise TokenizerError(f"{token!r} is not a single token of this vocabulary")
        return self.ranks[token]
