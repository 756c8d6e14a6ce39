"""The SigV4 and Bearer checks, fed requests exactly as boto3 (or botocore's signer) prepared them."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import unquote, urlsplit

import boto3
import pytest
from botocore.auth import SIGV4_TIMESTAMP, SigV4Auth
from botocore.awsrequest import AWSPreparedRequest, AWSRequest
from botocore.credentials import Credentials
from starlette.datastructures import Headers

from sdxl_bedrock.api.auth import (
    CONTENT_HASH_MISMATCH,
    INVALID_API_KEY,
    MISSING_TOKEN,
    SIGNATURE_MISMATCH,
    UNKNOWN_ACCESS_KEY,
    UNSUPPORTED_SCHEME,
    check_bearer,
    check_bedrock_auth,
)
from sdxl_bedrock.config import Settings
from sdxl_bedrock.errors import AccessDenied

MODEL = "stability.stable-diffusion-xl-v1"
ARN = f"arn:aws:bedrock:us-east-1::foundation-model/{MODEL}"
ENDPOINT = "https://bedrock-runtime.test:8443"
KEY_ID = "AKIDTEST"
SECRET = "secret123"
API_KEY = "tok-1"
SETTINGS = Settings(access_keys={KEY_ID: SECRET}, api_keys=frozenset({API_KEY}))
BODY = json.dumps({"text_prompts": [{"text": "a lighthouse"}], "steps": 10}).encode()


@pytest.fixture(autouse=True)
def no_bearer_token_in_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    # boto3 would send a Bearer token instead of signing if one were set.
    monkeypatch.delenv("AWS_BEARER_TOKEN_BEDROCK", raising=False)


@dataclasses.dataclass(frozen=True)
class SentRequest:
    """A request as it leaves the client: what the server's ASGI scope and headers will hold."""

    method: str
    raw_path: str
    query: str
    headers: tuple[tuple[str, str], ...]
    body: bytes

    def scope(self) -> dict[str, Any]:
        return {
            "type": "http",
            "method": self.method,
            "path": unquote(self.raw_path),  # what a server makes of it; signatures cover raw_path
            "raw_path": self.raw_path.encode(),
            "query_string": self.query.encode(),
        }

    def header_map(self) -> Headers:
        return Headers(raw=[(name.encode(), value.encode()) for name, value in self.headers])

    def header(self, name: str) -> str:
        return self.header_map()[name]

    def with_header(self, name: str, value: str) -> SentRequest:
        return dataclasses.replace(self, headers=(*self.without_header(name).headers, (name, value)))

    def without_header(self, name: str) -> SentRequest:
        return dataclasses.replace(self, headers=tuple(h for h in self.headers if h[0] != name))

    def signed_at(self) -> datetime:
        return datetime.strptime(self.header("x-amz-date"), SIGV4_TIMESTAMP).replace(tzinfo=UTC)


def sent(prepared: AWSPreparedRequest) -> SentRequest:
    url = urlsplit(prepared.url)
    # The HTTP client adds Host from the URL when it sends; botocore signed that same value.
    headers = [("host", url.netloc)]
    for name, value in prepared.headers.items():
        headers.append((name.lower(), value.decode() if isinstance(value, bytes) else value))
    body = prepared.body or b""
    return SentRequest(prepared.method, url.path, url.query, tuple(headers), bytes(body))


class Captured(Exception):
    def __init__(self, request: AWSPreparedRequest) -> None:
        super().__init__("captured")
        self.request = request


def sent_by_boto3(
    model_id: str = MODEL,
    *,
    body: bytes = BODY,
    secret: str = SECRET,
    session_token: str | None = None,
    region: str = "us-east-1",
    operation: str = "invoke_model",
) -> SentRequest:
    client = boto3.client(
        "bedrock-runtime",
        endpoint_url=ENDPOINT,
        region_name=region,
        aws_access_key_id=KEY_ID,
        aws_secret_access_key=secret,
        aws_session_token=session_token,
    )

    def capture(request: AWSPreparedRequest, **_: Any) -> None:
        raise Captured(request)

    client.meta.events.register("before-send", capture)
    with pytest.raises(Captured) as captured:
        getattr(client, operation)(
            modelId=model_id, body=body, contentType="application/json", accept="application/json"
        )
    return sent(captured.value.request)


