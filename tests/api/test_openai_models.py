"""OpenAI's model ids, each with its contract as OpenAI's Images API reference gives it (sizes, the `n`
bound, which parameters it takes, its defaults), served by the one checkpoint; sizes SDXL does not make
well made at the nearest SDXL aspect and resized; --model-alias and --strict-model-names."""

from __future__ import annotations

import io
import json
from typing import Any

import pytest
from PIL import Image

from sdxl_bedrock import errors
from sdxl_bedrock.api.openai.bodies import (
    DEFAULT_MODEL_NAMES,
    ModelNames,
    Output,
    made_size,
    parse_edit,
    parse_generation,
)
from sdxl_bedrock.api.openai.errors import ModelNotFound, error_response
from sdxl_bedrock.api.openai.responses import encoded
from sdxl_bedrock.codecs import encode_png
from sdxl_bedrock.config import Settings
from sdxl_bedrock.presets import STYLE_PRESETS
from tests.api.test_openai_images import half_transparent_mask, png


def generation(relaxed: bool = False, models: ModelNames = DEFAULT_MODEL_NAMES, **fields: Any) -> Any:
    body = json.dumps({"prompt": "a lighthouse", **fields}).encode()
    return parse_generation(body, relaxed_sizes=relaxed, random_seed=lambda: 40, models=models)


def refusal(**fields: Any) -> tuple[int, dict[str, Any]]:
    with pytest.raises(errors.ServiceError) as refused:
        generation(**fields)
    response = error_response(refused.value, "id")
    return response.status_code, json.loads(bytes(response.body))["error"]


def test_open_webuis_default_is_dall_e_2_at_512() -> None:
    """Open WebUI's OpenAI engine (backend/open_webui/routers/images.py at open-webui/open-webui
    02530d501461ce58ab06231d7c2ef2024a141ddf): model dall-e-2, size 512x512, n 1, response_format
    b64_json."""
    request = generation(model="dall-e-2", n=1, size="512x512", response_format="b64_json")
    made = request.generation
    assert (made.width, made.height, made.steps) == (1024, 1024, 30), "made at SDXL's size"
    assert request.output == Output("b64_json", "png", 100, resize_to=(512, 512))
    assert request.size == "512x512" and request.quality is None and request.revised_prompt is None


@pytest.mark.parametrize(
    ("model", "size", "made", "answered"),
    [
        ("dall-e-2", None, (1024, 1024), "url"),
        ("dall-e-2", "256x256", (1024, 1024), "url"),
        ("dall-e-3", None, (1024, 1024), "url"),
        ("dall-e-3", "1792x1024", (1344, 768), "url"),
        ("dall-e-3", "1024x1792", (768, 1344), "url"),
        ("gpt-image-1", None, (1024, 1024), "b64_json"),
        ("gpt-image-1", "1536x1024", (1216, 832), "b64_json"),
        ("gpt-image-1-mini", "1024x1536", (832, 1216), "b64_json"),
        ("gpt-image-1.5", "auto", (1024, 1024), "b64_json"),
    ],
)
def test_each_model_has_its_sizes_and_default_response_format(
    model: str, size: str | None, made: tuple[int, int], answered: str
) -> None:
    request = generation(model=model, **({"size": size} if size else {}))
    assert (request.generation.width, request.generation.height) == made
    assert request.output.response_format == answered
    asked = size if size not in (None, "auto") else "1024x1024"
    assert request.size == asked


def test_a_relaxed_server_makes_a_size_its_rule_takes_as_it_is() -> None:
    request = generation(relaxed=True, model="dall-e-2", size="256x256")
    assert (request.generation.width, request.generation.height) == (256, 256)
    assert request.output.resize_to is None
    assert made_size((1792, 1024), relaxed=True) == (1792, 1024)
    assert made_size((1000, 1000), relaxed=True) == (1024, 1024), "not a multiple of 64"


