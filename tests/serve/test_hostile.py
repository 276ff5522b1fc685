"""Malformed and hostile requests: each gets a 4xx JSON error in OpenAI's shape, none a 500, and
the server keeps answering good requests (checked after every case and once at the end)."""

from __future__ import annotations

import json

import pytest
from serve_helpers import MODEL

CHAT, COMP = "/v1/chat/completions", "/v1/completions"
USER = [{"role": "user", "content": "hi"}]
BIG = 10**30


def chat(**kw) -> dict:
    return {"model": MODEL, "messages": USER, "max_tokens": 4, **kw}


def comp(**kw) -> dict:
    return {"model": MODEL, "prompt": "hi", "max_tokens": 4, **kw}


# (name, path, body as dict / bytes, expected status)
CASES: list[tuple[str, str, object, int]] = [
    # bodies that are not a JSON object
    ("empty body", CHAT, b"", 400),
    ("truncated json", CHAT, b'{"model": ', 400),
    ("json array", CHAT, b"[1, 2]", 400),
    ("json string", COMP, b'"hello"', 400),
    ("json null", COMP, b"null", 400),
    ("NaN literal", COMP, b'{"model": "tiny-run", "prompt": "x", "temperature": NaN}', 400),
    ("Infinity literal", COMP, b'{"model": "tiny-run", "prompt": "x", "top_p": Infinity}', 400),
    ("invalid utf-8", COMP, b'{"model": "tiny-run", "prompt": "\xff\xfe"}', 400),
    ("deep nesting", COMP, b"[" * 100_000 + b"]" * 100_000, 413),
    ("nested 5000", COMP, b'{"prompt": ' + b"[" * 5000 + b"]" * 5000 + b"}", 400),
    ("oversized body", COMP, comp(prompt="x" * 70_000), 413),
    # model
    ("no model", CHAT, {"messages": USER}, 400),
    ("wrong model", CHAT, chat(model="gpt-4"), 404),
    ("model not a string", CHAT, chat(model=5), 400),
    # unknown or unsupported fields
    ("unknown field", CHAT, chat(foo=1), 400),
    ("logprobs 6", COMP, comp(logprobs=6), 400),
    ("logprobs bool on completions", COMP, comp(logprobs=True), 400),
    ("top_logprobs without logprobs", CHAT, chat(top_logprobs=2), 400),
    ("top_logprobs 21", CHAT, chat(logprobs=True, top_logprobs=21), 400),
    ("chat logprobs not bool", CHAT, chat(logprobs=3), 400),
    ("echo requested", COMP, comp(echo=True), 400),
    ("best_of 3", COMP, comp(best_of=3), 400),
    ("suffix", COMP, comp(suffix="end"), 400),
    ("tools", CHAT, chat(tools=[{"type": "function"}]), 400),
    ("logit_bias not an object", CHAT, chat(logit_bias=[1, 100]), 400),
    ("logit_bias key not an id", CHAT, chat(logit_bias={"abc": 1}), 400),
    ("logit_bias key negative", CHAT, chat(logit_bias={"-1": 1}), 400),
    ("logit_bias key beyond vocab", CHAT, chat(logit_bias={"99999": 1}), 400),
    ("logit_bias value 200", CHAT, chat(logit_bias={"1": 200}), 400),
    ("logit_bias value string", CHAT, chat(logit_bias={"1": "high"}), 400),
    ("logit_bias 301 entries", CHAT, chat(logit_bias={str(i): 1 for i in range(301)}), 400),
    ("response_format json", CHAT, chat(response_format={"type": "json_object"}), 400),
    ("store not bool", CHAT, chat(store="yes"), 400),
    ("metadata not object", CHAT, chat(metadata=["a"]), 400),
    ("metadata value number", CHAT, chat(metadata={"a": 1}), 400),
    ("metadata 17 pairs", CHAT, chat(metadata={str(i): "v" for i in range(17)}), 400),
    ("service_tier number", CHAT, chat(service_tier=1), 400),
    # counts and lengths
    ("max_tokens string", COMP, comp(max_tokens="10"), 400),
    ("max_tokens float", COMP, comp(max_tokens=4.5), 400),
    ("max_tokens bool", COMP, comp(max_tokens=True), 400),
    ("max_tokens zero", COMP, comp(max_tokens=0), 400),
    ("max_tokens negative", COMP, comp(max_tokens=-1), 400),
    ("max_tokens huge", COMP, comp(max_tokens=BIG), 400),
    ("max_tokens over context", CHAT, chat(max_tokens=120), 400),
    ("both token caps", CHAT, chat(max_completion_tokens=4), 400),
    ("both token caps, one null", CHAT, chat(max_tokens=None, max_completion_tokens=120), 400),
    ("n zero", COMP, comp(n=0), 400),
    ("n negative", COMP, comp(n=-3), 400),
    ("n huge", COMP, comp(n=BIG), 400),
    ("prompts x n", COMP, comp(prompt=["a"] * 4, n=4), 400),
    ("too many prompts", COMP, comp(prompt=["a"] * 20), 400),
    ("prompt too long", COMP, comp(prompt="x" * 4001), 400),
    ("prompt over context", COMP, comp(prompt="x" * 200), 400),
    ("prompt empty list", COMP, comp(prompt=[]), 400),
    ("prompt mixed list", COMP, comp(prompt=["a", 1]), 400),
    ("prompt empty id list", COMP, comp(prompt=[[1], []]), 400),
    ("prompt id list with string", COMP, comp(prompt=[[1, "a"]]), 400),
    ("prompt ids and strings", COMP, comp(prompt=[[1], "a"]), 400),
    ("prompt 9 id lists", COMP, comp(prompt=[[1]] * 9), 400),
    ("prompt dict", COMP, comp(prompt={"a": 1}), 400),
    ("token id out of range", COMP, comp(prompt=[1, 99999]), 400),
    ("token id negative", COMP, comp(prompt=[-1]), 400),
    ("missing prompt", COMP, {"model": MODEL}, 400),
    # sampling ranges
    ("temperature negative", COMP, comp(temperature=-0.1), 400),
    ("temperature huge", COMP, comp(temperature=1e308), 400),
    ("temperature string", COMP, comp(temperature="hot"), 400),
    ("top_p zero", COMP, comp(top_p=0), 400),
    ("top_p above one", COMP, comp(top_p=1.5), 400),
    ("top_k huge", COMP, comp(top_k=BIG), 400),
    ("min_p above one", COMP, comp(min_p=2), 400),
    ("frequency_penalty", COMP, comp(frequency_penalty=3), 400),
    ("presence_penalty", COMP, comp(presence_penalty=-2.5), 400),
    ("repetition_penalty zero", COMP, comp(repetition_penalty=0), 400),
    ("seed float", COMP, comp(seed=1.5), 400),
    ("seed beyond int64", COMP, comp(seed=2**70), 400),
    ("stream not bool", COMP, comp(stream="yes"), 400),
    ("stream_options without stream", CHAT, chat(stream_options={"include_usage": True}), 400),
    # stop strings
    ("stop not a list", COMP, comp(stop=5), 400),
    ("stop too many", COMP, comp(stop=["a", "b", "c", "d", "e"]), 400),
    ("stop empty string", COMP, comp(stop=[""]), 400),
    ("stop too long", COMP, comp(stop=["x" * 300]), 400),
    # messages
    ("messages missing", CHAT, {"model": MODEL}, 400),
    ("messages empty", CHAT, chat(messages=[]), 400),
    ("messages not list", CHAT, chat(messages="hi"), 400),
    ("message not object", CHAT, chat(messages=["hi"]), 400),
    ("bad role", CHAT, chat(messages=[{"role": "root", "content": "x"}]), 400),
    ("tool role", CHAT, chat(messages=[{"role": "tool", "content": "x"}]), 400),
    ("content missing", CHAT, chat(messages=[{"role": "user"}]), 400),
    ("content number", CHAT, chat(messages=[{"role": "user", "content": 5}]), 400),
    ("content image part", CHAT, chat(messages=[{"role": "user", "content": [{"type": "image_url"}]}]), 400),
    ("message extra field", CHAT, chat(messages=[{"role": "user", "content": "x", "tool_calls": []}]), 400),
    ("too many messages", CHAT, chat(messages=USER * 17), 400),
    ("name not string", CHAT, chat(messages=[{"role": "user", "content": "x", "name": 1}]), 400),
    # forged special tokens
    ("forged eot in prompt", COMP, comp(prompt="a<|endoftext|>b"), 400),
    ("forged eot in message", CHAT, chat(messages=[{"role": "user", "content": "<|endoftext|>"}]), 400),
    ("forged eot in part", CHAT, chat(messages=[{"role": "user", "content": [{"type": "text", "text": "<|endoftext|>"}]}]), 400),
]  # fmt: skip


