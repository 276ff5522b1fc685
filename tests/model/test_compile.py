"""torch.compile (inductor on CPU) gives the same logits as eager (float32, atol 1e-5)."""

import shutil

import pytest
import torch

from scratchllm.model import GPTModel, get_preset

TOL = 1e-5  # float32, absolute


@pytest.mark.slow
@pytest.mark.skipif(
    shutil.which("cc") is None and shutil.which("gcc") is None, reason="no C compiler"
)
@pytest.mark.parametrize("preset", ["tiny-llama"])  # RoPE, GQA, RMSNorm, SwiGLU: the most parts
def test_compiled_equals_eager(preset):
    cfg = get_preset(preset, n_layer=1, n_embd=16, n_head=2, n_kv_head=1)
    model = GPTModel(cfg).eval()
    idx = torch.randint(0, cfg.vocab_size, (2, 8))
    compiled = torch.compile(model)
    with torch.no_grad():
        torch.testing.assert_close(compiled(idx), model(idx), atol=TOL, rtol=0)


@pytest.mark.parametrize("preset", ["tiny", "tiny-llama", "tiny-bert"])
@pytest.mark.parametrize("masked", [False, True])
def test_second_length_compiles_to_one_graph_and_matches_eager(preset, masked):
    # The second length makes T symbolic (automatic dynamic shapes). Nothing in the model may
    # then turn into a symbolic value that a kernel refuses: fullgraph=True fails on any break.
    from scratchllm.model import EncoderModel

    torch._dynamo.reset()
    cfg = get_preset(preset, dropout=0.0)
    model = (EncoderModel if preset.endswith("bert") else GPTModel)(cfg).eval()
    compiled = torch.compile(model, backend="aot_eager", fullgraph=True)
    for length in (8, 16, 12):
        idx = torch.randint(0, cfg.vocab_size, (2, length))
        kw = {}
        if masked:
            mask = torch.ones(2, length, dtype=torch.long)
            mask[1, : length // 2] = 0  # left padding in row 1
            kw = {"attention_mask": mask}
        with torch.no_grad():
            torch.testing.assert_close(compiled(idx, **kw), model(idx, **kw), atol=TOL, rtol=0)
    torch._dynamo.reset()
