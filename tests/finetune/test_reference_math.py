"""The fine-tuning losses against independent references written here from the definitions.

Each reference scores one example at a time, unpadded, with plain loops over positions, so a
batching, padding, shifting or masking slip in the library shows up as a mismatch.
"""

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from scratchllm.finetune.classify import TextClassifier, predict_proba
from scratchllm.finetune.classify_data import ClassifyDataset
from scratchllm.finetune.classify_run import ClassificationLoss
from scratchllm.finetune.instruct import IGNORE_INDEX, Example, ExampleDataset, collate
from scratchllm.finetune.instruct_data import SkipReport
from scratchllm.finetune.lora import LoRALinear, apply_lora, lora_layers
from scratchllm.finetune.preference import DPOObjective, PairDataset, PreferencePair, encode_pairs
from scratchllm.finetune.templates import get_template
from scratchllm.model import GPTModel, ModelConfig, get_preset
from scratchllm.tokenizer import BPETokenizer
from scratchllm.train.loop import next_token_loss

F32 = {"atol": 1e-5, "rtol": 1e-5}  # float32 sums of a few dozen log-probabilities


@pytest.fixture(scope="module")
def tok() -> BPETokenizer:
    text = "Below is an instruction ### Instruction: ### Response: ### Input: red blue green "
    return BPETokenizer.train(text * 5, 300)


def _gpt(vocab_size: int, seed: int) -> GPTModel:
    torch.manual_seed(seed)
    cfg = ModelConfig(vocab_size=vocab_size, context_length=192, n_embd=32, n_layer=2, n_head=4)
    return GPTModel(cfg).eval()


def _response_logp(model: GPTModel, prompt: list[int], full: list[int]) -> float:
    """log p(response | prompt): the sum of log p(full[t] | full[:t]) for t from len(prompt)."""
    assert full[: len(prompt)] == prompt
    with torch.no_grad():
        logits = model(torch.tensor([full]))[0].double()  # [T, V], one unpadded row
    total = 0.0
    for t in range(len(prompt), len(full)):
        total += float(torch.log_softmax(logits[t - 1], dim=-1)[full[t]])
    return total


# ---------------------------------------------------------------------------------------- DPO


def test_dpo_objective_matches_a_per_pair_reference(tok):
    template = get_template("alpaca")
    pairs = [
        PreferencePair([{"role": "user", "content": "red"}], "blue green red", "red"),
        PreferencePair(
            [{"role": "user", "content": "Reverse", "input": "green blue"}], "blue", "green blue"
        ),
        PreferencePair([{"role": "user", "content": "blue blue"}], "green", "red red red blue"),
    ]
    encoded = encode_pairs(pairs, template, tok, 191, SkipReport())
    assert len(encoded) == len(pairs)
    policy, reference = _gpt(tok.vocab_size, 0), _gpt(tok.vocab_size, 1)
    beta = 0.3
    batch = PairDataset(encoded, pad_id=tok.eot_id, max_length=191).get_batch(range(len(pairs)))
    assert (batch[0] == tok.eot_id).any()  # rows of different lengths: padding is present
    with torch.no_grad():
        loss, n = DPOObjective(reference, beta)(policy, batch)

    expected = []
    for pair in pairs:
        prompt = template.encode_prompt(tok, pair.prompt)
        logits = {}
        for side in ("chosen", "rejected"):
            conv = pair.prompt + [{"role": "assistant", "content": getattr(pair, side)}]
            full = template.encode(tok, conv)[0]
            assert full[-1] == tok.eot_id  # the end token is part of the scored response
            logits[side] = [_response_logp(m, prompt, full) for m in (policy, reference)]
        margin = (logits["chosen"][0] - logits["chosen"][1]) - (
            logits["rejected"][0] - logits["rejected"][1]
        )
        expected.append(-math.log(1 / (1 + math.exp(-beta * margin))))
    assert n == len(pairs)
    assert loss.item() == pytest.approx(sum(expected) / len(expected), rel=1e-5, abs=1e-6)


def test_dpo_loss_is_ln2_when_policy_is_reference(tok):
    template = get_template("alpaca")
    pair = PreferencePair([{"role": "user", "content": "red"}], "blue", "green green")
    encoded = encode_pairs([pair, pair], template, tok, 191, SkipReport())
    model = _gpt(tok.vocab_size, 0)
    batch = PairDataset(encoded, tok.eot_id, 191).get_batch([0, 1])
    with torch.no_grad():
        loss, _ = DPOObjective(_gpt(tok.vocab_size, 0), beta=0.1)(model, batch)
    assert loss.item() == pytest.approx(math.log(2), abs=1e-6)


# ---------------------------------------------------------------------------- instruction SFT


