"""Properties of InvokeModel over generated bodies, against the real server (the tiny model, relaxed sizes).

- A body that keeps every documented rule gets 200 and one PNG of the size it asked for.
- Any other body (fields inside and outside their limits, wrong types, raw mutations of a valid body:
  dropped and added keys, huge numbers, NaN-ish values, deep nesting, 10,000 prompts, bytes that are not
  UTF-8, duplicate keys, truncated JSON) gets 200 or a modelled 4xx in Bedrock's error shape, never a 5xx,
  and an answer within REQUEST_TIMEOUT_S.

The field strategies read the limits from the body schema of /openapi.json (api/bedrock/openapi.py), so the
document and the properties cannot drift apart. Every request is cheap: a 64x64 image, few steps.
"""

from __future__ import annotations

import base64
import io
import json
import math
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from hypothesis import event, given, settings
from hypothesis import strategies as st
from PIL import Image

from sdxl_bedrock.api.bedrock import openapi
from sdxl_bedrock.api.bedrock.errors import BEDROCK_ERROR_NAMESPACE, ERRORS
from tests.conftest import RunningServer, gradient_png

INVOKE = "/model/stability.stable-diffusion-xl-v1/invoke"
REQUEST_TIMEOUT_S = 60
PREFIX = "Malformed input request: "
SUFFIX = ", please reformat your input and try again."
# What a client's body can cause on this server (no auth, no request timeout, a valid model id).
ANSWERED_STATUSES = {200, 400, 429}
CODES_BY_STATUS: dict[int, set[str]] = {}
for _shape in ERRORS.values():
    CODES_BY_STATUS.setdefault(_shape.status, set()).add(_shape.code)

BODY_SCHEMA = openapi.body_schema()
FIELDS: dict[str, dict[str, Any]] = BODY_SCHEMA["properties"]
PROMPT_FIELDS: dict[str, dict[str, Any]] = FIELDS["text_prompts"]["items"]["properties"]

SIDE = 64
RGB_PNG = base64.b64encode(gradient_png(SIDE, SIDE)).decode()
RGBA_PNG = base64.b64encode(gradient_png(SIDE, SIDE, "RGBA")).decode()
MASK_PNG = base64.b64encode(gradient_png(SIDE, SIDE, "L")).decode()
# Prompt weights stay where the engine blends them in float32 (see test_extreme_prompt_weights).
SAFE_WEIGHT = 1e6


def png_base64(width: int, height: int, fmt: str = "PNG") -> str:
    buffer = io.BytesIO()
    Image.new("RGB", (width, height), (40, 90, 200)).save(buffer, fmt)
    return base64.b64encode(buffer.getvalue()).decode()


# ---- values from the schema -----------------------------------------------------------------------------


def finite_floats(low: float | None = None, high: float | None = None) -> st.SearchStrategy[float]:
    return st.floats(low, high, allow_nan=False, allow_infinity=False)


json_scalars = st.none() | st.booleans() | st.integers() | finite_floats() | st.text(max_size=20)
json_values = st.recursive(
    json_scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=12,
)
nan_ish = st.sampled_from(["NaN", "nan", "Infinity", "-Infinity", "inf", "1e999", "", " ", "null", "0x10"])
huge_numbers = st.sampled_from([10**30, -(10**30), 2**64, 1e308, -1e308, 5e-324, 4294967296, -1])


def in_limits(field: dict[str, Any]) -> st.SearchStrategy[Any]:
    """A value the field's schema allows (the schema has no cross-field rules: those are the server's)."""
    if "enum" in field:
        return st.sampled_from(field["enum"])
    kind = field.get("type")
    if kind == "integer":
        return st.integers(field.get("minimum", -(2**40)), field.get("maximum", 2**40))
    if kind == "number":
        return finite_floats(field.get("minimum", -1e6), field.get("maximum", 1e6))
    if kind == "string":
        return st.text(max_size=min(field.get("maxLength", 40), 40))
    if kind == "object":
        return st.dictionaries(st.text(max_size=8), json_values, max_size=3)
    return json_values


