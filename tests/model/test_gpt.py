import pytest
import torch

from scratchllm.errors import ConfigError
from scratchllm.model import GPTModel, KVCache, get_preset

TOL = 1e-5  # float32, absolute


def test_gpt2_small_parameter_counts():
    with torch.device("meta"):  # shapes only: no memory, no init time
        released = GPTModel(get_preset("gpt2-small"))
        untied = GPTModel(get_preset("gpt2-small", tie_embeddings=False, qkv_bias=False))
    assert released.num_parameters() == 124_439_808
    assert released.lm_head.weight is released.embed.wte.weight  # tying shares the tensor
    assert untied.num_parameters() == 163_009_536
    # Non-embedding count (Kaplan et al.): leaves out token and position tables.
    assert released.num_parameters(non_embedding=True) == 124_439_808 - 50257 * 768 - 1024 * 768


@pytest.mark.parametrize("preset", ["tiny", "tiny-llama"])
def test_shapes_and_features(preset):
    cfg = get_preset(preset)
    model = GPTModel(cfg).eval()
    idx = torch.randint(0, cfg.vocab_size, (2, 7))
    logits = model(idx)
    assert logits.shape == (2, 7, cfg.vocab_size)
    hidden = model.features(idx)
    assert hidden.shape == (2, 7, cfg.n_embd)
    torch.testing.assert_close(model.lm_head(hidden), logits, atol=TOL, rtol=0)


def test_scaled_residual_init():
    cfg = get_preset("tiny", n_embd=256, n_head=4, n_layer=8)
    model = GPTModel(cfg)
    block = model.blocks[0]
    scaled = 0.02 / (2 * cfg.n_layer) ** 0.5
    assert abs(block.attn.out_proj.weight.std().item() - scaled) < 0.2 * scaled
    assert abs(block.mlp.down_proj.weight.std().item() - scaled) < 0.2 * scaled
    assert abs(block.attn.qkv.weight.std().item() - 0.02) < 0.002
    assert torch.all(block.attn.qkv.bias == 0) and torch.all(block.norm1.weight == 1)


def test_pytorch_default_init():
    # the book's GPTModel is plain torch.nn: N(0, 1) tables, Kaiming-uniform linears (|w| <= 1/sqrt(in))
    cfg = get_preset("tiny", n_embd=256, n_head=4, n_layer=8, init="pytorch", tie_embeddings=False)
    model = GPTModel(cfg)
    assert abs(model.embed.wte.weight.std().item() - 1.0) < 0.05
    assert abs(model.embed.wpe.weight.std().item() - 1.0) < 0.1
    for name in ("attn.qkv", "attn.out_proj", "mlp.down_proj"):
        linear = model.blocks[0].get_submodule(name)
        bound = 1 / linear.in_features**0.5
        assert linear.weight.abs().max() <= bound
        assert abs(linear.weight.std().item() - bound / 3**0.5) < 0.1 * bound  # uniform's std
    with pytest.raises(ConfigError, match="init='xavier' must be one of gpt2, pytorch"):
        get_preset("tiny", init="xavier")


@pytest.mark.parametrize("tie", [True, False])
def test_param_groups(tie):
    model = GPTModel(get_preset("tiny", tie_embeddings=tie))
    decay, no_decay = model.param_groups(0.1)
    assert decay["weight_decay"] == 0.1 and no_decay["weight_decay"] == 0.0
    ids = lambda group: {id(p) for p in group["params"]}  # noqa: E731
    assert ids(decay).isdisjoint(ids(no_decay))
    assert len(ids(decay) | ids(no_decay)) == len(list(model.parameters()))
    assert all(p.dim() == 2 for p in decay["params"])
    assert id(model.embed.wte.weight) in ids(no_decay)
    assert id(model.embed.wpe.weight) in ids(no_decay)
    assert id(model.blocks[0].attn.qkv.weight) in ids(decay)
    assert (id(model.lm_head.weight) in ids(decay)) == (not tie)


