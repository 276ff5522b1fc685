"""The Python examples in docs/tokenizer.md run as written."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

DOC = Path(__file__).resolve().parents[2] / "docs" / "tokenizer.md"
BLOCKS = (
    re.findall(r"```python\n(.*?)```", DOC.read_text(encoding="utf-8"), re.S)
    if DOC.is_file()
    else []
)


@pytest.mark.parametrize("code", BLOCKS, ids=[f"block{i}" for i in range(len(BLOCKS))])
def test_doc_example(code, capsys):
    exec(compile(code, str(DOC), "exec"), {})
