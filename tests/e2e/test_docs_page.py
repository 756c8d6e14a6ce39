"""GET /docs: Swagger UI from files inside the package, in Debian's headless Chromium against a real server:
it lists the operations of /openapi.json, and every request the page makes goes to this server."""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterator
from importlib import resources

import httpx
import pytest
from playwright.sync_api import Browser, expect

from tests.conftest import RunningServer
from tests.e2e.browser import PageWatch, chromium, needs_chromium

SWAGGER_UI = resources.files("sdxl_bedrock") / "api_docs" / "swagger-ui"


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with chromium() as launched:
        yield launched


def test_the_page_and_its_files_are_served_with_a_self_only_content_security_policy(
    server: RunningServer,
) -> None:
    page = httpx.get(server.url + "/docs")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    policy = page.headers["content-security-policy"]
    assert "default-src 'self'" in policy and "'unsafe-inline'" not in policy and "http" not in policy
    assert "<script>" not in page.text  # no inline script: the policy would refuse it
    for path, media_type in (
        ("/docs/init.js", "text/javascript"),
        ("/docs/swagger-ui/swagger-ui-bundle.js", "text/javascript"),
        ("/docs/swagger-ui/swagger-ui.css", "text/css"),
    ):
        answer = httpx.get(server.url + path)
        assert answer.status_code == 200 and answer.headers["content-type"].startswith(media_type)
        assert answer.headers["x-content-type-options"] == "nosniff"
        again = httpx.get(server.url + path, headers={"If-None-Match": answer.headers["etag"]})
        assert again.status_code == 304  # the 1.7 MB bundle is not sent twice
    missing = httpx.get(server.url + "/docs/nothing.js")
    assert missing.status_code == 404
    assert missing.headers["x-amzn-ErrorType"].startswith("ResourceNotFoundException:")


def test_the_vendored_files_are_the_ones_the_readme_names() -> None:
    """Swagger UI's files are npm's, unchanged: their sums are those its README records."""
    readme = (SWAGGER_UI / "README.md").read_text()
    recorded = dict(re.findall(r"\| `([^`]+)` \| `([0-9a-f]{64})` \|", readme))
    assert {"swagger-ui-bundle.js", "swagger-ui.css", "LICENSE", "NOTICE"} <= set(recorded)
    for name, digest in recorded.items():
        assert hashlib.sha256((SWAGGER_UI / name).read_bytes()).hexdigest() == digest, name


@needs_chromium
def test_the_page_lists_the_operations_and_fetches_nothing_elsewhere(
    browser: Browser, server: RunningServer
) -> None:
    page = browser.new_page(viewport={"width": 1280, "height": 1000})
    watch = PageWatch(page, server.url)
    page.goto(server.url + "/docs")
    operations = page.locator(".opblock-summary-path")
    expect(operations.first).to_be_visible(timeout=30_000)
    document = httpx.get(server.url + "/openapi.json").json()
    expected = {path for path, item in document["paths"].items() for _ in item}
    shown = {text.replace("\u200b", "") for text in operations.all_inner_texts()}
    assert shown == expected
    expect(page.locator(".info .title")).to_contain_text("sdxl-bedrock")
    # Open one operation: its parameters and responses render without any request elsewhere.
    page.locator(".opblock-summary-path", has_text="/ping").first.click()
    expect(page.locator(".opblock.is-open .responses-table").first).to_be_visible()
    page.wait_for_load_state("networkidle")
    assert watch.problems == []
    assert f"{server.url}/openapi.json" in watch.requests
    page.close()
