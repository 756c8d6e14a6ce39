"""Bedrock's SDXL body -> GenerationRequest: every field's bounds and types, each mode, each message.

The wire's names arrive resolved: a sampler, style or CLIP guidance name as its preset's entry, which the
tests read back by name."""

from __future__ import annotations

import base64
import functools
import io
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from sdxl_bedrock.api.bedrock.body import Invocation, parse_invoke_body
from sdxl_bedrock.api.validation import MAX_JSON_DEPTH, MAX_JSON_ELEMENTS
from sdxl_bedrock.errors import MalformedBody
from sdxl_bedrock.presets import SAMPLER_NAMES, STYLE_PRESETS, sampler_name
from sdxl_bedrock.schema import DEFAULT_SAMPLER, GenerationRequest, Sampler, WeightedPrompt

PROMPT = [{"text": "a lighthouse"}]
SIZES = "1024x1024, 1152x896, 1216x832, 1344x768, 1536x640, 640x1536, 768x1344, 832x1216, 896x1152"
SIZE_MESSAGE = f"for stable-diffusion-xl-1024-v1-0 the allowed dimensions are {SIZES}, but we received {{}}"
RELAXED_SIZE_MESSAGE = "the allowed dimensions are multiples of 64 between 64 and 2048, but we received {}"


def body(**fields: Any) -> bytes:
    return json.dumps({"text_prompts": PROMPT, **fields}).encode()


def parse_bedrock_body(raw: bytes, **options: Any) -> GenerationRequest:
    return parse_invoke_body(raw, **options).request


def invocation(raw: bytes) -> Invocation:
    return parse_invoke_body(raw, random_seed=lambda: 1234)


def parse(raw: bytes, *, relaxed_sizes: bool = False) -> GenerationRequest:
    return parse_bedrock_body(raw, relaxed_sizes=relaxed_sizes, random_seed=lambda: 1234)


def wire_value(parsed: Invocation, field: str) -> object:
    """The value of a body field as the request holds it, a preset read back by its name."""
    request = parsed.request
    match field:
        case "extras":
            return parsed.extras
        case "sampler":
            return sampler_name(request.sampler)
        case "style_preset":
            return None if request.style is None else request.style.name
        case "clip_guidance_preset":
            return "NONE" if request.clip_guidance is None else request.clip_guidance.name
        case _:
            return getattr(request, field)


def rejection(raw: bytes, *, relaxed_sizes: bool = False) -> MalformedBody:
    with pytest.raises(MalformedBody) as caught:
        parse(raw, relaxed_sizes=relaxed_sizes)
    return caught.value


@functools.cache
def png_base64(
    width: int, height: int, mode: str = "RGB", fill: int | tuple[int, ...] = 128, image_format: str = "PNG"
) -> str:
    buffer = io.BytesIO()
    Image.new(mode, (width, height), fill).save(buffer, format=image_format)
    return base64.b64encode(buffer.getvalue()).decode("ascii")


def image_base64(image: Image.Image, image_format: str = "PNG", **options: Any) -> str:
    buffer = io.BytesIO()
    image.save(buffer, format=image_format, **options)
    return base64.b64encode(buffer.getvalue()).decode("ascii")


INIT_IMAGE = png_base64(1024, 1024)


# ---- defaults ------------------------------------------------------------------------------------------


def test_the_smallest_body_is_text_to_image_with_every_default() -> None:
    request = parse(body())
    assert request == GenerationRequest(
        prompts=(WeightedPrompt("a lighthouse", 1.0),),
        negative_prompts=(),
        width=1024,
        height=1024,
        seed=1234,
        steps=30,
        cfg_scale=7.0,
        sampler=DEFAULT_SAMPLER,
        denoise_from=1.0,
        denoise_to=0.0,
        init_image=None,
        mask=None,
        style=None,
        clip_guidance=None,
        samples=1,
    )
    assert not request.is_image_to_image


def test_the_server_default_sampler_is_k_dpmpp_2m() -> None:
    assert parse(body()).sampler is Sampler.DPMPP_2M


@pytest.mark.parametrize("fields", [{}, {"seed": 0}], ids=["omitted", "zero"])
def test_seed_zero_or_omitted_is_resolved_by_the_injected_picker(fields: dict[str, Any]) -> None:
    assert parse_bedrock_body(body(**fields), random_seed=lambda: 987654).seed == 987654


def test_a_given_seed_is_kept_and_the_picker_is_not_asked() -> None:
    def never() -> int:
        raise AssertionError("the picker must not be called")

    assert parse_bedrock_body(body(seed=42), random_seed=never).seed == 42


def test_the_default_seed_picker_never_returns_zero_and_stays_in_range() -> None:
    seeds = {parse_bedrock_body(body()).seed for _ in range(50)}
    assert all(1 <= seed <= 4294967295 for seed in seeds)
    assert len(seeds) > 1


def test_style_presets_are_the_seventeen_documented_names() -> None:
    assert tuple(STYLE_PRESETS) == (
        "3d-model",
        "analog-film",
        "anime",
        "cinematic",
        "comic-book",
        "digital-art",
        "enhance",
        "fantasy-art",
        "isometric",
        "line-art",
        "low-poly",
        "modeling-compound",
        "neon-punk",
        "origami",
        "photographic",
        "pixel-art",
        "tile-texture",
    )


# ---- accepted values -------------------------------------------------------------------------------------

ACCEPTED: list[tuple[dict[str, Any], str, object]] = [
    ({"cfg_scale": 0}, "cfg_scale", 0.0),
    ({"cfg_scale": 35}, "cfg_scale", 35.0),
    ({"cfg_scale": 12.5}, "cfg_scale", 12.5),
    ({"seed": 1}, "seed", 1),
    ({"seed": 4294967295}, "seed", 4294967295),
    ({"steps": 10}, "steps", 10),
    ({"steps": 50}, "steps", 50),
    ({"samples": 1}, "samples", 1),
    ({"extras": {}}, "extras", {}),
    (
        {"extras": {"unknown": {"nested": [1, "two", None, True]}}},
        "extras",
        {"unknown": {"nested": [1, "two", None, True]}},
    ),
    ({"height": 1024, "width": 1024}, "width", 1024),
    ({"height": 640, "width": 1536}, "height", 640),
    *[({"sampler": name}, "sampler", name) for name in SAMPLER_NAMES],
    *[({"style_preset": name}, "style_preset", name) for name in STYLE_PRESETS],
    *[
        ({"clip_guidance_preset": name}, "clip_guidance_preset", name)
        for name in ("FAST_BLUE", "FAST_GREEN", "NONE", "SIMPLE", "SLOW", "SLOWER", "SLOWEST")
    ],
]


