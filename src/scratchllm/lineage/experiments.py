"""The measured runs behind docs/lineage.md, kept runnable so that anyone can reproduce them.

    python -m scratchllm.lineage.experiments seq2seq --out docs/lineage
    python -m scratchllm.lineage.experiments compare --data PATH/tinyshakespeare.txt --out docs/lineage

`seq2seq`: the RNN with attention and the encoder-decoder Transformer on every synthetic task,
same batches and held-out pairs, steps until >= 95% exact match; an attention heatmap PNG.
`compare`: Word2Vec vectors and a small GPT's input embeddings, trained on the same corpus with
the same word-level tokenizer and training loop; nearest neighbours of the same words, a PCA plot.
Both print Markdown tables. One intra-op thread: on a small shared CPU it is the fastest setting.
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from scratchllm.lineage.rnn_attention import RNNSeq2Seq, RNNSeq2SeqConfig, save_attention_heatmap
from scratchllm.lineage.seq2seq import Seq2SeqConfig, Seq2SeqTransformer
from scratchllm.lineage.tasks import TASKS, collate, strip_output, train_seq2seq
from scratchllm.lineage.word2vec import (
    WordVectors,
    default_train_config,
    special_ids,
    train_word2vec,
)
from scratchllm.train.config import TrainConfig

COMPARE_WORDS = ("king", "queen", "thou", "she", "romeo", "lord", "love", "death", "good", "three")


# The Transformer's settings for the comparison (chosen by the screening in docs/lineage.md):
# torch.nn module-default init (N(0, 1) embeddings, Kaiming-uniform linears) instead of GPT-2's
# N(0, 0.02), which learned reversal about twice as slowly; an untied output head, so that it keeps
# the small Linear init instead of sharing the N(0, 1) embedding table (huge initial logits).
TRANSFORMER: dict[str, Any] = dict(
    n_embd=64, n_head=4, n_enc_layer=2, n_dec_layer=2, init="pytorch", tie_embeddings=False
)
BETA2 = 0.95  # Adam beta2 for both models
GRU, TRANSFORMER_LABEL = "GRU + additive attention", "encoder-decoder Transformer"
MODEL_KEYS = {"gru": GRU, "transformer": TRANSFORMER_LABEL}  # --models names
# Label smoothing values of each model's training loss, searched like the learning rate: every
# model runs at every value, and each model is reported at its best (learning rate, label
# smoothing) grid point. The same grid for both models: plain cross-entropy and the 2017
# Transformer's eps = 0.1 (docs/lineage.md).
LABEL_SMOOTHING: dict[str, tuple[float, ...]] = {GRU: (0.0, 0.1), TRANSFORMER_LABEL: (0.0, 0.1)}


def _seq2seq_train_config(
    lr: float, max_steps: int, warmup: int = 50, beta2: float = BETA2
) -> TrainConfig:
    return TrainConfig(
        max_steps=max_steps,
        batch_size=64,
        lr=lr,
        min_lr=lr / 10,
        warmup_steps=warmup,
        beta2=beta2,
        weight_decay=0.0,
        eval_interval=10**9,
        log_interval=10**6,
        device="cpu",
    )


def _models(task: Any, transformer: dict[str, Any] | None = None) -> dict[str, torch.nn.Module]:
    """Both models at a similar size (~0.2M parameters); `transformer` overrides TRANSFORMER."""
    v_src, v_tgt = task.src_vocab_size, task.tgt_vocab_size
    src_len, tgt_len = max(16, task.max_src_len), max(16, task.max_tgt_len + 2)
    settings = TRANSFORMER | (transformer or {})
    rnn = RNNSeq2Seq(RNNSeq2SeqConfig(v_src, v_tgt))  # first: its init never depends on the other
    transformer_model = Seq2SeqTransformer(
        Seq2SeqConfig(v_src, v_tgt, src_len, tgt_len, **settings)
    )
    return {GRU: rnn, TRANSFORMER_LABEL: transformer_model}


def make_task(name: str, min_len: int | None = None, max_len: int | None = None) -> Any:
    """A shipped task; `min_len` / `max_len` set the source length of reverse and sort (the toy
    translation has a fixed grammar, so its lengths cannot change)."""
    if name not in TASKS:
        raise SystemExit(f"unknown task {name!r}; known: {', '.join(TASKS)}")
    lengths = {k: v for k, v in (("min_len", min_len), ("max_len", max_len)) if v is not None}
    if lengths and name in ("reverse", "sort"):
        return TASKS[name](**lengths)
    return TASKS[name]()


def run_seq2seq(
    out: Path,
    max_steps: int,
    eval_every: int,
    lrs: list[float],
    *,
    tasks: list[str] | None = None,
    min_len: int | None = None,
    max_len: int | None = None,
    warmup: int = 50,
    beta2: float = BETA2,
    seeds: list[int] | None = None,
    transformer: dict[str, Any] | None = None,
    label_smoothing: dict[str, float | Sequence[float]] | None = None,
    models: list[str] | None = None,
    heatmap: bool = True,
) -> list[dict[str, Any]]:
    """Every task x model x label smoothing x learning rate x seed. For one seed both models get
    the same init seed, training batches, schedule and held-out pairs (seed s:
    `torch.manual_seed(s)`, data seed s in `train_seq2seq`), so a run's result does not depend
    on which other runs share the command. `label_smoothing` overrides LABEL_SMOOTHING per model
    label (one value or several); `models` (labels) runs only those models."""
    smoothing = {
        label: (eps,) if isinstance(eps, int | float) else tuple(eps)
        for label, eps in (LABEL_SMOOTHING | (label_smoothing or {})).items()
    }
    rows = []
    for name in tasks or list(TASKS):
        task = make_task(name, min_len, max_len)
        labels = [m for m in _models(task, transformer) if models is None or m in models]
        grid = [
            (m, e, lr, s) for m in labels for e in smoothing[m] for lr in lrs for s in seeds or [0]
        ]
        for label, eps, lr, seed in grid:
            torch.manual_seed(seed)
            model = _models(task, transformer)[label]
            report = train_seq2seq(
                model,
                task,
                _seq2seq_train_config(lr, max_steps, warmup, beta2),
                eval_every=eval_every,
                target=0.95,
                seed=seed,
                label_smoothing=eps,
            )
            n_params = sum(p.numel() for p in {id(p): p for p in model.parameters()}.values())
            rows.append(
                dict(
                    task=name,
                    lengths="3-5" if name == "translate" else f"{min_len or 3}-{task.max_src_len}",
                    model=label,
                    params=n_params,
                    lr=lr,
                    seed=seed,
                    label_smoothing=eps,
                    steps=report.reached_target_at,
                    seconds=round(report.seconds, 1),
                    accuracy=report.accuracy,
                )
            )
            print(json.dumps(rows[-1]), flush=True)
            first_eps = eps == smoothing[label][0]
            last = heatmap and first_eps and lr == lrs[-1] and seed == (seeds or [0])[0]
            if isinstance(model, RNNSeq2Seq) and name == "translate" and last:
                _heatmap(model, task, out / "rnn_attention_translate.png")
    return rows


def median_steps(steps: list[int | None]) -> float:
    """Median steps to the target over seeds; a run that never got there counts as infinite."""
    return float(np.median([math.inf if s is None else s for s in steps]))


def summarize(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per task and model: the grid point (learning rate, label smoothing) with the lowest median
    steps over seeds; a tie goes to the lower learning rate, then the lower label smoothing."""
    groups: dict[tuple[str, str, str], dict[tuple[float, float], list[dict[str, Any]]]] = {}
    for r in rows:
        point = (r["lr"], r.get("label_smoothing", 0.0))
        groups.setdefault((r["task"], r["lengths"], r["model"]), {}).setdefault(point, []).append(r)
    best = []
    for (task, lengths, model), by_point in groups.items():
        (lr, eps), runs = min(
            by_point.items(), key=lambda kv: (median_steps([r["steps"] for r in kv[1]]), kv[0])
        )
        steps = [r["steps"] for r in runs]
        best.append(
            dict(
                task=task,
                lengths=lengths,
                model=model,
                lr=lr,
                label_smoothing=eps,
                steps=steps,
                median=median_steps(steps),
            )
        )
    return best


