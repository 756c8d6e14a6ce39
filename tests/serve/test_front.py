"""The front (front.py) over a stand-in upstream, an echo server on a Unix socket: first bytes under a
deadline, the connection limit, relaying both ways with closes passed on, the client's address passed on
in the name of the socket it connects from. The server-level tests are in tests/e2e/test_hostile_clients.py
and tests/e2e/test_client_address.py."""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
from starlette.types import Receive, Scope, Send

from sdxl_bedrock.metrics import Metrics
from sdxl_bedrock.serve.front import (
    H2_PREFACE,
    ClientAddress,
    ClientSide,
    Front,
    UpstreamSide,
    client_of_name,
    protocol_decided,
)

REFUSAL = b"HTTP/1.1 503 Service Unavailable\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"


def test_the_protocol_is_decided_by_the_first_byte_or_the_whole_preface() -> None:
    assert not protocol_decided(b"")
    assert protocol_decided(b"G")
    assert protocol_decided(b"POST /model/x/invoke HTTP/1.1\r\n")
    assert not protocol_decided(b"P")
    assert not protocol_decided(H2_PREFACE[:23])
    assert protocol_decided(H2_PREFACE)
    assert protocol_decided(b"PRX")


async def echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """Echo what comes; at the client's end of data, say `bye` and close."""
    while data := await reader.read(65536):
        writer.write(data)
        await writer.drain()
    writer.write(b"bye")
    await writer.drain()
    writer.close()


async def answer_early(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """Answer after the first bytes and close, as a server refusing a request before its body does."""
    await reader.read(10)
    writer.write(b"refused")
    await writer.drain()
    writer.close()


Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


@asynccontextmanager
async def front_over_echo(
    tmp_path: Path, handler: Handler = echo, clients: Path | None = None, **options: float
) -> AsyncIterator[tuple[int, Front]]:
    upstream = tmp_path / "echo.sock"
    echo_server = await asyncio.start_unix_server(handler, str(upstream))
    listener = socket.create_server(("127.0.0.1", 0))
    front = Front(
        upstream,
        max_connections=int(options.get("max_connections", 8)),
        deadline_s=options.get("deadline_s", 5.0),
        refusal=lambda: REFUSAL,
        metrics=Metrics(),
        clients=clients,
    )
    await front.start(listener, None, 16)
    try:
        yield listener.getsockname()[1], front
    finally:
        front.stop_accepting()
        front.close_all()
        echo_server.close()
        await echo_server.wait_closed()


def run(
    tmp_path: Path, test: Callable[[int, Front], Awaitable[None]], handler: Handler = echo, **options: float
) -> None:
    async def main() -> None:
        async with front_over_echo(tmp_path, handler, **options) as (port, front):
            await asyncio.wait_for(test(port, front), 30)

    asyncio.run(main())


def test_bytes_are_relayed_both_ways_and_a_half_close_is_passed_on(tmp_path: Path) -> None:
    async def test(port: int, front: Front) -> None:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        big = bytes(range(256)) * 20_000  # 5 MB: flow control both ways
        writer.write(b"GET / HTTP/1.1\r\n" + big)
        writer.write_eof()
        answer = await reader.read()
        assert answer == b"GET / HTTP/1.1\r\n" + big + b"bye"
        writer.close()

    run(tmp_path, test)


def test_a_connection_that_sends_nothing_is_closed_at_its_deadline(tmp_path: Path) -> None:
    async def test(port: int, front: Front) -> None:
        silent = [await asyncio.open_connection("127.0.0.1", port) for _ in range(3)]
        # Half of HTTP/2's preface decides nothing: granian would wait for the rest forever.
        stalled_reader, stalled_writer = await asyncio.open_connection("127.0.0.1", port)
        stalled_writer.write(H2_PREFACE[:10])
        for reader, writer in [*silent, (stalled_reader, stalled_writer)]:
            assert await reader.read() == b""  # closed by the front
            writer.close()
        assert front.metrics.connections_timed_out._value.get() == 4
        assert not front.open

    run(tmp_path, test, deadline_s=0.3)


def test_a_connection_past_the_limit_is_refused_in_words(tmp_path: Path) -> None:
    async def test(port: int, front: Front) -> None:
        kept = [await asyncio.open_connection("127.0.0.1", port) for _ in range(2)]
        for _, writer in kept:
            writer.write(b"GET")
        while len(front.open) < 2:
            await asyncio.sleep(0.01)
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        assert await reader.read() == REFUSAL
        writer.close()
        assert front.metrics.connections_refused._value.get() == 1
        for _, kept_writer in kept:
            kept_writer.close()
        while front.open:
            await asyncio.sleep(0.01)
        # Room again: the next one is relayed.
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"again")
        writer.write_eof()
        assert await reader.read() == b"againbye"
        writer.close()

    run(tmp_path, test, max_connections=2)


