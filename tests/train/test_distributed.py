import json
import sys
from pathlib import Path

import pytest
import torch
from dist_launch import start_ranks
from safetensors.torch import load_file

from scratchllm.train.distributed import DistInfo, shard_batch

WORKER = Path(__file__).with_name("ddp_worker.py")


# What a rank printed when it died of SIGABRT in C++ (a std::thread destroyed still joinable) after
# its work was done: seen about once in 36 runs of the ranks-disagree test under pytest on the
# 2-core dev machine (torch 2.13, gloo), never in 90 runs of the same workers outside pytest.
# Where it happens is not yet known: the worker runs with faulthandler, so the next one prints
# the Python stack of the moment.
EXIT_ABORT = "terminate called without an active exception"


def _run_ranks(world_size: int, out: Path, mode: str, timeout: float) -> list[tuple[int, str]]:
    procs, store = start_ranks(
        world_size, [sys.executable, "-X", "faulthandler", str(WORKER), str(out), mode]
    )
    try:
        errs = [p.communicate(timeout=timeout)[1] for p in procs]
        return [(p.returncode, err) for p, err in zip(procs, errs, strict=True)]
    finally:
        for p in procs:
            p.kill()
        del store  # held until every rank is done


def _launch(world_size: int, out: Path, mode: str = "", timeout: float = 300) -> None:
    """Run the worker as ``world_size`` ranks; every rank must exit 0. A run in which a rank
    wrote its result and then aborted at exit (EXIT_ABORT) is run once more, whole: the test's
    figures come from a run in which every rank exited cleanly."""
    for attempt in range(2):
        ends = _run_ranks(world_size, out, mode, timeout)
        aborted_after_work = all(
            code == 0 or (code == -6 and EXIT_ABORT in err and Path(f"{out}.rank{r}.json").exists())
            for r, (code, err) in enumerate(ends)
        )
        if all(code == 0 for code, _ in ends) or not (aborted_after_work and attempt == 0):
            break
        print(f"a rank aborted at exit; running the ranks again: {ends}", file=sys.stderr)
        for r in range(world_size):
            Path(f"{out}.rank{r}.json").unlink(missing_ok=True)
    for code, err in ends:
        assert code == 0, err


def test_two_processes_match_one_process(tmp_path):
    _launch(1, tmp_path / "one.safetensors")
    _launch(2, tmp_path / "two.safetensors")
    one, two = load_file(tmp_path / "one.safetensors"), load_file(tmp_path / "two.safetensors")
    assert one.keys() == two.keys()
    for name in one:
        torch.testing.assert_close(two[name], one[name], atol=1e-6, rtol=0, msg=name)


@pytest.mark.parametrize(
    ("mode", "step", "stopped"),
    [("budget", 14, "max_steps"), ("clock", 6, "max_seconds"), ("signal", 3, "signal")],
)
def test_ranks_that_disagree_about_stopping_stop_together(tmp_path, mode, step, stopped):
    """Rank 1's clock runs at half rank 0's speed (``budget``, ``clock``) or only rank 1 gets
    SIGTERM (``signal``). Decided rank by rank, one rank would stop while the other waited for it
    in the next all-reduce (the test would time out); agreed, both stop at the step the first
    reason to stop appeared on any rank: for ``budget`` the probe's 1.3 s and 2.6 s leave 15 and 1
    steps of 0.1 s and 0.2 s in the 3 s budget (90%), so 14 steps in all; for ``clock`` rank 1
    passes 1.05 s at step 6 (rank 0 would at step 11)."""
    out = tmp_path / "w.safetensors"
    _launch(2, out, mode, timeout=120)
    ends = [json.loads(Path(f"{out}.rank{r}.json").read_text()) for r in range(2)]
    assert ends[0] == ends[1], ends
    assert (ends[0]["step"], ends[0]["stopped"]) == (step, stopped)


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
    # a barrier that fails (a peer died) still leaves the group
    up[0] = False
    distributed.init_distributed("cpu")

    def broken_barrier():
        raise RuntimeError("Connection closed by peer")

    monkeypatch.setattr(distributed.dist, "barrier", broken_barrier)
    with pytest.raises(RuntimeError, match="closed by peer"):
        distributed.shutdown_distributed()
    assert calls == ["barrier", "destroy", "destroy", "destroy"]
    distributed.shutdown_distributed()  # and only once
    assert calls == ["barrier", "destroy", "destroy", "destroy"]
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
