"""The KV-cached engine against the naive reference decoder, batching, stopping, overflow."""

from __future__ import annotations

import pytest
import torch

from scratchllm.generation import (
    GREEDY,
    ContextOverflowError,
    DecodeBatch,
    Engine,
    Request,
    SamplingConfig,
    generate,
    left_pad,
)
from scratchllm.generation.engine import SLIDE_KEEP

PROMPTS = [[10, 20, 30, 40, 50, 60], [7], [100, 101, 102]]


def reference_tokens(model, prompts, n, sampling=GREEDY, **kw) -> list[list[int]]:
    idx, mask = left_pad(prompts)
    out = generate(model, idx, n, sampling, attention_mask=mask, **kw)
    return out[:, idx.shape[1] :].tolist()


@pytest.mark.parametrize("batch", [1, 3])
def test_cached_greedy_equals_reference_token_for_token(model, tokenizer, batch):
    prompts = PROMPTS[:batch]
    got = Engine(model, tokenizer).generate(prompts, GREEDY, 16)
    assert [c.token_ids for c in got] == reference_tokens(model, prompts, 16)
    assert all(c.finish_reason == "length" for c in got)


def test_equal_length_batch_decodes_without_masks_like_the_reference(model, tokenizer):
    # equal lengths: prefill and every decode step run without an attention mask (the fast path)
    prompts = [[10, 20, 30, 40], [7, 8, 9, 10], [100, 101, 102, 103]]
    engine = Engine(model, tokenizer)
    seen = []
    decode = engine.batch(3, max_len=64)._step  # the batch generate() reuses for this size
    decode_fn = decode._fn

    def spy():
        seen.append(decode.cache.full)
        return decode_fn()

    decode._fn = spy
    got = engine.generate(prompts, GREEDY, 12)
    assert [c.token_ids for c in got] == reference_tokens(model, prompts, 12)
    assert seen and all(seen)


def test_grouped_and_multi_query_attention_configs(tokenizer, make_model):
    for n_kv_head in (1, 4):
        model = make_model("tiny-llama", n_kv_head=n_kv_head)
        got = Engine(model, tokenizer).generate(PROMPTS, GREEDY, 8)
        assert [c.token_ids for c in got] == reference_tokens(model, PROMPTS, 8)


def test_left_padded_batch_equals_each_prompt_alone(model, tokenizer):
    engine = Engine(model, tokenizer)
    together = [c.token_ids for c in engine.generate(PROMPTS, GREEDY, 10)]
    alone = [engine.generate([p], GREEDY, 10)[0].token_ids for p in PROMPTS]
    assert together == alone
    # the reference agrees with itself too: padding does not leak into a row
    assert reference_tokens(model, PROMPTS[1:2], 10) == reference_tokens(model, PROMPTS, 10)[1:2]


def test_each_sequence_stops_on_its_own_end_of_text(model, tokenizer):
    free = [c.token_ids for c in Engine(model, tokenizer).generate(PROMPTS, GREEDY, 10)]
    # Call a token row 0 produces (not first) the end-of-text id: row 0 stops, the others go on.
    k = next(i for i in range(1, 10) if free[0][i] not in free[0][:i])
    eot = free[0][k]

    class EotTokenizer:
        eot_id = eot

        def encode(self, s):
            return tokenizer.encode(s)

        def decode_bytes(self, ids):
            return tokenizer.decode_bytes(ids)

    got = Engine(model, EotTokenizer()).generate(PROMPTS, GREEDY, 10)
    assert got[0].finish_reason == "eot" and got[0].token_ids == free[0][:k]
    for c, f in zip(got[1:], free[1:]):
        cut = f.index(eot) if eot in f else len(f)
        assert c.token_ids == f[:cut]


def test_stop_strings_and_stop_token_ids(model, tokenizer):
    engine = Engine(model, tokenizer)
    (full,) = engine.generate([PROMPTS[0]], GREEDY, 20)
    text = tokenizer.decode(full.token_ids)
    stop = text[5:7]
    (cut,) = engine.generate([PROMPTS[0]], GREEDY, 20, stop=[stop])
    assert cut.finish_reason == "stop" and cut.text == text[: text.index(stop)]
    (by_id,) = engine.generate([PROMPTS[0]], GREEDY, 20, stop_token_ids=[full.token_ids[4]])
    assert by_id.finish_reason == "eot"
    assert by_id.token_ids == full.token_ids[: full.token_ids.index(full.token_ids[4])]


