"""GPU training throughput and MFU: scratchllm's GPT against transformers' GPT-2, same settings.

gpt2-small, bf16 autocast, context 1024, batch 32, torch.compile, fused AdamW, SDPA attention
(flash kernels on GPU). MFU uses 6N + 12·L·T·C FLOPs per token against the GPU's dense bf16 peak
(scratchllm.train.metrics.PEAK_BF16_TFLOPS). Without a GPU it runs on CPU at a tiny size, so that
it is tested everywhere:

    python bench/gpu_train.py            # full size on CUDA; tiny on CPU
    python bench/gpu_train.py --tiny     # tiny anywhere
    python bench/gpu_train.py --peak     # also measure the bf16 matmul peak, MFU against both

Contenders (--contenders, comma list): transformers, minimal (bench/train.py's hand-written
GPT-2), and ours, optionally with options joined by "-", e.g. ours-cudnn-graphs:
  unpadded  the head's matmul on the odd 50,257 rows (GPTModel.pad_head off)
  cudnn     cuDNN's SDPA attention kernel, chosen inside the compiled forward (its own graph)
  autotune  inductor's max_autotune matmul search + coordinate-descent tuning, as torch.compile's
            mode="max-autotune-no-cudagraphs" (minutes of compiling)
  tuned     coordinate-descent tuning of inductor's own kernels only (no matmul search)
  graphs    CUDA graphs (triton.cudagraphs), as mode="reduce-overhead"
The loss is compiled with each model. --profile NAME prints the profiler's table of NAME's steps
(most device time first), to see where a step's time goes.
"""

from __future__ import annotations

import argparse
import functools
import statistics
import time

import torch
import torch.nn.functional as F
from torch.nn.attention import SDPBackend, sdpa_kernel

from scratchllm.model import GPTModel, get_preset
from scratchllm.train.metrics import flops_per_token, peak_tflops

# bench/train.py: the same transformers GPT-2 (and hand-written one) for the same config
from train import MinimalGPT2, build_hf


class WithLoss(torch.nn.Module):
    """model + cross-entropy in one module, so that torch.compile fuses the loss for everyone."""

    def __init__(self, model, logits_of) -> None:
        super().__init__()
        self.model, self.logits_of = model, logits_of

    def forward(self, x, y):
        logits = self.logits_of(self.model, x)  # [B, T, V]
        return F.cross_entropy(logits.flatten(0, 1).float(), y.flatten())


class CudnnAttention(torch.nn.Module):
    """A model whose SDPA calls may use only cuDNN's attention kernel (inside the traced code, so
    that torch.compile makes a graph of its own rather than reusing another contender's)."""

    def __init__(self, model) -> None:
        super().__init__()
        self.model = model

    def forward(self, x):
        if not x.is_cuda:  # cuDNN is a GPU library: the tiny CPU run uses the default kernels
            return self.model(x)
        with sdpa_kernel([SDPBackend.CUDNN_ATTENTION]):
            return self.model(x)


def make_step(model, logits_of, device, amp_dtype, compile_):
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4, fused=device.type in ("cuda", "cpu"))
    loss_of = compile_(WithLoss(model, logits_of))

    def step(x, y):
        with torch.autocast(device.type, dtype=amp_dtype, enabled=amp_dtype is not None):
            loss = loss_of(x, y)
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    return step


OPTIONS = ("unpadded", "cudnn", "autotune", "tuned", "graphs")


def parse_contender(name: str) -> tuple[str, frozenset[str]] | None:
    """ "ours-cudnn-graphs" -> ("ours", {"cudnn", "graphs"}); None for an unknown name."""
    base, *options = name.split("-")
    if base in ("transformers", "minimal"):
        return (base, frozenset()) if not options else None
    if base != "ours" or not set(options) <= set(OPTIONS) or len(set(options)) < len(options):
        return None
    return base, frozenset(options)


def compile_options(options: frozenset[str]) -> dict[str, bool]:
    """torch.compile's inductor options for a contender's options (empty: the default)."""
    out = {}
    if "autotune" in options:
        out["max_autotune"] = True
    if "autotune" in options or "tuned" in options:
        out["coordinate_descent_tuning"] = True
    if "graphs" in options:
        out["triton.cudagraphs"] = True
    return out


