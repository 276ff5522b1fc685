"""GPU training throughput and MFU: scratchllm's GPT against transformers' GPT-2, same settings.

gpt2-small, bf16 autocast, context 1024, batch 32, torch.compile, fused AdamW, SDPA attention
(flash kernels on GPU). MFU uses 6N + 12·L·T·C FLOPs per token against the GPU's dense bf16 peak
(scratchllm.train.metrics.PEAK_BF16_TFLOPS). Without a GPU it runs on CPU at a tiny size, so that
it is tested everywhere:

    python bench/gpu_train.py            # full size on CUDA; tiny on CPU
    python bench/gpu_train.py --tiny     # tiny anywhere
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
import torch.nn.functional as F

from scratchllm.model import GPTModel, get_preset
from scratchllm.train.metrics import flops_per_token, peak_tflops
from train import build_hf  # bench/train.py: the same transformers GPT-2 for the same config


def make_step(model, logits_of, device, amp_dtype):
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4, fused=device.type in ("cuda", "cpu"))

    def step(x, y):
        with torch.autocast(device.type, dtype=amp_dtype, enabled=amp_dtype is not None):
            logits = logits_of(model, x)
            loss = F.cross_entropy(logits.flatten(0, 1).float(), y.flatten())
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    return step


def timed(step, x, y, n, device) -> float:
    if device.type == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(n):
        step(x, y)
    if device.type == "cuda":
        torch.cuda.synchronize()
    return (time.perf_counter() - start) / n


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tiny", action="store_true")
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--context", type=int, default=1024)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--no-compile", action="store_true")
    args = parser.parse_args()
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    preset = "gpt2-small"
    if args.tiny or device.type == "cpu":
        preset, args.batch, args.context, args.steps = "tiny", 4, 64, 3
    amp_dtype = torch.bfloat16 if device.type == "cuda" else None
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
    torch.manual_seed(0)
    cfg = get_preset(preset, context_length=args.context, dropout=0.0)
    ours = GPTModel(cfg).to(device)
    theirs = build_hf(cfg).to(device)
    compile_ = (lambda m: m) if args.no_compile else torch.compile
    steps = {
        "transformers GPT2LMHeadModel": make_step(
            compile_(theirs), lambda m, x: m(input_ids=x).logits, device, amp_dtype
        ),
        "scratchllm GPTModel": make_step(compile_(ours), lambda m, x: m(x), device, amp_dtype),
    }
    x = torch.randint(0, cfg.vocab_size, (args.batch, args.context), device=device)
    y = torch.randint(0, cfg.vocab_size, (args.batch, args.context), device=device)
    for step in steps.values():  # compile and warm up
        timed(step, x, y, 2, device)
    times = {name: [] for name in steps}
    for _ in range(args.reps):
        for name, step in steps.items():
            times[name].append(timed(step, x, y, args.steps, device))
    tokens = args.batch * args.context
    n_params = sum(p.numel() for p in ours.parameters())
    fpt = flops_per_token(n_params, cfg.n_layer, cfg.n_embd, cfg.context_length)
    peak = peak_tflops(device)
    name = torch.cuda.get_device_name() if device.type == "cuda" else "CPU"
    print(
        f"{preset} on {name}: batch {args.batch}, context {args.context}, "
        f"{'bf16' if amp_dtype else 'fp32'}, compiled={not args.no_compile}, "
        f"median of {args.reps}x{args.steps} steps"
    )
    base = tokens / statistics.median(times["transformers GPT2LMHeadModel"])
    print(f"| {'model':<30} | {'tokens/s':>11} | {'MFU':>6} | {'ratio':>6} |")
    print(f"|{'-' * 32}|{'-' * 13}|{'-' * 8}|{'-' * 8}|")
    for label, ts in times.items():
        rate = tokens / statistics.median(ts)
        mfu = f"{100 * rate * fpt / (peak * 1e12):5.1f}%" if peak else "   n/a"
        print(f"| {label:<30} | {rate:>11,.0f} | {mfu:>6} | {rate / base:>5.2f}x |")


if __name__ == "__main__":
    main()