def test_bad_input_names_the_value():
    cfg = get_preset("tiny")
    model = GPTModel(cfg)
    with pytest.raises(ValueError, match="65"):
        model(torch.zeros(1, cfg.context_length + 1, dtype=torch.long))
    with pytest.raises(ValueError, match="256"):
        model(torch.tensor([[1, 256]]))
    with pytest.raises(ValueError, match="-1"):
        model(torch.tensor([[-1, 2]]))
    with pytest.raises(ValueError, match="dtype"):
        model(torch.zeros(1, 3))
    with pytest.raises(ValueError, match="attention_mask"):
        model(torch.zeros(2, 3, dtype=torch.long), attention_mask=torch.ones(2, 4))
    # An additive mask (0 = attend, -inf = masked, as some libraries use) would mean the opposite
    # of ours (1 = attend) if read as 0/1: refused, naming the value.
    bias = torch.zeros(2, 1, 3, 3).masked_fill(torch.ones(3, 3).triu(1).bool(), float("-inf"))
    with pytest.raises(ValueError, match="attention_mask holds -inf"):
        model(torch.zeros(2, 3, dtype=torch.long), attention_mask=bias)


@pytest.mark.parametrize(
    "preset, overrides",
    [
        ("tiny", {}),
        ("tiny", {"pos_emb": "sinusoidal"}),
        ("tiny-llama", {}),  # RoPE, GQA with 2 key/value heads
        ("tiny-llama", {"n_kv_head": 1}),  # multi-query
    ],
)
@pytest.mark.parametrize("impl", ["sdpa", "math"])
def test_kv_cache_matches_full_forward(preset, overrides, impl):
    cfg = get_preset(preset, attn_impl=impl, **overrides)
    model = GPTModel(cfg).eval()
    idx = torch.randint(0, cfg.vocab_size, (2, 12))
    with torch.no_grad():
        full = model(idx)
        cache = KVCache.for_config(cfg, batch_size=2, max_len=16)
        steps = [model(idx[:, :5], kv_cache=cache)]  # prefill 5
        steps.append(model(idx[:, 5:8], kv_cache=cache))  # 3 at once on top of a cache
        steps += [model(idx[:, t : t + 1], kv_cache=cache) for t in range(8, 12)]  # one by one
    assert cache.length == 12
    torch.testing.assert_close(torch.cat(steps, dim=1), full, atol=TOL, rtol=0)


@pytest.mark.parametrize("preset", ["tiny", "tiny-llama"])
def test_full_context_and_single_token_edges(preset):
    # T = context_length is accepted, with or without a cache filled to the last slot; T = 1
    # (no causal mask needed) gives the first row of the full pass; one more position is refused.
    cfg = get_preset(preset, context_length=16)
    model = GPTModel(cfg).eval()
    idx = torch.randint(0, cfg.vocab_size, (2, 16))
    with torch.no_grad():
        full = model(idx)
        torch.testing.assert_close(model(idx[:, :1]), full[:, :1], atol=TOL, rtol=0)
        cache = KVCache.for_config(cfg, batch_size=2)
        steps = [model(idx[:, :15], kv_cache=cache), model(idx[:, 15:], kv_cache=cache)]
    torch.testing.assert_close(torch.cat(steps, dim=1), full, atol=TOL, rtol=0)
    assert cache.length == cfg.context_length
    with pytest.raises(ValueError, match=r"17 \(cached 16 \+ new 1\) exceeds context_length 16"):
        model(idx[:, :1], kv_cache=cache)
    with pytest.raises(ValueError, match="^sequence length 17 exceeds context_length 16$"):
        model(torch.zeros(1, 17, dtype=torch.long))  # no cache: no cached count to report


