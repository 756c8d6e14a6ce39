"""/openapi.json describes what the server does: a valid OpenAPI 3.1 document naming every route, and a
schemathesis run against the live server finds no 5xx and no answer outside what the document says."""

from __future__ import annotations

import base64
import json
import math
import re
from collections.abc import Iterator
from typing import Any
from urllib.parse import quote

import fastapi.routing
import httpx
import jsonschema_rs
import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis import GenerationMode
from schemathesis.core.result import Err
from schemathesis.specs.openapi.schemas import OpenApiSchema
from schemathesis.transport.serialization import Binary

from sdxl_bedrock import errors
from sdxl_bedrock.api import openapi
from sdxl_bedrock.api.bedrock.body import parse_invoke_body
from sdxl_bedrock.api.bedrock.errors import BEDROCK_ERROR_NAMESPACE, ERRORS
from sdxl_bedrock.api.bedrock.openapi import body_schema as bedrock_body_schema
from sdxl_bedrock.api.stability import openapi as stability_openapi
from sdxl_bedrock.api.stability.errors import ERRORS as STABILITY_ERRORS
from sdxl_bedrock.app import create_app
from sdxl_bedrock.config import Settings
from sdxl_bedrock.errors import MalformedBody, MissingCredentials
from tests.conftest import RunningServer, gradient_png

INVOKE = "/model/{model_id}/invoke"
STREAM = "/model/{model_id}/invoke-with-response-stream"
TEXT_TO_IMAGE = "/v1/generation/{engine_id}/text-to-image"
IMAGE_TO_IMAGE = "/v1/generation/{engine_id}/image-to-image"
MASKING = "/v1/generation/{engine_id}/image-to-image/masking"
GENERATION_ROUTES = (INVOKE, STREAM, TEXT_TO_IMAGE, IMAGE_TO_IMAGE, MASKING)
UNSUPPORTED_ROUTES = (
    "/model/{model_id}/converse",
    "/model/{model_id}/converse-stream",
    "/model/{model_id}/count-tokens",
    "/async-invoke",
)
# The playground: its page belongs in the document (test_playground_page_is_documented), the files the page
# loads are not an API.
PLAYGROUND_PAGE = ("GET", "/")
UNDOCUMENTED = {("GET", "/playground/options.json"), ("GET", "/playground/{name}"), ("GET", "/docs")}

# A 64x64 RGBA picture (opaque): every image mode, INIT_IMAGE_ALPHA included, accepts it.
TINY_PNG = gradient_png(64, 64, "RGBA")
TINY_PNG_B64 = base64.b64encode(TINY_PNG).decode()


@pytest.fixture(scope="module")
def document() -> dict[str, Any]:
    return create_app(Settings()).openapi()


CONVERTER = re.compile(r":\w+}")  # `{model_id:path}` is `{model_id}` in the document


def app_operations() -> Iterator[tuple[str, str]]:
    """(method, path) of every route the app serves, through included routers too."""
    app = create_app(Settings())
    # FastAPI >= 0.16x keeps included routers whole; iter_route_contexts flattens them with their prefixes.
    iterate = getattr(fastapi.routing, "iter_route_contexts", None)
    for context in iterate(app.routes) if iterate is not None else app.routes:
        route = getattr(context, "original_route", context)
        path = getattr(context, "path", None)
        if not isinstance(route, fastapi.routing.APIRoute) or path is None:
            continue
        for method in sorted((route.methods or set()) - {"HEAD"}):
            yield method, CONVERTER.sub("}", path)


def resolved(document: dict[str, Any], schema: dict[str, Any]) -> dict[str, Any]:
    """`schema`, or the component schema its `$ref` names (response models are components)."""
    reference = schema.get("$ref")
    if reference is None:
        return schema
    found: dict[str, Any] = document
    for part in reference.removeprefix("#/").split("/"):
        found = found[part]
    return found