@pytest.mark.parametrize(
    ("fields", "attribute", "expected"), ACCEPTED, ids=[str(case[0]) for case in ACCEPTED]
)
def test_values_within_bounds_are_accepted(fields: dict[str, Any], attribute: str, expected: object) -> None:
    value = wire_value(invocation(body(**fields)), attribute)
    assert value == expected
    assert type(value) is type(expected)


def test_an_integral_cfg_scale_arrives_as_a_float() -> None:
    assert isinstance(parse(body(cfg_scale=10)).cfg_scale, float)


# ---- rejected fields: the complete message, the field, the kind -----------------------------------------

REJECTED: list[tuple[dict[str, Any], str, str]] = [
    ({"foo": 1}, "#: extraneous key [foo] is not permitted", "foo"),
    ({"Seed": 1}, "#: extraneous key [Seed] is not permitted", "Seed"),
    ({"cfg_scale": 40.0}, "#/cfg_scale: 40.0 is not less or equal to 35", "cfg_scale"),
    ({"cfg_scale": 36}, "#/cfg_scale: 36 is not less or equal to 35", "cfg_scale"),
    ({"cfg_scale": 35.01}, "#/cfg_scale: 35.01 is not less or equal to 35", "cfg_scale"),
    ({"cfg_scale": -1}, "#/cfg_scale: -1 is not greater or equal to 0", "cfg_scale"),
    ({"cfg_scale": -0.5}, "#/cfg_scale: -0.5 is not greater or equal to 0", "cfg_scale"),
    ({"cfg_scale": "7"}, "#/cfg_scale: expected type: Number, found: String", "cfg_scale"),
    ({"cfg_scale": True}, "#/cfg_scale: expected type: Number, found: Boolean", "cfg_scale"),
    ({"cfg_scale": None}, "#/cfg_scale: expected type: Number, found: Null", "cfg_scale"),
    ({"cfg_scale": [7]}, "#/cfg_scale: expected type: Number, found: JSONArray", "cfg_scale"),
    ({"steps": 9}, "#/steps: 9 is not greater or equal to 10", "steps"),
    ({"steps": 51}, "#/steps: 51 is not less or equal to 50", "steps"),
    ({"steps": 30.0}, "#/steps: expected type: Integer, found: Number", "steps"),
    ({"steps": 30.5}, "#/steps: expected type: Integer, found: Number", "steps"),
    ({"steps": "30"}, "#/steps: expected type: Integer, found: String", "steps"),
    ({"steps": True}, "#/steps: expected type: Integer, found: Boolean", "steps"),
    ({"steps": {"n": 30}}, "#/steps: expected type: Integer, found: JSONObject", "steps"),
    ({"seed": -1}, "#/seed: -1 is not greater or equal to 0", "seed"),
    ({"seed": 4294967296}, "#/seed: 4294967296 is not less or equal to 4294967295", "seed"),
    ({"seed": 2**70}, "#/seed: 1180591620717411303424 is not less or equal to 4294967295", "seed"),
    ({"seed": 1.0}, "#/seed: expected type: Integer, found: Number", "seed"),
    ({"seed": None}, "#/seed: expected type: Integer, found: Null", "seed"),
    ({"samples": 2}, "#/samples: 2 is not less or equal to 1", "samples"),
    ({"samples": 0}, "#/samples: 0 is not greater or equal to 1", "samples"),
    ({"samples": "1"}, "#/samples: expected type: Integer, found: String", "samples"),
    ({"sampler": "FOO"}, "#/sampler: FOO is not a valid enum value", "sampler"),
    ({"sampler": "k_euler"}, "#/sampler: k_euler is not a valid enum value", "sampler"),
    ({"sampler": ""}, "#/sampler:  is not a valid enum value", "sampler"),
    ({"sampler": 3}, "#/sampler: 3 is not a valid enum value", "sampler"),
    ({"sampler": None}, "#/sampler: expected type: String, found: Null", "sampler"),
    ({"style_preset": "watercolor"}, "#/style_preset: watercolor is not a valid enum value", "style_preset"),
    ({"style_preset": "3D-model"}, "#/style_preset: 3D-model is not a valid enum value", "style_preset"),
    ({"style_preset": None}, "#/style_preset: expected type: String, found: Null", "style_preset"),
    (
        {"style_preset": "x" * 500},
        f"#/style_preset: {'x' * 100}... is not a valid enum value",
        "style_preset",
    ),
    (
        {"clip_guidance_preset": "FAST"},
        "#/clip_guidance_preset: FAST is not a valid enum value",
        "clip_guidance_preset",
    ),
    (
        {"clip_guidance_preset": None},
        "#/clip_guidance_preset: expected type: String, found: Null",
        "clip_guidance_preset",
    ),
    ({"extras": []}, "#/extras: expected type: JSONObject, found: JSONArray", "extras"),
    ({"extras": "x"}, "#/extras: expected type: JSONObject, found: String", "extras"),
    ({"extras": None}, "#/extras: expected type: JSONObject, found: Null", "extras"),
    ({"height": "1024"}, "#/height: expected type: Integer, found: String", "height"),
    ({"width": 1024.0}, "#/width: expected type: Integer, found: Number", "width"),
    ({"init_image": 5}, "#/init_image: expected type: String, found: Integer", "init_image"),
    ({"init_image": None}, "#/init_image: expected type: String, found: Null", "init_image"),
    (
        {"init_image": INIT_IMAGE, "init_image_mode": "STRENGTH"},
        "#/init_image_mode: STRENGTH is not a valid enum value",
        "init_image_mode",
    ),
    (
        {"init_image": INIT_IMAGE, "init_image_mode": None},
        "#/init_image_mode: expected type: String, found: Null",
        "init_image_mode",
    ),
    (
        {"init_image": INIT_IMAGE, "image_strength": 1.5},
        "#/image_strength: 1.5 is not less or equal to 1",
        "image_strength",
    ),
    (
        {"init_image": INIT_IMAGE, "image_strength": -0.1},
        "#/image_strength: -0.1 is not greater or equal to 0",
        "image_strength",
    ),
    (
        {"init_image": INIT_IMAGE, "image_strength": "0.5"},
        "#/image_strength: expected type: Number, found: String",
        "image_strength",
    ),
    (
        {"init_image": INIT_IMAGE, "step_schedule_start": 1.1},
        "#/step_schedule_start: 1.1 is not less or equal to 1",
        "step_schedule_start",
    ),
    (
        {"init_image": INIT_IMAGE, "step_schedule_end": -1},
        "#/step_schedule_end: -1 is not greater or equal to 0",
        "step_schedule_end",
    ),
    (
        {"init_image": INIT_IMAGE, "mask_source": "MASK"},
        "#/mask_source: MASK is not a valid enum value",
        "mask_source",
    ),
    (
        {"init_image": INIT_IMAGE, "mask_source": "MASK_IMAGE_WHITE", "mask_image": None},
        "#/mask_image: expected type: String, found: Null",
        "mask_image",
    ),
]


