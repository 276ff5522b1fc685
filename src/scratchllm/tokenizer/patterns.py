"""Pre-tokenization patterns: text is split into pieces before BPE so merges never cross them."""

from __future__ import annotations

from scratchllm.errors import TokenizerError

# GPT-2 (OpenAI, 2019): contractions, letters, digits, punctuation runs, whitespace. Possessive
# quantifiers and `\s++$` are the form tiktoken uses; they split text exactly as the original
# pattern does while avoiding backtracking on long runs.
GPT2_PATTERN = (
    r"""'(?:[sdmt]|ll|ve|re)| ?\p{L}++| ?\p{N}++| ?[^\s\p{L}\p{N}]++|\s++$|\s+(?!\S)|\s"""
)

# GPT-4 / cl100k_base: case-insensitive contractions, digits in groups of at most three, newlines
# kept apart from other whitespace.
GPT4_PATTERN = (
    r"""'(?i:[sdmt]|ll|ve|re)|[^\r\n\p{L}\p{N}]?+\p{L}++|\p{N}{1,3}+| ?[^\s\p{L}\p{N}]++[\r\n]*+"""
    r"""|\s++$|\s*[\r\n]|\s+(?!\S)|\s"""
)

PATTERNS: dict[str, str] = {"gpt2": GPT2_PATTERN, "gpt4": GPT4_PATTERN}


def resolve_pattern(pattern: str) -> str:
    """Return the regex for a named pattern ("gpt2", "gpt4"), or check and return a custom regex."""
    if pattern in PATTERNS:
        return PATTERNS[pattern]
    import regex

    try:
        regex.compile(pattern)
    except regex.error as exc:
        raise TokenizerError(f"invalid pre-tokenization pattern {pattern!r}: {exc}") from exc
    if not pattern:
        raise TokenizerError("empty pre-tokenization pattern")
    return pattern


def pattern_name(pattern: str) -> str | None:
    """Name of a known pattern ("gpt2"/"gpt4"), or None for a custom regex."""
    for name, pat in PATTERNS.items():
        if pat == pattern:
            return name
    return None
