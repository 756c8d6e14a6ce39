"""The image codecs: hostile or odd files in, a clean RGB/RGBA image or MalformedBody out; fast PNG out."""

from __future__ import annotations

import base64
import io
import struct
import zlib
from typing import Any

import numpy as np
import pytest
from PIL import Image

from sdxl_bedrock.codecs import (
    MAX_DECODED_PIXELS,
    decode_base64_image,
    decode_image_bytes,
    encode_png,
    png_to_base64,
)
from sdxl_bedrock.errors import MalformedBody

NOT_DECODABLE = "#/init_image: the image could not be decoded (only PNG, JPEG and WebP are accepted)"


def encoded(image: Image.Image, image_format: str, **options: object) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=image_format, **options)
    return buffer.getvalue()


def as_base64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def noise(width: int, height: int, mode: str = "RGB", seed: int = 0) -> Image.Image:
    channels = len(mode)
    pixels = np.random.default_rng(seed).integers(0, 256, (height, width, channels), dtype=np.uint8)
    return Image.fromarray(pixels.squeeze(-1) if channels == 1 else pixels, mode)


def png_header_only(width: int, height: int) -> bytes:
    """A PNG that claims a size in its header and holds no pixel data at all."""

    def chunk(kind: bytes, payload: bytes) -> bytes:
        return (
            struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", zlib.crc32(kind + payload))
        )

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IEND", b"")


def pixel(image: Image.Image, x: int, y: int) -> tuple[int, ...]:
    value = image.getpixel((x, y))
    assert isinstance(value, tuple)
    return value


def decode_error(data: bytes, field: str = "init_image") -> MalformedBody:
    with pytest.raises(MalformedBody) as caught:
        decode_image_bytes(data, field)
    return caught.value


# ---- base64 ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "value",
    [
        "abc",  # missing padding
        "aGVsbG8",  # missing padding of a real word
        " aGVsbG8=",  # whitespace other than a line break is not in the alphabet
        "aGVs bG8=",
        "aGVs\tbG8=",
        "aGVs\x0bbG8=",  # vertical tab
        "aGVs\x0cbG8=",  # form feed
        "aGVs\u2028bG8=",  # a Unicode line separator is no CR or LF
        "aGVs*G8=",
        "aGVsbG8=é",  # non-ASCII
        "aGVs\nbG8",  # a line break does not excuse missing padding
    ],
)
def test_invalid_base64_is_rejected_naming_the_field(value: str) -> None:
    with pytest.raises(MalformedBody) as caught:
        decode_base64_image(value, "mask_image")
    assert caught.value.message == "#/mask_image: invalid base64 string"
    assert caught.value.field == "mask_image"
    assert caught.value.kind == "invalid_image"


def test_valid_base64_png_decodes() -> None:
    image = decode_base64_image(as_base64(encoded(noise(16, 8), "PNG")), "init_image")
    assert (image.mode, image.size) == ("RGB", (16, 8))


def wrapped(text: str, width: int, newline: str) -> str:
    return newline.join(text[start : start + width] for start in range(0, len(text), width))


@pytest.mark.parametrize(
    "wrap",
    [
        lambda text: wrapped(text, 76, "\n") + "\n",  # GNU base64: LF every 76, and a final one
        lambda text: wrapped(text, 76, "\r\n"),  # Java's MIME encoder and RFC 2045: CRLF every 76
        lambda text: wrapped(text, 64, "\n"),  # PEM and OpenSSL's `base64`
        lambda text: wrapped(text, 1, "\r"),  # any CR or LF anywhere
        lambda text: "\r\n" + text + "\n\n",
    ],
    ids=["gnu-76-lf", "mime-76-crlf", "pem-64-lf", "cr-everywhere", "leading-and-trailing"],
)
def test_base64_with_line_breaks_decodes_to_the_same_image(wrap: Any) -> None:
    text = as_base64(encoded(noise(16, 8), "PNG"))
    assert len(text) > 76
    plain = decode_base64_image(text, "init_image")
    image = decode_base64_image(wrap(text), "init_image")
    assert np.array_equal(np.asarray(image), np.asarray(plain))


@pytest.mark.parametrize(
    "value",
    [
        "data:image/png;base64,iVBORw0KGgo=",
        "DATA:image/png;base64,iVBORw0KGgo=",
        "data:,hello",
        "data:image/jpeg;base64,\n/9j/4AAQ",
    ],
)
def test_a_data_url_is_told_to_send_the_bare_base64(value: str) -> None:
    with pytest.raises(MalformedBody) as caught:
        decode_base64_image(value, "init_image")
    assert caught.value.message == (
        "#/init_image: expected bare base64, found a data URL; send only the base64 text after 'base64,'"
    )
    assert (caught.value.field, caught.value.kind) == ("init_image", "invalid_image")


