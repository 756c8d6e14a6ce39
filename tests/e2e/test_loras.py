"""LoRA adapters through the real server (--lora-dir) and real clients: A1111's `GET /sdapi/v1/loras`
through webuiapi, `POST /sdapi/v1/refresh-loras`, what a `<lora:...>` prompt answers (its infotext's
hashes, A1111's note for a name not found, A1111's error shape for a refused LoRA), and the image each wire
makes with adapters: webuiapi's `<lora:...>` prompts, boto3 with an alias id and `extras.loras`, the
`openai` package with an alias `model`, Stability's engine id; concurrent rows of different adapters make
the images they make alone."""

from __future__ import annotations

import base64
import io
import json
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import botocore.exceptions
import httpx
import numpy as np
import openai
import pytest
import webuiapi
from PIL import Image
from safetensors.torch import load_file, save_file

from sdxl_bedrock.testing import bedrock_client
from tests.conftest import RunningServer, metric, start_server
from tests.library import loras as files
from tests.library.test_loras import KOHYA_UNET, lora_file, tensors_file, zeros

INK_ARN = "arn:aws:bedrock:us-east-1:123456789012:custom-model/stability.stable-diffusion-xl-v1/ink"
BEDROCK_BODY = {"text_prompts": [{"text": "a boat"}], "width": 64, "height": 64, "steps": 10, "seed": 7}

SMALL = {"width": 64, "height": 64, "steps": 2, "sampler_name": "Euler", "seed": 7}


