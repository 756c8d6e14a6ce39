"""The LoRA library through the real server (--lora-dir) and real clients: A1111's `GET /sdapi/v1/loras`
through webuiapi, `POST /sdapi/v1/refresh-loras`, and what a `<lora:...>` prompt answers (its infotext's
hashes, A1111's note for a name not found, A1111's error shape for a refused LoRA). Whether a LoRA changes the
image is the engine's to test."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlparse

import httpx
import pytest
import webuiapi

from tests.conftest import RunningServer, start_server
from tests.library.test_loras import KOHYA_TE1, KOHYA_UNET, lora_file, tensors_file, zeros

SMALL = {"width": 64, "height": 64, "steps": 2, "sampler_name": "Euler", "seed": 7}


@pytest.fixture(scope="module")
def loras(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("loras")
    lora_file(
        root / "ink.safetensors",
        {KOHYA_UNET: (2048, 4, 640), KOHYA_TE1: (768, 4, 768)},
        ss_output_name="Ink Style",
        ss_network_dim="4",
    )
    tensors_file(root / "loha.safetensors", zeros(f"{KOHYA_UNET}.hada_w1_a", f"{KOHYA_UNET}.hada_w1_b"))
    return root


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, loras: Path, cache_dir: Path) -> Iterator[RunningServer]:
    running = start_server(
        tmp_path_factory.mktemp("logs"),
        *("--model", "tiny", "--relaxed-sizes", "--lora-dir", str(loras), "--max-loras-per-request", "2"),
    )
    yield running
    running.stop()


def a1111(server: RunningServer) -> webuiapi.WebUIApi:
    address = urlparse(server.url)
    return webuiapi.WebUIApi(host=address.hostname, port=address.port)


def test_get_loras_lists_them_with_a1111s_fields_and_the_log_says_what_is_refused(
    server: RunningServer, loras: Path
) -> None:
    listed = a1111(server).get_loras()
    assert listed == [
        {
            "name": "ink",
            "alias": "Ink Style",
            "path": str(loras / "ink.safetensors"),
            "metadata": {"ss_output_name": "Ink Style", "ss_network_dim": "4"},
        }
    ]
    assert "LoRA library: loha" in server.log() and "LoHa" in server.log()


def test_a_lora_prompt_carries_its_hash_and_notes_names_not_found(server: RunningServer, loras: Path) -> None:
    answer = a1111(server).txt2img(prompt="a boat <lora:ink:0.8> <lora:nope:1>", **SMALL)
    info = answer.info
    assert info["prompt"] == "a boat <lora:ink:0.8> <lora:nope:1>"
    assert info["comments"] == "Lora not found: nope"
    shorthash = info["extra_generation_params"]["Lora hashes"].split(": ")[1]
    assert len(shorthash) == 12
    assert f'Lora hashes: "ink: {shorthash}"' in info["infotexts"][0]
    assert answer.image.info["parameters"] == info["infotexts"][0]


def test_refused_and_unbounded_prompts_answer_a1111s_422(server: RunningServer) -> None:
    refused = httpx.post(
        server.url + "/sdapi/v1/txt2img", json={**SMALL, "prompt": "a <lora:loha:1>"}, timeout=60
    )
    assert refused.status_code == 422
    (problem,) = refused.json()["detail"]
    assert problem["loc"] == ["body", "prompt"] and "LoHa" in problem["msg"]
    many = httpx.post(
        server.url + "/sdapi/v1/txt2img", json={**SMALL, "prompt": "<lora:ink>" * 3}, timeout=60
    )
    assert many.status_code == 422 and "at most 2" in many.json()["detail"][0]["msg"]


def test_refresh_loras_reads_the_folder_again(server: RunningServer, loras: Path) -> None:
    fresh = lora_file(loras / "fresh.safetensors", {KOHYA_UNET: (2048, 4, 640)})
    assert httpx.post(server.url + "/sdapi/v1/refresh-loras", timeout=60).json() is None
    assert "fresh" in [lora["name"] for lora in a1111(server).get_loras()]
    fresh.unlink()
    httpx.post(server.url + "/sdapi/v1/refresh-loras", timeout=60)
    assert "fresh" not in [lora["name"] for lora in a1111(server).get_loras()]
    answer = a1111(server).txt2img(prompt="<lora:fresh:1> a boat", **SMALL)
    assert answer.info["comments"] == "Lora not found: fresh"