def _floats(text: str) -> tuple[float, ...]:
    """'0,0.1' -> (0.0, 0.1): a comma-separated list of numbers (one or more)."""
    return tuple(float(x) for x in text.split(","))


def _fmt_steps(x: float | None) -> str:
    return "not reached" if x is None or math.isinf(x) else f"{x:g}"


def _heatmap(model: RNNSeq2Seq, task: Any, path: Path) -> None:
    src_ids, _ = next(p for p in task.sample(50, seed=123) if len(p[0]) == 5)
    src, mask, _, _ = collate([(src_ids, [])])
    out = model.generate(src, mask, 8)
    tokens = strip_output(out.tokens[0].tolist())
    weights = out.attention[0, : len(tokens) + 1]  # the [EOS] step too
    labels = [task.tgt_tokens[i] for i in tokens] + ["[EOS]"]
    save_attention_heatmap(
        weights,
        [task.src_tokens[i] for i in src_ids],
        labels,
        path,
        title="GRU attention: source word order -> target word order",
    )


def _gpt_embeddings(texts: list[str], tokenizer: Any, steps: int) -> WordVectors:
    """A small GPT trained briefly on the corpus; its input embedding table as word vectors."""
    from scratchllm.data.loaders import EpochLoader
    from scratchllm.data.windows import WindowDataset
    from scratchllm.model import GPTModel, ModelConfig
    from scratchllm.train.loop import Trainer

    ids = np.concatenate([np.asarray(tokenizer.encode_ordinary(t), dtype=np.int64) for t in texts])
    cfg = ModelConfig(
        vocab_size=tokenizer.vocab_size, context_length=64, n_embd=128, n_layer=4, n_head=4
    )
    torch.manual_seed(0)
    model = GPTModel(cfg)
    train = TrainConfig(
        max_steps=steps,
        batch_size=32,
        lr=2e-3,
        min_lr=2e-4,
        warmup_steps=50,
        eval_interval=10**9,
        log_interval=100,
        device="cpu",
    )
    loader = EpochLoader(WindowDataset(ids, 64, 64), train.batch_size, seed=0)
    result = Trainer(model, train, loader, None, progress=False).fit()
    print(f"GPT: {steps} steps, {result.seconds:.0f} s, final train loss {result.train_loss:.3f}")
    return WordVectors.from_embedding(model.embed.wte.weight, tokenizer, special_ids(tokenizer))


