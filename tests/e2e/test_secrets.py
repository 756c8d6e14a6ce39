"""Secrets off the command line: access keys and API keys from SDXL_BEDROCK_* variables and from files
work as the flags do, and appear neither in the server's command line (`ps`) nor in its output.

Each refused request carries an init_image that is not base64: with good credentials that is a 400
ValidationException, so a 400 proves the credentials passed and a 403 that they were refused, without
generating anything.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import httpx
import pytest
from botocore.config import Config
from botocore.exceptions import ClientError

from tests.conftest import RunningServer, start_server

MODEL = "stability.stable-diffusion-xl-v1"
ENV_KEY = ("AKIDFROMENV", "env-secret-5f0c1d")
FILE_KEY = ("AKIDFROMFILE", "file-secret-9a7b3e")
ENV_TOKEN = "env-token-77d2"
FILE_TOKEN = "file-token-31c8"
SECRETS = (ENV_KEY[1], FILE_KEY[1], ENV_TOKEN, FILE_TOKEN)
UNDECODABLE_BODY = json.dumps(
    {"text_prompts": [{"text": "a lighthouse"}], "init_image": "not base64 at all!", "steps": 10}
)


@pytest.fixture(autouse=True)
def no_bearer_token_in_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("AWS_BEARER_TOKEN_BEDROCK", raising=False)


@pytest.fixture(scope="module")
def secret_server(tmp_path_factory: pytest.TempPathFactory, cache_dir: Path) -> Iterator[RunningServer]:
    """Keys by variable and by file, none on the command line; -v so that every log line is there to read."""
    folder = tmp_path_factory.mktemp("secrets")
    access_keys, api_keys = folder / "access-keys", folder / "api-keys"
    access_keys.write_text(f"# SigV4 key pairs\n\n{FILE_KEY[0]}:{FILE_KEY[1]}\n")
    api_keys.write_text(f"# bearer tokens\n{FILE_TOKEN}\n")
    running = start_server(
        folder,
        *("-v", "--model", "tiny", "--access-key-file", str(access_keys)),
        env={
            "SDXL_BEDROCK_ACCESS_KEYS": f"{ENV_KEY[0]}:{ENV_KEY[1]}",
            "SDXL_BEDROCK_API_KEYS": ENV_TOKEN,
            "SDXL_BEDROCK_API_KEY_FILE": str(api_keys),
        },
    )
    yield running
    running.stop()


def bedrock(url: str, key_id: str, secret: str) -> Any:
    return boto3.client(
        "bedrock-runtime",
        endpoint_url=url,
        region_name="us-east-1",
        aws_access_key_id=key_id,
        aws_secret_access_key=secret,
        config=Config(retries={"max_attempts": 1}),
    )


def refusal(client: Any) -> dict[str, Any]:
    with pytest.raises(ClientError) as refused:
        client.invoke_model(modelId=MODEL, body=UNDECODABLE_BODY, contentType="application/json")
    return dict(refused.value.response)


@pytest.mark.parametrize("key", [ENV_KEY, FILE_KEY], ids=["variable", "file"])
def test_a_key_pair_from_a_variable_or_a_file_signs(
    secret_server: RunningServer, key: tuple[str, str]
) -> None:
    passed = refusal(bedrock(secret_server.url, *key))
    assert passed["Error"]["Code"] == "ValidationException"  # past auth
    refused = refusal(bedrock(secret_server.url, key[0], key[1] + "x"))
    assert refused["Error"]["Code"] == "AccessDeniedException"


@pytest.mark.parametrize("token", [ENV_TOKEN, FILE_TOKEN], ids=["variable", "file"])
def test_a_token_from_a_variable_or_a_file_is_accepted(secret_server: RunningServer, token: str) -> None:
    url = f"{secret_server.url}/model/{MODEL}/invoke"
    for sent, status in [(token, 400), (token + "x", 403)]:
        headers = {"content-type": "application/json", "authorization": f"Bearer {sent}"}
        answer = httpx.post(url, content=UNDECODABLE_BODY, headers=headers, timeout=60)
        assert answer.status_code == status, answer.text
    engines = httpx.get(
        f"{secret_server.url}/v1/engines/list", headers={"authorization": f"Bearer {token}"}, timeout=60
    )
    assert engines.status_code == 200, engines.text


def test_no_secret_in_the_command_line_or_the_output(secret_server: RunningServer) -> None:
    command_line = Path(f"/proc/{secret_server.process.pid}/cmdline").read_bytes()
    assert b"--access-key-file" in command_line  # the file's name, not what it holds
    for secret in SECRETS:
        assert secret.encode() not in command_line
        assert secret not in secret_server.log()
