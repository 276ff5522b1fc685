"""Correctness on a GPU, before timing anything there: our GPT against transformers' GPT-2 with
the same weights, SDPA against the explicit attention, and our decoding engine (static cache,
CUDA graph on CUDA) against transformers' greedy generate; activation checkpointing against plain
gradients, and sliding-window perplexity against the CPU. Prints each figure and exits 1 if one
is out of tolerance. Without a GPU it runs the same checks on CPU at a tiny size:

    python bench/gpu_check.py                 # gpt2-small shape on CUDA; tiny on CPU
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import sys

import torch

# bench/gpu_generate.py: the same model sizes (transformers GPT2Config fields) and id decoder
from gpu_generate import SIZES, StubTokenizer


def rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a.float() - b.float()).norm() / b.float().norm().clamp_min(1e-30))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--shape", choices=SIZES, default=None)
    args = ap.parse_args()
    from transformers import GPT2Config, GPT2LMHeadModel

    from scratchllm.generation import GREEDY, Engine
    from scratchllm.interop.hf_convert import gpt_from_gpt2
    from scratchllm.model import GPTModel
    from scratchllm.perplexity import perplexity

    cuda = torch.cuda.is_available()
    device = torch.device("cuda" if cuda else "cpu")
    shape = args.shape or ("gpt2-small" if cuda else "tiny")
    torch.backends.cuda.matmul.allow_tf32 = False  # fp32 checks in true fp32
    torch.backends.cudnn.allow_tf32 = False
    torch.manual_seed(0)
    hf_cfg = GPT2Config(**SIZES[shape], resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0)
    hf_cfg._attn_implementation = "sdpa"
    hf = GPT2LMHeadModel(hf_cfg).eval()
    ours = gpt_from_gpt2(hf).eval().to(device)
    hf = hf.to(device)
    v = hf_cfg.vocab_size
    x = torch.randint(0, v, (4, 256 if cuda else 64), device=device)
    y = torch.randint(0, v, x.shape, device=device)
    failures = []

    def report(name: str, value: float, limit: float) -> None:
        ok = value <= limit
        print(f"{'ok  ' if ok else 'FAIL'} {name:<58} {value:.3g} (limit {limit:g})")
        if not ok:
            failures.append(name)

    print(
        f"{shape} on {torch.cuda.get_device_name() if cuda else 'CPU'}, torch {torch.__version__}"
    )
    # 1. forward logits, fp32
    with torch.no_grad():
        report("fp32 logits vs transformers (rel)", rel_err(ours(x), hf(input_ids=x).logits), 1e-5)
    # 2. loss and gradients under bf16 autocast (where the GPU trains)
    amp = torch.autocast(device.type, dtype=torch.bfloat16, enabled=cuda)
    with amp:
        loss_ours = ours(x, targets=y)
        loss_hf = torch.nn.functional.cross_entropy(
            hf(input_ids=x).logits.flatten(0, 1).float(), y.flatten()
        )
    loss_ours.backward()
    loss_hf.backward()
    report(
        "bf16-autocast loss vs transformers (abs)",
        abs(float(loss_ours.detach() - loss_hf.detach())),
        2e-2,
    )
    report(
        "bf16-autocast tied-embedding grad vs transformers (rel)",
        rel_err(ours.embed.wte.weight.grad, hf.transformer.wte.weight.grad),
        3e-2,
    )
    report(
        "bf16-autocast layer-0 qkv weight grad vs transformers (rel)",
        rel_err(ours.blocks[0].attn.qkv.weight.grad, hf.transformer.h[0].attn.c_attn.weight.grad.T),
        3e-2,
    )
    # 3. SDPA (flash / efficient kernels on CUDA) against the explicit softmax(QK^T)V
    math_model = GPTModel(dataclasses.replace(ours.cfg, attn_impl="math")).to(device).eval()
    math_model.load_state_dict(ours.state_dict())
    with torch.no_grad():
        report(
            "fp32 logits, SDPA vs explicit attention (rel)", rel_err(ours(x), math_model(x)), 1e-5
        )
        with amp:
            a, b = ours(x), math_model(x)
        report("bf16 logits, SDPA vs explicit attention (rel)", rel_err(a, b), 2e-2)
    # 4. greedy decoding: our engine (static cache; CUDA graph on CUDA) against transformers
    hf.generation_config.eos_token_id = None
    hf.generation_config.pad_token_id = 0
    prompts = torch.randint(0, v, (3, 32), generator=torch.Generator().manual_seed(1))
    n = 48

    engine = Engine(ours, StubTokenizer())
    got = [c.token_ids for c in engine.generate(prompts.tolist(), GREEDY, n)]
    mode = engine._batch.step_mode if engine._batch is not None else "?"
    with torch.no_grad():
        want = hf.generate(
            prompts.to(device),
            attention_mask=torch.ones_like(prompts, device=device),
            max_new_tokens=n,
            min_new_tokens=n,
            do_sample=False,
        )[:, prompts.shape[1] :].tolist()
    agree = sum(g == w for gs, ws in zip(got, want) for g, w in zip(gs, ws)) / (len(got) * n)
    report(f"greedy tokens differing from transformers, fp32 ({mode})", 1 - agree, 0.0)
    # 5. activation checkpointing: the same gradients as storing every activation (bf16 autocast)
    grads = {}
    for recompute in (False, True):
        ours.train().zero_grad(set_to_none=True)
        ours.activation_checkpointing = recompute
        with amp:
            ours(x, targets=y).backward()
        grads[recompute] = ours.blocks[0].attn.qkv.weight.grad.clone()
    ours.activation_checkpointing = False
    ours.eval()
    report(
        "activation checkpointing: layer-0 qkv grad vs plain (rel)", rel_err(*grads.values()), 1e-2
    )
    # 6. sliding-window perplexity on this device against the CPU (fp32)
    ids = torch.randint(0, v, (700,), generator=torch.Generator().manual_seed(2))
    window = dict(context=x.shape[1], stride=x.shape[1] // 2)
    here = perplexity(ours, ids, **window).loss
    there = perplexity(copy.deepcopy(ours).cpu(), ids, **window).loss
    report("fp32 sliding-window loss, this device vs CPU (rel)", abs(here - there) / there, 1e-5)
    if failures:
        print(f"{len(failures)} check(s) failed: {', '.join(failures)}")
        return 1
    print("all checks passed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