def signed_by_botocore(
    path: str = f"/model/{MODEL}/invoke",
    *,
    service: str = "bedrock",
    query: str = "",
    headers: dict[str, str] | None = None,
) -> SentRequest:
    url = ENDPOINT + path + (f"?{query}" if query else "")
    request = AWSRequest("POST", url, data=BODY, headers=headers or {"Content-Type": "application/json"})
    SigV4Auth(Credentials(KEY_ID, SECRET), service, "us-east-1").add_auth(request)
    return sent(request.prepare())


def check(request: SentRequest, settings: Settings = SETTINGS, now: datetime | None = None) -> None:
    check_bedrock_auth(settings, request.scope(), request.header_map(), request.body, now)


def refusal(request: SentRequest, settings: Settings = SETTINGS, now: datetime | None = None) -> str:
    with pytest.raises(AccessDenied) as denied:
        check(request, settings, now)
    return denied.value.message


@pytest.mark.parametrize(
    "model_id",
    [MODEL, f"{MODEL}:0", ARN, f"arn:aws:bedrock:eu-west-1::foundation-model/{MODEL}:0"],
)
@pytest.mark.parametrize("operation", ["invoke_model", "invoke_model_with_response_stream"])
def test_boto3_signed_requests_pass(model_id: str, operation: str) -> None:
    check(sent_by_boto3(model_id, operation=operation))


def test_an_arn_is_signed_over_the_still_percent_encoded_path() -> None:
    request = sent_by_boto3(ARN)
    assert "%2F" in request.raw_path and "%3A" in request.raw_path
    check(request)
    # The decoded path is another canonical URI (botocore encodes the path it is given once more).
    decoded = dataclasses.replace(request, raw_path=request.raw_path.replace("%3A", ":"))
    assert refusal(decoded) == SIGNATURE_MISMATCH


def test_any_region_passes() -> None:
    check(sent_by_boto3(region="eu-central-1"))


def test_auth_off_accepts_anything() -> None:
    check(sent_by_boto3().without_header("authorization"), Settings())
    check(sent_by_boto3(secret="wrong"), Settings())


def test_no_authorization_is_a_missing_token() -> None:
    assert refusal(sent_by_boto3().without_header("authorization")) == MISSING_TOKEN


def test_an_unknown_access_key_is_an_invalid_security_token() -> None:
    request = sent_by_boto3()
    assert refusal(request, Settings(access_keys={"AKIDOTHER": SECRET})) == UNKNOWN_ACCESS_KEY
    assert refusal(request, Settings(api_keys=frozenset({API_KEY}))) == UNKNOWN_ACCESS_KEY


def test_a_wrong_secret_does_not_match() -> None:
    assert refusal(sent_by_boto3(secret="secret124")) == SIGNATURE_MISMATCH


def test_a_body_changed_after_signing_does_not_match() -> None:
    request = sent_by_boto3()
    altered = request.body.replace(b"lighthouse", b"lightHouse")
    assert refusal(dataclasses.replace(request, body=altered)) == SIGNATURE_MISMATCH
    assert refusal(dataclasses.replace(request, body=b"")) == SIGNATURE_MISMATCH


@pytest.mark.parametrize(
    ("name", "value"),
    [("content-type", "application/x-json"), ("accept", "*/*"), ("host", "elsewhere.test:8443")],
)
def test_a_signed_header_changed_after_signing_does_not_match(name: str, value: str) -> None:
    request = sent_by_boto3()
    assert name in request.header("authorization")
    assert refusal(request.with_header(name, value)) == SIGNATURE_MISMATCH


def test_an_unsigned_header_may_change() -> None:
    request = sent_by_boto3()
    assert "user-agent" not in request.header("authorization").split("SignedHeaders=")[1]
    check(request.with_header("user-agent", "something else"))


class SignsEveryHeader(SigV4Auth):
    """A signer like other SDKs may have: no list of headers to leave out."""

    def headers_to_sign(self, request: AWSRequest) -> Any:
        headers = super().headers_to_sign(request)
        headers["user-agent"] = request.headers["User-Agent"]
        return headers


