"""ASGI guards in front of every route: Host check, API key, security headers, body reading.

They are plain ASGI middleware (no framework magic) so that a refused request never reaches a
handler: a page on another site that rebinds its DNS name to 127.0.0.1 is refused by the Host
check, and a missing or wrong key is refused before any body is read.
"""

from __future__ import annotations

import hmac
import json
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from starlette.datastructures import Headers
from starlette.requests import Request

from scratchllm.serve.config import ServeConfig, is_loopback_name
from scratchllm.serve.protocol import APIError

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

PUBLIC_PATHS = ("/health", "/")  # no key needed: a liveness probe and a constant static page
DEFAULT_HEADERS = [
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"no-referrer"),
    (b"x-frame-options", b"DENY"),
    (b"cache-control", b"no-store"),
]
DEFAULT_CSP = b"default-src 'none'; frame-ancestors 'none'"


async def send_error(send: Send, err: APIError) -> None:
    body = json.dumps(err.body()).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    headers += [(k.lower().encode(), v.encode()) for k, v in err.headers.items()]
    await send({"type": "http.response.start", "status": err.status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


def host_name(host_header: str) -> str:
    """The name part of a Host header: ``[::1]:8000`` -> ``::1``, ``a.b:80`` -> ``a.b``."""
    host = host_header.strip()
    if host.startswith("["):
        return host[1 : host.find("]")] if "]" in host else host
    return host.rsplit(":", 1)[0] if host.count(":") == 1 else host


class HostGuard:
    """Outermost: Host check when bound to loopback; security headers on every response."""

    def __init__(self, app: ASGIApp, cfg: ServeConfig) -> None:
        self.app, self.cfg = app, cfg
        self.allowed = {h.lower().strip("[]") for h in cfg.allowed_hosts}  # [::1] as ::1

    def host_ok(self, host: str | None) -> bool:
        if not self.cfg.loopback:
            return True
        if not host:
            return False
        name = host_name(host).lower()
        return is_loopback_name(name) or name in self.allowed

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                names = {k.lower() for k, _ in headers}
                headers += [(k, v) for k, v in DEFAULT_HEADERS if k not in names]
                if b"content-security-policy" not in names:
                    headers.append((b"content-security-policy", DEFAULT_CSP))
                message = {**message, "headers": headers}
            await send(message)

        host = Headers(scope=scope).get("host")
        if not self.host_ok(host):
            err = APIError(
                403,
                f"Host {host!r} is not allowed: this server is bound to loopback and only "
                "answers loopback names (start it with --allowed-host NAME to add one)",
                type="permission_error",
                code="host_not_allowed",
            )
            await send_error(send_with_headers, err)
            return
        await self.app(scope, receive, send_with_headers)


class AuthGuard:
    """Bearer API key on every route except `PUBLIC_PATHS` (compared in constant time)."""

    def __init__(self, app: ASGIApp, api_key: str | None) -> None:
        self.app = app
        self.key = api_key.encode() if api_key else None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or self.key is None or scope["path"] in PUBLIC_PATHS:
            await self.app(scope, receive, send)
            return
        auth = Headers(scope=scope).get("authorization", "")
        scheme, _, token = auth.partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(token.strip().encode(), self.key):
            err = APIError(
                401,
                "missing or incorrect API key: send 'Authorization: Bearer <key>'",
                code="invalid_api_key",
                headers={"WWW-Authenticate": "Bearer"},
            )
            await send_error(send, err)
            return
        await self.app(scope, receive, send)


async def read_body(request: Request, limit: int) -> bytes:
    """The body of a JSON request, refusing other content types and anything over ``limit``.

    Requiring ``application/json`` also means a browser on another origin cannot send it without
    a CORS preflight, which this server does not grant unless told to.
    """
    ctype = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if ctype != "application/json":
        raise APIError(
            415, f"Content-Type must be application/json, got {ctype or 'none'!r}", code="media"
        )
    length = request.headers.get("content-length")
    if length is not None and (not length.isdigit() or int(length) > limit):
        raise APIError(413, f"request body over {limit} bytes", code="body_too_large")
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise APIError(413, f"request body over {limit} bytes", code="body_too_large")
        chunks.append(chunk)
    return b"".join(chunks)
