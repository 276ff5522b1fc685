"""The training benchmarks run (at a tiny size, on CPU) and print a table with a ratio column."""

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[2] / "bench"
# These runs check the tables, not the figures: tiny models on one intra-op thread each.
ONE_THREAD = {**os.environ, "OMP_NUM_THREADS": "1"}


@pytest.mark.parametrize(
    "script,args,ours",
    [
        ("train.py", ["--tiny", "--minimal"], "scratchllm GPTModel"),
        (
            "gpu_train.py",
            ["--tiny", "--no-compile", "--contenders", "transformers,ours,minimal"],
            "ours",
        ),
    ],
)
def test_training_benchmark_runs_tiny(script, args, ours):
    proc = subprocess.run(
        [sys.executable, str(BENCH / script), *args],
        capture_output=True,
        text=True,
        timeout=300,
        env=ONE_THREAD,
    )
    assert proc.returncode == 0, proc.stderr
    rows = [line for line in proc.stdout.splitlines() if line.startswith("| ")]
    assert any("transformers" in r and "1.00x" in r for r in rows)
    ratio = re.compile(r"\| +\d+\.\d\dx \|")  # the ratio column, e.g. "|  1.52x |"
    assert any(r.startswith(f"| {ours} ") and ratio.search(r) for r in rows)


def test_gpu_check_passes_on_cpu():
    """bench/gpu_check.py (our GPT vs transformers, SDPA vs explicit attention, engine vs
    generate) runs its checks at a small size without a GPU, and they pass."""
    proc = subprocess.run(
        [sys.executable, str(BENCH / "gpu_check.py")],
        capture_output=True,
        text=True,
        timeout=300,
        env=ONE_THREAD,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    oks = [line for line in proc.stdout.splitlines() if line.startswith("ok ")]
    assert len(oks) == 9 and "all checks passed" in proc.stdout


def test_gpu_session_script_asks_for_known_contenders():
    """bench/gpu_session.sh (one device call) names contenders that bench/gpu_train.py knows:
    run them at the tiny size on CPU."""
    script = (BENCH / "gpu_session.sh").read_text(encoding="utf-8")
    (names,) = re.findall(r"gpu_train\.py .*--contenders (\S+)", script)
    proc = subprocess.run(
        [sys.executable, str(BENCH / "gpu_train.py"), "--tiny", "--no-compile", "--reps", "1"]
        + ["--contenders", names],
        capture_output=True,
        text=True,
        timeout=300,
        env=ONE_THREAD,
    )
    assert proc.returncode == 0, proc.stderr
    for name in names.split(","):
        assert re.search(rf"^\| {re.escape(name)} +\|", proc.stdout, flags=re.M), name
    syntax = subprocess.run(["bash", "-n", str(BENCH / "gpu_session.sh")], capture_output=True)
    assert syntax.returncode == 0, syntax.stderr