def test_headers_botocore_would_not_sign_are_verified_when_the_client_signed_them() -> None:
    request = AWSRequest(
        "POST", f"{ENDPOINT}/model/{MODEL}/invoke", data=BODY, headers={"User-Agent": "sdk/1"}
    )
    SignsEveryHeader(Credentials(KEY_ID, SECRET), "bedrock", "us-east-1").add_auth(request)
    signed = sent(request.prepare())
    assert "user-agent" in signed.header("authorization")
    check(signed)
    assert refusal(signed.with_header("user-agent", "sdk/2")) == SIGNATURE_MISMATCH


class SignsAuthorityForHost(SigV4Auth):
    """The JavaScript SDK v3 over HTTP/2: no `host`, the `:authority` pseudo-header signed in its place."""

    def headers_to_sign(self, request: AWSRequest) -> Any:
        headers = super().headers_to_sign(request)
        headers[":authority"] = headers["host"]
        del headers["host"]
        return headers


def test_http2_authority_signed_in_place_of_host_passes() -> None:
    request = AWSRequest("POST", f"{ENDPOINT}/model/{MODEL}/invoke", data=BODY)
    SignsAuthorityForHost(Credentials(KEY_ID, SECRET), "bedrock", "us-east-1").add_auth(request)
    # The ASGI server hands the request's :authority over as `host`.
    signed = sent(request.prepare())
    assert "SignedHeaders=:authority;" in signed.header("authorization")
    check(signed)
    assert refusal(signed.with_header("host", "elsewhere.test:8443")) == SIGNATURE_MISMATCH


def test_a_changed_path_or_query_does_not_match() -> None:
    request = signed_by_botocore(query="b=2&a=1")
    check(request)
    assert refusal(dataclasses.replace(request, query="a=1&b=3")) == SIGNATURE_MISMATCH
    moved = dataclasses.replace(
        request, raw_path=request.raw_path.replace("/invoke", "/invoke-with-response-stream")
    )
    assert refusal(moved) == SIGNATURE_MISMATCH


def test_clock_skew_up_to_15_minutes_passes() -> None:
    request = sent_by_boto3()
    check(request, now=request.signed_at() + timedelta(minutes=15))
    check(request, now=request.signed_at() - timedelta(minutes=15))


def test_a_signature_older_than_15_minutes_has_expired() -> None:
    request = signed_by_botocore()
    signed = request.header("x-amz-date")
    now = request.signed_at() + timedelta(minutes=20)
    earliest = (now - timedelta(minutes=15)).strftime(SIGV4_TIMESTAMP)
    now_text = now.strftime(SIGV4_TIMESTAMP)
    expected = f"Signature expired: {signed} is now earlier than {earliest} ({now_text} - 15 min.)"
    assert refusal(request, now=now) == expected


def test_a_signature_from_more_than_15_minutes_ahead_is_not_yet_current() -> None:
    request = signed_by_botocore()
    now = request.signed_at() - timedelta(minutes=16)
    assert refusal(request, now=now).startswith(f"Signature not yet current: {request.header('x-amz-date')}")


def test_a_missing_or_malformed_date_is_refused() -> None:
    request = sent_by_boto3()
    assert "X-Amz-Date" in refusal(request.without_header("x-amz-date"))
    assert "ISO-8601" in refusal(request.with_header("x-amz-date", "2024-01-01T00:00:00Z"))


def test_a_date_moved_after_signing_does_not_match() -> None:
    request = sent_by_boto3()
    later = (request.signed_at() + timedelta(seconds=1)).strftime(SIGV4_TIMESTAMP)
    assert later[:8] == request.header("x-amz-date")[:8], "re-run: the second crossed midnight"
    assert refusal(request.with_header("x-amz-date", later)) == SIGNATURE_MISMATCH


def test_a_credential_for_another_service_is_refused() -> None:
    message = refusal(signed_by_botocore(service="s3"))
    assert message == "Credential should be scoped to correct service: 'bedrock'."


def test_a_signature_without_host_is_refused() -> None:
    request = sent_by_boto3()
    authorization = request.header("authorization").replace("SignedHeaders=", "SignedHeaders=x-unused;")
    authorization = authorization.replace(";host;", ";")
    assert "host" not in authorization.split("SignedHeaders=")[1].split(",")[0]
    assert "'Host' must be a 'SignedHeader'" in refusal(request.with_header("authorization", authorization))


