"""Running the app under uvicorn with a graceful SIGTERM: stop accepting, drain, exit 0.

uvicorn already stops listening on SIGTERM and waits for open requests (up to
``timeout_graceful_shutdown``); this subclass additionally marks the app as draining (new
requests on kept-alive connections get 503) and does not re-raise the signal afterwards, so a
clean drain ends with exit status 0 rather than death by signal.
"""

from __future__ import annotations

import signal
import socket
from pathlib import Path
from types import FrameType

import uvicorn
from starlette.applications import Starlette

from scratchllm.serve.config import ServeConfig


class DrainingServer(uvicorn.Server):
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


def run_server(app: Starlette, cfg: ServeConfig, sock: socket.socket | None = None) -> None:
    """Serve until SIGTERM/SIGINT (blocking); ``sock`` is an already bound listening socket."""
    server = DrainingServer(uvicorn_config(app, cfg))
    server.run(sockets=[sock] if sock is not None else None)


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
