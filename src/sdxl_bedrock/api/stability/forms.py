"""Reading a multipart/form-data body into its text fields and its images' exact bytes.

Stability's own examples send the images two ways: curl and Python's `requests` as files (a part with a
`filename`), its Go example (`CreateFormField("init_image")`) and its TypeScript example (`form-data`'s
`append('init_image', buffer)`) as plain parts without one. Starlette's parser decodes a part without a
filename as text (the image's bytes are lost) and caps it at 1 MB; so the body is parsed here with
python-multipart's `FormParser`, which hands over every part's raw bytes, and the parts named by
`image_names` are kept as bytes whichever way they came, up to the body limit (a text part stays under
Starlette's 1 MB).

The parsing itself, and its messages for broken bodies, are those of python-multipart and Starlette
(`Missing boundary in multipart.`, `Too many files. ...`, `Invalid multipart data.`).
"""

from __future__ import annotations

import codecs
from dataclasses import dataclass, field

from python_multipart import FormParser
from python_multipart.exceptions import FormParserError
from python_multipart.multipart import Field, File, parse_options_header

from sdxl_bedrock.config import BODY_LIMIT_BYTES

# Starlette's bound on a text part, kept for every part but the images.
MAX_TEXT_PART_BYTES = 1024 * 1024
# Starlette's words for a part without a name, which python-multipart words as its own FormParserError.
NAME_MISSING = 'The Content-Disposition header field "name" must be provided.'


class FormError(Exception):
    """The body is not a readable multipart form; `message` says why."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


@dataclass
class Form:
    """A form's parts by name; a repeated name keeps its last part."""

    fields: dict[str, str] = field(default_factory=dict)
    """Text parts, decoded by the body's charset (UTF-8 unless it names another; Latin-1 where that
    fails, as Starlette does)."""
    images: dict[str, bytes] = field(default_factory=dict)
    """The parts named in `image_names`, exact bytes, with or without a file name."""
    files: dict[str, bytes] = field(default_factory=dict)
    """Any other part sent with a file name."""


def read_multipart(
    content_type: str, body: bytes, *, image_names: frozenset[str], max_files: int, max_fields: int
) -> Form:
    """Parse a multipart/form-data `body` sent with `content_type`.

    At most `max_files` parts with a file name and `max_fields` without one (Starlette's counts), each
    under the body's own bound. Raises FormError.
    """
    _, options = parse_options_header(content_type)
    boundary = options.get(b"boundary")
    if boundary is None:
        raise FormError("Missing boundary in multipart.")
    charset = _charset(options.get(b"charset", b"utf-8"))
    form = Form()
    counts = {"files": 0, "fields": 0}

    def count(kind: str, limit: int) -> None:
        counts[kind] += 1
        if counts[kind] > limit:
            raise FormError(f"Too many {kind}. Maximum number of {kind} is {limit}.")

    def on_field(part: Field) -> None:
        count("fields", max_fields)
        name = _name(part.field_name, charset)
        value = part.value or b""
        if name in image_names:
            form.images[name] = value
        elif len(value) > MAX_TEXT_PART_BYTES:
            raise FormError(f"Part exceeded maximum size of {MAX_TEXT_PART_BYTES // 1024}KB.")
        else:
            form.fields[name] = _text(value, charset)

    def on_file(part: File) -> None:
        count("files", max_files)
        name = _name(part.field_name, charset)
        part.file_object.seek(0)
        data = part.file_object.read()
        part.close()
        (form.images if name in image_names else form.files)[name] = data

    # Every file in memory: the body is already read, under its limit.
    config = {"MAX_MEMORY_FILE_SIZE": BODY_LIMIT_BYTES + 1}
    try:
        parser = FormParser("multipart/form-data", on_field, on_file, boundary=boundary, config=config)
        parser.write(body)
        parser.finalize()
    except FormParserError as error:
        if str(error).startswith("Field name not found"):
            raise FormError(NAME_MISSING) from None
        raise FormError("Invalid multipart data.") from None
    return form


def _charset(declared: bytes) -> str:
    try:
        return codecs.lookup(declared.decode("latin-1")).name
    except LookupError:
        return "latin-1"


def _text(data: bytes, charset: str) -> str:
    try:
        return data.decode(charset)
    except UnicodeDecodeError:
        return data.decode("latin-1")


def _name(raw: bytes | None, charset: str) -> str:
    if raw is None:  # older python-multipart lets a part without a name through
        raise FormError(NAME_MISSING)
    return _text(raw, charset)
