"""The OpenAI face without a server: its bodies and forms, its error shapes, its url store, its encoders."""

from __future__ import annotations

import functools
import io
import json
from typing import Any

import numpy as np
import pytest
from PIL import Image

from sdxl_bedrock import errors
from sdxl_bedrock.api.openai.bodies import (
    ImagesRequest,
    Output,
    parse_edit,
    parse_generation,
    parse_variation,
)
from sdxl_bedrock.api.openai.errors import (
    INCORRECT_KEY,
    MISSING_KEY,
    ContentPolicyViolation,
    ModelNotFound,
    error_response,
)
from sdxl_bedrock.api.openai.mapping import MODEL_ID, QUALITY_STEPS
from sdxl_bedrock.api.openai.responses import encoded
from sdxl_bedrock.api.openai.routes import check_api_key, encode_all
from sdxl_bedrock.api.openai.store import ImageStore
from sdxl_bedrock.api.validation import SDXL_V1_SIZES
from sdxl_bedrock.config import Settings
from sdxl_bedrock.presets import STYLE_PRESETS
from sdxl_bedrock.schema import DEFAULT_SAMPLER, Artifact, FinishReason

STRICT_SIZES = (
    "'1024x1024', '1152x896', '1216x832', '1344x768', '1536x640', '640x1536', '768x1344', '832x1216', "
    "'896x1152', and 'auto'"
)


@functools.cache
def png(width: int = 64, height: int = 64, mode: str = "RGB", fill: int | tuple[int, ...] = 128) -> bytes:
    buffer = io.BytesIO()
    Image.new(mode, (width, height), fill).save(buffer, "PNG")
    return buffer.getvalue()


