"""A GPU's failures, injected (SDXL_BEDROCK_FAULTS), through the real server with concurrent companions.

For every stage (encode, unet, decode, png) and kind (oom, nan, error): the row whose prompt the fault
names fails alone in Bedrock's error shape, or recovers (a transient `#1` out-of-memory error, a VAE NaN
that a re-decode cures); its companions' images are byte-identical to their images made alone; the server
keeps serving; /metrics counts what happened.

"Byte-identical" holds where kernels give a row the same bits whatever its batch; a CPU's convolutions do
not (their algorithm depends on the batch size), so a companion that shared ticks with other rows is held
to its image made alone within one 8-bit level, as every batching test here is: a failure that reached it
(NaN, a lost step, another row's latents) would move it by far more.
"""

from __future__ import annotations

import base64
import io
import json
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import numpy as np
import pytest
from PIL import Image

from tests.conftest import RunningServer, gradient_png, metric, start_server

PATH = "/model/stability.stable-diffusion-xl-v1/invoke"

# (fault, the marker in the faulted row's prompt, whether that row still gets its image)
CASES = [
    ("encode=error@ENCERR", "ENCERR", False),
    ("encode=oom@ENCMEM1#1", "ENCMEM1", True),
    ("encode=oom@ENCMEMX", "ENCMEMX", False),
    ("encode=nan@ENCNAN", "ENCNAN", False),
    ("unet=error@UNETERR", "UNETERR", False),
    ("unet=oom@UNETMEM1#1", "UNETMEM1", True),
    ("unet=oom@UNETMEMX", "UNETMEMX", False),
    ("unet=nan@UNETNAN", "UNETNAN", False),
    ("decode=error@DECERR", "DECERR", False),
    ("decode=oom@DECMEM1#1", "DECMEM1", True),
    ("decode=oom@DECMEMX", "DECMEMX", False),
    ("decode=nan@DECBAD1#1", "DECBAD1", True),
    ("decode=nan@DECBADX", "DECBADX", False),
    ("png=error@PNGERR", "PNGERR", False),
    ("png=oom@PNGMEM1#1", "PNGMEM1", True),
]
COMPANIONS = ("a red kite", "a green field")


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, cache_dir: Path) -> Iterator[RunningServer]:
    faults = ",".join(fault for fault, _, _ in CASES)
    # A long wait for company: the faulted row and its companions join (and tick) together.
    running = start_server(
        tmp_path_factory.mktemp("faults"),
        *("--model", "tiny", "--relaxed-sizes", "--max-wait-ms", "300"),
        env={"SDXL_BEDROCK_FAULTS": faults},
    )
    yield running
    assert running.stop() == 0


def body(prompt: str, seed: int) -> bytes:
    return json.dumps(
        {
            "text_prompts": [{"text": prompt}],
            "seed": seed,
            "steps": 10,
            "sampler": "K_EULER_ANCESTRAL",
            "init_image": base64.b64encode(gradient_png(64, 64)).decode(),
            "image_strength": 0.3,
        }
    ).encode()


def invoke(server: RunningServer, prompt: str, seed: int) -> httpx.Response:
    return httpx.post(server.url + PATH, content=body(prompt, seed), timeout=300)


def png_of(response: httpx.Response) -> bytes:
    assert response.status_code == 200, response.text
    return base64.b64decode(response.json()["artifacts"][0]["base64"])


def levels_apart(png: bytes, other: bytes) -> int:
    """The largest difference of two PNGs' pixels, in 8-bit levels."""
    first, second = (
        np.asarray(Image.open(io.BytesIO(data)).convert("RGB"), dtype=int) for data in (png, other)
    )
    return int(np.abs(first - second).max())


@pytest.fixture(scope="module")
def alone(server: RunningServer) -> dict[str, bytes]:
    """Each companion's image made alone, before any fault fired."""
    return {prompt: png_of(invoke(server, prompt, seed)) for seed, prompt in enumerate(COMPANIONS, 1)}


def test_the_server_says_loudly_that_faults_are_on(server: RunningServer) -> None:
    assert "FAULT INJECTION IS ON" in server.log_path.read_text()


@pytest.mark.parametrize(("fault", "marker", "recovers"), CASES, ids=[case[0] for case in CASES])
def test_a_fault_ends_only_its_own_row(
    server: RunningServer, alone: dict[str, bytes], fault: str, marker: str, recovers: bool
) -> None:
    prompts = [f"a lighthouse {marker}", *COMPANIONS]
    seeds = [7, 1, 2]
    with ThreadPoolExecutor(len(prompts)) as pool:
        answers = list(pool.map(lambda pair: invoke(server, *pair), zip(prompts, seeds, strict=True)))
    faulted, *companions = answers
    for prompt, answer in zip(COMPANIONS, companions, strict=True):
        assert levels_apart(png_of(answer), alone[prompt]) <= 1, f"{fault} changed a companion's image"
    if recovers:
        again = png_of(invoke(server, f"a lighthouse {marker}", 7))
        assert levels_apart(png_of(faulted), again) <= 1, "recovered means its own image"
    else:
        assert faulted.status_code == 424, faulted.text
        assert faulted.headers["x-amzn-errortype"].startswith("ModelErrorException:")
        assert faulted.json()["message"]
    stage, kind = fault.split("@")[0].split("=")
    assert metric(server, "sdxl_faults_injected_total", stage=stage, kind=kind) >= 1
    # The server keeps serving.
    assert png_of(invoke(server, COMPANIONS[0], 1)) == alone[COMPANIONS[0]], "alone again, the same bytes"


def test_metrics_count_retries_failures_and_non_finite_images(server: RunningServer) -> None:
    if metric(server, "sdxl_faults_injected_total") == 0:
        pytest.skip("runs after the faults")
    assert metric(server, "sdxl_stage_retries_total", reason="out_of_memory") >= 1
    assert metric(server, "sdxl_rows_failed_total", stage="tick") >= 1
    assert metric(server, "sdxl_rows_failed_total", stage="finish") >= 1
    assert metric(server, "sdxl_non_finite_images_total", outcome="redecoded") >= 1
    assert metric(server, "sdxl_non_finite_images_total", outcome="failed") >= 1


def test_a_spec_that_does_not_parse_stops_the_server_at_start(tmp_path: Path, cache_dir: Path) -> None:
    server = start_server(
        tmp_path, "--model", "tiny", wait=False, env={"SDXL_BEDROCK_FAULTS": "decode=nan@X#1,png=nan"}
    )
    try:
        assert server.process.wait(timeout=240) == 2
    finally:
        server.stop()
    assert "a PNG has no floats to spoil" in server.log_path.read_text()
