"""Reading Stability's multipart forms: the images' exact bytes with or without a file name, text fields as
Starlette decodes them, and Starlette's words for broken bodies. Bodies are encoded by httpx and requests."""

from __future__ import annotations

import os
from typing import Any

import httpx
import pytest
import requests

from sdxl_bedrock.api.forms import NAME_MISSING, Form, FormError, read_multipart
from sdxl_bedrock.config import BODY_LIMIT_BYTES

IMAGES = frozenset({"init_image", "mask_image"})
# Every byte value, and sequences that are not UTF-8: a text decoding would lose them.
BINARY = bytes(range(256)) * 4 + b"\xff\xfe\xc3\x28\r\n--"


def encoded(data: dict[str, str], files: dict[str, Any]) -> tuple[str, bytes]:
    """(content type, body) as httpx encodes the form; `(None, bytes)` is a part without a file name."""
    request = httpx.Request("POST", "http://server/", data=data, files=files)
    return request.headers["content-type"], request.read()


def read(content_type: str, body: bytes, *, max_files: int = 4, max_fields: int = 100) -> Form:
    return read_multipart(content_type, body, binary_names=IMAGES, max_files=max_files, max_fields=max_fields)


def refusal(content_type: str, body: bytes, **limits: int) -> str:
    with pytest.raises(FormError) as caught:
        read(content_type, body, **limits)
    return caught.value.message


@pytest.mark.parametrize("size", [len(BINARY), 3_000_000], ids=["small", "3MB"])
@pytest.mark.parametrize("file_name", [None, "init.png"], ids=["plain-field", "file"])
def test_an_image_part_arrives_as_its_exact_bytes(size: int, file_name: str | None) -> None:
    image = (BINARY * (size // len(BINARY) + 1))[:size]
    form = read(*encoded({"steps": "10"}, {"init_image": (file_name, image)}))
    assert form.files == {"init_image": [image]}
    assert form.fields == {"steps": ["10"]}


def test_both_images_and_text_fields_as_requests_encodes_them() -> None:
    """requests, as Stability's Python example uses it: the files with names, here also without."""
    prepared = requests.Request(
        "POST",
        "http://server/",
        data={"text_prompts[0][text]": "a lighthouse, é", "mask_source": "MASK_IMAGE_WHITE"},
        files={"init_image": ("init.png", BINARY), "mask_image": (None, BINARY[::-1])},
    ).prepare()
    assert isinstance(prepared.body, bytes)
    form = read(prepared.headers["Content-Type"], prepared.body)
    assert form.last_files() == {"init_image": BINARY, "mask_image": BINARY[::-1]}
    assert form.last_fields() == {
        "text_prompts[0][text]": "a lighthouse, é",
        "mask_source": "MASK_IMAGE_WHITE",
    }


def test_an_image_part_may_be_as_large_as_the_body_limit() -> None:
    image = os.urandom(2_000_000) * 6  # 12 MB: far above Starlette's 1 MB for a part without a file name
    form = read(*encoded({}, {"init_image": (None, image)}))
    assert form.files["init_image"] == [image]
    assert len(image) < BODY_LIMIT_BYTES


def test_any_other_file_is_kept_apart_for_the_form_to_refuse() -> None:
    form = read(*encoded({}, {"init_image": (None, b"x"), "other": ("other.png", b"y")}))
    assert form.files == {"init_image": [b"x"], "other": [b"y"]}


def test_a_repeated_name_keeps_every_part_in_order() -> None:
    content_type, body = encoded({}, {"init_image": (None, b"x")})
    boundary = content_type.split("boundary=")[1]
    part = f'--{boundary}\r\nContent-Disposition: form-data; name="init_image"\r\n\r\nsecond\r\n'.encode()
    form = read(content_type, part + body.replace(b"\r\nx\r\n", b"\r\nlast\r\n"))
    assert form.files == {"init_image": [b"second", b"last"]}
    assert form.last_files() == {"init_image": b"last"}


def test_text_fields_are_decoded_by_the_declared_charset() -> None:
    boundary = "b0undary"
    body = (
        f'--{boundary}\r\nContent-Disposition: form-data; name="text_prompts[0][text]"\r\n\r\n'.encode()
        + "café".encode("latin-1")
        + f"\r\n--{boundary}--\r\n".encode()
    )
    latin = read(f"multipart/form-data; boundary={boundary}; charset=latin-1", body)
    assert latin.last_fields() == {"text_prompts[0][text]": "café"}
    # Not UTF-8 under the default charset: read as Latin-1, as Starlette does, rather than refused.
    utf8 = read(f"multipart/form-data; boundary={boundary}", body)
    assert utf8.last_fields() == {"text_prompts[0][text]": "café"}


@pytest.mark.parametrize(
    ("content_type", "body", "limits", "message"),
    [
        ("multipart/form-data", b"", {}, "Missing boundary in multipart."),
        ("multipart/form-data; boundary=xyz", b"garbage", {}, "Invalid multipart data."),
        (
            "multipart/form-data; boundary=xyz",
            b'--xyz\r\nContent-Disposition: form-data; filename="a.png"\r\n\r\nabc\r\n--xyz--\r\n',
            {},
            NAME_MISSING,
        ),
        (
            *encoded({}, {name: (f"{name}.png", b"x") for name in ("a", "b", "c")}),
            {"max_files": 2},
            "Too many files. Maximum number of files is 2.",
        ),
        (
            *encoded({}, {name: (None, b"1") for name in ("a", "b", "c")}),
            {"max_fields": 2},
            "Too many fields. Maximum number of fields is 2.",
        ),
        (
            *encoded({}, {"text_prompts[0][text]": (None, b"a" * (1024 * 1024 + 1))}),
            {},
            "Part exceeded maximum size of 1024KB.",
        ),
    ],
    ids=["no-boundary", "garbage", "no-name", "too-many-files", "too-many-fields", "text-over-1MB"],
)
def test_broken_bodies_are_refused_in_starlettes_words(
    content_type: str, body: bytes, limits: dict[str, int], message: str
) -> None:
    assert refusal(content_type, body, **limits) == message


def test_images_without_a_file_name_count_as_fields() -> None:
    content_type, body = encoded({}, {"init_image": (None, b"x"), "mask_image": (None, b"y")})
    assert refusal(content_type, body, max_fields=1) == "Too many fields. Maximum number of fields is 1."
    assert read(content_type, body, max_files=0).last_files() == {"init_image": b"x", "mask_image": b"y"}
