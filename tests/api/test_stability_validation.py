"""The Stability v1 face without a server: its bodies and forms, its error shapes, samples and API keys."""

from __future__ import annotations

import functools
import io
import json
import subprocess
import sys
from typing import Any

import numpy as np
import pytest
from PIL import Image
from starlette.datastructures import Headers

from sdxl_bedrock import errors
from sdxl_bedrock.api.bedrock.errors import bedrock_error
from sdxl_bedrock.api.stability.bodies import parse_form, parse_text_to_image
from sdxl_bedrock.api.stability.errors import (
    StabilityError,
    stability_error,
    stability_message,
)
from sdxl_bedrock.api.stability.errors import error_response as stability_error_response
from sdxl_bedrock.api.stability.routes import check_api_key, check_samples, response_type
from sdxl_bedrock.api.validation import MAX_SEED
from sdxl_bedrock.config import Settings
from sdxl_bedrock.errors import MalformedBody, MissingCredentials, Problem
from sdxl_bedrock.generation import sample_requests
from sdxl_bedrock.presets import sampler_name
from sdxl_bedrock.schema import DEFAULT_SAMPLER, GenerationRequest, WeightedPrompt

parse_stability_json, parse_stability_form = parse_text_to_image, parse_form

SIZES = "1024x1024, 1152x896, 1216x832, 1344x768, 1536x640, 640x1536, 768x1344, 832x1216, 896x1152"
PROMPT_FIELDS = {"text_prompts[0][text]": "a lighthouse"}


@functools.cache
def png(width: int = 1024, height: int = 1024, mode: str = "RGB", fill: int | tuple[int, ...] = 128) -> bytes:
    buffer = io.BytesIO()
    Image.new(mode, (width, height), fill).save(buffer, "PNG")
    return buffer.getvalue()


def text_to_image(relaxed_sizes: bool = False, **fields: Any) -> GenerationRequest:
    body = json.dumps({"text_prompts": [{"text": "a lighthouse"}], **fields}).encode()
    return parse_stability_json(body, relaxed_sizes=relaxed_sizes, random_seed=lambda: 1234)


def form(
    fields: dict[str, str] | None = None,
    files: dict[str, bytes] | None = None,
    *,
    masking: bool = False,
    relaxed_sizes: bool = False,
) -> GenerationRequest:
    return parse_stability_form(
        PROMPT_FIELDS if fields is None else fields,
        {"init_image": png()} if files is None else files,
        masking=masking,
        relaxed_sizes=relaxed_sizes,
        random_seed=lambda: 1234,
    )


def rejection(parse: Any, *args: Any, **kwargs: Any) -> MalformedBody:
    with pytest.raises(MalformedBody) as caught:
        parse(*args, **kwargs)
    return caught.value


# ---- text-to-image JSON ------------------------------------------------------------------------------------


def test_text_to_image_defaults_are_stabilitys() -> None:
    request = text_to_image()
    assert (request.steps, request.samples, request.width, request.height) == (50, 1, 1024, 1024)
    assert (request.sampler, request.cfg_scale, request.seed) == (DEFAULT_SAMPLER, 7.0, 1234)
    assert (request.denoise_from, request.denoise_to, request.init_image, request.mask) == (
        1.0,
        0.0,
        None,
        None,
    )


@pytest.mark.parametrize(("field", "value"), [("steps", 10), ("steps", 150), ("samples", 1), ("samples", 10)])
def test_stabilitys_limits_for_steps_and_samples_are_wider_than_bedrocks(field: str, value: int) -> None:
    assert getattr(text_to_image(**{field: value}), field) == value


@pytest.mark.parametrize(
    ("fields", "message", "field"),
    [
        ({"steps": 151}, "#/steps: 151 is not less or equal to 150", "steps"),
        ({"steps": 9}, "#/steps: 9 is not greater or equal to 10", "steps"),
        ({"samples": 11}, "#/samples: 11 is not less or equal to 10", "samples"),
        ({"samples": 0}, "#/samples: 0 is not greater or equal to 1", "samples"),
        ({"cfg_scale": 36}, "#/cfg_scale: 36 is not less or equal to 35", "cfg_scale"),
        ({"steps": 30.0}, "#/steps: expected type: Integer, found: Number", "steps"),
        ({"init_image": "aGk="}, "#: extraneous key [init_image] is not permitted", "init_image"),
        (
            {"mask_source": "INIT_IMAGE_ALPHA"},
            "#: extraneous key [mask_source] is not permitted",
            "mask_source",
        ),
        ({"text_prompts": []}, "#/text_prompts: expected minimum item count: 1, found: 0", "text_prompts"),
    ],
)
def test_text_to_image_fields_are_checked_like_bedrocks(
    fields: dict[str, Any], message: str, field: str
) -> None:
    error = rejection(text_to_image, **fields)
    assert (error.message, error.field, error.kind) == (message, field, "bad_request")