# ---- what is not an acceptable image ---------------------------------------------------------------------


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"hello, world",
        b"\x89PNG\r\n\x1a\n",  # a signature and nothing else
        encoded(noise(8, 8), "GIF"),
        encoded(noise(8, 8), "BMP"),
        encoded(noise(8, 8), "TIFF"),
    ],
    ids=["empty", "text", "bare-png-signature", "gif", "bmp", "tiff"],
)
def test_non_images_and_other_formats_are_rejected(data: bytes) -> None:
    error = decode_error(data)
    assert error.message == NOT_DECODABLE
    assert (error.field, error.kind) == ("init_image", "invalid_image")


@pytest.mark.parametrize("image_format", ["PNG", "JPEG", "WEBP"])
def test_truncated_files_are_rejected(image_format: str) -> None:
    whole = encoded(noise(128, 128), image_format)
    error = decode_error(whole[: len(whole) // 2])
    assert error.message in {"#/init_image: the image data is truncated or corrupt", NOT_DECODABLE}


def test_truncated_png_names_the_truncation() -> None:
    whole = encoded(noise(128, 128), "PNG")
    assert (
        decode_error(whole[: len(whole) // 2]).message
        == "#/init_image: the image data is truncated or corrupt"
    )


@pytest.mark.parametrize("image_format", ["PNG", "WEBP"])
def test_animated_images_are_rejected(image_format: str) -> None:
    frames = [noise(16, 16, seed=seed) for seed in range(3)]
    data = encoded(frames[0], image_format, save_all=True, append_images=frames[1:])
    assert decode_error(data).message == "#/init_image: animated images are not accepted"


def test_a_multi_picture_jpeg_is_a_photo_not_an_animation() -> None:
    frames = [noise(16, 16, seed=seed) for seed in range(2)]
    data = encoded(frames[0], "MPO", save_all=True, append_images=frames[1:])
    image = decode_image_bytes(data, "init_image")
    assert (image.mode, image.size) == ("RGB", (16, 16))


@pytest.mark.parametrize(
    ("width", "height"),
    [(100_000, 100_000), (5000, 5000), (4097, 4096), (65535, 257)],
    ids=["beyond-pillows-own-limit", "25-megapixels", "one-column-too-many", "long-and-thin"],
)
def test_oversized_headers_are_rejected_before_decoding(width: int, height: int) -> None:
    # The file has no pixel data: only a check on the header can answer without an error about it.
    error = decode_error(png_header_only(width, height))
    assert error.message == "#/init_image: the image has more than 16777216 pixels"


def test_the_largest_accepted_size_is_exactly_the_limit() -> None:
    assert MAX_DECODED_PIXELS == 4096 * 4096
    error = decode_error(png_header_only(4096, 4096))
    # Within the limit, so decoding is attempted and finds no pixel data.
    assert error.message == "#/init_image: the image data is truncated or corrupt"


# ---- what comes back -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("source", "image_format", "expected_mode"),
    [
        (noise(8, 8, "RGB"), "PNG", "RGB"),
        (noise(8, 8, "RGB"), "JPEG", "RGB"),
        (noise(8, 8, "RGB"), "WEBP", "RGB"),
        (noise(8, 8, "RGBA"), "PNG", "RGBA"),
        (noise(8, 8, "RGBA"), "WEBP", "RGBA"),
        (noise(8, 8, "L"), "PNG", "RGB"),
        (noise(8, 8, "L"), "JPEG", "RGB"),
        (noise(8, 8, "LA"), "PNG", "RGBA"),
        (noise(8, 8, "CMYK"), "JPEG", "RGB"),
        (noise(8, 8, "RGB").convert("1"), "PNG", "RGB"),
        (noise(8, 8, "RGB").quantize(16), "PNG", "RGB"),
    ],
    ids=[
        "rgb-png",
        "rgb-jpeg",
        "rgb-webp",
        "rgba-png",
        "rgba-webp",
        "grey-png",
        "grey-jpeg",
        "grey-alpha-png",
        "cmyk-jpeg",
        "bilevel-png",
        "palette-png",
    ],
)
def test_every_colour_layout_comes_back_as_rgb_or_rgba(
    source: Image.Image, image_format: str, expected_mode: str
) -> None:
    options = {"lossless": True} if image_format == "WEBP" else {}
    image = decode_image_bytes(encoded(source, image_format, **options), "init_image")
    assert (image.mode, image.size) == (expected_mode, (8, 8))


def test_lossless_rgba_pixels_survive() -> None:
    source = noise(8, 8, "RGBA")
    assert np.array_equal(
        np.asarray(decode_image_bytes(encoded(source, "PNG"), "init_image")), np.asarray(source)
    )


def test_cmyk_jpeg_colours_are_converted() -> None:
    cyan = Image.new("CMYK", (16, 16), (255, 0, 0, 0))
    red, green, blue = pixel(decode_image_bytes(encoded(cyan, "JPEG", quality=100), "init_image"), 8, 8)
    assert red < 10 and green > 245 and blue > 245


def test_palette_transparency_becomes_alpha() -> None:
    palette = Image.new("P", (4, 4), 1)
    palette.putpalette([255, 0, 0, 0, 0, 255] + [0] * 762)
    palette.putpixel((0, 0), 0)
    image = decode_image_bytes(encoded(palette, "PNG", transparency=0), "init_image")
    assert image.mode == "RGBA"
    assert image.getpixel((0, 0)) == (255, 0, 0, 0)
    assert image.getpixel((1, 1)) == (0, 0, 255, 255)


def test_a_transparent_colour_key_becomes_alpha() -> None:
    source = Image.new("RGB", (4, 4), (10, 20, 30))
    source.putpixel((3, 3), (200, 200, 200))
    image = decode_image_bytes(encoded(source, "PNG", transparency=(10, 20, 30)), "init_image")
    assert image.mode == "RGBA"
    assert pixel(image, 0, 0)[3] == 0
    assert image.getpixel((3, 3)) == (200, 200, 200, 255)


def test_16_bit_greyscale_is_scaled_not_clipped() -> None:
    levels = np.array([[0, 255, 32768, 65535]], dtype=np.uint16)
    source = Image.fromarray(levels)
    assert source.mode == "I;16"
    image = decode_image_bytes(encoded(source, "PNG"), "init_image")
    assert image.mode == "RGB"
    assert [image.getpixel((x, 0)) for x in range(4)] == [
        (0, 0, 0),
        (0, 0, 0),
        (128, 128, 128),
        (255, 255, 255),
    ]


@pytest.mark.parametrize("image_format", ["JPEG", "PNG", "WEBP"])
def test_exif_orientation_is_applied(image_format: str) -> None:
    # Stored 64 wide and 32 tall with a red left half; orientation 6 says "turn 90 degrees clockwise to view".
    stored = Image.new("RGB", (64, 32), (0, 0, 255))
    stored.paste((255, 0, 0), (0, 0, 32, 32))
    exif = Image.Exif()
    exif[0x0112] = 6
    image = decode_image_bytes(encoded(stored, image_format, exif=exif, quality=95), "init_image")
    assert image.size == (32, 64)
    top_red, _, top_blue = pixel(image, 16, 8)
    bottom_red, _, bottom_blue = pixel(image, 16, 56)
    assert top_red > 200 and top_blue < 50
    assert bottom_blue > 200 and bottom_red < 50


# ---- PNG out ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("mode", "size"),
    [
        ("RGB", (64, 48)),
        ("RGBA", (64, 48)),
        ("L", (33, 17)),
        ("LA", (5, 9)),
        ("RGB", (1, 1)),
        ("RGB", (7, 1)),
    ],
)
def test_encode_png_round_trips_exactly(mode: str, size: tuple[int, int]) -> None:
    source = noise(*size, mode)
    png = encode_png(source)
    decoded = Image.open(io.BytesIO(png))
    assert decoded.format == "PNG"
    assert (decoded.mode, decoded.size) == (mode, size)
    assert np.array_equal(np.asarray(decoded), np.asarray(source))


def test_encode_png_is_a_well_formed_file() -> None:
    png = encode_png(noise(32, 32))
    Image.open(io.BytesIO(png)).verify()  # checks every chunk's CRC
    assert png.endswith(b"IEND\xaeB`\x82")


@pytest.mark.parametrize(
    ("mode", "expected_mode"), [("P", "RGB"), ("1", "RGB"), ("CMYK", "RGB"), ("PA", "RGBA")]
)
def test_encode_png_converts_other_modes(mode: str, expected_mode: str) -> None:
    source = (
        noise(8, 8, "RGB").convert("RGBA").convert(mode) if mode == "PA" else noise(8, 8, "RGB").convert(mode)
    )
    decoded = Image.open(io.BytesIO(encode_png(source)))
    assert decoded.mode == expected_mode
    assert np.array_equal(np.asarray(decoded), np.asarray(source.convert(expected_mode)))


def test_flat_images_compress_well() -> None:
    assert len(encode_png(Image.new("RGB", (1024, 1024), (77, 88, 99)))) < 16 * 1024


def test_png_to_base64_round_trips() -> None:
    png = encode_png(noise(4, 4))
    text = png_to_base64(png)
    assert isinstance(text, str)
    assert base64.b64decode(text, validate=True) == png
    assert decode_base64_image(text, "init_image").size == (4, 4)
