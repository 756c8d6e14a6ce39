"""Debian's headless Chromium driven by Playwright (never `playwright install`), for the pages' tests."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from playwright.sync_api import Browser, ConsoleMessage, Page, sync_playwright

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]

needs_chromium = pytest.mark.skipif(
    not CHROMIUM.exists(), reason="needs Debian's chromium at /usr/bin/chromium (`make browser` installs it)"
)


@contextmanager
def chromium() -> Iterator[Browser]:
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            yield launched
        finally:
            launched.close()


class PageWatch:
    """What the page did that a test should fail on: console errors (a Content-Security-Policy violation is
    one), script errors, requests anywhere but this server. `allowed_console` holds texts of console errors
    a test expects."""

    def __init__(self, page: Page, origin: str, allowed_console: tuple[str, ...] = ()) -> None:
        self.problems: list[str] = []
        self.requests: list[str] = []
        self.origin = origin
        self.allowed_console = allowed_console
        page.on("console", self.on_console)
        page.on("pageerror", lambda error: self.problems.append(f"page error: {error}"))
        page.on("request", lambda request: self.on_url(request.url))

    def on_console(self, message: ConsoleMessage) -> None:
        if message.type == "error" and not any(text in message.text for text in self.allowed_console):
            self.problems.append(f"console: {message.text}")

    def on_url(self, url: str) -> None:
        self.requests.append(url)
        if not url.startswith((self.origin + "/", "data:", "blob:")):
            self.problems.append(f"request outside the server: {url}")
