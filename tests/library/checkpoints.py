"""Tiny test checkpoints for the model library, made at test time from the embedded tiny model (nothing is
downloaded): a copy with its UNet's weights changed, as a diffusers folder and as one single file."""

from __future__ import annotations

import json
import shutil
import struct
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from sdxl_bedrock.engine.tiny import tiny_model_path
from tests.engine import single_file

UNET_WEIGHTS = Path("unet") / "diffusion_pytorch_model.safetensors"


def tiny_variant(target: Path, seed: int) -> Path:
    """The tiny model as a diffusers folder at `target`, its UNet's weights moved by seeded noise (so its
    images differ from the tiny model's), everything else the same."""
    shutil.copytree(tiny_model_path(), target)
    weights = load_file(target / UNET_WEIGHTS)
    generator = torch.Generator().manual_seed(seed)
    changed = {
        name: tensor + 0.2 * tensor.std().nan_to_num() * torch.randn(tensor.shape, generator=generator)
        if tensor.is_floating_point() and tensor.numel() > 1
        else tensor
        for name, tensor in weights.items()
    }
    save_file(changed, target / UNET_WEIGHTS)
    return target


def tiny_single_file(folder: Path, target: Path) -> Path:
    """A diffusers folder written as one original-layout .safetensors checkpoint."""
    single_file.export_single_file(folder, target)
    return target


def fake_safetensors(target: Path, tensors: dict[str, list[int]], *, truncate: int = 0) -> Path:
    """A .safetensors file whose header names `tensors` (name: shape, float32 zeros), with its last
    `truncate` bytes cut: enough for the library, which reads only headers."""
    header: dict[str, object] = {}
    offset = 0
    for name, shape in tensors.items():
        size = 4
        for side in shape:
            size *= side
        header[name] = {"dtype": "F32", "shape": shape, "data_offsets": [offset, offset + size]}
        offset += size
    encoded = json.dumps(header).encode()
    data = struct.pack("<Q", len(encoded)) + encoded + bytes(offset)
    target.write_bytes(data[: len(data) - truncate] if truncate else data)
    return target
