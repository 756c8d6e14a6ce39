"""save_images' files, as modules/images.py (save_image, get_next_sequence_number, image_grid) of A1111
names and lays them out with its default settings, at AUTOMATIC1111/stable-diffusion-webui
08c3caec1eb2b1aaebf045e691c7465d4161476c."""

from __future__ import annotations

import io
from pathlib import Path

from PIL import Image

from sdxl_bedrock.api.a1111.saving import grid, next_number, save_images
from sdxl_bedrock.codecs import encode_png, with_png_text


def png(color: tuple[int, int, int], size: tuple[int, int] = (8, 8)) -> bytes:
    return encode_png(Image.new("RGB", size, color))


def parameters(path: Path) -> object:
    with Image.open(path) as image:
        return image.info["parameters"]


def test_images_and_their_grid_are_numbered_in_dated_folders(tmp_path: Path) -> None:
    saved = save_images(tmp_path, "txt2img", [png((255, 0, 0)), png((0, 0, 255))], [7, 8], ["one", "two"])
    images, grids = saved[:2], saved[2:]
    assert [name.rsplit("/", 1)[1] for name in images] == ["00000-7.png", "00001-8.png"]
    assert [name.rsplit("/", 1)[1] for name in grids] == ["grid-0000.png"]
    assert images[0].split("/")[0] == "txt2img-images" and grids[0].split("/")[0] == "txt2img-grids"
    assert parameters(tmp_path / images[1]) == "two" and parameters(tmp_path / grids[0]) == "one"
    (again,) = save_images(tmp_path, "txt2img", [png((0, 255, 0))], [9], ["three"])
    assert again.endswith("/00002-9.png"), "one more than the highest number in the folder"
    assert not list(tmp_path.rglob("*.tmp"))


def test_the_next_number_reads_the_leading_number(tmp_path: Path) -> None:
    for name in ("00003-1.png", "00010-2.png", "notes.txt", "grid-0004.png"):
        (tmp_path / name).write_bytes(b"")
    assert next_number(tmp_path, "") == 11
    assert next_number(tmp_path, "grid") == 5


def test_the_grid_has_round_sqrt_rows() -> None:
    three = grid([png((255, 0, 0)), png((0, 255, 0)), png((0, 0, 255))])
    assert three.size == (16, 16), "2 rows of 2 columns"
    assert three.getpixel((12, 12)) == (255, 255, 255)
    assert grid([png((1, 2, 3))] * 5).size == (24, 16)


def test_a_text_chunk_goes_in_without_encoding_the_pixels_again() -> None:
    plain = png((10, 20, 30))
    tagged = with_png_text(plain, "parameters", "a cat\nSteps: 20")
    image = Image.open(io.BytesIO(tagged))
    assert image.info == {"parameters": "a cat\nSteps: 20"}
    assert image.tobytes() == Image.open(io.BytesIO(plain)).tobytes()
