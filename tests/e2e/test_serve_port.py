"""One server per port: a second `serve` on a port in use (by another server or any program) is one line on
stderr and exit status 1, before any model loads, and never a second listener beside the first."""

from __future__ import annotations

import base64
import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import httpx

from tests.conftest import RunningServer, free_port, gradient_png


def serve(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "sdxl_bedrock", "serve", "--host", "127.0.0.1", *args],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, **(env or {})},
    )


def port_of(server: RunningServer) -> int:
    return int(server.url.rsplit(":", 1)[1])


def test_a_second_server_on_the_port_exits_and_the_first_answers_everything(
    server: RunningServer, tmp_path: Path
) -> None:
    port = port_of(server)
    second = serve("--port", str(port), "--model", "tiny", "--relaxed-sizes")
    assert second.returncode == 1
    assert second.stderr.splitlines() == [
        f"sdxl-bedrock: port {port} is in use (on 127.0.0.1); stop the program that holds it, "
        "or choose another --port"
    ]
    assert "loading model" not in second.stdout, "the port is checked before the model loads"

    body = {
        "text_prompts": [{"text": "a lighthouse"}],
        "init_image": base64.b64encode(gradient_png(64, 64)).decode(),
        "steps": 10,
    }
    request_ids = []
    for seed in range(1, 5):
        answer = httpx.post(
            f"{server.url}/model/stability.stable-diffusion-xl-v1/invoke",
            json={**body, "seed": seed},
            timeout=120,
        )
        assert answer.status_code == 200, answer.text
        assert json.loads(answer.content)["artifacts"][0]["seed"] == seed
        request_ids.append(answer.headers["x-amzn-RequestId"])
    log = server.log()
    assert all(request_id in log for request_id in request_ids), "every answer came from the first server"


def test_a_port_held_by_another_program_is_one_line(tmp_path: Path) -> None:
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        done = serve("--port", str(port))
    assert done.returncode == 1
    assert done.stderr == (
        f"sdxl-bedrock: port {port} is in use (on 127.0.0.1); stop the program that holds it, "
        "or choose another --port\n"
    )
    assert done.stdout == ""


def test_ray_checks_the_port_before_starting_ray(tmp_path: Path) -> None:
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        done = serve("--port", str(port), "--ray", env={"RAY_ADDRESS": ""})
    assert done.returncode == 1
    assert done.stderr.splitlines() == [
        f"sdxl-bedrock: port {port} is in use (on 127.0.0.1); stop the program that holds it, "
        "or choose another --port"
    ]


def test_an_address_of_another_machine_is_one_line(tmp_path: Path) -> None:
    port = free_port()
    done = serve("--host", "192.0.2.1", "--port", str(port))  # TEST-NET-1: never this machine's
    assert done.returncode == 1
    assert done.stderr == "sdxl-bedrock: cannot listen on 192.0.2.1: it is not an address of this machine\n"