def outside_limits(field: dict[str, Any]) -> st.SearchStrategy[Any]:
    """A value the field's schema refuses: past a bound, not in the enum, too long, or of another type."""
    options: list[st.SearchStrategy[Any]] = [wrong_type(field), nan_ish, huge_numbers]
    if "minimum" in field:
        low = field["minimum"]
        options.append(
            st.integers(int(low) - 10**6, math.ceil(low) - 1) | st.floats(-1e308, low, exclude_max=True)
        )
    if "maximum" in field:
        high = field["maximum"]
        options.append(
            st.integers(int(high) + 1, int(high) + 10**6) | st.floats(high, 1e308, exclude_min=True)
        )
    if "enum" in field:
        options.append(st.text(max_size=20).filter(lambda text: text not in field["enum"]))
        options.append(st.sampled_from([value.lower() for value in field["enum"]]))
    if "maxLength" in field:
        options.append(st.text(min_size=field["maxLength"] + 1, max_size=field["maxLength"] + 3))
    return st.one_of(options)


def wrong_type(field: dict[str, Any]) -> st.SearchStrategy[Any]:
    kind = field.get("type", "string")
    by_kind: dict[str, st.SearchStrategy[Any]] = {
        "integer": finite_floats() | st.booleans() | st.text(max_size=5),
        "number": st.booleans() | st.text(max_size=5) | st.lists(st.integers(), max_size=2),
        "string": st.integers() | st.booleans() | st.none() | st.lists(st.text(max_size=3), max_size=2),
        "array": st.text(max_size=5) | st.dictionaries(st.text(max_size=3), st.integers(), max_size=2),
        "object": st.lists(st.integers(), max_size=3) | st.text(max_size=5) | st.integers(),
    }
    return by_kind.get(kind, st.none())


def any_value(field: dict[str, Any]) -> st.SearchStrategy[Any]:
    return in_limits(field) | outside_limits(field)


# ---- bodies ---------------------------------------------------------------------------------------------


def tame(weight: float) -> float:
    return math.copysign(min(abs(weight), SAFE_WEIGHT), weight) if abs(weight) >= 1e-6 else 0.0


