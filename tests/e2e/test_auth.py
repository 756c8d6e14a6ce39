"""Auth on a real server: boto3 signing, Bearer tokens over TLS, and refusals before any decoding.

Every refused request carries an init_image that is not base64: with good credentials it is a 400
ValidationException (see the control test), so a 403 proves auth ran before the body was decoded.
"""

from __future__ import annotations

import base64
import json
from datetime import UTC, datetime, timedelta
from typing import Any

import boto3
import botocore.auth
import httpx
import pytest
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.config import Config
from botocore.credentials import Credentials
from botocore.exceptions import ClientError

from sdxl_bedrock.api.auth import (
    INVALID_API_KEY,
    MISSING_TOKEN,
    SIGNATURE_MISMATCH,
    UNKNOWN_ACCESS_KEY,
)
from tests.conftest import AUTH_API_KEY, AUTH_KEY_ID, AUTH_SECRET, RunningServer, TlsFiles, gradient_png

MODEL = "stability.stable-diffusion-xl-v1"
ARN = f"arn:aws:bedrock:us-east-1::foundation-model/{MODEL}"
ACCESS_DENIED = "AccessDeniedException"

GOOD_BODY = json.dumps(
    {
        "text_prompts": [{"text": "a lighthouse"}],
        "init_image": base64.b64encode(gradient_png(64, 64)).decode(),
        "steps": 10,
        "seed": 7,
    }
).encode()
UNDECODABLE_BODY = json.dumps(
    {"text_prompts": [{"text": "a lighthouse"}], "init_image": "not base64 at all!", "steps": 10}
).encode()


@pytest.fixture(autouse=True)
def no_bearer_token_in_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("AWS_BEARER_TOKEN_BEDROCK", raising=False)


def client(
    url: str, *, secret: str = AUTH_SECRET, session_token: str | None = None, verify: Any = None
) -> Any:
    return boto3.client(
        "bedrock-runtime",
        endpoint_url=url,
        region_name="us-east-1",
        aws_access_key_id=AUTH_KEY_ID,
        aws_secret_access_key=secret,
        aws_session_token=session_token,
        verify=verify,
        config=Config(retries={"max_attempts": 1}, read_timeout=300),
    )


def invoke(bedrock: Any, body: bytes, model_id: str = MODEL) -> dict[str, Any]:
    response = bedrock.invoke_model(modelId=model_id, body=body, contentType="application/json")
    return dict(json.loads(response["body"].read()))


def refused_by_boto3(bedrock: Any, body: bytes = UNDECODABLE_BODY) -> dict[str, Any]:
    with pytest.raises(ClientError) as refused:
        invoke(bedrock, body)
    return dict(refused.value.response)


def signed_headers(
    url: str,
    body: bytes,
    *,
    session_token: str | None = None,
    signed_at: datetime | None = None,
) -> dict[str, str]:
    """Headers botocore's SigV4Auth makes for this request, at signed_at (naive UTC) or now."""
    request = AWSRequest("POST", url, data=body, headers={"Content-Type": "application/json"})
    signer = SigV4Auth(Credentials(AUTH_KEY_ID, AUTH_SECRET, session_token), "bedrock", "us-east-1")
    with pytest.MonkeyPatch.context() as patch:
        if signed_at is not None:
            patch.setattr(botocore.auth, "get_current_datetime", lambda: signed_at)
        signer.add_auth(request)
    return dict(request.headers.items())


def post(url: str, body: bytes, headers: dict[str, str]) -> httpx.Response:
    return httpx.post(url, content=body, headers=headers, timeout=300)


def assert_access_denied(response: httpx.Response, message: str) -> None:
    assert response.status_code == 403, response.text
    assert response.headers["x-amzn-errortype"].startswith(f"{ACCESS_DENIED}:")
    assert response.json() == {"message": message}


def invoke_url(server: RunningServer) -> str:
    return f"{server.url}/model/{MODEL}/invoke"


def test_the_right_key_generates(auth_server: RunningServer) -> None:
    result = invoke(client(auth_server.url), GOOD_BODY)
    assert result["result"] == "success"
    assert len(result["artifacts"]) == 1


def test_the_right_key_streams_with_an_arn(auth_server: RunningServer) -> None:
    response = client(auth_server.url).invoke_model_with_response_stream(modelId=ARN, body=GOOD_BODY)
    [event] = list(response["body"])
    assert json.loads(event["chunk"]["bytes"])["result"] == "success"


def test_the_undecodable_body_is_a_validation_error_once_signed_right(auth_server: RunningServer) -> None:
    # The control: with good credentials this body fails validation, so a 403 for it means auth came first.
    error = refused_by_boto3(client(auth_server.url))
    assert error["Error"]["Code"] == "ValidationException"
    assert error["ResponseMetadata"]["HTTPStatusCode"] == 400


def test_a_wrong_secret_is_access_denied(auth_server: RunningServer) -> None:
    error = refused_by_boto3(client(auth_server.url, secret="secret124"))
    assert error["Error"] == {"Code": ACCESS_DENIED, "Message": SIGNATURE_MISMATCH}
    assert error["ResponseMetadata"]["HTTPStatusCode"] == 403


def test_a_wrong_secret_is_access_denied_on_the_stream_too(auth_server: RunningServer) -> None:
    with pytest.raises(ClientError) as refused:
        client(auth_server.url, secret="secret124").invoke_model_with_response_stream(
            modelId=MODEL, body=UNDECODABLE_BODY
        )
    assert refused.value.response["Error"]["Code"] == ACCESS_DENIED
    assert refused.value.response["ResponseMetadata"]["HTTPStatusCode"] == 403