def test_kv_cache_errors():
    cfg = get_preset("tiny")
    model = GPTModel(cfg).eval()
    cache = KVCache.for_config(cfg, batch_size=1, max_len=4)
    with pytest.raises(ValueError, match="max_len 4"):
        model(torch.zeros(1, 5, dtype=torch.long), kv_cache=cache)
    with pytest.raises(ValueError, match="batch size 2"):
        model(torch.zeros(2, 1, dtype=torch.long), kv_cache=cache)
    model(torch.zeros(1, 3, dtype=torch.long), kv_cache=cache)
    cache.crop(1)
    assert cache.length == 1
    with pytest.raises(ValueError, match="max_len"):
        KVCache.for_config(cfg, batch_size=1, max_len=cfg.context_length + 1)
    half = GPTModel(cfg).to(torch.bfloat16).eval()  # a float32 cache (the default) for it:
    with pytest.raises(ValueError, match="dtype=torch.bfloat16"):
        half(torch.zeros(1, 3, dtype=torch.long), kv_cache=KVCache.for_config(cfg, batch_size=1))


def test_padding_mask_leaves_real_tokens_unchanged():
    cfg = get_preset("tiny")
    model = GPTModel(cfg).eval()
    idx = torch.randint(0, cfg.vocab_size, (1, 5))
    padded = torch.cat([idx, torch.zeros(1, 3, dtype=torch.long)], dim=1)  # right padding
    mask = torch.tensor([[1, 1, 1, 1, 1, 0, 0, 0]])
    with torch.no_grad():
        ref = model(idx)
        out = model(padded, attention_mask=mask)
    torch.testing.assert_close(out[:, :5], ref, atol=TOL, rtol=0)


def test_dropout_active_only_in_training():
    model = GPTModel(get_preset("tiny", dropout=0.5))
    idx = torch.randint(0, 256, (2, 8))
    model.train()
    assert not torch.equal(model(idx), model(idx))
    model.eval()
    assert torch.equal(model(idx), model(idx))


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
@pytest.mark.parametrize("impl", ["sdpa", "math"])
@pytest.mark.parametrize("preset", ["tiny", "tiny-llama"])
def test_half_precision_on_cpu_follows_float32(preset, impl, dtype):
    # A left-padded batch (padding queries see no real key) in bf16 / fp16: finite everywhere,
    # and the real positions within half-precision rounding of float32 (logits of order 0.5).
    torch.manual_seed(0)
    model = GPTModel(get_preset(preset, attn_impl=impl)).eval()
    idx = torch.randint(0, 256, (2, 8))
    mask = torch.tensor([[1] * 8, [0] * 3 + [1] * 5])
    with torch.no_grad():
        ref = model(idx, attention_mask=mask)
        out = model.to(dtype)(idx, attention_mask=mask)
    assert out.dtype == dtype and torch.isfinite(out).all()
    torch.testing.assert_close(out[0].float(), ref[0], atol=1e-2, rtol=0)
    torch.testing.assert_close(out[1, 3:].float(), ref[1, 3:], atol=1e-2, rtol=0)


@pytest.mark.parametrize("preset", ["tiny", "tiny-llama", "tiny-sinusoidal"])
@pytest.mark.parametrize("impl", ["sdpa", "math"])
def test_left_padded_batch_with_cache_matches_unpadded(preset, impl):
    """Batched decoding: left padding + position_ids + mask == each row alone."""
    if preset == "tiny-sinusoidal":
        cfg = get_preset("tiny", pos_emb="sinusoidal", attn_impl=impl)
    else:
        cfg = get_preset(preset, attn_impl=impl)
    model = GPTModel(cfg).eval()
    short, long = torch.randint(0, 256, (1, 3)), torch.randint(0, 256, (1, 5))
    nxt = torch.randint(0, 256, (2, 2))  # two more tokens per row, decoded one by one
    idx = torch.cat([torch.cat([torch.zeros(1, 2, dtype=torch.long), short], 1), long])
    mask = torch.tensor([[0, 0, 1, 1, 1], [1, 1, 1, 1, 1]])
    positions = (mask.cumsum(1) - 1).clamp(min=0)  # [B, T]: count from the first real token
    with torch.no_grad():
        cache = KVCache.for_config(cfg, batch_size=2, max_len=8)
        first = model(idx, attention_mask=mask, position_ids=positions, kv_cache=cache)
        steps = []
        for t in range(2):
            mask = torch.cat([mask, torch.ones(2, 1, dtype=torch.long)], 1)
            pos = positions[:, -1:] + 1 + t
            steps.append(
                model(nxt[:, t : t + 1], attention_mask=mask, position_ids=pos, kv_cache=cache)
            )
        alone_short = model(torch.cat([short, nxt[:1]], 1))
        alone_long = model(torch.cat([long, nxt[1:]], 1))
    batched = torch.cat([first] + steps, 1)  # [2, 7, V]
    torch.testing.assert_close(batched[0, 2:], alone_short[0], atol=TOL, rtol=0)
    torch.testing.assert_close(batched[1], alone_long[0], atol=TOL, rtol=0)


