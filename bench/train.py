"""Training-step throughput: scratchllm's GPT against transformers' GPT2LMHeadModel.

Same shape, batch, precision (fp32) and attention kernel (SDPA), same optimizer (fused AdamW), measured in
one process, alternating, median of several repetitions. Prints tokens/s and the ratio.

    python bench/train.py                       # gpt2-small, batch 4, context 256 (slow on CPU)
    python bench/train.py --tiny                # a seconds-long smoke run
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
import torch.nn.functional as F


def build_ours(args):
    from scratchllm.model import GPTModel, get_preset

    cfg = get_preset(args.preset, context_length=args.context, dropout=0.0)
    model = GPTModel(cfg)
    return model, cfg


def build_hf(cfg):
    from transformers import GPT2Config, GPT2LMHeadModel

    hf_cfg = GPT2Config(
        vocab_size=cfg.vocab_size,
        n_positions=cfg.context_length,
        n_embd=cfg.n_embd,
        n_layer=cfg.n_layer,
        n_head=cfg.n_head,
        resid_pdrop=0.0,
        embd_pdrop=0.0,
        attn_pdrop=0.0,
        tie_word_embeddings=True,
    )
    hf_cfg._attn_implementation = "sdpa"
    return GPT2LMHeadModel(hf_cfg)


class MinimalGPT2(torch.nn.Module):
    """The smallest GPT-2 one would write by hand (for reference only): the same mathematics as
    ours and transformers' (learned positions, pre-LayerNorm blocks, tanh GELU, tied head, SDPA)."""

    def __init__(self, cfg):
        super().__init__()
        nn = torch.nn
        c = cfg.n_embd
        self.n_head = cfg.n_head
        self.wte, self.wpe = nn.Embedding(cfg.vocab_size, c), nn.Embedding(cfg.context_length, c)
        self.blocks = nn.ModuleList(
            nn.ModuleDict(
                dict(
                    ln1=nn.LayerNorm(c),
                    qkv=nn.Linear(c, 3 * c),
                    proj=nn.Linear(c, c),
                    ln2=nn.LayerNorm(c),
                    fc=nn.Linear(c, 4 * c),
                    out=nn.Linear(4 * c, c),
                )
            )
            for _ in range(cfg.n_layer)
        )
        self.ln_f = nn.LayerNorm(c)
        # GPT-2's initialisation, as ours and transformers' models have. With PyTorch's defaults
        # (N(0, 1) embedding tables) the logits saturate, the head's gradients underflow, and
        # after 15 steps AdamW's state held 9.3M subnormal floats; on an Intel Xeon the step went
        # from 4 s to 27 s (3.6 s throughout with torch.set_flush_denormal(True)).
        for module in self.modules():
            if isinstance(module, (nn.Linear, nn.Embedding)):
                nn.init.normal_(module.weight, std=0.02)
            if isinstance(module, nn.Linear):
                nn.init.zeros_(module.bias)

    def forward(self, idx):
        b, t = idx.shape
        x = self.wte(idx) + self.wpe(torch.arange(t, device=idx.device))
        for blk in self.blocks:
            q, k, v = blk["qkv"](blk["ln1"](x)).view(b, t, 3, self.n_head, -1).unbind(2)
            a = F.scaled_dot_product_attention(
                q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2), is_causal=True
            )
            x = x + blk["proj"](a.transpose(1, 2).reshape(b, t, -1))
            x = x + blk["out"](F.gelu(blk["fc"](blk["ln2"](x)), approximate="tanh"))
        return F.linear(self.ln_f(x), self.wte.weight)


def ours_step(model, opt, x, y):
    loss = model(x, targets=y)  # what `scratchllm pretrain` runs: head and loss fused on CPU
    loss.backward()
    opt.step()
    opt.zero_grad(set_to_none=True)


def fresh_memory_step(model, opt, x, y):
    from scratchllm.model import losses

    losses.REUSE_MEMORY = False  # a fresh [vocab, C] weight gradient, the plain tied lookup
    try:
        ours_step(model, opt, x, y)
    finally:
        losses.REUSE_MEMORY = True


def logits_step(model, opt, x, y):
    logits = model(x)
    loss = F.cross_entropy(logits.flatten(0, 1), y.flatten())
    loss.backward()
    opt.step()
    opt.zero_grad(set_to_none=True)


