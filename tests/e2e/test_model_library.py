"""The model library through the real server and real clients on every wire: several checkpoints served
from one process, each named its wire's way (webuiapi for A1111, the `openai` package, boto3 with an alias
ARN, httpx for Stability v1), names never taken as paths, refresh without restart, bounded memory."""

from __future__ import annotations

import base64
import io
import json
import shutil
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlparse

import botocore.exceptions
import httpx
import numpy as np
import openai
import pytest
import webuiapi
from PIL import Image

from sdxl_bedrock.engine.tiny import tiny_model_path
from sdxl_bedrock.testing import bedrock_client
from tests.conftest import RunningServer, free_port, metric, start_server
from tests.library.checkpoints import fake_safetensors, tiny_single_file, tiny_variant

CUSTOM_MODEL_ARN = (
    "arn:aws:bedrock:us-east-1:123456789012:custom-model/stability.stable-diffusion-xl-v1/house"
)
PROFILE_ARN = "arn:aws:bedrock:us-east-1:123456789012:application-inference-profile/anime01"
UNMAPPED_ARN = "arn:aws:bedrock:us-east-1:123456789012:provisioned-model/unknown"
SMALL_A1111 = {"width": 64, "height": 64, "steps": 3, "sampler_name": "Euler", "seed": 7, "prompt": "a boat"}
BEDROCK_BODY = {"text_prompts": [{"text": "a boat"}], "width": 64, "height": 64, "steps": 10, "seed": 7}
# Names that must never reach a file: a wire looks names up in the library's listing only.
PROBES = ("../house-style", "..%2Fhouse-style", "/etc/passwd", "escape", "x" * 300, "sd15")


@pytest.fixture(scope="module")
def library(tmp_path_factory: pytest.TempPathFactory, cache_dir: Path) -> Path:
    root = tmp_path_factory.mktemp("checkpoints")
    tiny_variant(root / "house-style", seed=1)
    tiny_single_file(tiny_variant(root.parent / "anime-folder", seed=2), root / "anime.safetensors")
    fake_safetensors(root / "sd15.safetensors", {"cond_stage_model.transformer.text_model.x": [4]})
    outside = root.parent / "outside"
    shutil.copytree(root / "house-style", outside)
    (root / "escape").symlink_to(outside, target_is_directory=True)
    return root


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, library: Path) -> Iterator[RunningServer]:
    running = start_server(
        tmp_path_factory.mktemp("logs"),
        *("--model", "tiny", "--relaxed-sizes", "--checkpoint-dir", str(library)),
        *("--single-file-config", str(tiny_model_path())),
        *("--model-alias", f"{CUSTOM_MODEL_ARN}=house-style", "--model-alias", f"{PROFILE_ARN}=anime"),
        *("--max-host-checkpoints", "0"),  # every switch reads the checkpoint from disk again
    )
    yield running
    running.stop()


def a1111(server: RunningServer) -> webuiapi.WebUIApi:
    address = urlparse(server.url)
    return webuiapi.WebUIApi(host=address.hostname, port=address.port)


def pixels(image: Image.Image) -> np.ndarray:
    return np.asarray(image.convert("RGB"), dtype=np.int16)


def png_pixels(data: bytes) -> np.ndarray:
    return pixels(Image.open(io.BytesIO(data)))


def bedrock_image(url: str, model_id: str, **body: Any) -> np.ndarray:
    answer = bedrock_client(url).invoke_model(modelId=model_id, body=json.dumps({**BEDROCK_BODY, **body}))
    payload = json.loads(answer["body"].read())
    return png_pixels(base64.b64decode(payload["artifacts"][0]["base64"]))


def close(first: np.ndarray, second: np.ndarray) -> bool:
    return bool(np.abs(first - second).max() <= 1)


def test_sd_models_lists_the_library_with_a1111s_fields(server: RunningServer, library: Path) -> None:
    models = httpx.get(server.url + "/sdapi/v1/sd-models", timeout=30).json()

    assert [model["model_name"] for model in models] == ["tiny", "anime", "house-style"]
    anime = models[1]
    assert anime["title"] == f"anime.safetensors [{anime['hash']}]" and len(anime["hash"]) == 10
    assert anime["sha256"].startswith(anime["hash"]) and anime["filename"] == str(
        library / "anime.safetensors"
    )