def test_text_to_image_sizes_are_sdxls_nine_with_stabilitys_message() -> None:
    assert (text_to_image(width=1344, height=768).width, text_to_image(width=1344, height=768).height) == (
        1344,
        768,
    )
    error = rejection(text_to_image, width=512, height=512)
    assert (
        error.message
        == f"for stable-diffusion-xl-1024-v1-0 the allowed dimensions are {SIZES}, but we received 512x512"
    )
    assert error.kind == "invalid_sdxl_v1_dimensions"


def test_relaxed_sizes_apply_to_text_to_image() -> None:
    assert text_to_image(relaxed_sizes=True, width=64, height=128).height == 128
    assert (
        rejection(text_to_image, relaxed_sizes=True, width=100, height=64).kind == "invalid_image_dimensions"
    )


# ---- multipart forms: image-to-image -----------------------------------------------------------------------


def test_image_to_image_form_defaults() -> None:
    request = form()
    assert (request.width, request.height, request.steps, request.samples) == (1024, 1024, 50, 1)
    assert request.denoise_from == pytest.approx(0.65)
    assert request.init_image is not None and request.init_image.mode == "RGB"
    assert request.mask is None


def test_form_values_are_read_as_typed_values() -> None:
    request = form(
        {
            **PROMPT_FIELDS,
            "cfg_scale": "9.5",
            "seed": "42",
            "steps": "30",
            "samples": "3",
            "sampler": "K_EULER",
            "style_preset": "anime",
            "image_strength": "0.25",
            "extras": '{"note": 1}',
        }
    )
    assert (request.cfg_scale, request.seed, request.steps, request.samples) == (9.5, 42, 30, 3)
    assert request.style is not None
    assert (sampler_name(request.sampler), request.style.name) == ("K_EULER", "anime")
    assert request.denoise_from == pytest.approx(0.75)


def test_form_prompts_follow_their_index_and_weight_sign() -> None:
    request = form(
        {
            "text_prompts[5][text]": "blurry",
            "text_prompts[5][weight]": "-0.9",
            "text_prompts[0][weight]": "0.5",
            "text_prompts[0][text]": "a lighthouse",
            "text_prompts[2][text]": "at dusk",
        }
    )
    assert request.prompts == (WeightedPrompt("a lighthouse", 0.5), WeightedPrompt("at dusk", 1.0))
    assert request.negative_prompts == (WeightedPrompt("blurry", 0.9),)


def test_step_schedule_mode_sets_the_denoising_window() -> None:
    request = form({**PROMPT_FIELDS, "init_image_mode": "STEP_SCHEDULE", "step_schedule_start": "0.8"})
    assert (request.denoise_from, request.denoise_to) == (0.8, 0.0)
    error = rejection(
        form,
        {
            **PROMPT_FIELDS,
            "init_image_mode": "STEP_SCHEDULE",
            "step_schedule_start": "0.5",
            "step_schedule_end": "0.5",
        },
    )
    assert error.message == "#/step_schedule_end: 0.5 is not less than 0.5"


