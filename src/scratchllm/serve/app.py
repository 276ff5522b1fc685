"""The HTTP application: OpenAI-compatible routes over the continuous-batching `Scheduler`.

Routes: ``GET /v1/models``, ``GET /v1/models/{id}``, ``POST /v1/completions``,
``POST /v1/chat/completions`` (both with ``stream: true`` as server-sent events ending in
``data: [DONE]``), ``GET /health`` and the chat page at ``/``. A handler reads and validates
the body (`protocol.Validator`), hands one `Request` per choice to the scheduler and either
streams events as they come or collects them. A client that goes away cancels its choices.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import re
import secrets
import threading
import time
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from importlib import resources
from typing import Any

from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.middleware.cors import CORSMiddleware
from starlette.requests import Request as HTTPRequest
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route
from torch import nn

from scratchllm.generation import Request, TokenLogprob
from scratchllm.generation.chat import PlainTemplate
from scratchllm.serve.config import ServeConfig
from scratchllm.serve.protocol import APIError, GenParams, Validator, parse_json
from scratchllm.serve.scheduler import Event, QueueFull, Scheduler, ShuttingDown, Ticket
from scratchllm.serve.security import AuthGuard, HostGuard, read_body

RETRY_AFTER_S = "1"  # a full queue drains within a few decode steps


class ServerState:
    """What the handlers share: limits, the scheduler, the validator, the draining flag."""

    def __init__(
        self, model: nn.Module, tokenizer: Any, template: Any, cfg: ServeConfig, *, step_mode: str
    ):
        self.cfg, self.tokenizer, self.template = cfg, tokenizer, template
        self.scheduler = Scheduler(
            model, tokenizer, slots=cfg.max_batch, max_queue=cfg.max_queue, step_mode=step_mode
        )
        self.validator = Validator(cfg, tokenizer, template, model.cfg.context_length)
        self.tokenizer_lock = threading.Lock()  # the BPE cache is not safe to share
        self.draining = False  # set on SIGTERM: refuse new work, finish what is running
        self.created = int(time.time())
        self.chat_stop_ids = tuple(template.stop_token_ids(tokenizer))

    def validate(self, kind: str, body: dict) -> GenParams:
        with self.tokenizer_lock:
            return self.validator.chat(body) if kind == "chat" else self.validator.completion(body)


# ------------------------------------------------------------------------------- responses


def _json(data: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    return JSONResponse(data, status_code=status, headers=headers)


def _error_response(err: APIError) -> Response:
    return _json(err.body(), err.status, err.headers)


def _sse(data: Any) -> str:
    # ASCII-only: raw U+2028, U+0085 etc. would be line breaks to clients that use splitlines
    return f"data: {json.dumps(data)}\n\n"


class Shaper:
    """Builds OpenAI response objects for one request (completion or chat)."""

    def __init__(
        self,
        kind: str,
        model: str,
        params: GenParams,
        token_bytes: Callable[[list[int]], bytes] | None = None,
    ) -> None:
        self.kind, self.model, self.params = kind, model, params
        self.token_bytes = token_bytes  # the tokenizer's decode_bytes, for logprobs
        self.id = ("chatcmpl-" if kind == "chat" else "cmpl-") + secrets.token_hex(12)
        self.created = int(time.time())
        # completions' text_offset: characters of the choice's tokens reported so far, so that
        # streamed chunks continue where the previous one ended (as one full response counts)
        self.text_offset: dict[int, int] = {}

    def _head(self, obj: str) -> dict[str, Any]:
        return {"id": self.id, "object": obj, "created": self.created, "model": self.model}

    def usage(self, completions: list[Any]) -> dict[str, int]:
        prompt = sum(len(p) for p in self.params.prompts)
        out = sum(len(c.token_ids) for c in completions if c is not None)
        return {"prompt_tokens": prompt, "completion_tokens": out, "total_tokens": prompt + out}

    def logprobs(self, entries: Sequence[TokenLogprob], index: int) -> dict[str, Any] | None:
        """OpenAI's ``logprobs`` object for choice ``index``'s next tokens (None when the
        request did not ask)."""
        if self.params.logprobs is None or self.token_bytes is None:
            return None

        def piece(token: int) -> tuple[str, list[int]]:
            raw = self.token_bytes([token])
            return raw.decode("utf-8", errors="replace"), list(raw)

        if self.kind == "chat":
            content = []
            for e in entries:
                text, raw = piece(e.token_id)
                top = []
                for i, lp in e.top:
                    alt, alt_raw = piece(i)
                    top.append({"token": alt, "logprob": lp, "bytes": alt_raw})
                content.append(
                    {"token": text, "logprob": e.logprob, "bytes": raw, "top_logprobs": top}
                )
            return {"content": content, "refusal": None}
        tokens = [piece(e.token_id)[0] for e in entries]
        offsets, at = [], self.text_offset.get(index, 0)
        for text in tokens:
            offsets.append(at)
            at += len(text)
        self.text_offset[index] = at
        return {
            "tokens": tokens,
            "token_logprobs": [e.logprob for e in entries],
            "top_logprobs": [{piece(i)[0]: lp for i, lp in e.top} for e in entries],
            "text_offset": offsets,
        }

    def full(self, texts: list[str], reasons: list[str | None], completions: list[Any]) -> dict:
        scored = [
            self.logprobs((c.logprobs or []) if c is not None else [], i)
            for i, c in enumerate(completions)
        ]
        if self.kind == "chat":
            choices = [
                {
                    "index": i,
                    "message": {"role": "assistant", "content": t},
                    "logprobs": scored[i],
                    "finish_reason": r,
                }
                for i, (t, r) in enumerate(zip(texts, reasons))
            ]
            head = self._head("chat.completion")
        else:
            choices = [
                {"index": i, "text": t, "logprobs": scored[i], "finish_reason": r}
                for i, (t, r) in enumerate(zip(texts, reasons))
            ]
            head = self._head("text_completion")
        return {**head, "choices": choices, "usage": self.usage(completions)}

    def chunk(
        self,
        index: int,
        text: str | None,
        reason: str | None,
        *,
        role: bool = False,
        scored: Sequence[TokenLogprob] = (),
    ):
        logprobs = self.logprobs(scored, index) if scored else None
        if self.kind == "chat":
            delta: dict[str, str] = {"role": "assistant"} if role else {}
            if text is not None:
                delta["content"] = text
            choice = {"index": index, "delta": delta, "logprobs": logprobs, "finish_reason": reason}
            return {**self._head("chat.completion.chunk"), "choices": [choice]}
        choice = {"index": index, "text": text or "", "logprobs": logprobs, "finish_reason": reason}
        return {**self._head("text_completion"), "choices": [choice]}

    def usage_chunk(self, completions: list[Any]) -> dict:
        obj = "chat.completion.chunk" if self.kind == "chat" else "text_completion"
        return {**self._head(obj), "choices": [], "usage": self.usage(completions)}


class LeadingSpace:
    """Chat replies start after 'Assistant:'; drop the whitespace before the first character."""

    def __init__(self, active: bool) -> None:
        self.pending = active

    def __call__(self, text: str) -> str:
        if self.pending:
            text = text.lstrip()
            self.pending = not text
        return text


# ------------------------------------------------------------------------------- handlers


def _state(request: HTTPRequest) -> ServerState:
    return request.app.state.serve


async def _wait_disconnect(request: HTTPRequest) -> None:
    """Returns when the client closes the connection (the body has been read already)."""
    while True:
        message = await request.receive()
        if message["type"] == "http.disconnect":
            return


async def _next_event(request: HTTPRequest, ticket: Ticket, watcher: asyncio.Task) -> Event | None:
    """The ticket's next event, or None when the client disconnected first."""
    if not ticket.events.empty():
        return ticket.events.get_nowait()
    getter = asyncio.ensure_future(ticket.events.get())
    done, _ = await asyncio.wait({getter, watcher}, return_when=asyncio.FIRST_COMPLETED)
    if getter in done:
        return getter.result()
    getter.cancel()
    return None


