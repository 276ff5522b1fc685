import json
import os
import stat

import pytest
import torch

from scratchllm.errors import CheckpointError
from scratchllm.model import GPTModel, get_preset
from scratchllm.train import checkpoint as ckpt


def _model(**overrides):
    return GPTModel(get_preset("tiny", **overrides))


def test_weights_round_trip_bitwise_and_stay_tied(tmp_path):
    a = _model()
    torch.manual_seed(1)
    b = _model()
    assert not torch.equal(a.lm_head.weight, b.lm_head.weight)  # the load has something to do
    ckpt.save_weights(a, tmp_path / "w.safetensors")
    ckpt.load_weights(b, tmp_path / "w.safetensors")
    for (name, pa), pb in zip(a.state_dict().items(), b.state_dict().values()):
        assert torch.equal(pa, pb), name
    assert b.lm_head.weight.data_ptr() == b.embed.wte.weight.data_ptr()


def test_mismatched_weights_list_every_problem(tmp_path):
    ckpt.save_weights(_model(n_embd=48, n_layer=3), tmp_path / "w.safetensors")
    with pytest.raises(CheckpointError) as info:
        ckpt.load_weights(_model(), tmp_path / "w.safetensors")
    message = str(info.value)
    assert "w.safetensors" in message and "shape" in message and "missing tensor" not in message
    assert "unexpected tensor blocks.2" in message


def test_corrupt_weights_file_is_a_clear_error(tmp_path):
    path = tmp_path / "w.safetensors"
    path.write_bytes(b"not safetensors at all")
    with pytest.raises(CheckpointError, match="w.safetensors"):
        ckpt.load_weights(_model(), path)


def test_atomic_write_keeps_the_old_file_when_writing_fails(tmp_path, monkeypatch):
    path = tmp_path / "state.json"
    ckpt.atomic_write_json(path, {"v": 1})

    def broken_fsync(fd):
        raise OSError("disk full")

    monkeypatch.setattr(os, "fsync", broken_fsync)
    with pytest.raises(OSError):
        ckpt.atomic_write_json(path, {"v": 2})
    monkeypatch.undo()
    assert json.loads(path.read_text()) == {"v": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["state.json"]  # no temporary left behind


def test_checkpoint_round_trip_and_corruption_detection(tmp_path):
    model = _model()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    model(torch.randint(0, 64, (2, 8))).sum().backward()
    opt.step()
    directory = ckpt.save_checkpoint(tmp_path / "step-0000001", model, opt, {"step": 1})
    other = _model()
    other_opt = torch.optim.AdamW(other.parameters(), lr=1e-3)
    state = ckpt.load_checkpoint(directory, other, other_opt)
    assert state == {"step": 1}
    for pa, pb in zip(model.parameters(), other.parameters()):
        assert torch.equal(pa, pb)
    exp_a = opt.state_dict()["state"][0]["exp_avg"]
    assert torch.equal(exp_a, other_opt.state_dict()["state"][0]["exp_avg"])
    # flip one byte of the weights: the manifest catches it
    weights = directory / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[-1] ^= 0xFF
    weights.write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match="corrupt"):
        ckpt.verify_checkpoint(directory)


def test_prune_keeps_the_newest(tmp_path):
    model = _model()
    for step in range(1, 5):
        ckpt.save_checkpoint(tmp_path / "checkpoints" / f"step-{step:07d}", model, None, {})
    ckpt.prune_checkpoints(tmp_path, keep_last=2)
    assert [p.name for p in ckpt.list_checkpoints(tmp_path)] == ["step-0000003", "step-0000004"]


def test_load_run_errors_name_the_path(tmp_path):
    with pytest.raises(CheckpointError, match="not found"):
        ckpt.load_run(tmp_path / "nope")
    (tmp_path / "config.json").write_text("{broken")
    with pytest.raises(CheckpointError, match="config.json"):
        ckpt.load_run(tmp_path)


@pytest.mark.parametrize("model", [None, 5, "x", [1, 2]])
def test_a_model_field_that_is_not_an_object_is_named(tmp_path, model):
    """`"model": null` (or a number) in config.json was a TypeError traceback; a string was
    reported as unknown fields named by its letters."""
    record = {"format": ckpt.RUN_FORMAT, "version": 1, "architecture": "GPTModel", "model": model}
    (tmp_path / "config.json").write_text(json.dumps(record))
    with pytest.raises(CheckpointError, match=r"config.json: field 'model' must be an object"):
        ckpt.load_run(tmp_path)


