"""A1111's img2img pixel work, on the host (PIL, numpy, scipy; no torch): resize modes, the inpainting mask,
"fill", "inpaint only masked" and the final overlay. Each follows modules/images.py, masking.py and
processing.py (StableDiffusionProcessingImg2Img.init, apply_overlay) of A1111.

- `resize_image`: 0 "Just resize" (stretch), 1 "Crop and resize" (fill the size, crop the excess, centred),
  2 "Resize and fill" (fit inside, centred, the borders filled by stretching the image's edge rows or
  columns), all with Lanczos (A1111's default when no upscaler is set). Mode 3, "Just resize (latent
  upscale)", is no pixel operation: the engine resizes the init image's latents.
- the mask: an RGBA mask's alpha if it has any transparency, else its grey level, binarised at 128 (A1111's
  `mask_round`), optionally inverted, then blurred by a Gaussian of `mask_blur_x` / `mask_blur_y` standard
  deviation (OpenCV's kernel size 2 * int(2.5 * sigma + 0.5) + 1, mirrored borders).
- "fill" (inpainting_fill 0): the masked area painted with ever finer blurs of the unmasked pixels.
- "only masked" (inpaint_full_res): the mask's bounding box, padded, widened to the output's aspect ratio;
  that region of image and mask is scaled to the output size, generated, scaled back and pasted in place.
- the overlay: the init image composited over the result through the blurred mask (A1111's
  `overlay_inpaint`), so only the masked area changes.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageFilter, ImageOps
from scipy.ndimage import gaussian_filter1d

BACKGROUND = "#ffffff"  # A1111's img2img_background_color, behind a transparent init image
LANCZOS = Image.Resampling.LANCZOS


def flatten(image: Image.Image, background: str = BACKGROUND) -> Image.Image:
    """An RGBA image on `background`, as RGB; other modes converted to RGB."""
    if image.mode == "RGBA":
        canvas = Image.new("RGBA", image.size, background)
        canvas.paste(image, mask=image)
        image = canvas
    return image.convert("RGB")


def resize_image(resize_mode: int, image: Image.Image, width: int, height: int) -> Image.Image:
    """A1111's images.resize_image for modes 0, 1 and 2 (any other mode resizes as 2 does, as A1111's)."""
    if resize_mode == 0:
        return image.resize((width, height), resample=LANCZOS)
    ratio, source_ratio = width / height, image.width / image.height
    canvas = Image.new(image.mode, (width, height))
    if resize_mode == 1:
        source_width = width if ratio > source_ratio else image.width * height // image.height
        source_height = height if ratio <= source_ratio else image.height * width // image.width
        resized = image.resize((source_width, source_height), resample=LANCZOS)
        canvas.paste(resized, box=(width // 2 - source_width // 2, height // 2 - source_height // 2))
        return canvas
    source_width = width if ratio < source_ratio else image.width * height // image.height
    source_height = height if ratio >= source_ratio else image.height * width // image.width
    resized = image.resize((source_width, source_height), resample=LANCZOS)
    canvas.paste(resized, box=(width // 2 - source_width // 2, height // 2 - source_height // 2))
    if ratio < source_ratio:
        fill_height = height // 2 - source_height // 2
        if fill_height > 0:
            top = resized.resize((width, fill_height), box=(0, 0, width, 0))
            bottom = resized.resize((width, fill_height), box=(0, resized.height, width, resized.height))
            canvas.paste(top, box=(0, 0))
            canvas.paste(bottom, box=(0, fill_height + source_height))
    elif ratio > source_ratio:
        fill_width = width // 2 - source_width // 2
        if fill_width > 0:
            left = resized.resize((fill_width, height), box=(0, 0, 0, height))
            right = resized.resize((fill_width, height), box=(resized.width, 0, resized.width, height))
            canvas.paste(left, box=(0, 0))
            canvas.paste(right, box=(fill_width + source_width, 0))
    return canvas


def binary_mask(mask: Image.Image) -> Image.Image:
    """A1111's create_binary_mask (round=True): the alpha of a mask with transparency, else its grey
    level; "L", 255 where the pixel is to be regenerated."""
    if mask.mode == "RGBA" and mask.getextrema()[-1] != (255, 255):
        return mask.getchannel("A").point(lambda level: 255 if level > 128 else 0)
    return mask.convert("L")


def blur_mask(mask: Image.Image, sigma_x: int, sigma_y: int) -> Image.Image:
    """OpenCV's GaussianBlur as A1111 calls it, along x then y: kernel size 2 * int(2.5 * sigma + 0.5) + 1,
    mirrored borders (BORDER_REFLECT_101, scipy's `mirror`), rounded back to 8 bits after each pass."""
    levels = np.asarray(mask.convert("L"), dtype=np.float64)
    for axis, sigma in ((1, sigma_x), (0, sigma_y)):
        if sigma > 0:
            radius = int(2.5 * sigma + 0.5)
            blurred = gaussian_filter1d(levels, sigma, axis=axis, mode="mirror", truncate=radius / sigma)
            levels = np.rint(blurred).clip(0, 255)
    return Image.fromarray(levels.astype(np.uint8), "L")


def fill(image: Image.Image, mask: Image.Image) -> Image.Image:
    """A1111's masking.fill: the masked area painted with Gaussian blurs of the unmasked pixels, from
    radius 256 down to 0; pixels outside the mask unchanged."""
    painted = Image.new("RGBA", image.size)
    unmasked = Image.new("RGBa", image.size)
    unmasked.paste(image.convert("RGBA").convert("RGBa"), mask=ImageOps.invert(mask.convert("L")))
    for radius, repeats in ((256, 1), (64, 1), (16, 2), (4, 4), (2, 2), (0, 1)):
        blurred = unmasked.filter(ImageFilter.GaussianBlur(radius)).convert("RGBA")
        for _ in range(repeats):
            painted.alpha_composite(blurred)
    return painted.convert("RGB")


Box = tuple[int, int, int, int]


def crop_region(mask: Image.Image, padding: int) -> Box | None:
    """A1111's get_crop_region_v2: the box (x1, y1, x2, y2) around the mask's non-zero pixels, grown by
    `padding` within the image; None for an empty mask."""
    box = mask.getbbox()
    if box is None or not padding:
        return box
    x1, y1, x2, y2 = box
    return (
        max(x1 - padding, 0),
        max(y1 - padding, 0),
        min(x2 + padding, mask.width),
        min(y2 + padding, mask.height),
    )


def expand_crop_region(region: Box, width: int, height: int, image_width: int, image_height: int) -> Box:
    """A1111's expand_crop_region: `region` widened (or heightened) to the aspect ratio of width x height,
    shifted to stay inside the image."""
    x1, y1, x2, y2 = region
    ratio_region, ratio_output = (x2 - x1) / (y2 - y1), width / height
    if ratio_region > ratio_output:
        grow = int((x2 - x1) / ratio_output - (y2 - y1))
        y1, y2 = y1 - grow // 2, y2 + grow - grow // 2
        if y2 >= image_height:
            y1, y2 = y1 - (y2 - image_height), image_height
        if y1 < 0:
            y1, y2 = 0, y2 - y1
        y2 = min(y2, image_height)
    else:
        grow = int((y2 - y1) * ratio_output - (x2 - x1))
        x1, x2 = x1 - grow // 2, x2 + grow - grow // 2
        if x2 >= image_width:
            x1, x2 = x1 - (x2 - image_width), image_width
        if x1 < 0:
            x1, x2 = 0, x2 - x1
        x2 = min(x2, image_width)
    return x1, y1, x2, y2


@dataclass(frozen=True)
class Overlay:
    """What the result is composited with: `image`, the init image with its masked area transparent (at
    the init image's size for "only masked", else at the output size), and `paste_to` (x, y, width,
    height), where the generated region goes back for "only masked"."""

    image: Image.Image
    paste_to: tuple[int, int, int, int] | None = None


def overlay_of(image: Image.Image, mask_for_overlay: Image.Image) -> Image.Image:
    """The init image, transparent where the (blurred) overlay mask is set."""
    masked = Image.new("RGBa", image.size)
    masked.paste(image.convert("RGBA").convert("RGBa"), mask=ImageOps.invert(mask_for_overlay.convert("L")))
    return masked.convert("RGBA")


def apply_overlay(generated: Image.Image, overlay: Overlay) -> Image.Image:
    """A1111's apply_overlay: for "only masked", the result scaled back (crop-and-resize) and placed in the
    init image's frame; then the overlay composited on top. RGB."""
    image = generated
    if overlay.paste_to is not None:
        x, y, width, height = overlay.paste_to
        canvas = Image.new("RGBA", overlay.image.size)
        canvas.paste(resize_image(1, generated, width, height), (x, y))
        image = canvas
    composed = image.convert("RGBA")
    composed.alpha_composite(overlay.image)
    return composed.convert("RGB")


def double_mask(mask: Image.Image) -> Image.Image:
    """A1111's mask for the overlay in "whole picture" inpainting: the blurred mask's levels doubled, so the
    result shows through fully from half of its level up."""
    levels = np.asarray(mask.convert("L"), dtype=np.float32) * 2
    return Image.fromarray(np.clip(levels, 0, 255).astype(np.uint8), "L")
