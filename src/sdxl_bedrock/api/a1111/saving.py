"""`save_images`: the images written as A1111 writes them with its default settings, under `--outputs-dir`
(A1111's `outputs/`).

From modules/images.py (save_image, get_next_sequence_number, image_grid) and processing.py
(process_images) of A1111:

- each image at `{job}-images/YYYY-MM-DD/NNNNN-SEED.png` (`save_to_dirs` with the `[date]` pattern; the
  number is one more than the highest in that folder, five digits), its infotext in the PNG's `parameters`
  text chunk (`enable_pnginfo`);
- a request of several images also writes their grid at `{job}-grids/YYYY-MM-DD/grid-NNNN.png`:
  round(sqrt(n)) rows, as many columns as fill them, the first image's infotext (`grid_save` with
  `grid_only_if_multiple`);
- a request stopped by interrupt or skip saves nothing (`save_incomplete_images` off).

Requests run side by side here, so a lock keeps two of them from taking the same number.
"""

from __future__ import annotations

import io
import math
import os
import threading
from collections.abc import Sequence
from datetime import datetime
from pathlib import Path

from PIL import Image

from sdxl_bedrock.codecs import encode_png, with_png_text

_NUMBERING = threading.Lock()


def save_images(
    outputs_dir: Path, job: str, pngs: Sequence[bytes], seeds: Sequence[int], infotexts: Sequence[str]
) -> list[str]:
    """Writes the images (and their grid, for several), each with its infotext; returns their paths
    relative to `outputs_dir`, the images' first. Host work."""
    date = datetime.now().strftime("%Y-%m-%d")
    saved = []
    with _NUMBERING:
        folder = outputs_dir / f"{job}-images" / date
        folder.mkdir(parents=True, exist_ok=True)
        for png, seed, infotext in zip(pngs, seeds, infotexts, strict=True):
            name = f"{next_number(folder, ''):05}-{seed}.png"
            write(folder / name, with_png_text(png, "parameters", infotext))
            saved.append(f"{job}-images/{date}/{name}")
        if len(pngs) > 1:
            folder = outputs_dir / f"{job}-grids" / date
            folder.mkdir(parents=True, exist_ok=True)
            name = f"grid-{next_number(folder, 'grid'):04}.png"
            write(folder / name, with_png_text(encode_png(grid(pngs)), "parameters", infotexts[0]))
            saved.append(f"{job}-grids/{date}/{name}")
    return saved


def next_number(folder: Path, basename: str) -> int:
    """A1111's get_next_sequence_number: one more than the highest number leading a file's name."""
    prefix = f"{basename}-" if basename else ""
    highest = -1
    for entry in os.listdir(folder):
        if entry.startswith(prefix):
            first = os.path.splitext(entry[len(prefix) :])[0].split("-")[0]
            if first.isdigit():
                highest = max(highest, int(first))
    return highest + 1


def write(path: Path, data: bytes) -> None:
    """Under a temporary name first, as A1111 does, so that a folder watcher never reads half a file."""
    temporary = path.with_suffix(".tmp")
    temporary.write_bytes(data)
    os.replace(temporary, path)


def grid(pngs: Sequence[bytes]) -> Image.Image:
    """A1111's image_grid with its defaults (n_rows -1): round(sqrt(n)) rows, white where a row is short
    (grid_background_color)."""
    images = [Image.open(io.BytesIO(png)).convert("RGB") for png in pngs]
    rows = min(round(math.sqrt(len(images))), len(images))
    columns = math.ceil(len(images) / rows)
    width, height = (max(sides) for sides in zip(*(image.size for image in images), strict=True))
    canvas = Image.new("RGB", (columns * width, rows * height), "#ffffff")
    for index, image in enumerate(images):
        left = (width - image.width) // 2
        top = (height - image.height) // 2
        canvas.paste(image, (index % columns * width + left, index // columns * height + top))
    return canvas
