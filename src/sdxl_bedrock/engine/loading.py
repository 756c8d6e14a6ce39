"""Loading: a `--model` spec, device and dtypes to the loaded SDXL components the engine runs.

Which files a spec names and how they are read is engine/models.py; here the device and dtype choices
(`auto` resolved for the machine at hand), the VAE's own dtype, the fast path (engine/acceleration.py) and
the optional CLIP model for CLIP guidance. Nothing here downloads.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from sdxl_bedrock.engine.acceleration import accelerate
from sdxl_bedrock.engine.clip_guidance import ClipGuide


@dataclass
class LoadedModel:
    """`pipe`: a StableDiffusionXLImg2ImgPipeline on `device`, its UNet and text encoders in `dtype`, its
    VAE in its own dtype (`resolve_vae_dtype`); `clip_guide` where a CLIP model was asked for."""

    pipe: Any
    device: torch.device
    dtype: torch.dtype
    clip_guide: ClipGuide | None


def load_model(
    model: str,
    device: str = "auto",
    dtype: str = "auto",
    *,
    vae_dtype: str = "auto",
    clip_model: str | None = None,
    single_file_config: Path | None = None,
) -> LoadedModel:
    """Raises ValueError for a spec, device or CLIP folder that does not resolve (engine/models.py).
    `single_file_config`: the config folder a single-file checkpoint is read with (None: SDXL base's)."""
    from sdxl_bedrock.engine.models import load_pipeline

    torch_device = resolve_device(device)
    torch_dtype = resolve_dtype(dtype, torch_device)
    pipe: Any = load_pipeline(
        model, device=str(torch_device), dtype=torch_dtype, single_file_config=single_file_config
    )
    force_upcast = bool(pipe.vae.config.force_upcast)
    pipe.vae.to(dtype=resolve_vae_dtype(vae_dtype, torch_device, torch_dtype, force_upcast))
    pipe.set_progress_bar_config(disable=True)
    accelerate(pipe, torch_device)
    clip_guide = None
    if clip_model is not None:
        clip_guide = ClipGuide.load(resolve_clip_model(clip_model), torch_device)
    return LoadedModel(pipe, torch_device, torch_dtype, clip_guide)


def resolve_clip_model(spec: str) -> Path:
    """`tiny` (the tiny random CLIP, built on first use) or a local transformers CLIPModel folder."""
    if spec == "tiny":
        from sdxl_bedrock.engine.tiny import tiny_clip_path

        return tiny_clip_path()
    path = Path(spec).expanduser()
    if not (path / "config.json").is_file():
        raise ValueError(f"--clip-model {spec!r} is not a transformers CLIP folder (it has no config.json)")
    return path


def resolve_device(device: str) -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device == "cuda" and not torch.cuda.is_available():
        raise ValueError("--device cuda was asked for, but torch sees no CUDA device")
    return torch.device(device)


DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}


def resolve_dtype(dtype: str, device: torch.device) -> torch.dtype:
    if dtype == "auto":
        return torch.float16 if device.type == "cuda" else torch.float32
    return DTYPES[dtype]


def resolve_vae_dtype(
    vae_dtype: str, device: torch.device, model_dtype: torch.dtype, force_upcast: bool
) -> torch.dtype:
    """`auto`: the model's dtype, except where a half-precision model has a VAE that overflows in float16
    (`force_upcast`, as SDXL's own): then bfloat16, float32's range at half the memory traffic, on a GPU
    that has it (ComfyUI's choice too), else float32. A non-finite image is retried in float32 either way."""
    if vae_dtype != "auto":
        return DTYPES[vae_dtype]
    if model_dtype == torch.float32 or not force_upcast:
        return model_dtype
    if device.type == "cuda" and torch.cuda.is_bf16_supported():
        return torch.bfloat16
    return torch.float32
