"""The Stability image models' body family, without a server: sizes, masks, ids, answers."""

from __future__ import annotations

import base64
import io
import json

import pytest
from PIL import Image

from sdxl_bedrock.api.bedrock.image_models import (
    ASPECT_RATIOS,
    ImageInvocation,
    Sizing,
    generation_size,
    grown,
    image_model,
    image_models_json,
    nearest_sdxl_size,
    ratio_of,
)
from sdxl_bedrock.api.bedrock.routes import canonical_model_id
from sdxl_bedrock.errors import AccessDenied, InvalidRequest
from sdxl_bedrock.library import only_model
from sdxl_bedrock.schema import Artifact, FilteredBy, FinishReason, GenerationRequest, Sampler, WeightedPrompt

NEAREST = {
    "16:9": (1344, 768),
    "1:1": (1024, 1024),
    "21:9": (1536, 640),
    "2:3": (832, 1216),
    "3:2": (1216, 832),
    "4:5": (896, 1152),
    "5:4": (1152, 896),
    "9:16": (768, 1344),
    "9:21": (640, 1536),
}


def test_every_aspect_ratio_maps_to_its_nearest_sdxl_size() -> None:
    assert {ratio: nearest_sdxl_size(ratio_of(ratio)) for ratio in ASPECT_RATIOS} == NEAREST


@pytest.mark.parametrize(
    ("size", "relaxed", "expected"),
    [
        ((1024, 1024), False, ((1024, 1024), None)),
        ((64, 64), True, ((64, 64), None)),
        ((64, 64), False, ((1024, 1024), (64, 64))),
        ((100, 80), True, ((1152, 896), (100, 80))),
        ((1920, 1080), False, ((1344, 768), (1920, 1080))),
    ],
)
def test_an_input_image_is_generated_at_its_size_or_the_nearest_sdxl_one(
    size: tuple[int, int], relaxed: bool, expected: object
) -> None:
    assert generation_size(size, Sizing(relaxed, lambda: 1)) == expected


def test_grow_mask_dilates_by_that_many_pixels_in_every_direction() -> None:
    mask = Image.new("L", (21, 21), 0)
    mask.putpixel((10, 10), 255)
    area = grown(mask, 3)
    assert area.getbbox() == (7, 7, 14, 14)
    assert grown(mask, 0).getbbox() == (10, 10, 11, 11)


@pytest.mark.parametrize("prefix", ["", "us.", "eu.", "apac."])
def test_inference_profile_ids_name_the_same_model(prefix: str) -> None:
    model = image_model(f"{prefix}stability.sd3-5-large-v1:0")
    assert model is not None and model.model_id == "stability.sd3-5-large-v1:0"
    assert canonical_model_id(f"{prefix}stability.stable-image-core-v1:1", image_models=True) == (
        "stability.stable-image-core-v1:1"
    )


def test_arns_of_models_and_inference_profiles_are_resolved() -> None:
    assert (
        canonical_model_id(
            "arn:aws:bedrock:us-east-1::foundation-model/stability.stable-image-ultra-v1:1", image_models=True
        )
        == "stability.stable-image-ultra-v1:1"
    )
    assert (
        canonical_model_id(
            "arn:aws:bedrock:us-west-2:123456789012:inference-profile/us.stability.sd3-5-large-v1:0",
            image_models=True,
        )
        == "stability.sd3-5-large-v1:0"
    )


def test_without_the_switch_an_image_model_is_access_denied_naming_it() -> None:
    with pytest.raises(AccessDenied, match="only when started with --stability-image-models"):
        canonical_model_id("stability.sd3-5-large-v1:0")
    with pytest.raises(InvalidRequest, match="The provided model identifier is invalid"):
        canonical_model_id("us.stability.stable-diffusion-xl-v1", image_models=True)


def test_the_checkpoint_header_names_no_server_folder() -> None:
    """The header carries the model library's name of --model (library.py), never its path."""
    assert only_model("tiny").default == "tiny"
    assert only_model("/models/sdxl/sd_xl_base_1.0.safetensors").default == "sd_xl_base_1.0"
    assert only_model("/models/sdxl-base/").default == "sdxl-base"


def png(size: tuple[int, int]) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", size, (10, 20, 30)).save(buffer, "PNG")
    return buffer.getvalue()


def invocation(output_format: str = "png", answer_size: tuple[int, int] | None = None) -> ImageInvocation:
    request = GenerationRequest((WeightedPrompt("x", 1),), (), 64, 64, 1, 30, 7.0, Sampler.DPMPP_2M)
    return ImageInvocation(request, output_format, answer_size)


@pytest.mark.parametrize(("output_format", "pillow"), [("png", "PNG"), ("jpeg", "JPEG"), ("webp", "WEBP")])
def test_the_answer_is_seeds_finish_reasons_images_in_the_format_asked(
    output_format: str, pillow: str
) -> None:
    answer = json.loads(
        image_models_json(
            [Artifact(png((64, 64)), 42, FinishReason.SUCCESS)], invocation(output_format, (100, 80))
        )
    )
    assert (answer["seeds"], answer["finish_reasons"]) == ([42], [None])
    image = Image.open(io.BytesIO(base64.b64decode(answer["images"][0])))
    assert (image.format, image.size) == (pillow, (100, 80))


@pytest.mark.parametrize(
    ("cause", "reason"),
    [(FilteredBy.PROMPT, "Filter reason: prompt"), (FilteredBy.OUTPUT_IMAGE, "Filter reason: output image")],
)
def test_a_filtered_answer_is_only_its_finish_reason(cause: FilteredBy, reason: str) -> None:
    artifact = Artifact(png((64, 64)), 42, FinishReason.CONTENT_FILTERED, cause)
    assert json.loads(image_models_json([artifact], invocation())) == {"finish_reasons": [reason]}


@pytest.mark.parametrize(
    ("earlier", "current"),
    [
        ("stability.stable-image-core-v1:0", "stability.stable-image-core-v1:1"),
        ("stability.stable-image-ultra-v1:0", "stability.stable-image-ultra-v1:1"),
        ("stability.sd3-large-v1:0", "stability.sd3-5-large-v1:0"),
    ],
)
def test_earlier_versions_take_the_current_body(earlier: str, current: str) -> None:
    old, new = image_model(earlier), image_model(current)
    assert old is not None and new is not None
    assert (old.body, old.plan) == (new.body, new.plan)
