"""Data-layer benchmark: is data preparation and loading ever the bottleneck?

1. Shard writing (``prepare_shards`` with N worker processes, including process start-up, ids
   written to disk and the index committed after every chunk) against the tokenizer's own fast path
   (``BPETokenizer.encode_batch`` on the same documents, tiktoken core with N threads, ids kept in
   memory). Target: ratio >= 0.8.
2. Loader batches/s (``EpochLoader`` over a memory-mapped shard, and ``ShardSampler``) against
   optimizer steps/s of a GPT-2-small-shaped model (forward, backward, AdamW) at the same batch
   shape on this machine. Target: ratio >= 50.

    .venv/bin/python bench/data.py               # GPT-2 tokenizer from ../shared/data if present
    .venv/bin/python bench/data.py --quick       # tiny sizes (what the test suite can afford)
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from scratchllm.data.loaders import EpochLoader, ShardSampler
from scratchllm.data.shards import open_shards, prepare_shards
from scratchllm.data.sources import Document, read_text_sources
from scratchllm.data.windows import WindowDataset

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "data"


def median_time(fn: Callable[[], object], reps: int) -> float:
    times = []
    for _ in range(reps):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def load_tokenizer(quick: bool):
    from scratchllm.tokenizer import BPETokenizer

    if not quick and (SHARED / "encoder.json").is_file():
        return BPETokenizer.from_gpt2_files(SHARED / "encoder.json", SHARED / "vocab.bpe"), "gpt2"
    texts = [d.text for d in read_text_sources("builtin")[:50]]
    return BPETokenizer.train(texts, 1024), "bpe-1024 (trained on builtin)"


def corpus(repeat: int) -> list[Document]:
    docs = read_text_sources("builtin")
    return [Document(f"{r}:{d.name}", d.text) for r in range(repeat) for d in docs]


def bench_prepare(tok, docs: list[Document], workers: int, reps: int) -> tuple[float, float]:
    """(ours, peer) in MB of text per second."""
    mb = sum(len(d.text.encode()) for d in docs) / 1e6
    texts = [d.text for d in docs]
    peer = median_time(lambda: tok.encode_batch(texts, num_threads=workers), reps)

    def ours() -> None:
        with tempfile.TemporaryDirectory() as tmp:
            prepare_shards(docs, tok, tmp, workers=workers, shard_tokens=1 << 22)

    return mb / median_time(ours, reps), mb / peer


def bench_loaders(
    ids_path: Path, batch: int, length: int, n_batches: int, reps: int
) -> tuple[float, float]:
    """(EpochLoader, ShardSampler) batches per second over a memory-mapped id file."""
    ids = np.memmap(ids_path, dtype=np.uint16, mode="r")
    loader = EpochLoader(WindowDataset(ids, length, length), batch, seed=0)
    sampler = ShardSampler([ids], batch, length, seed=0)
    epoch_it, shard_it = loader.batches(), sampler.batches()

    def run(it) -> None:
        for _ in range(n_batches):
            next(it)

    t_epoch = median_time(lambda: run(epoch_it), reps)
    t_shard = median_time(lambda: run(shard_it), reps)
    return n_batches / t_epoch, n_batches / t_shard


def bench_step(preset: str, batch: int, length: int, reps: int) -> float:
    """Optimizer steps per second of ``preset`` (forward + loss + backward + AdamW)."""
    from scratchllm.model import GPTModel, get_preset

    torch.manual_seed(0)
    model = GPTModel(get_preset(preset, context_length=max(length, 64)))
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    x = torch.randint(0, model.cfg.vocab_size, (batch, length))

    def step() -> None:
        logits = model(x)
        loss = F.cross_entropy(logits.flatten(0, 1), x.flatten())
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    step()  # warm-up: allocations, AdamW state
    return 1.0 / median_time(step, reps)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="tiny sizes, tiny model")
    p.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    p.add_argument("--repeat", type=int, default=8, help="copies of the built-in corpus (~1.5 MB)")
    p.add_argument("--batch-size", type=int, default=4)
    p.add_argument("--length", type=int, default=256, help="tokens per row (max_length)")
    p.add_argument("--preset", default="gpt2-small")
    p.add_argument("--reps", type=int, default=3)
    args = p.parse_args()
    if args.quick:
        args.repeat, args.preset, args.reps, args.length = 1, "tiny", 2, 64

    torch.set_num_threads(args.workers)
    tok, tok_name = load_tokenizer(args.quick)
    docs = corpus(args.repeat)
    ours_mb, peer_mb = bench_prepare(tok, docs, args.workers, args.reps)

    with tempfile.TemporaryDirectory() as tmp:
        prepare_shards(docs, tok, tmp, workers=args.workers)
        ids_path = Path(tmp) / "ids.bin"
        np.concatenate(open_shards(tmp)).astype(np.uint16).tofile(ids_path)
        epoch_bps, shard_bps = bench_loaders(ids_path, args.batch_size, args.length, 200, args.reps)
    step_sps = bench_step(args.preset, args.batch_size, args.length, args.reps)

    mb = sum(len(d.text.encode()) for d in docs) / 1e6
    print(
        f"corpus: built-in x{args.repeat} = {mb:.1f} MB, {len(docs)} documents; tokenizer {tok_name}"
    )
    print(f"workers/threads: {args.workers}; batch {args.batch_size} x {args.length}")
    print(f"{'measure':<44}{'ours':>12}{'peer':>12}{'ratio':>9}")
    rows = [
        ("prepare MB/s vs encode_batch MB/s", ours_mb, peer_mb),
        (f"EpochLoader batch/s vs {args.preset} step/s", epoch_bps, step_sps),
        (f"ShardSampler batch/s vs {args.preset} step/s", shard_bps, step_sps),
    ]
    for name, ours, peer in rows:
        print(f"{name:<44}{ours:>12.3f}{peer:>12.3f}{ours / peer:>9.1f}")


if __name__ == "__main__":
    main()
