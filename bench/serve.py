"""Serving throughput: N concurrent streaming clients vs the same requests one at a time.

Starts ``scratchllm serve`` as a subprocess on a free loopback port over a small random-weight
model (or ``--run DIR``), then for ``--duration`` seconds keeps ``--clients`` streaming
completions in flight, and for the same duration sends the same requests one at a time.
Reports errors, p50/p99 time to first token, p50/p99 per-token latency (time between tokens
of one stream) and total tokens/s, with the batched/sequential ratio last.

    .venv/bin/python bench/serve.py                 # 32 clients, 30 s each phase
    .venv/bin/python bench/serve.py --duration 5    # quicker
"""

from __future__ import annotations

import argparse
import asyncio
import json
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx

MODEL = "bench-run"


def build_run(path: Path, n_embd: int, n_layer: int) -> Path:
    """A random small GPT with a byte-level tokenizer (throughput does not need training)."""
    import torch

    from scratchllm.model import GPTModel, get_preset
    from scratchllm.tokenizer import BPETokenizer
    from scratchllm.train.checkpoint import save_run

    tokenizer = BPETokenizer(
        [bytes([b]) for b in range(256)], special_tokens={"<|endoftext|>": 256}
    )
    torch.manual_seed(0)
    cfg = get_preset(
        "tiny", vocab_size=257, context_length=512, n_embd=n_embd, n_layer=n_layer, n_head=4
    )
    save_run(path, GPTModel(cfg).eval(), cfg, tokenizer)
    return path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class Stats:
    ttft: list[float] = field(default_factory=list)  # seconds to the first text chunk
    per_token: list[float] = field(default_factory=list)  # per stream: (last - first) / (n - 1)
    tokens: int = 0
    requests: int = 0
    errors: int = 0


async def one_request(client: httpx.AsyncClient, body: dict, stats: Stats) -> None:
    start = time.perf_counter()
    first = last = None
    chunks = 0
    try:
        async with client.stream("POST", "/v1/completions", json=body) as r:
            if r.status_code != 200:
                stats.errors += 1
                await r.aread()
                return
            async for line in r.aiter_lines():
                if not line.startswith("data: ") or line == "data: [DONE]":
                    continue
                chunk = json.loads(line[6:])
                if "error" in chunk:
                    stats.errors += 1
                    return
                if chunk.get("usage"):
                    stats.tokens += chunk["usage"]["completion_tokens"]
                elif chunk["choices"] and chunk["choices"][0]["text"]:
                    last = time.perf_counter()
                    chunks += 1
                    if first is None:
                        first = last
                        stats.ttft.append(first - start)
        stats.requests += 1
        if chunks > 1:
            stats.per_token.append((last - first) / (chunks - 1))
    except httpx.HTTPError:
        stats.errors += 1


async def phase(url: str, clients: int, duration: float, max_tokens: int) -> tuple[Stats, float]:
    stats = Stats()
    end = time.perf_counter() + duration
    limits = httpx.Limits(max_connections=clients + 4)

    async def worker(i: int) -> None:
        n = 0
        while time.perf_counter() < end:
            body = {
                "model": MODEL,
                "prompt": f"Request {i}.{n}: once upon a time",
                "max_tokens": max_tokens,
                "temperature": 0.8,
                "seed": i * 1000 + n,
                "stream": True,
                "stream_options": {"include_usage": True},
            }
            await one_request(client, body, stats)
            n += 1

    start = time.perf_counter()
    async with httpx.AsyncClient(base_url=url, timeout=120, limits=limits) as client:
        await asyncio.gather(*(worker(i) for i in range(clients)))
    return stats, time.perf_counter() - start


def pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    values = sorted(values)
    return values[min(len(values) - 1, int(q * len(values)))] * 1000


def wait_ready(url: str, proc: subprocess.Popen, timeout: float = 120) -> None:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if proc.poll() is not None:
            raise SystemExit(f"server exited with {proc.returncode}")
        try:
            if httpx.get(url + "/health", timeout=1).status_code == 200:
                return
        except httpx.TransportError:
            time.sleep(0.2)
    raise SystemExit("server did not start")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--duration", type=float, default=30.0, help="seconds per phase")
    p.add_argument("--clients", type=int, default=32, help="concurrent streaming clients")
    p.add_argument("--max-tokens", type=int, default=64, help="tokens per request")
    p.add_argument("--run", default=None, help="a run directory (default: random small model)")
    p.add_argument("--n-embd", type=int, default=128)
    p.add_argument("--n-layer", type=int, default=4)
    args = p.parse_args(argv)

    with tempfile.TemporaryDirectory() as tmp:
        run = args.run or str(build_run(Path(tmp) / MODEL, args.n_embd, args.n_layer))
        port = free_port()
        url = f"http://127.0.0.1:{port}"
        cmd = [
            sys.executable,
            "-m",
            "scratchllm",
            "serve",
            "--run",
            run,
            "--port",
            str(port),
            "--model-name",
            MODEL,
            "--max-batch",
            str(args.clients),
            "--max-queue",
            "64",
        ]
        proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL)
        try:
            wait_ready(url, proc)
            asyncio.run(phase(url, 1, 1.0, 4))  # warm-up
            batched, t_b = asyncio.run(phase(url, args.clients, args.duration, args.max_tokens))
            single, t_s = asyncio.run(phase(url, 1, args.duration, args.max_tokens))
        finally:
            proc.terminate()
            proc.wait(timeout=60)
    tps_b, tps_s = batched.tokens / t_b, single.tokens / t_s
    print(
        f"serve: {args.clients} streaming clients vs one at a time, {args.duration:g} s each, "
        f"max_tokens {args.max_tokens}, model n_embd={args.n_embd} n_layer={args.n_layer}"
    )
    rows = [
        ("requests completed", batched.requests, single.requests),
        ("errors", batched.errors, single.errors),
        ("TTFT p50 (ms)", pct(batched.ttft, 0.5), pct(single.ttft, 0.5)),
        ("TTFT p99 (ms)", pct(batched.ttft, 0.99), pct(single.ttft, 0.99)),
        ("per-token p50 (ms)", pct(batched.per_token, 0.5), pct(single.per_token, 0.5)),
        ("per-token p99 (ms)", pct(batched.per_token, 0.99), pct(single.per_token, 0.99)),
        ("tokens/s", tps_b, tps_s),
    ]
    print(f"{'metric':<22}{'batched':>12}{'one at a time':>16}")
    for name, b, s in rows:
        print(
            f"{name:<22}{b:>12.1f}{s:>16.1f}"
            if isinstance(b, float)
            else f"{name:<22}{b:>12}{s:>16}"
        )
    ratio = tps_b / tps_s if tps_s else float("nan")
    print(f"{'throughput ratio':<22}{ratio:>12.2f}x  (target >= 3x)")
    return 1 if batched.errors else 0


if __name__ == "__main__":
    raise SystemExit(main())
