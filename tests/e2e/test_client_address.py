"""The client's address, with the front and without it (`--no-front`): every line a request logs names the
address and port the client connected from, over HTTP/1.1 and HTTP/2, and no header a client sends
(X-Forwarded-For, Forwarded, X-Real-IP) changes it. Without the front granian serves the port itself:
every wire, h2c and TLS, and the port is still this server's alone."""

from __future__ import annotations

import base64
import errno
import json
import socket
import ssl
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import (
    AUTH_API_KEY,
    AUTH_SERVER_ARGS,
    RunningServer,
    TlsFiles,
    gradient_png,
    start_server,
    start_tls_server,
)

MODEL = "stability.stable-diffusion-xl-v1"
INVOKE = f"/model/{MODEL}/invoke"
BEARER = {"authorization": f"Bearer {AUTH_API_KEY}"}
# Addresses a client claims for itself; none of them is where it connects from.
SPOOFED = {
    "x-forwarded-for": "198.51.100.1",
    "forwarded": "for=198.51.100.2;proto=https",
    "x-real-ip": "198.51.100.3",
}
LOG_WAIT_S = 60


@pytest.fixture(scope="module")
def no_front_server(tmp_path_factory: pytest.TempPathFactory, cache_dir: Path) -> Iterator[RunningServer]:
    """auth_server's options (keys, -v) with granian on the port itself, logging JSON lines."""
    running = start_server(tmp_path_factory.mktemp("logs"), *AUTH_SERVER_ARGS, "--no-front", "--log-json")
    yield running
    assert running.stop() == 0, running.log()


@pytest.fixture(params=["front", "no-front"])
def either(request: pytest.FixtureRequest) -> RunningServer:
    """The same options, with the front (the session's auth_server, text lines) and without it."""
    name = "auth_server" if request.param == "front" else "no_front_server"
    server: RunningServer = request.getfixturevalue(name)
    return server


def client_address(response: httpx.Response) -> str:
    """The address and port the request was sent from, as the log writes it (while the response is open:
    an answer that closes the connection closes the socket with it)."""
    host, port = response.extensions["network_stream"].get_extra_info("client_addr")[:2]
    return f"{host}:{port}"


def lines_of(server: RunningServer, request_id: str) -> list[str]:
    """The log lines of one request, once its access line (written after its answer) is there."""
    deadline = time.monotonic() + LOG_WAIT_S
    while True:
        lines = [line for line in server.log().splitlines() if request_id in line]
        if any("sdxl_bedrock.access" in line for line in lines):
            return lines
        assert time.monotonic() < deadline, f"no access line for {request_id}:\n{server.log()[-3000:]}"
        time.sleep(0.05)


@pytest.mark.parametrize("http2", [False, True], ids=["HTTP/1.1", "HTTP/2"])
def test_every_line_a_request_logs_names_its_client_whatever_it_claims(
    either: RunningServer, http2: bool
) -> None:
    """A request without credentials logs its refusal (-v) and its access line: both name the client."""
    sent = []
    with httpx.Client(http1=not http2, http2=http2, timeout=60) as client:
        for method, path, least in (("POST", INVOKE, 2), ("GET", "/ping", 1)):
            body = b"{}" if method == "POST" else None
            with client.stream(method, either.url + path, content=body, headers=SPOOFED) as response:
                sent.append((response, client_address(response), least))
                response.read()
    assert [response.status_code for response, _, _ in sent] == [403, 200]
    assert {response.http_version for response, _, _ in sent} == {"HTTP/2" if http2 else "HTTP/1.1"}
    for response, address, least in sent:
        assert address.startswith("127.0.0.1:")
        request_id = response.headers["x-amzn-RequestId"]
        lines = lines_of(either, request_id)
        assert len(lines) >= least, lines
        for line in lines:
            assert client_named(line) == address, line
            assert "198.51.100." not in line