def half_transparent_mask(width: int = 64, height: int = 64) -> bytes:
    """Opaque on the left half, fully transparent on the right half."""
    mask = Image.new("RGBA", (width, height), (0, 0, 0, 255))
    mask.paste((0, 0, 0, 0), (width // 2, 0, width, height))
    buffer = io.BytesIO()
    mask.save(buffer, "PNG")
    return buffer.getvalue()


def generation(relaxed_sizes: bool = True, **fields: Any) -> ImagesRequest:
    body = json.dumps({"prompt": "a lighthouse", **fields}).encode()
    return parse_generation(body, relaxed_sizes=relaxed_sizes, random_seed=lambda: 1234)


def edit(
    fields: dict[str, str] | None = None, files: dict[str, list[bytes]] | None = None, relaxed: bool = True
) -> ImagesRequest:
    return parse_edit(
        {"prompt": "a lighthouse", **(fields or {})},
        {"image": [png()]} if files is None else files,
        relaxed_sizes=relaxed,
        random_seed=lambda: 1234,
    )


def variation(
    fields: dict[str, str] | None = None, files: dict[str, list[bytes]] | None = None
) -> ImagesRequest:
    return parse_variation(
        fields or {},
        {"image": [png()]} if files is None else files,
        relaxed_sizes=True,
        random_seed=lambda: 7,
    )


def refusal(error: errors.ServiceError) -> tuple[int, dict[str, Any]]:
    response = error_response(error, "req-1")
    body = json.loads(bytes(response.body))
    assert list(body) == ["error"] and list(body["error"]) == ["message", "type", "param", "code"]
    return response.status_code, body["error"]


# ---- generations ------------------------------------------------------------------------------------------


def test_a_bare_prompt_is_one_1024_image_at_medium_quality() -> None:
    request = generation(relaxed_sizes=False)
    made = request.generation
    assert (made.width, made.height, made.samples, made.seed) == (1024, 1024, 1, 1234)
    assert (made.steps, made.cfg_scale, made.sampler) == (30, 7.0, DEFAULT_SAMPLER)
    assert made.prompts[0].text == "a lighthouse" and made.negative_prompts == ()
    assert (made.init_image, made.mask, made.style) == (None, None, None)
    assert request.output == Output("b64_json", "png", 100)
    assert (request.quality, request.revised_prompt, request.user_id, request.size) == (
        "medium",
        None,
        None,
        "1024x1024",
    )


@pytest.mark.parametrize(("width", "height"), SDXL_V1_SIZES)
def test_each_sdxl_size_is_its_width_and_height(width: int, height: int) -> None:
    made = generation(relaxed_sizes=False, size=f"{width}x{height}").generation
    assert (made.width, made.height) == (width, height)


def test_auto_is_1024_square() -> None:
    made = generation(relaxed_sizes=False, size="auto").generation
    assert (made.width, made.height) == (1024, 1024)


@pytest.mark.parametrize(
    "size", ["64x64", "512x512", "256x256", "1792x1024", "1024x1536", "big", "1024X1024"]
)
def test_other_sizes_are_refused_listing_the_nine(size: str) -> None:
    with pytest.raises(errors.MalformedBody) as refused:
        generation(relaxed_sizes=False, size=size)
    assert refusal(refused.value) == (
        400,
        {
            "message": f"Invalid value: '{size}'. Supported values are: {STRICT_SIZES}.",
            "type": "invalid_request_error",
            "param": "size",
            "code": "invalid_value",
        },
    )


def test_relaxed_sizes_take_what_the_other_faces_take() -> None:
    made = generation(size="64x192").generation
    assert (made.width, made.height) == (64, 192)
    for size in ("100x100", "4096x64", "0x0"):
        with pytest.raises(errors.MalformedBody) as refused:
            generation(size=size)
        assert refusal(refused.value)[1]["message"] == (
            f"Invalid value: '{size}'. Supported values are: 'auto' and WIDTHxHEIGHT with each side a "
            "multiple of 64 from 64 to 2048."
        )


@pytest.mark.parametrize(
    ("quality", "steps", "reported"),
    [
        ("low", 15, "low"),
        ("medium", 30, "medium"),
        ("high", 50, "high"),
        ("auto", 30, "medium"),
        ("standard", 30, "medium"),
        ("hd", 50, "high"),
    ],
)
def test_quality_is_steps(quality: str, steps: int, reported: str) -> None:
    request = generation(quality=quality)
    assert (request.generation.steps, request.quality) == (steps, reported)
    assert QUALITY_STEPS[quality] == steps


def test_vivid_is_the_enhance_style_and_revises_the_prompt() -> None:
    request = generation(style="vivid")
    assert request.generation.style is STYLE_PRESETS["enhance"]
    assert request.revised_prompt == STYLE_PRESETS["enhance"].template.format(prompt="a lighthouse")
    assert request.generation.prompts[0].text == "a lighthouse"  # the engine applies the style


def test_natural_is_no_style_and_any_preset_name_is_taken() -> None:
    assert generation(style="natural").generation.style is None
    assert generation(style="natural").revised_prompt is None
    assert generation(style="anime").generation.style is STYLE_PRESETS["anime"]


def test_n_seed_and_output_fields() -> None:
    request = generation(n=10, seed=42, response_format="url", output_format="webp", output_compression=40)
    assert (request.generation.samples, request.generation.seed) == (10, 42)
    assert request.output == Output("url", "webp", 40)


def test_null_is_an_absent_field() -> None:
    request = generation(n=None, size=None, quality=None, style=None, model=None, response_format=None)
    assert request.generation.samples == 1 and request.output == Output()


def test_our_model_id_background_moderation_and_stream_false_are_taken() -> None:
    generation(model=MODEL_ID, background="opaque", moderation="auto", stream=False)
    generation(background="auto")


def test_user_is_an_opaque_id() -> None:
    first, again = generation(user="someone@example.com"), generation(user="someone@example.com")
    assert first.user_id is not None and first.user_id == again.user_id
    assert "someone" not in first.user_id and len(first.user_id) == 16
    assert generation(user="other").user_id != first.user_id
    # safety_identifier, OpenAI's newer name, wins over user.
    assert generation(user="x", safety_identifier="someone@example.com").user_id == first.user_id


@pytest.mark.parametrize(
    ("fields", "message", "param", "code"),
    [
        ({"prompt": None}, "Missing required parameter: 'prompt'.", "prompt", "missing_required_parameter"),
        (
            {"prompt": ""},
            "Invalid 'prompt': empty string. Expected a string with minimum length 1, but got an empty "
            "string instead.",
            "prompt",
            "empty_string",
        ),
        (
            {"prompt": "a" * 4001},
            "Invalid 'prompt': string too long. Expected a string with maximum length 4000, but got a string "
            "with length 4001 instead.",
            "prompt",
            "string_above_max_length",
        ),
        (
            {"prompt": 3},
            "Invalid type for 'prompt': expected a string, but got an integer instead.",
            "prompt",
            "invalid_type",
        ),
        (
            {"n": "2"},
            "Invalid type for 'n': expected an integer, but got a string instead.",
            "n",
            "invalid_type",
        ),
        (
            {"n": True},
            "Invalid type for 'n': expected an integer, but got a boolean instead.",
            "n",
            "invalid_type",
        ),
        (
            {"n": 11},
            "Invalid 'n': integer above maximum value. Expected a value <= 10, but got 11 instead.",
            "n",
            "integer_above_max_value",
        ),
        (
            {"n": 0},
            "Invalid 'n': integer below minimum value. Expected a value >= 1, but got 0 instead.",
            "n",
            "integer_below_min_value",
        ),
        (
            {"seed": -1},
            "Invalid 'seed': integer below minimum value. Expected a value >= 0, but got -1 instead.",
            "seed",
            "integer_below_min_value",
        ),
        (
            {"quality": "max"},
            "Invalid value: 'max'. Supported values are: 'low', 'medium', 'high', 'auto', 'standard', "
            "and 'hd'.",
            "quality",
            "invalid_value",
        ),
        (
            {"response_format": "file"},
            "Invalid value: 'file'. Supported values are: 'b64_json' and 'url'.",
            "response_format",
            "invalid_value",
        ),
        (
            {"output_format": "gif"},
            "Invalid value: 'gif'. Supported values are: 'png', 'jpeg', and 'webp'.",
            "output_format",
            "invalid_value",
        ),
        (
            {"background": "transparent"},
            "Invalid value: 'transparent'. Supported values are: 'auto' and 'opaque'.",
            "background",
            "invalid_value",
        ),
        (
            {"moderation": "low"},
            "Invalid value: 'low'. Supported values are: 'auto'.",
            "moderation",
            "invalid_value",
        ),
        (
            {"output_compression": 50},
            "Invalid 'output_compression': compression less than 100 is not supported for the png output "
            "format.",
            "output_compression",
            "invalid_value",
        ),
        (
            {"output_format": "jpeg", "output_compression": 101},
            "Invalid 'output_compression': integer above maximum value. Expected a value <= 100, but got 101 "
            "instead.",
            "output_compression",
            "integer_above_max_value",
        ),
        (
            {"stream": True},
            "Invalid 'stream': streaming is not supported by this server; send false or leave it out.",
            "stream",
            "invalid_value",
        ),
        ({"colour": "red"}, "Unknown parameter: 'colour'.", "colour", "unknown_parameter"),
        (
            {"partial_images": 2},
            "Unsupported parameter: 'partial_images' is not supported by this server.",
            "partial_images",
            "unsupported_parameter",
        ),
        ({"strength": 0.5}, "Unknown parameter: 'strength'.", "strength", "unknown_parameter"),
    ],
)
def test_bad_fields_are_refused_in_openais_words(
    fields: dict[str, Any], message: str, param: str, code: str
) -> None:
    body = {"prompt": "a lighthouse", **fields}
    if fields.get("prompt", "") is None:
        del body["prompt"]
    with pytest.raises(errors.MalformedBody) as refused:
        parse_generation(json.dumps(body).encode(), relaxed_sizes=True)
    assert refusal(refused.value) == (
        400,
        {"message": message, "type": "invalid_request_error", "param": param, "code": code},
    )


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        (b"{not json", "We could not parse the JSON body of your request: the body is not valid JSON: "),
        (
            b"[1]",
            "We could not parse the JSON body of your request: expected type: JSONObject, found: JSONArray.",
        ),
        (
            b'{"prompt": "a", "prompt": "b"}',
            "We could not parse the JSON body of your request: duplicate key",
        ),
    ],
)
def test_a_body_that_is_no_json_object_is_refused(raw: bytes, message: str) -> None:
    with pytest.raises(errors.MalformedBody) as refused:
        parse_generation(raw)
    status, error = refusal(refused.value)
    assert (status, error["param"], error["code"]) == (400, None, "invalid_json")
    assert error["message"].startswith(message)


