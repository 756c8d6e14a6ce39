"""Reading a request body under the 25 MB limit, before any of it is decoded.

A body over the limit is still read to its end (and dropped) before the answer: a client that is still
sending when the answer comes and the connection closes never sees that answer (the AWS SDK for JavaScript
v3 fails with EPIPE over HTTP/1.1 and hangs over HTTP/2). Reading is bounded: by the body deadline
(api/guards.py) and by DRAIN_LIMIT_BYTES, past which the answer goes at once and the connection closes.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator

from fastapi import Request

from sdxl_bedrock.config import BODY_LIMIT_BYTES
from sdxl_bedrock.errors import MalformedBody, Problem, ProblemKind, ServiceError

TOO_LARGE = Problem((), f"the request body is larger than {BODY_LIMIT_BYTES} bytes", ProblemKind.TOO_LARGE)
# A body too large is read (and dropped) up to this size so that its client sees the answer.
DRAIN_LIMIT_BYTES = 4 * BODY_LIMIT_BYTES


async def read_body(request: Request, limit: int = BODY_LIMIT_BYTES) -> bytes:
    """The body; MalformedBody (TOO_LARGE) past `limit` bytes, once the rest is read and dropped.

    Raises what reading raises besides: BodyTimeout past the body deadline, ClientDisconnect."""
    declared = request.headers.get("content-length")
    size = int(declared) if declared is not None and declared.isdigit() else None
    stream = request.stream()
    if size is not None and size > limit:
        if size <= DRAIN_LIMIT_BYTES:
            await drain(stream)
        raise MalformedBody(TOO_LARGE, field="body")
    chunks: list[bytes] = []
    size = 0
    async for chunk in stream:
        size += len(chunk)
        if size > limit:
            await drain(stream)
            raise MalformedBody(TOO_LARGE, field="body")
        chunks.append(chunk)
    return b"".join(chunks)


async def drain(stream: AsyncIterator[bytes]) -> None:
    """Read the rest of the body and drop it; stop at the body deadline or the drain limit (the answer then
    goes at once)."""
    with contextlib.suppress(ServiceError):
        async for _ in stream:
            pass