@pytest.fixture(scope="module")
def loras(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("loras")
    ink = files.tiny_lora(root / "ink.safetensors", seed=1, format="kohya")
    # kohya's trainer names the network in the file's metadata: A1111's alias.
    save_file(load_file(ink), ink, metadata={"ss_output_name": "Ink Style", "ss_network_dim": "4"})
    files.tiny_lora(root / "paper.safetensors", seed=2)
    files.nan_lora(root / "broken.safetensors")
    lora_file(root / "big.safetensors", {KOHYA_UNET: (2048, 4, 640)})  # SDXL base's shapes, not the tiny's
    tensors_file(root / "loha.safetensors", zeros(f"{KOHYA_UNET}.hada_w1_a", f"{KOHYA_UNET}.hada_w1_b"))
    return root


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, loras: Path, cache_dir: Path) -> Iterator[RunningServer]:
    running = start_server(
        tmp_path_factory.mktemp("logs"),
        *("--model", "tiny", "--relaxed-sizes", "--lora-dir", str(loras), "--max-loras-per-request", "2"),
        *(
            "--model-alias",
            f"{INK_ARN}=tiny+ink:0.8",
            "--model-alias",
            "ink-and-paper=tiny+ink:0.8+paper:0.5",
        ),
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
    assert [lora["name"] for lora in listed] == ["big", "broken", "ink", "paper"]
    assert listed[2] == {
        "name": "ink",
        "alias": "Ink Style",
        "path": str(loras / "ink.safetensors"),
        "metadata": {"ss_output_name": "Ink Style", "ss_network_dim": "4"},
    }
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


def pixels(data: bytes | Image.Image) -> np.ndarray:
    image = data if isinstance(data, Image.Image) else Image.open(io.BytesIO(data))
    return np.asarray(image.convert("RGB"), dtype=np.int16)


def close(first: np.ndarray, second: np.ndarray) -> bool:
    return bool(np.abs(first - second).max() <= 1)


def bedrock_image(url: str, model_id: str = "stability.stable-diffusion-xl-v1", **body: Any) -> np.ndarray:
    answer = bedrock_client(url).invoke_model(modelId=model_id, body=json.dumps({**BEDROCK_BODY, **body}))
    payload = json.loads(answer["body"].read())
    return pixels(base64.b64decode(payload["artifacts"][0]["base64"]))


def test_a1111_lora_tags_change_the_image_and_leave_the_text(server: RunningServer) -> None:
    """`<lora:ink:0.8>` applies ink; at weight 0 the image is the plain prompt's (the tag is not text)."""
    api = a1111(server)
    plain = pixels(api.txt2img(prompt="a boat", **SMALL).image)
    inked = pixels(api.txt2img(prompt="a boat <lora:ink:0.8>", **SMALL).image)
    zero = pixels(api.txt2img(prompt="a boat <lora:ink:0>", **SMALL).image)
    by_alias = pixels(api.txt2img(prompt="<lora:Ink Style:0.8>a boat", **SMALL).image)
    assert not close(plain, inked) and close(plain, zero) and close(inked, by_alias)
    te_only = pixels(api.txt2img(prompt="a boat <lora:ink:0.8:0>", **SMALL).image)
    assert not close(te_only, plain) and not close(te_only, inked), "te and unet multipliers apart"


def test_a_lora_tag_in_a_prompt_comment_is_not_applied(server: RunningServer) -> None:
    """A1111 1.8+ takes `#` to the line's end out of the styled prompts before it reads their tags, while
    `enable_prompt_comments` is on, its default (modules/processing_scripts/comments.py; process_images_inner
    runs scripts.process before parse_extra_network_prompts); `info` and the infotext show the prompt
    without it, newline kept (Processed.js's all_prompts[0], create_infotext)."""
    api = a1111(server)
    assert api.get_options()["enable_prompt_comments"] is True
    plain = api.txt2img(prompt="a boat", **SMALL)
    commented = api.txt2img(prompt="a boat\n# <lora:ink:0.8> for later", **SMALL)
    info = commented.info
    assert info["prompt"] == "a boat\n" and info["all_prompts"] == ["a boat\n"]
    assert "Lora hashes" not in info["extra_generation_params"]
    assert info["infotexts"][0].startswith("a boat\n\nSteps: 2, ")
    assert commented.image.info["parameters"] == info["infotexts"][0]
    assert close(pixels(commented.image), pixels(plain.image)), "the same tokens: the comment is gone"
    off = api.txt2img(
        prompt="a boat\n# <lora:ink:0.8> for later",
        override_settings={"enable_prompt_comments": False},
        **SMALL,
    )
    assert off.info["prompt"] == "a boat\n# <lora:ink:0.8> for later"
    assert "Lora hashes" in off.info["extra_generation_params"]
    assert api.get_options()["enable_prompt_comments"] is True, "override_settings is for the one request"


def test_hires_prompts_lose_their_comments_too(server: RunningServer) -> None:
    """The hires prompts are stripped alike (comments.py strips all_hr_prompts), so a hires prompt that
    differs only in its comment is not reported (create_infotext's `Hires prompt`, only where they differ)."""
    hires = {**SMALL, "enable_hr": True, "hr_scale": 2, "hr_upscaler": "Latent"}
    same = a1111(server).txt2img(prompt="a boat # one", hr_prompt="a boat # two", **hires)
    assert same.image.size == (128, 128) and "Hires prompt" not in same.info["infotexts"][0]
    other = a1111(server).txt2img(prompt="a boat # one", hr_prompt="a ship # two", **hires)
    assert 'Hires prompt: "a ship \\n"' in other.info["infotexts"][0]


def test_bedrock_extras_loras_and_an_alias_id_carrying_adapters_make_the_same_image(
    server: RunningServer,
) -> None:
    plain = bedrock_image(server.url)
    by_extras = bedrock_image(server.url, extras={"loras": [{"name": "ink", "weight": 0.8}]})
    by_alias = bedrock_image(server.url, INK_ARN)
    assert not close(plain, by_extras) and close(by_extras, by_alias)
    both = bedrock_image(
        server.url, extras={"loras": [{"name": "ink", "weight": 0.8}, {"name": "paper", "weight": 0.5}]}
    )
    stacked = bedrock_image(server.url, INK_ARN, extras={"loras": [{"name": "paper", "weight": 0.5}]})
    assert not close(both, by_extras) and close(both, stacked), "an alias's adapters come first, then extras'"


@pytest.mark.parametrize(
    ("given", "message"),
    [
        ("ink", "#/extras/loras: expected type: JSONArray"),
        ([{"name": "ink", "weight": "high"}], "#/extras/loras/0/weight: expected type: Number"),
        ([{"name": "../ink"}], "no LoRA"),
        ([{"name": "loha"}], "LoHa"),
        ([{"name": "broken"}], "non-finite"),
        ([{"name": "big"}], "does not fit this checkpoint"),
        ([{"name": "ink"}] * 3, "at most 2"),
    ],
)
def test_bedrock_refuses_bad_adapters_with_a_validation_exception(
    server: RunningServer, given: object, message: str
) -> None:
    with pytest.raises(botocore.exceptions.ClientError) as caught:
        bedrock_image(server.url, extras={"loras": given})
    error = caught.value.response["Error"]
    assert error["Code"] == "ValidationException" and message in error["Message"]


def test_openai_and_stability_aliases_carry_their_adapters(server: RunningServer) -> None:
    with openai.OpenAI(base_url=server.url + "/v1", api_key="unused") as client:
        assert "ink-and-paper" in [model.id for model in client.models.list()]

        def made(model: str) -> np.ndarray:
            answer = client.images.generate(
                model=model, prompt="a boat", size="64x64", extra_body={"seed": 7}
            )
            assert answer.data is not None and answer.data[0].b64_json
            return pixels(base64.b64decode(answer.data[0].b64_json))

        assert not close(made("ink-and-paper"), made("tiny"))
    body = {"text_prompts": [{"text": "a boat"}], "width": 64, "height": 64, "steps": 10, "seed": 7}

    def stability(engine: str) -> np.ndarray:
        answer = httpx.post(
            f"{server.url}/v1/generation/{engine}/text-to-image",
            json=body,
            headers={"accept": "image/png"},
            timeout=120,
        )
        assert answer.status_code == 200, answer.text
        return pixels(answer.content)

    assert not close(stability("ink-and-paper"), stability("stable-diffusion-xl-1024-v1-0"))


def test_concurrent_rows_with_different_adapters_make_the_images_they_make_alone(
    server: RunningServer,
) -> None:
    bodies = [
        {},
        {"extras": {"loras": [{"name": "ink", "weight": 0.8}]}},
        {"extras": {"loras": [{"name": "paper", "weight": 1.0}]}, "seed": 8},
        {"extras": {"loras": [{"name": "ink", "weight": 0.3}, {"name": "paper", "weight": 0.6}]}, "seed": 9},
    ] * 2
    alone = [bedrock_image(server.url, **body) for body in bodies[:4]]
    with ThreadPoolExecutor(len(bodies)) as pool:
        together = list(pool.map(lambda body: bedrock_image(server.url, **body), bodies))
    for index, image in enumerate(together):
        assert close(image, alone[index % 4]), bodies[index]
    assert metric(server, "sdxl_lora_load_seconds_count", stage="read") >= 2
    assert metric(server, "sdxl_loras_resident", where="device") >= 2