def _requests(st: ServerState, kind: str, params: GenParams) -> list[Request]:
    stop, stop_ids = params.stop, ()
    if kind == "chat":
        stop = tuple(dict.fromkeys((*st.template.stop_strings, *params.stop)))
        stop_ids = st.chat_stop_ids
    out = []
    for prompt in params.prompts:
        for _ in range(params.n):
            seed = None if params.seed is None else (params.seed + len(out)) % (1 << 64)
            out.append(
                Request(
                    prompt,
                    params.sampling,
                    params.max_tokens,
                    stop,
                    stop_ids,
                    seed,
                    logprobs=params.logprobs,
                )
            )
    return out


def _failed(message: str) -> APIError:
    return APIError(
        503,
        message,
        type="server_error",
        code="unavailable",
        headers={"Retry-After": RETRY_AFTER_S},
    )


def _event_error(event: Event) -> APIError:
    """A failed choice: 503 + Retry-After when the server was busy or stopping, else 500."""
    if event.unavailable:
        return _failed(event.error or "unavailable")
    return APIError(500, event.error or "", type="server_error", code="generation_failed")


async def generate(request: HTTPRequest, kind: str) -> Response:
    st = _state(request)
    if st.draining:
        raise _failed("the server is shutting down")
    body = parse_json(await read_body(request, st.cfg.max_body_bytes))
    params = await run_in_threadpool(st.validate, kind, body)
    deadline = time.monotonic() + st.cfg.request_timeout
    try:
        ticket = st.scheduler.submit(
            _requests(st, kind, params), deadline, asyncio.get_running_loop()
        )
    except QueueFull as exc:
        raise APIError(
            429,
            f"server busy: {exc}; retry shortly",
            type="rate_limit_error",
            code="queue_full",
            headers={"Retry-After": RETRY_AFTER_S},
        ) from None
    except ShuttingDown as exc:
        raise _failed(str(exc)) from None
    shaper = Shaper(kind, st.cfg.model_name, params, st.tokenizer.decode_bytes)
    watcher = asyncio.ensure_future(_wait_disconnect(request))
    try:
        first = await _next_event(request, ticket, watcher)
        if first is None:  # gone while queued or prefilling
            st.scheduler.cancel(ticket)
            return Response(status_code=499)
        if first.error is not None:
            st.scheduler.cancel(ticket)
            raise _event_error(first)
        if params.stream:
            watcher.cancel()  # StreamingResponse listens for the disconnect itself
            stream = _stream(st, ticket, shaper, first)
            return StreamingResponse(
                stream, media_type="text/event-stream", headers={"X-Accel-Buffering": "no"}
            )
        return await _collect(request, st, ticket, shaper, first, watcher)
    finally:
        if not params.stream:
            watcher.cancel()


