"""Under load, past deadlines and at shutdown: every request gets exactly one answer in Bedrock's shapes."""

from __future__ import annotations

import asyncio
import base64
import json
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx

from tests.conftest import RunningServer, free_port, gradient_png, metric, start_server, wait_ready

PATH = "/model/stability.stable-diffusion-xl-v1/invoke"


def body(size: int = 64, **fields: object) -> bytes:
    return json.dumps(
        {
            "text_prompts": [{"text": "a kite"}],
            "steps": 10,
            "init_image": base64.b64encode(gradient_png(size, size)).decode(),
            **fields,
        }
    ).encode()


def rss_bytes(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS")


def test_metrics_count_requests_ticks_and_images(server: RunningServer) -> None:
    assert httpx.post(server.url + PATH, content=body(), timeout=60).status_code == 200
    text = httpx.get(server.url + "/metrics").text
    assert 'sdxl_requests_total{route="/model/{model_id:path}/invoke",status="200"}' in text
    assert "sdxl_rows_per_tick_count" in text and "sdxl_queue_wait_seconds_count" in text
    assert 'sdxl_images_total{finish_reason="SUCCESS"}' in text
    assert "sdxl_queue_depth 0.0" in text


def test_a_request_past_the_timeout_is_model_timeout(tmp_path: Path, cache_dir: Path) -> None:
    server = start_server(tmp_path, "--model", "tiny", "--relaxed-sizes", "--request-timeout", "0.001")
    try:
        response = httpx.post(server.url + PATH, content=body(), timeout=60)
        assert response.status_code == 408
        assert response.headers["x-amzn-errortype"].startswith("ModelTimeoutException:")
        assert "timeout" in response.json()["message"]
    finally:
        assert server.stop() == 0


def test_sigterm_finishes_accepted_work_refuses_new_and_exits_0(tmp_path: Path, cache_dir: Path) -> None:
    server = start_server(tmp_path, "--model", "tiny", "--relaxed-sizes")
    answers: list[int] = []

    def slow_request() -> None:
        answers.append(
            httpx.post(
                server.url + PATH, content=body(512, steps=50, image_strength=0.0), timeout=120
            ).status_code
        )

    worker = threading.Thread(target=slow_request)
    worker.start()
    try:
        # Once the request has joined the running batch (on a busy machine that takes a while), stop.
        deadline = time.monotonic() + 120
        while metric(server, "sdxl_queue_wait_seconds_count") == 0 and time.monotonic() < deadline:
            time.sleep(0.05)
        server.process.terminate()
        time.sleep(0.2)
        try:
            late = httpx.post(server.url + PATH, content=body(), timeout=30)
            assert late.status_code == 503
            assert late.headers["x-amzn-errortype"].startswith("ServiceUnavailableException:")
        except httpx.TransportError:
            pass  # already gone: also a refusal
        worker.join(120)
        assert answers == [200]
        assert server.process.wait(60) == 0
    finally:
        worker.join(120)
        server.stop()  # waited for, whatever failed above


def test_sigterm_stops_a_server_whose_stderr_is_closed(tmp_path: Path, cache_dir: Path) -> None:
    """`serve 2>&1 | head` after head has left, or a log reader that died: the server's output goes nowhere,
    and SIGTERM still stops it (it used to fail on its "shutting down" line and run on)."""
    port = free_port()
    command = [sys.executable, "-m", "sdxl_bedrock", "serve", "--port", str(port), "--model", "tiny"]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    server = RunningServer(f"http://127.0.0.1:{port}", process, tmp_path / "no.log")
    try:
        assert process.stdout is not None
        process.stdout.close()  # the reader leaves: every later write of the server's is a broken pipe
        wait_ready(server)
        process.send_signal(signal.SIGTERM)
        assert process.wait(120) == 0
    finally:
        if process.poll() is None:
            process.kill()
        process.wait()


def test_a_burst_beyond_the_queue_gets_only_200_and_429(tmp_path: Path, cache_dir: Path) -> None:
    server = start_server(tmp_path, "--model", "tiny", "--relaxed-sizes", "--max-queue", "4")
    total, concurrency = 200, 32
    payload = body()
    try:
        rss_before = rss_bytes(server.process.pid)

        async def burst() -> list[int]:
            limits = httpx.Limits(max_connections=concurrency)
            async with httpx.AsyncClient(timeout=120, limits=limits) as client:
                gate = asyncio.Semaphore(concurrency)

                async def one() -> int:
                    async with gate:
                        response = await client.post(server.url + PATH, content=payload)
                        if response.status_code == 429:
                            assert response.headers["x-amzn-errortype"].startswith("ThrottlingException:")
                        return response.status_code

                return await asyncio.gather(*(one() for _ in range(total)))

        statuses = asyncio.run(asyncio.wait_for(burst(), 300))
        assert len(statuses) == total
        assert set(statuses) <= {200, 429}
        assert statuses.count(200) >= 4 and statuses.count(429) >= 1
        assert rss_bytes(server.process.pid) - rss_before < 200 * 1024 * 1024
    finally:
        assert server.stop() == 0