def documented_operations(document: dict[str, Any]) -> set[tuple[str, str]]:
    return {(method.upper(), path) for path, item in document["paths"].items() for method in item}


# ---- the document -----------------------------------------------------------------------------------------


def test_document_is_valid_openapi(document: dict[str, Any]) -> None:
    assert document["openapi"].startswith("3.")
    schema = schemathesis.openapi.from_dict(document)
    schema.validate()  # against the OpenAPI 3.x meta-schema; raises on the first problem
    problems = [str(result.err()) for result in schema.get_all_operations() if isinstance(result, Err)]
    assert problems == []
    assert len(list(schema.get_all_operations())) == len(documented_operations(document))


def test_every_schema_compiles_as_json_schema_2020_12(document: dict[str, Any]) -> None:
    """jsonschema_rs compiles each schema, patterns included (ECMA regexes: no `\\-` identity escapes)."""

    def schemas(node: Any) -> Iterator[dict[str, Any]]:
        if isinstance(node, dict):
            if isinstance(node.get("schema"), dict):
                yield node["schema"]
            for value in node.values():
                yield from schemas(value)
        elif isinstance(node, list):
            for value in node:
                yield from schemas(value)

    found = list(schemas(document["paths"]))
    assert len(found) > 40
    for schema in found:
        # A response model's `$ref` points into the document's components: compile it with them beside it.
        jsonschema_rs.Draft202012Validator(
            {**schema, "components": document["components"]}, validate_formats=True
        )


def test_every_route_is_documented(document: dict[str, Any]) -> None:
    served = set(app_operations())
    assert documented_operations(document) - served == set()
    missing = served - documented_operations(document) - UNDOCUMENTED
    assert missing - {PLAYGROUND_PAGE} == set()  # the page: test_playground_page_is_documented
    for route in GENERATION_ROUTES:
        assert ("POST", route) in served
    for route in ("/ping", "/metrics", "/v1/engines/list"):
        assert ("GET", route) in served


def test_playground_page_is_documented(document: dict[str, Any]) -> None:
    page = document["paths"]["/"]["get"]
    assert list(page["responses"]["200"]["content"]) == ["text/html"]


def test_request_bodies(document: dict[str, Any]) -> None:
    paths = document["paths"]

    def body(path: str) -> dict[str, Any]:
        request_body: dict[str, Any] = paths[path]["post"]["requestBody"]
        assert request_body["required"] is True
        content: dict[str, Any] = request_body["content"]
        return content

    for path in (INVOKE, STREAM):
        schema = body(path)["application/json"]["schema"]
        assert schema["required"] == ["text_prompts"]
        assert schema["additionalProperties"] is False
        assert schema["properties"]["steps"] == {
            "type": "integer",
            "minimum": 10,
            "maximum": 50,
            "default": 30,
        }
        assert schema["properties"]["samples"]["maximum"] == 1
        assert schema["properties"]["init_image"]["contentEncoding"] == "base64"
        assert "null" not in json.dumps(schema), "no field accepts null"
    stability = body(TEXT_TO_IMAGE)["application/json"]["schema"]
    assert stability["properties"]["steps"]["maximum"] == 150
    assert stability["properties"]["samples"]["maximum"] == 10
    assert "init_image" not in stability["properties"]
    for path, files in ((IMAGE_TO_IMAGE, ["init_image"]), (MASKING, ["init_image", "mask_image"])):
        form = body(path)["multipart/form-data"]
        assert [
            name for name, field in form["schema"]["properties"].items() if field.get("format") == "binary"
        ] == files
        assert form["schema"]["required"][0] == "init_image"
        assert set(form["encoding"]) == set(files)
    assert body(MASKING)["multipart/form-data"]["schema"]["required"] == ["init_image", "mask_source"]