FORM_REJECTED: list[tuple[dict[str, str], dict[str, bytes] | None, str, str]] = [
    ({**PROMPT_FIELDS, "steps": "abc"}, None, "#/steps: abc is not an Integer", "bad_request"),
    ({**PROMPT_FIELDS, "steps": "200"}, None, "#/steps: 200 is not less or equal to 150", "bad_request"),
    ({**PROMPT_FIELDS, "cfg_scale": "strong"}, None, "#/cfg_scale: strong is not a Number", "bad_request"),
    ({**PROMPT_FIELDS, "cfg_scale": "nan"}, None, "#/cfg_scale: nan is not a finite Number", "bad_request"),
    ({**PROMPT_FIELDS, "sampler": "FAST"}, None, "#/sampler: FAST is not a valid enum value", "bad_request"),
    ({**PROMPT_FIELDS, "colour": "red"}, None, "#: extraneous key [colour] is not permitted", "bad_request"),
    ({**PROMPT_FIELDS, "height": "1024"}, None, "#: extraneous key [height] is not permitted", "bad_request"),
    (
        {**PROMPT_FIELDS, "mask_source": "INIT_IMAGE_ALPHA"},
        None,
        "#: extraneous key [mask_source] is not permitted",
        "bad_request",
    ),
    (
        {"text_prompts[0][weight]": "1"},
        None,
        "#/text_prompts/0: required key [text] not found",
        "bad_request",
    ),
    ({}, None, "#: required key [text_prompts] not found", "bad_request"),
    (
        {"text_prompts[0][text]": "a", "text_prompts[0][weight]": "heavy"},
        None,
        "#/text_prompts/0/weight: heavy is not a Number",
        "bad_request",
    ),
    (
        {"text_prompts[0][text]": "a", "text_prompts[0][weight]": "-1"},
        None,
        "#/text_prompts: at least one prompt must have a weight above 0",
        "bad_request",
    ),
    (
        {**PROMPT_FIELDS, "extras": "[1]"},
        None,
        "#/extras: expected type: JSONObject, found: JSONArray",
        "bad_request",
    ),
    (PROMPT_FIELDS, {}, "#: required key [init_image] not found", "bad_request"),
    (
        PROMPT_FIELDS,
        {"init_image": b"aGVsbG8gd29ybGQ=\n"},
        "#/init_image: expected the bytes of an image file, found text that looks like base64; "
        "send the file's own bytes",
        "invalid_image",
    ),
    (
        PROMPT_FIELDS,
        {"init_image": b"data:image/png;base64,aGVsbG8="},
        "#/init_image: expected the bytes of an image file, found a data URL; send the file's own bytes",
        "invalid_image",
    ),
    (
        PROMPT_FIELDS,
        {"init_image": png(), "mask_image": png()},
        "#: extraneous file [mask_image] is not permitted",
        "bad_request",
    ),
    (
        PROMPT_FIELDS,
        {"init_image": b"not an image"},
        "#/init_image: the image could not be decoded (only PNG, JPEG and WebP are accepted)",
        "invalid_image",
    ),
    (
        PROMPT_FIELDS,
        {"init_image": png(512, 512)},
        f"for stable-diffusion-xl-1024-v1-0 the allowed dimensions are {SIZES}, but we received 512x512",
        "invalid_sdxl_v1_dimensions",
    ),
]


@pytest.mark.parametrize(
    ("fields", "files", "message", "kind"), FORM_REJECTED, ids=[c[2][:50] for c in FORM_REJECTED]
)
def test_image_to_image_form_rejections(
    fields: dict[str, str], files: dict[str, bytes] | None, message: str, kind: str
) -> None:
    error = rejection(form, fields, files)
    assert (error.message, error.kind) == (message, kind)


def test_field_problems_are_found_before_the_image_is_decoded() -> None:
    fields = {**PROMPT_FIELDS, "init_image_mode": "STEP_SCHEDULE", "step_schedule_end": "0.9"}
    error = rejection(form, fields, {"init_image": b"not an image"})
    assert error.field == "step_schedule_end"


def test_relaxed_sizes_apply_to_the_init_image() -> None:
    assert form(files={"init_image": png(64, 128)}, relaxed_sizes=True).height == 128
    error = rejection(form, files={"init_image": png(100, 64)}, relaxed_sizes=True)
    assert (error.field, error.kind) == ("init_image", "invalid_image_dimensions")


# ---- multipart forms: masking ------------------------------------------------------------------------------