def test_seeded_sampling_is_reproducible_and_independent_of_the_batch(model, tokenizer):
    engine = Engine(model, tokenizer)
    cfg = SamplingConfig(temperature=1.0, top_k=50, top_p=0.9, min_p=0.01)
    a = engine.generate(PROMPTS, cfg, 12, seed=3)
    b = engine.generate(PROMPTS, cfg, 12, seed=3)
    assert [c.token_ids for c in a] == [c.token_ids for c in b]
    # row 2 is seeded 3 + 2 in the batch; alone with seed 5 it draws the same tokens
    (alone,) = engine.generate([PROMPTS[2]], cfg, 12, seed=5)
    assert alone.token_ids == a[2].token_ids


def test_penalties_match_the_reference_under_greedy(model, tokenizer):
    cfg = SamplingConfig(temperature=0.0, repetition_penalty=1.5, frequency_penalty=0.5)
    got = Engine(model, tokenizer).generate(PROMPTS, cfg, 10)
    assert [c.token_ids for c in got] == reference_tokens(model, PROMPTS, 10, cfg)


def test_requests_join_and_leave_between_steps(model, tokenizer):
    """Continuous batching: a request admitted mid-way decodes exactly as it would alone."""
    alone = [Engine(model, tokenizer).generate([p], GREEDY, 8)[0].token_ids for p in PROMPTS]
    batch = DecodeBatch(model, tokenizer, slots=2, max_len=40)
    first = batch.add(Request(tuple(PROMPTS[0]), GREEDY, 8))[0]
    results, pending = {}, [PROMPTS[1], PROMPTS[2]]
    ids = {first: 0}
    for _ in range(3):
        for e in batch.step():
            assert e.completion is None
    ids[batch.add(Request(tuple(pending.pop(0)), GREEDY, 8))[0]] = 1
    while batch.num_active:
        for e in batch.step():
            if e.completion is not None:
                results[ids[e.request_id]] = e.completion.token_ids
                if pending:  # a finished slot is reused at once
                    ids[batch.add(Request(tuple(pending.pop(0)), GREEDY, 8))[0]] = 2
    assert [results[i] for i in range(3)] == alone


def test_cancel_frees_the_slot(model, tokenizer):
    batch = DecodeBatch(model, tokenizer, slots=1, max_len=32)
    (rid,) = batch.add(Request((1, 2, 3), GREEDY, 20))
    batch.step()
    done = batch.cancel(rid)
    assert done is not None and done.finish_reason == "cancelled" and len(done.token_ids) == 1
    assert batch.free_slots == 1 and batch.cancel(rid) is None
    with pytest.raises(ValueError, match="free slots"):
        batch.add([Request((1,), GREEDY, 2), Request((2,), GREEDY, 2)])


def test_beyond_context_is_an_error_by_default(model, tokenizer):
    ctx = model.cfg.context_length
    with pytest.raises(ContextOverflowError, match="context"):
        Engine(model, tokenizer).generate([[1] * (ctx - 4)], GREEDY, 5)
    # exactly filling the context is fine
    (c,) = Engine(model, tokenizer).generate([[1] * (ctx - 4)], GREEDY, 4)
    assert len(c.token_ids) == 4


def slide_reference(model, prompt: list[int], n: int) -> list[int]:
    """Greedy tokens under the slide policy, written the naive way: the cache holds the tokens
    since the last slide; when it is full it restarts from the most recent SLIDE_KEEP share of the
    sequence (a prompt longer than the context starts there too). Each token is the argmax of a
    full forward pass over exactly the tokens the cache holds plus the newest one."""
    ctx = model.cfg.context_length
    keep = int(ctx * SLIDE_KEEP)
    seq = list(prompt[-keep:]) if len(prompt) > ctx else list(prompt)
    cached, out = len(seq) - 1, []
    for _ in range(n):
        if cached >= ctx:
            cached = keep - 1
        with torch.no_grad():
            logits = model(torch.tensor([seq[-(cached + 1) :]]))[0, -1]
        out.append(int(logits.argmax()))
        seq.append(out[-1])
        cached += 1
    return out


def test_sliding_window_goes_past_the_context(model, tokenizer, one_thread):
    ctx = model.cfg.context_length
    prompt = list(range(1, 21))
    n = ctx + 16  # the 64-token cache is full, and slides, before tokens 46 and 63
    (c,) = Engine(model, tokenizer).generate([prompt], GREEDY, n, overflow="slide")
    assert len(c.token_ids) == n and c.finish_reason == "length"
    # until the window first slides, the tokens are the reference's
    ref = reference_tokens(model, [prompt], 12)[0]
    assert c.token_ids[: len(ref)] == ref
    # after it slides (twice here), every token is computed from the most recent tokens
    assert c.token_ids == slide_reference(model, prompt, n)
    # a prompt longer than the context keeps its most recent tokens
    long_prompt = [(7 * i) % 251 + 1 for i in range(2 * ctx)]
    (long,) = Engine(model, tokenizer).generate([long_prompt], GREEDY, 3, overflow="slide")
    assert long.token_ids == slide_reference(model, long_prompt, 3)
    assert long.token_ids == reference_tokens(model, [long_prompt[-int(ctx * SLIDE_KEEP) :]], 3)[0]


