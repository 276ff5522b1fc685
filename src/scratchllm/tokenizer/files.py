"""Tokenizer files: our own versioned JSON format, OpenAI's GPT-2 files and tiktoken rank files.

Our format (`tokenizer.json`, one JSON object, documented in docs/tokenizer.md):

    {"format": "scratchllm-tokenizer", "version": 1, "type": "bpe" | "word", ...}

BPE adds "name", "pattern" (the regex itself), "tokens" (base64 of each id's bytes, in id order),
"merges" ([[left, right], ...] or null) and "special_tokens" ({text: id}). Word-level adds "mode",
"tokens" (the strings in id order), "specials" (role -> text) and "lowercase".
"""

from __future__ import annotations

import base64
import binascii
import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

from scratchllm.errors import TokenizerError

if TYPE_CHECKING:
    from scratchllm.tokenizer.bpe import BPETokenizer
    from scratchllm.tokenizer.simple import WordTokenizer

FORMAT = "scratchllm-tokenizer"
VERSION = 1
FILENAME = "tokenizer.json"


def _resolve(path: str | Path) -> Path:
    path = Path(path)
    if path.is_dir():
        path = path / FILENAME
    if not path.is_file():
        raise TokenizerError(f"tokenizer file not found: {path}")
    return path


def write_json(obj: dict[str, Any], directory: str | Path) -> Path:
    """Write `directory/tokenizer.json` atomically (a crash never leaves half a file)."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / FILENAME
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(obj, ensure_ascii=False, indent=1) + "\n", encoding="utf-8")
    tmp.replace(path)
    return path


def read_json(path: str | Path) -> tuple[Path, dict[str, Any]]:
    """Read and check the envelope of our format; errors name the file."""
    path = _resolve(path)
    try:
        obj = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise TokenizerError(f"{path}: not valid JSON (corrupt or truncated?): {exc}") from None
    if not isinstance(obj, dict) or obj.get("format") != FORMAT:
        raise TokenizerError(f"{path}: not a scratchllm tokenizer file (no format={FORMAT!r})")
    if obj.get("version") != VERSION:
        raise TokenizerError(
            f"{path}: tokenizer format version {obj.get('version')!r} is not supported "
            f"(this scratchllm reads version {VERSION})"
        )
    return path, obj


def _field(obj: dict[str, Any], key: str, kind: type | tuple[type, ...], path: Path) -> Any:
    value = obj.get(key)
    if not isinstance(value, kind):
        raise TokenizerError(f"{path}: field {key!r} is missing or has the wrong type")
    return value


def save_bpe(tok: BPETokenizer, directory: str | Path) -> Path:
    obj = {
        "format": FORMAT,
        "version": VERSION,
        "type": "bpe",
        "name": tok.name,
        "pattern": tok.pattern,
        "tokens": [base64.b64encode(t).decode("ascii") for t in tok.tokens],
        "merges": [list(m) for m in tok.merges] if tok.merges is not None else None,
        "special_tokens": tok.special_tokens,
    }
    return write_json(obj, directory)


def bpe_from_json(path: Path, obj: dict[str, Any], use_fast: bool | None = None) -> BPETokenizer:
    from scratchllm.tokenizer.bpe import BPETokenizer

    if obj.get("type") != "bpe":
        raise TokenizerError(f"{path}: type {obj.get('type')!r} is not a BPE tokenizer")
    try:
        tokens = [base64.b64decode(t, validate=True) for t in _field(obj, "tokens", list, path)]
    except (binascii.Error, TypeError, ValueError):
        raise TokenizerError(f"{path}: field 'tokens' holds an entry that is not base64") from None
    merges = obj.get("merges")
    if merges is not None and not (
        isinstance(merges, list) and all(isinstance(m, list) and len(m) == 2 for m in merges)
    ):
        raise TokenizerError(f"{path}: field 'merges' must be a list of [left, right] pairs")
    for rank, pair in enumerate(merges or []):
        if not all(isinstance(i, int) and not isinstance(i, bool) for i in pair) or not all(
            0 <= i < len(tokens) for i in pair
        ):
            raise TokenizerError(
                f"{path}: merge {rank} {pair} refers to ids outside the {len(tokens)} tokens"
            )
    try:
        return BPETokenizer(
            tokens,
            _field(obj, "pattern", str, path),
            _field(obj, "special_tokens", dict, path),
            merges=[tuple(m) for m in merges] if merges is not None else None,
            name=obj.get("name") or "scratchllm-bpe",
            use_fast=use_fast,
        )
    except TokenizerError as exc:
        raise TokenizerError(f"{path}: {exc}") from None


def load_bpe(path: str | Path, *, use_fast: bool | None = None) -> BPETokenizer:
    path, obj = read_json(path)
    return bpe_from_json(path, obj, use_fast)


def load_tokenizer(path: str | Path, **kwargs: Any) -> BPETokenizer | WordTokenizer:
    """Load a tokenizer, detecting the format: our tokenizer.json (BPE or word-level, a directory
    or the file), a directory with OpenAI's GPT-2 encoder.json + vocab.bpe, or a .tiktoken file."""
    from scratchllm.tokenizer.simple import WordTokenizer

    given = Path(path)
    if given.is_dir() and not (given / FILENAME).exists():
        if (given / "encoder.json").is_file() and (given / "vocab.bpe").is_file():
            return read_gpt2_files(given / "encoder.json", given / "vocab.bpe", **kwargs)
    if given.is_file() and given.suffix == ".tiktoken":
        return read_tiktoken_file(given, **kwargs)
    path, obj = read_json(path)
    kind = obj.get("type")
    if kind == "bpe":
        return bpe_from_json(path, obj, **kwargs)
    if kind == "word":
        return WordTokenizer.from_json(path, obj)
    raise TokenizerError(f"{path}: unknown tokenizer type {kind!r} (expected 'bpe' or 'word')")