def test_responses_follow_the_error_table(document: dict[str, Any]) -> None:
    paths = document["paths"]
    for path in (INVOKE, STREAM):
        responses = paths[path]["post"]["responses"]
        assert set(responses) == {"200", "400", "403", "404", "408", "424", "429", "500", "503", "default"}
        for status in ("400", "403", "404", "408", "424", "429", "500", "503"):
            error_type = responses[status]["headers"]["x-amzn-ErrorType"]
            assert error_type["required"] is True
            pattern = jsonschema_rs.Draft202012Validator(error_type["schema"])
            codes = [shape.code for shape in ERRORS.values() if str(shape.status) == status]
            for code in codes:
                assert pattern.is_valid(f"{code}:{BEDROCK_ERROR_NAMESPACE}")
            assert not pattern.is_valid(f"NoSuchException:{BEDROCK_ERROR_NAMESPACE}")
            assert not pattern.is_valid(codes[0])  # the namespace is part of the header
            schema = resolved(document, responses[status]["content"]["application/json"]["schema"])
            assert schema["required"] == ["message"]
        assert "ThrottlingException" in responses["429"]["description"]
        assert "ModelNotReadyException" in responses["429"]["description"]
    # The operations SDXL does not take: their one answer to a valid request is the 400.
    for path in UNSUPPORTED_ROUTES:
        responses = paths[path]["post"]["responses"]
        assert set(responses) == {"400", "403", "404", "500", "default"}
        assert "ValidationException" in responses["400"]["description"]
    assert list(paths[INVOKE]["post"]["responses"]["200"]["content"]) == ["application/json"]
    assert list(paths[STREAM]["post"]["responses"]["200"]["content"]) == [
        "application/vnd.amazon.eventstream"
    ]
    for path in (TEXT_TO_IMAGE, IMAGE_TO_IMAGE, MASKING):
        responses = paths[path]["post"]["responses"]
        assert set(responses) == {"200", "400", "401", "403", "404", "408", "429", "500", "503", "default"}
        assert set(responses["200"]["content"]) == {"application/json", "image/png"}
        assert resolved(document, responses["400"]["content"]["application/json"]["schema"])["required"] == [
            "id",
            "name",
            "message",
        ]
    assert set(paths["/v1/engines/list"]["get"]["responses"]) == {"200", "401", "403", "500"}
    assert set(paths["/ping"]["get"]["responses"]) == {"200", "403", "429", "500"}
    assert list(paths["/metrics"]["get"]["responses"]["200"]["content"]) == ["text/plain"]
    # Nothing on the Bedrock and Stability routes answers FastAPI's 422 (the A1111 wire's shape is FastAPI's).
    assert "422" not in json.dumps(
        {path: item for path, item in paths.items() if not path.startswith("/sdapi/")}
    )


def test_error_sets_name_real_errors() -> None:
    for classes in (
        openapi.GENERATION_ERRORS,
        stability_openapi.GENERATION_ROUTE_ERRORS,
        openapi.PING_ERRORS,
    ):
        assert all(cls in ERRORS and cls in STABILITY_ERRORS for cls in classes)
    assert MissingCredentials in stability_openapi.ENGINES_ROUTE_ERRORS
    assert errors.ServiceError in openapi.ANY_ROUTE_ERRORS