@pytest.mark.parametrize(("fields", "message", "field"), REJECTED, ids=[case[1][:60] for case in REJECTED])
def test_out_of_bounds_and_mistyped_fields_name_the_field(
    fields: dict[str, Any], message: str, field: str
) -> None:
    error = rejection(body(**fields))
    assert error.message == message
    assert error.field == field
    assert error.kind == "bad_request"


TEXT_PROMPT_REJECTED: list[tuple[object, str, str]] = [
    ("a lighthouse", "#/text_prompts: expected type: JSONArray, found: String", "text_prompts"),
    ({"text": "a"}, "#/text_prompts: expected type: JSONArray, found: JSONObject", "text_prompts"),
    (None, "#/text_prompts: expected type: JSONArray, found: Null", "text_prompts"),
    ([], "#/text_prompts: expected minimum item count: 1, found: 0", "text_prompts"),
    ([{"text": "a"}] * 11, "#/text_prompts: expected maximum item count: 10, found: 11", "text_prompts"),
    (["a lighthouse"], "#/text_prompts/0: expected type: JSONObject, found: String", "text_prompts/0"),
    ([{"text": "a"}, None], "#/text_prompts/1: expected type: JSONObject, found: Null", "text_prompts/1"),
    ([{"weight": 1}], "#/text_prompts/0: required key [text] not found", "text_prompts/0/text"),
    (
        [{"text": "a", "extra": 1}],
        "#/text_prompts/0: extraneous key [extra] is not permitted",
        "text_prompts/0/extra",
    ),
    (
        [{"text": "a"}, {"text": "b", "Weight": 1}],
        "#/text_prompts/1: extraneous key [Weight] is not permitted",
        "text_prompts/1/Weight",
    ),
    ([{"text": 5}], "#/text_prompts/0/text: expected type: String, found: Integer", "text_prompts/0/text"),
    ([{"text": None}], "#/text_prompts/0/text: expected type: String, found: Null", "text_prompts/0/text"),
    (
        [{"text": "x" * 2001}],
        "#/text_prompts/0/text: expected maxLength: 2000, actual: 2001",
        "text_prompts/0/text",
    ),
    (
        [{"text": "a", "weight": "1"}],
        "#/text_prompts/0/weight: expected type: Number, found: String",
        "text_prompts/0/weight",
    ),
    (
        [{"text": "a", "weight": None}],
        "#/text_prompts/0/weight: expected type: Number, found: Null",
        "text_prompts/0/weight",
    ),
    (
        [{"text": "a", "weight": False}],
        "#/text_prompts/0/weight: expected type: Number, found: Boolean",
        "text_prompts/0/weight",
    ),
    ([{"text": ""}], "#/text_prompts: at least one prompt must have a non-empty text", "text_prompts"),
    (
        [{"text": ""}, {"text": "", "weight": -1}],
        "#/text_prompts: at least one prompt must have a non-empty text",
        "text_prompts",
    ),
    (
        [{"text": "a", "weight": 0}],
        "#/text_prompts: at least one prompt must have a weight above 0",
        "text_prompts",
    ),
    (
        [{"text": "a", "weight": -1}],
        "#/text_prompts: at least one prompt must have a weight above 0",
        "text_prompts",
    ),
    (
        [{"text": "a", "weight": 0}, {"text": "b", "weight": -0.5}],
        "#/text_prompts: at least one prompt must have a weight above 0",
        "text_prompts",
    ),
]


@pytest.mark.parametrize(
    ("prompts", "message", "field"), TEXT_PROMPT_REJECTED, ids=[case[1][:70] for case in TEXT_PROMPT_REJECTED]
)
def test_text_prompt_errors_point_into_the_list(prompts: object, message: str, field: str) -> None:
    error = rejection(json.dumps({"text_prompts": prompts}).encode())
    assert (error.message, error.field) == (message, field)


def test_text_prompts_is_required() -> None:
    error = rejection(b'{"seed": 5}')
    assert (error.message, error.field) == ("#: required key [text_prompts] not found", "text_prompts")


def test_the_first_violation_is_reported() -> None:
    assert rejection(body(cfg_scale=99, steps=1)).message == "#/cfg_scale: 99 is not less or equal to 35"


