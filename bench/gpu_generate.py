"""GPU decoding benchmark: our engine (static slot cache + CUDA graph) against transformers.

Same seeded random weights in both (a transformers GPT2LMHeadModel converted through
`scratchllm.interop.hf_convert`), greedy, fixed prompt and output lengths, batch 1 and a large
batch. Tokens/s counts generated tokens of all rows over the wall time of the whole call
(prefill included), median of repetitions; the first call of each decoder (compilation, graph
capture) is a warm-up and not timed.

Without a GPU it runs on the CPU at a tiny size with our eager path, so it stays tested:

    .venv/bin/python bench/gpu_generate.py                      # CUDA: gpt2-small bf16
    .venv/bin/python bench/gpu_generate.py --device cpu         # CPU: tiny, fp32, seconds
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

import torch

SIZES = {  # transformers GPT2Config fields
    "gpt2-small": dict(n_embd=768, n_layer=12, n_head=12, n_positions=1024, vocab_size=50257),
    "tiny": dict(
        n_embd=64,
        n_layer=2,
        n_head=4,
        n_positions=512,
        vocab_size=4096,
        bos_token_id=0,
        eos_token_id=0,
    ),
}


def timed(fn: Callable[[], object], reps: int, device: torch.device) -> float:
    def sync() -> None:
        if device.type == "cuda":
            torch.cuda.synchronize()

    fn()  # warm-up: compile, capture, allocate
    sync()
    times = []
    for _ in range(reps):
        start = time.perf_counter()
        fn()
        sync()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


class StubTokenizer:
    """Ids -> bytes without a vocabulary file (the text itself is not measured)."""

    eot_id = None

    def decode_bytes(self, ids) -> bytes:
        return b"".join(bytes([i % 128]) for i in ids)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="auto", help="auto (cuda if present), cuda, cpu")
    ap.add_argument("--size", choices=SIZES, default=None, help="gpt2-small on CUDA, else tiny")
    ap.add_argument("--batch-sizes", default=None, help="comma list; default 1,64 (CUDA), 1,4")
    ap.add_argument("--prompt-tokens", type=int, default=128)
    ap.add_argument("--new-tokens", type=int, default=None, help="default 256 (CUDA), 32 (CPU)")
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--no-hf", action="store_true", help="measure ours only")
    ap.add_argument(
        "--step-mode",
        default="auto",
        choices=["auto", "eager", "compile", "cuda_graph"],
        help="our decode step (auto: cuda_graph on CUDA, eager on CPU)",
    )
    ap.add_argument(
        "--profile", action="store_true", help="also print a profiler table of one call of ours"
    )
    args = ap.parse_args()

    cuda = torch.cuda.is_available() and args.device in ("auto", "cuda")
    device = torch.device("cuda" if cuda else "cpu")
    size = args.size or ("gpt2-small" if cuda else "tiny")
    dtype = torch.bfloat16 if cuda else torch.float32
    batches = [int(b) for b in (args.batch_sizes or ("1,64" if cuda else "1,4")).split(",")]
    n = args.new_tokens or (256 if cuda else 32)

    from transformers import GPT2Config, GPT2LMHeadModel

    from scratchllm.generation import GREEDY, Engine
    from scratchllm.interop.hf_convert import gpt_from_gpt2

    torch.manual_seed(0)
    hf = GPT2LMHeadModel(GPT2Config(**SIZES[size])).eval()
    hf.generation_config.eos_token_id = None
    hf.generation_config.pad_token_id = 0
    ours = gpt_from_gpt2(hf).eval().to(device, dtype)
    hf = hf.to(device, dtype)
    engine = Engine(ours, StubTokenizer(), step_mode=args.step_mode)

    print(
        f"{size} {str(dtype).removeprefix('torch.')} on {device} "
        f"({torch.cuda.get_device_name() if cuda else 'CPU'}), {args.prompt_tokens}-token "
        f"prompts, {n} new tokens, greedy, median of {args.reps}"
    )
    print(f"{'batch':>5} {'decoder':<26} {'tokens/s':>10} {'ratio':>7}")
    for b in batches:
        g = torch.Generator().manual_seed(b)
        prompts = torch.randint(0, ours.cfg.vocab_size, (b, args.prompt_tokens), generator=g)
        x = prompts.to(device)
        rows: list[tuple[str, float]] = []
        if not args.no_hf:
            caches = ["dynamic", "static"] if cuda else ["dynamic"]
            for cache in caches:
                kw = {} if cache == "dynamic" else {"cache_implementation": "static"}

                def run_hf(kw=kw, x=x) -> None:
                    with torch.no_grad():
                        hf.generate(
                            x,
                            attention_mask=torch.ones_like(x),
                            max_new_tokens=n,
                            min_new_tokens=n,
                            do_sample=False,
                            **kw,
                        )

                rows.append(
                    (f"transformers ({cache} cache)", b * n / timed(run_hf, args.reps, device))
                )
        lists = prompts.tolist()
        t = timed(lambda p=lists: engine.generate(p, GREEDY, n), args.reps, device)
        batch = engine._batch
        mode = batch.step_mode if batch is not None else "?"
        rows.append((f"ours ({mode})", b * n / t))
        base = rows[0][1]
        for name, tps in rows:
            print(f"{b:>5} {name:<26} {tps:>10.1f} {tps / base:>6.2f}x")
        if args.profile:
            profile(lambda p=lists: engine.generate(p, GREEDY, n), device)


def profile(fn: Callable[[], object], device: torch.device, rows: int = 25) -> None:
    """Where one (warm) call spends its time: the profiler's table, most device time first."""
    from torch.profiler import ProfilerActivity
    from torch.profiler import profile as torch_profile

    activities = [ProfilerActivity.CPU]
    if device.type == "cuda":
        activities.append(ProfilerActivity.CUDA)
    with torch_profile(activities=activities) as prof:
        fn()
        if device.type == "cuda":
            torch.cuda.synchronize()
    key = "self_cuda_time_total" if device.type == "cuda" else "self_cpu_time_total"
    print(prof.key_averages().table(sort_by=key, row_limit=rows))


if __name__ == "__main__":
    main()
