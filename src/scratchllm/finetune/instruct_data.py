"""Instruction and preference records: JSON or JSON Lines files read into conversations, with
errors that name the file, line, record and field; the train / validation / test split.

Bad records raise a ``DataError`` or, with ``skip_invalid``, are counted in a ``SkipReport`` and
reported. Used by ``finetune.instruct`` (SFT) and ``finetune.preference`` (DPO).
"""

from __future__ import annotations

import json
import math
import re
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from scratchllm.errors import ConfigError, DataError
from scratchllm.finetune.templates import Message, check_messages

# ----------------------------------------------------------------------------------- records


@dataclass
class SkipReport:
    """Records left out, by reason, with a few examples of where (never a silent drop)."""

    counts: Counter = field(default_factory=Counter)
    examples: list[str] = field(default_factory=list)

    def add(self, reason: str, where: str) -> None:
        self.counts[reason] += 1
        if len(self.examples) < 5:
            self.examples.append(f"{where}: {reason}")

    @property
    def total(self) -> int:
        return sum(self.counts.values())

    def summary(self) -> str:
        if not self.total:
            return "skipped 0 records"
        reasons = ", ".join(f"{n} {r}" for r, n in self.counts.most_common())
        return f"skipped {self.total} record(s): {reasons} (e.g. {self.examples[0]})"


def read_records(path: str | Path) -> list[tuple[str, Any]]:
    """``(where, record)`` pairs from a JSON array or a JSON Lines file.

    ``where`` names the file and line: ``data.jsonl:7``, or for an array ``data.json:12 (record
    4)``, the line where the record starts and its 1-based position.
    """
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8-sig")  # a byte-order mark is not part of the JSON
    except FileNotFoundError:
        raise DataError(f"{path}: data file not found") from None
    except UnicodeDecodeError as exc:
        raise DataError(f"{path}: not UTF-8 text ({exc})") from None
    if text.lstrip().startswith("["):
        records = _array_records(path, text)
    else:
        records = _json_lines(path, text)
    if not records:
        raise DataError(f"{path}: no records (expected a JSON array or JSON Lines)")
    return records


def _array_records(path: Path, text: str) -> list[tuple[str, Any]]:
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise DataError(f"{path}:{exc.lineno}: invalid JSON: {exc.msg}") from None
    assert isinstance(data, list)  # the text starts with "[" and parsed
    # The text is valid JSON: walk it once more to find the line on which each record starts.
    decoder, space = json.JSONDecoder(), re.compile(r"[ \t\n\r]*")
    pos, line, counted = space.match(text, text.index("[") + 1).end(), 1, 0
    out = []
    for i, record in enumerate(data):
        line += text.count("\n", counted, pos)
        counted = pos
        out.append((f"{path}:{line} (record {i + 1})", record))
        _, end = decoder.raw_decode(text, pos)
        pos = space.match(text, end).end()
        pos = space.match(text, pos + 1).end()  # past the ',' (or the closing ']')
    return out


def _json_lines(path: Path, text: str) -> list[tuple[str, Any]]:
    from scratchllm.finetune.classify_data import text_lines

    records = []
    for lineno, line in enumerate(text_lines(text), 1):
        if not line.strip():
            continue
        try:
            records.append((f"{path}:{lineno}", json.loads(line)))
        except json.JSONDecodeError as exc:
            if not records and _one_object(text):
                raise DataError(
                    f"{path}: one JSON object, not a list of records: give a JSON array "
                    "([{...}, {...}]) or JSON Lines (one record per line)"
                ) from None
            raise DataError(f"{path}:{lineno}: invalid JSON: {exc.msg}") from None
    return records


def _one_object(text: str) -> bool:
    try:
        return isinstance(json.loads(text), dict)
    except json.JSONDecodeError:
        return False


def _string(record: dict, key: str, where: str, *, required: bool = True) -> str:
    if key not in record:
        if required:
            raise DataError(f"{where}: field {key!r} is missing")
        return ""
    value = record[key]
    if value is None and not required:
        return ""
    if not isinstance(value, str):
        raise DataError(f"{where}: field {key!r} must be a string, got {type(value).__name__}")
    return value


def prompt_messages(record: Any, where: str) -> list[Message]:
    """The prompt part of a record: its ``messages``, or ``instruction`` (+ ``input``) as a user turn."""
    if not isinstance(record, dict):
        raise DataError(f"{where}: a record must be an object, got {type(record).__name__}")
    if "messages" in record:
        return [dict(m) for m in check_messages(record["messages"], where)]
    if "instruction" not in record:
        raise DataError(f"{where}: record has neither 'messages' nor 'instruction'")
    message = {"role": "user", "content": _string(record, "instruction", where)}
    extra = _string(record, "input", where, required=False)
    if extra:
        message["input"] = extra
    return [message]


def record_to_conversation(record: Any, where: str) -> list[Message]:
    """A training conversation (ending with an assistant turn) from either record form."""
    messages = prompt_messages(record, where)
    if "messages" in record:
        if messages[-1]["role"] != "assistant":
            raise DataError(f"{where}: the last message must be from the assistant")
        return messages
    return messages + [{"role": "assistant", "content": _string(record, "output", where)}]


def load_conversations(
    path: str | Path, *, skip_invalid: bool = False, skips: SkipReport | None = None
) -> list[list[Message]]:
    """Conversations from a data file; an invalid record raises unless ``skip_invalid``."""
    return [conv for _, conv in located_conversations(path, skip_invalid=skip_invalid, skips=skips)]


def located_conversations(
    path: str | Path, *, skip_invalid: bool = False, skips: SkipReport | None = None
) -> list[tuple[str, list[Message]]]:
    """``(where, conversation)`` pairs: ``where`` names the file and line of each record."""
    out = []
    for where, record in read_records(path):
        try:
            out.append((where, record_to_conversation(record, where)))
        except DataError as exc:
            if not skip_invalid:
                raise
            (skips if skips is not None else SkipReport()).add(_reason(exc), where)
    return out


def _reason(exc: Exception) -> str:
    return str(exc).split(": ", 1)[-1]


def check_split(fractions: Sequence[float]) -> None:
    """Train / validation / test fractions: three numbers >= 0 that sum to 1."""
    if (
        len(fractions) != 3
        or any(f < 0 for f in fractions)
        or not math.isclose(sum(fractions), 1.0, abs_tol=1e-6)
    ):
        raise ConfigError(
            f"split fractions {list(fractions)} must be three numbers >= 0 that sum to 1"
        )


def split_items(
    items: Sequence[Any], fractions: Sequence[float] = (0.85, 0.05, 0.10), seed: int = 0
) -> list[list[Any]]:
    """Seeded shuffle, then cut into train / validation / test (the last takes the remainder)."""
    check_split(fractions)
    order = np.random.default_rng(seed).permutation(len(items))
    bounds = np.round(np.cumsum(fractions) * len(items)).astype(int)
    parts, start = [], 0
    for end in bounds:
        parts.append([items[i] for i in order[start:end]])
        start = end
    return parts
