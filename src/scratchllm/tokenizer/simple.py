"""Word-level (and character-level) tokenizer: the simple baseline before byte-level BPE.

Words and punctuation marks are tokens; a word never seen in training maps to [UNK]. The
character-level mode (one token per character) is the classic baseline for small corpora.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import regex

from scratchllm.errors import DisallowedSpecialError, TokenizerError

# A word (letters, digits, underscore, inner apostrophes) or one non-space character.
WORD_PATTERN = regex.compile(r"\w+(?:'\w+)*|[^\w\s]")
# Spaces that decoding removes: before closing punctuation and after opening punctuation.
_SPACE_BEFORE = regex.compile(r" ([,.:;?!)\]}%'])")
_SPACE_AFTER = regex.compile(r"([(\[{$]) ")
DEFAULT_SPECIALS = {"bos": "[BOS]", "eos": "[EOS]", "pad": "[PAD]", "unk": "[UNK]"}
MODES = ("word", "char")
# Characters of a training text split into words (or characters) at a time.
TRAIN_PIECE_CHARS = 1 << 20


class WordTokenizer:
    """Vocabulary of whole words (or characters) with [BOS]/[EOS]/[PAD]/[UNK] special tokens."""

    # No token, and no lowercasing context, spans a line end: the text on either side of a "\n"
    # encodes apart to the ids of the whole (data.encode cuts a long text there).
    cuts_after_newline = True

    def __init__(
        self,
        tokens: Iterable[str],
        *,
        mode: str = "word",
        specials: Mapping[str, str] | None = None,
        lowercase: bool = False,
    ) -> None:
        """`tokens` in id order; the special tokens (role -> text) must be among them."""
        if mode not in MODES:
            raise TokenizerError(f"mode={mode!r} is not one of {MODES}")
        self.tokens = list(tokens)
        self.mode = mode
        self.lowercase = lowercase
        self.specials = dict(DEFAULT_SPECIALS if specials is None else specials)
        self._ids = {t: i for i, t in enumerate(self.tokens)}
        if len(self._ids) != len(self.tokens):
            raise TokenizerError("duplicate tokens in a word-level vocabulary")
        missing = [s for s in self.specials.values() if s not in self._ids]
        if missing:
            raise TokenizerError(f"special tokens {missing} are not in the vocabulary")
        if "unk" not in self.specials:
            raise TokenizerError("a word-level tokenizer needs an 'unk' special token")
        self._special_ids = {s: self._ids[s] for s in self.specials.values()}
        by_length = sorted(self._special_ids, key=len, reverse=True)
        self._special_re = regex.compile("|".join(regex.escape(s) for s in by_length))

    @classmethod
    def train(
        cls,
        texts: Iterable[str] | str,
        *,
        mode: str = "word",
        max_vocab: int | None = None,
        min_freq: int = 1,
        lowercase: bool = False,
        specials: Mapping[str, str] | None = None,
    ) -> WordTokenizer:
        """Vocabulary from a corpus: specials first, then words by falling frequency (ties
        alphabetical), keeping at most `max_vocab` ids in all and words seen `min_freq` times."""
        if mode not in MODES:
            raise TokenizerError(f"mode={mode!r} is not one of {MODES}")
        specials = dict(DEFAULT_SPECIALS if specials is None else specials)
        if max_vocab is not None and max_vocab < len(specials):
            raise TokenizerError(
                f"max_vocab={max_vocab} is smaller than the {len(specials)} special tokens"
            )
        if isinstance(texts, str):
            texts = [texts]
        from scratchllm.tokenizer.parallel import line_pieces

        counts: Counter[str] = Counter()
        for text in texts:  # a line-cut piece at a time: no list of every word of a long text
            for piece in line_pieces([text], TRAIN_PIECE_CHARS):
                counts.update(_split(piece.lower() if lowercase else piece, mode))
        reserved = set(specials.values())
        ranked = sorted(
            (w for w, c in counts.items() if c >= min_freq and w not in reserved),
            key=lambda w: (-counts[w], w),
        )
        if max_vocab is not None:
            ranked = ranked[: max_vocab - len(specials)]
        if mode == "char":
            ranked.sort()
        tokens = list(dict.fromkeys(specials.values())) + ranked
        return cls(tokens, mode=mode, specials=specials, lowercase=lowercase)

    # ----------------------------------------------------------------- properties
    @property
    def vocab_size(self) -> int:
        return len(self.tokens)

    @property
    def special_tokens(self) -> dict[str, int]:
        return dict(self._special_ids)

    def _role_id(self, role: str) -> int | None:
        text = self.specials.get(role)
        return None if text is None else self._ids[text]

    @property
    def bos_id(self) -> int | None:
        return self._role_id("bos")

    @property
    def eos_id(self) -> int | None:
        return self._role_id("eos")

    @property
    def pad_id(self) -> int | None:
        return self._role_id("pad")

    @property
    def unk_id(self) -> int:
        return self._ids[self.specials["unk"]]

    @property
    def eot_id(self) -> int | None:
        """The end-of-sequence id, used as the document separator like BPE's <|endoftext|>."""
        return self.eos_id

    def __repr__(self) -> str:
        return f"WordTokenizer(mode={self.mode!r}, vocab_size={self.vocab_size})"

    # ----------------------------------------------------------------- encode / decode
    def _pieces(self, text: str) -> list[int]:
        if self.lowercase:
            text = text.lower()
        get, unk = self._ids.get, self.unk_id
        return [get(p, unk) for p in _split(text, self.mode)]

    def encode(
        self,
        text: str,
        *,
        allowed_special: Iterable[str] | str = frozenset(),
        disallowed_special: Iterable[str] | str = "all",
        add_bos: bool = False,
        add_eos: bool = False,
    ) -> list[int]:
        """Ids of `text`; unknown words become [UNK]. Special-token literals raise unless allowed
        (same rule as BPE), so text cannot forge a boundary."""
        if not isinstance(text, str):
            raise TokenizerError(f"encode expects str, got {type(text).__name__}")
        names = set(self._special_ids)
        allowed = names if allowed_special == "all" else set(allowed_special)
        disallowed = names - allowed if disallowed_special == "all" else set(disallowed_special)
        out: list[int] = [self.bos_id] if add_bos and self.bos_id is not None else []
        start = 0
        for match in self._special_re.finditer(text):
            literal = match.group()
            if literal in disallowed:
                raise DisallowedSpecialError(
                    f"text contains the special token {literal!r} at character {match.start()}; "
                    f"pass allowed_special={{{literal!r}}} to encode it as a special token",
                    literal,
                    match.start(),
                )
            if literal in allowed:
                out += self._pieces(text[start : match.start()])
                out.append(self._special_ids[literal])
                start = match.end()
        out += self._pieces(text[start:])
        if add_eos and self.eos_id is not None:
            out.append(self.eos_id)
        return out

    def encode_ordinary(self, text: str) -> list[int]:
        """Ids of `text` with special-token literals treated as ordinary text."""
        return self._pieces(text)

    def encode_batch(self, texts: Iterable[str], **kwargs: Any) -> list[list[int]]:
        return [self.encode(t, **kwargs) for t in texts]

    def decode(
        self, ids: Iterable[int], errors: str = "replace", *, skip_special: bool = False
    ) -> str:
        """Text of `ids`: words joined by spaces, with the space before punctuation removed."""
        del errors  # word-level tokens are always valid text; kept for the common signature
        if hasattr(ids, "tolist"):
            ids = ids.tolist()
        # skip_special drops [BOS]/[EOS]/[PAD] and the like; an unknown word stays [UNK]
        special = set(self._special_ids.values()) - {self.unk_id}
        pieces = []
        for pos, i in enumerate(ids):
            if not isinstance(i, int) or not 0 <= i < len(self.tokens):
                raise TokenizerError(
                    f"token id {i!r} at position {pos} is outside the vocabulary "
                    f"(0..{self.vocab_size - 1})"
                )
            if not (skip_special and i in special):
                pieces.append(self.tokens[i])
        if self.mode == "char":
            return "".join(pieces)
        text = " ".join(pieces)
        return _SPACE_AFTER.sub(r"\1", _SPACE_BEFORE.sub(r"\1", text))

    def decode_bytes(self, ids: Iterable[int]) -> bytes:
        return self.decode(ids).encode("utf-8")

    # ----------------------------------------------------------------- files
    def to_json(self) -> dict[str, Any]:
        from scratchllm.tokenizer.files import FORMAT, VERSION

        return {
            "format": FORMAT,
            "version": VERSION,
            "type": "word",
            "mode": self.mode,
            "lowercase": self.lowercase,
            "specials": self.specials,
            "tokens": self.tokens,
        }

    @classmethod
    def from_json(cls, path: Path, obj: dict[str, Any]) -> WordTokenizer:
        tokens, specials = obj.get("tokens"), obj.get("specials")
        if not isinstance(tokens, list) or not all(isinstance(t, str) for t in tokens):
            raise TokenizerError(f"{path}: field 'tokens' must be a list of strings")
        if not isinstance(specials, dict):
            raise TokenizerError(f"{path}: field 'specials' must be an object")
        try:
            return cls(
                tokens,
                mode=obj.get("mode", "word"),
                specials=specials,
                lowercase=bool(obj.get("lowercase", False)),
            )
        except TokenizerError as exc:
            raise TokenizerError(f"{path}: {exc}") from None

    def save(self, directory: str | Path) -> Path:
        """Write `directory/tokenizer.json`; returns the file path."""
        from scratchllm.tokenizer.files import write_json

        return write_json(self.to_json(), directory)

    @classmethod
    def load(cls, path: str | Path) -> WordTokenizer:
        from scratchllm.tokenizer.files import read_json

        path, obj = read_json(path)
        if obj.get("type") != "word":
            raise TokenizerError(f"{path}: type {obj.get('type')!r} is not a word-level tokenizer")
        return cls.from_json(path, obj)


def _split(text: str, mode: str) -> list[str]:
    if mode == "char":
        return list(text)
    return WORD_PATTERN.findall(text)
