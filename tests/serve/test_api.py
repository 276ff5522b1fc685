"""The official `openai` client, unchanged, against the real server: shapes, streaming, n, seeds."""

from __future__ import annotations

import json

import openai
import pytest
from serve_helpers import KEY, MODEL


@pytest.fixture(scope="module")
def client(server) -> openai.OpenAI:
    return openai.OpenAI(base_url=server.url + "/v1", api_key="unused", max_retries=0)


def test_models(client):
    models = client.models.list()
    assert [m.id for m in models.data] == [MODEL]
    assert client.models.retrieve(MODEL).id == MODEL


def test_completion(client):
    r = client.completions.create(model=MODEL, prompt="Hello", max_tokens=8, temperature=0)
    assert r.object == "text_completion" and r.model == MODEL
    (choice,) = r.choices
    assert choice.finish_reason in ("stop", "length")
    assert r.usage.prompt_tokens == 5  # byte tokenizer: one id per byte
    assert 0 < r.usage.completion_tokens <= 8 or choice.finish_reason == "stop"
    again = client.completions.create(model=MODEL, prompt="Hello", max_tokens=8, temperature=0)
    assert again.choices[0].text == choice.text  # greedy is deterministic


def test_completion_stream_matches_non_stream(client):
    kw = dict(model=MODEL, prompt="The cat", max_tokens=12, temperature=0)
    full = client.completions.create(**kw).choices[0]
    chunks = list(client.completions.create(stream=True, **kw))
    assert "".join(c.choices[0].text for c in chunks) == full.text
    assert chunks[-1].choices[0].finish_reason == full.finish_reason


def test_several_prompts_and_n(client):
    r = client.completions.create(
        model=MODEL, prompt=["a", "b"], n=2, max_tokens=4, temperature=1.0, seed=3
    )
    assert sorted(c.index for c in r.choices) == [0, 1, 2, 3]
    same = client.completions.create(
        model=MODEL, prompt=["a", "b"], n=2, max_tokens=4, temperature=1.0, seed=3
    )
    assert [c.text for c in r.choices] == [c.text for c in same.choices]  # seeded per choice


def test_token_id_prompt(client):
    r = client.completions.create(model=MODEL, prompt=[72, 105], max_tokens=3, temperature=0)
    text = client.completions.create(model=MODEL, prompt="Hi", max_tokens=3, temperature=0)
    assert r.choices[0].text == text.choices[0].text


def test_token_id_prompts_longer_than_the_choice_limit_and_batched(client):
    text = "The quick brown fox jumps"  # 25 byte tokens: more than max_choices (8)
    ids = list(text.encode())
    kw = dict(model=MODEL, max_tokens=3, temperature=0)
    by_text = client.completions.create(prompt=text, **kw).choices[0].text
    assert client.completions.create(prompt=ids, **kw).choices[0].text == by_text
    hi = client.completions.create(prompt="Hi", **kw).choices[0].text
    both = client.completions.create(prompt=[ids, [72, 105]], **kw)
    assert [c.text for c in sorted(both.choices, key=lambda c: c.index)] == [by_text, hi]


