"""Shared fixtures: a real server process on an ephemeral port, and boto3 clients pointed at it."""

from __future__ import annotations

import dataclasses
import io
import os
import ssl
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import numpy as np
import pytest
from PIL import Image
from prometheus_client.parser import text_string_to_metric_families

# The server processes the suite starts are the testing plugin's own (src/sdxl_bedrock/testing).
from sdxl_bedrock.testing import (
    RunningServer,
    bedrock_client,
    bedrock_environment,
    free_port,
    start_server,
    wait_ready,
)

__all__ = ["RunningServer", "bedrock_environment", "free_port", "start_server", "wait_ready"]

REPO = Path(__file__).resolve().parents[1]
SELF_SIGNED_CERT = (
    *("openssl", "req", "-x509", "-nodes", "-days", "1", "-subj", "/CN=127.0.0.1"),
    *("-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-addext", "subjectAltName=IP:127.0.0.1"),
)


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
    return bedrock_client(url)


def gradient_png(width: int, height: int, mode: str = "RGB") -> bytes:
    y, x = np.mgrid[0:height, 0:width]
    pixels = np.stack([x * 255 // max(width - 1, 1), y * 255 // max(height - 1, 1), (x + y) % 256], -1)
    image = Image.fromarray(pixels.astype("uint8"), "RGB").convert(mode)
    buffer = io.BytesIO()
    image.save(buffer, "PNG")
    return buffer.getvalue()
