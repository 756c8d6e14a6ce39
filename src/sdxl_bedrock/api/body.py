"""Reading a request body under the 25 MB limit, before any of it is decoded."""

from __future__ import annotations

from fastapi import Request

from sdxl_bedrock.config import BODY_LIMIT_BYTES
from sdxl_bedrock.errors import MalformedBody, Problem, ProblemKind

TOO_LARGE = Problem((), f"the request body is larger than {BODY_LIMIT_BYTES} bytes", ProblemKind.TOO_LARGE)


async def read_body(request: Request, limit: int = BODY_LIMIT_BYTES) -> bytes:
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise MalformedBody(TOO_LARGE, field="body")
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise MalformedBody(TOO_LARGE, field="body")
        chunks.append(chunk)
    return b"".join(chunks)