# --------------------------------------------------------------------------- OpenAI formats
def bytes_to_unicode() -> dict[int, str]:
    """GPT-2's reversible map from bytes to printable characters used in encoder.json/vocab.bpe:
    printable Latin-1 bytes map to themselves, the other 68 to code points 256 and up."""
    printable = [*range(ord("!"), ord("~") + 1), *range(0xA1, 0xAD), *range(0xAE, 0x100)]
    mapping = {b: chr(b) for b in printable}
    extra = 0
    for b in range(256):
        if b not in mapping:
            mapping[b] = chr(256 + extra)
            extra += 1
    return mapping


def read_gpt2_files(
    encoder_json: str | Path, vocab_bpe: str | Path, *, use_fast: bool | None = None
) -> BPETokenizer:
    """Build GPT-2's tokenizer from OpenAI's files; `<|endoftext|>` becomes a special token."""
    from scratchllm.tokenizer.bpe import ENDOFTEXT, BPETokenizer
    from scratchllm.tokenizer.patterns import GPT2_PATTERN

    encoder_json, vocab_bpe = Path(encoder_json), Path(vocab_bpe)
    try:
        encoder = json.loads(encoder_json.read_text(encoding="utf-8"))
        merge_lines = vocab_bpe.read_text(encoding="utf-8").split("\n")
    except FileNotFoundError as exc:
        raise TokenizerError(f"GPT-2 tokenizer file not found: {exc.filename}") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise TokenizerError(
            f"{encoder_json}: not valid JSON (corrupt or truncated?): {exc}"
        ) from None
    if not isinstance(encoder, dict):
        raise TokenizerError(f"{encoder_json}: expected a JSON object of token -> id")
    decoder = {ch: b for b, ch in bytes_to_unicode().items()}
    specials = {ENDOFTEXT: encoder.pop(ENDOFTEXT)} if ENDOFTEXT in encoder else {}
    tokens: list[bytes | None] = [None] * len(encoder)
    for text, idx in encoder.items():
        try:
            if not isinstance(idx, int) or not 0 <= idx < len(tokens):
                raise IndexError(idx)
            tokens[idx] = bytes(decoder[ch] for ch in text)
        except (KeyError, IndexError, TypeError):
            raise TokenizerError(f"{encoder_json}: bad entry {text!r}: {idx!r}") from None
    if any(t is None for t in tokens):
        raise TokenizerError(f"{encoder_json}: token ids are not contiguous from 0")
    merges = [line for line in merge_lines[1:] if line.strip()]  # first line is a version header
    if len(merges) != len(tokens) - 256:
        raise TokenizerError(
            f"{vocab_bpe}: {len(merges)} merges but {encoder_json} has {len(tokens)} tokens "
            f"(expected {len(tokens) - 256} merges; truncated file?)"
        )
    for rank, line in enumerate(merges[:50]):  # spot check the two files belong together
        left, _, right = line.partition(" ")
        merged = bytes(decoder.get(ch, 0) for ch in left + right)
        if tokens[256 + rank] != merged:
            raise TokenizerError(
                f"{vocab_bpe}: merge {rank} ({line!r}) disagrees with encoder.json"
            )
    return BPETokenizer(tokens, GPT2_PATTERN, specials, name="gpt2", use_fast=use_fast)  # type: ignore[arg-type]


def read_tiktoken_file(
    path: str | Path,
    pattern: str = "gpt2",
    special_tokens: dict[str, int] | None = None,
    *,
    use_fast: bool | None = None,
) -> BPETokenizer:
    """Read a `.tiktoken` rank file: one `base64(token) rank` per line, ranks 0..n-1."""
    from scratchllm.tokenizer.bpe import BPETokenizer

    path = Path(path)
    if not path.is_file():
        raise TokenizerError(f"tiktoken file not found: {path}")
    ranked: dict[int, bytes] = {}
    for lineno, line in enumerate(path.read_bytes().splitlines(), start=1):
        if not line.strip():
            continue
        try:
            token, rank = line.split()
            ranked[int(rank)] = base64.b64decode(token, validate=True)
        except (ValueError, binascii.Error):
            raise TokenizerError(
                f"{path}:{lineno}: expected 'base64 rank', got {line[:60]!r}"
            ) from None
    if sorted(ranked) != list(range(len(ranked))):
        raise TokenizerError(f"{path}: ranks are not contiguous from 0 (truncated file?)")
    tokens = [ranked[i] for i in range(len(ranked))]
    try:
        return BPETokenizer(tokens, pattern, special_tokens, name=path.stem, use_fast=use_fast)
    except TokenizerError as exc:
        raise TokenizerError(f"{path}: {exc}") from None


def write_tiktoken_file(tok: BPETokenizer, path: str | Path) -> Path:
    """Write the ranks (special tokens and the pattern are not part of this format)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    lines = [f"{base64.b64encode(t).decode('ascii')} {r}" for t, r in tok.ranks.items()]
    path.write_text("\n".join(lines) + "\n", encoding="ascii")
    return path