def test_an_early_answer_reaches_a_client_that_is_still_sending(tmp_path: Path) -> None:
    """The upstream answers and closes while the client sends on: the front reads and drops the rest, so
    that no reset discards the answer before the client reads it."""

    async def test(port: int, front: Front) -> None:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"POST / HTTP/1.1\r\n")
        for _ in range(80):  # 5 MB, sent after the answer came
            writer.write(b"x" * 65536)
            await writer.drain()
        assert await reader.read() == b"refused"
        writer.close()

    run(tmp_path, test, answer_early)


async def stall(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """Read a first byte, then nothing: a request whose body waits (for the body budget, say)."""
    await reader.read(1)
    try:
        await asyncio.sleep(3600)
    except asyncio.CancelledError:
        writer.close()


def test_a_client_faster_than_the_upstream_is_held_back(tmp_path: Path) -> None:
    """What the front has read from a client but granian has not taken stays within a read and a buffer's
    high-water mark: the client's reading is paused, and the body waits in the client's own buffers."""

    async def test(port: int, front: Front) -> None:
        _reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"POST / HTTP/1.1\r\n")
        chunk = b"x" * 65536
        for _ in range(128):  # 8 MB, far past what the sockets on both sides buffer
            writer.write(chunk)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(writer.drain(), 0.02)
        (client,) = front.open
        assert client.upstream is not None
        assert client.upstream.get_write_buffer_size() <= 512 * 1024
        writer.close()

    run(tmp_path, test, stall)


def test_a_client_that_disconnects_closes_its_upstream(tmp_path: Path) -> None:
    async def test(port: int, front: Front) -> None:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"hello")
        assert await reader.readexactly(5) == b"hello"
        writer.transport.abort()
        while front.open:
            await asyncio.sleep(0.01)
        writer.close()

    run(tmp_path, test)


@pytest.mark.parametrize("data", [b"", b"GET"])
def test_an_upstream_that_cannot_be_reached_closes_the_connection(tmp_path: Path, data: bytes) -> None:
    async def main() -> None:
        listener = socket.create_server(("127.0.0.1", 0))
        front = Front(
            tmp_path / "nobody.sock",
            max_connections=4,
            deadline_s=0.3,
            refusal=lambda: REFUSAL,
            metrics=Metrics(),
        )
        await front.start(listener, None, 16)
        try:
            reader, writer = await asyncio.open_connection("127.0.0.1", listener.getsockname()[1])
            writer.write(data)
            assert await asyncio.wait_for(reader.read(), 10) == b""
            writer.close()
        finally:
            front.stop_accepting()
            front.close_all()

    asyncio.run(main())


class RecordingTransport(asyncio.Transport):
    """The client's side of the front, recording what it is sent."""

    def __init__(self) -> None:
        super().__init__()
        self.sent = bytearray()
        self.ended = asyncio.Event()

    def write(self, data: bytes | bytearray | memoryview) -> None:
        assert not self.ended.is_set(), "written after its end"
        self.sent += data

    def can_write_eof(self) -> bool:
        return True

    def write_eof(self) -> None:
        self.ended.set()

    def close(self) -> None:
        self.ended.set()

    def resume_reading(self) -> None:
        pass

    def pause_reading(self) -> None:
        pass

    def get_extra_info(self, name: str, default: object = None) -> object:
        return default


