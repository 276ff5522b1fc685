"""The ```python blocks of docs/classify.md, instruct.md, weights.md and lineage.md run as written,
in order, in one namespace per page.

The other pages have their own runners: README.md and docs/training.md (test_docs_examples.py),
data, model, tokenizer and generate (tests/<area>/), the guide (tests/guide/). Each page runs in a
fresh directory beside a link to ../shared, as its examples expect to be run from the repository
root; what a page leaves to the reader (a Hugging Face checkpoint, a tuned run's names) is set up
here, and step counts are cut where a page trains for long.
"""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
BLOCK = re.compile(r"```python\n(.*?)```", re.S)


def run_page(page: str, where: Path, namespace: dict | None = None, cut: dict | None = None):
    """Execute the page's python blocks in order in ``where``; ``cut`` replaces text first."""
    text = (ROOT / page).read_text(encoding="utf-8")
    for old, new in (cut or {}).items():
        assert old in text, f"{page} no longer holds {old!r}"
        text = text.replace(old, new)
    namespace = {"__name__": "__doc_example__", **(namespace or {})}
    blocks = BLOCK.findall(text)
    assert blocks, f"no python blocks in {page}"
    for i, code in enumerate(blocks):
        exec(compile(code, f"{page}#{i}", "exec"), namespace)
    return namespace


@pytest.fixture
def workdir(tmp_path, monkeypatch, shared_data, one_thread):
    """tmp/work as the working directory, with tmp/shared standing in for ../shared."""
    (tmp_path / "shared").symlink_to(shared_data.parent)
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    return work


def test_classify_page_runs(tmp_path, monkeypatch, one_thread):
    monkeypatch.chdir(tmp_path)
    ns = run_page("docs/classify.md", tmp_path)
    assert ns["clf"].labels == ["none", "number"]
    assert (tmp_path / "runs" / "digits" / "report.json").is_file()


def test_instruct_page_runs(workdir):
    from scratchllm.finetune.templates import get_template, save_template
    from scratchllm.tokenizer import load_tokenizer

    run_dir = workdir / "tuned"  # the names the "code that talks to a tuned run" block uses
    run_dir.mkdir()
    save_template(get_template("alpaca"), run_dir)
    given = {
        "run_dir": run_dir,
        "tokenizer": load_tokenizer("../shared/data"),
        "messages": [{"role": "user", "content": "Reverse the words.", "input": "red,blue"}],
    }
    ns = run_page("docs/instruct.md", workdir, given)
    assert ns["template"].render_prompt(given["messages"]).endswith("### Response:\n")
    assert (workdir / "base" / "model.safetensors").is_file()


def test_weights_page_runs(workdir):
    transformers = pytest.importorskip("transformers")
    import torch

    torch.manual_seed(0)  # a tiny random GPT-2 with GPT-2's real tokenizer files
    cfg = transformers.GPT2Config(n_layer=2, n_head=2, n_embd=32, n_positions=64)
    hf_dir = workdir / "path" / "to" / "gpt2"
    transformers.GPT2LMHeadModel(cfg).save_pretrained(hf_dir)
    shutil.copy("../shared/data/encoder.json", hf_dir / "vocab.json")
    shutil.copy("../shared/data/vocab.bpe", hf_dir / "merges.txt")
    ns = run_page("docs/weights.md", workdir)
    assert ns["logits"].shape == (1, 3, cfg.vocab_size)
    assert ns["enc"].encode("Hello, world") == [15496, 11, 995]


def test_lineage_page_runs(workdir):
    ns = run_page("docs/lineage.md", workdir, cut={"max_steps=3000": "max_steps=100"})
    assert len(ns["run"].vectors.neighbours("king", 5)) == 5
