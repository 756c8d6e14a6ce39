"""Masked image-to-image for a plain (4-channel) UNet: diffusers' inpainting by latent blending.

The mask is an "L" image, 255 where pixels are to be regenerated; it is binarised at half. During denoising,
latents outside the (downsampled) mask are replaced after every step by the init image's latents noised to
the level the step reached, so the regenerated region grows in context. At the end the original pixels are
pasted back outside the mask, softened across the edge by a Gaussian of at most `EDGE_RADIUS` pixels: a
pixel farther than that from the mask is exactly the input pixel.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from PIL import Image

EDGE_RADIUS = 4


def binary_mask(mask: Image.Image) -> np.ndarray:
    """float32 [H, W]: 1 where the pixel is regenerated."""
    return (np.asarray(mask.convert("L"), dtype=np.uint8) >= 128).astype(np.float32)


def latent_mask(masks: Sequence[Image.Image], scale_factor: int, like: torch.Tensor) -> torch.Tensor:
    """[B, 1, h, w] at latent resolution: a latent is regenerated when any pixel of its block is, so the
    generated region always covers the whole mask."""
    pixels = torch.from_numpy(np.stack([binary_mask(mask) for mask in masks]))[:, None]
    return torch.nn.functional.max_pool2d(pixels, scale_factor).to(device=like.device, dtype=like.dtype)


def blend_outside_mask(latents: torch.Tensor, init_latents: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """The denoised latents inside the mask, the (noised) init latents outside it."""
    return mask * latents + (1 - mask) * init_latents


def gaussian_kernel(radius: int) -> np.ndarray:
    """A normalised 1-D Gaussian of standard deviation radius / 2, cut at `radius`."""
    offsets = np.arange(-radius, radius + 1, dtype=np.float64)
    weights = np.exp(-0.5 * (offsets / max(radius / 2, 1e-6)) ** 2)
    return weights / weights.sum()


def soft_edge(mask: Image.Image, radius: int = EDGE_RADIUS) -> np.ndarray:
    """float [H, W] in [0, 1]: the binary mask blurred by a separable Gaussian of support `radius`, so it is
    exactly 0 more than `radius` pixels (along either axis) from the mask."""
    soft = binary_mask(mask).astype(np.float64)
    if radius <= 0:
        return soft
    kernel = gaussian_kernel(radius)
    padded = np.pad(soft, radius)
    rows = sum(weight * padded[:, shift : shift + soft.shape[1]] for shift, weight in enumerate(kernel))
    soft = sum(weight * rows[shift : shift + soft.shape[0], :] for shift, weight in enumerate(kernel))
    return np.clip(soft, 0.0, 1.0)


def paste_outside_mask(generated: Image.Image, original: Image.Image, mask: Image.Image) -> Image.Image:
    """The generated pixels inside the mask and the original ones outside, blended across a soft edge."""
    weight = soft_edge(mask)[..., None]
    new = np.asarray(generated.convert("RGB"), dtype=np.float64)
    old = np.asarray(original.convert("RGB"), dtype=np.float64)
    pixels = np.rint(weight * new + (1 - weight) * old).clip(0, 255).astype(np.uint8)
    return Image.fromarray(pixels, "RGB")