def test_an_answer_sent_before_the_upstream_closed_survives_a_failed_write(tmp_path: Path) -> None:
    """granian answers a request early and closes; the client's next bytes reach the front before it has read
    that answer, and writing them fails. The answer still reaches the client (asyncio alone would drop it
    unread). The order is forced: nothing yields to the event loop between granian's close and the write."""
    answer = b"HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"

    async def main() -> None:
        loop = asyncio.get_running_loop()
        front = Front(
            tmp_path / "unused.sock",
            max_connections=1,
            deadline_s=5,
            refusal=lambda: REFUSAL,
            metrics=Metrics(),
        )
        client = ClientSide(front)
        recording = RecordingTransport()
        client.transport = recording
        ours, granian = socket.socketpair()
        upstream, _ = await loop.create_unix_connection(lambda: UpstreamSide(client), sock=ours)
        client.upstream = upstream
        granian.sendall(answer)
        granian.close()
        client.data_received(b"the rest of the body")
        await asyncio.wait_for(recording.ended.wait(), 60)
        assert bytes(recording.sent) == answer
        upstream.close()

    asyncio.run(main())


def test_each_relayed_connection_comes_from_a_socket_named_for_its_client(tmp_path: Path) -> None:
    """What granian reports as the peer names the client's address and port; no name stays behind."""
    clients = tmp_path / "clients"
    clients.mkdir()
    peers: list[str] = []

    async def record_peer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        peers.append(writer.get_extra_info("peername"))
        await echo(reader, writer)

    async def main() -> None:
        async with front_over_echo(tmp_path, record_peer, clients=clients) as (port, _):
            local_ports = []
            for _ in range(3):
                reader, writer = await asyncio.open_connection("127.0.0.1", port)
                local_ports.append(writer.get_extra_info("sockname")[1])
                writer.write(b"GET / HTTP/1.1\r\n\r\n")
                writer.write_eof()
                assert (await asyncio.wait_for(reader.read(), 30)).endswith(b"bye")
                writer.close()
        assert peers == [f"{clients}/127.0.0.1:{local}" for local in local_ports]
        assert list(clients.iterdir()) == []

    asyncio.run(main())


@pytest.mark.parametrize(
    ("name", "client"),
    [
        ("203.0.113.7:51234", ("203.0.113.7", 51234)),
        ("[2001:db8::1]:443", ("2001:db8::1", 443)),
        ("[fe80::1%eth0]:8080", ("fe80::1%eth0", 8080)),
        ("http.sock", None),
        ("evil.example.com:80", None),
        ("203.0.113.7:port", None),
    ],
)
def test_a_socket_name_is_read_back_as_the_address_it_spells(name: str, client: object) -> None:
    assert client_of_name(name) == client


def client_seen(clients: Path | None, peer: tuple[str, str]) -> object:
    """The `client` an app behind ClientAddress sees, where granian reports `peer`."""
    seen: list[object] = []

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        seen.append(scope["client"])

    async def nothing(*_: object) -> Any:
        raise AssertionError("the middleware neither receives nor sends")

    asyncio.run(ClientAddress(app, clients=clients)({"type": "http", "client": peer}, nothing, nothing))
    return seen[0]


def test_only_a_name_in_the_fronts_folder_is_read_as_a_client(tmp_path: Path) -> None:
    assert client_seen(tmp_path, (f"{tmp_path}/203.0.113.7:51234", "0")) == ("203.0.113.7", 51234)
    # Anything else granian could report is no client's address: an unnamed socket, a name elsewhere, a
    # name in a folder below, and a TCP peer (which only a server without the front has).
    assert client_seen(tmp_path, ("", "0")) is None
    assert client_seen(tmp_path, ("/tmp/203.0.113.7:51234", "0")) is None
    assert client_seen(tmp_path, (f"{tmp_path}/x/203.0.113.7:51234", "0")) is None
    assert client_seen(tmp_path, ("203.0.113.7", "51234")) is None
    # Without the front granian's peer is the client; granian gives its port as text, ASGI as an int.
    assert client_seen(None, ("203.0.113.7", "51234")) == ("203.0.113.7", 51234)
