"""What every request passes on its way to a route, whatever its wire: ASGI middleware.

- `OriginGuard`: the `Host` a request names and the `Origin` of the web page that sent it, if any. A page on
  another site can make a browser POST to this server (no Content-Type is needed, so no CORS preflight stops
  it), and after a DNS rebinding it can read the answer too; the rebound request names the attacker's host.
  So while the server listens on a loopback address only loopback names are answered (and those of
  `--allowed-hosts`), and a request whose `Origin` is neither the server's own nor one of `--allowed-origins`
  is refused (Forbidden, 403 on every wire). SDKs send no `Origin`, so they are never refused for it.
- `CallerWatch`: once a request's body is read, a caller that disconnects (the ASGI server's
  `http.disconnect`: a closed HTTP/1.1 connection, a reset HTTP/2 stream) cancels the request's handler, so
  its generation is dropped from the queue or from the running batch at the next step. A caller that leaves
  while still sending its body is an info line, not an error. Both count as status 499 in `/metrics`.
- `BodyGuard`: a body must arrive within `--body-timeout` of the request head (else BodyTimeout, 408), the
  bytes of bodies being received across all connections stay under `--max-body-bytes-in-flight` (a body
  beyond it waits for room, within its deadline), and a body past `DRAIN_LIMIT_BYTES` is refused without
  reading further.

Errors raised here before the route runs are answered in the shape of the wire that claims the path.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import socket
from urllib.parse import urlsplit

from starlette.datastructures import Headers
from starlette.requests import ClientDisconnect
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from sdxl_bedrock.api.body import DRAIN_LIMIT_BYTES, TOO_LARGE
from sdxl_bedrock.config import ANY, BODY_LIMIT_BYTES, Settings
from sdxl_bedrock.errors import AccessDenied, BodyTimeout, Forbidden, MalformedBody, ServiceError
from sdxl_bedrock.logs import request_id_var

log = logging.getLogger(__name__)

# The status /metrics and the access log give a request whose caller left before its answer (nginx's), and
# the key of the request's ASGI state that tells the request middleware so.
CLIENT_CLOSED_REQUEST = 499
CLIENT_CLOSED = "client_closed"


# ---- Host and Origin ---------------------------------------------------------------------------------------


def listens_on_loopback(host: str) -> bool:
    """Whether `host` (a --host value: an address or a name) names only loopback addresses."""
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        pass
    if is_loopback_name(host):
        return True
    try:
        found = socket.getaddrinfo(host, None, type=socket.SOCK_STREAM)
    except OSError:
        return False
    return bool(found) and all(ipaddress.ip_address(entry[4][0]).is_loopback for entry in found)


def is_loopback_name(hostname: str) -> bool:
    """`localhost`, `*.localhost` (which browsers resolve to loopback themselves, RFC 6761), or a loopback
    address."""
    hostname = hostname.lower().rstrip(".")
    if hostname == "localhost" or hostname.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(hostname).is_loopback
    except ValueError:
        return False


def hostname_of(authority: str) -> str | None:
    """`example.com:8080` -> `example.com`, `[::1]:80` -> `::1`; None when it is no host[:port]."""
    try:
        parts = urlsplit(f"//{authority}")
        parts.port  # noqa: B018 (raises ValueError for a port that is not a number)
    except ValueError:
        return None
    if not parts.hostname or parts.username is not None or parts.path:
        return None
    return parts.hostname.rstrip(".")


class OriginPolicy:
    """Which `Host` and `Origin` values a request may carry (see the module docstring)."""

    def __init__(self, settings: Settings) -> None:
        self.loopback = listens_on_loopback(settings.host)
        self.any_host = ANY in settings.allowed_hosts or (not settings.allowed_hosts and not self.loopback)
        self.hosts = frozenset(name.lower().rstrip(".") for name in settings.allowed_hosts if name != ANY)
        self.any_origin = ANY in settings.allowed_origins
        self.origins = frozenset(settings.allowed_origins) - {ANY}

    def check(self, headers: Headers) -> None:
        """Raises Forbidden for a Host or an Origin this server does not answer."""
        host = headers.get("host")
        if host is not None and not self.any_host:
            hostname = hostname_of(host)
            if hostname is None or not (
                hostname.lower() in self.hosts or (self.loopback and is_loopback_name(hostname))
            ):
                raise Forbidden(
                    f"This server does not answer to the host {host[:100]!r}; "
                    "a name it should answer to can be added with --allowed-hosts."
                )
        origin = headers.get("origin")
        if origin is not None and not self.any_origin and not self.origin_allowed(origin, host):
            raise Forbidden(
                f"Requests from web pages of {origin[:100]!r} are not allowed; "
                "an origin to allow can be added with --allowed-origins."
            )

    def origin_allowed(self, origin: str, host: str | None) -> bool:
        origin = origin.strip().lower().rstrip("/")
        if origin in self.origins:
            return True
        # The server's own pages (the playground): the origin's host[:port] is the one the request names.
        # Its scheme is not compared: behind a TLS proxy the page is https and this hop plain http.
        _, separator, authority = origin.partition("://")
        return bool(separator) and host is not None and authority == host.strip().lower()


class OriginGuard:
    def __init__(self, app: ASGIApp, settings: Settings) -> None:
        self.app = app
        self.policy = OriginPolicy(settings)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            try:
                self.policy.check(Headers(scope=scope))
            except AccessDenied as denial:
                log.info("refused %s %s: %s", scope["method"], scope["path"], denial.message)
                await answer_error(scope, receive, send, denial)
                return
        await self.app(scope, receive, send)


async def answer_error(scope: Scope, receive: Receive, send: Send, error: ServiceError) -> None:
    """`error` in the shape of the wire that claims the request's path."""
    wires = scope["app"].state.wires
    await wires.for_scope(scope).error_response(error, request_id_var.get())(scope, receive, send)