async def _collect(request, st: ServerState, ticket: Ticket, shaper: Shaper, first: Event, watcher):
    n = len(ticket.jobs)
    texts, reasons = [""] * n, [None] * n
    completions: list[Any] = [None] * n
    strip = [LeadingSpace(shaper.kind == "chat") for _ in range(n)]
    left, event = n, first
    while True:
        if event.error is not None:  # one failed choice fails the request, as with one choice
            st.scheduler.cancel(ticket)
            raise _event_error(event)
        texts[event.index] += strip[event.index](event.text)
        if event.completion is not None:
            completions[event.index], reasons[event.index] = event.completion, event.finish_reason
            left -= 1
        if not left:
            return _json(shaper.full(texts, reasons, completions))
        event = await _next_event(request, ticket, watcher)
        if event is None:
            st.scheduler.cancel(ticket)
            return Response(status_code=499)


async def _stream(
    st: ServerState, ticket: Ticket, shaper: Shaper, first: Event
) -> AsyncIterator[str]:
    n = len(ticket.jobs)
    completions: list[Any] = [None] * n
    strip = [LeadingSpace(shaper.kind == "chat") for _ in range(n)]
    left, event = n, first
    try:
        if shaper.kind == "chat":
            for i in range(n):
                yield _sse(shaper.chunk(i, "", None, role=True))
        while True:
            if event.error is not None:
                yield _sse(_event_error(event).body())
                break
            text = strip[event.index](event.text)
            scored = event.logprobs
            if event.completion is not None:
                completions[event.index] = event.completion
                left -= 1
                if text or scored:
                    yield _sse(shaper.chunk(event.index, text, None, scored=scored))
                yield _sse(
                    shaper.chunk(
                        event.index, None if shaper.kind == "chat" else "", event.finish_reason
                    )
                )
            elif text or scored:
                yield _sse(shaper.chunk(event.index, text, None, scored=scored))
            if not left:
                if shaper.params.include_usage:
                    yield _sse(shaper.usage_chunk(completions))
                break
            event = await ticket.events.get()
        yield "data: [DONE]\n\n"
    finally:  # normal end, error, or the client went away (this generator was cancelled)
        if left:
            st.scheduler.cancel(ticket)


async def completions(request: HTTPRequest) -> Response:
    return await generate(request, "completion")


async def chat_completions(request: HTTPRequest) -> Response:
    return await generate(request, "chat")


