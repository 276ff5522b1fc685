"""`scratchllm inspect ...` and `scratchllm plot ...` write their PNGs from a tiny run."""

from __future__ import annotations

import json

import pytest
import torch
from PIL import Image

from scratchllm.cli import main
from scratchllm.model import GPTModel, get_preset
from scratchllm.tokenizer import BPETokenizer
from scratchllm.train.checkpoint import save_run


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    run = tmp_path_factory.mktemp("run")
    tok = BPETokenizer.train("the cat sat on the mat. the cat ate the rat.\n" * 40, 300)
    torch.manual_seed(0)
    cfg = get_preset("tiny", vocab_size=tok.vocab_size)
    save_run(run, GPTModel(cfg), cfg, tok)
    rows = [{"step": s, "loss": 5 / s, "lr": 1e-3, "tokens_per_s": 500.0} for s in range(1, 20)]
    (run / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return run


@pytest.mark.parametrize(
    "args",
    [
        ["inspect", "attention", "--text", "the cat sat", "--layer", "1", "--head", "2"],
        ["inspect", "embeddings", " cat", " mat", "the"],
        ["inspect", "next-token", "--text", "the cat", "--top-k", "3"],
        ["inspect", "tokens", "--text", "the cat sat\non the mat"],
    ],
    ids=["attention", "embeddings", "next-token", "tokens"],
)
def test_inspect_writes_png(args, run_dir, tmp_path, capsys):
    out = tmp_path / "pic.png"
    assert main([*args, "--run", str(run_dir), "--out", str(out)]) == 0
    assert f"wrote {out}" in capsys.readouterr().out
    with Image.open(out) as image:
        assert image.format == "PNG" and image.width > 100 and len(set(image.getdata())) > 10


def test_inspect_tokens_from_tokenizer_and_plot(run_dir, tmp_path):
    out = tmp_path / "t.png"
    assert (
        main(["inspect", "tokens", "--tokenizer", str(run_dir), "--text", "hi", "--out", str(out)])
        == 0
    )
    assert out.is_file()
    curves = tmp_path / "curves.png"
    assert main(["plot", str(run_dir), str(run_dir), "--out", str(curves)]) == 0
    with Image.open(curves) as image:
        assert image.size == (1500, 420)


def test_inspect_errors_are_one_line(run_dir, tmp_path, capsys):
    code = main(["inspect", "attention", "--run", str(tmp_path / "nope"), "--text", "x"])
    assert code == 2 and "run directory not found" in capsys.readouterr().err
    assert main(["plot", str(tmp_path), "--out", str(tmp_path / "c.png")]) == 2


def test_plot_empty_or_torn_metrics(tmp_path, capsys):
    run = tmp_path / "r"
    run.mkdir()
    metrics = run / "metrics.jsonl"
    metrics.write_text("")
    out = tmp_path / "c.png"
    assert main(["plot", str(run), "--out", str(out)]) == 2
    assert f"error: no metrics records in {metrics}" in capsys.readouterr().err
    assert not out.exists()
    metrics.write_text("garbage\n[1, 2]\n")
    assert main(["plot", str(run), "--out", str(out)]) == 2
    assert "no metrics records" in capsys.readouterr().err
    rows = [{"step": s, "loss": 5.0 / s, "lr": 1e-3, "tokens_per_s": 100.0} for s in (1, 2, 3)]
    lines = [json.dumps(r) for r in rows]
    metrics.write_text(lines[0] + "\nnot json\n" + "\n".join(lines[1:]) + '\n{"step": 4, "lo')
    assert main(["plot", str(run), "--out", str(out)]) == 0
    err = capsys.readouterr().err
    assert (
        "warning:" in err
        and "skipped 2 line(s) that are not metrics records (first: line 2)" in err
    )
    assert out.is_file()