# ---- prompts ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("prompts", "positive", "negative"),
    [
        ([{"text": "a"}], [("a", 1.0)], []),
        ([{"text": "a", "weight": 2}], [("a", 2.0)], []),
        ([{"text": "a", "weight": 0.5}, {"text": "blurry", "weight": -1}], [("a", 0.5)], [("blurry", 1.0)]),
        ([{"text": "a"}, {"text": "b", "weight": 0}], [("a", 1.0), ("b", 0.0)], []),
        ([{"text": "a"}, {"text": "b", "weight": -0.0}], [("a", 1.0), ("b", 0.0)], []),
        (
            [{"text": "n1", "weight": -0.3}, {"text": "p", "weight": 1}, {"text": "n2", "weight": -2.5}],
            [("p", 1.0)],
            [("n1", 0.3), ("n2", 2.5)],
        ),
        ([{"text": "a"}, {"text": "a"}], [("a", 1.0), ("a", 1.0)], []),
        ([{"text": ""}, {"text": "ugly", "weight": -1}], [("", 1.0)], [("ugly", 1.0)]),
        (
            [{"text": "", "weight": 1}, {"text": "a lighthouse", "weight": 0.1}],
            [("", 1.0), ("a lighthouse", 0.1)],
            [],
        ),
        ([{"text": "x" * 2000}], [("x" * 2000, 1.0)], []),
        ([{"text": "🐱" * 2000}], [("🐱" * 2000, 1.0)], []),  # the limit counts characters, not bytes
        ([{"text": f"p{index}"} for index in range(10)], [(f"p{index}", 1.0) for index in range(10)], []),
    ],
)
def test_prompts_split_into_positive_and_negative_by_weight_sign(
    prompts: list[dict[str, Any]], positive: list[tuple[str, float]], negative: list[tuple[str, float]]
) -> None:
    request = parse(json.dumps({"text_prompts": prompts}).encode())
    assert request.prompts == tuple(WeightedPrompt(text, weight) for text, weight in positive)
    assert request.negative_prompts == tuple(WeightedPrompt(text, weight) for text, weight in negative)
    assert all(isinstance(prompt.weight, float) for prompt in request.prompts + request.negative_prompts)


def test_escaped_unicode_in_prompts_is_decoded() -> None:
    raw = b'{"text_prompts": [{"text": "caf\\u00e9 \\ud83d\\ude00"}]}'
    assert parse(raw).prompts[0].text == "café 😀"


def test_a_lone_surrogate_escape_is_rejected() -> None:
    error = rejection(b'{"text_prompts": [{"text": "bad \\ud800 text"}]}')
    assert error.message == "#/text_prompts/0/text: not a valid Unicode string (unpaired surrogate)"
    assert error.field == "text_prompts/0/text"


# ---- the JSON itself -------------------------------------------------------------------------------------

DEEPEST_ACCEPTED_EXTRAS = "[" * (MAX_JSON_DEPTH - 2) + "]" * (
    MAX_JSON_DEPTH - 2
)  # inside the body and extras

JSON_REJECTED: list[tuple[bytes, str]] = [
    (b"", "#: the body is not valid JSON: Expecting value: line 1 column 1 (char 0)"),
    (b"text_prompts=a", "#: the body is not valid JSON: Expecting value: line 1 column 1 (char 0)"),
    (
        b'{"text_prompts": [{"text": "a"}]',
        "#: the body is not valid JSON: Expecting ',' delimiter: line 1 column 33 (char 32)",
    ),
    (
        b'{"text_prompts": [{"text": "a"}]}{}',
        "#: the body is not valid JSON: Extra data: line 1 column 34 (char 33)",
    ),
    (
        b"\xef\xbb\xbf{}",
        "#: the body is not valid JSON: Unexpected UTF-8 BOM (decode using utf-8-sig): "
        "line 1 column 1 (char 0)",
    ),
    (b'{"text_prompts": [{"text": "caf\xe9"}]}', "#: the body is not valid UTF-8"),
    (b"\xff\xfe{\x00}\x00", "#: the body is not valid UTF-8"),
    (b"[]", "#: expected type: JSONObject, found: JSONArray"),
    (b'[{"text_prompts": [{"text": "a"}]}]', "#: expected type: JSONObject, found: JSONArray"),
    (b'"a lighthouse"', "#: expected type: JSONObject, found: String"),
    (b"5", "#: expected type: JSONObject, found: Integer"),
    (b"5.5", "#: expected type: JSONObject, found: Number"),
    (b"true", "#: expected type: JSONObject, found: Boolean"),
    (b"null", "#: expected type: JSONObject, found: Null"),
    (b'{"text_prompts": [{"text": "a"}], "seed": 1, "seed": 2}', "#: duplicate key [seed] is not permitted"),
    (b'{"text_prompts": [{"text": "a", "text": "b"}]}', "#: duplicate key [text] is not permitted"),
    (b'{"text_prompts": [{"text": "a"}], "cfg_scale": NaN}', "#: NaN is not a valid JSON number"),
    (b'{"text_prompts": [{"text": "a"}], "cfg_scale": Infinity}', "#: Infinity is not a valid JSON number"),
    (b'{"text_prompts": [{"text": "a"}], "cfg_scale": -Infinity}', "#: -Infinity is not a valid JSON number"),
    (
        b'{"text_prompts": [{"text": "a"}], "cfg_scale": 1e400}',
        "#: 1e400 is out of the range of a JSON number",
    ),
    (
        b'{"text_prompts": [{"text": "a"}], "extras": {"x": -1e999}}',
        "#: -1e999 is out of the range of a JSON number",
    ),
    (
        b'{"text_prompts": [{"text": "a"}], "seed": 1' + b"0" * 5000 + b"}",
        "#: the body holds a number too long to read",
    ),
    (
        b'{"text_prompts": [{"text": "a"}], "extras": {"a": '
        + b"[" * MAX_JSON_DEPTH
        + b"]" * MAX_JSON_DEPTH
        + b"}}",
        "#: the body nests deeper than 32 levels",
    ),
    (b"[" * 200_000, "#: the body nests deeper than 32 levels"),
    (b"{" * 200_000, "#: the body nests deeper than 32 levels"),
    (b'{"a": ' * 200_000, "#: the body nests deeper than 32 levels"),
    (
        b'{"text_prompts": [{"text": "a"}], "extras": {"a": [' + b"[]," * 200_000 + b"[]]}}",
        "#: the body holds more than 10000 JSON elements",
    ),
    (
        b'{"text_prompts": [{"text": "a"}], "extras": {"a": [' + b"1," * (MAX_JSON_ELEMENTS + 1) + b"1]}}",
        "#: the body holds more than 10000 JSON elements",
    ),
    (b'{"extras": [' + b'"a" ' * 1_000_000 + b"]}", "#: the body holds more than 10000 JSON elements"),
]


