"""Tokenizer benchmark: our reference and fast path against tiktoken and HF `tokenizers`.

Encode MB/s on GPT-2's vocabulary (all four built from ../shared/data/{encoder.json,vocab.bpe}),
training seconds (reference vs rustbpe vs HF BpeTrainer) and pathological inputs. Medians over
repetitions; the ratio column is ours / peer (for speeds: higher is better; for seconds: lower).

    .venv/bin/python bench/tokenizer.py            # full: ~11 MB encode, vocab 4096 and 32768
    .venv/bin/python bench/tokenizer.py --quick    # tiny sizes, seconds (used by the test suite)
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


def median_seconds(fn: Callable[[], object], reps: int) -> float:
    times = []
    for _ in range(reps):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def corpus(mb: float) -> str:
    """English text of about `mb` MB: the shared corpora, repeated as needed."""
    names = ("tinyshakespeare.txt", "the-verdict.txt", "instruction-data.json")
    base = "\n".join((DATA / n).read_text(encoding="utf-8") for n in names if (DATA / n).is_file())
    reps = max(1, int(mb * 1e6 / len(base.encode("utf-8")) + 0.999))
    return (base * reps)[: int(mb * 1e6)]


def peers():
    import tiktoken
    from tiktoken.load import data_gym_to_mergeable_bpe_ranks
    from tokenizers import Tokenizer, models, pre_tokenizers

    from scratchllm.tokenizer import GPT2_PATTERN

    ranks = data_gym_to_mergeable_bpe_ranks(str(DATA / "vocab.bpe"), str(DATA / "encoder.json"))
    specials = {"<|endoftext|>": 50256}
    tk = tiktoken.Encoding(
        "gpt2", pat_str=GPT2_PATTERN, mergeable_ranks=ranks, special_tokens=specials
    )
    hf = Tokenizer(models.BPE.from_file(str(DATA / "encoder.json"), str(DATA / "vocab.bpe")))
    hf.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    return tk, hf


def bench_encode(text: str, reps: int) -> list[tuple[str, float, str]]:
    from scratchllm.tokenizer import BPETokenizer

    tk, hf = peers()
    fast = BPETokenizer.from_gpt2_files(DATA / "encoder.json", DATA / "vocab.bpe")
    mb = len(text.encode("utf-8")) / 1e6
    expected = tk.encode(text)  # both check the text for the special-token literal
    assert fast.encode(text) == expected

    def reference() -> None:  # a fresh tokenizer each time: the piece cache starts empty
        assert fast.with_fast(False).encode(text) == expected

    rows = {
        "encode ours-reference": median_seconds(reference, reps),
        "encode ours-fast": median_seconds(lambda: fast.encode(text), reps),
        "encode tiktoken": median_seconds(lambda: tk.encode(text), reps),
        "encode HF tokenizers": median_seconds(lambda: hf.encode(text).ids, reps),
    }
    speed = {k: mb / v for k, v in rows.items()}
    out = []
    for name, value in speed.items():
        ratio = f"{value / speed['encode tiktoken']:.2f}x tiktoken"
        out.append((f"{name} ({mb:.1f} MB)", value, f"MB/s  {ratio}"))
    return out


def bench_train(text: str, vocab_sizes: list[int], reps: int) -> list[tuple[str, float, str]]:
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers

    from scratchllm.tokenizer import BPETokenizer
    from scratchllm.tokenizer.fast import rustbpe_available

    out = []
    mb = len(text.encode("utf-8")) / 1e6
    for vocab in vocab_sizes:

        def hf_train(vocab: int = vocab) -> None:
            tok = Tokenizer(models.BPE())
            tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
            trainer = trainers.BpeTrainer(
                vocab_size=vocab,
                show_progress=False,
                initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
                special_tokens=["<|endoftext|>"],
            )
            tok.train_from_iterator([text], trainer)

        times = {"HF BpeTrainer": median_seconds(hf_train, reps)}
        results = {}
        backends = ["reference"] + (["rustbpe"] if rustbpe_available() else [])
        for backend in backends:

            def ours(backend: str = backend, vocab: int = vocab, results: dict = results) -> None:
                results[backend] = BPETokenizer.train(text, vocab, backend=backend)

            times[f"ours-{backend}"] = median_seconds(ours, reps)
        if "rustbpe" in results:
            assert results["rustbpe"].tokens == results["reference"].tokens, "merges differ"
        reached = results["reference"].vocab_size  # smaller when the corpus runs out of pairs
        for name, value in times.items():
            ratios = [f"{times['HF BpeTrainer'] / value:.2f}x faster than HF"]
            if "ours-rustbpe" in times:
                ratios.append(f"{value / times['ours-rustbpe']:.2f}x rustbpe time")
            label = f"train {name} vocab={vocab} (got {reached}, {mb:.1f} MB)"
            out.append((label, value, "s  " + ", ".join(ratios)))
    return out


def bench_pathological(mib: float, reps: int) -> list[tuple[str, float, str]]:
    from scratchllm.tokenizer import BPETokenizer

    tk, hf = peers()
    fast = BPETokenizer.from_gpt2_files(DATA / "encoder.json", DATA / "vocab.bpe")
    ref = fast.with_fast(False)
    n = int(mib * (1 << 20))
    inputs = {
        "one char": "x" * n,
        "no spaces": "".join(chr(97 + (i * 7919) % 26) for i in range(n)),
    }
    out = []
    for kind, text in inputs.items():
        fns = {
            "ours-reference": lambda text=text: ref.with_fast(False).encode(text),
            "ours-fast": lambda text=text: fast.encode(text),
            "tiktoken": lambda text=text: tk.encode_ordinary(text),
            "HF tokenizers": lambda text=text: hf.encode(text).ids,
        }
        times = {name: median_seconds(fn, reps) for name, fn in fns.items()}
        for name, value in times.items():
            half = text[: n // 2]
            note = ""
            if name == "ours-reference":  # linear check: time(n) / time(n/2) is about 2
                t_half = median_seconds(lambda h=half: ref.with_fast(False).encode(h), reps)
                note = f", time(n)/time(n/2) = {value / t_half:.2f}"
            ratio = f"{value / times['tiktoken']:.2f}x tiktoken time"
            out.append((f"pathological {kind} {mib:g} MiB {name}", value, f"s  {ratio}{note}"))
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="tiny sizes (smoke test)")
    parser.add_argument("--encode-mb", type=float, default=11.0)
    parser.add_argument("--train-mb", type=float, default=2.0)
    parser.add_argument("--vocab", type=int, nargs="+", default=[4096, 32768])
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--only", choices=("encode", "train", "pathological"), nargs="*")
    args = parser.parse_args(argv)
    if not (DATA / "encoder.json").is_file():
        print(f"shared data not found at {DATA}; nothing to measure")
        return 0
    if args.quick:
        args.encode_mb, args.train_mb, args.vocab, args.reps = 0.2, 0.2, [600], 1
    only = set(args.only or ("encode", "train", "pathological"))
    rows: list[tuple[str, float, str]] = []
    if "encode" in only:
        rows += bench_encode(corpus(args.encode_mb), args.reps)
    if "train" in only:
        rows += bench_train(corpus(args.train_mb), args.vocab, args.reps)
    if "pathological" in only:
        rows += bench_pathological(1 / 16 if args.quick else 1.0, args.reps)
    print(f"# python {sys.version.split()[0]}, {os.cpu_count()} CPUs, median of {args.reps}")
    print(f"{'measurement':<62} {'value':>9}  unit / ratio")
    for name, value, note in rows:
        print(f"{name:<62} {value:>9.3f}  {note}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