def test_bad_position_ids():
    model = GPTModel(get_preset("tiny"))
    idx = torch.zeros(1, 3, dtype=torch.long)
    with pytest.raises(ValueError, match="position 64"):
        model(idx, position_ids=torch.tensor([0, 1, 64]))
    with pytest.raises(ValueError, match="position_ids shape"):
        model(idx, position_ids=torch.tensor([0, 1]))


@pytest.mark.parametrize("vocab", [300, 320])  # 300 pads to 320; 320 is already a multiple of 64
def test_padded_head_gives_the_same_logits_and_gradients(vocab):
    """GPTModel.head pads the head's matmul to a multiple of 64 rows (on by default on CUDA while
    training): forced on here on CPU, logits, loss and every gradient match the plain head."""
    cfg = get_preset("tiny", vocab_size=vocab)
    torch.manual_seed(0)
    plain, padded = GPTModel(cfg), GPTModel(cfg)
    padded.load_state_dict(plain.state_dict())
    plain.pad_head, padded.pad_head = False, True
    x = torch.randint(0, vocab, (3, 17))
    y = torch.randint(0, vocab, (3, 17))
    losses = []
    for model in (plain, padded):
        logits = model(x)
        assert logits.shape == (3, 17, vocab)
        loss = torch.nn.functional.cross_entropy(logits.flatten(0, 1), y.flatten())
        loss.backward()
        losses.append(loss)
    torch.testing.assert_close(padded(x), plain(x), rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(losses[1], losses[0], rtol=1e-6, atol=1e-6)
    for (name, p), q in zip(plain.named_parameters(), padded.parameters()):
        torch.testing.assert_close(q.grad, p.grad, rtol=1e-5, atol=1e-7, msg=name)
    assert tuple(padded.state_dict()["lm_head.weight"].shape) == (vocab, cfg.n_embd)  # unpadded
    auto = GPTModel(cfg)  # pad_head None: off on CPU, so the logits are a plain tensor
    assert auto(x).is_contiguous()


def test_zero_dropout_adds_no_copies_to_the_compiled_training_graph():
    # A p = 0 nn.Dropout in training mode traces to a clone of its input; the model uses an
    # Identity instead, so the compiled forward has no copy ops at all.
    from functorch.compile import make_boxed_func
    from torch._dynamo.backends.common import aot_autograd

    targets: list[str] = []

    def record(gm, _example_inputs):
        targets.extend(str(n.target) for n in gm.graph.nodes if n.op == "call_function")
        return make_boxed_func(gm.forward)

    torch.manual_seed(0)
    model = GPTModel(get_preset("tiny", dropout=0.0)).train()
    compiled = torch.compile(model, backend=aot_autograd(fw_compiler=record), fullgraph=True)
    logits = compiled(torch.randint(0, model.cfg.vocab_size, (2, 16)))
    logits.float().mean().backward()
    torch._dynamo.reset()
    assert targets, "the recording backend saw no graph"
    assert not [t for t in targets if "clone" in t or "copy" in t]