def test_each_checkpoint_makes_its_own_image_on_every_wire(server: RunningServer) -> None:
    default = bedrock_image(server.url, "stability.stable-diffusion-xl-v1")
    house = bedrock_image(server.url, CUSTOM_MODEL_ARN)
    anime = bedrock_image(server.url, PROFILE_ARN)
    assert not close(default, house) and not close(house, anime), "three checkpoints, three images"

    stability = httpx.post(
        server.url + "/v1/generation/house-style/text-to-image",
        json={"text_prompts": [{"text": "a boat"}], "width": 64, "height": 64, "steps": 10, "seed": 7},
        headers={"accept": "image/png"},
        timeout=120,
    )
    assert stability.status_code == 200 and close(png_pixels(stability.content), house)

    with openai.OpenAI(base_url=server.url + "/v1", api_key="unused") as client:
        listed = [model.id for model in client.models.list()]
        assert {"anime", "house-style", CUSTOM_MODEL_ARN}.issubset(listed)
        made = client.images.generate(model="anime", prompt="a boat", size="64x64", extra_body={"seed": 7})
        assert made.data[0].b64_json


def test_a_checkpoint_alone_makes_the_same_image(
    server: RunningServer, library: Path, tmp_path_factory: pytest.TempPathFactory
) -> None:
    """A request's image is the one a server with that checkpoint alone (`--model`) makes."""
    alone = start_server(
        tmp_path_factory.mktemp("logs"), "--model", str(library / "house-style"), "--relaxed-sizes"
    )
    try:
        expected = bedrock_image(alone.url, "stability.stable-diffusion-xl-v1")
    finally:
        alone.stop()
    assert close(bedrock_image(server.url, CUSTOM_MODEL_ARN), expected)


def test_mixed_concurrent_requests_make_the_images_they_make_alone(server: RunningServer) -> None:
    ids = [CUSTOM_MODEL_ARN, "stability.stable-diffusion-xl-v1", PROFILE_ARN] * 2
    alone = {model_id: bedrock_image(server.url, model_id) for model_id in ids[:3]}
    with ThreadPoolExecutor(6) as pool:
        together = list(pool.map(lambda model_id: bedrock_image(server.url, model_id), ids))
    for model_id, image in zip(ids, together, strict=True):
        assert close(image, alone[model_id]), model_id
    assert metric(server, "sdxl_checkpoint_move_seconds_count", to="disk-device") >= 2


def test_a1111_switches_by_options_and_per_request(server: RunningServer) -> None:
    api = a1111(server)
    api.set_options({"sd_model_checkpoint": "house-style"})
    try:
        options = api.get_options()
        assert options["sd_model_checkpoint"].startswith("house-style [")
        assert options["sd_checkpoint_hash"]
        api.set_options(options)  # the very dict GET gave, read-only keys included
        switched = api.txt2img(**SMALL_A1111)
        assert switched.info["sd_model_name"] == "house-style"
        overridden = api.txt2img(**SMALL_A1111, override_settings={"sd_model_checkpoint": "tiny"})
        assert overridden.info["sd_model_name"] == "tiny"
        assert "Model hash: " in switched.info["infotexts"][0]
        assert not close(pixels(switched.image), pixels(overridden.image))
    finally:
        api.set_options({"sd_model_checkpoint": "tiny"})

    refused = httpx.post(server.url + "/sdapi/v1/options", json={"sd_model_checkpoint": "nope"}, timeout=30)
    assert refused.status_code == 500 and "nope" in refused.text, "A1111's set_config error"
    override = httpx.post(
        server.url + "/sdapi/v1/txt2img",
        json={**SMALL_A1111, "override_settings": {"sd_model_checkpoint": "nope"}},
        timeout=30,
    )
    assert override.status_code == 422 and "nope" in override.text


