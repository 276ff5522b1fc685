"""CPU decoding benchmark: our KV-cached engine against transformers' `generate`, same weights.

A gpt2-small-shaped transformers `GPT2LMHeadModel` with seeded random weights is converted to our
`GPTModel` through `scratchllm.interop.hf_convert`; both decode greedily from the same 128-token
prompt at batch 1. Variants of ours: float32, bfloat16 weights, int8 linear layers. Tokens/s is
new tokens over the wall time of the whole call (prefill included), median of repetitions. The
quality cost of bf16/int8 is stated as the perplexity change against float32 on held-out text
(tinyshakespeare's last part, GPT-2 tokenizer, from ../shared/data; random ids if absent) plus
the mean KL divergence of the next-token distributions. Random weights make the perplexity
itself meaningless (about the vocabulary size); the changes measure the numerical error.

    .venv/bin/python bench/generate.py                 # gpt2-small, 32 new tokens, 3 reps
    .venv/bin/python bench/generate.py --size tiny     # seconds (smoke test)
    .venv/bin/python bench/generate.py --quality-run runs/demo --quality-text FILE
                    # also: the perplexity cost of each variant on a *trained* run's held-out text
"""

from __future__ import annotations

import argparse
import math
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn.functional as F

DEFAULT_VARIANTS = "fp32,bf16,int8"  # bf16 is skipped by default on CPUs without AVX-512
DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
SIZES = {  # transformers GPT2Config fields
    "gpt2-small": dict(n_embd=768, n_layer=12, n_head=12, n_positions=1024, vocab_size=50257),
    "tiny": dict(n_embd=64, n_layer=2, n_head=4, n_positions=256, vocab_size=50257),
}


def median_seconds(fn: Callable[[], object], reps: int) -> tuple[float, object]:
    """Median wall time of ``reps`` calls, and the last call's result."""
    times, out = [], None
    for _ in range(reps):
        start = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times), out


def build_models(size: str):
    from transformers import GPT2Config, GPT2LMHeadModel

    from scratchllm.interop.hf_convert import gpt_from_gpt2

    torch.manual_seed(0)
    hf = GPT2LMHeadModel(GPT2Config(**SIZES[size])).eval()
    hf.generation_config.eos_token_id = None  # decode exactly max_new_tokens
    hf.generation_config.pad_token_id = 0
    ours = gpt_from_gpt2(hf).eval()
    return hf, ours


def tokenizer_and_text(vocab: int):
    """GPT-2 tokenizer and held-out ids, or a byte stand-in and random ids without shared data."""
    from scratchllm.tokenizer import BPETokenizer

    if (DATA / "encoder.json").is_file() and (DATA / "tinyshakespeare.txt").is_file():
        tok = BPETokenizer.from_gpt2_files(DATA / "encoder.json", DATA / "vocab.bpe")
        text = (DATA / "tinyshakespeare.txt").read_text(encoding="utf-8")[-20_000:]
        return tok, tok.encode(text), "tinyshakespeare (last 20 kB), GPT-2 BPE"
    tok = BPETokenizer([bytes([b]) for b in range(256)], special_tokens={"<|endoftext|>": 256})
    return tok, torch.randint(0, vocab, (4096,)).tolist(), "random ids (no ../shared/data)"