VALID_BODIES: list[dict[str, Any]] = [
    {"text_prompts": [{"text": "a lighthouse"}], "width": 64, "height": 64, "steps": 10},
    {"text_prompts": [{"text": "a"}, {"text": "b", "weight": -1}], "init_image": TINY_PNG_B64, "seed": 7},
    {
        "text_prompts": [{"text": "a"}],
        "init_image": TINY_PNG_B64,
        "init_image_mode": "STEP_SCHEDULE",
        "step_schedule_start": 0.8,
        "step_schedule_end": 0.1,
        "sampler": "K_EULER",
        "style_preset": "anime",
        "extras": {"anything": [1, 2]},
    },
    {"text_prompts": [{"text": "a"}], "init_image": TINY_PNG_B64, "mask_source": "INIT_IMAGE_ALPHA"},
    {"text_prompts": [{"text": "a"}], "init_image": TINY_PNG_B64, "height": 64, "width": 64},
    {
        "text_prompts": [{"text": "a"}],
        "init_image": TINY_PNG_B64,
        "mask_source": "MASK_IMAGE_WHITE",
        "mask_image": TINY_PNG_B64,
    },
]
INVALID_BODIES: list[dict[str, Any]] = [
    {},
    {"text_prompts": []},
    {"text_prompts": [{"text": "a"}], "nonsense": 1},
    {"text_prompts": [{"text": "a", "colour": "red"}]},
    {"text_prompts": [{"text": "a" * 2001}]},
    {"text_prompts": [{"text": "a"}], "steps": 9},
    {"text_prompts": [{"text": "a"}], "steps": "30"},
    {"text_prompts": [{"text": "a"}], "cfg_scale": 35.5},
    {"text_prompts": [{"text": "a"}], "seed": -1},
    {"text_prompts": [{"text": "a"}], "samples": 2},
    {"text_prompts": [{"text": "a"}], "sampler": "EULER"},
    {"text_prompts": [{"text": "a"}], "style_preset": None},
    {"text_prompts": [{"text": "a"}], "extras": []},
    {"text_prompts": [{"text": "a"}], "image_strength": 0.5},
    {"text_prompts": [{"text": "a"}], "init_image": TINY_PNG_B64, "mask_image": TINY_PNG_B64},
]


@pytest.mark.parametrize("body", VALID_BODIES, ids=range(len(VALID_BODIES)))
def test_bodies_the_validator_takes_fit_the_document(body: dict[str, Any]) -> None:
    parse_invoke_body(json.dumps(body).encode(), relaxed_sizes=True)
    assert jsonschema_rs.Draft202012Validator(bedrock_body_schema()).is_valid(body)


@pytest.mark.parametrize("body", INVALID_BODIES, ids=range(len(INVALID_BODIES)))
def test_bodies_outside_the_document_are_refused(body: dict[str, Any]) -> None:
    assert not jsonschema_rs.Draft202012Validator(bedrock_body_schema()).is_valid(body)
    with pytest.raises(MalformedBody):
        parse_invoke_body(json.dumps(body).encode(), relaxed_sizes=True)


# ---- schemathesis against the live server -----------------------------------------------------------------

# Per operation and generation mode (21 runs): at most 840 requests, most refused at validation, the rest
# 64x64 images of 10 steps on the tiny model.
MAX_EXAMPLES = 40
# One request's wait: far above what it takes (well under a second on a quiet machine), because a machine
# busy with other work (another test suite, a build) can stretch it a hundredfold; the server's own
# --request-timeout (300 s) answers before this does.
REQUEST_TIMEOUT_S = 330


def live_runs() -> list[tuple[str, str, GenerationMode]]:
    """Every operation with valid data; those with parameters or a body with invalid data too."""
    runs = []
    for path, item in create_app(Settings()).openapi()["paths"].items():
        for method, operation in item.items():
            runs.append((method.upper(), path, GenerationMode.POSITIVE))
            if operation.get("parameters") or operation.get("requestBody"):
                runs.append((method.upper(), path, GenerationMode.NEGATIVE))
    return sorted(runs)


@pytest.fixture(scope="module")
def live_schema(server: RunningServer) -> OpenApiSchema:
    return schemathesis.openapi.from_url(f"{server.url}/openapi.json", timeout=REQUEST_TIMEOUT_S)


