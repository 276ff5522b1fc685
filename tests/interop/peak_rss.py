"""Peak memory of loading a random GPT-2-shaped checkpoint, measured in fresh processes.

    python tests/interop/peak_rss.py                    # gpt2-medium shapes (1.4 GB of float32)
    python tests/interop/peak_rss.py --n-embd 512 --n-layer 8 --peer   # smaller; also transformers

Prints, per loader, the growth of the process's peak resident set (VmHWM) over its resident set
before the load, divided by the size of the weights file. The load includes touching every
weight (a sum over all parameters and one forward pass), so memory-mapped pages count in full.
Before the baseline, each process builds a tiny model on the meta device once: the first
`nn.init` call on a meta tensor imports torch's meta kernels (~70 MiB of Python modules, the
same for any model size); that fixed cost is printed separately as "warm-up".
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path


def _status(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) * 1024
    raise RuntimeError(f"{field} not in /proc/self/status")


def write_checkpoint(directory: Path, n_embd: int, n_layer: int, n_head: int, vocab: int) -> int:
    """A GPT-2 HF directory of random float32 weights; returns the weights file size."""
    import torch

    from scratchllm.interop.hf import GPT2, gpt2_rules, hf_config, to_theirs
    from scratchllm.interop.hf_files import write_safetensors
    from scratchllm.model import GPTModel, ModelConfig

    cfg = ModelConfig(vocab, 1024, n_embd, n_layer, n_head)
    with torch.device("meta"):
        meta = GPTModel(cfg).state_dict()
    shapes = to_theirs(gpt2_rules(cfg), meta)
    tensors = {k: torch.randn(v.shape) * 0.02 for k, v in shapes.items()}
    directory.mkdir(parents=True, exist_ok=True)
    write_safetensors(directory / "model.safetensors", tensors, {"format": "pt"})
    config = hf_config(cfg, GPT2, torch.float32)
    (directory / "config.json").write_text(json.dumps(config))
    return (directory / "model.safetensors").stat().st_size


def measure(directory: Path, loader: str) -> dict[str, int]:
    """Run in a fresh process: resident set before and peak after loading + touching."""
    import torch

    if loader == "transformers":
        import transformers  # noqa: F401  (imported before the baseline, as ours is)
    from scratchllm.interop.hf_files import load_hf
    from scratchllm.model import GPTModel, get_preset

    torch.set_num_threads(1)
    start = _status("VmRSS")
    with torch.device("meta"):
        GPTModel(get_preset("tiny"))
    before = _status("VmRSS")
    if loader == "ours":
        model = load_hf(directory).model
    else:
        model = transformers.AutoModelForCausalLM.from_pretrained(directory)
    with torch.no_grad():
        total = sum(float(p.float().sum()) for p in model.parameters())
        model(torch.zeros(1, 8, dtype=torch.long))
    return {
        "warmup": before - start,
        "before": before,
        "peak": _status("VmHWM"),
        "ok": total == total,
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--n-embd", type=int, default=1024)
    p.add_argument("--n-layer", type=int, default=24)
    p.add_argument("--n-head", type=int, default=16)
    p.add_argument("--vocab", type=int, default=50257)
    p.add_argument("--peer", action="store_true", help="also measure transformers' loader")
    p.add_argument("--measure", nargs=2, metavar=("DIR", "LOADER"), help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.measure:
        print(json.dumps(measure(Path(args.measure[0]), args.measure[1])))
        return
    with tempfile.TemporaryDirectory() as tmp:
        size = write_checkpoint(Path(tmp), args.n_embd, args.n_layer, args.n_head, args.vocab)
        print(f"weights file: {size / 2**20:.0f} MiB")
        for loader in ["ours", "transformers"] if args.peer else ["ours"]:
            cmd = [sys.executable, __file__, "--measure", tmp, loader]
            out = json.loads(subprocess.run(cmd, check=True, capture_output=True).stdout)
            grown = out["peak"] - out["before"]
            print(
                f"{loader:>12}: warm-up {out['warmup'] / 2**20:.0f} MiB, "
                f"before {out['before'] / 2**20:.0f} MiB, peak "
                f"{out['peak'] / 2**20:.0f} MiB, growth {grown / 2**20:.0f} MiB = "
                f"{grown / size:.2f}x the weights"
            )


if __name__ == "__main__":
    main()
