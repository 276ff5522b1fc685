"""Reading, checking, splitting and batching labelled text for classification."""

import json
import os
from collections import Counter

import numpy as np
import pytest

from scratchllm.errors import ConfigError, DataError
from scratchllm.finetune.classify_data import (
    ClassifyDataset,
    Columns,
    Example,
    balance,
    check_classes,
    label_order,
    read_examples,
    stratified_split,
)
from scratchllm.finetune.classify_run import load_splits


def _write(path, text):
    path.write_text(text, encoding="utf-8")
    return path


def test_reads_csv_with_header_tsv_by_index_and_jsonl(tmp_path):
    csv_file = _write(tmp_path / "a.csv", 'label,text\npos,"good, very good"\nneg,bad\n')
    got = read_examples(csv_file)
    assert [(e.text, e.label) for e in got] == [("good, very good", "pos"), ("bad", "neg")]
    assert got[1].where == f"{csv_file}:3"

    tsv_file = _write(tmp_path / "a.tsv", 'spam\t"Free" entry now\nham\tsee you\n')
    got = read_examples(tsv_file, Columns(text="1", label="0", header=False))
    assert [(e.text, e.label) for e in got] == [('"Free" entry now', "spam"), ("see you", "ham")]

    lines = [{"sentence": "one", "y": 1}, {"sentence": "two", "y": 0}]
    jsonl = _write(tmp_path / "a.jsonl", "\n".join(json.dumps(r) for r in lines) + "\n")
    got = read_examples(jsonl, Columns(text="sentence", label="y"))
    assert [(e.text, e.label) for e in got] == [("one", "1"), ("two", "0")]


def test_json_numbers_equal_as_integers_are_one_label(tmp_path):
    lines = [{"text": "a", "y": 1}, {"text": "b", "y": 1.0}, {"text": "c", "y": 0.5}]
    jsonl = _write(tmp_path / "n.jsonl", "\n".join(json.dumps(r) for r in lines) + "\n")
    got = read_examples(jsonl, Columns(text="text", label="y"))
    assert [e.label for e in got] == ["1", "1", "0.5"]  # 1.0 was a class of its own


def test_txt_is_text_only(tmp_path):
    txt = _write(tmp_path / "t.txt", "first\n\nsecond\n")
    assert [e.text for e in read_examples(txt, labels=False)] == ["first", "second"]
    with pytest.raises(DataError, match="no labels"):
        read_examples(txt)


def test_label_order_is_numeric_when_labels_are_integers():
    assert label_order(["10", "2", "1"]) == ["1", "2", "10"]
    assert label_order(["spam", "ham"]) == ["ham", "spam"]