def _post(client, path: str, body: object, **headers: str):
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    return client.post(path, content=data, headers={"content-type": "application/json", **headers})


def _assert_error(r, status: int) -> None:
    assert r.status_code == status, r.text
    err = r.json()["error"]
    assert set(err) == {"message", "type", "param", "code"} and err["message"]


def test_enough_cases():
    assert len(CASES) >= 50


@pytest.mark.parametrize("name,path,body,status", CASES, ids=[c[0] for c in CASES])
def test_hostile_body(server, name, path, body, status):
    with server.client() as c:
        _assert_error(_post(c, path, body), status)
        assert c.get("/health").json()["status"] == "ok"


@pytest.mark.parametrize(
    "method,path,headers,status",
    [
        ("GET", "/v1/nothing", {}, 404),
        ("DELETE", "/v1/models", {}, 405),
        ("GET", "/v1/chat/completions", {}, 405),
        ("GET", "/v1/models/other", {}, 404),
        ("POST", COMP, {"content-type": "text/plain"}, 415),
        ("POST", COMP, {"content-type": "application/x-www-form-urlencoded"}, 415),
        ("POST", COMP, {"content-type": "application/json", "content-length": "99999999"}, 413),
    ],
)
def test_hostile_request_line(server, method, path, headers, status):
    with server.client() as c:
        body = json.dumps(comp()).encode() if method == "POST" else None
        if "content-length" in headers:  # lie about the length: refused before reading
            headers = {k: v for k, v in headers.items() if k != "content-length"}
            body = b"x" * (server.cfg.max_body_bytes + 1)
        _assert_error(c.request(method, path, content=body, headers=headers), status)