def test_sft_loss_is_the_mean_over_response_tokens_only(tok):
    template = get_template("alpaca")
    convs = [
        [{"role": "user", "content": "red"}, {"role": "assistant", "content": "blue green"}],
        [
            {"role": "user", "content": "Reverse", "input": "green blue red"},
            {"role": "assistant", "content": "red"},
        ],
    ]
    examples = [Example(*template.encode(tok, c)) for c in convs]
    model = _gpt(tok.vocab_size, 0)
    batch = ExampleDataset(examples, tok.eot_id, 191).get_batch([0, 1])
    loss, count = next_token_loss(model, batch)

    terms = []
    for conv in convs:
        prompt = template.encode_prompt(tok, conv[:-1])
        full = template.encode(tok, conv)[0]
        with torch.no_grad():
            logits = model(torch.tensor([full]))[0].double()
        for t in range(len(prompt), len(full)):  # the response, its final <|endoftext|> included
            terms.append(-float(torch.log_softmax(logits[t - 1], dim=-1)[full[t]]))
    assert count == len(terms)
    assert loss.item() == pytest.approx(sum(terms) / len(terms), rel=1e-5)


def test_collate_keeps_the_first_end_token_and_ignores_padding(tok):
    template = get_template("alpaca")
    short = [{"role": "user", "content": "red"}, {"role": "assistant", "content": "blue"}]
    long = [{"role": "user", "content": "red " * 6}, {"role": "assistant", "content": "blue " * 4}]
    a, b = (Example(*template.encode(tok, c)) for c in (short, long))
    inputs, targets = collate([a, b], pad_id=tok.eot_id)
    n = len(a.ids) - 1
    prompt = len(template.encode_prompt(tok, short[:1]))
    row = targets[0].tolist()
    assert row[: prompt - 1] == [IGNORE_INDEX] * (prompt - 1)  # prompt masked
    assert row[prompt - 1 : n] == a.ids[prompt:]  # the response, then <|endoftext|> once
    assert row[n - 1] == tok.eot_id
    assert row[n:] == [IGNORE_INDEX] * (inputs.shape[1] - n)  # padding (also <|endoftext|> ids)
    assert inputs[0, n:].eq(tok.eot_id).all()
    _, unmasked = collate([a, b], pad_id=tok.eot_id, mask_prompt=False)
    assert unmasked[0, :n].tolist() == a.ids[1:]
    assert unmasked[0, n:].eq(IGNORE_INDEX).all()


# --------------------------------------------------------------------------------------- LoRA


def test_lora_layer_is_base_plus_scaled_low_rank_update():
    torch.manual_seed(0)
    base = torch.nn.Linear(6, 4)
    layer = LoRALinear(base, r=3, alpha=12.0)
    torch.nn.init.normal_(layer.lora_B)
    x = torch.randn(5, 6)
    W, b = base.weight.detach(), base.bias.detach()
    A, B = layer.lora_A.detach(), layer.lora_B.detach()
    expected = x @ W.T + b + (12.0 / 3) * (x @ A.T @ B.T)
    torch.testing.assert_close(layer(x), expected, **F32)
    torch.testing.assert_close(layer.merged()(x), expected, **F32)


def test_lora_model_starts_as_the_base_and_trains_only_adapters():
    model = GPTModel(get_preset("tiny", dropout=0.0)).eval()
    idx = torch.randint(0, model.cfg.vocab_size, (2, 10))
    with torch.no_grad():
        before = model(idx)
    names = apply_lora(model, r=4, alpha=8)
    with torch.no_grad():
        assert torch.equal(model(idx), before)  # B = 0: step 0 is the base model exactly
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    wrapped = {f"{n}.lora_{m}" for n in names for m in "AB"}
    assert trainable == wrapped
    assert all(layer.scaling == 2.0 for _, layer in lora_layers(model))


# ----------------------------------------------------------------------------- classification


def test_classifier_reads_the_last_real_token_of_each_padded_row():
    torch.manual_seed(0)
    clf = TextClassifier(GPTModel(get_preset("tiny", dropout=0.0)), 3).eval()
    rows = [np.array(r, dtype=np.int64) for r in ([5, 9, 2], [7, 1, 1, 4, 3, 8], [6], [2, 2])]
    labels = [0, 2, 1, 1]
    data = ClassifyDataset(rows, labels, pad_id=0)
    with torch.no_grad():
        alone = torch.cat([clf(torch.from_numpy(r)[None]) for r in rows])  # [4, 3], no padding
    x, mask, y = data.get_batch(np.arange(4))
    assert (mask == 0).any()
    with torch.no_grad():
        torch.testing.assert_close(clf(x, attention_mask=mask), alone, **F32)
    np.testing.assert_allclose(
        predict_proba(clf, data, batch_size=3), torch.softmax(alone, -1).numpy(), atol=1e-5
    )
    # accuracy over padded batches: the tally equals the per-example count
    loss_fn = ClassificationLoss()
    with torch.no_grad():
        for idx in (np.arange(0, 3), np.arange(3, 4)):
            loss_fn(clf, data.get_batch(idx))
    right = sum(int(alone[i].argmax()) == labels[i] for i in range(4))
    mean_loss = F.cross_entropy(alone, torch.tensor(labels), reduction="sum").item() / 4
    loss, acc = loss_fn.means(False)
    assert acc == right / 4
    assert loss == pytest.approx(mean_loss, rel=1e-5)