@pytest.mark.parametrize(
    ("raw", "message"), JSON_REJECTED, ids=[f"{case[0][:40]!r}" for case in JSON_REJECTED]
)
def test_bodies_that_are_not_a_sound_json_object_are_rejected(raw: bytes, message: str) -> None:
    error = rejection(raw)
    assert error.message == message
    assert (error.field, error.kind) == (None, "bad_request")


def test_the_deepest_accepted_nesting_and_a_generous_element_count_pass() -> None:
    extras = json.loads(DEEPEST_ACCEPTED_EXTRAS)
    assert invocation(body(extras={"a": extras})).extras == {"a": extras}
    numbers = list(range(MAX_JSON_ELEMENTS - 20))
    assert invocation(body(extras={"numbers": numbers})).extras == {"numbers": numbers}
    strings = ["s"] * (MAX_JSON_ELEMENTS // 2 - 20)
    assert invocation(body(extras={"strings": strings})).extras == {"strings": strings}


def test_brackets_and_commas_inside_strings_do_not_count() -> None:
    text = "[{," * 666
    request = parse(body(text_prompts=[{"text": text}], extras={"[" * 5000: "{," * 20_000}))
    assert request.prompts[0].text == text


@pytest.mark.parametrize(
    "raw",
    [
        b'{"text_prompts": [{"text": "' + b'\\"' * 1_000_000,  # unterminated, full of escaped quotes
        b'{"a": "' + b"x" * 5_000_000,
        b"]" * 1_000_000,
        b'{"a": 1' + b" " * 5_000_000,
    ],
    ids=["escaped-quotes", "long-unterminated-string", "closing-brackets", "whitespace"],
)
def test_hostile_malformed_bodies_are_rejected_cheaply(raw: bytes) -> None:
    assert rejection(raw).message.startswith("#: the body is not valid JSON: ")


def test_a_large_init_image_string_is_read() -> None:
    # Most of a real body is one base64 string; the bounds check must skip it whole.
    padding = "A" * 20_000_000
    error = rejection(body(init_image=padding + "*"))
    assert error.message == "#/init_image: invalid base64 string"


# ---- image-to-image ----------------------------------------------------------------------------------------


def test_image_to_image_defaults() -> None:
    request = parse(body(init_image=png_base64(1216, 832, fill=(10, 20, 30))))
    assert request.is_image_to_image
    assert (request.width, request.height) == (1216, 832)
    assert request.denoise_from == pytest.approx(0.65)
    assert request.denoise_to == 0.0
    assert request.mask is None
    assert request.init_image is not None
    assert (request.init_image.mode, request.init_image.size) == ("RGB", (1216, 832))
    assert request.init_image.getpixel((0, 0)) == (10, 20, 30)


@pytest.mark.parametrize(
    ("strength", "denoise_from"), [(0, 1.0), (1, 0.0), (0.35, 0.65), (0.8, 0.2), (0.5, 0.5)]
)
def test_image_strength_sets_where_denoising_starts(strength: float, denoise_from: float) -> None:
    request = parse(body(init_image=INIT_IMAGE, image_strength=strength))
    assert (request.denoise_from, request.denoise_to) == (pytest.approx(denoise_from), 0.0)


@pytest.mark.parametrize(
    ("fields", "window"),
    [
        ({}, (0.65, 0.0)),
        ({"step_schedule_start": 0.9}, (0.9, 0.0)),
        ({"step_schedule_start": 0.9, "step_schedule_end": 0.2}, (0.9, 0.2)),
        ({"step_schedule_start": 1, "step_schedule_end": 0.99}, (1.0, 0.99)),
        ({"step_schedule_end": 0.64}, (0.65, 0.64)),
    ],
)
def test_step_schedule_sets_the_denoising_window(fields: dict[str, Any], window: tuple[float, float]) -> None:
    request = parse(body(init_image=INIT_IMAGE, init_image_mode="STEP_SCHEDULE", **fields))
    assert (request.denoise_from, request.denoise_to) == window


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"step_schedule_end": 0.65}, "#/step_schedule_end: 0.65 is not less than 0.65"),
        ({"step_schedule_end": 0.7}, "#/step_schedule_end: 0.7 is not less than 0.65"),
        (
            {"step_schedule_start": 0.2, "step_schedule_end": 0.5},
            "#/step_schedule_end: 0.5 is not less than 0.2",
        ),
        ({"step_schedule_start": 0}, "#/step_schedule_end: 0.0 is not less than 0.0"),
    ],
)
def test_the_step_schedule_must_end_below_its_start(fields: dict[str, Any], message: str) -> None:
    error = rejection(body(init_image=INIT_IMAGE, init_image_mode="STEP_SCHEDULE", **fields))
    assert (error.message, error.field) == (message, "step_schedule_end")


def test_the_other_init_modes_fields_are_checked_then_ignored() -> None:
    by_strength = parse(
        body(init_image=INIT_IMAGE, image_strength=0.8, step_schedule_start=0.1, step_schedule_end=0.5)
    )
    assert (by_strength.denoise_from, by_strength.denoise_to) == (pytest.approx(0.2), 0.0)
    by_schedule = parse(body(init_image=INIT_IMAGE, init_image_mode="STEP_SCHEDULE", image_strength=0.9))
    assert (by_schedule.denoise_from, by_schedule.denoise_to) == (0.65, 0.0)
    error = rejection(body(init_image=INIT_IMAGE, init_image_mode="STEP_SCHEDULE", image_strength=2))
    assert error.message == "#/image_strength: 2 is not less or equal to 1"


@pytest.mark.parametrize(
    "size",
    [{"height": 832}, {"width": 1216}, {"height": 832, "width": 1216}],
    ids=["height", "width", "both"],
)
def test_height_and_width_equal_to_the_init_images_are_accepted(size: dict[str, int]) -> None:
    request = parse(body(init_image=png_base64(1216, 832), **size))
    assert (request.width, request.height) == (1216, 832)
    assert request == parse(body(init_image=png_base64(1216, 832)))


