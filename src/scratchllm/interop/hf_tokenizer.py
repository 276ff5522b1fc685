"""Our byte-level BPE tokenizer in the files Hugging Face tools (and tiktoken) read, and back.

Written: `tokenizer.json` (HF tokenizers), `vocab.json` + `merges.txt` (GPT-2 slow tokenizer),
`tokenizer_config.json` (transformers' AutoTokenizer) and `tokenizer.tiktoken` (tiktoken's rank
file; tiktoken needs the regex from tokenizer.json beside it). Our ids are merge ranks, as in
tiktoken: HF's BPE gives the same ids when its merges are listed in rank order and a piece that is
itself a token is taken whole (`ignore_merges`), which is what tiktoken does.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from scratchllm.errors import TokenizerError
from scratchllm.tokenizer.bpe import ENDOFTEXT, BPETokenizer
from scratchllm.tokenizer.files import bytes_to_unicode
from scratchllm.tokenizer.patterns import GPT2_PATTERN

HF_TOKENIZER = "tokenizer.json"
TIKTOKEN_FILE = "tokenizer.tiktoken"
MERGES_HEADER = "#version: 0.2"
BYTE_LEVEL = {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True}


def _merge_parts(token: bytes, ranks: dict[bytes, int], limit: int) -> list[bytes]:
    """BPE of `token` using only ranks below `limit`: the two parts its last merge joined."""
    parts = [token[i : i + 1] for i in range(len(token))]
    while len(parts) > 2:
        best, at = limit, -1
        for i in range(len(parts) - 1):
            rank = ranks.get(parts[i] + parts[i + 1], limit)
            if rank < best:
                best, at = rank, i
        if at < 0:
            break
        parts[at : at + 2] = [parts[at] + parts[at + 1]]
    return parts


def merges_of(tok: BPETokenizer) -> list[tuple[bytes, bytes]]:
    """The merge list in rank order: recorded by training, else derived from the ranks."""
    tokens = tok.tokens
    if tok.merges is not None and all(
        tokens[a] + tokens[b] == tokens[256 + i] for i, (a, b) in enumerate(tok.merges)
    ):
        return [(tokens[a], tokens[b]) for a, b in tok.merges]
    merges = []
    for rank in range(256, len(tokens)):
        parts = _merge_parts(tokens[rank], tok.ranks, rank)
        if len(parts) != 2:
            raise TokenizerError(f"token {rank} ({tokens[rank]!r}) is not reachable by merges")
        merges.append((parts[0], parts[1]))
    return merges


def hf_tokenizer_json(tok: BPETokenizer) -> dict[str, Any]:
    """The HF `tokenizers` JSON for our tokenizer (BPE model, regex split, byte-level)."""
    to_char = bytes_to_unicode()
    text = lambda b: "".join(to_char[x] for x in b)  # noqa: E731
    vocab = {text(t): i for i, t in enumerate(tok.tokens)}
    added = [
        {"id": i, "content": s, "single_word": False, "lstrip": False, "rstrip": False}
        | {"normalized": False, "special": True}
        for s, i in sorted(tok.special_tokens.items(), key=lambda kv: kv[1])
    ]
    split = {"type": "Split", "pattern": {"Regex": tok.pattern}, "behavior": "Isolated"}
    return {
        "version": "1.0",
        "truncation": None,
        "padding": None,
        "added_tokens": added,
        "normalizer": None,
        "pre_tokenizer": {
            "type": "Sequence",
            "pretokenizers": [split | {"invert": False}, BYTE_LEVEL | {"use_regex": False}],
        },
        "post_processor": None,
        "decoder": BYTE_LEVEL | {"use_regex": True},
        "model": {
            "type": "BPE",
            "dropout": None,
            "unk_token": None,
            "continuing_subword_prefix": None,
            "end_of_word_suffix": None,
            "fuse_unk": False,
            "byte_fallback": False,
            "ignore_merges": True,  # a piece that is a token stays whole, as in tiktoken
            "vocab": vocab,
            "merges": [f"{text(a)} {text(b)}" for a, b in merges_of(tok)],
        },
    }


def save_hf_tokenizer(tok: BPETokenizer, directory: str | Path, max_length: int) -> list[Path]:
    """Write the HF tokenizer files and the tiktoken rank file; returns the paths."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    spec = hf_tokenizer_json(tok)
    vocab = spec["model"]["vocab"] | tok.special_tokens
    merges = [MERGES_HEADER, *spec["model"]["merges"]]
    eot = ENDOFTEXT if tok.eot_id is not None else None
    config = {
        "tokenizer_class": "PreTrainedTokenizerFast",
        "model_max_length": max_length,
        "clean_up_tokenization_spaces": False,
        "add_prefix_space": False,
    } | ({"bos_token": eot, "eos_token": eot, "unk_token": eot} if eot else {})
    files = {
        HF_TOKENIZER: json.dumps(spec, ensure_ascii=False, indent=1),
        "vocab.json": json.dumps(vocab, ensure_ascii=False),
        "merges.txt": "\n".join(merges),
        "tokenizer_config.json": json.dumps(config, indent=2),
    }
    paths = []
    for name, content in files.items():
        (directory / name).write_text(content + "\n", encoding="utf-8")
        paths.append(directory / name)
    paths.append(tok.to_tiktoken_file(directory / TIKTOKEN_FILE))
    return paths


