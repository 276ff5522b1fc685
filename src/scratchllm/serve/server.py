"""Running the app under uvicorn with a graceful SIGTERM: stop accepting, drain, exit 0.

uvicorn already stops listening on SIGTERM and waits for open requests (up to
``timeout_graceful_shutdown``); this subclass additionally marks the app as draining (new
requests on kept-alive connections get 503) and does not re-raise the signal afterwards, so a
clean drain ends with exit status 0 rather than death by signal.
"""

from __future__ import annotations

import signal
import socket
from collections.abc import Callable
from pathlib import Path
from types import FrameType

import uvicorn
from starlette.applications import Starlette

from scratchllm.errors import ConfigError
from scratchllm.serve.config import ServeConfig


def display_address(host: str, port: int) -> str:
    """``host:port`` as a URL authority (IPv6 literals in brackets)."""
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def listen_socket(cfg: ServeConfig) -> socket.socket:
    """A socket bound to ``cfg.host:cfg.port`` and listening; a ConfigError if that fails.

    Binding here, rather than inside uvicorn, turns "address already in use" or an address this
    machine does not have into one clear error before anything is printed, and lets ``--port 0``
    report the port the system actually chose (``sock.getsockname()[1]``).
    """
    where = display_address(cfg.host, cfg.port)
    try:
        infos = socket.getaddrinfo(
            cfg.host, cfg.port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
        )
    except socket.gaierror as exc:
        raise ConfigError(f"cannot listen on {where}: {_reason(exc)}") from None
    family, kind, proto, _, addr = infos[0]
    sock = socket.socket(family, kind, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as uvicorn does
        sock.bind(addr)
        sock.listen(2048)
    except OSError as exc:
        sock.close()
        raise ConfigError(f"cannot listen on {where}: {_reason(exc)}") from None
    sock.set_inheritable(True)
    return sock


def _reason(exc: OSError) -> str:
    text = exc.strerror or str(exc)
    return text[:1].lower() + text[1:]


class DrainingServer(uvicorn.Server):
    def __init__(self, config: uvicorn.Config, on_ready: Callable[[], None] | None = None):
        super().__init__(config)
        self.on_ready = on_ready

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets=sockets)
        if self.started and self.on_ready is not None:
            self.on_ready()  # listening and the app started: now say where

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        state = getattr(getattr(self.config.app, "state", None), "serve", None)
        if state is not None:
            state.draining = True
        if sig == signal.SIGINT and self.should_exit:
            self.force_exit = True  # a second Ctrl-C: stop now
        self.should_exit = True


def uvicorn_config(app: Starlette, cfg: ServeConfig) -> uvicorn.Config:
    return uvicorn.Config(
        app,
        host=cfg.host,
        port=cfg.port,
        log_level="warning",
        access_log=False,
        proxy_headers=False,  # never trust X-Forwarded-*: nothing sits in front by default
        server_header=False,
        timeout_graceful_shutdown=int(max(1, cfg.shutdown_timeout)),
        lifespan="on",
    )


def run_server(
    app: Starlette,
    cfg: ServeConfig,
    sock: socket.socket | None = None,
    on_ready: Callable[[], None] | None = None,
) -> None:
    """Serve until SIGTERM/SIGINT (blocking).

    ``sock`` is an already bound listening socket (default: :func:`listen_socket` on
    ``cfg.host:cfg.port``, so a port in use is a ConfigError); ``on_ready`` is called once the
    server accepts connections.
    """
    own = sock is None
    if sock is None:
        sock = listen_socket(cfg)
    try:
        DrainingServer(uvicorn_config(app, cfg), on_ready).run(sockets=[sock])
    finally:
        if own:
            sock.close()


def app_for_run(
    run_dir: str | Path, cfg: ServeConfig, *, device: str = "cpu", dtype: str = "float32"
) -> Starlette:
    """Load a run directory (weights, tokenizer, chat template) and build its app."""
    import torch

    from scratchllm.generation.chat import template_for_run
    from scratchllm.generation.layout import column_major_linears
    from scratchllm.serve.app import create_app
    from scratchllm.train.checkpoint import load_run
    from scratchllm.train.loop import resolve_device

    run = load_run(run_dir, resolve_device(device))
    model = column_major_linears(run.model.to(getattr(torch, dtype)))  # CPU decoding layout
    return create_app(model, run.tokenizer, cfg, template=template_for_run(run_dir))
