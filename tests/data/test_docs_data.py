"""docs/data.md runs as written: its shell steps through the CLI, its Python blocks in order."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

from scratchllm.cli import main

PAGE = Path(__file__).resolve().parents[2] / "docs" / "data.md"


def test_data_page_runs(tmp_path, monkeypatch) -> None:
    text = PAGE.read_text(encoding="utf-8").replace("/tmp/", f"{tmp_path}/")
    monkeypatch.chdir(tmp_path)
    namespace: dict = {"__name__": "__doc_example__"}
    ran = []
    for lang, code in re.findall(r"```(python|bash)\n(.*?)```", text, re.S):
        if lang == "python":
            exec(compile(code, str(PAGE), "exec"), namespace)
            ran.append("python")
            continue
        tokens = shlex.split(code.replace("\\\n", " "))
        starts = [i for i, t in enumerate(tokens) if t.startswith(".venv/bin/")]
        for start, end in zip(starts, [*starts[1:], len(tokens)]):
            argv = tokens[start:end]
            ran.append(" ".join(argv[:3]))
            if argv[:2] == [".venv/bin/python", "-c"]:
                exec(compile(argv[2], str(PAGE), "exec"), {})
            elif argv and argv[0] == ".venv/bin/scratchllm":
                assert main([*argv[1:], "--no-progress"] if "prepare" in argv else argv[1:]) == 0
    assert ran.count("python") >= 5 and (tmp_path / "shards" / "index.json").is_file(), ran