@pytest.mark.parametrize("probe", PROBES)
def test_a_name_is_never_a_path_on_any_wire(server: RunningServer, probe: str) -> None:
    segment = quote(probe, safe="%")
    stability = httpx.post(
        server.url + f"/v1/generation/{segment}/text-to-image",
        json={"text_prompts": [{"text": "x"}]},
        timeout=30,
    )
    assert stability.status_code == 404, stability.text
    with (
        openai.OpenAI(base_url=server.url + "/v1", api_key="unused") as client,
        pytest.raises(openai.NotFoundError),
    ):
        client.images.generate(model=probe, prompt="x", size="64x64")
    a1111_answer = httpx.post(
        server.url + "/sdapi/v1/txt2img",
        json={**SMALL_A1111, "override_settings": {"sd_model_checkpoint": probe}},
        timeout=30,
    )
    assert a1111_answer.status_code == 422, a1111_answer.text
    with pytest.raises(botocore.exceptions.ClientError) as bedrock:
        bedrock_client(server.url).invoke_model(modelId=probe, body=json.dumps(BEDROCK_BODY))
    assert bedrock.value.response["Error"]["Code"] == "ValidationException"


def test_an_unmapped_arn_keeps_bedrocks_error(server: RunningServer) -> None:
    with pytest.raises(botocore.exceptions.ClientError) as error:
        bedrock_client(server.url).invoke_model(modelId=UNMAPPED_ARN, body=json.dumps(BEDROCK_BODY))
    assert error.value.response["Error"]["Code"] == "ValidationException"


def test_refresh_lists_new_checkpoints_and_lets_removed_ones_go(server: RunningServer, library: Path) -> None:
    tiny_variant(library / "fresh", seed=4)
    assert httpx.post(server.url + "/sdapi/v1/refresh-checkpoints", timeout=60).json() is None
    engines = [engine["id"] for engine in httpx.get(server.url + "/v1/engines/list", timeout=30).json()]
    assert "fresh" in engines
    made = httpx.post(
        server.url + "/v1/generation/fresh/text-to-image",
        json={"text_prompts": [{"text": "a boat"}], "width": 64, "height": 64, "steps": 10},
        timeout=120,
    )
    assert made.status_code == 200

    shutil.rmtree(library / "fresh")
    httpx.post(server.url + "/sdapi/v1/refresh-checkpoints", timeout=60)
    gone = httpx.post(
        server.url + "/v1/generation/fresh/text-to-image", json={"text_prompts": [{"text": "x"}]}, timeout=30
    )
    assert gone.status_code == 404
    names = [
        model["model_name"] for model in httpx.get(server.url + "/sdapi/v1/sd-models", timeout=30).json()
    ]
    assert "fresh" not in names


def test_switching_fifty_times_keeps_memory_bounded(server: RunningServer) -> None:
    """Each switch reads a checkpoint from disk (--max-host-checkpoints 0) and drops the other: host memory
    (this CPU server's device) after 50 switches stays within a small bound of what it was after the first."""
    api = a1111(server)
    tiny_steps = {**SMALL_A1111, "steps": 1}

    def switch(checkpoint: str) -> None:
        api.txt2img(**tiny_steps, override_settings={"sd_model_checkpoint": checkpoint})

    def resident() -> int:
        return int(api.get_memory()["ram"]["used"])

    switch("house-style")
    switch("anime")
    after_first = resident()
    for index in range(50):
        switch("house-style" if index % 2 else "anime")
    grown = resident() - after_first
    assert grown < 64 * 2**20, f"resident memory grew by {grown / 2**20:.0f} MiB over 50 switches"


def test_engines_list_offers_only_ids_a_path_can_hold(server: RunningServer) -> None:
    engines = [engine["id"] for engine in httpx.get(server.url + "/v1/engines/list", timeout=30).json()]
    assert "house-style" in engines and "anime" in engines
    assert CUSTOM_MODEL_ARN not in engines, "an ARN alias is Bedrock's: no Stability path segment holds it"


def test_an_alias_naming_no_checkpoint_stops_the_server_saying_so(library: Path, cache_dir: Path) -> None:
    from tests.e2e.test_cli import cli

    done = cli(
        "serve", "--port", str(free_port()), "--checkpoint-dir", str(library), "--model-alias", "x=nope"
    )
    assert done.returncode == 1
    assert done.stderr.splitlines()[-1].startswith(
        "sdxl-bedrock: the model library: --model-alias x=nope: no checkpoint 'nope' is served here"
    )
