"""`scratchllm serve` as a real process: SIGTERM drains the in-flight stream and exits 0."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys

import httpx
from serve_helpers import MODEL, make_run

# The child decodes a tiny model: one intra-op thread, as the in-process servers (conftest.py).
ONE_THREAD = {**os.environ, "OMP_NUM_THREADS": "1"}


@contextlib.contextmanager
def serve_process(run, port: int, *extra: str):
    """`scratchllm serve` as a child process (output on its stdout pipe), killed if still alive."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "scratchllm", "serve", "--run", str(run), "--port", str(port)]
        + list(extra),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=ONE_THREAD,
    )
    try:
        yield proc
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def bound_port(proc) -> int:
    """The port of a child started with ``--port 0``, from the line it prints once listening.

    The system picks a free port in the child itself: finding one here, closing it and handing
    its number over could lose it to another process in between."""
    line = proc.stdout.readline()
    if not line.startswith(f"serving '{MODEL}' at http://127.0.0.1:"):
        proc.kill()  # so that the rest of its output can be read to the end and shown
        raise AssertionError(line + proc.stdout.read())
    return int(line.split("127.0.0.1:")[1].split("/")[0])


def test_help():
    out = subprocess.run(
        [sys.executable, "-m", "scratchllm", "serve", "--help"], capture_output=True, text=True
    )
    assert out.returncode == 0 and "--api-key" in out.stdout and "127.0.0.1" in out.stdout


def test_sigterm_drains_and_exits_zero(tmp_path):
    run = make_run(tmp_path / MODEL, context_length=1024)
    # the drain may take as long as the reply needs: on a loaded machine, past the default 30 s
    with serve_process(run, 0, "--shutdown-timeout", "300") as proc:
        url = f"http://127.0.0.1:{bound_port(proc)}"
        assert httpx.get(url + "/health", timeout=30).status_code == 200
        body = {"model": MODEL, "prompt": "x", "max_tokens": 1000, "stream": True, "temperature": 0}
        lines = []
        with httpx.stream("POST", url + "/v1/completions", json=body, timeout=60) as r:
            for line in r.iter_lines():
                if line and not lines:
                    os.kill(proc.pid, signal.SIGTERM)  # mid-stream
                lines.append(line)
        assert [x for x in lines if x][-1] == "data: [DONE]"  # the stream was finished
        assert proc.wait(timeout=60) == 0


def test_port_zero_prints_the_bound_port(tmp_path):
    run = make_run(tmp_path / MODEL)
    with serve_process(run, 0) as proc:
        port = bound_port(proc)  # printed once listening
        assert port != 0
        assert httpx.get(f"http://127.0.0.1:{port}/health", timeout=30).status_code == 200
        proc.terminate()
        assert proc.wait(timeout=60) == 0


def test_port_in_use_is_one_line_error(tmp_path):
    run = make_run(tmp_path / MODEL)
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        out = subprocess.run(
            [sys.executable, "-m", "scratchllm", "serve", "--run", str(run), "--port", str(port)],
            capture_output=True,
            text=True,
            timeout=120,
        )
    assert out.returncode == 2
    assert out.stdout == ""  # never claimed to be serving
    assert out.stderr.strip() == (
        f"scratchllm serve: error: cannot listen on 127.0.0.1:{port}: address already in use"
    )
