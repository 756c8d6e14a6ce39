"""Image codecs for the wire: untrusted base64 in, PNG out. Pure functions, no torch."""

from __future__ import annotations

import base64
import binascii
import io
import struct
import zlib

import numpy as np
from PIL import Image, ImageOps

from sdxl_bedrock.errors import Location, MalformedBody, Problem, ProblemKind

ACCEPTED_FORMATS = ("PNG", "JPEG", "WEBP")
# Far above any size a face accepts, far below what would exhaust memory: the bound that makes a
# decompression bomb an error. Checked on the header, before any pixel is decoded.
MAX_DECODED_PIXELS = 4096 * 4096

_NOT_DECODABLE = "the image could not be decoded (only PNG, JPEG and WebP are accepted)"
DATA_URL = "expected bare base64, found a data URL; send only the base64 text after 'base64,'"


def _rejected(field: str | Location, reason: str) -> MalformedBody:
    location = (field,) if isinstance(field, str) else field
    return MalformedBody(Problem(location, reason, ProblemKind.MALFORMED), kind="invalid_image")


def decode_base64_image(value: str, field: str | Location) -> Image.Image:
    """Decode a base64 string (strict alphabet, padding required) into an image.

    Line breaks (CR, LF) anywhere are skipped, as MIME base64 writers (GNU `base64`, Java's MIME encoder)
    wrap lines at 76 characters; any other whitespace or character outside the alphabet is refused. A
    `data:` URL is refused with a message that says to send the base64 alone. `field` is where the value
    sits in the body (a key, or a path of keys), for the error. See `decode_image_bytes` for what comes
    back.
    """
    if value[:5].lower() == "data:":
        raise _rejected(field, DATA_URL)
    if "\n" in value or "\r" in value:
        # b64decode(validate=True) refuses line breaks; validate=False would also skip every other
        # character outside the alphabet, which must stay an error.
        value = value.replace("\r", "").replace("\n", "")
    try:
        data = base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        raise _rejected(field, "invalid base64 string") from None
    return decode_image_bytes(data, field)


def decode_image_bytes(data: bytes, field: str | Location) -> Image.Image:
    """Decode a PNG, JPEG or WebP file into an RGBA image when it carries transparency, else RGB.

    The EXIF orientation is applied, so the size returned is the size the picture is seen at.
    Animated images, truncated files and images over MAX_DECODED_PIXELS raise MalformedBody.
    """
    too_large = f"the image has more than {MAX_DECODED_PIXELS} pixels"
    try:
        image = Image.open(io.BytesIO(data), formats=ACCEPTED_FORMATS)
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        # Pillow's own, far higher limit, hit while reading the header.
        raise _rejected(field, too_large) from None
    except Exception:
        # Pillow's plugins raise a zoo of types on hostile input; all of them mean an unusable file.
        raise _rejected(field, _NOT_DECODABLE) from None
    with image:
        width, height = image.size
        if width * height > MAX_DECODED_PIXELS:
            raise _rejected(field, too_large)
        # An MPO (a camera JPEG with extra views) is not an animation: its first frame is the photo.
        if image.format != "MPO" and getattr(image, "is_animated", False):
            raise _rejected(field, "animated images are not accepted")
        try:
            image.load()
            upright = ImageOps.exif_transpose(image)
            return _to_rgb_or_rgba(upright)
        except Exception:
            raise _rejected(field, "the image data is truncated or corrupt") from None


def _to_rgb_or_rgba(image: Image.Image) -> Image.Image:
    if image.mode.startswith("I"):
        # 16-bit greyscale: converting straight to RGB would clip at 255 instead of scaling.
        levels = np.asarray(image, dtype=np.int32).clip(0, 65535) >> 8
        image = Image.fromarray(levels.astype(np.uint8), "L")
    return image.convert("RGBA" if image.has_transparency_data else "RGB")


_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_PNG_COLOR_TYPES = {"L": 0, "RGB": 2, "LA": 4, "RGBA": 6}
_PNG_FILTER_UP = 2


def encode_png(image: Image.Image) -> bytes:
    """Encode an image as an 8-bit PNG, fast.

    Pillow tries every filter on every row (about 50 ms for 1024x1024 RGB before any compression) and
    offers no choice of filter, so the rows are filtered here with the Up filter in one numpy operation
    and deflated with zlib's run-length strategy. Measured on a 2-vCPU Xeon for a photo-like 1024x1024
    RGB image: 25 ms against 95 ms for Pillow at compress_level=1, and a 12% smaller file.
    """
    if image.mode not in _PNG_COLOR_TYPES:
        image = image.convert("RGBA" if image.has_transparency_data else "RGB")
    rows = np.asarray(image, dtype=np.uint8).reshape(image.height, -1)
    scanlines = np.empty((image.height, rows.shape[1] + 1), dtype=np.uint8)
    scanlines[:, 0] = _PNG_FILTER_UP
    scanlines[:1, 1:] = rows[:1]
    np.subtract(rows[1:], rows[:-1], out=scanlines[1:, 1:])  # uint8 wraps modulo 256, as PNG wants
    compressor = zlib.compressobj(1, zlib.DEFLATED, 15, 9, zlib.Z_RLE)
    pixel_data = compressor.compress(scanlines.data) + compressor.flush()
    header = struct.pack(">IIBBBBB", image.width, image.height, 8, _PNG_COLOR_TYPES[image.mode], 0, 0, 0)
    chunks = (_png_chunk(b"IHDR", header), _png_chunk(b"IDAT", pixel_data), _png_chunk(b"IEND", b""))
    return _PNG_SIGNATURE + b"".join(chunks)


def _png_chunk(kind: bytes, payload: bytes) -> bytes:
    checksum = zlib.crc32(payload, zlib.crc32(kind))
    return b"".join((struct.pack(">I", len(payload)), kind, payload, struct.pack(">I", checksum)))


def with_png_text(png: bytes, key: str, text: str) -> bytes:
    """`png` with a text chunk after its header, as Pillow's PngInfo.add_text writes one: tEXt when the
    text is Latin-1, else iTXt (UTF-8, uncompressed). The pixels are not encoded again."""
    header_end = len(_PNG_SIGNATURE) + 8 + struct.unpack(">I", png[8:12])[0] + 4
    name = key.encode("latin-1")
    try:
        chunk = _png_chunk(b"tEXt", name + b"\0" + text.encode("latin-1"))
    except UnicodeEncodeError:
        chunk = _png_chunk(b"iTXt", name + b"\0\0\0\0\0" + text.encode("utf-8"))
    return png[:header_end] + chunk + png[header_end:]


def png_to_base64(png: bytes) -> str:
    return base64.b64encode(png).decode("ascii")


# Pillow's names for the formats an answer may be asked for besides PNG.
_OUTPUT_FORMATS = {"jpeg": "JPEG", "webp": "WEBP"}


def reencoded(
    png: bytes, output_format: str, *, quality: int = 90, size: tuple[int, int] | None = None
) -> bytes:
    """A PNG artifact as `output_format` (png, jpeg or webp), resized (Lanczos) to `size` when given: the
    PNG itself when neither changes anything."""
    if output_format == "png" and size is None:
        return png
    with Image.open(io.BytesIO(png)) as image:
        picture = image.convert("RGB")
    if size is not None and picture.size != size:
        picture = picture.resize(size, Image.Resampling.LANCZOS)
    if output_format == "png":
        return encode_png(picture)
    buffer = io.BytesIO()
    picture.save(buffer, _OUTPUT_FORMATS[output_format], quality=quality)
    return buffer.getvalue()