def cheap(case: schemathesis.Case) -> None:
    """A valid body runs the engine: give it a tiny size, 10 steps, one sample, a real 64x64 image where it
    has one, and prompt weights inside the range the engine blends safely (test_extreme_prompt_weights).
    A negative case stays as generated: it must be refused before any work."""
    if case.meta is None or case.meta.generation.mode.is_negative or not isinstance(case.body, dict):
        return
    body: dict[str, Any] = dict(case.body)
    if case.operation.path.startswith(OPENAI_IMAGES):
        case.body = cheap_openai(case.operation.path, body)
        return
    if case.media_type == "multipart/form-data":
        for name, value in body.items():
            if isinstance(value, Binary):
                body[name] = Binary(TINY_PNG)
            elif FORM_WEIGHT.fullmatch(name):
                body[name] = tame_weight(value)
    else:
        for name in ("init_image", "mask_image", "mask"):
            if isinstance(body.get(name), str):
                body[name] = TINY_PNG_B64
        if case.operation.path.startswith("/sdapi/"):  # A1111's: one image, and 50 steps unless told
            body.setdefault("steps", 10)
            if isinstance(body.get("init_images"), list):
                body["init_images"] = [TINY_PNG_B64]
        if "init_image" not in body:
            body["width"] = body["height"] = 64
        if isinstance(body.get("text_prompts"), list):
            body["text_prompts"] = [
                {**prompt, "weight": tame_weight(prompt["weight"])}
                if isinstance(prompt, dict) and "weight" in prompt
                else prompt
                for prompt in body["text_prompts"]
            ]
    for name, cheapest in (("steps", 10), ("samples", 1), ("batch_size", 1), ("n_iter", 1)):
        if isinstance(body.get(name), int):
            body[name] = cheapest
    case.body = body


FORM_WEIGHT = re.compile(r"text_prompts\[\d+\]\[weight\]")
OPENAI_IMAGES = "/v1/images/"


def cheap_openai(path: str, body: dict[str, Any]) -> dict[str, Any]:
    """The OpenAI face's bodies: one image, of the fewest steps, 64x64 (a real 64x64 PNG as the image and the
    mask; for a generation the size itself, which the relaxed server takes), edits and variations running a
    third of their schedule."""
    for name, value in body.items():
        if isinstance(value, Binary):
            body[name] = Binary(TINY_PNG)
    if isinstance(body.get("n"), int):
        body["n"] = 1
    if path.endswith("/generations"):
        body["size"] = "64x64"  # absent is 1024x1024
    elif "size" in body:
        body["size"] = "auto"  # the image's own size
    if not path.endswith("/variations"):
        body["quality"] = "low"
    if not path.endswith("/generations"):
        body["strength"] = 0.3
    return body


def tame_weight(weight: Any) -> Any:
    if isinstance(weight, bool) or not isinstance(weight, int | float) or weight == 0:
        return weight
    return math.copysign(min(max(abs(float(weight)), 1e-6), 1e6), weight)


@schemathesis.check
def documented_status(ctx: schemathesis.CheckContext, response: schemathesis.Response, case: Any) -> None:
    """Stricter than status_code_conformance, which any status passes where a `default` response exists:
    the status must be one the operation lists by number."""
    listed = {key for key in case.operation.definition.raw.get("responses", {}) if key.isdigit()}
    if str(response.status_code) not in listed:
        raise AssertionError(f"{response.status_code} is not among the documented statuses {sorted(listed)}")


CHECKS = [
    schemathesis.checks.not_a_server_error,
    schemathesis.checks.status_code_conformance,
    schemathesis.checks.content_type_conformance,
    schemathesis.checks.response_headers_conformance,
    schemathesis.checks.response_schema_conformance,
    documented_status,
]
# Only for negative runs: `cheap` edits valid cases, and schemathesis counts any edited multipart body (it
# holds binary files) as invalid data.
NEGATIVE_CHECKS = [*CHECKS, schemathesis.checks.negative_data_rejection]