def _pca_plot(spaces: dict[str, WordVectors], words: list[str], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(spaces), figsize=(12, 5.5), dpi=100)
    for ax, (title, wv) in zip(axes, spaces.items(), strict=True):
        x = np.stack([wv.unit[wv.lookup(w)] for w in words])
        x = x - x.mean(0)
        xy = x @ np.linalg.svd(x, full_matrices=False)[2][:2].T  # first two principal axes
        ax.scatter(xy[:, 0], xy[:, 1], s=12)
        for (px, py), w in zip(xy, words, strict=True):
            ax.annotate(w, (px, py), fontsize=8)
        ax.set_title(title)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def run_compare(data: str, out: Path, w2v_steps: int, gpt_steps: int) -> None:
    from scratchllm.data.sources import read_text_sources

    texts = [doc.text for doc in read_text_sources(data)]
    start = time.perf_counter()
    w2v = train_word2vec(
        texts, min_count=5, dim=128, train=default_train_config(max_steps=w2v_steps, device="cpu")
    )
    print(
        f"word2vec: {w2v_steps} steps, {time.perf_counter() - start:.0f} s, "
        f"{len(w2v.vectors)} words, final loss {w2v.result.train_loss:.3f}"
    )
    gpt = _gpt_embeddings(texts, w2v.tokenizer, gpt_steps)
    print("\n| word | Word2Vec (skip-gram) | GPT input embeddings |\n|---|---|---|")
    for word in COMPARE_WORDS:
        cells = [
            ", ".join(f"{w} {s:.2f}" for w, s in wv.neighbours(word, 6))
            for wv in (w2v.vectors, gpt)
        ]
        print(f"| {word} | {cells[0]} | {cells[1]} |")
    groups = [
        "king",
        "queen",
        "duke",
        "lord",
        "prince",
        "romeo",
        "juliet",
        "warwick",
        "thou",
        "thee",
        "he",
        "she",
        "they",
        "one",
        "two",
        "three",
        "ten",
        "love",
        "hate",
        "death",
        "life",
        "good",
        "bad",
        "sweet",
        "gentle",
    ]
    _pca_plot(
        {"Word2Vec": w2v.vectors, "GPT input embeddings": gpt}, groups, out / "compare_pca.png"
    )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="what", required=True)
    p = sub.add_parser("seq2seq", help="RNN vs Transformer on the synthetic tasks")
    p.add_argument("--out", default="docs/lineage")
    p.add_argument("--max-steps", type=int, default=2000)
    p.add_argument("--eval-every", type=int, default=25)
    p.add_argument(
        "--lrs",
        default="5e-4,1e-3,2e-3,3e-3,5e-3",
        help="peak learning rates to try, comma-separated (both models)",
    )
    p.add_argument("--tasks", default=",".join(TASKS), help="tasks to run, comma-separated")
    p.add_argument("--min-len", type=int, default=None, help="shortest source (reverse, sort)")
    p.add_argument("--max-len", type=int, default=None, help="longest source (reverse, sort)")
    p.add_argument("--warmup", type=int, default=50, help="linear warm-up steps (both models)")
    p.add_argument("--beta2", type=float, default=BETA2, help="Adam beta2 (both models)")
    p.add_argument("--seeds", default="0,1", help="seeds (init and data), comma-separated")
    p.add_argument(
        "--transformer-init",
        choices=("gpt2", "pytorch"),
        default=TRANSFORMER["init"],
        help="the Transformer's weight init (gpt2: N(0, 0.02), as before 2026-11-28)",
    )
    p.add_argument(
        "--transformer-label-smoothing",
        type=_floats,
        default=LABEL_SMOOTHING[TRANSFORMER_LABEL],
        help="label smoothing values of the Transformer's loss to try, comma-separated "
        "(0: plain cross-entropy)",
    )
    p.add_argument(
        "--gru-label-smoothing",
        type=_floats,
        default=LABEL_SMOOTHING[GRU],
        help="label smoothing values of the GRU's loss to try, comma-separated",
    )
    p.add_argument(
        "--models",
        default=",".join(MODEL_KEYS),
        help="models to run, comma-separated: gru, transformer",
    )
    p.add_argument("--no-heatmap", action="store_true", help="do not redraw the heatmap PNG")
    c = sub.add_parser("compare", help="Word2Vec vs GPT input embeddings")
    c.add_argument("--data", required=True)
    c.add_argument("--out", default="docs/lineage")
    c.add_argument("--w2v-steps", type=int, default=3000)
    c.add_argument("--gpt-steps", type=int, default=1500)
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    print(f"# {time.strftime('%Y-%m-%d')} {platform.machine()} torch {torch.__version__}, 1 thread")
    if args.what == "seq2seq":
        lrs = [float(x) for x in args.lrs.split(",")]
        unknown = sorted(set(args.models.split(",")) - set(MODEL_KEYS))
        if unknown:
            raise SystemExit(f"unknown model(s) {', '.join(unknown)}; known: gru, transformer")
        rows = run_seq2seq(
            out,
            args.max_steps,
            args.eval_every,
            lrs,
            tasks=args.tasks.split(","),
            min_len=args.min_len,
            max_len=args.max_len,
            warmup=args.warmup,
            beta2=args.beta2,
            seeds=[int(x) for x in args.seeds.split(",")],
            transformer={"init": args.transformer_init},
            label_smoothing={
                GRU: args.gru_label_smoothing,
                TRANSFORMER_LABEL: args.transformer_label_smoothing,
            },
            models=[MODEL_KEYS[m] for m in args.models.split(",")],
            heatmap=not args.no_heatmap,
        )
        print(
            "\n| task | lengths | model | params | label smoothing | lr | seed | steps to 95% "
            "| seconds | exact match |"
        )
        print("|---|---|---|---|---|---|---|---|---|---|")
        for r in rows:
            print(
                f"| {r['task']} | {r['lengths']} | {r['model']} | {r['params']:,} | "
                f"{r['label_smoothing']:g} | {r['lr']:g} | {r['seed']} | "
                f"{_fmt_steps(r['steps'])} | {r['seconds']} | {100 * r['accuracy']:.1f}% |"
            )
        print("\nBest grid point of each model (median steps to 95% over the seeds):\n")
        print(
            "| task | lengths | model | label smoothing | lr | steps per seed | median |\n"
            "|---|---|---|---|---|---|---|"
        )
        for b in summarize(rows):
            per_seed = ", ".join(_fmt_steps(s) for s in b["steps"])
            print(
                f"| {b['task']} | {b['lengths']} | {b['model']} | {b['label_smoothing']:g} | "
                f"{b['lr']:g} | {per_seed} | {_fmt_steps(b['median'])} |"
            )
    else:
        run_compare(args.data, out, args.w2v_steps, args.gpt_steps)


if __name__ == "__main__":
    main()
