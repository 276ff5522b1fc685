"""`sample_next_token` and `SamplingConfig`: every filter and penalty, seeds, invalid settings."""

from __future__ import annotations

import pytest
import torch
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from scratchllm.generation import GREEDY, SamplingConfig, TokenHistory, sample_next_token
from scratchllm.generation.sampling import apply_penalties, filter_logits


@pytest.mark.parametrize(
    "kwargs",
    [
        {"temperature": -0.1},
        {"temperature": float("nan")},
        {"top_k": 0},
        {"top_p": 0.0},
        {"top_p": 1.5},
        {"min_p": -0.1},
        {"min_p": 1.1},
        {"repetition_penalty": 0.0},
        {"frequency_penalty": 3.0},
        {"presence_penalty": -2.5},
        {"temperature": float("inf")},
        {"top_p": float("nan")},
        {"top_p": float("inf")},
        {"min_p": float("nan")},
        {"repetition_penalty": float("inf")},
        {"repetition_penalty": float("nan")},
        {"frequency_penalty": float("inf")},
        {"presence_penalty": float("nan")},
        {"logit_bias": ((3, 101.0),)},
        {"logit_bias": ((-1, 1.0),)},
        {"logit_bias": ((1, float("nan")),)},
        {"logit_bias": ((1,),)},
    ],
)
def test_invalid_settings_raise_value_error_naming_the_field(kwargs):
    (name,) = kwargs
    with pytest.raises(ValueError, match=name):
        SamplingConfig(**kwargs)


def test_greedy_is_argmax():
    logits = torch.randn(4, 50)
    assert torch.equal(sample_next_token(logits, GREEDY), logits.argmax(-1))


def test_logit_bias_adds_to_the_named_tokens():
    logits = torch.zeros(2, 10)
    logits[:, 4] = 5.0
    forced = SamplingConfig(temperature=0.0, logit_bias=((7, 100.0),))
    assert sample_next_token(logits, forced).tolist() == [7, 7]
    banned = SamplingConfig(temperature=1.0, logit_bias=((4, -100.0),))
    draws = _draws(logits[:1], banned)
    assert 4 not in draws and len(draws) > 5
    with pytest.raises(ValueError, match="outside the vocabulary of 10"):
        sample_next_token(logits, SamplingConfig(logit_bias=((12, 1.0),)))


def test_logit_bias_is_applied_by_the_batched_engine(model, tokenizer):
    from scratchllm.generation import Engine

    engine = Engine(model, tokenizer)
    forced = SamplingConfig(temperature=0.0, logit_bias=((ord("q"), 100.0),))
    plain, biased = (
        engine.generate(["ab", "cd"], GREEDY, 4),
        engine.generate(["ab", "cd"], forced, 4),
    )
    assert [c.token_ids for c in biased] == [[ord("q")] * 4] * 2
    assert [c.token_ids for c in plain] != [c.token_ids for c in biased]


def _draws(logits, sampling, n=300, seed=0):
    g = torch.Generator().manual_seed(seed)
    return {int(sample_next_token(logits, sampling, g)[0]) for _ in range(n)}


def test_top_k_keeps_only_the_k_most_likely():
    logits = torch.tensor([[5.0, 4.0, 3.0, 0.0, -1.0]])
    assert _draws(logits, SamplingConfig(temperature=5.0, top_k=2)) == {0, 1}


def test_top_p_keeps_the_smallest_set_reaching_p():
    probs = torch.tensor([[0.5, 0.3, 0.15, 0.05]])
    # 0.5 < 0.7, 0.5 + 0.3 >= 0.7: the first two tokens make the nucleus.
    assert _draws(probs.log(), SamplingConfig(top_p=0.7)) == {0, 1}
    # top_p=1 keeps everything (the 0.05 token is drawn within 300 tries).
    assert _draws(probs.log(), SamplingConfig(top_p=1.0), n=600) == {0, 1, 2, 3}


def test_min_p_drops_tokens_below_a_fraction_of_the_best():
    probs = torch.tensor([[0.5, 0.3, 0.15, 0.05]])
    # threshold 0.4 * 0.5 = 0.2: tokens 2 and 3 are dropped.
    assert _draws(probs.log(), SamplingConfig(min_p=0.4)) == {0, 1}


def test_low_temperature_approaches_greedy_and_high_flattens():
    logits = torch.tensor([[2.0, 1.0, 0.0]])
    assert _draws(logits, SamplingConfig(temperature=0.01)) == {0}
    assert _draws(logits, SamplingConfig(temperature=100.0)) == {0, 1, 2}


def test_same_seed_same_draws_and_per_row_generators_ignore_neighbours():
    logits = torch.randn(3, 100)
    cfg = SamplingConfig(temperature=1.0)
    a = [sample_next_token(logits, cfg, torch.Generator().manual_seed(7)) for _ in range(2)]
    assert torch.equal(a[0], a[1])
    gens = [torch.Generator().manual_seed(s) for s in (1, 2, 3)]
    batched = sample_next_token(logits, cfg, gens)
    alone = sample_next_token(logits[1:2], cfg, [torch.Generator().manual_seed(2)])
    assert batched[1] == alone[0]
    with pytest.raises(ValueError, match="generators"):
        sample_next_token(logits, cfg, gens[:2])


