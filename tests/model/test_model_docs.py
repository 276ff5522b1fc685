"""The Python examples in docs/model.md run as written, in order, in one namespace."""

import re
from pathlib import Path

import pytest

DOC = Path(__file__).resolve().parents[2] / "docs" / "model.md"


def test_model_doc_examples_run(capsys):
    if not DOC.is_file():
        pytest.skip(f"{DOC} not found")
    pytest.importorskip("transformers")
    blocks = re.findall(r"```python\n(.*?)```", DOC.read_text(encoding="utf-8"), flags=re.S)
    assert len(blocks) >= 5
    namespace: dict = {}
    for block in blocks:
        exec(compile(block, str(DOC), "exec"), namespace)  # noqa: S102
    assert "1,557,611,200" in capsys.readouterr().out  # the gpt2-xl report printed