def test_chat(client):
    r = client.chat.completions.create(
        model=MODEL,
        messages=[{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"}],
        max_tokens=10,
        temperature=0,
    )
    assert r.object == "chat.completion"
    msg = r.choices[0].message
    assert msg.role == "assistant" and isinstance(msg.content, str)
    assert "\nUser:" not in msg.content  # the plain template's stop string


def test_chat_stream(client):
    kw = dict(model=MODEL, messages=[{"role": "user", "content": "Hey"}], temperature=0)
    full = client.chat.completions.create(max_tokens=12, **kw).choices[0]
    stream = client.chat.completions.create(
        max_tokens=12, stream=True, stream_options={"include_usage": True}, **kw
    )
    chunks = list(stream)
    assert chunks[0].choices[0].delta.role == "assistant"
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == full.message.content
    assert chunks[-1].usage is not None and chunks[-1].choices == []
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == full.finish_reason


def test_bookkeeping_fields_and_null_caps_are_accepted(server):
    # what SDKs send: OpenAI's bookkeeping fields, and unset fields serialised as null
    body = {
        "model": MODEL,
        "messages": [{"role": "user", "content": "Hi"}],
        "max_tokens": None,
        "max_completion_tokens": 3,
        "store": False,
        "metadata": {"session": "abc"},
        "service_tier": "auto",
        "temperature": 0,
    }
    with server.client() as c:
        r = c.post("/v1/chat/completions", json=body)
    assert r.status_code == 200, r.text
    assert r.json()["usage"]["completion_tokens"] <= 3


def test_logit_bias_forces_and_bans_tokens(client):
    kw = dict(model=MODEL, prompt="Hello", max_tokens=6, temperature=0)
    forced = client.completions.create(logit_bias={"65": 100}, **kw)  # byte 65 is "A"
    assert forced.choices[0].text == "A" * 6
    plain = client.completions.create(**kw).choices[0].text
    first = str(plain.encode()[0])
    banned = client.completions.create(logit_bias={first: -100}, **kw).choices[0].text
    assert banned.encode()[0] != plain.encode()[0]


def test_completion_logprobs(client):
    kw = dict(model=MODEL, prompt="Hello", max_tokens=6, temperature=0)
    r = client.completions.create(logprobs=2, **kw).choices[0]
    lp = r.logprobs
    assert "".join(lp.tokens) == r.text and len(lp.token_logprobs) == len(lp.tokens)
    assert all(v <= 0 for v in lp.token_logprobs)
    for token, value, top in zip(lp.tokens, lp.token_logprobs, lp.top_logprobs):
        assert len(top) == 2 and max(top, key=top.get) == token  # greedy: the most likely
        assert abs(top[token] - value) < 1e-6
    assert lp.text_offset == [sum(map(len, lp.tokens[:i])) for i in range(len(lp.tokens))]
    assert client.completions.create(**kw).choices[0].logprobs is None


def test_streamed_completion_logprobs_match_the_full_response(client):
    """text_offset continues across streamed chunks (each chunk restarted it at 0)."""
    kw = dict(model=MODEL, prompt=["Hello", "Hi"], n=2, max_tokens=6, temperature=1.0, seed=5)
    full = {c.index: c.logprobs for c in client.completions.create(logprobs=1, **kw).choices}
    streamed = {i: {"tokens": [], "text_offset": []} for i in full}
    for chunk in client.completions.create(logprobs=1, stream=True, **kw):
        for choice in chunk.choices:
            if choice.logprobs:
                streamed[choice.index]["tokens"] += choice.logprobs.tokens
                streamed[choice.index]["text_offset"] += choice.logprobs.text_offset
    for i, lp in full.items():
        assert streamed[i] == {"tokens": lp.tokens, "text_offset": lp.text_offset}
        assert lp.text_offset == [sum(map(len, lp.tokens[:k])) for k in range(len(lp.tokens))]


def test_chat_logprobs_streamed_and_not(client):
    kw = dict(
        model=MODEL,
        messages=[{"role": "user", "content": "Hey"}],
        max_tokens=8,
        temperature=0,
        logprobs=True,
        top_logprobs=3,
    )
    full = client.chat.completions.create(**kw).choices[0]
    content = full.logprobs.content
    assert len(content) > 0 and all(len(e.top_logprobs) == 3 for e in content)
    assert all(bytes(e.bytes).decode("utf-8", "replace") == e.token for e in content)
    assert "".join(e.token for e in content).strip() == full.message.content
    streamed = [
        e
        for chunk in client.chat.completions.create(stream=True, **kw)
        if chunk.choices and chunk.choices[0].logprobs
        for e in chunk.choices[0].logprobs.content
    ]
    assert [(e.token, e.logprob) for e in streamed] == [(e.token, e.logprob) for e in content]


def test_raw_sse_ends_with_done(server):
    body = {"model": MODEL, "prompt": "x", "max_tokens": 3, "stream": True}
    with server.client() as c, c.stream("POST", "/v1/completions", json=body) as r:
        assert r.status_code == 200
        assert r.headers["content-type"].startswith("text/event-stream")
        lines = [line for line in r.iter_lines() if line]
    assert lines[-1] == "data: [DONE]"
    for line in lines[:-1]:
        assert line.isascii()  # no raw U+2028 & co. that splitlines-based clients break on
        assert json.loads(line.removeprefix("data: "))["object"] == "text_completion"


def test_client_errors_are_typed(client):
    with pytest.raises(openai.BadRequestError) as exc:
        client.completions.create(model=MODEL, prompt="x", max_tokens=10_000)
    assert exc.value.code == "invalid_value"
    with pytest.raises(openai.NotFoundError):
        client.completions.create(model="gpt-4", prompt="x")


def test_key_with_client(keyed_server):
    good = openai.OpenAI(base_url=keyed_server.url + "/v1", api_key=KEY, max_retries=0)
    assert good.models.list().data[0].id == MODEL
    bad = openai.OpenAI(base_url=keyed_server.url + "/v1", api_key="wrong-key", max_retries=0)
    with pytest.raises(openai.AuthenticationError):
        bad.models.list()
