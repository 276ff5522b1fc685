"""Classifier head, training choices, the fine-tuning job on a tiny synthetic task, save/load, CLI."""

import csv
import json
import random

import numpy as np
import pytest
import torch

from scratchllm.cli import main
from scratchllm.errors import CheckpointError, ConfigError, DataError
from scratchllm.finetune import classify as classify_mod
from scratchllm.finetune.classify import (
    ClassifierConfig,
    TextClassifier,
    load_classifier,
    set_trainable,
    trainable_parameters,
)
from scratchllm.finetune.classify_run import (
    classification_metrics,
    finetune_classifier,
    load_splits,
    scratch_backbone,
)
from scratchllm.model import EncoderModel, GPTModel, get_preset
from scratchllm.train.config import TrainConfig

WORDS = "the cat sat on a mat and dog ran far away over hill under tree big small red blue".split()


def digit_task(path, n=400, seed=0):
    """'Does the text contain a number?': half the rows get one inserted at a random place."""
    rng = random.Random(seed)
    rows = []
    for i in range(n):
        words = [rng.choice(WORDS) for _ in range(rng.randint(3, 9))]
        label = "yes" if i % 2 else "no"
        if label == "yes":
            words.insert(rng.randrange(len(words) + 1), str(rng.randint(0, 999)))
        rows.append((" ".join(words), label))
    with open(path, "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(["text", "label"])
        writer.writerows(rows)
    return path


FAST = TrainConfig(batch_size=16, lr=3e-3, min_lr=3e-4, warmup_steps=5, device="cpu", seed=1)


@pytest.fixture(scope="module")
def digits(tmp_path_factory):
    return digit_task(tmp_path_factory.mktemp("digits") / "digits.csv")


@pytest.fixture(scope="module", params=["gpt", "encoder"])
def trained(request, digits, tmp_path_factory):
    torch.manual_seed(0)
    splits = load_splits(digits, seed=0)
    texts = [e.text for e in splits.train]
    model, tok = scratch_backbone(request.param, texts, vocab_size=300, context_length=32)
    run = tmp_path_factory.mktemp(request.param) / "run"
    report = finetune_classifier(
        splits, run, model, tok, train_cfg=FAST, epochs=3, trainable="all", progress=False
    )
    return request.param, report, splits


def test_digit_task_reaches_95_percent(trained):
    kind, report, _ = trained
    assert report.accuracy["test"] >= 0.95, report.accuracy
    assert len(report.epochs) == 3 and report.epochs[-1]["epoch"] == 3.0
    assert {"train_acc", "val_acc", "train_loss_epoch", "val_loss_epoch"} <= set(report.epochs[0])
    for name in ("config.json", "model.safetensors", "tokenizer.json", "report.json"):
        assert (report.run_dir / name).is_file()
    for name in ("loss.png", "accuracy.png", "confusion.png"):
        assert (report.run_dir / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    config = json.loads((report.run_dir / "config.json").read_text())
    assert config["format"] == "scratchllm-run"
    expected = {"gpt": "GPTClassifier", "encoder": "EncoderClassifier"}[kind]
    assert config["architecture"] == expected
    assert config["classifier"]["labels"] == ["no", "yes"]
    saved = json.loads((report.run_dir / "report.json").read_text())
    assert saved["test"]["accuracy"] == report.accuracy["test"]
    assert sum(map(sum, saved["test"]["confusion"])) == 80  # 20% of 400


def test_saved_run_predicts_like_the_trained_model(trained):
    _, report, splits = trained
    clf = load_classifier(report.run_dir)
    texts = [e.text for e in splits.test]
    probs = clf.predict_proba(texts)
    assert probs.shape == (len(texts), 2)
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, rtol=1e-6)
    right = np.mean([p == e.label for p, e in zip(clf.predict(texts), splits.test, strict=True)])
    assert right == pytest.approx(report.accuracy["test"])
    # batching (and so padding) does not change a text's probabilities
    np.testing.assert_allclose(clf.predict_proba(texts[:5], batch_size=1), probs[:5], atol=1e-5)
    # an empty text has no token to read: an error, not a label read off a padding position
    with pytest.raises(DataError, match=r"text 2 of 2 \(''\) is empty"):
        clf.predict(["a cat", ""])


def test_load_classifier_refuses_a_plain_run(tmp_path):
    from scratchllm.tokenizer import BPETokenizer
    from scratchllm.train.checkpoint import save_run

    cfg = get_preset("tiny")
    save_run(tmp_path, GPTModel(cfg), cfg, BPETokenizer.train("hello world", 260))
    with pytest.raises(CheckpointError, match="not a classifier"):
        load_classifier(tmp_path)
    with pytest.raises(CheckpointError, match="not found"):
        load_classifier(tmp_path / "missing")


@pytest.mark.parametrize(
    "classifier,message",
    [
        (5, "the classifier settings must be an object, got 5"),
        ({"backbone": "GPTModel"}, "missing 1 required positional argument: 'labels'"),
        ({"labels": None}, "classifier labels must be a list of names, got None"),
        ({"labels": [["a"], "b"]}, "classifier labels must be a list of names"),
        ({"labels": ["a", "b"], "backbone": []}, "backbone must be a string, got []"),
        ({"labels": ["a", "b"], "max_length": "64"}, "max_length must be an integer, got '64'"),
        ({"labels": ["a", "b"], "last_n_blocks": None}, "last_n_blocks must be an integer"),
        ({"labels": ["a", "b"], "lora": []}, "lora must be an object, got []"),
        ({"labels": ["a", "b"], "lora": {"r": 2, "bogus": 1}}, "unknown lora field(s): bogus"),
    ],
)
def test_an_edited_classifier_config_is_a_named_error(tmp_path, classifier, message):
    """Wrong JSON types in config.json's 'classifier' were TypeError tracebacks (len(None),
    None < 1, an unhashable list looked up in BACKBONES)."""
    from scratchllm.tokenizer import BPETokenizer
    from scratchllm.train.checkpoint import save_run

    cfg = get_preset("tiny")
    save_run(tmp_path, GPTModel(cfg), cfg, BPETokenizer.train("hello world", 260))
    record = json.loads((tmp_path / "config.json").read_text())
    (tmp_path / "config.json").write_text(json.dumps({**record, "classifier": classifier}))
    with pytest.raises(CheckpointError, match="config.json: ") as info:
        load_classifier(tmp_path)
    assert message in str(info.value)


def _gpt():
    return GPTModel(get_preset("tiny", n_layer=3))


def test_last_token_pooling_ignores_right_padding():
    model = TextClassifier(_gpt(), 3).eval()
    x = torch.randint(0, 256, (1, 5))
    padded = torch.cat([x, torch.zeros(1, 3, dtype=torch.long)], dim=1)
    mask = torch.tensor([[1] * 5 + [0] * 3])
    torch.testing.assert_close(model(padded, attention_mask=mask), model(x))
    mean = TextClassifier(EncoderModel(get_preset("tiny-bert")), 2, "mean").eval()
    torch.testing.assert_close(mean(padded, attention_mask=mask), mean(x), atol=1e-5, rtol=1e-5)


def test_first_token_pooling_needs_an_encoder():
    with pytest.raises(ConfigError, match="first"):
        ClassifierConfig(["a", "b"], backbone="GPTModel", pooling="first")
    with pytest.raises(ConfigError, match="labels"):
        ClassifierConfig(["a"])


def _trainable_names(model):
    return {n for n, p in model.named_parameters() if p.requires_grad}


def test_trainable_choices():
    model = set_trainable(TextClassifier(_gpt(), 2), "head")
    assert _trainable_names(model) == {"head.weight", "head.bias"}
    model = set_trainable(TextClassifier(_gpt(), 2), "last", last_n_blocks=2)
    names = _trainable_names(model)
    assert {n.split(".")[2] for n in names if n.startswith("backbone.blocks")} == {"1", "2"}
    assert {"backbone.norm_f.weight", "head.weight"} <= names
    assert not any("embed" in n or "blocks.0." in n for n in names)
    model = set_trainable(TextClassifier(_gpt(), 2), "all")
    assert trainable_parameters(model)[0] == trainable_parameters(model)[1]
    enc = set_trainable(TextClassifier(EncoderModel(get_preset("tiny-bert")), 2, "first"), "head")
    assert _trainable_names(enc) == {
        "head.weight",
        "head.bias",
        "backbone.pooler.dense.weight",
        "backbone.pooler.dense.bias",
    }
    with pytest.raises(ConfigError, match="last_n_blocks=9"):
        set_trainable(TextClassifier(_gpt(), 2), "last", last_n_blocks=9)


def test_lora_path_uses_the_lora_module_or_says_it_is_missing(monkeypatch):
    model = TextClassifier(_gpt(), 2)
    if classify_mod.importlib.util.find_spec("scratchllm.finetune.lora") is not None:
        set_trainable(model, "lora", lora={"r": 2, "alpha": 4.0})
        names = _trainable_names(model)
        assert {"head.weight", "head.bias"} <= names
        assert len(names) > 2 and all(
            n.startswith("head.") or "lora" in n.lower() or n.endswith((".A", ".B")) for n in names
        ), names
    monkeypatch.setattr(classify_mod.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(ConfigError, match="needs scratchllm.finetune.lora"):
        set_trainable(TextClassifier(_gpt(), 2), "lora")


def test_classification_metrics():
    m = classification_metrics([0, 0, 0, 1, 1, 2], [0, 0, 1, 1, 2, 2], ["a", "b", "c"])
    assert m["accuracy"] == pytest.approx(4 / 6)
    assert m["confusion"] == [[2, 1, 0], [0, 1, 1], [0, 0, 1]]
    assert m["per_class"]["a"] == {"precision": 1.0, "recall": 2 / 3, "f1": 0.8, "support": 3}
    assert m["per_class"]["b"]["precision"] == 0.5 and m["per_class"]["c"]["recall"] == 1.0


def test_cli_from_scratch_is_reproducible_with_its_seed(digits, tmp_path, capsys):
    """--seed fixes the initial weights too: two runs in one process write the same model."""
    args = ["finetune", "classify", "--from-scratch", "gpt", "--data", str(digits)]
    args += ["--vocab-size", "300", "--epochs", "1", "--batch-size", "16", "--lr", "3e-3"]
    args += ["--trainable", "all", "--device", "cpu", "--no-progress"]
    for name in ("a", "b"):
        assert main([*args, "--out", str(tmp_path / name)]) == 0
    weights = [(tmp_path / name / "model.safetensors").read_bytes() for name in ("a", "b")]
    assert weights[0] == weights[1]
    capsys.readouterr()


def test_cli_finetune_then_classify(digits, tmp_path, capsys):
    run = tmp_path / "clf"
    args = ["finetune", "classify", "--from-scratch", "gpt", "--data", str(digits)]
    args += ["--vocab-size", "300", "--epochs", "3", "--batch-size", "16", "--lr", "3e-3"]
    args += ["--trainable", "all", "--device", "cpu", "--no-progress", "--out", str(run)]
    assert main(args) == 0
    assert "accuracy" in capsys.readouterr().out
    texts = ["the cat 123 sat on a mat", "the dog sat", "a red hill 512", "blue tree"]
    expected = load_classifier(run).predict(texts)
    assert main(["classify", "--run", str(run), *texts[:2]]) == 0
    rows = list(csv.reader(capsys.readouterr().out.splitlines()))
    assert rows[0] == ["text", "label", "p_no", "p_yes"]
    assert [r[:2] for r in rows[1:]] == [[t, y] for t, y in zip(texts[:2], expected, strict=False)]
    assert float(rows[1][2]) + float(rows[1][3]) == pytest.approx(1.0, abs=1e-5)
    file = tmp_path / "texts.txt"
    file.write_text("\n".join(texts[2:]) + "\n")
    out = tmp_path / "labels.csv"
    assert main(["classify", "--run", str(run), "--file", str(file), "--out", str(out)]) == 0
    assert [r["label"] for r in csv.DictReader(out.open())] == expected[2:]


def test_cli_bad_input_is_one_line_and_exit_2(tmp_path, capsys):
    data = tmp_path / "d.csv"
    data.write_text("body,label\nx,a\n")
    args = ["finetune", "classify", "--from-scratch", "gpt", "--data", str(data)]
    assert main([*args, "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert "d.csv:1: no column 'text'" in err and len(err.strip().splitlines()) == 1
    assert main(["finetune", "classify", "--data", str(data), "--out", str(tmp_path / "o")]) == 2
    assert "--base" in capsys.readouterr().err
    assert main(["classify", "--run", str(tmp_path)]) == 2


def test_spam_subset_smoke(shared_data, tmp_path):
    """A quick look at the real data (120 + 120 messages); the full run is docs/classify_spam.py."""
    from scratchllm.finetune.classify_data import Columns, balance, read_examples

    path = shared_data / "sms-spam-collection.tsv"
    if not path.is_file():
        pytest.skip(f"{path} not found")
    examples = balance(read_examples(path, Columns("1", "0", header=False)), seed=0)
    subset = tmp_path / "spam.jsonl"
    picked = examples[:120] + examples[-120:]
    subset.write_text(
        "".join(json.dumps({"text": e.text, "label": e.label}) + "\n" for e in picked)
    )
    splits = load_splits(subset, seed=0)
    model, tok = scratch_backbone(
        "gpt", [e.text for e in splits.train], vocab_size=512, context_length=64
    )
    report = finetune_classifier(
        splits,
        tmp_path / "run",
        model,
        tok,
        train_cfg=FAST,
        epochs=4,
        trainable="all",
        max_length=64,
        progress=False,
    )
    assert report.accuracy["test"] >= 0.8, report.accuracy


def test_empty_split_is_named(tmp_path):
    data = tmp_path / "small.csv"
    data.write_text("text,label\n" + "".join(f"t{i},{'ab'[i % 2]}\n" for i in range(6)))
    splits = load_splits(data, seed=0)
    model, tok = scratch_backbone("gpt", ["t1 t2"], vocab_size=260, context_length=16)
    with pytest.raises(DataError, match=r"small\.csv: the val split is empty"):
        finetune_classifier(splits, tmp_path / "run", model, tok, train_cfg=FAST, progress=False)
