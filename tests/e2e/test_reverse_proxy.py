"""docs/SECURITY.md's nginx configuration, as written but for its ports, certificate and file paths, in front
of a server with auth on and, as the configuration says, without the front (`--no-front`): boto3 through it
over TLS and HTTP/2 (SigV4 signs the Host nginx passes on), the response stream unbuffered, Bedrock's answer
to a body over the limit, and the server's log naming nginx's connection whatever the client claims."""

from __future__ import annotations

import base64
import json
import os
import pwd
import re
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import boto3
import httpx
import pytest
from botocore.config import Config
from botocore.exceptions import ClientError

from tests.conftest import (
    AUTH_KEY_ID,
    AUTH_SECRET,
    AUTH_SERVER_ARGS,
    REPO,
    RunningServer,
    TlsFiles,
    free_port,
    gradient_png,
    start_server,
)
from tests.e2e.test_callers_who_left import TOO_LARGE_MESSAGE, oversized_body
from tests.e2e.test_client_address import SPOOFED, client_named, lines_of

NGINX = "/usr/sbin/nginx"
MODEL = "stability.stable-diffusion-xl-v1"


def documented_config() -> str:
    text = (REPO / "docs" / "SECURITY.md").read_text()
    return text.split("```nginx\n", 1)[1].split("```", 1)[0]


def local_config(documented: str, *, port: int, upstream_port: int, tls: TlsFiles) -> str:
    """The documented configuration with this test's port, upstream, certificate and files; nothing else."""
    replacements = {
        "listen 443 ssl http2;": f"listen 127.0.0.1:{port} ssl http2;",
        "server 127.0.0.1:8080;": f"server 127.0.0.1:{upstream_port};",
        "/etc/ssl/certs/images.example.com.pem": str(tls.cert),
        "/etc/ssl/private/images.example.com.key": str(tls.key),
    }
    for documented_text, local_text in replacements.items():
        assert documented_text in documented, documented_text
        documented = documented.replace(documented_text, local_text)
    return documented


@pytest.fixture(scope="module")
def proxied_server(tmp_path_factory: pytest.TempPathFactory, cache_dir: Path) -> Iterator[RunningServer]:
    """auth_server's options, started as the configuration's upstream comment says: `--no-front`."""
    assert "--no-front" in documented_config()
    running = start_server(tmp_path_factory.mktemp("logs"), *AUTH_SERVER_ARGS, "--no-front")
    yield running
    assert running.stop() == 0, running.log()


