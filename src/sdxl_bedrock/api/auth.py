"""Who may call: AWS SigV4 signatures, verified with botocore's own signer, and Bearer API keys.

Both checks pass everything while `Settings.auth_enabled` is False (no keys configured, like a local
emulator) and raise `AccessDenied` otherwise (Bedrock: 403 AccessDeniedException):

- `check_bedrock_auth(settings, scope, headers, body, now=None)` accepts `Authorization: AWS4-HMAC-SHA256
  Credential=ID/DATE/REGION/bedrock/aws4_request, SignedHeaders=..., Signature=...` signed with a key pair
  from `Settings.access_keys` (any region, `host` among the signed headers, or HTTP/2's `:authority` as the
  JavaScript SDK signs it, and `X-Amz-Security-Token` too when sent) whose `X-Amz-Date` is within 15 minutes
  of `now`; or `Authorization: Bearer TOKEN` as `check_bearer` does. `scope` is the ASGI scope (method, raw
  path, query string); `now` is for tests. It is two steps, which the Bedrock routes call apart:
  `check_bedrock_credentials(settings, scope, headers, now=None)`, everything the headers alone decide
  (scheme, token, key id, credential scope, clock skew, signed headers), before the body is read, so that a
  request without valid credentials is refused before its body takes memory; and
  `check_bedrock_signature(settings, scope, headers, body, authorization)`, the body's hash and the
  signature, once the body is read (it hashes up to 25 MB: call it on a host thread).
- `check_bearer(settings, headers)`: `Authorization: Bearer TOKEN` with TOKEN in `Settings.api_keys`; for
  faces that take only API keys (the Stability face).

No message or log line holds a secret, a token or a signature.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from botocore.auth import SIGV4_TIMESTAMP, SigV4Auth
from botocore.awsrequest import AWSRequest, HTTPHeaders
from botocore.credentials import Credentials
from starlette.datastructures import Headers
from starlette.types import Scope

from sdxl_bedrock.config import Settings
from sdxl_bedrock.errors import AccessDenied

log = logging.getLogger(__name__)

SIGV4_ALGORITHM = "AWS4-HMAC-SHA256"
SERVICE = "bedrock"
SCOPE_TERMINATOR = "aws4_request"
MAX_CLOCK_SKEW = timedelta(minutes=15)
# The request's host as a signed header: `host`, or over HTTP/2 the pseudo-header that replaces it (the
# JavaScript SDK v3 signs `:authority`; the ASGI server hands its value over as `host`).
HOST_HEADERS = ("host", ":authority")

MISSING_TOKEN = "Missing Authentication Token"
UNKNOWN_ACCESS_KEY = "The security token included in the request is invalid."
SIGNATURE_MISMATCH = (
    "The request signature we calculated does not match the signature you provided. "
    "Check your AWS Secret Access Key and signing method."
)
INVALID_API_KEY = "Authentication failed: Please make sure your API Key is valid."
UNSUPPORTED_SCHEME = "The Authorization header must use AWS4-HMAC-SHA256 or Bearer."
CONTENT_HASH_MISMATCH = "The provided 'x-amz-content-sha256' header does not match what was computed."


@dataclass(frozen=True)
class SigV4Authorization:
    """The parts of an `Authorization: AWS4-HMAC-SHA256 ...` header."""

    access_key_id: str
    scope_date: str
    region: str
    service: str
    terminator: str
    signed_headers: tuple[str, ...]
    signature: str


class ClientSignedHeadersSigV4(SigV4Auth):
    """botocore's SigV4 over exactly the headers the client says it signed.

    botocore's own choice leaves out headers other SDKs may sign (user-agent, expect, ...) and adds `host`
    when missing; a server must sign what the client signed, so the request given to it holds only those.
    """

    def headers_to_sign(self, request: AWSRequest) -> HTTPHeaders:
        return request.headers


def check_bedrock_auth(
    settings: Settings, scope: Scope, headers: Headers, body: bytes, now: datetime | None = None
) -> None:
    authorization = check_bedrock_credentials(settings, scope, headers, now)
    if authorization is not None:
        check_bedrock_signature(settings, scope, headers, body, authorization)


def check_bedrock_credentials(
    settings: Settings, scope: Scope, headers: Headers, now: datetime | None = None
) -> SigV4Authorization | None:
    """What the headers alone decide. Returns the SigV4 authorization whose signature is left to check
    with the body, or None when nothing is left (auth off, a bearer token). Raises AccessDenied."""
    if not settings.auth_enabled:
        return None
    try:
        scheme, _, _ = authorization_of(headers).partition(" ")
        if scheme.lower() == "bearer":
            check_bearer(settings, headers)
            return None
        if scheme == SIGV4_ALGORITHM:
            return check_sigv4_credentials(settings, headers, now or datetime.now(UTC))
        raise AccessDenied(UNSUPPORTED_SCHEME)
    except AccessDenied as denial:
        log_refusal(scope, denial)
        raise


def check_bedrock_signature(
    settings: Settings, scope: Scope, headers: Headers, body: bytes, authorization: SigV4Authorization
) -> None:
    """The body's hash and the signature of the request `check_bedrock_credentials` let through. Raises
    AccessDenied."""
    try:
        check_content_hash(headers, body)
        secret = settings.access_keys[authorization.access_key_id]
        credentials = Credentials(authorization.access_key_id, secret, headers.get("x-amz-security-token"))
        request = request_as_signed(scope, headers, authorization.signed_headers, body)
        expected = expected_signature(request, credentials, authorization.region, headers["x-amz-date"])
        if not hmac.compare_digest(expected.encode(), authorization.signature.encode()):
            raise AccessDenied(SIGNATURE_MISMATCH)
    except AccessDenied as denial:
        log_refusal(scope, denial)
        raise


def log_refusal(scope: Scope, denial: AccessDenied) -> None:
    log.info("refused %s %s: %s", scope.get("method"), scope.get("path"), denial.message)


def check_bearer(settings: Settings, headers: Mapping[str, str]) -> None:
    if not settings.auth_enabled:
        return
    scheme, _, token = authorization_of(headers).partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise AccessDenied(INVALID_API_KEY)
    if not token_is_known(token.strip(), settings.api_keys):
        raise AccessDenied(INVALID_API_KEY)


def authorization_of(headers: Mapping[str, str]) -> str:
    authorization = headers.get("authorization", "").strip()
    if not authorization:
        raise AccessDenied(MISSING_TOKEN)
    return authorization


def token_is_known(token: str, known_tokens: Iterable[str]) -> bool:
    # Compare fixed-length digests against every key, so neither the length nor the place of a match shows.
    token_digest = hashlib.sha256(token.encode()).digest()
    matched = False
    for known in known_tokens:
        matched |= hmac.compare_digest(token_digest, hashlib.sha256(known.encode()).digest())
    return matched


def check_sigv4_credentials(settings: Settings, headers: Headers, now: datetime) -> SigV4Authorization:
    authorization = parse_sigv4_authorization(authorization_of(headers))
    amz_date = headers.get("x-amz-date", "")
    signed_at = parse_amz_date(amz_date)
    check_credential_scope(authorization, amz_date)
    check_clock_skew(amz_date, signed_at, now)
    if authorization.access_key_id not in settings.access_keys:
        raise AccessDenied(UNKNOWN_ACCESS_KEY)
    check_signed_header_set(authorization.signed_headers, headers)
    return authorization


def parse_sigv4_authorization(authorization: str) -> SigV4Authorization:
    _, _, parameters = authorization.partition(" ")
    fields: dict[str, str] = {}
    for part in parameters.split(","):
        name, _, value = part.strip().partition("=")
        fields[name] = value.strip()
    missing = [name for name in ("Credential", "SignedHeaders", "Signature") if not fields.get(name)]
    if missing:
        raise AccessDenied(" ".join(f"Authorization header requires '{name}' parameter." for name in missing))
    credential = fields["Credential"].split("/")
    if len(credential) != 5 or not all(credential):
        raise AccessDenied("Credential must have the form ID/YYYYMMDD/REGION/SERVICE/aws4_request.")
    access_key_id, scope_date, region, service, terminator = credential
    return SigV4Authorization(
        access_key_id=access_key_id,
        scope_date=scope_date,
        region=region,
        service=service,
        terminator=terminator,
        signed_headers=tuple(name.strip().lower() for name in fields["SignedHeaders"].split(";")),
        signature=fields["Signature"],
    )


def parse_amz_date(amz_date: str) -> datetime:
    if not amz_date:
        raise AccessDenied("Authorization header requires existence of an 'X-Amz-Date' header.")
    try:
        return datetime.strptime(amz_date, SIGV4_TIMESTAMP).replace(tzinfo=UTC)
    except ValueError:
        raise AccessDenied(
            f"X-Amz-Date must be in ISO-8601 basic format (YYYYMMDD'T'HHMMSS'Z'), got {amz_date[:32]!r}."
        ) from None


def check_credential_scope(authorization: SigV4Authorization, amz_date: str) -> None:
    if authorization.service != SERVICE:
        raise AccessDenied(f"Credential should be scoped to correct service: '{SERVICE}'.")
    if authorization.terminator != SCOPE_TERMINATOR:
        raise AccessDenied(
            f"Credential should be scoped with a valid terminator: '{SCOPE_TERMINATOR}', "
            f"not '{authorization.terminator[:32]}'."
        )
    if authorization.scope_date != amz_date[:8]:
        raise AccessDenied(
            "Date in Credential scope does not match YYYYMMDD from ISO-8601 version of date from HTTP: "
            f"'{authorization.scope_date[:32]}' != '{amz_date[:8]}', from '{amz_date}'."
        )


def check_clock_skew(amz_date: str, signed_at: datetime, now: datetime) -> None:
    now_text = now.strftime(SIGV4_TIMESTAMP)
    if signed_at < now - MAX_CLOCK_SKEW:
        earliest = (now - MAX_CLOCK_SKEW).strftime(SIGV4_TIMESTAMP)
        raise AccessDenied(
            f"Signature expired: {amz_date} is now earlier than {earliest} ({now_text} - 15 min.)"
        )
    if signed_at > now + MAX_CLOCK_SKEW:
        latest = (now + MAX_CLOCK_SKEW).strftime(SIGV4_TIMESTAMP)
        raise AccessDenied(
            f"Signature not yet current: {amz_date} is still later than {latest} ({now_text} + 15 min.)"
        )


def check_signed_header_set(signed_headers: tuple[str, ...], headers: Headers) -> None:
    if not any(name in signed_headers for name in HOST_HEADERS):
        raise AccessDenied("'Host' must be a 'SignedHeader' in the AWS Authorization.")
    # A session token that is not signed could be swapped for another by anyone on the way.
    if "x-amz-security-token" in headers and "x-amz-security-token" not in signed_headers:
        raise AccessDenied("'X-Amz-Security-Token' must be a 'SignedHeader' in the AWS Authorization.")


def check_content_hash(headers: Headers, body: bytes) -> None:
    # botocore signs a present X-Amz-Content-SHA256 in place of hashing the body, so it must be the body's.
    declared = headers.get("x-amz-content-sha256")
    if declared is not None and declared != hashlib.sha256(body).hexdigest():
        raise AccessDenied(CONTENT_HASH_MISMATCH)


def request_as_signed(
    scope: Scope, headers: Headers, signed_headers: tuple[str, ...], body: bytes
) -> AWSRequest:
    """The request as the client's signer saw it: the path still percent-encoded, only the signed headers."""
    raw_path: bytes = scope.get("raw_path") or scope["path"].encode()
    path = raw_path.decode("latin-1").split("?", 1)[0]
    query = scope.get("query_string", b"").decode("latin-1")
    url = f"https://{headers.get('host', 'localhost')}{path}" + (f"?{query}" if query else "")
    request = AWSRequest(method=scope["method"], url=url, data=body)
    for name in signed_headers:
        for value in headers.getlist("host" if name in HOST_HEADERS else name):
            request.headers[name] = value
    return request


def expected_signature(request: AWSRequest, credentials: Credentials, region: str, amz_date: str) -> str:
    """The signature botocore's SigV4Auth.add_auth would make at amz_date, without reading the clock."""
    signer = ClientSignedHeadersSigV4(credentials, SERVICE, region)
    request.context["timestamp"] = amz_date
    canonical_request = signer.canonical_request(request)
    string_to_sign = signer.string_to_sign(request, canonical_request)
    return str(signer.signature(string_to_sign, request))