def hf_step(model, opt, x, y):
    logits = model(input_ids=x).logits
    loss = F.cross_entropy(logits.flatten(0, 1), y.flatten())
    loss.backward()
    opt.step()
    opt.zero_grad(set_to_none=True)


def time_steps(step, model, opt, x, y, n):
    start = time.perf_counter()
    for _ in range(n):
        step(model, opt, x, y)
    return (time.perf_counter() - start) / n


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="gpt2-small")
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--context", type=int, default=256)
    parser.add_argument("--steps", type=int, default=2, help="timed steps per repetition")
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--compile", action="store_true", help="also time our model compiled")
    parser.add_argument("--tiny", action="store_true", help="tiny model, for a quick check")
    parser.add_argument(
        "--minimal", action="store_true", help="also time a minimal hand-written GPT-2"
    )
    parser.add_argument(
        "--unfused",
        action="store_true",
        help="also time our model with the loss outside it (logits, then F.cross_entropy)",
    )
    parser.add_argument(
        "--fresh-memory",
        action="store_true",
        help="also time our model without its kept weight-gradient buffer and tied-gradient link",
    )
    args = parser.parse_args()
    if args.tiny:
        args.preset, args.batch, args.context, args.steps, args.reps = "tiny", 4, 32, 2, 3
    torch.manual_seed(0)
    ours, cfg = build_ours(args)
    hf = build_hf(cfg)
    x = torch.randint(0, cfg.vocab_size, (args.batch, args.context))
    y = torch.randint(0, cfg.vocab_size, (args.batch, args.context))
    contenders = {
        # fused AdamW for every contender: transformers' Trainer defaults to it (torch >= 2.8)
        "transformers GPT2LMHeadModel": (
            hf_step,
            hf,
            torch.optim.AdamW(hf.parameters(), lr=1e-4, fused=True),
        ),
        "scratchllm GPTModel": (
            ours_step,
            ours,
            torch.optim.AdamW(ours.parameters(), lr=1e-4, fused=True),
        ),
    }
    if args.minimal:
        minimal = MinimalGPT2(cfg)
        opt = torch.optim.AdamW(minimal.parameters(), lr=1e-4, fused=True)
        contenders["minimal hand-written GPT-2"] = (logits_step, minimal, opt)
    if args.unfused:
        opt = torch.optim.AdamW(ours.parameters(), lr=1e-4, fused=True)
        contenders["scratchllm GPTModel, logits + F.cross_entropy"] = (logits_step, ours, opt)
    if args.fresh_memory:
        opt = torch.optim.AdamW(ours.parameters(), lr=1e-4, fused=True)
        contenders["scratchllm GPTModel, fresh [V, C] buffers"] = (fresh_memory_step, ours, opt)
    if args.compile:
        compiled = torch.compile(ours)
        opt = torch.optim.AdamW(ours.parameters(), lr=1e-4, fused=True)
        contenders["scratchllm GPTModel, compiled"] = (ours_step, compiled, opt)
    for step, model, opt in contenders.values():  # warm-up (and compilation)
        time_steps(step, model, opt, x, y, 1)
    times = {name: [] for name in contenders}
    for _ in range(args.reps):  # alternate so that machine noise hits both alike
        for name, (step, model, opt) in contenders.items():
            times[name].append(time_steps(step, model, opt, x, y, args.steps))
    tokens = args.batch * args.context
    base = tokens / statistics.median(times["transformers GPT2LMHeadModel"])
    print(
        f"{args.preset}, batch {args.batch}, context {args.context}, fp32, "
        f"{torch.get_num_threads()} threads, median of {args.reps}x{args.steps} steps"
    )
    # ratio: of the median times; per repetition: each repetition's own ratio (the contenders ran
    # back to back), whose spread shows how much the machine's noise moves it
    hf_times = times["transformers GPT2LMHeadModel"]
    print(f"| {'model':<45} | {'tokens/s':>10} | {'ratio':>6} | {'per repetition':>24} |")
    print(f"|{'-' * 47}|{'-' * 12}|{'-' * 8}|{'-' * 26}|")
    for name, ts in times.items():
        rate = tokens / statistics.median(ts)
        paired = [h / t for h, t in zip(hf_times, ts, strict=True)]
        spread = f"{statistics.median(paired):.2f}x ({min(paired):.2f}-{max(paired):.2f})"
        print(f"| {name:<45} | {rate:>10.1f} | {rate / base:>5.2f}x | {spread:>24} |")


if __name__ == "__main__":
    main()
