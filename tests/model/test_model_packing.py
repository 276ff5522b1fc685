"""Packed documents with a block-causal mask behave exactly like separate sequences."""

import pytest
import torch

from scratchllm.data.batching import pack_documents
from scratchllm.model import GPTModel, get_preset


@pytest.mark.parametrize("preset", ["tiny", "tiny-llama"])
@pytest.mark.parametrize("impl", ["math", "sdpa"])
def test_packed_row_equals_documents_alone(preset, impl):
    torch.manual_seed(0)
    model = GPTModel(get_preset(preset, attn_impl=impl)).eval()
    docs = [torch.randint(1, 200, (n,)).tolist() for n in (7, 12, 5)]
    packed = pack_documents(docs, max_length=24, pad_id=0)
    with torch.no_grad():
        logits = model(
            packed.input_ids,
            attention_mask=packed.block_causal_mask(),
            position_ids=packed.position_ids,
        )
        start = 0
        for doc in docs:
            alone = model(torch.tensor([doc]))[0]  # [n, V]
            torch.testing.assert_close(
                logits[0, start : start + len(doc)], alone, atol=1e-5, rtol=0
            )
            start += len(doc)


def test_pair_mask_with_wrong_shape_is_rejected():
    model = GPTModel(get_preset("tiny"))
    with pytest.raises(ValueError, match="attention_mask shape"):
        model(
            torch.zeros(2, 5, dtype=torch.long),
            attention_mask=torch.ones(2, 1, 5, 4, dtype=torch.bool),
        )


def test_mask_shape_errors_speak_of_a_cache_only_when_there_is_one():
    from scratchllm.model import EncoderModel, KVCache

    for model in (GPTModel(get_preset("tiny")), EncoderModel(get_preset("tiny-bert"))):
        with pytest.raises(ValueError, match=r"\[batch, T\] = \(2, 5\)") as info:
            model(torch.zeros(2, 5, dtype=torch.long), attention_mask=torch.ones(2, 4))
        assert "cached" not in str(info.value)
    model = GPTModel(get_preset("tiny"))
    cache = KVCache.for_config(model.cfg, batch_size=2, max_len=16)
    model(torch.zeros(2, 3, dtype=torch.long), kv_cache=cache)
    with pytest.raises(ValueError, match=r"\[batch, cached \+ new\] = \(2, 5\)"):
        model(torch.zeros(2, 2, dtype=torch.long), kv_cache=cache, attention_mask=torch.ones(2, 2))