@pytest.mark.parametrize(("method", "path", "mode"), live_runs(), ids=str)
def test_live_server_conforms_to_its_document(
    live_schema: OpenApiSchema, method: str, path: str, mode: GenerationMode
) -> None:
    operation = live_schema[path][method]
    checks = NEGATIVE_CHECKS if mode.is_negative else CHECKS

    @given(case=operation.as_strategy(generation_mode=mode))
    @settings(
        max_examples=MAX_EXAMPLES,
        deadline=None,
        derandomize=True,
        database=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much, HealthCheck.data_too_large],
    )
    def call(case: schemathesis.Case) -> None:
        cheap(case)
        case.call_and_validate(checks=checks, timeout=REQUEST_TIMEOUT_S)

    call()


# As clients send it: percent-encoded, so that the ARN's `/` stays inside the path segment.
ARN = quote("arn:aws:bedrock:us-east-1::foundation-model/stability.stable-diffusion-xl-v1", safe="")
TEXT_BODY = {"text_prompts": [{"text": "a lighthouse"}], "width": 64, "height": 64, "steps": 10, "seed": 3}
FORM = {
    "text_prompts[0][text]": "a lighthouse",
    "text_prompts[1][text]": "fog",
    "text_prompts[1][weight]": -1,
}
# (operation, model or engine id, headers, body, media type, the 200's content type)
ANSWERED: list[tuple[str, str, dict[str, str], Any, str, str]] = [
    (
        INVOKE,
        "stability.stable-diffusion-xl-v1:0",
        {"Accept": "application/json"},
        TEXT_BODY,
        "application/json",
        "application/json",
    ),
    (INVOKE, ARN, {}, {**TEXT_BODY, "width": 128}, "application/json", "application/json"),
    (
        STREAM,
        "stability.stable-diffusion-xl-v1",
        {"X-Amzn-Bedrock-Accept": "*/*"},
        {"text_prompts": [{"text": "a"}], "init_image": TINY_PNG_B64, "steps": 10},
        "application/json",
        "application/vnd.amazon.eventstream",
    ),
    (
        TEXT_TO_IMAGE,
        "stable-diffusion-xl-1024-v1-0",
        {"Accept": "image/png"},
        {**TEXT_BODY, "steps": 12},
        "application/json",
        "image/png",
    ),
    (
        TEXT_TO_IMAGE,
        "stable-diffusion-xl-1024-v1-0",
        {},
        {**TEXT_BODY, "samples": 2},
        "application/json",
        "application/json",
    ),
    (
        IMAGE_TO_IMAGE,
        "stable-diffusion-xl-1024-v1-0",
        {},
        {**FORM, "init_image": TINY_PNG, "steps": 10},
        "multipart/form-data",
        "application/json",
    ),
    (
        MASKING,
        "stable-diffusion-xl-1024-v1-0",
        {"Accept": "image/png"},
        {
            **FORM,
            "init_image": TINY_PNG,
            "mask_image": TINY_PNG,
            "mask_source": "MASK_IMAGE_BLACK",
            "steps": 10,
        },
        "multipart/form-data",
        "image/png",
    ),
]


@pytest.mark.parametrize(("path", "resource", "headers", "body", "media_type", "answer"), ANSWERED)
def test_answers_conform_to_the_document(
    live_schema: OpenApiSchema,
    path: str,
    resource: str,
    headers: dict[str, str],
    body: Any,
    media_type: str,
    answer: str,
) -> None:
    """The generated cases rarely make a valid form; these do, on each route and each kind of answer."""
    operation = live_schema[path]["POST"]
    parameter = "model_id" if path.startswith("/model/") else "engine_id"
    case = operation.Case(
        path_parameters={parameter: resource}, headers=headers, body=body, media_type=media_type
    )
    response = case.call_and_validate(checks=CHECKS, timeout=REQUEST_TIMEOUT_S)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"][0].split(";")[0] == answer


def test_served_document_is_the_apps(server: RunningServer, document: dict[str, Any]) -> None:
    served = httpx.get(f"{server.url}/openapi.json", timeout=REQUEST_TIMEOUT_S)
    assert served.status_code == 200
    assert served.headers["content-type"] == "application/json"
    assert documented_operations(served.json()) == documented_operations(document)
