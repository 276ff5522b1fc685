"""HTTP serving: an OpenAI-compatible API with continuous batching and a web chat page.

- `ServeConfig`: bind address, API key, limits (safe defaults).
- `create_app(model, tokenizer, cfg, template=...)`: the ASGI app (Starlette).
- `app_for_run(run_dir, cfg)` and `run_server(app, cfg)`: what ``scratchllm serve`` does.
"""

from scratchllm.serve.app import create_app
from scratchllm.serve.config import ServeConfig
from scratchllm.serve.server import app_for_run, run_server

__all__ = ["ServeConfig", "app_for_run", "create_app", "run_server"]