def test_invalid_requests(model, tokenizer):
    with pytest.raises(ValueError, match="max_new_tokens"):
        Request((1,), GREEDY, 0)
    with pytest.raises(ValueError, match="at least one"):
        Request((), GREEDY, 3)
    with pytest.raises(ValueError, match="vocabulary"):
        Engine(model, tokenizer).generate([[999]], GREEDY, 3)
    with pytest.raises(ValueError, match="overflow"):
        DecodeBatch(model, tokenizer, 1, overflow="wrap")
    with pytest.raises(TypeError):
        Engine(model, tokenizer).generate("a string", GREEDY, 3)


def test_cuda_graph_mode_falls_back_to_eager_off_cuda(model, tokenizer):
    with pytest.warns(UserWarning, match="CUDA"):
        engine = Engine(model, tokenizer, step_mode="cuda_graph")
        got = engine.generate(PROMPTS, GREEDY, 6)
    assert engine._batch is not None and engine._batch.step_mode == "eager"
    assert [c.token_ids for c in got] == reference_tokens(model, PROMPTS, 6)


def test_decode_step_traces_as_one_graph(model, tokenizer):
    """What the GPU path compiles has no graph breaks (checked with the cheap eager backend)."""
    from scratchllm.generation.decode_step import decode_logits

    batch = DecodeBatch(model, tokenizer, slots=2, max_len=16)
    batch.add([Request((1, 2, 3), GREEDY, 4), Request((4,), GREEDY, 4)])
    batch.cache.view_len = batch.cache.max_len
    eager = decode_logits(model, batch.cache, batch.tokens).clone()
    compiled = torch.compile(decode_logits, backend="eager", fullgraph=True, dynamic=False)
    with torch.no_grad():
        torch.testing.assert_close(compiled(model, batch.cache, batch.tokens), eager)


def test_complete_keeps_its_signature(model, tokenizer, one_thread):
    from scratchllm.generate import complete

    prompt = tokenizer.encode("ab")
    text = complete(model, tokenizer, "ab", 5, GREEDY, seed=1)
    assert text == tokenizer.decode(reference_tokens(model, [prompt], 5)[0])
    # sliding by default: longer than the context still works, and gives the slide policy's text
    long = complete(model, tokenizer, "ab", model.cfg.context_length + 5, GREEDY)
    assert long == tokenizer.decode(slide_reference(model, prompt, model.cfg.context_length + 5))
    # a seed makes sampling reproducible: the engine's row 0 with the same seed
    cfg = SamplingConfig(temperature=1.0)
    sampled = complete(model, tokenizer, "ab", 12, cfg, seed=4)
    assert sampled == complete(model, tokenizer, "ab", 12, cfg, seed=4)
    assert sampled == Engine(model, tokenizer).generate(["ab"], cfg, 12, seed=4)[0].text


def test_int8_linear_layers_decode_close_to_float32(model, tokenizer):
    from torch.ao.nn.quantized import dynamic as qdynamic

    from scratchllm.generation.quantize import quantize_int8

    q = quantize_int8(model)
    assert model.lm_head.weight.dtype == torch.float32  # the original is untouched
    linears = {n: m for n, m in model.named_modules() if isinstance(m, torch.nn.Linear)}
    swapped = {n: m for n, m in q.named_modules() if isinstance(m, qdynamic.Linear)}
    assert swapped.keys() == linears.keys()  # every linear layer, the output head included
    for name, layer in swapped.items():
        w = layer.weight()
        assert w.dtype == torch.qint8 and w.q_per_channel_axis() == 0, name
        # symmetric per-output-channel: scale = max |w| / 127, so rounding is off by <= scale / 2
        scale = linears[name].weight.abs().amax(dim=1) / 127
        torch.testing.assert_close(w.q_per_channel_scales().float(), scale, rtol=1e-6, atol=0)
        err = (w.dequantize() - linears[name].weight).abs()
        assert (err <= scale[:, None] / 2 + 1e-7).all(), name
    x = torch.tensor([PROMPTS[0]])
    with torch.no_grad():
        p, p_q = model(x).log_softmax(-1), q(x).log_softmax(-1)
    kl = torch.nn.functional.kl_div(p_q, p, log_target=True, reduction="batchmean")
    assert 0 < kl < 0.2  # these test models have large (init_std 0.3) logits
    # Dynamic int8 quantizes activations with one scale per call, so a one-token decode step
    # rounds differently from a full forward pass (and from a batch with other rows): cached is
    # not bitwise uncached here. What must hold: each token the cached engine picks is the best,
    # or within rounding noise of the best, of a full int8 forward pass over the same sequence.
    # (A random token is ~3.5 nats below the best in these models; the noise is < 0.4 nats.)
    for prompt, c in zip(PROMPTS, Engine(q, tokenizer).generate(PROMPTS, GREEDY, 12)):
        with torch.no_grad():
            logp = q(torch.tensor([prompt + c.token_ids]))[0, len(prompt) - 1 : -1].log_softmax(-1)
        gap = logp.max(-1).values - logp[torch.arange(12), c.token_ids]
        assert len(c.token_ids) == 12 and float(gap.max()) < 1.0, gap
        assert int((gap == 0).sum()) >= 6, gap  # mostly the argmax itself