@st.composite
def valid_prompts(draw: st.DrawFn) -> list[dict[str, Any]]:
    texts = st.text(min_size=1, max_size=PROMPT_FIELDS["text"]["maxLength"] // 20)
    weights = st.floats(-3, 3).map(tame)
    prompts = draw(st.lists(st.fixed_dictionaries({"text": texts}, optional={"weight": weights}), max_size=9))
    # The rule the schema cannot say: some prompt has a text and a weight above 0.
    main: dict[str, Any] = {"text": draw(texts), "weight": draw(st.floats(0.1, 3))}
    prompts.insert(draw(st.integers(0, len(prompts))), main)
    return prompts


@st.composite
def valid_bodies(draw: st.DrawFn) -> tuple[dict[str, Any], tuple[int, int]]:
    """A body keeping every rule, in one of the three modes, and the output size it asks for."""
    common = ("cfg_scale", "seed", "sampler", "style_preset", "extras")
    body: dict[str, Any] = {"text_prompts": draw(valid_prompts()), "steps": draw(st.integers(10, 14))}
    for name in draw(st.lists(st.sampled_from(common), unique=True)):
        body[name] = draw(in_limits(FIELDS[name]))
    if draw(st.booleans()):
        body["samples"] = 1
    if draw(st.booleans()):
        body["clip_guidance_preset"] = "NONE"  # the others need a CLIP model, which this server has not
    mode = draw(st.sampled_from(["text", "strength", "schedule", "mask", "alpha"]))
    if mode == "text":
        size = (draw(st.sampled_from([64, 128])), draw(st.sampled_from([64, 128])))
        body["width"], body["height"] = size
        return body, size
    body["init_image"] = RGBA_PNG if mode == "alpha" else RGB_PNG
    if mode == "strength":
        body.update(draw(st.fixed_dictionaries({}, optional={"image_strength": st.floats(0, 1)})))
        if draw(st.booleans()):
            body["init_image_mode"] = "IMAGE_STRENGTH"
    elif mode == "schedule":
        start = draw(st.floats(0.01, 1))
        body.update(init_image_mode="STEP_SCHEDULE", step_schedule_start=start)
        body["step_schedule_end"] = draw(st.floats(0, start, exclude_max=True))
    elif mode == "mask":
        body.update(
            mask_source=draw(st.sampled_from(["MASK_IMAGE_WHITE", "MASK_IMAGE_BLACK"])), mask_image=MASK_PNG
        )
    else:
        body["mask_source"] = "INIT_IMAGE_ALPHA"
    return body, (SIDE, SIDE)


IMAGE_VALUES = st.sampled_from(
    [
        RGB_PNG,
        RGBA_PNG,
        MASK_PNG,
        png_base64(64, 64, "JPEG"),
        png_base64(64, 64, "WEBP"),
        png_base64(63, 64),
        png_base64(64, 64, "GIF"),
        RGB_PNG[:-8],
        RGB_PNG + "\n",
        "",
        "not base64!",
        base64.b64encode(b"text").decode(),
    ]
)


@st.composite
def mixed_bodies(draw: st.DrawFn) -> dict[str, Any]:
    """A valid body with some fields replaced by any value, in or out of limits, or dropped, or added."""
    body, _ = draw(valid_bodies())
    for name in draw(st.lists(st.sampled_from(sorted(FIELDS)), unique=True, max_size=4)):
        if name in ("init_image", "mask_image"):
            body[name] = draw(IMAGE_VALUES | wrong_type(FIELDS[name]))
        elif name == "text_prompts":
            body[name] = draw(prompt_lists())
        else:
            body[name] = draw(any_value(FIELDS[name]))
    for name in draw(st.lists(st.sampled_from(sorted(body)), unique=True, max_size=2)):
        del body[name]
    body.update(draw(st.dictionaries(st.text(max_size=12), json_values, max_size=2)))
    return bounded_cost(body)


@st.composite
def prompt_lists(draw: st.DrawFn) -> Any:
    prompt = st.fixed_dictionaries(
        {},
        optional={
            "text": any_value(PROMPT_FIELDS["text"]),
            "weight": any_value(PROMPT_FIELDS["weight"]).map(
                lambda w: tame(w) if isinstance(w, float) else w
            ),
            "extra": json_values,
        },
    )
    return draw(st.lists(prompt, max_size=12) | wrong_type(FIELDS["text_prompts"]))


def bounded_cost(body: dict[str, Any]) -> dict[str, Any]:
    """Whatever was drawn, a body the server accepts makes a small image: text-to-image gets at most
    128x128 (the default would be 1024x1024), and a weight the engine cannot blend is tamed."""
    if "init_image" not in body:
        for side in ("width", "height"):
            value = body.get(side)
            if value is None or (isinstance(value, int) and not isinstance(value, bool) and value > 128):
                body[side] = SIDE
    prompts = body.get("text_prompts")
    if isinstance(prompts, list):
        for prompt in prompts:
            if isinstance(prompt, dict) and type(prompt.get("weight")) in (int, float):
                prompt["weight"] = tame(float(prompt["weight"]))
    return body


def encoded(body: dict[str, Any]) -> bytes:
    return json.dumps(body).encode()


@st.composite
def mutated_bodies(draw: st.DrawFn, kind: str) -> bytes:
    """A valid body's bytes, broken in one of the ways a hostile or buggy client breaks them."""
    body, _ = draw(valid_bodies())
    raw = encoded(body)
    if kind == "truncated":
        return raw[: draw(st.integers(0, len(raw) - 1))]
    if kind == "not utf-8":
        at = draw(st.integers(0, len(raw)))
        return raw[:at] + draw(st.sampled_from([b"\xff", b"\xc3", b"\xed\xa0\x80", b"\x80\x80"])) + raw[at:]
    if kind == "duplicate key":
        name = draw(st.sampled_from(sorted(body)))
        return raw[:-1] + b", " + json.dumps(name).encode() + b": " + json.dumps(body[name]).encode() + b"}"
    if kind == "duplicate prompt key":
        return raw.replace(b'{"text": ', b'{"text": "x", "text": ', 1)
    if kind == "non-finite literal":
        name = draw(st.sampled_from(["cfg_scale", "seed", "steps", "image_strength"]))
        literal = draw(st.sampled_from([b"NaN", b"Infinity", b"-Infinity", b"1e999", b"-1e999"]))
        return raw[:-1] + b', "' + name.encode() + b'": ' + literal + b"}"
    if kind == "long integer":
        digits = draw(st.sampled_from([400, 4300, 5000, 100_000]))
        return raw[:-1] + b', "seed": 1' + b"0" * digits + b"}"
    if kind == "deep nesting":
        depth = draw(st.sampled_from([5, 29, 30, 31, 32, 100, 100_000]))
        return raw[:-1] + b', "extras": {"deep": ' + b"[" * depth + b"]" * depth + b"}}"
    if kind == "many prompts":
        count = draw(st.sampled_from([11, 4_999, 10_000]))
        return encoded({**body, "text_prompts": [{"text": "a"}] * count})
    if kind == "not an object":
        return draw(
            st.sampled_from([b"", b" ", b"null", b"[]", b'"text"', b"1", b"\xef\xbb\xbf" + raw, b"{}"])
        )
    if kind == "lone surrogate":
        return raw.replace(b'{"text": "', b'{"text": "\\ud800', 1)
    assert kind == "wrong type"
    name = draw(st.sampled_from(sorted(FIELDS)))
    return encoded({**body, name: draw(wrong_type(FIELDS[name]))})


MUTATIONS = [
    "truncated",
    "not utf-8",
    "duplicate key",
    "duplicate prompt key",
    "non-finite literal",
    "long integer",
    "deep nesting",
    "many prompts",
    "not an object",
    "lone surrogate",
    "wrong type",
]


# ---- the properties -------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def client(server: RunningServer) -> Iterator[httpx.Client]:
    # Module-scoped, like `server`: hypothesis' function_scoped_fixture health check has nothing to flag.
    with httpx.Client(base_url=server.url, timeout=REQUEST_TIMEOUT_S) as http:
        yield http


def invoke(client: httpx.Client, body: bytes) -> httpx.Response:
    return client.post(INVOKE, content=body, headers={"Content-Type": "application/json"})


def check_answer(response: httpx.Response, size: tuple[int, int] | None = None) -> None:
    """200 with one PNG (of `size`, when known), or a modelled 4xx in Bedrock's error shape."""
    event(f"status {response.status_code}")
    assert response.status_code in ANSWERED_STATUSES, (response.status_code, response.text[:500])
    assert response.headers.get("x-amzn-RequestId")
    if response.status_code == 200:
        assert response.headers["content-type"] == "application/json"
        answer = response.json()
        assert answer["result"] == "success"
        (artifact,) = answer["artifacts"]
        assert artifact["finishReason"] in ("SUCCESS", "CONTENT_FILTERED")
        with Image.open(io.BytesIO(base64.b64decode(artifact["base64"], validate=True))) as image:
            assert image.format == "PNG"
            if size is not None:
                assert image.size == size
        return
    code, _, namespace = response.headers["x-amzn-ErrorType"].partition(":")
    assert namespace == BEDROCK_ERROR_NAMESPACE
    assert code in CODES_BY_STATUS[response.status_code]
    error = response.json()
    assert set(error) == {"message"}
    assert isinstance(error["message"], str)
    assert error["message"]
    if error["message"].startswith(PREFIX):
        assert error["message"].endswith(SUFFIX)


PROPERTY_SETTINGS = settings(deadline=None, derandomize=True, database=None, print_blob=True)


@settings(PROPERTY_SETTINGS, max_examples=40)
@given(case=valid_bodies())
def test_a_valid_body_makes_its_image(
    client: httpx.Client, case: tuple[dict[str, Any], tuple[int, int]]
) -> None:
    body, size = case
    response = invoke(client, encoded(body))
    assert response.status_code == 200, response.text[:500]
    check_answer(response, size)


@settings(PROPERTY_SETTINGS, max_examples=60)
@given(body=mixed_bodies())
def test_any_mix_of_fields_is_answered_in_shape(client: httpx.Client, body: dict[str, Any]) -> None:
    check_answer(invoke(client, encoded(body)))


@pytest.mark.parametrize("kind", MUTATIONS)
@settings(PROPERTY_SETTINGS, max_examples=8)
@given(data=st.data())
def test_a_broken_body_is_refused_in_shape(client: httpx.Client, kind: str, data: st.DataObject) -> None:
    response = invoke(client, data.draw(mutated_bodies(kind), label="body"))
    check_answer(response)
    # A broken body never reaches the engine, or gets an image only if the mutation left it valid.
    if response.status_code != 200:
        assert response.status_code == 400


def test_the_server_is_still_well(client: httpx.Client) -> None:
    assert client.get("/ping").json() == {"status": "Healthy"}


# ---- extreme but valid weights (found by the properties above: they once overflowed float32) ------------


@pytest.mark.parametrize(
    "prompts",
    [
        [{"text": "a", "weight": 1e39}],
        [{"text": "a", "weight": 3e38}],
        [{"text": "a", "weight": 1e-46}],
        [{"text": "a"}, {"text": "b", "weight": -1e39}],
    ],
    ids=["1e39", "3e38", "1e-46", "negative -1e39"],
)
def test_extreme_prompt_weights(client: httpx.Client, prompts: list[dict[str, Any]]) -> None:
    body = {"text_prompts": prompts, "init_image": RGB_PNG, "steps": 10}
    response = invoke(client, encoded(body))
    assert response.status_code in (200, 400), response.text
