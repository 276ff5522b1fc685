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
    # Playwright's expect() waits 5 s by default: a reply, or Chromium itself, can take longer on
    # a loaded 2-core machine; what the page must eventually show is unchanged.
    sync_api.expect.set_options(timeout=30_000)
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
    # 100 steps of 0.25 s: the reply is still coming 25 s after it started (at 0.05 s a step,
    # a browser slowed by load might click Stop only after the reply had ended)
    sched = rewrite_replies(s, "x", delay=0.25)
    page.goto(s.url + "/")
    expect = sync_api.expect
    expect(page.locator("#model")).to_contain_text(MODEL)
    page.fill("#max_tokens", "100")
    page.fill("#input", "go")
    page.press("#input", "Enter")
    expect(page.locator(".msg.assistant").last).to_contain_text("xx")
    page.click("#stop")
    expect(page.locator("#status")).to_have_text("stopped")
    end = time.monotonic() + 30
    while sched.cancelled < 1:
        assert time.monotonic() < end, "the server kept decoding after Stop"
        time.sleep(0.02)


def test_chat_page_keeps_the_conversation_within_the_context(start_server, browser_page):
    # The test model has a 128-token context and one token per byte. With the length field left
    # empty each reply may take 64 tokens, so the second exchange no longer fits beside the first.
    page, errors = browser_page
    s = start_server(max_batch=2)
    rewrite_replies(s, "x")
    sent: list[dict] = []
    page.on(
        "request",
        lambda req: sent.append(req.post_data_json) if req.url.endswith("/completions") else None,
    )
    page.goto(s.url + "/")
    expect = sync_api.expect
    expect(page.locator("#model")).to_contain_text(MODEL)

    def say(text: str, replies: int) -> None:
        page.fill("#input", text)
        page.press("#input", "Enter")
        expect(page.locator(".msg.assistant, .msg.error")).to_have_count(replies)
        expect(page.locator("#send")).to_be_enabled()

    say("hello", 1)
    assert page.locator(".msg.assistant").last.text_content() == "x" * 64
    assert sent[-1]["max_tokens"] == 64
    say("again", 2)  # sent with the first exchange, refused, sent again without it
    assert [len(b["messages"]) for b in sent] == [1, 3, 1]
    expect(page.locator("#status")).to_contain_text("oldest exchange was dropped")
    say("z" * 120, 3)  # alone it leaves no room: an error, and not kept
    expect(page.locator(".msg.error")).to_contain_text("context")
    say("short", 4)  # first sent with the exchange before the error (it was not lost)
    assert [m["content"] for m in sent[-2]["messages"]] == ["again", "x" * 64, "short"]
    assert not [e for e in errors if "400" not in e], errors  # the refused requests log a 400
