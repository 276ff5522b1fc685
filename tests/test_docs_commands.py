"""Every `scratchllm ...` command shown in a code block of README.md, docs/ or the guide parses:
its command, subcommand, flags and choices exist (nothing runs). Synopsis notation is read as
meant: `[--flag VALUE]` is the flag given, `[--flag ...]` is left out, `a|b` is the first choice,
a placeholder (`--seed N`) is a value; a line with another `...` is skipped.
"""

from __future__ import annotations

import contextlib
import io
import re
import shlex
from pathlib import Path

import pytest

from scratchllm.cli import build_parser

ROOT = Path(__file__).resolve().parents[1]
PAGES = [
    ROOT / "README.md",
    *sorted((ROOT / "docs").glob("*.md")),
    *(ROOT / "docs/guide").glob("*.md"),
]
FENCE = re.compile(r"^```(\w*)\n(.*?)^```", re.S | re.M)
# Where a shown line starts the CLI: the installed script, with or without a path, or `-m`.
START = re.compile(r"(?:^|\s|/)scratchllm\s+(?=[a-z])|-m scratchllm\s+")


def _commands():
    for page in PAGES:
        for lang, body in FENCE.findall(page.read_text(encoding="utf-8")):
            if lang not in ("", "sh", "bash", "console"):
                continue
            # A backslash or an indented next line continues a command.
            for line in re.sub(r"\\?\n(?=[ \t])", " ", body).splitlines():
                line = re.sub(r"\s#.*$", "", line.removeprefix("$ ")).strip()
                found = START.search(line)
                if not found or "pip install" in line:
                    continue
                rest = line[found.end() :].split(" | ")[0].split(" && ")[0]
                if re.match(r"[a-z-]+( [a-z-]+)?:", rest):  # an error message the page quotes
                    continue
                # [--flag V] -> --flag V; [--flag ...] and bracketed prose ([same flags]) go.
                rest = re.sub(r"\[(-[^\].]*)\]|\[[^\]]*\]", lambda m: m.group(1) or "", rest)
                if "..." in rest:
                    continue
                argv = [a.split("|")[0] if a[:1] != "-" else a for a in shlex.split(rest)]
                # A placeholder value (--seed N, --run RUN) stands for a value: 1 fits any type.
                argv = [
                    "1" if i and argv[i - 1][:2] == "--" and re.fullmatch(r"[A-Z][A-Z_]*", a) else a
                    for i, a in enumerate(argv)
                ]
                yield pytest.param(argv, id=f"{page.relative_to(ROOT)}: {' '.join(argv)[:60]}")


@pytest.mark.parametrize("argv", list(_commands()))
def test_shown_command_parses(argv):
    err = io.StringIO()
    try:
        with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
            build_parser().parse_args(argv)
    except SystemExit as exc:  # --help exits 0; a usage error exits 2
        assert exc.code == 0, f"scratchllm {' '.join(argv)}: {err.getvalue().strip()}"


def test_commands_were_found():
    assert len(list(_commands())) > 40
