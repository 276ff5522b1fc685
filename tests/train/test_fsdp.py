"""FSDP2 (fully_shard) on CPU with gloo: the same result as one process, and interchangeable
checkpoints (an FSDP run's checkpoint resumes in one process and vice versa)."""

import sys
from pathlib import Path

import pytest
import torch
from dist_launch import start_ranks
from safetensors.torch import load_file

from scratchllm.errors import ConfigError
from scratchllm.train.config import TrainConfig

WORKER = Path(__file__).with_name("fsdp_worker.py")
STEP3 = Path("run/checkpoints/step-0000003")


def _start(world_size: int, out: Path, parallel: str, resume: Path | None = None) -> tuple:
    args = [sys.executable, str(WORKER), str(out), parallel] + ([str(resume)] if resume else [])
    return start_ranks(world_size, args)


def _wait(*runs: tuple) -> None:
    """Each run's processes end well; their stores (``runs``' second items) live until then."""
    for p in [p for procs, _store in runs for p in procs]:
        _, err = p.communicate(timeout=300)
        assert p.returncode == 0, err


def _assert_same(a: Path, b: Path) -> None:
    one, two = load_file(a), load_file(b)
    assert one.keys() == two.keys()
    for name in one:
        torch.testing.assert_close(two[name], one[name], atol=1e-6, rtol=0, msg=name)


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("fsdp")
    _wait(_start(1, root / "one", "ddp"), _start(2, root / "fsdp", "fsdp"))
    return root


def test_fsdp_two_processes_match_one_process(runs):
    _assert_same(runs / "one/final.safetensors", runs / "fsdp/final.safetensors")
    # The gathered checkpoint has the single-process format: same tensors, same optimizer layout.
    _assert_same(
        runs / "one" / STEP3 / "model.safetensors", runs / "fsdp" / STEP3 / "model.safetensors"
    )
    one = torch.load(runs / "one" / STEP3 / "optimizer.pt", weights_only=True)
    two = torch.load(runs / "fsdp" / STEP3 / "optimizer.pt", weights_only=True)
    assert one["param_groups"] == two["param_groups"]
    assert one["state"].keys() == two["state"].keys()
    for i, state in one["state"].items():
        for key, value in state.items():
            torch.testing.assert_close(two["state"][i][key], value, atol=1e-6, rtol=0)


def test_fsdp_checkpoint_resumes_in_one_process_and_back(runs):
    _wait(
        _start(1, runs / "resumed-one", "ddp", runs / "fsdp" / STEP3),
        _start(2, runs / "resumed-fsdp", "fsdp", runs / "one" / STEP3),
    )
    _assert_same(runs / "one/final.safetensors", runs / "resumed-one/final.safetensors")
    _assert_same(runs / "one/final.safetensors", runs / "resumed-fsdp/final.safetensors")


def test_parallel_is_validated():
    with pytest.raises(ConfigError, match="parallel"):
        TrainConfig(parallel="zero3")