def test_column_major_linears_keep_values_and_decode_like_the_reference(model, tokenizer, tmp_path):
    import copy

    from scratchllm.generation.layout import column_major_linears
    from scratchllm.train.checkpoint import load_run, save_run

    before = copy.deepcopy(model.state_dict())
    converted = column_major_linears(copy.deepcopy(model))
    after = converted.state_dict()
    assert before.keys() == after.keys()
    for name, tensor in before.items():
        assert torch.equal(tensor, after[name]), name  # same shapes and values ...
    weights = [m.weight for m in converted.modules() if isinstance(m, torch.nn.Linear)]
    assert all(w.stride() == (1, w.shape[0]) for w in weights)  # ... stored transposed
    idx = torch.tensor([PROMPTS[0]])
    torch.testing.assert_close(converted(idx), model(idx), rtol=1e-5, atol=1e-5)
    got = Engine(converted, tokenizer).generate(PROMPTS, GREEDY, 12)
    assert [c.token_ids for c in got] == reference_tokens(converted, PROMPTS, 12)
    save_run(tmp_path / "run", converted, converted.cfg, tokenizer)  # saving makes it contiguous
    reloaded = load_run(tmp_path / "run").model.state_dict()
    assert all(torch.equal(reloaded[k], v) for k, v in before.items() if k in reloaded)


def test_slot_cache_writes_one_column_per_slot_in_place(model):
    """Each layer's cache is a tensor of its own, written one column per slot: a compiled step
    then updates it in place. (Written through views of one [n_layer, ...] tensor, the compiled
    graph rebuilt and copied back the whole cache every step; docs/benchmarks.md.)"""
    from torch._functorch.aot_autograd import aot_module_simplified

    from scratchllm.generation.cache import SlotKVCache
    from scratchllm.generation.decode_step import decode_logits

    cfg = model.cfg
    cache = SlotKVCache(cfg, 3, 16)
    assert all(t._base is None for t in cache.k + cache.v)  # not views of a shared tensor
    cache.lengths.copy_(torch.tensor([0, 5, 9]))
    before = [t.clone() for t in cache.k]
    new = torch.randn(3, cfg.kv_heads, 1, cfg.head_dim)
    cache.update(1, new, new)
    changed = (cache.k[1] != before[1]).any(dim=(1, 3)).nonzero().tolist()  # [slot, column]
    assert changed == [[0, 0], [1, 5], [2, 9]]
    torch.testing.assert_close(cache.k[1][[0, 1, 2], :, [0, 5, 9]], new[:, :, 0])
    assert all(torch.equal(cache.k[i], before[i]) for i in (0, 2) if i < cfg.n_layer)

    # The traced step hands back each layer's cache as it was given (no [n_layer, ...] tensor).
    shapes = []

    def backend(gm, inputs):
        def fw(graph, _):
            out = next(n for n in graph.graph.nodes if n.op == "output")
            shapes.extend(tuple(a.meta["val"].shape) for a in out.args[0] if "val" in a.meta)
            return graph.forward

        return aot_module_simplified(gm, inputs, fw_compiler=fw)

    tokens = torch.zeros(3, dtype=torch.long)
    cache.view_len = cache.max_len
    with torch.no_grad():
        torch.compile(decode_logits, backend=backend, dynamic=False)(model, cache, tokens)
    layer_shape = tuple(cache.k[0].shape)
    assert shapes.count(layer_shape) == 2 * cfg.n_layer  # every layer's k and v, nothing bigger
    assert not any(len(s) == 5 for s in shapes)