def client_named(line: str) -> str:
    """The client a log line names: a text line's after its request id, a JSON line's `client`."""
    if line.startswith("{"):
        return str(json.loads(line)["client"])
    return line.split("[", 1)[1].split("]", 1)[0].split(" ")[1]


# ---- without the front ---------------------------------------------------------------------------------


def small_png() -> str:
    return base64.b64encode(gradient_png(64, 64)).decode()


WIRES: dict[str, tuple[str, dict[str, Any]]] = {
    "bedrock": (INVOKE, {"text_prompts": [{"text": "a kite"}], "init_image": small_png(), "steps": 10}),
    "stability": (
        "/v1/generation/stable-diffusion-xl-1024-v1-0/text-to-image",
        {"text_prompts": [{"text": "a kite"}], "width": 64, "height": 64, "steps": 10},
    ),
    "openai": ("/v1/images/generations", {"prompt": "a kite", "size": "64x64", "quality": "low"}),
    "a1111": (
        "/sdapi/v1/txt2img",
        {"prompt": "a kite", "width": 64, "height": 64, "steps": 4, "sampler_name": "Euler"},
    ),
}


def image_of(wire: str, answer: dict[str, Any]) -> str:
    if wire in ("bedrock", "stability"):
        return str(answer["artifacts"][0]["base64"])
    if wire == "openai":
        return str(answer["data"][0]["b64_json"])
    return str(answer["images"][0])


@pytest.mark.parametrize("http2", [False, True], ids=["HTTP/1.1", "h2c"])
@pytest.mark.parametrize("wire", list(WIRES))
def test_without_the_front_every_wire_is_served(
    no_front_server: RunningServer, wire: str, http2: bool
) -> None:
    path, body = WIRES[wire]
    with httpx.Client(http1=not http2, http2=http2, timeout=300) as client:
        response = client.post(no_front_server.url + path, json=body, headers=BEARER)
    assert response.status_code == 200, response.text
    assert response.http_version == ("HTTP/2" if http2 else "HTTP/1.1")
    assert base64.b64decode(image_of(wire, response.json())).startswith(b"\x89PNG")


def test_without_the_front_no_second_listener_can_share_the_port(no_front_server: RunningServer) -> None:
    """granian's own listener would set SO_REUSEPORT, which lets another socket that sets it listen on the
    same port and take part of the connections; the server's socket has it unset."""
    port = int(no_front_server.url.rsplit(":", 1)[1])
    with socket.socket() as intruder:
        intruder.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        with pytest.raises(OSError) as refused:
            intruder.bind(("127.0.0.1", port))
    assert refused.value.errno == errno.EADDRINUSE
    assert httpx.get(no_front_server.url + "/ping", timeout=30).status_code == 200


def test_without_the_front_tls_is_granians(tmp_path: Path, cache_dir: Path, tls_files: TlsFiles) -> None:
    """HTTP/1.1 and HTTP/2 by ALPN, TLS 1.2 as with the front, and the client named in the log."""
    running = start_tls_server(tmp_path, tls_files, "--model", "tiny", "--no-front")
    try:
        tls12 = tls_files.context()
        tls12.maximum_version = ssl.TLSVersion.TLSv1_2
        with (
            httpx.Client(verify=tls12, timeout=60) as client,
            client.stream("GET", running.url + "/ping", headers=SPOOFED) as over_tls12,
        ):
            address = client_address(over_tls12)
        with httpx.Client(http2=True, verify=tls_files.context(), timeout=60) as client:
            over_http2 = client.get(running.url + "/ping")
        assert (over_tls12.status_code, over_tls12.http_version) == (200, "HTTP/1.1")
        assert (over_http2.status_code, over_http2.http_version) == (200, "HTTP/2")
        [line] = lines_of(running, over_tls12.headers["x-amzn-RequestId"])
        assert f" {address}] " in line
    finally:
        assert running.stop() == 0, running.log()