def _model_card(st: ServerState) -> dict[str, Any]:
    return {
        "id": st.cfg.model_name,
        "object": "model",
        "created": st.created,
        "owned_by": "scratchllm",
        "max_model_len": st.validator.context_length,  # vLLM's extra field: the context size
    }


async def list_models(request: HTTPRequest) -> Response:
    return _json({"object": "list", "data": [_model_card(_state(request))]})


async def get_model(request: HTTPRequest) -> Response:
    st = _state(request)
    if request.path_params["model"] != st.cfg.model_name:
        raise APIError(
            404,
            f"model {request.path_params['model']!r} does not exist",
            param="model",
            code="model_not_found",
        )
    return _json(_model_card(st))


async def health(request: HTTPRequest) -> Response:
    st = _state(request)
    if st.draining:
        return _json({"status": "draining"}, 503, {"Retry-After": RETRY_AFTER_S})
    return _json({"status": "ok", **st.scheduler.load})


# ----------------------------------------------------------------------------- chat page


def _csp_hash(source: str) -> str:
    digest = hashlib.sha256(source.encode()).digest()
    return "'sha256-" + base64.b64encode(digest).decode() + "'"


def load_page() -> tuple[bytes, str]:
    """The chat page and a Content-Security-Policy that allows exactly its inline code."""
    html = resources.files("scratchllm.serve").joinpath("static/chat.html").read_text("utf-8")
    scripts = re.findall(r"<script>(.*?)</script>", html, flags=re.S)
    styles = re.findall(r"<style>(.*?)</style>", html, flags=re.S)
    csp = (
        "default-src 'none'; "
        f"script-src {' '.join(map(_csp_hash, scripts))}; "
        f"style-src {' '.join(map(_csp_hash, styles))}; "
        "connect-src 'self'; img-src 'self' data:; base-uri 'none'; form-action 'none'; "
        "frame-ancestors 'none'"
    )
    return html.encode("utf-8"), csp


def page_route() -> Route:
    html, csp = load_page()

    async def page(request: HTTPRequest) -> Response:
        return Response(
            html, media_type="text/html; charset=utf-8", headers={"Content-Security-Policy": csp}
        )

    return Route("/", page, methods=["GET"])


# ------------------------------------------------------------------------------ the app


async def _api_error(request: HTTPRequest, exc: Exception) -> Response:
    assert isinstance(exc, APIError)
    return _error_response(exc)


async def _http_error(request: HTTPRequest, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code)
    err = APIError(
        exc.status_code,
        f"{request.method} {request.url.path}: {exc.detail}",
        code=code,
        headers=dict(exc.headers or {}),
    )
    return _error_response(err)


async def _internal_error(request: HTTPRequest, exc: Exception) -> Response:
    return _error_response(APIError(500, "internal server error", type="server_error"))


def create_app(
    model: nn.Module,
    tokenizer: Any,
    cfg: ServeConfig,
    *,
    template: Any = None,
    step_mode: str = "auto",
) -> Starlette:
    """The ASGI app for one model. ``template``: the run's chat template (plain lines if None)."""
    if tokenizer is None:
        from scratchllm.errors import CheckpointError

        raise CheckpointError(
            "the run has no tokenizer (tokenizer.json), so requests cannot be encoded; copy the "
            "tokenizer the model was trained with into the run directory"
        )
    st = ServerState(model, tokenizer, template or PlainTemplate(), cfg, step_mode=step_mode)

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        st.scheduler.start()
        try:
            yield
        finally:
            st.scheduler.stop()

    middleware = [Middleware(HostGuard, cfg=cfg)]
    if cfg.cors_origins:
        middleware.append(
            Middleware(
                CORSMiddleware,
                allow_origins=list(cfg.cors_origins),
                allow_methods=["GET", "POST"],
                allow_headers=["authorization", "content-type"],
            )
        )
    middleware.append(Middleware(AuthGuard, api_key=cfg.api_key))
    routes = [
        page_route(),
        Route("/health", health, methods=["GET"]),
        Route("/v1/models", list_models, methods=["GET"]),
        Route("/v1/models/{model:path}", get_model, methods=["GET"]),
        Route("/v1/completions", completions, methods=["POST"]),
        Route("/v1/chat/completions", chat_completions, methods=["POST"]),
    ]
    app = Starlette(
        routes=routes,
        middleware=middleware,
        lifespan=lifespan,
        exception_handlers={
            APIError: _api_error,
            HTTPException: _http_error,
            Exception: _internal_error,
        },
    )
    app.state.serve = st
    return app
