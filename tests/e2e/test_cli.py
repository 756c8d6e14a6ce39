"""The command line: `invoke` via boto3 against a running server, `model-path tiny`, `/ping` while loading."""

from __future__ import annotations

import io
import subprocess
import sys
import time
from pathlib import Path

import httpx
from PIL import Image

from tests.conftest import RunningServer, gradient_png, start_server


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "sdxl_bedrock", *args], capture_output=True, text=True, timeout=300
    )


def test_invoke_writes_the_png_and_prints_the_seed(server: RunningServer, tmp_path: Path) -> None:
    source, out = tmp_path / "in.png", tmp_path / "out.png"
    source.write_bytes(gradient_png(64, 128))
    done = cli(
        "invoke",
        "--endpoint",
        server.url,
        "--image",
        str(source),
        "--prompt",
        "a boat",
        "--negative-prompt",
        "fog",
        "--seed",
        "4242",
        "--steps",
        "10",
        "--sampler",
        "DDIM",
        "--set",
        'extras={"note": 1}',
        "--out",
        str(out),
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "4242"
    assert Image.open(io.BytesIO(out.read_bytes())).size == (64, 128)


def test_invoke_reports_a_validation_error_in_words(server: RunningServer, tmp_path: Path) -> None:
    source = tmp_path / "in.png"
    source.write_bytes(gradient_png(64, 64))
    done = cli(
        "invoke",
        "--endpoint",
        server.url,
        "--image",
        str(source),
        "--prompt",
        "x",
        "--steps",
        "5",
        "--out",
        str(tmp_path / "out.png"),
    )
    assert done.returncode == 1
    assert "ValidationException" in done.stderr and "#/steps" in done.stderr


def test_model_path_prints_a_diffusers_folder(cache_dir: Path) -> None:
    done = cli("model-path", "tiny")
    assert done.returncode == 0, done.stderr
    folder = Path(done.stdout.strip())
    assert (folder / "model_index.json").is_file()
    assert (folder / "unet" / "config.json").is_file()


def test_ping_says_model_not_ready_until_loaded_then_healthy(tmp_path: Path) -> None:
    # A fresh cache makes the server build the tiny model first, so it listens well before it is ready.
    server = start_server(tmp_path, "--model", "tiny", wait=False, env={"SDXL_BEDROCK_CACHE": str(tmp_path)})
    statuses: list[int] = []
    try:
        deadline = time.monotonic() + 240
        while time.monotonic() < deadline and 200 not in statuses:
            try:
                response = httpx.get(server.url + "/ping", timeout=2)
            except httpx.TransportError:
                time.sleep(0.05)
                continue
            statuses.append(response.status_code)
            if response.status_code == 429:
                assert response.headers["x-amzn-errortype"].startswith("ModelNotReadyException:")
                assert "loading" in response.json()["message"]
            time.sleep(0.05)
        assert statuses[-1] == 200
        assert set(statuses) <= {429, 200}
        assert statuses[0] == 429, "the server should listen (and say not ready) while the model loads"
        assert "listening on" in server.log()
    finally:
        assert server.stop() == 0


def test_the_vae_dtype_option_is_announced_and_serves(tmp_path: Path, cache_dir: Path) -> None:
    """What a GPU runs by default (`--vae-dtype auto` there is bfloat16), asked for by name on the CPU."""
    source, out = tmp_path / "in.png", tmp_path / "out.png"
    source.write_bytes(gradient_png(64, 64))
    server = start_server(tmp_path, "--model", "tiny", "--relaxed-sizes", "--vae-dtype", "bfloat16")
    try:
        assert "dtype float32, VAE bfloat16)" in server.log()
        done = cli(
            "invoke",
            "--endpoint",
            server.url,
            "--image",
            str(source),
            "--prompt",
            "a boat",
            "--out",
            str(out),
        )
        assert done.returncode == 0, done.stderr
        assert Image.open(out).convert("RGB").getextrema() != ((0, 0), (0, 0), (0, 0)), "not a black image"
    finally:
        assert server.stop() == 0