@pytest.mark.parametrize(
    "authorization",
    [
        f"AWS4-HMAC-SHA256 Credential={KEY_ID}/20240101/us-east-1/bedrock/aws4_request",
        "AWS4-HMAC-SHA256 SignedHeaders=host, Signature=abc",
        "AWS4-HMAC-SHA256 Credential=short/scope, SignedHeaders=host, Signature=abc",
    ],
)
def test_a_malformed_authorization_is_refused(authorization: str) -> None:
    refusal(sent_by_boto3().with_header("authorization", authorization))


def test_an_unknown_scheme_is_refused() -> None:
    assert refusal(sent_by_boto3().with_header("authorization", "Basic dXNlcjpwYXNz")) == UNSUPPORTED_SCHEME


def test_a_signed_session_token_passes() -> None:
    request = sent_by_boto3(session_token="session-token-1")
    assert "x-amz-security-token" in request.header("authorization")
    check(request)


def test_a_session_token_swapped_after_signing_does_not_match() -> None:
    request = sent_by_boto3(session_token="session-token-1")
    assert refusal(request.with_header("x-amz-security-token", "session-token-2")) == SIGNATURE_MISMATCH


def test_an_unsigned_session_token_is_refused() -> None:
    request = sent_by_boto3().with_header("x-amz-security-token", "session-token-1")
    assert "X-Amz-Security-Token" in refusal(request)


def test_a_content_hash_header_must_be_the_body_hash() -> None:
    body_hash = hashlib.sha256(BODY).hexdigest()
    signed_with_hash = signed_by_botocore(
        headers={"Content-Type": "application/json", "X-Amz-Content-SHA256": body_hash}
    )
    check(signed_with_hash)
    request = signed_by_botocore(
        headers={"Content-Type": "application/json", "X-Amz-Content-SHA256": "UNSIGNED-PAYLOAD"}
    )
    assert refusal(request) == CONTENT_HASH_MISMATCH


@pytest.mark.parametrize(
    ("authorization", "passes"),
    [
        (f"Bearer {API_KEY}", True),
        (f"bearer {API_KEY}", True),
        ("Bearer tok-2", False),
        (f"Bearer {API_KEY}x", False),
        ("Bearer ", False),
    ],
)
def test_bearer_tokens(authorization: str, passes: bool) -> None:
    request = sent_by_boto3().with_header("authorization", authorization)
    if passes:
        check(request)
        check_bearer(SETTINGS, request.header_map())
    else:
        assert refusal(request) == INVALID_API_KEY
        with pytest.raises(AccessDenied):
            check_bearer(SETTINGS, request.header_map())


def test_a_bearer_token_is_refused_when_only_access_keys_are_set() -> None:
    request = sent_by_boto3().with_header("authorization", f"Bearer {API_KEY}")
    assert refusal(request, Settings(access_keys={KEY_ID: SECRET})) == INVALID_API_KEY


def test_check_bearer_takes_only_bearer_tokens() -> None:
    check_bearer(Settings(), {})
    with pytest.raises(AccessDenied) as missing:
        check_bearer(SETTINGS, {})
    assert missing.value.message == MISSING_TOKEN
    with pytest.raises(AccessDenied) as signed:
        check_bearer(SETTINGS, sent_by_boto3().header_map())
    assert signed.value.message == INVALID_API_KEY


def rejected_requests() -> Iterator[tuple[SentRequest, Settings]]:
    yield sent_by_boto3(secret="secret124"), SETTINGS
    yield sent_by_boto3(), Settings(access_keys={"AKIDOTHER": SECRET})
    yield sent_by_boto3(body=b"{}").with_header("x-amz-date", "garbage"), SETTINGS
    yield sent_by_boto3().with_header("authorization", "Bearer not-the-token"), SETTINGS
    yield signed_by_botocore(service="s3"), SETTINGS


def test_no_refusal_or_log_line_shows_a_secret_or_a_signature(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger="sdxl_bedrock")
    for request, settings in rejected_requests():
        signature = request.header("authorization").rsplit("Signature=", 1)[-1]
        message = refusal(request, settings)
        for secret in (SECRET, "secret124", signature, "not-the-token"):
            assert secret not in message
            assert secret not in caplog.text
    assert caplog.text.count("refused") == 5
