"""Hostile clients (issue 21): connections held without being used, bodies trickled or held, requests
without credentials, pages of other sites, odd paths and methods. Every socket a test opens is closed by it,
on loopback, in bounded loops."""

from __future__ import annotations

import asyncio
import json
import socket
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import pytest

from sdxl_bedrock.api.auth import MISSING_TOKEN, UNKNOWN_ACCESS_KEY
from sdxl_bedrock.config import Settings
from sdxl_bedrock.serve.server import open_warning
from tests.conftest import AUTH_KEY_ID, RunningServer, bedrock, metric, start_server
from tests.e2e.test_resilience import rss_bytes

MODEL = "stability.stable-diffusion-xl-v1"
INVOKE = f"/model/{MODEL}/invoke"
IDLE_TIMEOUT_S = 2
BODY_TIMEOUT_S = 4
MAX_CONNECTIONS = 240
BODY_BYTES_IN_FLIGHT = 50_000_000
SMALL_BODY = json.dumps({"text_prompts": [{"text": "a kite"}], "width": 64, "height": 64, "steps": 10})
# The one web origin whose pages the guarded server lets call it (--allowed-origins).
APP_ORIGIN = "https://app.example.com"


@pytest.fixture(scope="module")
def guarded_server(tmp_path_factory: pytest.TempPathFactory, cache_dir: Path) -> Iterator[RunningServer]:
    """Short deadlines, a connection limit and a small body budget, so that the tests reach them quickly."""
    running = start_server(
        tmp_path_factory.mktemp("guarded-logs"),
        *("--model", "tiny", "--relaxed-sizes", "-v"),
        *("--idle-timeout", str(IDLE_TIMEOUT_S), "--body-timeout", str(BODY_TIMEOUT_S)),
        *("--max-connections", str(MAX_CONNECTIONS), "--max-body-bytes-in-flight", str(BODY_BYTES_IN_FLIGHT)),
        *("--allowed-hosts", "gpu.internal", "--allowed-origins", APP_ORIGIN),
    )
    yield running
    running.stop()


def address(server: RunningServer) -> tuple[str, int]:
    parts = urlsplit(server.url)
    assert parts.hostname is not None and parts.port is not None
    return parts.hostname, parts.port