def half_white_png(width: int = 1024, height: int = 1024) -> bytes:
    levels = np.zeros((height, width), dtype=np.uint8)
    levels[:, : width // 2] = 255
    buffer = io.BytesIO()
    Image.fromarray(levels, "L").save(buffer, "PNG")
    return buffer.getvalue()


@pytest.mark.parametrize(
    ("source", "left", "right"), [("MASK_IMAGE_WHITE", 255, 0), ("MASK_IMAGE_BLACK", 0, 255)]
)
def test_masking_regenerates_the_chosen_pixels_from_pure_noise(source: str, left: int, right: int) -> None:
    request = form(
        {**PROMPT_FIELDS, "mask_source": source},
        {"init_image": png(), "mask_image": half_white_png()},
        masking=True,
    )
    assert request.mask is not None
    levels = np.asarray(request.mask)
    assert (levels[0, 0], levels[0, -1]) == (left, right)
    assert (request.denoise_from, request.denoise_to) == (1.0, 0.0)


def test_masking_from_the_init_images_alpha() -> None:
    request = form(
        {**PROMPT_FIELDS, "mask_source": "INIT_IMAGE_ALPHA"},
        {"init_image": png(mode="RGBA", fill=(10, 20, 30, 0))},
        masking=True,
    )
    assert request.mask is not None and np.asarray(request.mask).min() == 255


MASKING_REJECTED: list[tuple[dict[str, str], dict[str, bytes], str, str]] = [
    (PROMPT_FIELDS, {"init_image": png()}, "#: required key [mask_source] not found", "bad_request"),
    (
        {**PROMPT_FIELDS, "mask_source": "MASK_IMAGE_WHITE"},
        {"init_image": png()},
        "#: required key [mask_image] not found",
        "invalid_mask_image",
    ),
    (
        {**PROMPT_FIELDS, "mask_source": "INIT_IMAGE_ALPHA"},
        {"init_image": png(mode="RGBA"), "mask_image": png()},
        "#: extraneous key [mask_image] is not permitted",
        "invalid_mask_image",
    ),
    (
        {**PROMPT_FIELDS, "mask_source": "INIT_IMAGE_ALPHA"},
        {"init_image": png()},
        "#/init_image: mask_source INIT_IMAGE_ALPHA needs an image with an alpha channel",
        "invalid_mask_image",
    ),
    (
        {**PROMPT_FIELDS, "mask_source": "MASK_IMAGE_BLACK"},
        {"init_image": png(), "mask_image": png(512, 512)},
        "#/mask_image: the mask is 512x512 but init_image is 1024x1024; they must be the same size",
        "invalid_mask_image",
    ),
    (
        {**PROMPT_FIELDS, "mask_source": "MASK_IMAGE_BLACK"},
        {"init_image": png(), "mask_image": b"GIF89a"},
        "#/mask_image: the image could not be decoded (only PNG, JPEG and WebP are accepted)",
        "invalid_mask_image",
    ),
    (
        {**PROMPT_FIELDS, "mask_source": "MASK_IMAGE_WHITE", "image_strength": "0.5"},
        {"init_image": png(), "mask_image": png()},
        "#: extraneous key [image_strength] is not permitted",
        "bad_request",
    ),
]


@pytest.mark.parametrize(
    ("fields", "files", "message", "kind"), MASKING_REJECTED, ids=[c[2][:50] for c in MASKING_REJECTED]
)
def test_masking_form_rejections(
    fields: dict[str, str], files: dict[str, bytes], message: str, kind: str
) -> None:
    error = rejection(form, fields, files, masking=True)
    assert (error.message, error.kind) == (message, kind)


# ---- the wire shape of errors ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("problem", "worded"),
    [
        (
            Problem(("cfg_scale",), "99 is not less or equal to 35"),
            "cfg_scale: 99 is not less or equal to 35",
        ),
        (
            Problem(("text_prompts", 0, "text"), "expected maxLength: 2000, actual: 2001"),
            "text_prompts[0][text]: expected maxLength: 2000, actual: 2001",
        ),
        (Problem((), "extraneous key [colour] is not permitted"), "extraneous key [colour] is not permitted"),
        (
            Problem(None, "for stable-diffusion-xl-1024-v1-0 the allowed dimensions are ..."),
            "for stable-diffusion-xl-1024-v1-0 the allowed dimensions are ...",
        ),
        (Problem(("init_image",), "invalid base64 string"), "init_image: invalid base64 string"),
    ],
)
def test_stability_names_the_field_where_bedrock_quotes_a_pointer(problem: Problem, worded: str) -> None:
    assert stability_message(MalformedBody(problem)) == worded


