"""`ServeConfig`: every limit the server enforces, in one place, with safe defaults."""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from urllib.parse import urlsplit

from scratchllm.errors import ConfigError


def is_loopback_name(host: str) -> bool:
    """True for 127.0.0.0/8, ::1 and localhost names (what a DNS-rebinding page cannot claim)."""
    host = host.strip().rstrip(".").lower()
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    if host == "localhost" or host.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def check_origin(origin: str) -> None:
    """Browsers send ``scheme://host[:port]`` and CORS compares it exactly: anything else in
    ``--cors-origin`` (no scheme, a path, a trailing slash) would silently never match."""
    parts = urlsplit(origin)
    exact = origin == f"{parts.scheme}://{parts.netloc}"
    if parts.scheme not in ("http", "https") or not parts.netloc or not exact:
        raise ConfigError(
            f"cors_origins: {origin!r} is not an origin (scheme://host[:port], no path or "
            "trailing slash); it would never match a browser's Origin header"
        )


def check_host_name(name: str) -> None:
    """``--allowed-host`` is compared with the Host header's name, its port removed: a scheme,
    a port or a path in it would silently never match."""
    try:
        ipaddress.ip_address(name.strip("[]"))  # an address, IPv6 included
        return
    except ValueError:
        pass
    if not name or any(c in name for c in ":/@ "):
        raise ConfigError(
            f"allowed_hosts: {name!r} is not a host name (no scheme, port or path, e.g. "
            "chat.internal); it would never match a request's Host header"
        )


@dataclass(frozen=True)
class ServeConfig:
    host: str = "127.0.0.1"  # bind address; loopback unless the operator says otherwise
    port: int = 8000  # 0 picks a free port
    model_name: str = "scratchllm"  # the id `/v1/models` lists and requests must name
    api_key: str | None = None  # Bearer token required on every API route when set
    allowed_hosts: tuple[str, ...] = ()  # extra Host names accepted when bound to loopback
    cors_origins: tuple[str, ...] = ()  # origins allowed cross-origin calls (none by default)
    max_batch: int = 16  # decode slots: requests decoded together in one step
    max_queue: int = 64  # choices waiting for a slot; past it requests get 429
    request_timeout: float = 120.0  # seconds from arrival to the last token (queue included)
    shutdown_timeout: float = 30.0  # after SIGTERM, in-flight requests get this long to finish
    max_body_bytes: int = 1 << 20  # request bodies above this get 413
    max_prompt_chars: int = 200_000  # characters of prompt/messages text per request
    max_messages: int = 256  # messages per chat request
    max_choices: int = 8  # n x prompts per request
    max_stop: int = 4  # stop strings per request (OpenAI's limit)
    max_stop_chars: int = 256  # characters per stop string
    default_max_tokens: int = 256  # max_tokens when a request leaves it out (capped by context)

    def __post_init__(self) -> None:
        for name in (
            "max_batch",
            "max_body_bytes",
            "max_prompt_chars",
            "max_messages",
            "max_choices",
            "max_stop",
            "max_stop_chars",
            "default_max_tokens",
        ):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.max_queue < 0:
            raise ConfigError(f"max_queue must be >= 0, got {self.max_queue}")
        if not 0 <= self.port <= 65535:
            raise ConfigError(f"port must be in 0..65535, got {self.port}")
        for name in ("request_timeout", "shutdown_timeout"):
            if not getattr(self, name) > 0:
                raise ConfigError(f"{name} must be > 0 seconds, got {getattr(self, name)}")
        if self.api_key is not None and len(self.api_key) < 8:
            raise ConfigError("api_key must be at least 8 characters")
        if "*" in self.cors_origins:
            raise ConfigError("cors_origins: '*' is not allowed; name each origin")
        for origin in self.cors_origins:
            check_origin(origin)
        for name in self.allowed_hosts:
            check_host_name(name)

    @property
    def loopback(self) -> bool:
        """Bound to loopback only: the Host header check against DNS rebinding applies."""
        return is_loopback_name(self.host)