@pytest.mark.parametrize("model", ["dall-e-4", "gpt-image-9", "stable-diffusion-xl-1024-v1-0"])
def test_another_model_is_model_not_found(model: str) -> None:
    with pytest.raises(ModelNotFound) as refused:
        generation(model=model, n=99)  # the model is checked before the other fields
    assert refusal(refused.value) == (
        404,
        {
            "message": f"The model `{model}` does not exist or you do not have access to it.",
            "type": "invalid_request_error",
            "param": None,
            "code": "model_not_found",
        },
    )


# ---- edits and variations ---------------------------------------------------------------------------------


def test_an_edit_without_mask_is_image_to_image_at_075() -> None:
    request = edit({"n": "2", "seed": "9", "quality": "low"})
    made = request.generation
    assert made.init_image is not None and made.init_image.mode == "RGB" and made.init_image.size == (64, 64)
    assert (made.mask, made.denoise_from, made.denoise_to) == (None, 0.75, 0.0)
    assert (made.samples, made.seed, made.steps, made.width, made.height) == (2, 9, 15, 64, 64)
    assert request.size == "64x64" and request.quality == "low"


def test_a_masked_edit_regenerates_the_transparent_pixels_fully() -> None:
    made = edit(files={"image": [png()], "mask": [half_transparent_mask()]}).generation
    assert made.mask is not None and made.mask.mode == "L"
    mask = np.asarray(made.mask)
    assert (mask[:, :32] == 0).all() and (mask[:, 32:] == 255).all()
    assert made.denoise_from == 1.0


