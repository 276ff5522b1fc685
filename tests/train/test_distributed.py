import sys
from pathlib import Path

import pytest
import torch
from dist_launch import start_ranks
from safetensors.torch import load_file

from scratchllm.train.distributed import DistInfo, shard_batch

WORKER = Path(__file__).with_name("ddp_worker.py")


def _launch(world_size: int, out: Path) -> None:
    procs, store = start_ranks(world_size, [sys.executable, str(WORKER), str(out)])
    for p in procs:
        _, err = p.communicate(timeout=300)
        assert p.returncode == 0, err
    del store  # held until every rank is done


def test_two_processes_match_one_process(tmp_path):
    _launch(1, tmp_path / "one.safetensors")
    _launch(2, tmp_path / "two.safetensors")
    one, two = load_file(tmp_path / "one.safetensors"), load_file(tmp_path / "two.safetensors")
    assert one.keys() == two.keys()
    for name in one:
        torch.testing.assert_close(two[name], one[name], atol=1e-6, rtol=0, msg=name)


def test_shard_batch_splits_rows_and_checks_divisibility():
    x = torch.arange(8).view(4, 2)
    assert torch.equal(shard_batch((x,), DistInfo(1, 2))[0], x[1::2])
    with pytest.raises(ValueError, match="does not split evenly"):
        shard_batch(torch.zeros(3, 2), DistInfo(0, 2))


def test_the_process_group_is_left_only_by_whoever_made_it(monkeypatch):
    from scratchllm.train import distributed, job

    calls, up = [], [False]
    monkeypatch.setattr(distributed.dist, "is_initialized", lambda: up[0])
    monkeypatch.setattr(
        distributed.dist, "init_process_group", lambda **kw: up.__setitem__(0, True)
    )
    monkeypatch.setattr(distributed.dist, "destroy_process_group", lambda: calls.append("destroy"))
    monkeypatch.setattr(distributed.dist, "barrier", lambda: calls.append("barrier"))
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "1")
    info = distributed.init_distributed("cpu")
    assert info.enabled and info.rank == 1 and up[0]
    distributed.shutdown_distributed()  # every rank waits for the others, then leaves
    assert calls == ["barrier", "destroy"]
    distributed.shutdown_distributed()  # once only
    assert calls == ["barrier", "destroy"]
    # a group the caller made before is theirs to end
    distributed.init_distributed("cpu")
    distributed.shutdown_distributed()
    assert calls == ["barrier", "destroy"]
    # after an error no barrier: the other ranks may never reach it
    up[0] = False
    distributed.init_distributed("cpu")
    distributed.shutdown_distributed(synchronize=False)
    assert calls == ["barrier", "destroy", "destroy"]
    # run_job leaves the group it joined, without waiting for the others when the job fails
    ended = []
    monkeypatch.setattr(
        distributed, "shutdown_distributed", lambda synchronize=True: ended.append(synchronize)
    )
    monkeypatch.setattr(job, "_run_job", lambda *args: "result")
    assert job.run_job(None) == "result"
    assert ended == [True]
    ended.clear()

    def fail(*args):
        raise RuntimeError("job failed")

    monkeypatch.setattr(job, "_run_job", fail)
    with pytest.raises(RuntimeError, match="job failed"):
        job.run_job(None)
    assert ended == [False]