@pytest.mark.parametrize(
    ("size", "message", "field"),
    [
        ({"height": 1024}, "#/height: 1024 does not match init_image's height 832", "height"),
        ({"width": 1024}, "#/width: 1024 does not match init_image's width 1216", "width"),
        ({"height": 832, "width": 832}, "#/width: 832 does not match init_image's width 1216", "width"),
        # Swapped sides: both differ, the height is named first (the body's field order).
        ({"height": 1216, "width": 832}, "#/height: 1216 does not match init_image's height 832", "height"),
    ],
)
def test_height_and_width_other_than_the_init_images_name_both_numbers(
    size: dict[str, int], message: str, field: str
) -> None:
    error = rejection(body(init_image=png_base64(1216, 832), **size))
    assert (error.message, error.field, error.problem.value) == (message, field, size[field])


def test_the_init_images_own_size_rule_comes_before_the_match() -> None:
    error = rejection(body(init_image=png_base64(512, 512), height=512, width=512))
    assert error.kind == "invalid_sdxl_v1_dimensions"


def test_height_and_width_are_still_typed_and_bounded_with_an_init_image() -> None:
    error = rejection(body(init_image=INIT_IMAGE, height="1024"))
    assert error.message == "#/height: expected type: Integer, found: String"


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("init_image_mode", "IMAGE_STRENGTH"),
        ("image_strength", 0.5),
        ("step_schedule_start", 0.5),
        ("step_schedule_end", 0.1),
        ("mask_source", "INIT_IMAGE_ALPHA"),
        ("mask_image", INIT_IMAGE),
    ],
)
def test_image_to_image_keys_need_an_init_image(key: str, value: object) -> None:
    error = rejection(body(**{key: value}))
    assert (error.message, error.field) == ("#: required key [init_image] not found", "init_image")


def test_an_rgba_init_image_without_a_mask_arrives_as_rgb() -> None:
    request = parse(body(init_image=png_base64(1024, 1024, "RGBA", (200, 100, 50, 0))))
    assert request.init_image is not None
    assert request.init_image.mode == "RGB"
    assert request.mask is None


@pytest.mark.parametrize(
    ("mode", "image_format"), [("L", "PNG"), ("RGB", "JPEG"), ("RGB", "WEBP"), ("P", "PNG")]
)
def test_init_images_of_any_accepted_layout_arrive_as_rgb(mode: str, image_format: str) -> None:
    request = parse(body(init_image=png_base64(896, 1152, mode, 7, image_format)))
    assert request.init_image is not None
    assert (request.init_image.mode, request.init_image.size) == ("RGB", (896, 1152))


def test_the_exif_orientation_decides_the_output_size() -> None:
    stored = Image.new("RGB", (896, 1152), (90, 90, 90))
    exif = Image.Exif()
    exif[0x0112] = 6  # turn 90 degrees clockwise to view
    request = parse(body(init_image=image_base64(stored, "JPEG", exif=exif)))
    assert (request.width, request.height) == (1152, 896)


@pytest.mark.parametrize(
    ("init_image", "message"),
    [
        ("not base64!", "#/init_image: invalid base64 string"),
        ("", "#/init_image: the image could not be decoded (only PNG, JPEG and WebP are accepted)"),
        (
            base64.b64encode(b"plain text").decode(),
            "#/init_image: the image could not be decoded (only PNG, JPEG and WebP are accepted)",
        ),
        (
            png_base64(1024, 1024, image_format="GIF"),
            "#/init_image: the image could not be decoded (only PNG, JPEG and WebP are accepted)",
        ),
        (png_base64(8192, 8192, "L", 0), "#/init_image: the image has more than 16777216 pixels"),
    ],
    ids=["bad-base64", "empty", "not-an-image", "gif", "too-many-pixels"],
)
def test_undecodable_init_images_are_invalid_image(init_image: str, message: str) -> None:
    error = rejection(body(init_image=init_image))
    assert (error.message, error.field, error.kind) == (message, "init_image", "invalid_image")


def mime_wrapped(text: str, newline: str = "\r\n") -> str:
    """As Java's MIME encoder writes base64 (GNU `base64` writes LF): lines of 76 characters."""
    return newline.join(text[start : start + 76] for start in range(0, len(text), 76))


@pytest.mark.parametrize("newline", ["\n", "\r\n"], ids=["lf", "crlf"])
def test_line_wrapped_base64_images_are_the_same_images(newline: str) -> None:
    mask = png_base64(1024, 1024, "L", 255)
    plain = parse(body(init_image=INIT_IMAGE, mask_source="MASK_IMAGE_WHITE", mask_image=mask))
    wrapped = parse(
        body(
            init_image=mime_wrapped(INIT_IMAGE, newline) + newline,
            mask_source="MASK_IMAGE_WHITE",
            mask_image=mime_wrapped(mask, newline),
        )
    )
    assert wrapped == plain


@pytest.mark.parametrize(
    ("fields", "field", "kind"),
    [
        ({"init_image": "data:image/png;base64," + INIT_IMAGE}, "init_image", "invalid_image"),
        (
            {
                "init_image": INIT_IMAGE,
                "mask_source": "MASK_IMAGE_BLACK",
                "mask_image": "data:image/png;base64," + INIT_IMAGE,
            },
            "mask_image",
            "invalid_mask_image",
        ),
    ],
)
def test_a_data_url_is_told_to_send_the_bare_base64(fields: dict[str, Any], field: str, kind: str) -> None:
    error = rejection(body(**fields))
    message = f"#/{field}: expected bare base64, found a data URL; send only the base64 text after 'base64,'"
    assert (error.message, error.field, error.kind) == (message, field, kind)


# ---- sizes -----------------------------------------------------------------------------------------------

SDXL_SIZES = [
    (1024, 1024),
    (1152, 896),
    (1216, 832),
    (1344, 768),
    (1536, 640),
    (640, 1536),
    (768, 1344),
    (832, 1216),
    (896, 1152),
]