@pytest.mark.parametrize(
    ("error", "status", "name"),
    [
        (errors.InvalidRequest("x"), 400, "bad_request"),
        (errors.InvalidRequest("x", kind="invalid_samples"), 400, "invalid_samples"),
        (
            MalformedBody(Problem((), "x"), kind="invalid_sdxl_v1_dimensions"),
            400,
            "invalid_sdxl_v1_dimensions",
        ),
        (MissingCredentials("x"), 401, "unauthorized"),
        (errors.AccessDenied("x"), 403, "permission_denied"),
        (errors.NotFound("x"), 404, "not_found"),
        (errors.ModelTimeout("x"), 408, "request_timeout"),
        (errors.Throttled("x"), 429, "rate_limit_exceeded"),
        (errors.ModelFailure("x"), 500, "server_error"),
        (errors.ServiceError("x"), 500, "server_error"),
        (errors.ModelNotReady("x"), 503, "service_unavailable"),
        (errors.ShuttingDown("x"), 503, "service_unavailable"),
    ],
)
def test_every_error_has_a_stability_status_and_name(
    error: errors.ServiceError, status: int, name: str
) -> None:
    assert stability_error(error) == StabilityError(status, name)


def test_missing_credentials_stay_a_403_access_denied_on_bedrock() -> None:
    assert (bedrock_error(MissingCredentials("x")).status, bedrock_error(MissingCredentials("x")).code) == (
        403,
        "AccessDeniedException",
    )


def test_the_error_body_is_id_name_message() -> None:
    request_id = "0f6b3c9e-1d2a-4b5c-8d7e-9f0a1b2c3d4e"
    problem = Problem(("steps",), "9 is not greater or equal to 10")
    response = stability_error_response(MalformedBody(problem), request_id)
    assert response.status_code == 400
    assert json.loads(bytes(response.body)) == {
        "id": "0f6b3c9e1d2a4b5c8d7e9f0a1b2c3d4e",
        "name": "bad_request",
        "message": "steps: 9 is not greater or equal to 10",
    }


# ---- Accept, samples, API keys -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("accept", "answer"),
    [
        ("", "json"),
        ("application/json", "json"),
        ("*/*", "json"),
        ("image/png", "png"),
        ("image/png; q=1.0, application/json", "png"),
        ("text/html, image/*", "png"),
    ],
)
def test_the_answer_follows_the_accept_header(accept: str, answer: str) -> None:
    assert response_type(accept) == answer


def test_an_accept_header_we_cannot_answer_is_a_bad_request() -> None:
    with pytest.raises(errors.InvalidRequest) as caught:
        response_type("image/jpeg")
    assert caught.value.kind == "bad_request"


def test_several_samples_need_json() -> None:
    check_samples(text_to_image(samples=3), "json")
    check_samples(text_to_image(), "png")
    with pytest.raises(errors.InvalidRequest) as caught:
        check_samples(text_to_image(samples=2), "png")
    assert caught.value.kind == "invalid_samples"


def test_samples_become_requests_with_consecutive_seeds() -> None:
    requests = sample_requests(text_to_image(samples=3, seed=41))
    assert [(r.seed, r.samples) for r in requests] == [(41, 1), (42, 1), (43, 1)]
    assert {r.prompts for r in requests} == {(WeightedPrompt("a lighthouse", 1.0),)}


def test_sample_seeds_wrap_past_the_largest_seed_and_skip_zero() -> None:
    requests = sample_requests(text_to_image(samples=3, seed=MAX_SEED))
    assert [r.seed for r in requests] == [MAX_SEED, 1, 2]


def test_one_sample_is_the_request_itself() -> None:
    request = text_to_image(seed=5)
    assert sample_requests(request) == [request]


def test_api_keys_are_not_asked_for_while_auth_is_off() -> None:
    check_api_key(Settings(), Headers({}))


def test_no_key_is_unauthorized_and_a_wrong_key_is_denied() -> None:
    settings = Settings(api_keys=frozenset({"sk-good"}))
    with pytest.raises(MissingCredentials):
        check_api_key(settings, Headers({}))
    with pytest.raises(errors.AccessDenied) as caught:
        check_api_key(settings, Headers({"authorization": "Bearer sk-bad"}))
    assert not isinstance(caught.value, MissingCredentials)
    check_api_key(settings, Headers({"authorization": "Bearer sk-good"}))


def test_the_stability_face_does_not_import_torch() -> None:
    script = "import sys, sdxl_bedrock.api.stability; assert 'torch' not in sys.modules, 'torch was imported'"
    subprocess.run([sys.executable, "-c", script], check=True, timeout=60)