@torch.no_grad()
def quality(model, ref_logits: list[torch.Tensor] | None, ids: list[int], window: int):
    """(perplexity, mean KL(fp32 || model), logits per window) over consecutive windows."""
    nll, kl, n, out = 0.0, 0.0, 0, []
    for i, start in enumerate(range(0, len(ids) - window, window)):
        x = torch.tensor([ids[start : start + window]])
        y = torch.tensor(ids[start + 1 : start + window + 1])
        logits = model(x)[0].float()  # [T, V]
        nll += F.cross_entropy(logits, y, reduction="sum").item()
        n += len(y)
        if ref_logits is not None:
            p = ref_logits[i].log_softmax(-1)
            kl += F.kl_div(logits.log_softmax(-1), p, log_target=True, reduction="sum").item()
        out.append(logits)
    return math.exp(nll / n), kl / n, out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", choices=SIZES, default="gpt2-small")
    ap.add_argument("--prompt-tokens", type=int, default=128)
    ap.add_argument("--new-tokens", type=int, default=32)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--variants", default=DEFAULT_VARIANTS, help="of fp32,bf16,int8")
    ap.add_argument("--eval-windows", type=int, default=2, help="256-token windows for perplexity")
    ap.add_argument("--quality-run", help="a trained run directory: perplexity cost on real text")
    ap.add_argument("--quality-text", help="held-out text for --quality-run (last 20 kB used)")
    args = ap.parse_args()
    if args.quality_run:
        trained_quality(args.quality_run, args.quality_text, args.variants.split(","))

    from scratchllm.generation import GREEDY, Engine
    from scratchllm.generation.quantize import quantize_int8

    hf, ours = build_models(args.size)
    tok, held_out, text_name = tokenizer_and_text(ours.cfg.vocab_size)
    prompt = held_out[: args.prompt_tokens]
    n = args.new_tokens
    x = torch.tensor([prompt])
    wanted = args.variants.split(",")
    no_bf16 = "avx512" not in torch.backends.cpu.get_cpu_capability().lower()
    if no_bf16 and args.variants == DEFAULT_VARIANTS:
        print("note: no AVX-512 here, so bf16 matmuls are emulated (slow): bf16 skipped")
        wanted.remove("bf16")
    from scratchllm.generation.layout import column_major_linears

    builders = {
        "fp32": lambda: column_major_linears(ours),  # what the CLI decodes with on the CPU
        "bf16": lambda: _bf16(ours),
        "int8": lambda: quantize_int8(ours),
    }
    variants = {f"ours {v}": builders[v]() for v in wanted}

    def hf_run(tokens: int):
        with torch.no_grad():
            return hf.generate(
                x,
                attention_mask=torch.ones_like(x),  # else HF masks every id equal to pad_token_id
                max_new_tokens=tokens,
                min_new_tokens=tokens,
                do_sample=False,
            )

    print(
        f"{args.size} (random weights), batch 1, {len(prompt)}-token prompt, {n} new tokens, "
        f"greedy, {torch.get_num_threads()} threads, median of {args.reps}; held-out: {text_name}",
        flush=True,
    )
    window = min(256, ours.cfg.context_length)
    ids = held_out[: args.eval_windows * window + 1]
    ppl32, _, ref = quality(ours, None, ids, window)
    hf_run(2)  # warm-up
    t_hf, hf_out = median_seconds(lambda: hf_run(n), args.reps)
    hf_ids = hf_out[0, len(prompt) :].tolist()
    head = f"{'decoder':<18} {'tokens/s':>9} {'greedy = HF':>12} {'ppl change':>11} {'KL':>9}"
    print(f"{head} {'ratio':>7}", flush=True)
    print(f"{'transformers fp32':<18} {n / t_hf:>9.2f} {'':>12} {'':>11} {'':>9} {1:>6.2f}x")
    for name, model in variants.items():
        ppl, kl, _ = quality(model, ref, ids, window) if model is not ours else (ppl32, 0, 0)
        engine = Engine(model, tok)
        engine.generate([prompt], GREEDY, 2)  # warm-up
        t, done = median_seconds(lambda e=engine: e.generate([prompt], GREEDY, n), args.reps)
        got = done[0].token_ids
        same = f"{sum(a == b for a, b in zip(got, hf_ids))}/{n}"
        change = f"{100 * (ppl / ppl32 - 1):+.3f}%"
        print(
            f"{name:<18} {n / t:>9.2f} {same:>12} {change:>11} {kl:>9.2e} {t_hf / t:>6.2f}x",
            flush=True,
        )
    print(f"fp32 perplexity {ppl32:.1f} over {len(ids) - 1} held-out tokens")


def trained_quality(run_dir: str, text_path: str | None, variants: list[str]) -> None:
    """Perplexity of a trained run's fp32 / bf16 / int8 variants on held-out text."""
    from scratchllm.generation.quantize import quantize_int8
    from scratchllm.train.checkpoint import load_run

    if not text_path:
        raise SystemExit("--quality-run needs --quality-text FILE (held-out text)")
    run = load_run(run_dir)
    model = run.model.eval()
    text = Path(text_path).read_text(encoding="utf-8")[-20_000:]
    ids = run.tokenizer.encode(text)
    window = min(256, model.cfg.context_length)
    ppl32, _, ref = quality(model, None, ids, window)
    build = {"bf16": lambda: _bf16(model), "int8": lambda: quantize_int8(model)}
    n_params = sum(p.numel() for p in model.parameters())
    print(
        f"trained run {run_dir} ({n_params / 1e6:.1f}M parameters), {len(ids)} tokens of {text_path}"
    )
    print(f"{'weights':<8} {'perplexity':>11} {'change':>9} {'KL':>9}")
    print(f"{'fp32':<8} {ppl32:>11.3f} {'':>9} {'':>9}")
    for name in [v for v in variants if v in build]:
        ppl, kl, _ = quality(build[name](), ref, ids, window)
        print(f"{name:<8} {ppl:>11.3f} {100 * (ppl / ppl32 - 1):>+8.3f}% {kl:>9.2e}", flush=True)


def _bf16(model):
    import copy

    return copy.deepcopy(model).to(torch.bfloat16)


if __name__ == "__main__":
    main()
