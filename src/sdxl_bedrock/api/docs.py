"""Interactive API docs at GET /docs: Swagger UI on /openapi.json, as FastAPI serves it, but from files inside
the package, so that the page works offline and fetches nothing from a CDN.

Swagger UI itself is vendored unchanged from npm's `swagger-ui-dist` (`api_docs/swagger-ui/`, its README
names the version and sums). FastAPI's own `/docs` page starts Swagger UI from an inline script, which a
Content-Security-Policy of 'self' refuses; ours (`api_docs/index.html`) loads `api_docs/init.js` instead,
with FastAPI's default parameters, and carries the playground's policy. The files are served by Starlette's
StaticFiles (ETag and 304 answers: the bundle is 1.7 MB).
"""

from __future__ import annotations

import os
from functools import cache
from importlib import resources

from fastapi import APIRouter
from starlette.responses import Response
from starlette.staticfiles import StaticFiles
from starlette.types import Scope

from sdxl_bedrock.api.playground import SECURITY_HEADERS

PATH = "/docs"
FOLDER = "api_docs"


class PageFiles(StaticFiles):
    """StaticFiles whose answers carry the page's security headers."""

    def file_response(
        self,
        full_path: str | os.PathLike[str],
        stat_result: os.stat_result,
        scope: Scope,
        status_code: int = 200,
    ) -> Response:
        response = super().file_response(full_path, stat_result, scope, status_code)
        response.headers.update(SECURITY_HEADERS)
        return response


@cache
def page() -> bytes:
    return (resources.files("sdxl_bedrock") / FOLDER / "index.html").read_bytes()


router = APIRouter(include_in_schema=False)


@router.get(PATH)
async def docs_page() -> Response:
    return Response(page(), media_type="text/html; charset=utf-8", headers=SECURITY_HEADERS)


# The page's script and Swagger UI's files: /docs/init.js, /docs/swagger-ui/swagger-ui-bundle.js, ...
router.mount(PATH, PageFiles(packages=[("sdxl_bedrock", FOLDER)]), name="docs-files")