@pytest.fixture(scope="module")
def proxy(
    proxied_server: RunningServer, tls_files: TlsFiles, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[str]:
    if shutil.which(NGINX) is None and shutil.which("nginx") is None:
        pytest.fail("nginx is missing: run `make install` (Debian's nginx-light)")
    folder = tmp_path_factory.mktemp("nginx")
    port = free_port()
    upstream_port = urlsplit(proxied_server.url).port
    assert upstream_port is not None
    server_block = local_config(documented_config(), port=port, upstream_port=upstream_port, tls=tls_files)
    temp = {name: folder / name for name in ("body", "proxy", "fastcgi", "uwsgi", "scgi")}
    # Started by root, nginx's workers would run as nobody, who cannot write to this test's folders.
    user = f"user {pwd.getpwuid(os.geteuid()).pw_name};\n" if os.geteuid() == 0 else ""
    (folder / "nginx.conf").write_text(
        f"{user}daemon off;\nworker_processes 1;\n"
        f"pid {folder / 'nginx.pid'};\nerror_log {folder / 'error.log'} warn;\n"
        "events { worker_connections 256; }\n"
        "http {\n"
        f"    access_log off;\n"
        f"    client_body_temp_path {temp['body']};\n    proxy_temp_path {temp['proxy']};\n"
        f"    fastcgi_temp_path {temp['fastcgi']};\n    uwsgi_temp_path {temp['uwsgi']};\n"
        f"    scgi_temp_path {temp['scgi']};\n"
        f"{server_block}\n}}\n"
    )
    nginx = shutil.which(NGINX) or "nginx"
    command = [nginx, "-p", str(folder), "-c", str(folder / "nginx.conf"), "-e", str(folder / "error.log")]
    checked = subprocess.run([*command, "-t"], capture_output=True, text=True, timeout=60)
    assert checked.returncode == 0, checked.stderr
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"https://127.0.0.1:{port}"
    try:
        for _ in range(200):
            try:
                httpx.get(url + "/ping", verify=tls_files.context(), timeout=2)
                break
            except httpx.TransportError:
                assert process.poll() is None, (folder / "error.log").read_text()
                time.sleep(0.1)
        yield url
    finally:
        process.terminate()
        try:
            process.wait(30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(10)


def client(url: str, tls_files: TlsFiles) -> Any:
    return boto3.client(
        "bedrock-runtime",
        endpoint_url=url,
        region_name="us-east-1",
        aws_access_key_id=AUTH_KEY_ID,
        aws_secret_access_key=AUTH_SECRET,
        verify=str(tls_files.cert),
        config=Config(retries={"max_attempts": 1}, read_timeout=300),
    )


def image_body(**fields: object) -> str:
    return json.dumps(
        {
            "text_prompts": [{"text": "a lighthouse"}],
            "init_image": base64.b64encode(gradient_png(64, 64)).decode(),
            "steps": 10,
            "seed": 5,
            **fields,
        }
    )


def test_a_signed_request_through_the_proxy(proxy: str, tls_files: TlsFiles) -> None:
    answer = client(proxy, tls_files).invoke_model(modelId=MODEL, body=image_body())
    assert json.loads(answer["body"].read())["artifacts"][0]["seed"] == 5


def test_the_response_stream_comes_through_event_by_event(proxy: str, tls_files: TlsFiles) -> None:
    stream = client(proxy, tls_files).invoke_model_with_response_stream(
        modelId=MODEL, body=image_body(extras={"progress": True, "progress_preview_every": 0})
    )
    *progress, final = [json.loads(event["chunk"]["bytes"]) for event in stream["body"]]
    steps = [chunk["progress"]["step"] for chunk in progress]
    assert steps == list(range(1, progress[0]["progress"]["steps"] + 1))
    assert final["result"] == "success"


def test_http2_to_the_proxy(proxy: str, tls_files: TlsFiles) -> None:
    with httpx.Client(http2=True, verify=tls_files.context(), timeout=60) as http2:
        response = http2.get(proxy + "/ping")
    assert response.http_version == "HTTP/2"
    assert response.status_code == 200


def test_a_body_over_the_limit_gets_bedrocks_answer_through_the_proxy(
    proxy: str, tls_files: TlsFiles
) -> None:
    with pytest.raises(ClientError) as raised:
        client(proxy, tls_files).invoke_model(modelId=MODEL, body=json.dumps(oversized_body()))
    assert raised.value.response["Error"]["Code"] == "ValidationException"
    assert TOO_LARGE_MESSAGE in raised.value.response["Error"]["Message"]


def test_the_documented_config_passes_the_host_the_client_signed() -> None:
    assert "proxy_set_header Host $http_host;" in documented_config()
    assert "proxy_buffering off;" in documented_config()


def test_the_log_names_the_proxys_connection_whatever_the_client_claims(
    proxy: str, proxied_server: RunningServer, tls_files: TlsFiles
) -> None:
    """The server's peer is nginx, on loopback; the client's own address is in nginx's log (the
    configuration sends no X-Forwarded-For, and the server would not read one)."""
    with httpx.Client(http2=True, verify=tls_files.context(), timeout=60) as http2:
        response = http2.get(proxy + "/ping", headers=SPOOFED)
    assert response.status_code == 200
    [line] = lines_of(proxied_server, response.headers["x-amzn-RequestId"])
    assert re.fullmatch(r"127\.0\.0\.1:\d+", client_named(line)), line
    assert "198.51.100." not in line
