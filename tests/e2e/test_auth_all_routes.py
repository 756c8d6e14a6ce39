"""`--auth-all-routes` on a real server: with keys configured, /metrics, /openapi.json, /docs and the
playground need them too (a Bearer API key or a SigV4 signature); /ping stays open; without the flag they
stay open."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import fastapi.routing
import httpx
import pytest
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials

from sdxl_bedrock.api.auth import INVALID_API_KEY, MISSING_TOKEN, SIGNATURE_MISMATCH
from sdxl_bedrock.api.private_routes import is_private
from sdxl_bedrock.app import create_app
from sdxl_bedrock.config import Settings
from tests.conftest import (
    AUTH_API_KEY,
    AUTH_KEY_ID,
    AUTH_SECRET,
    AUTH_SERVER_ARGS,
    RunningServer,
    start_server,
)

PRIVATE = (
    "/",
    "/playground/app.js",
    "/playground/options.json",
    "/metrics",
    "/openapi.json",
    "/docs",
    "/docs/init.js",
    "/docs/swagger-ui/swagger-ui-bundle.js",
)
# The wires check credentials themselves, each its own way: the flag leaves them as they are.
WIRE_PREFIXES = ("/model/", "/async-invoke", "/v1/", "/sdapi/")


@pytest.fixture(scope="module")
def private_server(tmp_path_factory: pytest.TempPathFactory, cache_dir: Path) -> Iterator[RunningServer]:
    running = start_server(tmp_path_factory.mktemp("logs"), *AUTH_SERVER_ARGS, "--auth-all-routes")
    yield running
    running.stop()


def sigv4_headers(url: str, secret: str = AUTH_SECRET) -> dict[str, str]:
    """What botocore's signer sends for a GET of `url` with the test key pair."""
    request = AWSRequest("GET", url)
    SigV4Auth(Credentials(AUTH_KEY_ID, secret), "bedrock", "us-east-1").add_auth(request)
    return dict(request.headers.items())


def assert_access_denied(response: httpx.Response, message: str) -> None:
    assert response.status_code == 403, response.text
    assert response.headers["x-amzn-errortype"].startswith("AccessDeniedException:")
    assert response.headers["x-amzn-requestid"]
    assert response.json() == {"message": message}


@pytest.mark.parametrize("path", PRIVATE)
def test_a_private_route_refuses_a_caller_without_keys(private_server: RunningServer, path: str) -> None:
    url = private_server.url + path
    assert_access_denied(httpx.get(url), MISSING_TOKEN)
    assert_access_denied(httpx.get(url, headers={"Authorization": "Bearer wrong"}), INVALID_API_KEY)
    assert_access_denied(httpx.get(url, headers=sigv4_headers(url, secret="wrong")), SIGNATURE_MISMATCH)


@pytest.mark.parametrize("path", PRIVATE)
def test_a_private_route_answers_an_api_key_or_a_signature(private_server: RunningServer, path: str) -> None:
    url = private_server.url + path
    by_token = httpx.get(url, headers={"Authorization": f"Bearer {AUTH_API_KEY}"})
    assert by_token.status_code == 200, by_token.text
    by_signature = httpx.get(url, headers=sigv4_headers(url))
    assert by_signature.status_code == 200, by_signature.text
    assert by_signature.content == by_token.content or path == "/metrics"  # metrics move between calls


def test_ping_stays_open_and_the_wires_check_keys_as_before(private_server: RunningServer) -> None:
    assert httpx.get(private_server.url + "/ping").json() == {"status": "Healthy"}
    engines = private_server.url + "/v1/engines/list"
    assert httpx.get(engines).status_code == 401  # Stability's own answer to a missing key
    assert httpx.get(engines, headers={"Authorization": f"Bearer {AUTH_API_KEY}"}).status_code == 200
    # An unknown path is still a 404 (it names no page to protect).
    assert httpx.get(private_server.url + "/nothing/here").status_code == 404


def test_the_refusals_are_counted_like_any_answer(private_server: RunningServer) -> None:
    httpx.get(private_server.url + "/metrics")
    metrics = httpx.get(
        private_server.url + "/metrics", headers={"Authorization": f"Bearer {AUTH_API_KEY}"}
    ).text
    assert 'status="403"' in metrics


@pytest.mark.parametrize("path", PRIVATE)
def test_without_the_flag_the_pages_stay_open(auth_server: RunningServer, path: str) -> None:
    assert httpx.get(auth_server.url + path).status_code == 200


def test_every_route_but_ping_and_the_wires_is_private() -> None:
    """A route added later is covered, or this test names it."""
    app = create_app(Settings(api_keys=frozenset({"k"}), auth_all_routes=True))
    # FastAPI >= 0.16x keeps included routers whole; iter_route_contexts flattens them (mounts too).
    paths = {context.path for context in fastapi.routing.iter_route_contexts(app.routes)}
    assert {"/", "/metrics", "/openapi.json", "/docs", "/ping"} <= paths
    open_paths = {path for path in paths if not is_private(path) and not path.startswith(WIRE_PREFIXES)}
    assert open_paths == {"/ping"}


def test_the_flag_without_keys_is_refused_in_one_line() -> None:
    environment = {k: v for k, v in os.environ.items() if not k.startswith("SDXL_BEDROCK_")}
    done = subprocess.run(
        [sys.executable, "-m", "sdxl_bedrock", "serve", "--auth-all-routes"],
        capture_output=True,
        text=True,
        timeout=120,
        env=environment,
    )
    assert done.returncode == 2
    assert done.stderr == (
        "sdxl-bedrock serve: --auth-all-routes needs keys to check: give --access-key-file or "
        "--api-key-file (or their variables)\n"
    )
