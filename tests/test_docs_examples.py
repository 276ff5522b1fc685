"""Every ```python block in these pages runs as written (pages with their own runner excluded)."""

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PAGES = ["README.md", "docs/training.md"]
BLOCK = re.compile(r"```python\n(.*?)```", re.S)


def _blocks():
    for page in PAGES:
        for i, code in enumerate(BLOCK.findall((ROOT / page).read_text(encoding="utf-8"))):
            yield pytest.param(code, id=f"{page}#{i}")


@pytest.mark.parametrize("code", list(_blocks()))
def test_page_example_runs(code, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    exec(compile(code, "<doc>", "exec"), {"__name__": "__doc_example__"})
