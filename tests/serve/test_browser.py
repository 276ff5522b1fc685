"""The chat page in a real browser (Playwright driving Debian's Chromium).

Skips with a reason when Playwright or /usr/bin/chromium is missing; `.ci/browser-setup.sh`
installs both. The reply is made to contain HTML (the decode step's text is rewritten) to check
that the page shows it as text; the CSP would also stop any script the page did not ship.
"""

from __future__ import annotations

import os
import time

import pytest
from serve_helpers import MODEL, never_eot

CHROMIUM = "/usr/bin/chromium"
ARGS = [
    "--no-sandbox",
    "--headless",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
HTML_REPLY = "<b>bold</b><img src=x>"

sync_api = pytest.importorskip(
    "playwright.sync_api", reason="playwright is not installed (run .ci/browser-setup.sh)"
)
if not os.access(CHROMIUM, os.X_OK):
    pytest.skip(f"{CHROMIUM} is missing (run .ci/browser-setup.sh)", allow_module_level=True)


def rewrite_replies(server, text: str, delay: float = 0.0):
    """Every event's text becomes ``text``: a reply made of HTML markup."""
    sched = server.app.state.serve.scheduler
    real = sched.batch.step

    def step():
        time.sleep(delay)
        events = real()
        for ev in events:
            ev.text = text
        return events

    sched.batch.step = step
    never_eot(sched)
    return sched


@pytest.fixture
def browser_page():
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=ARGS, headless=True)
        page = browser.new_page()
        errors: list[str] = []
        page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
        page.on("pageerror", lambda e: errors.append(str(e)))
        yield page, errors
        browser.close()


def test_chat_page_streams_and_escapes(start_server, browser_page):
    page, errors = browser_page
    s = start_server(max_batch=2, default_max_tokens=8)
    rewrite_replies(s, HTML_REPLY)
    page.goto(s.url + "/")
    expect = sync_api.expect  # locator waits: the page's CSP forbids evaluating strings
    expect(page.locator("#model")).to_contain_text(MODEL)
    page.fill("#max_tokens", "6")
    page.fill("#input", "hi <i>there</i>")
    page.press("#input", "Enter")
    reply = page.locator(".msg.assistant").last
    expect(reply).to_contain_text(HTML_REPLY)
    expect(page.locator("#send")).to_be_enabled()
    assert HTML_REPLY in reply.text_content()
    assert page.locator(".msg b, .msg img, .msg i").count() == 0  # shown as text, not markup
    assert page.locator(".msg.user").last.text_content() == "hi <i>there</i>"
    assert not errors, errors  # includes CSP violations


def test_stop_button_cancels(start_server, browser_page):
    page, _ = browser_page
    s = start_server(max_batch=2, default_max_tokens=100)
    sched = rewrite_replies(s, "x", delay=0.05)
    page.goto(s.url + "/")
    expect = sync_api.expect
    expect(page.locator("#model")).to_contain_text(MODEL)
    page.fill("#max_tokens", "100")
    page.fill("#input", "go")
    page.press("#input", "Enter")
    expect(page.locator(".msg.assistant").last).to_contain_text("xx")
    page.click("#stop")
    expect(page.locator("#status")).to_have_text("stopped")
    end = time.monotonic() + 10
    while sched.cancelled < 1:
        assert time.monotonic() < end, "the server kept decoding after Stop"
        time.sleep(0.02)