def matmul_peak(device, n: int = 8192, reps: int = 10) -> float:
    """Measured dense bf16 matmul rate in TFLOP/s (median of `reps` n x n x n products)."""
    a = torch.randn(n, n, device=device, dtype=torch.bfloat16)
    b = torch.randn(n, n, device=device, dtype=torch.bfloat16)
    for _ in range(3):
        a @ b
    times = []
    for _ in range(reps):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        a @ b
        end.record()
        torch.cuda.synchronize()
        times.append(start.elapsed_time(end) / 1e3)
    return 2 * n**3 / statistics.median(times) / 1e12


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
    parser.add_argument("--peak", action="store_true", help="measure the bf16 matmul peak (CUDA)")
    parser.add_argument("--contenders", default="transformers,ours", help="comma list (see top)")
    parser.add_argument("--profile", metavar="NAME", help="profile this contender's steps")
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
    compile_ = (lambda m: m) if args.no_compile else torch.compile
    makers = {
        "transformers": lambda: (build_hf(cfg), lambda m, x: m(input_ids=x).logits),
        "minimal": lambda: (MinimalGPT2(cfg), lambda m, x: m(x)),
        "ours": lambda: (ours, lambda m, x: m(x)),
    }
    names = [n.strip() for n in args.contenders.split(",")]
    contenders = {name: parse_contender(name) for name in names}
    bad = sorted(n for n, c in contenders.items() if c is None)
    if bad or "transformers" not in names:
        parser.error(f"--contenders: unknown {bad} (transformers must be one of them; see --help)")
    if args.profile and args.profile not in names:
        parser.error(f"--profile {args.profile}: not one of --contenders {names}")
    steps = {}
    for name, (base, options) in contenders.items():  # type: ignore[misc]
        model, logits_of = makers[base]()
        if options:  # a model of its own, so that its compiled graph is its own too
            model = GPTModel(cfg)
            model.pad_head = "unpadded" not in options
            if "cudnn" in options:
                model = CudnnAttention(model)
        compiler = compile_
        settings = compile_options(options)
        if settings and not args.no_compile:
            compiler = functools.partial(torch.compile, options=settings)
        steps[name] = make_step(model.to(device), logits_of, device, amp_dtype, compiler)
    x = torch.randint(0, cfg.vocab_size, (args.batch, args.context), device=device)
    y = torch.randint(0, cfg.vocab_size, (args.batch, args.context), device=device)
    peak_measured = matmul_peak(device) if args.peak and device.type == "cuda" else None
    if peak_measured:
        print(f"measured bf16 matmul peak: {peak_measured:.0f} TFLOP/s (8192^3, median of 10)")
    for name, step in steps.items():  # compile and warm up
        start = time.perf_counter()
        timed(step, x, y, 2, device)
        print(f"{name}: compiled and warmed up in {time.perf_counter() - start:.0f} s", flush=True)
    times = {name: [] for name in steps}
    for _ in range(args.reps):
        for name, step in steps.items():
            times[name].append(timed(step, x, y, args.steps, device))
    if args.profile:
        from gpu_generate import profile

        print(f"profile of {args.profile}: {args.steps} steps")
        profile(lambda: timed(steps[args.profile], x, y, args.steps, device), device)
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
    base = tokens / statistics.median(times["transformers"])

    def mfu(rate: float, peak_tflops: float | None) -> str:
        return f"{100 * rate * fpt / (peak_tflops * 1e12):5.1f}%" if peak_tflops else "n/a"

    w = max(14, *(len(n) for n in times))
    head = f"| {'model':<{w}} | {'tokens/s':>11} | {'MFU':>6} | {'MFU meas.':>9} | {'ratio':>6} |"
    print(head)
    print(f"|{'-' * (w + 2)}|{'-' * 13}|{'-' * 8}|{'-' * 11}|{'-' * 8}|")
    for label, ts in times.items():
        rate = tokens / statistics.median(ts)
        reps = ", ".join(f"{tokens / t:,.0f}" for t in ts)
        print(
            f"| {label:<{w}} | {rate:>11,.0f} | {mfu(rate, peak):>6} | "
            f"{mfu(rate, peak_measured):>9} | {rate / base:>5.2f}x |  reps: {reps}"
        )
    print(f"MFU: 6N + 12LTC = {fpt / 1e6:.0f} MFLOP per token (N = {n_params:,}); against the")
    print(f"datasheet peak ({peak or 'n/a'} TFLOP/s) and the measured one (--peak)")


if __name__ == "__main__":
    main()
