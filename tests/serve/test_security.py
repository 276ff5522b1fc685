"""Safe by default: API key, Host check (DNS rebinding), no CORS unless asked, page headers."""

from __future__ import annotations

import re
from importlib import resources

import httpx
import pytest
from serve_helpers import KEY, MODEL

BODY = {"model": MODEL, "prompt": "x", "max_tokens": 2}


def test_api_key_on_every_route_but_health_and_page(keyed_server):
    with keyed_server.client() as c:
        for method, path in [
            ("GET", "/v1/models"),
            ("POST", "/v1/completions"),
            ("POST", "/v1/chat/completions"),
            ("GET", "/v1/models/x"),
            ("GET", "/nothing"),
        ]:
            r = c.request(method, path, json=BODY)
            assert r.status_code == 401, path
            assert r.json()["error"]["code"] == "invalid_api_key"
            assert r.headers["www-authenticate"] == "Bearer"
        for auth in ["Bearer wrong-key-000", "Basic " + KEY, KEY, "Bearer x"]:
            assert c.get("/v1/models", headers={"Authorization": auth}).status_code == 401
        ok = c.post("/v1/completions", json=BODY, headers={"Authorization": f"Bearer {KEY}"})
        assert ok.status_code == 200
        assert c.get("/health").status_code == 200
        assert c.get("/").status_code == 200  # a constant page: it asks for the key itself


def test_host_check_on_loopback(server):
    with server.client() as c:
        for host in ["evil.example", "attacker.com:80", "127.0.0.1.evil.com", "10.0.0.1"]:
            r = c.get("/health", headers={"Host": host})
            assert r.status_code == 403, host
            assert r.json()["error"]["code"] == "host_not_allowed"
        for host in ["localhost", f"localhost:{server.port}", "127.0.0.1", "[::1]:80"]:
            assert c.get("/health", headers={"Host": host}).status_code == 200, host


def test_allowed_host_and_non_loopback_bind(start_server):
    s = start_server(allowed_hosts=("chat.internal",))
    with s.client() as c:
        assert c.get("/health", headers={"Host": "chat.internal:8000"}).status_code == 200
        assert c.get("/health", headers={"Host": "other.internal"}).status_code == 403


def test_no_cors_by_default(server):
    with server.client() as c:
        r = c.get("/v1/models", headers={"Origin": "https://evil.example"})
        assert "access-control-allow-origin" not in r.headers
        pre = c.options(
            "/v1/chat/completions",
            headers={"Origin": "https://evil.example", "Access-Control-Request-Method": "POST"},
        )
        assert "access-control-allow-origin" not in pre.headers


def test_cors_when_asked(start_server):
    s = start_server(cors_origins=("https://app.example",))
    with s.client() as c:
        r = c.get("/v1/models", headers={"Origin": "https://app.example"})
        assert r.headers["access-control-allow-origin"] == "https://app.example"
        r = c.get("/v1/models", headers={"Origin": "https://evil.example"})
        assert "access-control-allow-origin" not in r.headers


def test_page_headers_and_escaping(server):
    r = httpx.get(server.url + "/")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/html")
    csp = r.headers["content-security-policy"]
    assert "default-src 'none'" in csp and "unsafe-inline" not in csp and "sha256-" in csp
    assert r.headers["x-content-type-options"] == "nosniff"
    assert r.headers["x-frame-options"] == "DENY"
    page = resources.files("scratchllm.serve").joinpath("static/chat.html").read_text()
    script = "".join(re.findall(r"<script>(.*?)</script>", page, flags=re.S))
    assert "innerHTML" not in script and "insertAdjacentHTML" not in script
    assert "textContent" in script
    assert not re.search(r"\son[a-z]+=", page)  # no inline handlers (CSP would block them)


def test_api_responses_have_security_headers(server):
    r = httpx.get(server.url + "/v1/models")
    assert r.headers["x-content-type-options"] == "nosniff"
    assert "default-src 'none'" in r.headers["content-security-policy"]


@pytest.mark.parametrize(
    "origin", ["app.example", "https://app.example/", "https://app.example/chat", "https://"]
)
def test_a_cors_origin_that_could_never_match_is_refused(origin):
    """Browsers send scheme://host[:port] and CORS compares it exactly: a trailing slash or a
    missing scheme was accepted and silently never matched."""
    from scratchllm.errors import ConfigError
    from scratchllm.serve import ServeConfig

    with pytest.raises(ConfigError, match="is not an origin"):
        ServeConfig(cors_origins=(origin,))
    ServeConfig(cors_origins=("https://app.example", "http://localhost:3000"))


@pytest.mark.parametrize("name", ["chat.internal:8000", "http://chat.internal", "a/b", ""])
def test_an_allowed_host_that_could_never_match_is_refused(name):
    """The Host header is compared without its port: 'chat.internal:8000' or a URL in
    --allowed-host was accepted and silently never matched."""
    from scratchllm.errors import ConfigError
    from scratchllm.serve import ServeConfig

    with pytest.raises(ConfigError, match="is not a host name"):
        ServeConfig(allowed_hosts=(name,))


def test_an_allowed_ipv6_address_matches_with_or_without_brackets(start_server):
    s = start_server(allowed_hosts=("[fd00::1]", "fd00::2"))
    with s.client() as c:
        for host in ("[fd00::1]:8000", "[fd00::2]"):
            assert c.get("/health", headers={"Host": host}).status_code == 200, host


@pytest.mark.parametrize("missing", ["starlette", "uvicorn"])
def test_serve_without_the_serve_extra_says_what_to_install(monkeypatch, capsys, tmp_path, missing):
    """Without the [serve] extra, `scratchllm serve` is one line naming the package, exit 2
    (it was a ModuleNotFoundError traceback)."""
    import sys

    from scratchllm.cli import main

    for name in list(sys.modules):
        if name.startswith(("scratchllm.serve", f"{missing}.")) or name == missing:
            monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, missing, None)  # `import missing` now fails
    assert main(["serve", "--run", str(tmp_path / "run"), "--port", "0"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.splitlines() == [
        f"scratchllm serve: error: serving needs the {missing} package, which is not "
        "installed: pip install 'scratchllm[serve]'"
    ]
