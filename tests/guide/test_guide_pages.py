"""The guide (docs/guide/) runs as written: every python block of every page, in order, offline,
in a temporary directory; its pictures exist, are small, and are drawn into the working directory."""

from __future__ import annotations

import re
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
from guide_runner import (  # noqa: E402
    GUIDE,
    code_blocks,
    output_drift,
    pages,
    printed_blocks,
    run_page,
)

PICTURE = re.compile(r"!\[[^\]]*\]\((img/[^)]+\.png)\)")
MAX_PICTURE_BYTES = 200_000


@pytest.fixture(scope="module")
def workdir(tmp_path_factory) -> Path:
    """One directory for the whole guide, so later pages reuse the run page 6 trains; beside it
    ../shared, as in the repository, when the shared data is there."""
    root = tmp_path_factory.mktemp("guide")
    shared = Path(__file__).resolve().parents[2].parent / "shared"
    if shared.is_dir():
        (root / "shared").symlink_to(shared)
    (root / "work").mkdir()
    return root / "work"


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """One torch thread: on shared cores it is faster, and matches how the outputs were made."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def test_the_guide_has_pages_and_an_index():
    names = [p.name for p in pages()]
    assert len(names) >= 11
    index = (GUIDE / "index.md").read_text(encoding="utf-8")
    for name in names:
        assert f"({name})" in index, f"index.md does not link {name}"


@pytest.mark.parametrize("page", pages(), ids=lambda p: p.stem)
def test_page_runs(page, workdir):
    assert code_blocks(page), f"{page.name} has no python block"
    docs_before = {p: p.stat().st_mtime_ns for p in (GUIDE / "img").glob("*.png")}
    outputs = run_page(page, workdir)
    # what the page shows each block printing is what it prints (numbers within a tolerance)
    for i, (shown, printed) in enumerate(zip(printed_blocks(page), outputs)):
        if shown is None:
            assert not printed.strip(), f"{page.name} block {i} prints but shows no output"
            continue
        if "skipping this part" in printed:  # no ../shared/data here: nothing to compare
            continue
        problem = output_drift(shown, printed)
        assert problem is None, f"{page.name} block {i}: {problem}"
    docs_after = {p: p.stat().st_mtime_ns for p in (GUIDE / "img").glob("*.png")}
    assert docs_before == docs_after, "a page wrote into docs/guide/img"
    for ref in PICTURE.findall(page.read_text(encoding="utf-8")):
        assert (workdir / ref).is_file(), f"{page.name} shows {ref} but its code did not draw it"
        committed = GUIDE / ref
        assert committed.is_file(), f"{ref} is not committed under docs/guide/"
        assert committed.stat().st_size < MAX_PICTURE_BYTES