@pytest.mark.parametrize(("width", "height"), SDXL_SIZES)
def test_the_nine_sdxl_sizes_are_accepted_for_text_to_image(width: int, height: int) -> None:
    request = parse(body(width=width, height=height))
    assert (request.width, request.height) == (width, height)


@pytest.mark.parametrize(("width", "height"), SDXL_SIZES)
def test_the_nine_sdxl_sizes_are_accepted_for_init_images(width: int, height: int) -> None:
    request = parse(body(init_image=png_base64(width, height)))
    assert (request.width, request.height) == (width, height)


@pytest.mark.parametrize(
    ("fields", "received", "field"),
    [
        ({"height": 1000}, "1024x1000", "height"),
        ({"width": 1000}, "1000x1024", "width"),
        ({"width": 512, "height": 512}, "512x512", "width"),
        ({"width": 896, "height": 1024}, "896x1024", "height"),
        ({"width": 1152}, "1152x1024", "height"),
        ({"width": 0, "height": 0}, "0x0", "width"),
        ({"width": -1024, "height": 1024}, "-1024x1024", "width"),
    ],
)
def test_other_text_to_image_sizes_are_rejected_with_stabilitys_message(
    fields: dict[str, Any], received: str, field: str
) -> None:
    error = rejection(body(**fields))
    assert error.message == SIZE_MESSAGE.format(received)
    assert (error.field, error.kind) == (field, "invalid_sdxl_v1_dimensions")


def test_the_size_message_is_stabilitys_word_for_word() -> None:
    assert rejection(body(width=512, height=768)).message == (
        "for stable-diffusion-xl-1024-v1-0 the allowed dimensions are "
        "1024x1024, 1152x896, 1216x832, 1344x768, 1536x640, 640x1536, 768x1344, 832x1216, 896x1152, "
        "but we received 512x768"
    )


@pytest.mark.parametrize(("width", "height"), [(512, 512), (1024, 1023), (1152, 1152), (64, 64)])
def test_other_init_image_sizes_are_rejected_with_stabilitys_message(width: int, height: int) -> None:
    error = rejection(body(init_image=png_base64(width, height)))
    assert error.message == SIZE_MESSAGE.format(f"{width}x{height}")
    assert (error.field, error.kind) == ("init_image", "invalid_sdxl_v1_dimensions")


@pytest.mark.parametrize(("width", "height"), [(64, 64), (2048, 2048), (512, 768), (1984, 64), (1024, 1024)])
def test_relaxed_sizes_accept_multiples_of_64_up_to_2048(width: int, height: int) -> None:
    text_to_image = parse(body(width=width, height=height), relaxed_sizes=True)
    assert (text_to_image.width, text_to_image.height) == (width, height)
    image_to_image = parse(body(init_image=png_base64(width, height, "L", 0)), relaxed_sizes=True)
    assert (image_to_image.width, image_to_image.height) == (width, height)


@pytest.mark.parametrize(
    ("width", "height", "field"),
    [
        (1000, 1024, "width"),
        (1024, 1000, "height"),
        (2112, 64, "width"),
        (64, 2112, "height"),
        (0, 64, "width"),
        (-64, 64, "width"),
        (32, 32, "width"),
    ],
)
def test_relaxed_sizes_reject_the_rest(width: int, height: int, field: str) -> None:
    error = rejection(body(width=width, height=height), relaxed_sizes=True)
    assert error.message == RELAXED_SIZE_MESSAGE.format(f"{width}x{height}")
    assert (error.field, error.kind) == (field, "invalid_image_dimensions")


def test_relaxed_sizes_blame_the_init_image() -> None:
    error = rejection(body(init_image=png_base64(100, 64)), relaxed_sizes=True)
    assert error.message == RELAXED_SIZE_MESSAGE.format("100x64")
    assert (error.field, error.kind) == ("init_image", "invalid_image_dimensions")


# ---- masks -------------------------------------------------------------------------------------------------


