"""Shared fixtures: a real server process on an ephemeral port, and boto3 clients pointed at it."""

from __future__ import annotations

import dataclasses
import io
import os
import socket
import ssl
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import boto3
import httpx
import numpy as np
import pytest
from botocore.config import Config
from PIL import Image
from prometheus_client.parser import text_string_to_metric_families

REPO = Path(__file__).resolve().parents[1]
SELF_SIGNED_CERT = (
    *("openssl", "req", "-x509", "-nodes", "-days", "1", "-subj", "/CN=127.0.0.1"),
    *("-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-addext", "subjectAltName=IP:127.0.0.1"),
)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class RunningServer:
    url: str
    process: subprocess.Popen[bytes]
    log_path: Path

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def stop(self) -> int:
        self.process.terminate()
        try:
            return self.process.wait(30)
        except subprocess.TimeoutExpired:
            self.process.kill()
            return self.process.wait(10)


def start_server(
    log_dir: Path, *args: str, wait: bool = True, env: dict[str, str] | None = None
) -> RunningServer:
    port = free_port()
    log_path = log_dir / f"server-{port}.log"
    command = [
        sys.executable,
        "-m",
        "sdxl_bedrock",
        "serve",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        *args,
    ]
    with log_path.open("wb") as log_file:
        process = subprocess.Popen(
            command, stdout=log_file, stderr=subprocess.STDOUT, env={**os.environ, **(env or {})}
        )
    server = RunningServer(f"http://127.0.0.1:{port}", process, log_path)
    if wait:
        wait_ready(server)
    return server


def wait_ready(server: RunningServer, timeout_s: float = 240, verify: ssl.SSLContext | bool = True) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if server.process.poll() is not None:
            raise RuntimeError(f"the server exited ({server.process.returncode}):\n{server.log()}")
        try:
            if httpx.get(server.url + "/ping", timeout=2, verify=verify).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    server.stop()
    raise RuntimeError(f"the server did not become ready in {timeout_s} s:\n{server.log()}")


@dataclass(frozen=True)
class TlsFiles:
    cert: Path
    key: Path

    def context(self) -> ssl.SSLContext:
        return ssl.create_default_context(cafile=str(self.cert))


@pytest.fixture(scope="session")
def tls_files(tmp_path_factory: pytest.TempPathFactory) -> TlsFiles:
    """A self-signed certificate for 127.0.0.1 and its key."""
    folder = tmp_path_factory.mktemp("tls")
    files = TlsFiles(folder / "cert.pem", folder / "key.pem")
    subprocess.run(
        [*SELF_SIGNED_CERT, "-keyout", str(files.key), "-out", str(files.cert)],
        check=True,
        capture_output=True,
    )
    return files


def start_tls_server(log_dir: Path, tls_files: TlsFiles, *args: str) -> RunningServer:
    """`start_server` with `--tls-cert`/`--tls-key`: an https URL, ready once /ping answers over TLS."""
    tls_args = ("--tls-cert", str(tls_files.cert), "--tls-key", str(tls_files.key))
    running = start_server(log_dir, *args, *tls_args, wait=False)
    running = dataclasses.replace(running, url=running.url.replace("http://", "https://"))
    wait_ready(running, verify=tls_files.context())
    return running


@pytest.fixture(scope="session")
def cache_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One model cache for the whole session (the tiny model is built once, by the first server)."""
    path = Path(os.environ.get("SDXL_BEDROCK_TEST_CACHE") or tmp_path_factory.mktemp("model-cache"))
    os.environ["SDXL_BEDROCK_CACHE"] = str(path)
    return path


@pytest.fixture(scope="session")
def server(tmp_path_factory: pytest.TempPathFactory, cache_dir: Path) -> Iterator[RunningServer]:
    """The tiny model with relaxed sizes, so most tests can use small, fast images."""
    running = start_server(tmp_path_factory.mktemp("logs"), "--model", "tiny", "--relaxed-sizes")
    yield running
    running.stop()


@pytest.fixture(scope="session")
def strict_server(tmp_path_factory: pytest.TempPathFactory, cache_dir: Path) -> Iterator[RunningServer]:
    """The tiny model with Bedrock's own size rule (the default)."""
    running = start_server(tmp_path_factory.mktemp("logs"), "--model", "tiny")
    yield running
    running.stop()