@pytest.mark.parametrize(
    "field,value,message",
    [
        ("version", None, "field 'version' must be an integer, got None"),
        ("version", "2", "field 'version' must be an integer, got '2'"),
        ("architecture", ["GPTModel"], "field 'architecture' must be a name, got ['GPTModel']"),
    ],
)
def test_edited_run_record_fields_are_named(tmp_path, field, value, message):
    """A non-integer version was compared with '>' (TypeError); a list architecture was
    looked up in a dict (unhashable type)."""
    record = {"format": ckpt.RUN_FORMAT, "version": 1, "model": {}, field: value}
    (tmp_path / "config.json").write_text(json.dumps(record))
    with pytest.raises(CheckpointError, match="config.json: ") as info:
        ckpt.load_run(tmp_path)
    assert message in str(info.value)


def test_config_from_dict_refuses_a_non_object():
    from scratchllm.errors import ConfigError
    from scratchllm.model import ModelConfig
    from scratchllm.train.config import TrainConfig

    for cls in (ModelConfig, TrainConfig):
        with pytest.raises(ConfigError, match="needs an object of fields, got None"):
            cls.from_dict(None)


def _tiny_tokenizer():
    from scratchllm.tokenizer import BPETokenizer

    return BPETokenizer.train("hello world, hello tokens " * 20, 270)


def test_load_run_builds_the_saved_architecture(tmp_path):
    from scratchllm.model import EncoderModel

    tok = _tiny_tokenizer()
    cfg = get_preset("tiny-bert", vocab_size=tok.vocab_size)
    encoder = EncoderModel(cfg)
    ckpt.save_run(tmp_path, encoder, cfg, tok)
    run = ckpt.load_run(tmp_path)
    assert isinstance(run.model, EncoderModel)
    for a, b in zip(encoder.state_dict().values(), run.model.state_dict().values()):
        assert torch.equal(a, b)


def test_load_run_rejects_other_architectures_by_name(tmp_path):
    tok = _tiny_tokenizer()
    cfg = get_preset("tiny", vocab_size=tok.vocab_size)
    ckpt.save_run(tmp_path, GPTModel(cfg), cfg, tok)
    record = json.loads((tmp_path / "config.json").read_text())
    record["architecture"] = "GPTClassifier"
    (tmp_path / "config.json").write_text(json.dumps(record))
    with pytest.raises(CheckpointError, match="GPTClassifier"):
        ckpt.load_run(tmp_path)


@pytest.mark.parametrize(
    "file,content,message",
    [
        ("manifest.json", "{}", "does not list model.safetensors, state.json"),
        ("manifest.json", "[]", "not a manifest"),
        ("state.json", "[]", "not a JSON object"),
    ],
)
def test_edited_checkpoint_files_are_named_errors(tmp_path, file, content, message):
    model = _model()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    directory = ckpt.save_checkpoint(tmp_path / "step-0000001", model, opt, {"step": 1})
    if file == "state.json":  # an edit the manifest agrees with
        (directory / file).write_text(content)
        manifest = json.loads((directory / "manifest.json").read_text())
        manifest[file] = ckpt.sha256_file(directory / file)
        (directory / "manifest.json").write_text(json.dumps(manifest))
    else:
        (directory / file).write_text(content)
    with pytest.raises(CheckpointError, match=message):
        ckpt.load_checkpoint(directory, _model(), opt)


def test_an_unlisted_optimizer_file_makes_the_checkpoint_incomplete(tmp_path):
    model = _model()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    directory = ckpt.save_checkpoint(tmp_path / "step-0000001", model, opt, {"step": 1})
    manifest = json.loads((directory / "manifest.json").read_text())
    del manifest["optimizer.pt"]
    (directory / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(CheckpointError, match="does not list optimizer.pt"):
        ckpt.verify_checkpoint(directory)


def test_written_files_follow_the_umask(tmp_path):
    old = os.umask(0o022)
    try:
        ckpt.atomic_write_json(tmp_path / "a.json", {"x": 1})
        directory = ckpt.save_checkpoint(tmp_path / "step-0000001", _model(), None, {"step": 1})
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "a.json").stat().st_mode) == 0o644
    assert stat.S_IMODE(directory.stat().st_mode) == 0o755
    assert stat.S_IMODE((directory / "model.safetensors").stat().st_mode) == 0o644
