"""Batching, disconnect cancellation, the bounded queue and the per-request deadline.

A slowed decode step (a sleep around the real one) stands in for a bigger model, so that what
happens between steps can be observed without timing assertions.
"""

from __future__ import annotations

import json
import socket
import threading
import time

import httpx
import pytest
from serve_helpers import MODEL, never_eot

STEP_DELAY = 0.02


def slow_down(server, delay: float = STEP_DELAY):
    sched = server.app.state.serve.scheduler
    real = sched.batch.step

    def step():
        time.sleep(delay)
        return real()

    sched.batch.step = step
    never_eot(sched)
    return sched


def wait_until(cond, timeout: float = 10.0) -> None:
    end = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < end, "condition not reached"
        time.sleep(0.01)


def test_concurrent_requests_share_decode_steps(start_server):
    s = start_server(max_batch=8)
    sched = slow_down(s, 0.005)
    # decoding pauses after the first text until all 8 requests are in: then, however slowly
    # the clients were started, they all decode together
    released = hold_after_first_text(sched)
    results: list[int] = []

    def one(i: int) -> None:
        body = {"model": MODEL, "prompt": f"p{i}", "max_tokens": 20, "temperature": 0}
        results.append(httpx.post(s.url + "/v1/completions", json=body, timeout=60).status_code)

    threads = [threading.Thread(target=one, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    wait_until(lambda: sched.load["active"] + sched.load["waiting"] == 8, timeout=30)
    released.set()
    for t in threads:
        t.join()
    assert results == [200] * 8
    assert sched.peak_batch == 8


def test_stream_disconnect_cancels(start_server):
    s = start_server(max_batch=2)
    delay = 0.1  # 120 steps: 12 s for the server to notice the client left (20 ms: 2.4 s)
    sched = slow_down(s, delay)
    body = {"model": MODEL, "prompt": "x", "max_tokens": 120, "stream": True}
    with httpx.Client(base_url=s.url, timeout=30) as c:
        with c.stream("POST", "/v1/completions", json=body) as r:
            next(r.iter_lines())
    wait_until(lambda: sched.cancelled == 1, timeout=30)
    steps = sched.steps
    assert steps < 120 and sched.load["active"] == 0
    time.sleep(5 * delay)
    assert sched.steps == steps  # nothing decodes for a client that is gone


def test_non_stream_disconnect_cancels(start_server):
    # The client leaves once its request is decoding: with a client timeout instead (0.3 s),
    # a slow server could still have had the request waiting for a slot, where cancelling it
    # is not counted in `cancelled`, or not even read yet.
    s = start_server(max_batch=2)
    sched = slow_down(s, 0.1)  # 120 steps: 12 s
    body = json.dumps({"model": MODEL, "prompt": "x", "max_tokens": 120}).encode()
    head = (
        "POST /v1/completions HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
    )
    with socket.create_connection(("127.0.0.1", s.port), timeout=30) as client:
        client.sendall(head.encode() + body)
        wait_until(lambda: sched.steps > 0, timeout=30)  # decoding, no response yet
    wait_until(lambda: sched.cancelled == 1, timeout=30)
    assert sched.steps < 120 and sched.load["active"] == 0


def hold_after_first_text(sched) -> threading.Event:
    """Decoding stops after the first step that produced text until the returned event is set
    (for at most 60 s): a request then holds its slot for as long as the test needs, however
    slowly the test itself runs, rather than for the ~2 s that 100 slowed steps last."""
    real, emitted, released = sched.batch.step, threading.Event(), threading.Event()

    def step():
        if emitted.is_set():
            released.wait(60)
        events = real()
        if any(ev.text for ev in events):
            emitted.set()
        return events

    sched.batch.step = step
    return released


def test_queue_full_gives_429_with_retry_after(start_server):
    s = start_server(max_batch=1, max_queue=0)
    sched = slow_down(s)
    released = hold_after_first_text(sched)
    body = {"model": MODEL, "prompt": "x", "max_tokens": 100, "stream": True}
    with httpx.Client(base_url=s.url, timeout=30) as c:
        with c.stream("POST", "/v1/completions", json=body) as r:
            # kept in a name: an iterator dropped at once closes the connection when collected,
            # and the server then cancels this request and frees the slot
            lines = r.iter_lines()
            next(lines)  # this request holds the only slot
            busy = c.post("/v1/completions", json={**body, "stream": False})
            released.set()
            assert busy.status_code == 429
            assert busy.headers["retry-after"] == "1"
            assert busy.json()["error"]["code"] == "queue_full"
    wait_until(lambda: sched.load["active"] == 0)
    ok = httpx.post(s.url + "/v1/completions", json={**body, "max_tokens": 2, "stream": False})
    assert ok.status_code == 200


def test_more_choices_than_slots_and_queue_is_a_400_not_a_429(start_server):
    """An idle server with 2 slots and 1 queue place could never admit 4 choices at once: it
    answered 429 'retry shortly', which the openai client retries in vain."""
    s = start_server(max_batch=2, max_queue=1)
    body = {"model": MODEL, "prompt": "x", "max_tokens": 2}
    with httpx.Client(base_url=s.url, timeout=30) as c:
        assert c.post("/v1/completions", json={**body, "n": 3}).status_code == 200
        for extra in ({"n": 4}, {"prompt": ["a", "b"], "n": 2}):
            r = c.post("/v1/completions", json={**body, **extra})
            assert r.status_code == 400 and r.json()["error"]["param"] == "n"
            assert "must be <= 3 (--max-batch + --max-queue), got 4" in r.json()["error"]["message"]


def test_a_request_whose_client_leaves_while_it_waits_for_a_slot_is_dropped(start_server):
    s = start_server(max_batch=1, max_queue=1)
    sched = slow_down(s)
    released = hold_after_first_text(sched)
    body = {"model": MODEL, "prompt": "x", "max_tokens": 100, "stream": True}
    waiting = json.dumps({**body, "stream": False}).encode()
    head = (
        "POST /v1/completions HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(waiting)}\r\n\r\n"
    )
    with httpx.Client(base_url=s.url, timeout=30) as c:
        with c.stream("POST", "/v1/completions", json=body) as r:
            lines = r.iter_lines()
            next(lines)  # this request holds the only slot
            with socket.create_connection(("127.0.0.1", s.port), timeout=30) as client:
                client.sendall(head.encode() + waiting)
                wait_until(lambda: sched.load["waiting"] == 1, timeout=30)
            # the second client left while waiting (the server has seen it go): when the queue
            # is next read it is dropped and counted, and never decodes
            wait_until(lambda: [j.ticket.cancelled for j in sched._waiting] == [True], timeout=30)
            released.set()
            wait_until(lambda: sched.cancelled == 1, timeout=30)
    wait_until(lambda: sched.load == {"active": 0, "waiting": 0, "slots": 1}, timeout=30)
    assert sched.peak_batch == 1


def test_deadline_cuts_a_long_request(start_server):
    s = start_server(max_batch=2, request_timeout=0.4)
    slow_down(s, 0.05)
    body = {"model": MODEL, "prompt": "x", "max_tokens": 120, "stop": None}
    r = httpx.post(s.url + "/v1/completions", json=body, timeout=30)
    assert r.status_code == 200
    choice = r.json()["choices"][0]
    assert choice["finish_reason"] in ("length", "stop")
    assert r.json()["usage"]["completion_tokens"] < 120


@pytest.mark.parametrize("stream", [False, True])
def test_a_choice_timed_out_in_the_queue_is_a_503_for_the_request(start_server, stream):
    # one slot, two choices: the second waits for the first, past the deadline
    s = start_server(max_batch=1, request_timeout=0.4)
    slow_down(s, 0.05)
    body = {"model": MODEL, "prompt": "x", "max_tokens": 40, "n": 2, "stream": stream}
    if not stream:
        r = httpx.post(s.url + "/v1/completions", json=body, timeout=30)
        assert r.status_code == 503 and r.headers["retry-after"] == "1"
        assert r.json()["error"]["code"] == "unavailable"
        return
    with httpx.stream("POST", s.url + "/v1/completions", json=body, timeout=30) as r:
        lines = [line for line in r.iter_lines() if line]
    assert lines[-1] == "data: [DONE]"
    errors = [json.loads(x[6:])["error"] for x in lines[:-1] if '"error"' in x]
    assert [e["code"] for e in errors] == ["unavailable"]


def test_health_reports_load(server):
    data = httpx.get(server.url + "/health").json()
    assert data["status"] == "ok" and data["slots"] == 8
    assert json.dumps(data)
