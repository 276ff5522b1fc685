"""Labelled text for classification: read CSV / TSV / JSON Lines, split, balance, encode, batch.

file ─► ``Example(text, label, where)`` ─► stratified split (or given split files) ─► optional
undersampling ─► label ids ─► token ids (truncated) ─► right-padded batches with masks

Every record keeps ``where`` ("file:line"), so a bad record is reported by file, line and value.
"""

from __future__ import annotations

import csv
import io
import json
import sys
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from scratchllm.data.sources import decode_text
from scratchllm.errors import DataError

FORMATS = ("csv", "tsv", "jsonl", "txt")
_SUFFIX_FORMAT = {
    ".csv": "csv",
    ".tsv": "tsv",
    ".tab": "tsv",
    ".jsonl": "jsonl",
    ".ndjson": "jsonl",
    ".txt": "txt",
}
# The book's split of the SMS spam data: 70% train, 10% validation, 20% test.
DEFAULT_FRACTIONS = (0.7, 0.1, 0.2)


@dataclass(frozen=True)
class Example:
    """One labelled text and where it came from ("file:line"), for error messages."""

    text: str
    label: str | None
    where: str


@dataclass(frozen=True)
class Columns:
    """Which fields hold the text and the label. For CSV/TSV a name, or a 0-based index when the
    file has no header row (``header=False``; ``None`` guesses: no header iff both are digits)."""

    text: str = "text"
    label: str = "label"
    header: bool | None = None
    format: str | None = None  # "csv" | "tsv" | "jsonl" | "txt"; None = from the file suffix


def detect_format(path: Path, given: str | None = None) -> str:
    """The file format, from ``given`` or the suffix; clear error when neither says."""
    fmt = given or _SUFFIX_FORMAT.get(path.suffix.lower())
    if fmt not in FORMATS:
        raise DataError(
            f"{path}: cannot tell the format from suffix {path.suffix!r}; "
            f"pass one of {', '.join(FORMATS)}"
        )
    return fmt


def read_examples(
    path: str | Path, columns: Columns | None = None, *, labels: bool = True
) -> list[Example]:
    """Records of a CSV / TSV / JSON Lines file (``.txt``: one unlabelled text per line).

    ``labels=False`` reads only the text (for prediction). Empty texts or labels are errors.
    """
    path, columns = Path(path), columns or Columns()
    if not path.is_file():
        raise DataError(f"{path}: data file not found")
    fmt = detect_format(path, columns.format)
    text = decode_text(path.read_bytes(), str(path)).removeprefix("\ufeff")  # BOM (Excel)
    if fmt == "jsonl":
        rows = _jsonl_rows(path, text, columns, labels)
    elif fmt == "txt":
        if labels:
            raise DataError(f"{path}: a .txt file has no labels; use CSV, TSV or JSON Lines")
        rows = [(t, None, f"{path}:{i}") for i, t in enumerate(text_lines(text), 1) if t.strip()]
    else:
        rows = _table_rows(path, text, fmt, columns, labels)
    examples = []
    for raw_text, raw_label, where in rows:
        if not raw_text.strip():
            raise DataError(f"{where}: empty text in column {columns.text!r}")
        label = None
        if labels:
            label = raw_label.strip() if raw_label is not None else ""
            if not label:
                raise DataError(f"{where}: empty label in column {columns.label!r}")
        examples.append(Example(raw_text, label, where))
    if not examples:
        raise DataError(f"{path}: no records")
    return examples


def text_lines(text: str) -> list[str]:
    """Lines ended by \\n, \\r\\n or \\r only: ``str.splitlines`` also splits at U+2028, U+0085,
    form feeds and other separators, which are ordinary characters inside a record's text."""
    return [line.rstrip("\r\n") for line in io.StringIO(text, newline="")]


def _jsonl_rows(path: Path, text: str, columns: Columns, labels: bool) -> list[tuple]:
    rows = []
    for lineno, line in enumerate(text_lines(text), start=1):
        if not line.strip():
            continue
        where = f"{path}:{lineno}"
        try:
            record = json.loads(line)
        except json.JSONDecodeError as exc:
            raise DataError(f"{where}: not valid JSON ({exc.msg})") from None
        if not isinstance(record, dict):
            raise DataError(f"{where}: expected a JSON object, got {type(record).__name__}")
        wanted = (columns.text, columns.label) if labels else (columns.text,)
        for key in wanted:
            if key not in record:
                have = ", ".join(map(repr, record)) or "none"
                raise DataError(f"{where}: no field {key!r} (fields: {have})")
        value = record[columns.text]
        if not isinstance(value, str):
            raise DataError(
                f"{where}: field {columns.text!r} is {type(value).__name__}, not a string"
            )
        label = record[columns.label] if labels else None
        if isinstance(label, (dict, list)):
            raise DataError(f"{where}: label {label!r} is not a string or a number")
        if isinstance(label, float) and label.is_integer():
            label = int(label)  # 1.0 and 1 are one class, as "1" in a TSV file
        rows.append((value, None if label is None else str(label), where))
    return rows