def test_an_unknown_access_key_is_access_denied(auth_server: RunningServer) -> None:
    bedrock = boto3.client(
        "bedrock-runtime",
        endpoint_url=auth_server.url,
        region_name="us-east-1",
        aws_access_key_id="AKIDOTHER",
        aws_secret_access_key=AUTH_SECRET,
        config=Config(retries={"max_attempts": 1}),
    )
    error = refused_by_boto3(bedrock)
    assert error["Error"] == {"Code": ACCESS_DENIED, "Message": UNKNOWN_ACCESS_KEY}


def test_no_authorization_is_access_denied(auth_server: RunningServer) -> None:
    response = post(invoke_url(auth_server), UNDECODABLE_BODY, {"content-type": "application/json"})
    assert_access_denied(response, MISSING_TOKEN)


def test_a_signature_from_20_minutes_ago_has_expired(auth_server: RunningServer) -> None:
    url = invoke_url(auth_server)
    twenty_minutes_ago = datetime.now(UTC).replace(tzinfo=None) - timedelta(minutes=20)
    headers = signed_headers(url, UNDECODABLE_BODY, signed_at=twenty_minutes_ago)
    response = post(url, UNDECODABLE_BODY, headers)
    assert response.status_code == 403, response.text
    assert response.json()["message"].startswith(
        f"Signature expired: {headers['X-Amz-Date']} is now earlier than"
    )


def test_a_fresh_botocore_signature_sent_by_httpx_passes(auth_server: RunningServer) -> None:
    url = invoke_url(auth_server)
    response = post(url, UNDECODABLE_BODY, signed_headers(url, UNDECODABLE_BODY))
    assert response.status_code == 400, response.text


def test_a_body_altered_after_signing_is_access_denied(auth_server: RunningServer) -> None:
    url = invoke_url(auth_server)
    headers = signed_headers(url, GOOD_BODY)
    response = post(url, UNDECODABLE_BODY, headers)
    assert_access_denied(response, SIGNATURE_MISMATCH)


def test_a_signed_session_token_passes(auth_server: RunningServer) -> None:
    result = invoke(client(auth_server.url, session_token="session-token-1"), GOOD_BODY)
    assert result["result"] == "success"


def test_an_unsigned_session_token_is_access_denied(auth_server: RunningServer) -> None:
    url = invoke_url(auth_server)
    headers = {**signed_headers(url, UNDECODABLE_BODY), "X-Amz-Security-Token": "session-token-1"}
    response = post(url, UNDECODABLE_BODY, headers)
    assert response.status_code == 403, response.text
    assert "X-Amz-Security-Token" in response.json()["message"]


@pytest.mark.parametrize(("token", "status"), [(AUTH_API_KEY, 400), ("tok-2", 403)])
def test_a_bearer_token_over_http(auth_server: RunningServer, token: str, status: int) -> None:
    headers = {"content-type": "application/json", "authorization": f"Bearer {token}"}
    response = post(invoke_url(auth_server), UNDECODABLE_BODY, headers)
    assert response.status_code == status, response.text
    if status == 403:
        assert response.json() == {"message": INVALID_API_KEY}


def test_boto3_signs_over_tls_too(tls_auth_server: RunningServer, tls_files: TlsFiles) -> None:
    result = invoke(client(tls_auth_server.url, verify=str(tls_files.cert)), GOOD_BODY)
    assert result["result"] == "success"


def test_boto3_sends_a_good_bearer_token_over_tls(
    tls_auth_server: RunningServer, tls_files: TlsFiles, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AWS_BEARER_TOKEN_BEDROCK", AUTH_API_KEY)
    # The client's own key pair is not configured on the server: only the Bearer token can pass.
    bedrock = client(tls_auth_server.url, secret="not-the-secret", verify=str(tls_files.cert))
    assert invoke(bedrock, GOOD_BODY)["result"] == "success"


def test_boto3_sends_a_bad_bearer_token_over_tls(
    tls_auth_server: RunningServer, tls_files: TlsFiles, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AWS_BEARER_TOKEN_BEDROCK", "tok-2")
    error = refused_by_boto3(client(tls_auth_server.url, verify=str(tls_files.cert)))
    assert error["Error"] == {"Code": ACCESS_DENIED, "Message": INVALID_API_KEY}
    assert error["ResponseMetadata"]["HTTPStatusCode"] == 403


def test_a_signature_passes_over_http2(tls_auth_server: RunningServer, tls_files: TlsFiles) -> None:
    # HTTP/2 sends Host as :authority; the signed host must still be found.
    url = invoke_url(tls_auth_server)
    with httpx.Client(http2=True, http1=False, verify=tls_files.context(), timeout=300) as http2:
        response = http2.post(url, content=UNDECODABLE_BODY, headers=signed_headers(url, UNDECODABLE_BODY))
    assert response.http_version == "HTTP/2"
    assert response.status_code == 400, response.text


def test_the_server_log_names_refusals_without_secrets(auth_server: RunningServer) -> None:
    url = invoke_url(auth_server)
    headers = signed_headers(url, GOOD_BODY)
    assert_access_denied(post(url, UNDECODABLE_BODY, headers), SIGNATURE_MISMATCH)
    signature = headers["Authorization"].rsplit("Signature=", 1)[1]
    log = auth_server.log()
    assert f"refused POST /model/{MODEL}/invoke: {SIGNATURE_MISMATCH}" in log
    assert signature not in log and AUTH_SECRET not in log