def test_only_fully_transparent_pixels_are_regenerated() -> None:
    mask = Image.new("RGBA", (64, 64), (0, 0, 0, 1))  # nearly transparent: kept
    mask.paste((255, 255, 255, 0), (0, 0, 8, 8))
    buffer = io.BytesIO()
    mask.save(buffer, "PNG")
    made = edit(files={"image": [png()], "mask": [buffer.getvalue()]}).generation
    assert made.mask is not None
    assert int(np.asarray(made.mask).astype(bool).sum()) == 64


def test_strength_is_ours_for_edits_and_variations() -> None:
    assert edit({"strength": "0.3"}).generation.denoise_from == pytest.approx(0.3)
    masked = edit({"strength": "0.5"}, {"image": [png()], "mask": [half_transparent_mask()]})
    assert masked.generation.denoise_from == pytest.approx(0.5)
    assert variation({"strength": "1"}).generation.denoise_from == 1.0


def test_the_sdks_image_list_of_one_is_the_image() -> None:
    assert edit(files={"image[]": [png(128, 64)]}).size == "128x64"


def test_a_size_other_than_the_images_resizes_image_and_mask() -> None:
    made = edit({"size": "128x128"}, {"image": [png()], "mask": [half_transparent_mask()]}).generation
    assert made.init_image is not None and made.init_image.size == (128, 128)
    assert made.mask is not None and made.mask.size == (128, 128)
    mask = np.asarray(made.mask)
    assert (mask[:, :64] == 0).all() and (mask[:, 64:] == 255).all()


def test_without_size_the_image_must_have_a_supported_size() -> None:
    with pytest.raises(errors.MalformedBody) as refused:
        edit(relaxed=False)
    status, error = refusal(refused.value)
    assert (status, error["param"], error["code"]) == (400, "image", "invalid_value")
    assert error["message"].startswith(
        "Invalid 'image': the image is 64x64, which is not a supported size ('1024x1024', "
    )
    assert error["message"].endswith(
        "; send an image of a supported size, or set 'size' to one to have the image resized."
    )
    resized = edit({"size": "1024x1024"}, relaxed=False).generation
    assert (resized.width, resized.height) == (1024, 1024)


def test_a_variation_is_image_to_image_with_no_prompt_at_06() -> None:
    request = variation({"n": "3", "response_format": "url"})
    made = request.generation
    assert [p.text for p in made.prompts] == [""] and made.negative_prompts == ()
    assert (made.denoise_from, made.samples, made.seed, made.steps) == (0.6, 3, 7, 30)
    assert request.output == Output("url", "png", 100) and request.quality is None


