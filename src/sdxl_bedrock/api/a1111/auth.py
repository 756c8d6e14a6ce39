"""Who may call the A1111 wire: HTTP Basic, as A1111's `--api-auth user:password`, or a Bearer API key.

With auth on (`--api-key` or `--access-key` given), a request needs `Authorization: Basic base64(user:pass)`
where either `pass` is an `--api-key` (any user name), or `user:pass` is an `--access-key ID:SECRET` pair;
or `Authorization: Bearer KEY` with an `--api-key`. Failures answer as A1111's do: 401 with
`WWW-Authenticate: Basic`, "Not authenticated" without credentials (FastAPI's HTTPBasic), "Incorrect
username or password" with wrong ones.
"""

from __future__ import annotations

import base64
import binascii
import hmac
from collections.abc import Mapping

from sdxl_bedrock.api.auth import token_is_known
from sdxl_bedrock.config import Settings
from sdxl_bedrock.errors import AccessDenied, MissingCredentials

NOT_AUTHENTICATED = "Not authenticated"
INCORRECT = "Incorrect username or password"


def check_auth(settings: Settings, headers: Mapping[str, str]) -> None:
    """Raises MissingCredentials or AccessDenied (both 401 here); passes everything while auth is off."""
    if not settings.auth_enabled:
        return
    scheme, _, credentials = headers.get("authorization", "").strip().partition(" ")
    if scheme.lower() == "bearer" and credentials.strip():
        if token_is_known(credentials.strip(), settings.api_keys):
            return
        raise AccessDenied(INCORRECT)
    if scheme.lower() != "basic" or not credentials.strip():
        raise MissingCredentials(NOT_AUTHENTICATED)
    try:
        user, separator, password = (
            base64.b64decode(credentials.strip(), validate=True).decode().partition(":")
        )
    except (binascii.Error, UnicodeDecodeError):
        raise AccessDenied(INCORRECT) from None
    if not separator:
        raise AccessDenied(INCORRECT)
    if token_is_known(password, settings.api_keys):
        return
    secret = settings.access_keys.get(user)
    if secret is not None and hmac.compare_digest(password.encode(), secret.encode()):
        return
    raise AccessDenied(INCORRECT)
