import json

import pytest

from scratchllm.cli import main
from scratchllm.model import get_preset
from scratchllm.model.info import model_info


def test_gpt2_small_figures():
    info = model_info(get_preset("gpt2-small"), context_length=1024)
    assert info.params_total == 124_439_808
    assert info.params_non_embedding == 124_439_808 - (50257 + 1024) * 768
    # matmul weights: 12 layers x (3C^2 + C^2 + 8C^2) + the tied head V*C
    matmul = 12 * 12 * 768**2 + 50257 * 768
    assert info.matmul_params == matmul
    assert info.flops_per_token_forward == 2 * matmul + 4 * 12 * 768 * 1024
    assert info.flops_per_token_training == 3 * info.flops_per_token_forward
    fp32 = info.memory_bytes["fp32"]
    assert fp32["weights"] == 4 * 124_439_808 and fp32["optimizer"] == 2 * fp32["weights"]
    assert info.memory_bytes["bf16"]["total"] * 2 == fp32["total"]
    assert info.kv_cache_bytes_per_token["bf16"] == 2 * 12 * 768 * 2


def test_gqa_shrinks_kv_cache():
    full = model_info(get_preset("tiny-llama", n_kv_head=4))
    grouped = model_info(get_preset("tiny-llama", n_kv_head=1))
    assert full.kv_cache_bytes_per_token["fp32"] == 4 * grouped.kv_cache_bytes_per_token["fp32"]


def test_cli_info_table_and_json(capsys):
    assert main(["model", "info", "--preset", "gpt2-small"]) == 0
    out = capsys.readouterr().out
    assert "124,439,808" in out and "bf16" in out
    assert main(["model", "info", "--preset", "tiny", "--context-length", "16", "--json"]) == 0
    record = json.loads(capsys.readouterr().out)
    assert record["context_length"] == 16 and record["name"] == "tiny"


def test_cli_info_from_run_dir(tmp_path, capsys):
    (tmp_path / "config.json").write_text(json.dumps({"model": get_preset("tiny").to_dict()}))
    assert main(["model", "info", "--run", str(tmp_path), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["params_total"] > 0
    assert main(["model", "info", "--run", str(tmp_path / "missing")]) == 2
    assert "not found" in capsys.readouterr().err


@pytest.mark.parametrize("argv", [["model", "--help"], ["model", "info", "--help"]])
def test_cli_help(argv, capsys):
    with pytest.raises(SystemExit) as exc:
        main(argv)
    assert exc.value.code == 0
    assert "usage" in capsys.readouterr().out
