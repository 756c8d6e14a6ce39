"""The guards every request passes (api/guards.py), without a server: Host and Origin, the caller watch, the
body's deadline and budget. The server-level tests are in tests/e2e/test_hostile_clients.py."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from pydantic import ValidationError
from starlette.datastructures import Headers
from starlette.types import Message

from sdxl_bedrock.api.guards import (
    CLIENT_CLOSED,
    BodyBudget,
    BodyGuard,
    CallerWatch,
    OriginPolicy,
    hostname_of,
    listens_on_loopback,
)
from sdxl_bedrock.config import Settings
from sdxl_bedrock.errors import AccessDenied, BodyTimeout
from sdxl_bedrock.logs import printable


def check(settings: Settings, **headers: str) -> None:
    OriginPolicy(settings).check(
        Headers(headers={name.replace("_", "-"): value for name, value in headers.items()})
    )


@pytest.mark.parametrize(
    "host", ["127.0.0.1:8080", "localhost:8080", "LOCALHOST", "[::1]:8080", "app.localhost:3000", "127.0.0.2"]
)
def test_a_loopback_server_answers_loopback_names(host: str) -> None:
    check(Settings(), host=host)


@pytest.mark.parametrize(
    "host",
    ["evil.example:8080", "127.0.0.1.nip.io:8080", "192.168.1.2:8080", "localhost.evil.example", "a b", ""],
)
def test_a_loopback_server_refuses_other_names(host: str) -> None:
    """A DNS-rebinding page's request names the page's own host (which now resolves to 127.0.0.1)."""
    with pytest.raises(AccessDenied, match="--allowed-hosts"):
        check(Settings(), host=host)


def test_allowed_hosts_add_to_the_loopback_names_and_any_is_any() -> None:
    settings = Settings(allowed_hosts="gpu.internal, api.example.com")
    for host in ("gpu.internal:8080", "API.example.com", "127.0.0.1:8080"):
        check(settings, host=host)
    with pytest.raises(AccessDenied):
        check(settings, host="evil.example")
    check(Settings(allowed_hosts="*"), host="evil.example")


def test_a_server_on_every_interface_answers_any_host_unless_told() -> None:
    check(Settings(host="0.0.0.0"), host="203.0.113.7:8080")
    only = Settings(host="0.0.0.0", allowed_hosts=["api.example.com"])
    check(only, host="api.example.com")
    with pytest.raises(AccessDenied):
        check(only, host="203.0.113.7:8080")
    with pytest.raises(AccessDenied):
        check(only, host="localhost")


def test_no_host_header_is_no_browser() -> None:
    check(Settings())


def test_origins() -> None:
    own = {"host": "127.0.0.1:8080"}
    check(Settings(), **own)  # an SDK: no Origin
    check(Settings(), **own, origin="http://127.0.0.1:8080")  # the playground
    check(Settings(), **own, origin="https://127.0.0.1:8080")  # behind a TLS proxy
    for origin in ("http://evil.example", "null", "http://127.0.0.1:9999", "http://localhost:8080"):
        with pytest.raises(AccessDenied, match="--allowed-origins"):
            check(Settings(), **own, origin=origin)
    check(Settings(allowed_origins="https://app.example.com/"), **own, origin="https://APP.example.com")
    check(Settings(allowed_origins="*"), **own, origin="http://evil.example")


def test_origins_must_be_origins() -> None:
    for bad in ("app.example.com", "https://app.example.com/path", "https://"):
        with pytest.raises(ValidationError, match="is not an origin"):
            Settings(allowed_origins=bad)


def test_loopback_addresses_and_names() -> None:
    assert (
        listens_on_loopback("127.0.0.1") and listens_on_loopback("::1") and listens_on_loopback("localhost")
    )
    assert not listens_on_loopback("0.0.0.0") and not listens_on_loopback("::")
    assert not listens_on_loopback("192.0.2.1")
    assert hostname_of("[::1]:8080") == "::1"
    assert hostname_of("example.com:http") is None
    assert hostname_of("user@example.com") is None


def test_control_characters_are_escaped_for_the_log() -> None:
    assert printable("/model/\x1b[2J\r\nFAKE LINE\x85") == "/model/\\x1b[2J\\x0d\\x0aFAKE LINE\\x85"


# ---- the caller watch and the body guard, on a plain ASGI app -------------------------------------------


class Channel:
    """The server's side of one request: the messages `receive` gives, in order, then nothing (it waits)."""

    def __init__(self, *messages: Message) -> None:
        self.messages = asyncio.Queue[Message]()
        for message in messages:
            self.messages.put_nowait(message)
        self.sent: list[Message] = []

    async def receive(self) -> Message:
        return await self.messages.get()

    async def send(self, message: Message) -> None:
        self.sent.append(message)


def scope() -> dict[str, Any]:
    return {"type": "http", "method": "POST", "path": "/", "headers": [], "state": {}}


def test_a_caller_who_leaves_after_its_body_cancels_its_handler() -> None:
    started, cancelled = asyncio.Event(), asyncio.Event()

    async def handler(scope: Any, receive: Any, send: Any) -> None:
        while (await receive()).get("more_body"):
            pass
        started.set()
        try:
            await asyncio.Event().wait()  # the generation
        except asyncio.CancelledError:
            cancelled.set()
            raise

    async def run() -> dict[str, Any]:
        request = scope()
        channel = Channel({"type": "http.request", "body": b"{}", "more_body": False})
        watched = asyncio.ensure_future(CallerWatch(handler)(request, channel.receive, channel.send))
        await started.wait()
        channel.messages.put_nowait({"type": "http.disconnect"})
        await asyncio.wait_for(watched, 5)
        return request

    request = asyncio.run(run())
    assert cancelled.is_set()
    assert request["state"][CLIENT_CLOSED] is True


def test_an_answered_caller_is_not_cancelled_by_the_disconnect_after_its_answer() -> None:
    async def handler(scope: Any, receive: Any, send: Any) -> None:
        await receive()
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"ok"})
        await asyncio.sleep(0.05)  # still returning when the server reports the closed stream

    async def run() -> dict[str, Any]:
        request = scope()
        channel = Channel(
            {"type": "http.request", "body": b"", "more_body": False}, {"type": "http.disconnect"}
        )
        await asyncio.wait_for(CallerWatch(handler)(request, channel.receive, channel.send), 5)
        return request

    assert CLIENT_CLOSED not in asyncio.run(run())["state"]


def test_a_body_that_does_not_come_in_time_is_a_body_timeout() -> None:
    raised: list[BaseException] = []

    async def handler(scope: Any, receive: Any, send: Any) -> None:
        try:
            while (await receive()).get("more_body"):
                pass
        except BodyTimeout as error:
            raised.append(error)

    async def run() -> None:
        channel = Channel({"type": "http.request", "body": b"x", "more_body": True})
        guard = BodyGuard(handler, Settings(body_timeout_s=0.2))
        await asyncio.wait_for(guard(scope(), channel.receive, channel.send), 5)
        assert guard.budget.used == 0

    asyncio.run(run())
    assert raised and "0.2 s" in raised[0].message


def test_the_body_budget_makes_bodies_wait_for_room() -> None:
    async def run() -> list[str]:
        budget = BodyBudget(100)
        order: list[str] = []
        await budget.take(80)

        async def second() -> None:
            await budget.take(40)
            order.append("second")

        waiting = asyncio.ensure_future(second())
        await asyncio.sleep(0.05)
        order.append("released")
        budget.give_back(80)
        await asyncio.wait_for(waiting, 5)
        assert budget.used == 40
        return order

    assert asyncio.run(run()) == ["released", "second"]