@pytest.mark.parametrize(
    ("model", "fields", "status", "param", "code", "message"),
    [
        (
            "dall-e-2",
            {"size": "1792x1024"},
            400,
            "size",
            "invalid_value",
            "'256x256', '512x512', and '1024x1024'",
        ),
        (
            "dall-e-3",
            {"size": "auto"},
            400,
            "size",
            "invalid_value",
            "'1024x1024', '1792x1024', and '1024x1792'",
        ),
        (
            "gpt-image-1",
            {"size": "512x512"},
            400,
            "size",
            "invalid_value",
            "'1536x1024', '1024x1536', and 'auto'",
        ),
        (
            "dall-e-3",
            {"n": 2},
            400,
            "n",
            "integer_above_max_value",
            "Expected a value <= 1, but got 2 instead",
        ),
        ("dall-e-3", {"quality": "high"}, 400, "quality", "invalid_value", "'standard' and 'hd'"),
        ("dall-e-2", {"quality": "hd"}, 400, "quality", "invalid_value", "Supported values are: 'standard'"),
        ("gpt-image-1", {"quality": "hd"}, 400, "quality", "invalid_value", "'high', and 'auto'"),
        ("dall-e-3", {"style": "anime"}, 400, "style", "invalid_value", "'vivid' and 'natural'"),
        ("gpt-image-1", {"style": "vivid"}, 400, "style", "unknown_parameter", "Unknown parameter: 'style'."),
        ("dall-e-2", {"style": "natural"}, 400, "style", "unknown_parameter", "Unknown parameter: 'style'."),
        (
            "gpt-image-1.5",
            {"response_format": "b64_json"},
            400,
            "response_format",
            "unknown_parameter",
            "Unknown parameter: 'response_format'.",
        ),
        ("dall-e-3", {"background": "opaque"}, 400, "background", "unknown_parameter", "Unknown parameter"),
        (
            "dall-e-2",
            {"output_format": "png"},
            400,
            "output_format",
            "unknown_parameter",
            "Unknown parameter",
        ),
        (
            "gpt-image-1",
            {"background": "transparent"},
            400,
            "background",
            "invalid_value",
            "'auto' and 'opaque'",
        ),
        ("dall-e-2", {"prompt": "x" * 1001}, 400, "prompt", "string_above_max_length", "maximum length 1000"),
    ],
)
def test_each_model_refuses_what_openai_refuses_it(
    model: str, fields: dict[str, Any], status: int, param: str, code: str, message: str
) -> None:
    got_status, error = refusal(model=model, **fields)
    assert (got_status, error["param"], error["code"]) == (status, param, code)
    assert message in error["message"]


def test_dall_e_3_is_vivid_unless_natural_and_reports_no_quality() -> None:
    vivid = generation(model="dall-e-3", quality="hd")
    assert vivid.generation.style is STYLE_PRESETS["enhance"] and vivid.generation.steps == 50
    assert vivid.revised_prompt is not None and vivid.quality is None
    assert generation(model="dall-e-3", style="natural").generation.style is None
    gpt = generation(model="gpt-image-1", quality="low", output_format="webp", background="opaque")
    assert gpt.quality == "low" and gpt.output.output_format == "webp" and gpt.generation.steps == 15


def test_strict_names_and_aliases() -> None:
    strict = ModelNames.of(Settings(strict_model_names=True))
    with pytest.raises(ModelNotFound):
        generation(models=strict, model="dall-e-3")
    aliased = ModelNames.of(Settings(strict_model_names=True, model_aliases=["dall-e-3=tiny", "house=tiny"]))
    assert generation(models=aliased, model="dall-e-3", size="1792x1024").size == "1792x1024"
    assert generation(models=aliased, model="house", size="1216x832").size == "1216x832", "our contract"
    with pytest.raises(ModelNotFound):
        generation(models=aliased, model="gpt-image-1")
    assert aliased.names() == ["stability.stable-diffusion-xl-v1", "dall-e-3", "house"]
    assert ModelNames.of(Settings()).names()[:3] == [
        "stability.stable-diffusion-xl-v1",
        "dall-e-2",
        "dall-e-3",
    ]
    assert ModelNames.of(Settings(model="/m/sd_xl_base_1.0.safetensors")).checkpoint == "sd_xl_base_1.0"


def edit(fields: dict[str, str], files: dict[str, list[bytes]]) -> Any:
    return parse_edit(
        {"prompt": "a lighthouse", **fields}, files, relaxed_sizes=False, random_seed=lambda: 40
    )


def test_an_edit_of_several_images_edits_each_the_mask_on_the_first() -> None:
    """Open WebUI sends several images as `image[]` parts (backend/open_webui/routers/images.py at
    open-webui/open-webui 02530d501461ce58ab06231d7c2ef2024a141ddf, image_edits)."""
    images = [png(64, 64), png(96, 64), png(64, 64)]
    request = edit(
        {"model": "gpt-image-1", "n": "2"}, {"image[]": images, "mask": [half_transparent_mask(64, 64)]}
    )
    assert len(request.generations) == 3
    assert [g.seed for g in request.generations] == [40, 42, 44] and all(
        g.samples == 2 for g in request.generations
    )
    first, second, third = request.generations
    assert first.mask is not None and second.mask is None and third.mask is None
    assert first.denoise_from == 1.0 and second.denoise_from == 0.75
    assert {(g.width, g.height) for g in request.generations} == {(1024, 1024)}
    assert request.size == "1024x1024", "auto: the model's size nearest the first image's aspect"
    with pytest.raises(errors.MalformedBody) as refused:
        edit({"model": "dall-e-2"}, {"image[]": images})
    assert "this model edits one image per request, but 3 were sent" in refused.value.problem.description


def test_dall_e_3_makes_no_edits() -> None:
    with pytest.raises(errors.MalformedBody) as refused:
        edit({"model": "dall-e-3"}, {"image": [png()]})
    assert refused.value.problem.field_path() == ("model",) and refused.value.kind == "invalid_value"


def test_an_image_made_at_another_size_is_resized_to_the_size_asked_for() -> None:
    made = encode_png(Image.new("RGB", (1024, 1024), (200, 10, 10)))
    for output_format in ("png", "jpeg"):
        answered = encoded(made, Output("b64_json", output_format, 90, resize_to=(256, 256)))
        with Image.open(io.BytesIO(answered)) as image:
            assert image.size == (256, 256) and image.format == output_format.upper()
