"""Run the guide's pages: every ```python block of a page in order, in one namespace per page.

Used by test_guide_pages.py, and by hand to refresh the printed outputs and pictures in the pages:

    .venv/bin/python tests/guide/guide_runner.py --write

which runs every page in a fresh temporary directory (with ../shared linked when it exists),
replaces the ```text block after each python block with what that block printed, and copies the
pictures the pages drew (img/*.png in the working directory) into docs/guide/img/.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import os
import re
import shutil
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
GUIDE = ROOT / "docs" / "guide"
# A python block, optionally followed by the text block holding what it printed.
BLOCK = re.compile(r"```python\n(?P<code>.*?)```\n(?:\n```text\n(?P<out>.*?)```\n)?", re.S)


def pages() -> list[Path]:
    """The numbered pages in reading order (01-..., 02-..., ...)."""
    return sorted(GUIDE.glob("[0-9][0-9]-*.md"))


def code_blocks(page: Path) -> list[str]:
    return [m.group("code") for m in BLOCK.finditer(page.read_text(encoding="utf-8"))]


def printed_blocks(page: Path) -> list[str | None]:
    """The ```text block after each python block (None where a block prints nothing)."""
    return [m.group("out") for m in BLOCK.finditer(page.read_text(encoding="utf-8"))]


NUMBER = re.compile(r"[-+]?(?:\d[\d,]*\.?\d*|\.\d+)(?:e[-+]?\d+)?")
QUOTED = re.compile(r"'(?:[^'\\\n]|\\.)*'|\"(?:[^\"\\\n]|\\.)*\"")


def _shape(text: str) -> tuple[str, list[float]]:
    """Text with quoted strings (sampled text) and numbers masked, and the numbers."""
    text = QUOTED.sub("'…'", text)
    numbers = [float(n.replace(",", "")) for n in NUMBER.findall(text)]
    return NUMBER.sub("#", text), numbers


def output_drift(expected: str, got: str, rel: float = 0.15, abs_: float = 0.05) -> str | None:
    """Why ``got`` does not match a page's printed ``expected`` (None: it does).

    Printed numbers may differ a little between CPUs and thread counts, and sampled text may
    differ, so numbers are compared with a tolerance and quoted strings not at all; everything
    else (labels, file names, the number of lines) must be the same.
    """
    shape_e, nums_e = _shape(expected)
    shape_g, nums_g = _shape(got)
    if shape_e != shape_g:
        return f"the printed text differs:\n--- page\n{expected}--- now\n{got}"
    for e, g in zip(nums_e, nums_g):
        if abs(e - g) > max(abs_, rel * abs(e)):
            return f"printed {g} where the page says {e}:\n--- page\n{expected}--- now\n{got}"
    return None


def run_page(page: Path, workdir: Path) -> list[str]:
    """Execute the page's blocks in order in ``workdir``; returns what each block printed."""
    namespace: dict = {"__name__": "__guide__"}
    outputs = []
    old = Path.cwd()
    os.chdir(workdir)
    try:
        for i, code in enumerate(code_blocks(page)):
            buffer = io.StringIO()
            with contextlib.redirect_stdout(buffer):
                exec(compile(code, f"{page.name}#{i}", "exec"), namespace)
            outputs.append(buffer.getvalue())
    finally:
        os.chdir(old)
    return outputs


def write_outputs(page: Path, outputs: list[str]) -> None:
    """Put each block's output in the ```text block after it (added, replaced or removed)."""
    it = iter(outputs)

    def replace(m: re.Match) -> str:
        out = next(it)
        block = f"```python\n{m.group('code')}```\n"
        return block + (f"\n```text\n{out}```\n" if out.strip() else "")

    text = BLOCK.sub(replace, page.read_text(encoding="utf-8"))
    page.write_text(text, encoding="utf-8")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--write", action="store_true", help="update outputs and pictures")
    parser.add_argument("pages", nargs="*", help="page names (default: all)")
    args = parser.parse_args()
    import torch

    torch.set_num_threads(1)  # on shared cores, one thread is faster and the figures reproducible
    chosen = [p for p in pages() if not args.pages or p.name in args.pages]
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp) / "work"
        work.mkdir()
        shared = ROOT.parent / "shared"
        if shared.is_dir():
            (Path(tmp) / "shared").symlink_to(shared)
        for page in chosen:
            outputs = run_page(page, work)
            print(f"{page.name}: {len(outputs)} blocks", file=sys.stderr)
            if args.write:
                write_outputs(page, outputs)
            else:
                print("".join(outputs))
        if args.write:
            for png in sorted((work / "img").glob("*.png")):
                shutil.copy(png, GUIDE / "img" / png.name)
    return 0


if __name__ == "__main__":
    sys.exit(main())