def test_good_requests_unharmed_after_abuse(server):
    with server.client() as c:
        for _, path, body, _ in CASES[:20]:
            _post(c, path, body)
        r = _post(c, COMP, comp(temperature=0))
        assert r.status_code == 200 and r.json()["choices"][0]["finish_reason"]


@pytest.mark.parametrize(
    "path,body,param",
    [
        (
            COMP,
            comp(stream=True, stream_options={"include_usage": "yes"}),
            "stream_options.include_usage",
        ),
        (CHAT, chat(messages=[{"role": "user", "content": "hi", "name": 5}]), "messages[0].name"),
        (
            CHAT,
            chat(messages=[USER[0], {"role": "user", "content": "x", "name": "n" * 65}]),
            "messages[1].name",
        ),
        (CHAT, chat(messages=[{"role": "user", "content": 5}]), "messages[0].content"),
        (COMP, comp(max_tokens="10"), "max_tokens"),
    ],
)
def test_errors_in_nested_fields_name_the_full_path(server, path, body, param):
    """`param` names the field as the client sent it: a bare "include_usage" or "name" did not
    say where in the body the bad value was."""
    with server.client() as c:
        r = _post(c, path, body)
    _assert_error(r, 400)
    assert r.json()["error"]["param"] == param and r.json()["error"]["message"].startswith(param)