def _table_rows(path: Path, text: str, fmt: str, columns: Columns, labels: bool) -> list[tuple]:
    # TSV has no quoting convention (a text may start with '"'); CSV follows RFC 4180.
    options: dict[str, Any] = (
        {"delimiter": "\t", "quoting": csv.QUOTE_NONE} if fmt == "tsv" else {"delimiter": ","}
    )
    csv.field_size_limit(min(sys.maxsize, 2**31 - 1))
    reader = csv.reader(io.StringIO(text, newline=""), **options)
    header = columns.header
    wanted = [columns.text, columns.label] if labels else [columns.text]
    if header is None:
        header = not all(c.isdigit() for c in wanted)
    first = next(reader, None)
    if first is None:
        raise DataError(f"{path}: no records")
    if header:
        missing = [c for c in wanted if c not in first]
        if missing:
            raise DataError(
                f"{path}:1: no column {missing[0]!r} in the header (columns: "
                f"{', '.join(map(repr, first))})"
            )
        index = [first.index(c) for c in wanted]
        records: list[tuple[int, list[str]]] = []
    else:
        if not all(c.isdigit() for c in wanted):
            raise DataError(f"{path}: without a header row, columns must be 0-based indices")
        index = [int(c) for c in wanted]
        records = [(1, first)]
    while True:  # a quoted CSV text may span lines: name the line where the record starts
        start = reader.line_num + 1
        row = next(reader, None)
        if row is None:
            break
        records.append((start, row))
    expected = (len(first), "the header" if header else "the first row")
    rows = []
    for lineno, row in records:
        if not row or not any(cell.strip() for cell in row):
            continue
        where = f"{path}:{lineno}"
        if len(row) != expected[0]:
            hint = ""
            if len(row) > expected[0]:
                hint = (
                    " (a tab inside a text?)" if fmt == "tsv" else " (an unquoted ',' in a text?)"
                )
            raise DataError(
                f"{where}: row has {_fields(len(row))}, {expected[1]} has {expected[0]}{hint}"
            )
        if max(index) >= len(row):
            col = wanted[index.index(max(index))]
            raise DataError(f"{where}: row has {_fields(len(row))}, no column {col!r}")
        rows.append((row[index[0]], row[index[1]] if labels else None, where))
    return rows


def _fields(n: int) -> str:
    return f"{n} field" if n == 1 else f"{n} fields"


# -------------------------------------------------------------------------- labels and splits


def label_order(labels: Sequence[str]) -> list[str]:
    """The label set in a stable order: numerically when every label is an integer, else sorted."""
    unique = set(labels)
    if all(_is_int(x) for x in unique):
        return sorted(unique, key=lambda x: (int(x), x))  # "1" and "01": the text breaks the tie
    return sorted(unique)


def _is_int(text: str) -> bool:
    return text.lstrip("-").isdigit()


def check_classes(examples: Sequence[Example], source: str) -> list[str]:
    """The label set of training data; a single class cannot be learned, so it is an error."""
    counts = Counter(e.label for e in examples)
    if len(counts) < 2:
        (only,) = counts
        first = examples[0].where
        raise DataError(
            f"{source}: only one label {only!r} in {len(examples)} record(s) (first at {first}); "
            "a classifier needs at least two classes"
        )
    return label_order(list(counts))


def check_known_labels(
    examples: Sequence[Example], known: Sequence[str], train_source: str
) -> None:
    """Every label of a validation/test split must have been seen in training."""
    known_set = set(known)
    for e in examples:
        if e.label not in known_set:
            raise DataError(
                f"{e.where}: label {e.label!r} never appears in the training data "
                f"({train_source}; labels: {', '.join(map(repr, known))})"
            )


