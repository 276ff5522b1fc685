"""The Python examples in docs/generate.md run as written, in order, in one namespace."""

import re
from pathlib import Path

DOC = Path(__file__).resolve().parents[2] / "docs" / "generate.md"


def test_generate_doc_examples_run(capsys):
    assert DOC.is_file(), f"{DOC} is part of the repository"  # not external data: never skip
    blocks = re.findall(r"```python\n(.*?)```", DOC.read_text(encoding="utf-8"), flags=re.S)
    assert len(blocks) >= 5
    namespace: dict = {}
    for block in blocks:
        exec(compile(block, str(DOC), "exec"), namespace)  # noqa: S102
    out = capsys.readouterr().out
    assert "top_p must be in (0, 1]" in out and "User: Hello!" in out