@pytest.mark.parametrize(
    ("fields", "files", "message", "param", "code"),
    [
        ({}, {}, "Missing required parameter: 'image'.", "image", "missing_required_parameter"),
        (
            {"image": "aGVsbG8="},
            {"image[]": [png()]},
            "Invalid type for 'image': expected a file, but got a string instead.",
            "image",
            "invalid_type",
        ),
        (
            {},
            {"image": [png()], "image[]": [png()]},
            "Invalid 'image': this model edits one image per request, but 2 were sent.",
            "image",
            "invalid_value",
        ),
        (
            {},
            {"image": [b"not a picture"]},
            "Invalid 'image': the image could not be decoded (only PNG, JPEG and WebP are accepted).",
            "image",
            "invalid_image_file",
        ),
        (
            {},
            {"image": [png()], "mask": [png(mode="RGBA", fill=(0, 0, 0, 0))] * 2},
            "Invalid 'mask': send one mask, not 2.",
            "mask",
            "invalid_value",
        ),
        (
            {},
            {"image": [png()], "mask": [png()]},
            "Invalid 'mask': the mask has no alpha channel; its fully transparent pixels mark the area to "
            "edit.",
            "mask",
            "invalid_value",
        ),
        (
            {},
            {"image": [png()], "mask": [half_transparent_mask(128, 64)]},
            "Invalid 'mask': the mask is 128x64 but the image is 64x64; they must be the same size.",
            "mask",
            "invalid_value",
        ),
        (
            {},
            {"image": [png()], "markup": [png()]},
            "Unsupported parameter: 'markup' is not supported by this server.",
            "markup",
            "unsupported_parameter",
        ),
        (
            {"n": "two"},
            None,
            "Invalid type for 'n': expected an integer, but got 'two' instead.",
            "n",
            "invalid_type",
        ),
        (
            {"strength": "1.5"},
            None,
            "Invalid 'strength': decimal above maximum value. Expected a value <= 1, but got 1.5 instead.",
            "strength",
            "decimal_above_max_value",
        ),
        ({"style": "vivid"}, None, "Unknown parameter: 'style'.", "style", "unknown_parameter"),
        ({"model": "dall-e-4"}, None, None, None, "model_not_found"),
    ],
)
def test_bad_edit_forms_are_refused_in_openais_words(
    fields: dict[str, str],
    files: dict[str, list[bytes]] | None,
    message: str | None,
    param: str | None,
    code: str,
) -> None:
    with pytest.raises(errors.ServiceError) as refused:
        edit(fields, files)
    status, error = refusal(refused.value)
    assert (error["param"], error["code"]) == (param, code)
    if message is not None:
        assert (status, error["message"]) == (400, message)


def test_a_mask_must_be_a_png() -> None:
    buffer = io.BytesIO()
    Image.new("RGBA", (64, 64), (0, 0, 0, 0)).save(buffer, "WEBP", lossless=True)
    with pytest.raises(errors.MalformedBody) as refused:
        edit(files={"image": [png()], "mask": [buffer.getvalue()]})
    assert refusal(refused.value)[1]["message"] == "Invalid 'mask': the mask must be a PNG file."


def test_variations_take_no_prompt_nor_mask() -> None:
    with pytest.raises(errors.MalformedBody) as refused:
        variation({"prompt": "a"})
    assert refusal(refused.value)[1]["message"] == "Unknown parameter: 'prompt'."
    with pytest.raises(errors.MalformedBody) as refused:
        variation(files={"image": [png()], "mask": [half_transparent_mask()]})
    assert refusal(refused.value)[1]["message"] == "Unknown parameter: 'mask'."


