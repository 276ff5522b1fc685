"""`scratchllm serve --run DIR`: an OpenAI-compatible HTTP server and web chat page for a run."""

from __future__ import annotations

import argparse
from pathlib import Path

from scratchllm.errors import ConfigError


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "serve",
        help="serve a run over HTTP (OpenAI-compatible API + web chat page)",
        description=(
            "Serve a run: GET /v1/models, POST /v1/completions and /v1/chat/completions "
            "(streaming with stream=true), GET /health, and a chat page at /. Concurrent "
            "requests decode together (continuous batching). Safe by default: binds "
            "127.0.0.1, answers only loopback Host names there, no CORS. SIGTERM drains "
            "in-flight requests and exits 0."
        ),
    )
    p.add_argument("--run", required=True, help="run directory written by train/finetune")
    p.add_argument("--host", default="127.0.0.1", help="bind address (default %(default)s)")
    p.add_argument("--port", type=int, default=8000, help="default %(default)s; 0 = any free")
    p.add_argument("--model-name", default=None, help="model id clients use (default: run name)")
    key = p.add_mutually_exclusive_group()
    key.add_argument("--api-key", default=None, help="require 'Authorization: Bearer KEY'")
    key.add_argument("--api-key-file", default=None, help="read the key from a file (not in ps)")
    p.add_argument(
        "--allowed-host", action="append", default=[], help="extra Host name accepted on loopback"
    )
    p.add_argument(
        "--cors-origin", action="append", default=[], help="origin allowed cross-origin calls"
    )
    p.add_argument(
        "--max-batch", type=int, default=16, help="requests decoded together (default %(default)s)"
    )
    p.add_argument(
        "--max-queue",
        type=int,
        default=64,
        help="waiting requests before 429 (default %(default)s)",
    )
    p.add_argument(
        "--request-timeout",
        type=float,
        default=120.0,
        help="seconds per request (default %(default)s)",
    )
    p.add_argument(
        "--shutdown-timeout",
        type=float,
        default=30.0,
        help="seconds to drain on SIGTERM (default %(default)s)",
    )
    p.add_argument(
        "--max-body-bytes",
        type=int,
        default=1 << 20,
        help="largest request body (default %(default)s)",
    )
    p.add_argument(
        "--default-max-tokens",
        type=int,
        default=256,
        help="when a request omits it (default %(default)s)",
    )
    p.add_argument("--device", default="cpu", help="cpu (default), cuda, cuda:1, mps, auto")
    p.add_argument(
        "--dtype",
        choices=("float32", "bfloat16", "float16"),
        default="float32",
        help="weights dtype (default %(default)s)",
    )
    p.set_defaults(func=run)


def _api_key(args: argparse.Namespace) -> str | None:
    from scratchllm.cli.common import read_text_file

    if args.api_key_file is None:
        return args.api_key
    try:
        return read_text_file(args.api_key_file, "--api-key-file").strip()
    except OSError as exc:
        raise ConfigError(f"--api-key-file {args.api_key_file}: {exc.strerror}") from None


SERVE_PACKAGES = ("starlette", "uvicorn")  # the [serve] extra


def _import_server():
    """scratchllm.serve's pieces, or a ConfigError saying how to install what is missing."""
    try:
        from scratchllm.serve import config, server
    except ModuleNotFoundError as exc:
        if (exc.name or "").split(".")[0] not in SERVE_PACKAGES:
            raise
        raise ConfigError(
            f"serving needs the {exc.name.split('.')[0]} package, which is not installed: "
            "pip install 'scratchllm[serve]'"
        ) from None
    return config, server


def run(args: argparse.Namespace) -> int:
    from scratchllm.cli.common import note_adapter_run

    config, server = _import_server()

    cfg = config.ServeConfig(
        host=args.host,
        port=args.port,
        model_name=args.model_name or Path(args.run).resolve().name,
        api_key=_api_key(args),
        allowed_hosts=tuple(args.allowed_host),
        cors_origins=tuple(args.cors_origin),
        max_batch=args.max_batch,
        max_queue=args.max_queue,
        request_timeout=args.request_timeout,
        shutdown_timeout=args.shutdown_timeout,
        max_body_bytes=args.max_body_bytes,
        default_max_tokens=args.default_max_tokens,
    )
    sock = server.listen_socket(cfg)  # before loading: a port in use is an error at once
    try:
        note_adapter_run(args.run)
        app = server.app_for_run(args.run, cfg, device=args.device, dtype=args.dtype)
        where = f"http://{server.display_address(cfg.host, sock.getsockname()[1])}/"

        def ready() -> None:
            print(f"serving {cfg.model_name!r} at {where} (Ctrl-C or SIGTERM to stop)", flush=True)

        server.run_server(app, cfg, sock, on_ready=ready)
    finally:
        sock.close()
    return 0
