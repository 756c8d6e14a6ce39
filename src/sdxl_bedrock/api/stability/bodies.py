"""Stability v1's request bodies -> GenerationRequest: text-to-image JSON, and the multipart forms of
image-to-image and image-to-image/masking.

The same fields and rules as Bedrock's body (fields.py); what differs: `steps` 10..150 (default 50) and
`samples` 1..10, each endpoint takes only its own fields (as in Stability's OpenAPI schemas: `height` /
`width` only on text-to-image, the init-image-mode fields only on image-to-image, `mask_source` /
`mask_image` only on masking), and images arrive as form parts: their bytes, with or without a file name
(Stability's own Go and TypeScript examples send them without one).

Our rules where Stability's documents are silent:
- text-to-image defaults to 1024x1024 (Stability's documented 512 default is not an SDXL size).
- Masking has no strength: the masked pixels are generated afresh (denoised from pure noise).
- Form values are text and are read leniently: `"30"` and `"30.0"` are the Integer 30, `"abc"` is no number.
  `text_prompts[i][text]` / `[weight]` become prompts in the order of `i`; an error names a prompt by its
  position in that order. A repeated form key keeps its last value, as Stability documents for prompts.
  `extras` is a JSON object written as text.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Annotated, Any

from pydantic import Field

from sdxl_bedrock.api.stability.fields import (
    GenerationFields,
    InitImageModeFields,
    MaskSource,
    MaskSourceField,
    RandomSeed,
    SizeFields,
    check_mask_keys,
    denoise_range,
    generation_request,
    mask_of,
    split_prompts,
)
from sdxl_bedrock.api.validation import (
    check_dimensions,
    decode_file_field,
    load_json_object,
    malformed,
    shown,
    validate,
)
from sdxl_bedrock.errors import ProblemKind
from sdxl_bedrock.schema import GenerationRequest

# The form parts that hold images (their bytes, with or without a file name); every other value is text.
FORM_FILES = ("init_image", "mask_image")
FORM_PROMPT_KEY = re.compile(r"text_prompts\[(\d{1,6})\]\[(text|weight)\]")


class StabilityGenerationFields(GenerationFields):
    steps: Annotated[int, Field(ge=10, le=150)] = 50
    samples: Annotated[int, Field(ge=1, le=10)] = 1


class TextToImageBody(SizeFields, StabilityGenerationFields):
    """Stability v1 text-to-image: `steps` 10..150 (default 50), `samples` 1..10."""


class ImageToImageForm(InitImageModeFields, StabilityGenerationFields):
    """Stability v1 image-to-image's form fields (the init image arrives as a file)."""


class MaskingForm(MaskSourceField, StabilityGenerationFields):
    """Stability v1 image-to-image/masking's form fields (the images arrive as files)."""

    mask_source: MaskSource


def parse_text_to_image(
    raw: bytes, *, relaxed_sizes: bool = False, random_seed: RandomSeed | None = None
) -> GenerationRequest:
    """Validate a text-to-image JSON body. Raises MalformedBody."""
    body = validate(TextToImageBody, load_json_object(raw))
    prompts = split_prompts(body.text_prompts)
    check_dimensions(body.width, body.height, relaxed=relaxed_sizes)
    return generation_request(body, prompts, body.width, body.height, random_seed=random_seed)


def parse_form(
    fields: Mapping[str, str],
    files: Mapping[str, bytes],
    *,
    masking: bool,
    relaxed_sizes: bool = False,
    random_seed: RandomSeed | None = None,
) -> GenerationRequest:
    """Validate an image-to-image form, or with `masking` an image-to-image/masking form.

    `fields` are the text values by form key (`text_prompts[0][text]`, `cfg_scale`, ...); `files` the
    images' bytes by form key (`init_image`, and `mask_image` for masking), and any other part sent with
    a file name, which is refused. Raises MalformedBody.
    """
    check_form_files(files, FORM_FILES if masking else ("init_image",))
    document = form_document(fields)
    if masking:
        return _masking(document, files, relaxed_sizes=relaxed_sizes, random_seed=random_seed)
    return _image_to_image(document, files, relaxed_sizes=relaxed_sizes, random_seed=random_seed)


def _image_to_image(
    document: dict[str, Any],
    files: Mapping[str, bytes],
    *,
    relaxed_sizes: bool,
    random_seed: RandomSeed | None,
) -> GenerationRequest:
    body = validate(ImageToImageForm, document, lax=True)
    prompts = split_prompts(body.text_prompts)
    denoise = denoise_range(body)
    init_image = decode_file_field(files["init_image"], ("init_image",), error_name="invalid_image")
    check_dimensions(*init_image.size, relaxed=relaxed_sizes, field="init_image")
    return generation_request(
        body, prompts, *init_image.size, denoise=denoise, init_image=init_image, random_seed=random_seed
    )


def _masking(
    document: dict[str, Any],
    files: Mapping[str, bytes],
    *,
    relaxed_sizes: bool,
    random_seed: RandomSeed | None,
) -> GenerationRequest:
    body = validate(MaskingForm, document, lax=True)
    check_mask_keys(body.mask_source, mask_image_given="mask_image" in files)
    prompts = split_prompts(body.text_prompts)
    init_image = decode_file_field(files["init_image"], ("init_image",), error_name="invalid_image")
    check_dimensions(*init_image.size, relaxed=relaxed_sizes, field="init_image")
    mask_image = (
        decode_file_field(files["mask_image"], ("mask_image",), error_name="invalid_mask_image")
        if "mask_image" in files
        else None
    )
    return generation_request(
        body,
        prompts,
        *init_image.size,
        init_image=init_image,
        mask=mask_of(body.mask_source, init_image, mask_image),
        random_seed=random_seed,
    )


def check_form_files(files: Mapping[str, bytes], accepted: tuple[str, ...]) -> None:
    for name in files:
        if name not in accepted:
            raise malformed(
                (),
                f"extraneous file [{shown(name)}] is not permitted",
                kind=ProblemKind.EXTRANEOUS_KEY,
                value=name,
            )
    if "init_image" not in files:
        raise malformed(
            (), "required key [init_image] not found", kind=ProblemKind.REQUIRED_KEY, value="init_image"
        )


def form_document(fields: Mapping[str, str]) -> dict[str, Any]:
    """The form's text values shaped like the JSON body: `text_prompts[i][text]` keys become a list."""
    document: dict[str, Any] = {}
    prompts: dict[int, dict[str, str]] = {}
    for key, value in fields.items():
        if prompt_key := FORM_PROMPT_KEY.fullmatch(key):
            prompts.setdefault(int(prompt_key[1]), {})[prompt_key[2]] = value
        elif key == "extras":
            document[key] = load_json_object(value.encode(), location=("extras",), noun="the value")
        else:
            document[key] = value
    if prompts:
        # A plain `text_prompts` value, if any, stays and fails as a wrong type.
        document.setdefault("text_prompts", [prompts[index] for index in sorted(prompts)])
    return document