def half_white(width: int = 1024, height: int = 1024, mode: str = "L") -> Image.Image:
    """Left half white, right half black, a grey stripe of 100 in the middle rows."""
    levels = np.zeros((height, width), dtype=np.uint8)
    levels[:, : width // 2] = 255
    levels[height // 2 - 8 : height // 2 + 8, :] = 100
    return Image.fromarray(levels, "L").convert(mode)


def mask_levels(request: GenerationRequest) -> np.ndarray:
    assert request.mask is not None
    assert (request.mask.mode, request.mask.size) == ("L", (request.width, request.height))
    return np.asarray(request.mask)


@pytest.mark.parametrize("mask_mode", ["L", "RGB", "RGBA", "1"])
def test_mask_image_white_regenerates_white_pixels(mask_mode: str) -> None:
    mask_image = half_white(mode=mask_mode)
    request = parse(
        body(init_image=INIT_IMAGE, mask_source="MASK_IMAGE_WHITE", mask_image=image_base64(mask_image))
    )
    expected = np.asarray(mask_image.convert("L"))
    assert np.array_equal(mask_levels(request), expected)
    assert request.init_image is not None and request.init_image.mode == "RGB"


def test_mask_image_black_regenerates_black_pixels() -> None:
    request = parse(
        body(init_image=INIT_IMAGE, mask_source="MASK_IMAGE_BLACK", mask_image=image_base64(half_white()))
    )
    levels = mask_levels(request)
    assert (levels[0, 0], levels[0, -1], levels[512, 0]) == (0, 255, 155)


def test_a_mask_images_own_alpha_is_ignored() -> None:
    transparent_white = Image.new("RGBA", (1024, 1024), (255, 255, 255, 0))
    request = parse(
        body(
            init_image=INIT_IMAGE, mask_source="MASK_IMAGE_WHITE", mask_image=image_base64(transparent_white)
        )
    )
    assert mask_levels(request).min() == 255


def test_init_image_alpha_regenerates_transparent_pixels() -> None:
    pixels = np.zeros((832, 1216, 4), dtype=np.uint8)
    pixels[..., :3] = (30, 60, 90)
    pixels[:, :608, 3] = 255  # left half opaque: kept
    pixels[:, 608:, 3] = 0  # right half transparent: regenerated
    pixels[0, 0, 3] = 64  # partly transparent: partly regenerated
    request = parse(
        body(init_image=image_base64(Image.fromarray(pixels, "RGBA")), mask_source="INIT_IMAGE_ALPHA")
    )
    levels = mask_levels(request)
    assert (levels[10, 10], levels[10, 1000], levels[0, 0]) == (0, 255, 191)
    assert request.init_image is not None
    assert request.init_image.mode == "RGB"
    assert request.init_image.getpixel((10, 10)) == (30, 60, 90)


def test_init_image_alpha_accepts_a_palette_with_a_transparent_entry() -> None:
    palette = Image.new("P", (1024, 1024), 0)
    palette.putpalette([0, 0, 0] * 256)
    request = parse(body(init_image=image_base64(palette, transparency=0), mask_source="INIT_IMAGE_ALPHA"))
    assert mask_levels(request).min() == 255


MASK_REJECTED: list[tuple[dict[str, Any], str, str]] = [
    ({"mask_source": "MASK_IMAGE_WHITE"}, "#: required key [mask_image] not found", "mask_image"),
    ({"mask_source": "MASK_IMAGE_BLACK"}, "#: required key [mask_image] not found", "mask_image"),
    (
        {"mask_image": png_base64(1024, 1024, "L", 255)},
        "#: required key [mask_source] not found",
        "mask_source",
    ),
    (
        {"mask_source": "INIT_IMAGE_ALPHA", "mask_image": png_base64(1024, 1024, "L", 255)},
        "#: extraneous key [mask_image] is not permitted",
        "mask_image",
    ),
    (
        {"mask_source": "INIT_IMAGE_ALPHA"},
        "#/init_image: mask_source INIT_IMAGE_ALPHA needs an image with an alpha channel",
        "init_image",
    ),
    (
        {"mask_source": "MASK_IMAGE_WHITE", "mask_image": png_base64(512, 512, "L", 255)},
        "#/mask_image: the mask is 512x512 but init_image is 1024x1024; they must be the same size",
        "mask_image",
    ),
    (
        {"mask_source": "MASK_IMAGE_BLACK", "mask_image": png_base64(1024, 1023, "L", 255)},
        "#/mask_image: the mask is 1024x1023 but init_image is 1024x1024; they must be the same size",
        "mask_image",
    ),
    (
        {"mask_source": "MASK_IMAGE_WHITE", "mask_image": "%%%"},
        "#/mask_image: invalid base64 string",
        "mask_image",
    ),
    (
        {"mask_source": "MASK_IMAGE_WHITE", "mask_image": png_base64(1024, 1024, image_format="GIF")},
        "#/mask_image: the image could not be decoded (only PNG, JPEG and WebP are accepted)",
        "mask_image",
    ),
]


@pytest.mark.parametrize(
    ("fields", "message", "field"), MASK_REJECTED, ids=[case[1][:60] for case in MASK_REJECTED]
)
def test_mask_errors_are_invalid_mask_image(fields: dict[str, Any], message: str, field: str) -> None:
    error = rejection(body(init_image=INIT_IMAGE, **fields))
    assert (error.message, error.field, error.kind) == (message, field, "invalid_mask_image")


MASK = {"mask_source": "MASK_IMAGE_WHITE", "mask_image": png_base64(1024, 1024, "L", 255)}


@pytest.mark.parametrize(
    ("fields", "window"),
    [
        # No strength given: the masked region is regenerated from pure noise.
        ({}, (1.0, 0.0)),
        ({"init_image_mode": "IMAGE_STRENGTH"}, (1.0, 0.0)),
        ({"step_schedule_start": 0.3}, (1.0, 0.0)),  # the other mode's field: checked, then ignored
        (
            {
                "mask_source": "INIT_IMAGE_ALPHA",
                "mask_image": None,
                "init_image": png_base64(1024, 1024, "RGBA"),
            },
            (1.0, 0.0),
        ),
        # An explicit strength or schedule is honoured.
        ({"image_strength": 0.35}, (0.65, 0.0)),
        ({"image_strength": 0.0}, (1.0, 0.0)),
        ({"image_strength": 0.8}, (0.2, 0.0)),
        ({"init_image_mode": "STEP_SCHEDULE"}, (0.65, 0.0)),
        (
            {"init_image_mode": "STEP_SCHEDULE", "step_schedule_start": 0.9, "step_schedule_end": 0.1},
            (0.9, 0.1),
        ),
    ],
)
def test_a_masked_request_without_a_strength_regenerates_the_mask_fully(
    fields: dict[str, Any], window: tuple[float, float]
) -> None:
    given = {"init_image": INIT_IMAGE, **MASK, **fields}
    request = parse(body(**{key: value for key, value in given.items() if value is not None}))
    assert request.mask is not None
    assert (request.denoise_from, request.denoise_to) == (pytest.approx(window[0]), pytest.approx(window[1]))


def test_without_a_mask_the_image_to_image_default_strength_stays() -> None:
    request = parse(body(init_image=INIT_IMAGE))
    assert (request.denoise_from, request.denoise_to) == (pytest.approx(0.65), 0.0)


def test_the_init_image_is_checked_before_the_mask() -> None:
    error = rejection(
        body(init_image=png_base64(512, 512), mask_source="MASK_IMAGE_WHITE", mask_image=png_base64(512, 512))
    )
    assert error.kind == "invalid_sdxl_v1_dimensions"


# ---- boundaries of the module ------------------------------------------------------------------------------


def test_validation_and_codecs_do_not_import_torch() -> None:
    source = Path(__file__).resolve().parents[2] / "src"
    script = (
        f"import sys; sys.path.insert(0, {str(source)!r}); "
        "import sdxl_bedrock.api.validation, sdxl_bedrock.codecs, sdxl_bedrock.api, sdxl_bedrock.app; "
        "assert 'torch' not in sys.modules, 'torch was imported'"
    )
    subprocess.run([sys.executable, "-c", script], check=True, timeout=60)
