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
