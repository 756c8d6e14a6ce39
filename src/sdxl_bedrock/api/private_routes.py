"""`--auth-all-routes`: the server's own pages and documents answer only callers with credentials.

By default, with keys configured, only the wires' routes check credentials (Bedrock's and Stability's, each
its own way); `/metrics`, `/openapi.json`, `/docs` and the playground stay open, like a Bedrock endpoint's
health and documentation. With `Settings.auth_all_routes` those need what the Bedrock routes take too: a
SigV4 signature from a configured key pair (of the request as sent, with an empty body), or `Authorization:
Bearer` with a configured API key. `/ping` always stays open: load balancers and orchestrators probe it
without credentials, and it tells nothing but whether the model is loaded.
"""

from __future__ import annotations

from starlette.datastructures import Headers
from starlette.types import ASGIApp, Receive, Scope, Send

from sdxl_bedrock.api import Wires
from sdxl_bedrock.api.auth import check_bedrock_auth
from sdxl_bedrock.config import Settings
from sdxl_bedrock.errors import AccessDenied

PRIVATE_PATHS = frozenset({"/", "/metrics", "/openapi.json", "/docs"})
PRIVATE_PREFIXES = ("/playground/", "/docs/")


def is_private(path: str) -> bool:
    """Whether `--auth-all-routes` puts `path` (a request's, or a route's template) behind credentials."""
    return path in PRIVATE_PATHS or path.startswith(PRIVATE_PREFIXES)


class PrivateRoutes:
    """ASGI middleware: with `settings.auth_all_routes`, a request for a private path without valid
    credentials is answered 403 AccessDeniedException in the shape of the wire that answers for its path
    (Bedrock's), before any route runs. Installed inside the request middleware, so that the refusal has a
    request id, a metric and a log line like any answer."""

    def __init__(self, app: ASGIApp, settings: Settings, wires: Wires) -> None:
        self.app = app
        self.settings = settings
        self.wires = wires

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and self.settings.auth_all_routes and is_private(scope["path"]):
            try:
                check_bedrock_auth(self.settings, scope, Headers(scope=scope), b"")
            except AccessDenied as denial:
                request_id = str(scope.get("state", {}).get("request_id", ""))
                response = self.wires.for_scope(scope).error_response(denial, request_id)
                await response(scope, receive, send)
                return
        await self.app(scope, receive, send)