def test_label_order_does_not_depend_on_hash_seed():
    """'1' and '01' are equal as numbers: the order (the class ids) must not follow set order."""
    import subprocess
    import sys

    code = "from scratchllm.finetune.classify_data import label_order as o; print(o(['1','01','001','2']))"
    outs = {
        subprocess.run(
            [sys.executable, "-c", code],
            env={**os.environ, "PYTHONHASHSEED": str(seed)},
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        for seed in range(6)
    }
    assert outs == {"['001', '01', '1', '2']\n"}


@pytest.mark.parametrize(
    ("name", "content", "columns", "pattern"),
    [
        ("m.csv", "label,body\na,x\n", Columns(), r"m\.csv:1: no column 'text'.*'body'"),
        (
            "m.jsonl",
            '{"text": "x"}\n{"text": "y", "label": "a"}\n',
            Columns(),
            r"m\.jsonl:1: no field 'label'",
        ),
        ("e.csv", "text,label\nfine,a\n  ,b\n", Columns(), r"e\.csv:3: empty text"),
        ("e.jsonl", '{"text": "", "label": "a"}\n', Columns(), r"e\.jsonl:1: empty text"),
        ("l.csv", "text,label\nfine,\n", Columns(), r"l\.csv:2: empty label"),
        ("s.tsv", "a\tok\nb\n", Columns("1", "0", False), r"s\.tsv:2: row has 1 field"),
        ("j.jsonl", '{"text": 3, "label": "a"}\n', Columns(), r"j\.jsonl:1: field 'text' is int"),
        ("bad.jsonl", "{oops\n", Columns(), r"bad\.jsonl:1: not valid JSON"),
        ("x.dat", "text,label\n", Columns(), r"x\.dat: cannot tell the format"),
    ],
)
def test_bad_input_names_file_line_and_value(tmp_path, name, content, columns, pattern):
    path = _write(tmp_path / name, content)
    with pytest.raises(DataError, match=pattern):
        read_examples(path, columns)


def test_missing_file(tmp_path):
    with pytest.raises(DataError, match="not found"):
        read_examples(tmp_path / "nope.csv")


def test_single_class_is_an_error(tmp_path):
    path = _write(tmp_path / "one.csv", "text,label\na,ham\nb,ham\n")
    with pytest.raises(DataError, match=r"one\.csv: only one label 'ham' in 2 record\(s\)"):
        load_splits(path)


def test_test_label_unseen_in_training(tmp_path):
    train = _write(tmp_path / "train.csv", "text,label\na,x\nb,y\n")
    val = _write(tmp_path / "val.csv", "text,label\nc,x\n")
    test = _write(tmp_path / "test.csv", "text,label\nd,x\ne,z\n")
    with pytest.raises(DataError, match=r"test\.csv:3: label 'z' never appears.*train\.csv"):
        load_splits(train=train, val=val, test=test)
    with pytest.raises(ConfigError, match="--val and --test"):
        load_splits(train=train)
    with pytest.raises(ConfigError, match="either one data file"):
        load_splits(train, train=train, val=val, test=test)


def _examples(counts):
    return [Example(f"{lab} {i}", lab, f"f:{i}") for lab, n in counts.items() for i in range(n)]


def test_stratified_split_is_seeded_complete_and_proportional():
    data = _examples({"a": 100, "b": 30, "c": 1})
    tr, va, te = stratified_split(data, (0.7, 0.1, 0.2), seed=3)
    assert sorted(e.text for e in tr + va + te) == sorted(e.text for e in data)
    assert Counter(e.label for e in tr) == {"a": 70, "b": 21, "c": 1}  # a lone class trains
    assert Counter(e.label for e in va) == {"a": 10, "b": 3}
    assert Counter(e.label for e in te) == {"a": 20, "b": 6}
    again = stratified_split(data, (0.7, 0.1, 0.2), seed=3)
    assert [e.text for e in again[0]] == [e.text for e in tr]
    other = stratified_split(data, (0.7, 0.1, 0.2), seed=4)
    assert [e.text for e in other[0]] != [e.text for e in tr]
    with pytest.raises(DataError, match="fractions"):
        stratified_split(data, (0.5, 0.1, 0.1))


def test_balance_undersamples_to_the_smallest_class():
    data = _examples({"ham": 50, "spam": 7})
    out = balance(data, seed=0)
    assert Counter(e.label for e in out) == {"ham": 7, "spam": 7}
    assert [e.text for e in balance(data, seed=0)] == [e.text for e in out]
    assert check_classes(out, "f") == ["ham", "spam"]


def test_batches_are_right_padded_with_masks():
    ids = [np.array([5, 6, 7]), np.array([8])]
    ds = ClassifyDataset(ids, [1, 0], pad_id=0)
    x, mask, y = ds.get_batch(np.array([1, 0]))
    assert x.tolist() == [[8, 0, 0], [5, 6, 7]]
    assert mask.tolist() == [[1, 0, 0], [1, 1, 1]]
    assert y.tolist() == [0, 1]


@pytest.mark.parametrize(
    ("name", "content", "columns", "pattern"),
    [
        # an unquoted comma in a CSV text would otherwise shift the label ('world', not 'spam')
        (
            "c.csv",
            "text,label\nhi,ham\nhello, world,spam\n",
            Columns(),
            r"c\.csv:3: row has 3 fields, the header has 2",
        ),
        # a tab inside a TSV message would otherwise cut the text short without a word
        (
            "t.tsv",
            "ham\tsee you\nspam\twin\tnow\n",
            Columns("1", "0", False),
            r"t\.tsv:2: row has 3 fields, the first row has 2",
        ),
    ],
)
def test_rows_with_another_number_of_fields_are_named(tmp_path, name, content, columns, pattern):
    with pytest.raises(DataError, match=pattern):
        read_examples(_write(tmp_path / name, content), columns)


@pytest.mark.parametrize("sep", ["\u2028", "\u2029", "\x85", "\x0c", "\x1e"])
def test_only_newlines_end_a_record(tmp_path, sep):
    """Unicode line separators inside a text are text, as in any CSV/JSON Lines reader (json.dumps
    with ensure_ascii=False writes U+2028 raw); the lines counted are those an editor shows."""
    text = f"win{sep}now"
    tsv = _write(tmp_path / "s.tsv", f"ham\tsee you\nspam\t{text}\nham\tok\n")
    got = read_examples(tsv, Columns("1", "0", False))
    assert [(e.text, e.where) for e in got][1:] == [(text, f"{tsv}:2"), ("ok", f"{tsv}:3")]
    csv_file = _write(tmp_path / "s.csv", f"text,label\n{text},spam\nok,ham\n")
    assert [e.text for e in read_examples(csv_file)] == [text, "ok"]
    records = [{"text": text, "label": "spam"}, {"text": "ok", "label": "ham"}]
    jsonl = _write(
        tmp_path / "s.jsonl", "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records)
    )
    got = read_examples(jsonl)
    assert [(e.text, e.where) for e in got] == [(text, f"{jsonl}:1"), ("ok", f"{jsonl}:2")]


def test_windows_line_endings(tmp_path):
    path = tmp_path / "w.csv"
    path.write_bytes(b"text,label\r\nhi,ham\r\nwin now,spam\r\n")
    got = read_examples(path)
    assert [(e.text, e.label, e.where) for e in got] == [
        ("hi", "ham", f"{path}:2"),
        ("win now", "spam", f"{path}:3"),
    ]


def test_a_quoted_text_over_several_lines_is_named_by_its_first_line(tmp_path):
    path = _write(tmp_path / "q.csv", 'text,label\n"two\nlines",x\n"",y\n')
    with pytest.raises(DataError, match=r"q\.csv:4: empty text"):
        read_examples(path)
    path = _write(tmp_path / "q.csv", 'text,label\n"two\nlines",x\nok,y\n')
    assert [e.where for e in read_examples(path)] == [f"{path}:2", f"{path}:4"]


def test_a_byte_order_mark_is_not_part_of_the_first_column(tmp_path):
    path = tmp_path / "excel.csv"
    path.write_bytes("text,label\nhi,ham\n".encode("utf-8-sig"))
    assert [(e.text, e.label) for e in read_examples(path)] == [("hi", "ham")]
