"""How every route reaches the server: the runtime, behind its wire's credential check, as FastAPI
dependencies (the full-stack FastAPI template's `SessionDep` shape).

A wire's routes declare `runtime: Caller` where `Caller = Annotated[Runtime, Depends(authenticated(check))]`
and `check(settings, headers)` is that wire's own credential check, raising its own refusal (each wire words
a missing or wrong key its way: Bedrock's AccessDeniedException, Stability's 401/403, OpenAI's 401, A1111's
Basic challenge). The check runs before the route's body, so before any body byte is read; a refusal is
answered in the shape of the wire whose route matched (Starlette puts the endpoint in the scope before the
dependencies run). The server's own routes (health, playground) take `RuntimeDep`, with no check.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from typing import Annotated

from fastapi import Depends, Request

from sdxl_bedrock.config import Settings
from sdxl_bedrock.runtime import Runtime

CredentialCheck = Callable[[Settings, Mapping[str, str]], None]
"""`(settings, headers) -> None`: passes a caller the wire admits (everyone while auth is off), raises the
wire's refusal (AccessDenied, MissingCredentials) otherwise. Headers only, never the body."""


def runtime_of(request: Request) -> Runtime:
    """The app's runtime (made by `create_app`)."""
    runtime: Runtime = request.app.state.runtime
    return runtime


def authenticated(check: CredentialCheck) -> Callable[[Request], Awaitable[Runtime]]:
    """A dependency: the runtime, once `check` has admitted the caller."""

    # async: FastAPI would run a plain function on its thread pool; the check is a few comparisons.
    async def caller(request: Request) -> Runtime:
        runtime = runtime_of(request)
        check(runtime.settings, request.headers)
        return runtime

    return caller


async def _runtime(request: Request) -> Runtime:
    return runtime_of(request)


RuntimeDep = Annotated[Runtime, Depends(_runtime)]