# ---- errors, keys, answers --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("error", "status", "type_", "code"),
    [
        (errors.MissingCredentials(MISSING_KEY), 401, "invalid_request_error", None),
        (errors.AccessDenied(INCORRECT_KEY), 401, "invalid_request_error", "invalid_api_key"),
        (
            errors.NotFound("The requested resource /v1/images/x was not found."),
            404,
            "invalid_request_error",
            None,
        ),
        (errors.ModelTimeout("late"), 408, "server_error", "timeout"),
        (errors.Throttled("Too many requests"), 429, "requests", "rate_limit_exceeded"),
        (errors.ModelFailure("The engine failed"), 500, "server_error", None),
        (errors.ServiceError("An internal error occurred."), 500, "server_error", None),
        (errors.ModelNotReady("loading"), 503, "server_error", "model_not_ready"),
        (errors.ShuttingDown("bye"), 503, "server_error", "service_unavailable"),
        (ContentPolicyViolation(), 400, "invalid_request_error", "content_policy_violation"),
    ],
)
def test_every_error_has_openais_shape(
    error: errors.ServiceError, status: int, type_: str, code: str | None
) -> None:
    assert refusal(error) == (status, {"message": error.message, "type": type_, "param": None, "code": code})


def test_api_keys_missing_and_wrong_are_both_401_told_apart_by_code() -> None:
    settings = Settings(api_keys=frozenset({"sk-right"}))
    check_api_key(settings, {"authorization": "Bearer sk-right"})
    check_api_key(Settings(), {})  # no keys configured: everyone passes
    with pytest.raises(errors.MissingCredentials) as missing:
        check_api_key(settings, {})
    with pytest.raises(errors.AccessDenied) as wrong:
        check_api_key(settings, {"authorization": "Bearer sk-wrong"})
    assert refusal(missing.value)[1]["message"].startswith("You didn't provide an API key.")
    assert refusal(wrong.value)[1] == {
        "message": "Incorrect API key provided.",
        "type": "invalid_request_error",
        "param": None,
        "code": "invalid_api_key",
    }
    assert "sk-wrong" not in json.dumps(refusal(wrong.value))


def test_a_filtered_image_is_a_content_policy_violation() -> None:
    request = generation(n=2)
    fine = Artifact(png(), 1, FinishReason.SUCCESS)
    assert encode_all([fine, fine], request) == [png(), png()]
    with pytest.raises(ContentPolicyViolation):
        encode_all([fine, Artifact(png(), 2, FinishReason.CONTENT_FILTERED)], request)


@pytest.mark.parametrize(("output_format", "pillow_format"), [("jpeg", "JPEG"), ("webp", "WEBP")])
def test_jpeg_and_webp_are_encoded_at_the_compression_asked(output_format: str, pillow_format: str) -> None:
    noise = np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(noise, "RGB").save(buffer, "PNG")
    best = encoded(buffer.getvalue(), Output(output_format=output_format, compression=100))  # type: ignore[arg-type]
    small = encoded(buffer.getvalue(), Output(output_format=output_format, compression=10))  # type: ignore[arg-type]
    for data in (best, small):
        with Image.open(io.BytesIO(data)) as image:
            assert (image.format, image.size) == (pillow_format, (64, 64))
    assert len(small) < len(best) / 2


# ---- the url store ----------------------------------------------------------------------------------------


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_stored_images_live_an_hour() -> None:
    clock = Clock()
    store = ImageStore(clock=clock)
    name = store.put(b"png", "image/png", "png")
    assert name.endswith(".png") and len(name.removesuffix(".png")) >= 43  # 256 random bits
    clock.now += 3599
    stored = store.get(name)
    assert stored is not None and (stored.data, stored.media_type) == (b"png", "image/png")
    assert store.seconds_left(stored) == 1
    clock.now += 1
    assert store.get(name) is None and len(store) == 0 and store.bytes == 0


def test_beyond_the_byte_cap_the_least_recently_used_go_first() -> None:
    store = ImageStore(max_bytes=30, clock=Clock())
    first, second = store.put(b"a" * 10, "image/png", "png"), store.put(b"b" * 10, "image/png", "png")
    third = store.put(b"c" * 10, "image/png", "png")
    assert store.get(first) is not None  # now the most recently used
    fourth = store.put(b"d" * 10, "image/png", "png")
    assert store.get(second) is None
    assert all(store.get(name) is not None for name in (first, third, fourth))
    assert store.bytes == 30 and len(store) == 3


def test_names_are_unguessable_and_unknown_names_are_none() -> None:
    store = ImageStore()
    names = {store.put(b"x", "image/png", "png") for _ in range(100)}
    assert len(names) == 100
    assert store.get("nothing.png") is None
