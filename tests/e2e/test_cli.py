"""The command line as a user meets it: `invoke` via boto3 against a running server (and its one-line
errors), `serve --help`, `model-path tiny`, `/ping` while loading, and what `serve` prints."""

from __future__ import annotations

import io
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import httpx
from PIL import Image

from sdxl_bedrock.cli import build_parser
from tests.conftest import RunningServer, free_port, gradient_png, start_server


def cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "sdxl_bedrock", *args],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, **(env or {})},
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
    assert done.stderr.splitlines()[-1] == f"sdxl-bedrock: wrote {out} (seed 4242, SUCCESS)"
    assert Image.open(io.BytesIO(out.read_bytes())).size == (64, 128)


def test_invoke_overwrites_only_with_force(server: RunningServer, tmp_path: Path) -> None:
    source, out = tmp_path / "in.png", tmp_path / "out.png"
    source.write_bytes(gradient_png(64, 64))
    out.write_bytes(b"precious")
    request = ("invoke", "--endpoint", server.url, "--image", str(source), "--prompt", "a boat")
    refused = cli(*request, "--seed", "7", "--out", str(out), "--no-progress")
    assert refused.returncode == 1
    assert (
        refused.stderr
        == f"sdxl-bedrock: {out} exists; pass --force to overwrite it, or choose another --out\n"
    )
    assert out.read_bytes() == b"precious"
    done = cli(*request, "--seed", "7", "--out", str(out), "--no-progress", "--force")
    assert done.returncode == 0, done.stderr
    assert done.stderr == f"sdxl-bedrock: wrote {out} (seed 7, SUCCESS)\n"
    assert out.read_bytes().startswith(b"\x89PNG")


def test_invoke_without_a_server_says_so_in_one_line(tmp_path: Path) -> None:
    endpoint = f"http://127.0.0.1:{free_port()}"
    done = cli("invoke", "--endpoint", endpoint, "--prompt", "x", "--out", str(tmp_path / "out.png"))
    assert done.returncode == 1
    assert done.stderr.splitlines()[-1] == (
        f"sdxl-bedrock: could not connect to {endpoint} (is `sdxl-bedrock serve` running there?)"
    )
    assert "Traceback" not in done.stderr
    assert [line for line in done.stderr.splitlines() if line.strip("\r")] == done.stderr.splitlines()[-1:]


def test_invoke_with_a_missing_image_names_the_file(tmp_path: Path) -> None:
    missing = tmp_path / "no-such.png"
    done = cli("invoke", "--prompt", "x", "--image", str(missing), "--out", str(tmp_path / "out.png"))
    assert done.returncode == 1
    assert done.stderr == f"sdxl-bedrock: --image: no such file: {missing}\n"
    assert not (tmp_path / "out.png").exists()


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
        log = server.log()
        assert log.index("sdxl-bedrock: loading model tiny ...\n") < log.index("listening on")
        [listening] = [line for line in log.splitlines() if line.startswith("sdxl-bedrock listening on ")]
        assert listening.startswith(f"sdxl-bedrock listening on {server.url} (model tiny, device cpu, ")
        assert "), ready in " in listening
        assert listening.endswith(
            " s; playground at /, interactive docs at /docs, API description at /openapi.json"
        )
    finally:
        assert server.stop() == 0


def test_serve_help_gives_help_and_a_default_for_every_flag() -> None:
    done = cli("serve", "--help", env={"COLUMNS": "1000"})
    assert done.returncode == 0, done.stderr
    serve = build_parser()._subparsers._group_actions[0].choices["serve"]  # type: ignore[union-attr]
    flags = [action.option_strings[0] for action in serve._actions if action.dest != "help"]
    assert len(flags) > 30
    described: dict[str, str] = {}  # flag -> its help text
    flag = ""
    for line in done.stdout.splitlines():
        if line.startswith("  -"):  # a flag, and its help unless the flag is too long to share a line
            invocation, _, help_text = line.strip().partition("  ")
            flag = re.split("[ ,]", invocation)[0]
            described[flag] = help_text.strip()
        elif flag and line.startswith("    ") and line.strip():
            described[flag] = f"{described[flag]} {line.strip()}".strip()
        else:
            flag = ""
    for flag in flags:
        assert described.get(flag, "").partition("(default: ")[0].strip(), f"{flag} has no help"
        assert "(default: " in described[flag], f"{flag} has no default"
    for flag in ["--host", "--port", "--device", "--dtype", "--max-batch-size", "--max-wait-ms"]:
        assert "; env SDXL_BEDROCK_" in described[flag]
    assert described["--request-timeout"].endswith("(default: 300; env SDXL_BEDROCK_REQUEST_TIMEOUT_S)")


def test_the_top_level_help_is_for_users() -> None:
    done = cli("--help")
    assert done.returncode == 0
    assert "the work lives elsewhere" not in done.stdout
    assert "Bedrock Runtime API" in done.stdout and "sdxl-bedrock serve" in done.stdout


def test_an_unknown_model_is_reported_once(tmp_path: Path, cache_dir: Path) -> None:
    done = cli("serve", "--port", str(free_port()), "--model", "no-such-model")
    assert done.returncode == 1
    [line] = done.stderr.splitlines()
    assert line.startswith("sdxl-bedrock: could not load model 'no-such-model': unknown model")
    assert done.stdout == "sdxl-bedrock: loading model no-such-model ...\n"


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
