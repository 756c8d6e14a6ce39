"""SDXL's four networks with seeded random weights, built from their configs: the tiny model at tiny sizes,
`sdxl-random` at full size (for benchmarks without the real weights)."""

from __future__ import annotations

import threading
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, fields
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from sdxl_bedrock.engine.model_cache import write_json
from sdxl_bedrock.engine.sdxl_base_config import load_sdxl_base_component_config, write_sdxl_tokenizers

if TYPE_CHECKING:
    # Real module paths: mypy resolves diffusers' top-level names to dummy placeholders.
    from diffusers.models.autoencoders.autoencoder_kl import AutoencoderKL
    from diffusers.models.unets.unet_2d_condition import UNet2DConditionModel
    from transformers import CLIPTextModel, CLIPTextModelWithProjection

RANDOM_SDXL_SEED = 0

# Torch's generator is process-wide: two threads initialising at once would interleave their draws.
SEEDED_INIT_LOCK = threading.Lock()


@contextmanager
def seeded(seed: int, device: torch.device) -> Iterator[None]:
    """Seed torch for the block without disturbing the caller's random state."""
    cuda_devices = [device.index or 0] if device.type == "cuda" else []
    with SEEDED_INIT_LOCK, torch.random.fork_rng(devices=cuda_devices):
        torch.manual_seed(seed)
        yield


@dataclass(frozen=True)
class SDXLModels:
    """The four networks of an SDXL pipeline, named as in model_index.json."""

    text_encoder: CLIPTextModel
    text_encoder_2: CLIPTextModelWithProjection
    unet: UNet2DConditionModel
    vae: AutoencoderKL

    def by_name(self) -> dict[str, torch.nn.Module]:
        return {field.name: getattr(self, field.name) for field in fields(self)}


def random_sdxl_models(
    configs: Mapping[str, Mapping[str, Any]],
    *,
    seed: int,
    device: str | torch.device = "cpu",
    dtype: torch.dtype = torch.float32,
) -> SDXLModels:
    """The SDXL networks randomly initialised from `configs` (keyed by model_index.json name), directly on
    `device` (`meta` builds shapes only), in eval mode and `dtype`. The same seed gives the same weights on
    the same machine."""
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

    target = torch.device(device)
    with seeded(seed, target), target:
        models = SDXLModels(
            text_encoder=CLIPTextModel(CLIPTextConfig(**without_private_keys(configs["text_encoder"]))),
            text_encoder_2=CLIPTextModelWithProjection(
                CLIPTextConfig(**without_private_keys(configs["text_encoder_2"]))
            ),
            unet=UNet2DConditionModel.from_config(without_private_keys(configs["unet"])),
            vae=AutoencoderKL.from_config(without_private_keys(configs["vae"])),
        )
    for module in models.by_name().values():
        module.eval()
        if dtype != torch.float32:
            module.to(dtype=dtype)
    return models


def without_private_keys(config: Mapping[str, Any]) -> dict[str, Any]:
    """Drop `_class_name` and friends and transformers' bookkeeping keys before instantiating."""
    bookkeeping = {"architectures", "model_type", "torch_dtype", "transformers_version"}
    return {key: value for key, value in config.items() if not key.startswith("_") and key not in bookkeeping}


def save_random_pipeline(
    folder: Path,
    component_configs: Mapping[str, Mapping[str, Any]],
    model_index: Mapping[str, Any],
    *,
    seed: int,
) -> None:
    """Write a complete diffusers folder (SDXL base's scheduler and tokenizers) whose weights are
    deterministic for a given seed and machine."""
    models = random_sdxl_models(component_configs, seed=seed)
    for name in models.by_name():
        getattr(models, name).save_pretrained(folder / name)
    write_json(folder / "scheduler" / "scheduler_config.json", load_sdxl_base_component_config("scheduler"))
    write_sdxl_tokenizers(folder)
    write_json(folder / "model_index.json", model_index)