def test_repetition_penalty_divides_positive_and_multiplies_negative_logits():
    logits = torch.tensor([[2.0, -1.0, 1.9]])
    history = TokenHistory(1, 3)
    history.add_prompt(0, [0, 1])
    greedy_rep = SamplingConfig(temperature=0.0, repetition_penalty=2.0)
    # token 0: 2.0 -> 1.0, token 1: -1 -> -2, token 2 unseen: 1.9 wins
    assert int(sample_next_token(logits, greedy_rep, history=history)[0]) == 2
    with pytest.raises(ValueError, match="TokenHistory"):
        sample_next_token(logits, greedy_rep)


def test_frequency_and_presence_penalties_count_output_tokens_only():
    logits = torch.tensor([[3.0, 2.5, 0.0]])
    history = TokenHistory(1, 3)
    history.add_prompt(0, [1])  # the prompt does not count for these two penalties
    freq = SamplingConfig(temperature=0.0, frequency_penalty=0.4)
    assert int(sample_next_token(logits, freq, history=history)[0]) == 0
    history.add_output(torch.tensor([0]))
    history.add_output(torch.tensor([0]))  # token 0 twice: 3.0 - 0.8 = 2.2 < 2.5
    assert int(sample_next_token(logits, freq, history=history)[0]) == 1
    presence = SamplingConfig(temperature=0.0, presence_penalty=0.4)  # 3.0 - 0.4 > 2.5
    assert int(sample_next_token(logits, presence, history=history)[0]) == 0


def test_logits_must_be_two_dimensional():
    with pytest.raises(ValueError, match="batch, vocab"):
        sample_next_token(torch.randn(10), GREEDY)


def test_logprobs_are_the_models_log_softmax_at_each_output_token(model, tokenizer):
    from scratchllm.generation import Engine

    engine = Engine(model, tokenizer)
    (done,) = engine.generate(["abc"], GREEDY, 5, logprobs=3)
    assert len(done.logprobs) == len(done.token_ids) == 5
    ids = list(engine.encode("abc"))
    for token, entry in zip(done.token_ids, done.logprobs):
        with torch.no_grad():
            logp = model(torch.tensor([ids]))[0, -1].float().log_softmax(-1)
        assert entry.token_id == token
        assert abs(entry.logprob - logp[token].item()) < 1e-4
        top_v, top_i = logp.topk(3)
        assert [i for i, _ in entry.top] == top_i.tolist()
        assert entry.top[0][0] == token  # greedy: the chosen token is the most likely
        ids.append(token)
    (plain,) = engine.generate(["abc"], GREEDY, 5)
    assert plain.logprobs is None and plain.token_ids == done.token_ids


@settings(max_examples=200, deadline=None)
@given(
    seed=st.integers(0, 2**16),
    scale=st.sampled_from([0.5, 2.0, 8.0]),
    temperature=st.floats(0.3, 3.0),
    top_k=st.none() | st.integers(1, 40),
    top_p=st.none() | st.floats(0.05, 1.0),
    min_p=st.none() | st.floats(0.0, 0.9),
)
def test_filters_keep_the_tokens_transformers_keeps(seed, scale, temperature, top_k, top_p, min_p):
    """Temperature, top-k, top-p and min-p (in that order, as transformers' generate applies
    them) leave the same tokens as transformers' own logits warpers."""
    logits_process = pytest.importorskip("transformers.generation.logits_process")
    logits = torch.randn(3, 32, generator=torch.Generator().manual_seed(seed)) * scale
    cfg = SamplingConfig(temperature=temperature, top_k=top_k, top_p=top_p, min_p=min_p)
    warpers = [logits_process.TemperatureLogitsWarper(temperature)]
    if top_k is not None:
        warpers.append(logits_process.TopKLogitsWarper(top_k))
    if top_p is not None:
        warpers.append(logits_process.TopPLogitsWarper(top_p))
    if min_p is not None:
        warpers.append(logits_process.MinPLogitsWarper(min_p))
    theirs = logits.clone()
    for warper in warpers:
        if isinstance(warper, logits_process.TopPLogitsWarper):  # skip rounding ties at top_p
            probs = theirs.softmax(-1).sort(-1, descending=True).values
            assume(((probs.cumsum(-1) - probs - top_p).abs() > 1e-5).all())
        theirs = warper(None, theirs)
    ours = filter_logits(logits, cfg)
    assert torch.equal(ours.isinf(), theirs.isinf())
    torch.testing.assert_close(ours.softmax(-1), theirs.softmax(-1), rtol=1e-5, atol=1e-7)


@settings(max_examples=100, deadline=None)
@given(
    seed=st.integers(0, 2**16),
    penalty=st.floats(0.5, 3.0),
    prompt=st.lists(st.integers(0, 31), min_size=1, max_size=8),
    output=st.lists(st.integers(0, 31), max_size=8),
)
def test_repetition_penalty_equals_transformers(seed, penalty, prompt, output):
    """CTRL's penalty on every id seen so far, prompt and output alike, as transformers does."""
    logits_process = pytest.importorskip("transformers.generation.logits_process")
    logits = torch.randn(1, 32, generator=torch.Generator().manual_seed(seed)) * 3
    history = TokenHistory(1, 32)
    history.add_prompt(0, prompt)
    for token in output:
        history.add_output(torch.tensor([token]))
    cfg = SamplingConfig(repetition_penalty=penalty)
    ours = apply_penalties(logits, cfg, history)
    seen = torch.tensor([prompt + output])
    theirs = logits_process.RepetitionPenaltyLogitsProcessor(penalty)(seen, logits.clone())
    torch.testing.assert_close(ours, theirs, rtol=0, atol=0)