# The auth servers' credentials: one SigV4 key pair and one API key (Bearer token).
AUTH_KEY_ID = "AKIDTEST"
AUTH_SECRET = "secret123"
AUTH_API_KEY = "tok-1"
# -v: the log names each refusal, which the auth tests read.
AUTH_SERVER_ARGS = (
    *("--model", "tiny", "--relaxed-sizes", "-v"),
    *("--access-key", f"{AUTH_KEY_ID}:{AUTH_SECRET}", "--api-key", AUTH_API_KEY),
)


@pytest.fixture(scope="session")
def auth_server(tmp_path_factory: pytest.TempPathFactory, cache_dir: Path) -> Iterator[RunningServer]:
    """The tiny model with auth on (AUTH_SERVER_ARGS), over plain HTTP."""
    running = start_server(tmp_path_factory.mktemp("logs"), *AUTH_SERVER_ARGS)
    yield running
    running.stop()


@pytest.fixture(scope="session")
def tls_auth_server(
    tmp_path_factory: pytest.TempPathFactory, cache_dir: Path, tls_files: TlsFiles
) -> Iterator[RunningServer]:
    """The tiny model with auth on (AUTH_SERVER_ARGS), over TLS with `tls_files`."""
    running = start_tls_server(tmp_path_factory.mktemp("logs"), tls_files, *AUTH_SERVER_ARGS)
    yield running
    running.stop()


def metric(server: RunningServer, name: str, **labels: str) -> float:
    """The sum of the samples of `name` (e.g. `sdxl_abandoned_requests_total`) at /metrics whose labels
    include `labels`; 0 where none."""
    text = httpx.get(server.url + "/metrics", timeout=30).text
    return sum(
        sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name == name and labels.items() <= sample.labels.items()
    )


def bedrock_environment(url: str) -> dict[str, str]:
    """What points an unchanged boto3 program at `url`: the endpoint and dummy credentials, by environment."""
    return {
        "AWS_ENDPOINT_URL_BEDROCK_RUNTIME": url,
        "AWS_ACCESS_KEY_ID": "any",
        "AWS_SECRET_ACCESS_KEY": "thing",
        "AWS_DEFAULT_REGION": "us-east-1",
    }


def run_seed_example(url: str, workdir: Path) -> subprocess.CompletedProcess[str]:
    """../shared/seed/example.py, unchanged but for its image path (a 1024x1024 PNG), run against `url`;
    skips the test where the seed is not beside this checkout."""
    example = REPO.parent / "shared" / "seed" / "example.py"
    if not example.exists():
        pytest.skip("../shared/seed/example.py is not beside this checkout")
    source, program = workdir / "in.png", workdir / "example.py"
    source.write_bytes(gradient_png(1024, 1024))
    program.write_text(example.read_text().replace("/path/to/image", str(source)))
    return subprocess.run(
        [sys.executable, str(program)],
        env={**os.environ, **bedrock_environment(url), "DISPLAY": ""},
        capture_output=True,
        text=True,
        timeout=300,
        cwd=workdir,
    )


def bedrock(url: str) -> object:
    return boto3.client(
        "bedrock-runtime",
        endpoint_url=url,
        region_name="us-east-1",
        aws_access_key_id="test",
        aws_secret_access_key="test",
        config=Config(retries={"max_attempts": 1}, read_timeout=300),
    )


def gradient_png(width: int, height: int, mode: str = "RGB") -> bytes:
    y, x = np.mgrid[0:height, 0:width]
    pixels = np.stack([x * 255 // max(width - 1, 1), y * 255 // max(height - 1, 1), (x + y) % 256], -1)
    image = Image.fromarray(pixels.astype("uint8"), "RGB").convert(mode)
    buffer = io.BytesIO()
    image.save(buffer, "PNG")
    return buffer.getvalue()