def balance(examples: Sequence[Example], seed: int) -> list[Example]:
    """Undersample every class to the size of the smallest (seeded), keeping file order."""
    by_label: dict[str, list[int]] = {}
    for i, e in enumerate(examples):
        by_label.setdefault(e.label, []).append(i)
    n = min(len(v) for v in by_label.values())
    rng = np.random.default_rng(seed)
    keep: list[int] = []
    for label in sorted(by_label):
        idx = by_label[label]
        keep += idx if len(idx) == n else sorted(rng.choice(idx, size=n, replace=False).tolist())
    return [examples[i] for i in sorted(keep)]


def stratified_split(
    examples: Sequence[Example],
    fractions: tuple[float, float, float] = DEFAULT_FRACTIONS,
    seed: int = 0,
) -> tuple[list[Example], list[Example], list[Example]]:
    """Train / validation / test with each class split in the same proportions (seeded).

    Each class is shuffled and cut at rounded fractions; training keeps at least one example of
    every class so that no evaluation label is unseen in training.
    """
    if len(fractions) != 3 or min(fractions) < 0 or abs(sum(fractions) - 1) > 1e-6:
        raise DataError(f"split fractions {fractions} must be three numbers >= 0 summing to 1")
    rng = np.random.default_rng(seed)
    by_label: dict[str, list[Example]] = {}
    for e in examples:
        by_label.setdefault(e.label, []).append(e)
    splits: tuple[list[Example], list[Example], list[Example]] = ([], [], [])
    for label in sorted(by_label):
        items = by_label[label]
        order = rng.permutation(len(items))
        n_val = round(fractions[1] * len(items))
        n_test = round(fractions[2] * len(items))
        n_train = max(1, len(items) - n_val - n_test)
        n_val = min(n_val, len(items) - n_train)
        cuts = (n_train, n_train + n_val)
        for part, idx in zip(splits, np.split(order, cuts), strict=True):
            part += [items[i] for i in idx]
    for part in splits:  # mix the classes again (the loader shuffles too; this helps reading)
        perm = rng.permutation(len(part))
        part[:] = [part[i] for i in perm]
    return splits


# ----------------------------------------------------------------------------------- encoding


@dataclass(frozen=True)
class Encoding:
    """How texts become ids: truncation length, padding id, optional first (CLS-like) token."""

    max_length: int  # ids kept per text (the prefix token included)
    pad_id: int  # id written into padding positions (masked out, so any valid id works)
    prefix_id: int | None = None  # prepended to every text (encoders pool this position)


def encode_texts(tokenizer: Any, texts: Sequence[str], enc: Encoding) -> list[np.ndarray]:
    """Token ids of each text, with the prefix, truncated to ``max_length``."""
    prefix = [] if enc.prefix_id is None else [enc.prefix_id]
    out = []
    for text in texts:
        ids = prefix + tokenizer.encode_ordinary(text)
        out.append(np.asarray(ids[: enc.max_length], dtype=np.int64))
    return out


class ClassifyDataset:
    """Encoded texts and label ids; ``get_batch`` pads to the longest row of the batch.

    Padding per batch (not to a global maximum) keeps short-message batches short. Rows are
    right-padded, so a causal model's real tokens never attend to padding.
    """

    def __init__(self, ids: list[np.ndarray], labels: Sequence[int] | None, pad_id: int) -> None:
        if not ids:
            raise DataError("no examples to classify")
        self.ids = ids
        self.labels = torch.as_tensor(
            np.asarray(labels if labels is not None else [-1] * len(ids)), dtype=torch.long
        )
        self.pad_id = pad_id

    def __len__(self) -> int:
        return len(self.ids)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        return torch.as_tensor(self.ids[index]), self.labels[index]

    def get_batch(self, indices: np.ndarray) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(ids [B, T], mask [B, T] 1 = real token, labels [B]) for the given items."""
        rows = [self.ids[int(i)] for i in indices]
        width = max(len(r) for r in rows)
        x = torch.full((len(rows), width), self.pad_id, dtype=torch.long)
        mask = torch.zeros((len(rows), width), dtype=torch.long)
        for r, ids in enumerate(rows):
            x[r, : len(ids)] = torch.from_numpy(ids)
            mask[r, : len(ids)] = 1
        return x, mask, self.labels[torch.as_tensor(np.asarray(indices, dtype=np.int64))]


def build_dataset(
    tokenizer: Any, examples: Sequence[Example], labels: Sequence[str], enc: Encoding
) -> ClassifyDataset:
    """A dataset of ``examples`` with label ids given by the order of ``labels``."""
    index = {label: i for i, label in enumerate(labels)}
    ids = encode_texts(tokenizer, [e.text for e in examples], enc)
    return ClassifyDataset(ids, [index[e.label] for e in examples], enc.pad_id)
