"""`serve --compile --warmup`: shapes compiled before /ping turns healthy, requests of any batch size and
prompt length served through the compiled graphs (on the engine thread that captured them), and the path
shown in /metrics."""

from __future__ import annotations

import re
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest

from tests.conftest import RunningServer, start_server, wait_ready
from tests.e2e.test_resilience import PATH, body

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def compiled_server(tmp_path_factory: pytest.TempPathFactory, cache_dir: Path) -> Iterator[RunningServer]:
    running = start_server(
        tmp_path_factory.mktemp("logs"),
        *("--model", "tiny", "--relaxed-sizes", "--compile", "--warmup", "64x64:1,2"),
        *("--warmup-prompt-chunks", "2"),
        wait=False,
    )
    wait_ready(running, timeout_s=600)
    yield running
    running.stop()


def unet_calls(server: RunningServer) -> dict[str, float]:
    text = httpx.get(server.url + "/metrics").text
    return {
        path: float(count) for path, count in re.findall(r'sdxl_unet_calls_total\{path="(\w+)"\} (\S+)', text)
    }


def test_warm_up_runs_before_the_server_is_healthy(compiled_server: RunningServer) -> None:
    log = compiled_server.log()
    assert "warming up 64x64, batch 1 (1/3)" in log and "warming up 64x64, batch 2 (2/3)" in log
    assert "warming up 64x64, batch 1, prompts of 154 tokens (3/3)" in log
    assert log.index("tokens (3/3)") < log.index("listening on"), "announced once warm"


def test_requests_of_any_batch_size_run_compiled(compiled_server: RunningServer) -> None:
    before = unet_calls(compiled_server)
    with ThreadPoolExecutor(5) as pool:
        answers = list(
            pool.map(
                lambda seed: httpx.post(compiled_server.url + PATH, content=body(seed=seed), timeout=300),
                range(1, 6),
            )
        )
    assert [answer.status_code for answer in answers] == [200] * 5
    after = unet_calls(compiled_server)
    assert after["compiled"] > before["compiled"]
    assert after["eager"] == before["eager"] == 0


def test_prompts_over_75_tokens_run_compiled_beside_short_ones(compiled_server: RunningServer) -> None:
    before = unet_calls(compiled_server)
    texts = ["a kite", "a long prompt, " * 20, "a kite at dusk", "a long prompt, " * 25]  # 1 and 2 chunks
    with ThreadPoolExecutor(len(texts)) as pool:
        answers = list(
            pool.map(
                lambda text: httpx.post(
                    compiled_server.url + PATH, content=body(text_prompts=[{"text": text}]), timeout=300
                ),
                texts,
            )
        )
    assert [answer.status_code for answer in answers] == [200] * len(texts)
    after = unet_calls(compiled_server)
    assert after["compiled"] > before["compiled"]
    assert after["eager"] == 0
