"""bench/gpu_train.py's contender names combine options, and --profile prints a profile table."""

import subprocess
import sys
from pathlib import Path

BENCH = Path(__file__).resolve().parents[2] / "bench"
sys.path.insert(0, str(BENCH))
try:
    from gpu_train import compile_options, parse_contender
finally:
    sys.path.remove(str(BENCH))  # bench/ has modules named data, train: keep them out of the way


def test_contender_names_parse_into_a_base_and_options():
    assert parse_contender("ours") == ("ours", frozenset())
    assert parse_contender("ours-cudnn-graphs") == ("ours", frozenset({"cudnn", "graphs"}))
    assert parse_contender("transformers") == ("transformers", frozenset())
    for bad in ("ours-fast", "minimal-cudnn", "ours-graphs-graphs", "theirs"):
        assert parse_contender(bad) is None, bad
    assert compile_options(frozenset()) == {}  # the default mode
    # the same inductor options as torch.compile's modes
    import torch._inductor

    modes = {
        "reduce-overhead": {"graphs"},
        "max-autotune-no-cudagraphs": {"autotune"},
        "max-autotune": {"autotune", "graphs", "cudnn"},
    }
    for mode, options in modes.items():
        assert compile_options(frozenset(options)) == torch._inductor.list_mode_options(mode)
    assert compile_options(frozenset({"tuned"})) == {"coordinate_descent_tuning": True}


def test_profile_prints_the_profiled_contenders_table():
    proc = subprocess.run(
        [sys.executable, str(BENCH / "gpu_train.py"), "--tiny", "--no-compile", "--reps", "1"]
        + ["--contenders", "transformers,ours-unpadded", "--profile", "ours-unpadded"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    assert "profile of ours-unpadded: 3 steps" in proc.stdout
    assert "aten::mm" in proc.stdout and "Self CPU time total" in proc.stdout
    bad = subprocess.run(
        [sys.executable, str(BENCH / "gpu_train.py"), "--tiny", "--contenders", "transformers"]
        + ["--profile", "ours"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert bad.returncode == 2 and "not one of --contenders" in bad.stderr
