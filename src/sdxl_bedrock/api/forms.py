"""The one multipart/form-data reader of every wire (Stability's forms, OpenAI's edits and variations): every
part kept, repeated names included, text parts decoded and binary parts as exact bytes.

Clients send an image two ways: curl and Python's `requests` as files (a part with a `filename`), Stability's
Go example (`CreateFormField("init_image")`) and its TypeScript example (`form-data`'s `append('init_image',
buffer)`) as plain parts without one. Starlette's parser decodes a part without a filename as text (the
image's bytes are lost) and caps it at 1 MB; so the body is parsed here with python-multipart's `FormParser`,
which hands over every part's raw bytes, and the parts named in `binary_names` are kept as bytes whichever
way they came, up to the body limit (a text part stays under Starlette's 1 MB). OpenAI's clients repeat a
name for several images (`image[]`, or `image` twice), so no part is dropped: each name maps to all its
parts, in the body's order.

The parsing itself, and its messages for broken bodies, are those of python-multipart and Starlette
(`Missing boundary in multipart.`, `Too many files. ...`, `Invalid multipart data.`), which the wires quote.
"""

from __future__ import annotations

import codecs
from dataclasses import dataclass, field

from python_multipart import FormParser
from python_multipart.exceptions import FormParserError
from python_multipart.multipart import Field, File, parse_options_header
from starlette.requests import Request

from sdxl_bedrock.api.body import read_body
from sdxl_bedrock.api.validation import malformed, shown
from sdxl_bedrock.config import BODY_LIMIT_BYTES
from sdxl_bedrock.errors import ProblemKind
from sdxl_bedrock.runtime import Runtime

# Starlette's bound on a text part, kept for every part but the binary ones.
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
    """A form's parts by name, each name with all its parts in the body's order."""

    fields: dict[str, list[str]] = field(default_factory=dict)
    """Text parts: without a file name and not named in `binary_names`; decoded by the body's charset
    (UTF-8 unless it names another; Latin-1 where that fails, as Starlette does)."""
    files: dict[str, list[bytes]] = field(default_factory=dict)
    """Parts sent with a file name, and the parts named in `binary_names` however they came: exact bytes."""

    def last_fields(self) -> dict[str, str]:
        """Each text field's last value (a repeated text field keeps its last, as Starlette's form does)."""
        return {name: values[-1] for name, values in self.fields.items()}

    def last_files(self) -> dict[str, bytes]:
        """Each file's last part."""
        return {name: parts[-1] for name, parts in self.files.items()}


def read_multipart(
    content_type: str, body: bytes, *, binary_names: frozenset[str], max_files: int, max_fields: int
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
        if name in binary_names:
            form.files.setdefault(name, []).append(value)
        elif len(value) > MAX_TEXT_PART_BYTES:
            raise FormError(f"Part exceeded maximum size of {MAX_TEXT_PART_BYTES // 1024}KB.")
        else:
            form.fields.setdefault(name, []).append(_text(value, charset))

    def on_file(part: File) -> None:
        count("files", max_files)
        name = _name(part.field_name, charset)
        part.file_object.seek(0)
        data = part.file_object.read()
        part.close()
        form.files.setdefault(name, []).append(data)

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


async def read_form(
    request: Request,
    runtime: Runtime,
    *,
    binary_names: frozenset[str] = frozenset(),
    max_files: int,
    max_fields: int,
) -> Form:
    """The parts of a request's multipart/form-data body, read under the body limit and parsed on a host
    thread (a 25 MB form must not hold the event loop). Raises MalformedBody (the wire words it) for
    another content type or a body that is no readable form."""
    content_type = request.headers.get("content-type", "")
    if content_type.split(";", 1)[0].strip().lower() != "multipart/form-data":
        raise malformed(
            (),
            f"expected a multipart/form-data body, found {shown(content_type or 'no content type')}",
            kind=ProblemKind.MALFORMED,
        )
    raw = await read_body(request)
    try:
        return await runtime.workers.on_host(
            read_multipart,
            content_type,
            raw,
            binary_names=binary_names,
            max_files=max_files,
            max_fields=max_fields,
        )
    except FormError as error:
        raise malformed(
            (), f"the multipart body could not be read: {error.message}", kind=ProblemKind.MALFORMED
        ) from None


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