def head(path: str, length: int, **headers: str) -> bytes:
    lines = [f"POST {path} HTTP/1.1", "Host: 127.0.0.1", f"Content-Length: {length}"]
    lines += [f"{name.replace('_', '-')}: {value}" for name, value in headers.items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


async def read_answer(reader: asyncio.StreamReader, timeout_s: float = 60) -> bytes:
    """What the server sends until it closes the connection (a reset ends it too)."""
    answer = b""
    try:
        async with asyncio.timeout(timeout_s):
            while chunk := await reader.read(65536):
                answer += chunk
    except ConnectionError:
        pass
    return answer


# ---- connections held without being used -------------------------------------------------------------


def test_idle_and_trickling_connections_are_closed_while_ping_answers(guarded_server: RunningServer) -> None:
    """200 connections that send nothing, 20 that trickle a body and 10 that trickle a request head: /ping
    keeps answering, and each of them is closed by its deadline."""
    host, port = address(guarded_server)

    async def trickle(writer: asyncio.StreamWriter, data: bytes) -> None:
        try:
            for byte in data:
                writer.write(bytes([byte]))
                await writer.drain()
                await asyncio.sleep(0.25)
        except ConnectionError:
            pass  # closed by the server: what the test waits for

    async def main() -> None:
        idle = [await asyncio.open_connection(host, port) for _ in range(200)]
        bodies = [await asyncio.open_connection(host, port) for _ in range(20)]
        heads = [await asyncio.open_connection(host, port) for _ in range(10)]
        tasks = []
        try:
            for _, writer in bodies:
                writer.write(head(INVOKE, 1000))
                tasks.append(asyncio.ensure_future(trickle(writer, b"x" * 1000)))
            for _, writer in heads:
                tasks.append(asyncio.ensure_future(trickle(writer, head(INVOKE, 10) + b"x" * 10)))
            async with httpx.AsyncClient(timeout=10) as client:
                for _ in range(10):  # for longer than every deadline
                    assert (await client.get(guarded_server.url + "/ping")).status_code == 200
                    await asyncio.sleep(0.5)
            for reader, _ in idle:
                assert await read_answer(reader) == b""
            for reader, _ in bodies:
                answer = await read_answer(reader)
                assert answer.startswith(b"HTTP/1.1 408"), answer[:200]
                assert b"ModelTimeoutException" in answer and b"did not arrive within" in answer
            for reader, _ in heads:
                assert not (await read_answer(reader)).startswith(b"HTTP/1.1 2")
        finally:
            for task in tasks:
                task.cancel()
            for _, writer in [*idle, *bodies, *heads]:
                writer.close()

    asyncio.run(main())
    assert metric(guarded_server, "sdxl_connections_timed_out_total") >= 200
    # Closed ones linger a moment (to drop what their clients still send): then only /metrics' own is open.
    deadline = time.monotonic() + 30
    while metric(guarded_server, "sdxl_open_connections") > 1 and time.monotonic() < deadline:
        time.sleep(0.2)
    assert metric(guarded_server, "sdxl_open_connections") == 1


def test_connections_past_the_limit_are_refused_in_words(guarded_server: RunningServer) -> None:
    host, port = address(guarded_server)

    async def main() -> None:
        held = [await asyncio.open_connection(host, port) for _ in range(MAX_CONNECTIONS)]
        try:
            await asyncio.sleep(0.2)
            reader, writer = await asyncio.open_connection(host, port)
            writer.write(b"GET /ping HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
            answer = await read_answer(reader)
            writer.close()
            assert answer.startswith(b"HTTP/1.1 503 Service Unavailable\r\n")
            assert b"ServiceUnavailableException" in answer and b"too many open connections" in answer
        finally:
            for _, held_writer in held:
                held_writer.close()

    asyncio.run(main())
    # The held ones close; the server takes connections again.
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            if httpx.get(guarded_server.url + "/ping", timeout=5).status_code == 200:
                break
        except httpx.TransportError:
            time.sleep(0.2)
    assert metric(guarded_server, "sdxl_connections_refused_total") >= 1


# ---- bodies ----------------------------------------------------------------------------------------------


def hold_bodies(server: RunningServer, count: int, size: int, head_bytes: bytes) -> list[socket.socket]:
    """`count` connections, each sending `head_bytes` and as much of a `size`-byte body (one byte short) as
    the server takes in a few seconds."""
    sockets = []
    for _ in range(count):
        connection = socket.create_connection(address(server))
        connection.sendall(head_bytes)
        connection.setblocking(False)
        sockets.append(connection)
    chunk = b"x" * 65536
    sent = dict.fromkeys(sockets, 0)
    deadline = time.monotonic() + 3
    while time.monotonic() < deadline:
        progressed = False
        for connection in sockets:
            left = size - 1 - sent[connection]
            if left <= 0:
                continue
            try:
                sent[connection] += connection.send(chunk[:left])
                progressed = True
            except (BlockingIOError, ConnectionError):
                pass
        if not progressed:
            time.sleep(0.05)
    return sockets


def test_bodies_in_flight_are_capped(guarded_server: RunningServer) -> None:
    """24 connections holding 24 MB bodies one byte short: the server holds no more than its budget of them
    in memory, and answers each 408 at its deadline."""
    rss_before = rss_bytes(guarded_server.process.pid)
    size = 24_000_000
    sockets = hold_bodies(guarded_server, 24, size, head(INVOKE, size))
    try:
        grown = rss_bytes(guarded_server.process.pid) - rss_before
        print(f"RSS grew by {grown / 1e6:.0f} MB while 24 bodies of 24 MB were held")
        assert grown < BODY_BYTES_IN_FLIGHT + 100_000_000
        for connection in sockets:
            connection.setblocking(True)
            connection.settimeout(60)
            answer = connection.recv(65536)
            assert answer.startswith(b"HTTP/1.1 408"), answer[:200]
    finally:
        for connection in sockets:
            connection.close()


@pytest.mark.parametrize(
    ("headers", "message"),
    [
        ({}, MISSING_TOKEN),
        ({"Authorization": "Bearer not-a-key"}, "Authentication failed"),
        (
            {
                "Authorization": "AWS4-HMAC-SHA256 "
                "Credential=AKIDUNKNOWN/{date}/us-east-1/bedrock/aws4_request, "
                "SignedHeaders=host;x-amz-date, Signature=00",
                "X-Amz-Date": "{stamp}",
            },
            UNKNOWN_ACCESS_KEY,
        ),
    ],
    ids=["no credentials", "wrong token", "unknown key id"],
)
def test_credentials_are_refused_before_the_body_is_read(
    auth_server: RunningServer, headers: dict[str, str], message: str
) -> None:
    """The head of a 24 MB request without valid credentials is answered 403 at once: not a byte of the body
    is sent."""
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    filled = {name: value.format(date=stamp[:8], stamp=stamp) for name, value in headers.items()}
    assert AUTH_KEY_ID not in json.dumps(filled)
    with socket.create_connection(address(auth_server), timeout=60) as connection:
        connection.sendall(head(INVOKE, 24_000_000, **{k.replace("-", "_"): v for k, v in filled.items()}))
        answer = connection.recv(65536)
    assert answer.startswith(b"HTTP/1.1 403"), answer[:300]
    assert b"AccessDeniedException" in answer
    assert message.encode() in answer


def test_held_bodies_without_credentials_take_no_memory(auth_server: RunningServer) -> None:
    rss_before = rss_bytes(auth_server.process.pid)
    size = 24_000_000
    sockets = hold_bodies(auth_server, 24, size, head(INVOKE, size))
    try:
        grown = rss_bytes(auth_server.process.pid) - rss_before
        print(f"RSS grew by {grown / 1e6:.0f} MB while 24 unauthenticated bodies of 24 MB were held")
        assert grown < 100_000_000
    finally:
        for connection in sockets:
            connection.close()


def test_http2_streams_without_credentials_take_no_memory(auth_server: RunningServer) -> None:
    """16 streams of one HTTP/2 connection, each a 24 MB body without credentials: each is answered before
    its body is read (the server then resets the stream, RFC 9113 8.1, which httpx reports as an error)."""
    rss_before = rss_bytes(auth_server.process.pid)

    async def body() -> AsyncIterator[bytes]:
        for _ in range(24_000_000 // 65536):
            yield b"x" * 65536

    async def main() -> list[object]:
        async with httpx.AsyncClient(http1=False, http2=True, timeout=60) as client:

            async def one() -> object:
                try:
                    response = await client.post(
                        auth_server.url + INVOKE, content=body(), headers={"Content-Length": str(24_000_000)}
                    )
                except httpx.HTTPError as error:
                    return type(error).__name__
                return response.status_code

            return await asyncio.gather(*(one() for _ in range(16)))

    outcomes = asyncio.run(main())
    grown = rss_bytes(auth_server.process.pid) - rss_before
    print(f"RSS grew by {grown / 1e6:.0f} MB for 16 HTTP/2 streams of 24 MB without credentials: {outcomes}")
    assert grown < 100_000_000
    assert 200 not in outcomes


def test_a_client_that_leaves_while_sending_its_body_is_no_server_error(
    guarded_server: RunningServer,
) -> None:
    closed_before = metric(guarded_server, "sdxl_requests_total", status="499")
    with socket.create_connection(address(guarded_server)) as connection:
        connection.sendall(head(INVOKE, 1000) + b"{" * 100)
        time.sleep(0.5)
    deadline = time.monotonic() + 30
    while metric(guarded_server, "sdxl_requests_total", status="499") == closed_before:
        assert time.monotonic() < deadline, guarded_server.log()[-3000:]
        time.sleep(0.1)
    text = httpx.get(guarded_server.url + "/metrics").text
    assert not [
        line for line in text.splitlines() if 'status="5' in line and line.startswith("sdxl_requests")
    ]
    log = guarded_server.log()
    assert "the client disconnected while sending its body" in log
    assert "Traceback" not in log


# ---- browsers: Host and Origin -------------------------------------------------------------------------


def test_a_cross_site_text_plain_post_is_refused(server: RunningServer) -> None:
    """What a page on any site can make a browser send without a CORS preflight."""
    response = httpx.post(
        server.url + INVOKE,
        content=SMALL_BODY,
        headers={"Content-Type": "text/plain", "Origin": "http://evil.example"},
        timeout=60,
    )
    assert response.status_code == 403
    assert response.headers["x-amzn-errortype"].startswith("AccessDeniedException:")
    assert "--allowed-origins" in response.json()["message"]
    # The server's own page (the playground) may.
    own = httpx.post(server.url + INVOKE, content=SMALL_BODY, headers={"Origin": server.url}, timeout=300)
    assert own.status_code == 200


def test_a_page_of_an_allowed_origin_may_call_and_read_the_answer(guarded_server: RunningServer) -> None:
    """What a browser does for a page of an `--allowed-origins` origin that POSTs JSON with a key: a CORS
    preflight, then the request; the answer carries the headers that let the page read it."""
    preflight = httpx.options(
        guarded_server.url + INVOKE,
        headers={
            "Origin": APP_ORIGIN,
            "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "authorization, content-type",
            "Access-Control-Request-Private-Network": "true",
        },
        timeout=30,
    )
    assert preflight.status_code == 200, preflight.text
    assert preflight.headers["access-control-allow-private-network"] == "true"
    assert preflight.headers["access-control-allow-origin"] == APP_ORIGIN
    assert "POST" in preflight.headers["access-control-allow-methods"]
    assert "authorization" in preflight.headers["access-control-allow-headers"].lower()
    answer = httpx.post(
        guarded_server.url + INVOKE,
        content=SMALL_BODY,
        headers={"Origin": APP_ORIGIN, "Content-Type": "application/json"},
        timeout=300,
    )
    assert answer.status_code == 200, answer.text
    assert answer.headers["access-control-allow-origin"] == APP_ORIGIN
    refused = httpx.post(
        guarded_server.url + INVOKE, content=SMALL_BODY, headers={"Origin": "http://evil.example"}, timeout=30
    )
    assert refused.status_code == 403
    assert "access-control-allow-origin" not in refused.headers


def test_a_request_that_names_another_host_is_refused(
    server: RunningServer, guarded_server: RunningServer
) -> None:
    """After a DNS rebinding, the attacker's page reaches 127.0.0.1 under its own host name."""
    response = httpx.get(server.url + "/ping", headers={"Host": "rebind.evil.example"}, timeout=30)
    assert response.status_code == 403
    assert "--allowed-hosts" in response.json()["message"]
    assert httpx.get(server.url + "/ping", headers={"Host": "localhost"}, timeout=30).status_code == 200
    named = httpx.get(guarded_server.url + "/ping", headers={"Host": "gpu.internal:8080"}, timeout=30)
    assert named.status_code == 200


def test_no_content_type_is_needed(server: RunningServer) -> None:
    """boto3 sends none when contentType is left out."""
    answer = bedrock(server.url).invoke_model(modelId=MODEL, body=SMALL_BODY)  # type: ignore[attr-defined]
    assert json.loads(answer["body"].read())["result"] == "success"


def test_a_non_loopback_address_without_auth_is_warned_about() -> None:
    warning = open_warning(Settings(host="0.0.0.0"))
    assert warning is not None and "with auth off" in warning
    assert open_warning(Settings(host="0.0.0.0", api_keys=["k"])) is None
    assert open_warning(Settings(host="127.0.0.1")) is None


# ---- smaller ones ----------------------------------------------------------------------------------------


def test_a_trailing_slash_is_bedrocks_404_not_a_redirect(server: RunningServer) -> None:
    for path in (INVOKE + "/", "/ping/"):
        response = httpx.post(
            server.url + path, content=SMALL_BODY, headers={"Host": "localhost"}, timeout=30
        )
        assert response.status_code == 404
        assert "location" not in response.headers
        assert response.headers["x-amzn-errortype"].startswith("ResourceNotFoundException:")


@pytest.mark.parametrize("method", ["HEAD", "OPTIONS"])
@pytest.mark.parametrize("path", [INVOKE, f"/model/{MODEL}/invoke-with-response-stream"])
def test_head_and_options_are_405_with_allow(server: RunningServer, method: str, path: str) -> None:
    response = httpx.request(method, server.url + path, timeout=30)
    assert response.status_code == 405
    assert response.headers["allow"] == "POST"
    assert response.headers["x-amzn-errortype"].startswith("UnknownOperationException:")


def test_stability_head_is_405_in_stabilitys_shape(server: RunningServer) -> None:
    response = httpx.request(
        "OPTIONS", server.url + "/v1/generation/stable-diffusion-xl-1024-v1-0/text-to-image"
    )
    assert response.status_code == 405
    assert response.headers["allow"] == "POST"
    assert response.json()["name"] == "method_not_allowed"


def test_json_errors_say_nosniff(server: RunningServer) -> None:
    response = httpx.post(server.url + INVOKE, content=b"not json", timeout=30)
    assert response.status_code == 400
    assert response.headers["x-content-type-options"] == "nosniff"


def test_control_characters_in_a_path_reach_the_log_escaped(auth_server: RunningServer) -> None:
    """A refused request's path is logged (the server runs with -v): its escape sequence and line break
    arrive as text, not as a terminal command and a forged line."""
    response = httpx.post(
        auth_server.url + "/model/%1b%5b2J%0d%0aFORGED/invoke",
        content=b"{}",
        headers={"Origin": "http://evil.example"},
        timeout=30,
    )
    assert response.status_code == 403
    deadline = time.monotonic() + 10
    while "FORGED" not in auth_server.log() and time.monotonic() < deadline:
        time.sleep(0.1)
    log = auth_server.log()
    assert "/model/\\x1b[2J\\x0d\\x0aFORGED/invoke" in log
    assert "\x1b" not in log and "\rFORGED" not in log
