"""The client's address through the front: every line a request logs names the address and port the
client connected from, over HTTP/1.1 and HTTP/2, and no header a client sends (X-Forwarded-For, Forwarded,
X-Real-IP) changes it."""

from __future__ import annotations

import json
import time

import httpx
import pytest

from tests.conftest import RunningServer

MODEL = "stability.stable-diffusion-xl-v1"
INVOKE = f"/model/{MODEL}/invoke"
# Addresses a client claims for itself; none of them is where it connects from.
SPOOFED = {
    "x-forwarded-for": "198.51.100.1",
    "forwarded": "for=198.51.100.2;proto=https",
    "x-real-ip": "198.51.100.3",
}
LOG_WAIT_S = 60


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
    auth_server: RunningServer, http2: bool
) -> None:
    """A request without credentials logs its refusal (-v) and its access line: both name the client."""
    sent = []
    with httpx.Client(http1=not http2, http2=http2, timeout=60) as client:
        for method, path, least in (("POST", INVOKE, 2), ("GET", "/ping", 1)):
            body = b"{}" if method == "POST" else None
            with client.stream(method, auth_server.url + path, content=body, headers=SPOOFED) as response:
                sent.append((response, client_address(response), least))
                response.read()
    assert [response.status_code for response, _, _ in sent] == [403, 200]
    assert {response.http_version for response, _, _ in sent} == {"HTTP/2" if http2 else "HTTP/1.1"}
    for response, address, least in sent:
        assert address.startswith("127.0.0.1:")
        request_id = response.headers["x-amzn-RequestId"]
        lines = lines_of(auth_server, request_id)
        assert len(lines) >= least, lines
        for line in lines:
            assert client_named(line) == address, line
            assert "198.51.100." not in line


def client_named(line: str) -> str:
    """The client a log line names: a text line's after its request id, a JSON line's `client`."""
    if line.startswith("{"):
        return str(json.loads(line)["client"])
    return line.split("[", 1)[1].split("]", 1)[0].split(" ")[1]