# ---- callers who leave -----------------------------------------------------------------------------------


class CallerWatch:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        body_read = asyncio.Event()
        caller_left = asyncio.Event()
        answered = asyncio.Event()

        async def app_receive() -> Message:
            if body_read.is_set():
                # The body is read: all that can come now is the disconnect, which the watcher receives.
                await caller_left.wait()
                return {"type": "http.disconnect"}
            message = await receive()
            if message["type"] == "http.disconnect":
                caller_left.set()
            elif not message.get("more_body", False):
                body_read.set()
            return message

        async def app_send(message: Message) -> None:
            if message["type"] == "http.response.body" and not message.get("more_body", False):
                answered.set()
            await send(message)

        handler = asyncio.ensure_future(self.app(scope, app_receive, app_send))

        async def watch() -> None:
            await body_read.wait()
            message = await receive()
            if message["type"] == "http.disconnect" and not answered.is_set():
                caller_left.set()
                handler.cancel()

        watcher = asyncio.ensure_future(watch())
        try:
            await handler
        except asyncio.CancelledError:
            current = asyncio.current_task()
            if not caller_left.is_set() or (current is not None and current.cancelling()):
                raise
            log.info("the client disconnected before its answer: its work is dropped")
            scope["state"][CLIENT_CLOSED] = True
        except ClientDisconnect:
            log.info("the client disconnected while sending its body")
            scope["state"][CLIENT_CLOSED] = True
        finally:
            watcher.cancel()


# ---- bodies ----------------------------------------------------------------------------------------------


class BodyBudget:
    """Bytes of request bodies being received, across all connections, at most `limit`."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.used = 0
        self._waiters: list[asyncio.Future[None]] = []

    async def take(self, size: int) -> None:
        """Wait until `size` more bytes fit, and count them."""
        while self.used + size > self.limit:
            waiter = asyncio.get_running_loop().create_future()
            self._waiters.append(waiter)
            await waiter
        self.used += size

    def give_back(self, size: int) -> None:
        self.used -= size
        waiters, self._waiters = self._waiters, []
        for waiter in waiters:
            if not waiter.done():
                waiter.set_result(None)


class BodyGuard:
    def __init__(self, app: ASGIApp, settings: Settings, budget: BodyBudget | None = None) -> None:
        self.app = app
        self.timeout_s = settings.body_timeout_s
        self.budget = budget or BodyBudget(settings.max_body_bytes_in_flight)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        deadline = asyncio.get_running_loop().time() + self.timeout_s
        received = 0
        held = 0  # what this body counts against the budget
        complete = False

        async def guarded_receive() -> Message:
            nonlocal received, held, complete
            if complete:
                return await receive()
            try:
                async with asyncio.timeout_at(deadline):
                    message = await receive()
                    if message["type"] != "http.request":
                        return message
                    received += len(message.get("body", b""))
                    # No route keeps more than the body limit: what comes past it is read only to be dropped.
                    more = min(received, BODY_LIMIT_BYTES) - held
                    if more > 0 and message.get("more_body", False):
                        await self.budget.take(more)
                        held += more
            except TimeoutError:
                raise BodyTimeout(
                    f"The request body did not arrive within the server's {self.timeout_s:g} s limit."
                ) from None
            if received > DRAIN_LIMIT_BYTES:
                raise MalformedBody(TOO_LARGE, field="body")
            if not message.get("more_body", False):
                complete = True
                self.budget.give_back(held)
                held = 0
            return message

        try:
            await self.app(scope, guarded_receive, send)
        finally:
            self.budget.give_back(held)