def _pattern(pre: dict[str, Any] | None, path: Path) -> str:
    """The split regex of a byte-level pre-tokenizer (GPT-2's when ByteLevel splits itself)."""
    steps = pre.get("pretokenizers", []) if pre and pre.get("type") == "Sequence" else [pre]
    pattern = None
    for step in steps:
        kind = (step or {}).get("type")
        if kind == "Split" and "Regex" in step.get("pattern", {}):
            pattern = step["pattern"]["Regex"]
        elif kind == "ByteLevel":
            if step.get("add_prefix_space"):
                raise TokenizerError(f"{path}: ByteLevel add_prefix_space is unsupported")
            if step.get("use_regex", True):
                pattern = GPT2_PATTERN
        else:
            raise TokenizerError(f"{path}: pre-tokenizer {kind!r} is not byte-level BPE")
    if pattern is None:
        raise TokenizerError(f"{path}: no split pattern in the pre-tokenizer")
    return pattern


def read_hf_tokenizer(path: str | Path) -> BPETokenizer:
    """Our tokenizer from a HF byte-level BPE `tokenizer.json` (GPT-2, Llama 3, Qwen2, ours)."""
    path = Path(path)
    try:
        spec = json.loads(path.read_text(encoding="utf-8"))
        model = spec["model"]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise TokenizerError(f"{path}: not a Hugging Face tokenizer.json ({exc})") from None
    if model.get("type") != "BPE" or spec.get("normalizer") or model.get("byte_fallback"):
        raise TokenizerError(f"{path}: only byte-level BPE without a normalizer is supported")
    pattern = _pattern(spec.get("pre_tokenizer"), path)
    to_byte = {c: b for b, c in bytes_to_unicode().items()}
    specials = {a["content"]: a["id"] for a in spec.get("added_tokens", []) if a.get("special")}
    special_ids = set(specials.values())
    regular = {t: i for t, i in model["vocab"].items() if i not in special_ids}
    if sorted(regular.values()) != list(range(len(regular))):
        raise TokenizerError(f"{path}: vocabulary ids are not contiguous from 0")
    try:
        tokens = [b""] * len(regular)
        for text, i in regular.items():
            tokens[i] = bytes(to_byte[c] for c in text)
    except KeyError:
        raise TokenizerError(f"{path}: token {text!r} is not byte-level encoded") from None
    ranks = {t: i for i, t in enumerate(tokens)}
    last = 255
    for merge in model.get("merges", []):  # ids must grow with merge order (ids are ranks)
        a, b = merge.split(" ") if isinstance(merge, str) else merge
        merged = ranks.get(bytes(to_byte[c] for c in a + b), -1)
        if merged <= last:
            raise TokenizerError(f"{path}: merge {merge!r} is out of id order (not tiktoken-like)")
        last = merged
    try:
        return BPETokenizer(tokens, pattern, specials, name=path.parent.name or "hf")
    except TokenizerError as exc:
        raise TokenizerError(f"{path}: {exc}") from None


def load_hf_tokenizer(directory: str | Path) -> BPETokenizer:
    """The tokenizer of a HF checkpoint directory: tokenizer.json, else GPT-2's vocab files."""
    directory = Path(directory)
    for vocab, merges in (("vocab.json", "merges.txt"), ("encoder.json", "vocab.bpe")):
        if not (directory / HF_TOKENIZER).is_file() and (directory / vocab).is_file():
            return BPETokenizer.from_gpt2_files(directory / vocab, directory / merges)
    if not (directory / HF_TOKENIZER).is_file():
        raise TokenizerError(
            f"{directory}: no tokenizer (looked for tokenizer.json, vocab.json + merges.txt, "
            f"encoder.json + vocab.bpe)"
        )
    return read_hf_tokenizer(directory / HF_TOKENIZER)
