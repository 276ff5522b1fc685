"""A tiny saved run and a real server on a free loopback port (uvicorn in a thread)."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path

import httpx
import pytest
from serve_helpers import KEY, MODEL, make_run

from scratchllm.serve import ServeConfig, app_for_run
from scratchllm.serve.server import DrainingServer, uvicorn_config


@pytest.fixture(autouse=True)
def _one_thread(one_thread):  # tests/conftest.py
    """The tiny model decodes on one intra-op thread. With torch's default two on a loaded
    2-core machine, each decode step of the in-process server took ~0.25 s instead of ~6 ms
    (a 64-token reply: 15-20 s instead of 0.4 s), past the waits of these tests. The server's
    threads take the count in effect at their first torch call, which falls inside a test."""
    yield


@pytest.fixture(scope="session")
def run_dir(tmp_path_factory) -> Path:
    return make_run(tmp_path_factory.mktemp("serve") / MODEL)


@dataclass
class Server:
    url: str
    port: int
    app: object
    cfg: ServeConfig

    def client(self, **kw) -> httpx.Client:
        return httpx.Client(base_url=self.url, timeout=30, **kw)


def _start(run_dir: Path, cfg: ServeConfig) -> Iterator[Server]:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    cfg = replace(cfg, port=port)
    app = app_for_run(run_dir, cfg)
    server = DrainingServer(uvicorn_config(app, cfg))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        assert time.monotonic() < deadline and thread.is_alive(), "server did not start"
        time.sleep(0.02)
    try:
        yield Server(f"http://127.0.0.1:{port}", port, app, cfg)
    finally:
        server.should_exit = True
        thread.join(15)
        sock.close()


@pytest.fixture(scope="module")
def server(run_dir) -> Iterator[Server]:
    """An open server (no key) with small limits so the hostile tests hit them cheaply."""
    cfg = ServeConfig(
        model_name=MODEL,
        max_batch=8,
        max_queue=16,
        max_body_bytes=64 * 1024,
        max_prompt_chars=4000,
        max_messages=16,
        default_max_tokens=16,
    )
    yield from _start(run_dir, cfg)


@pytest.fixture(scope="module")
def keyed_server(run_dir) -> Iterator[Server]:
    yield from _start(run_dir, ServeConfig(model_name=MODEL, api_key=KEY, max_batch=4))


@pytest.fixture
def start_server(run_dir):
    """Start a server with a config of the test's own (stopped at the end of the test)."""
    gens = []

    def start(**kw) -> Server:
        gen = _start(run_dir, ServeConfig(model_name=MODEL, **kw))
        gens.append(gen)
        return next(gen)

    yield start
    for gen in gens:
        gen.close()
