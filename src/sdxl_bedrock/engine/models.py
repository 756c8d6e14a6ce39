"""Which model a `--model` spec names, and loading it as an SDXL img2img pipeline from local files only.

A spec is one of:
- `tiny`, `micro`: the embedded random-weight SDXL models (engine/tiny.py), built into the cache on first use;
- `sdxl-random`: full-size SDXL base with seeded random weights, built in memory on the target device;
- a local diffusers folder (has model_index.json);
- a single `.safetensors` checkpoint in the original (SGM) layout, as Stability and civitai distribute it;
- a Hugging Face repo id that is already in the local Hugging Face cache.
Nothing here downloads: a spec that is none of these is a ValueError.
"""

from __future__ import annotations

import os

# Read once by huggingface_hub at import, so set before anything imports it; every load below also
# passes local_files_only=True, which is what guarantees no download when something imported it first.
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import torch

# The real class: mypy resolves the top-level `diffusers` name to a dummy placeholder.
from diffusers.pipelines.stable_diffusion_xl.pipeline_stable_diffusion_xl_img2img import (
    StableDiffusionXLImg2ImgPipeline,
)

from sdxl_bedrock.engine.random_models import RANDOM_SDXL_SEED, random_sdxl_models
from sdxl_bedrock.engine.sdxl_base_config import sdxl_base_component_configs, sdxl_base_config_path
from sdxl_bedrock.engine.tiny import EMBEDDED_MODELS

ModelKind = Literal["embedded", "sdxl-random", "diffusers-folder", "single-file", "hf-cache"]
REPO_ID_PATTERN = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")


@dataclass(frozen=True)
class ModelSource:
    """A resolved spec: `path` is the diffusers folder or checkpoint file to read, or, for sdxl-random,
    the config folder. `config` is the diffusers config folder a single-file checkpoint is read with."""

    spec: str
    kind: ModelKind
    path: Path
    config: Path | None = None


def resolve_model(spec: str, *, single_file_config: Path | None = None) -> ModelSource:
    """Say where `spec`'s files are, building the tiny model if needed; raise ValueError if nowhere.

    `single_file_config` overrides the shipped SDXL base configs for a single-file checkpoint whose
    architecture differs from SDXL base (the tiny model exported to one file, for example).
    """
    if spec in EMBEDDED_MODELS:
        return ModelSource(spec, "embedded", EMBEDDED_MODELS[spec].path())
    if spec == "sdxl-random":
        return ModelSource(spec, "sdxl-random", sdxl_base_config_path())
    path = Path(spec).expanduser()
    if path.is_dir() and (path / "model_index.json").is_file():
        return ModelSource(spec, "diffusers-folder", path)
    if path.is_file() and path.suffix == ".safetensors":
        return ModelSource(spec, "single-file", path, single_file_config or sdxl_base_config_path())
    if path.exists():
        raise ValueError(
            f"model {spec!r} is neither a diffusers folder (it has no model_index.json) "
            "nor a single-file .safetensors checkpoint"
        )
    tried = (
        f"unknown model {spec!r}. Tried: the names 'tiny', 'micro' and 'sdxl-random'; "
        "a local diffusers folder or .safetensors file (no such path); "
    )
    if not REPO_ID_PATTERN.match(spec):
        raise ValueError(tried + "a Hugging Face repo id (it is not shaped like one).")
    snapshot = cached_hub_snapshot(spec)
    if snapshot is None:
        raise ValueError(
            tried + f"the Hugging Face cache at {hub_cache_dir()} (no snapshot "
            f"of {spec}). Models are never downloaded here: fetch it first (`hf download {spec}`)."
        )
    if not (snapshot / "model_index.json").is_file():
        raise ValueError(f"the cached snapshot of {spec!r} ({snapshot}) has no model_index.json")
    return ModelSource(spec, "hf-cache", snapshot)


def hub_cache_dir() -> str:
    """The Hugging Face cache as the environment says now; huggingface_hub itself only reads it at import."""
    from huggingface_hub import constants

    if cache := os.environ.get("HF_HUB_CACHE"):
        return cache
    if home := os.environ.get("HF_HOME"):
        return str(Path(home) / "hub")
    return constants.HF_HUB_CACHE


def cached_hub_snapshot(repo_id: str) -> Path | None:
    """The folder of `repo_id`'s cached snapshot (its main revision), or None when it is not cached."""
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import HFValidationError, LocalEntryNotFoundError

    try:
        return Path(snapshot_download(repo_id, cache_dir=hub_cache_dir(), local_files_only=True))
    except (LocalEntryNotFoundError, HFValidationError):
        return None


def load_pipeline(
    spec: str | ModelSource,
    device: str = "cpu",
    dtype: torch.dtype = torch.float32,
    *,
    single_file_config: Path | None = None,
) -> StableDiffusionXLImg2ImgPipeline:
    """The SDXL img2img pipeline for `spec` on `device`, read from local files only, without the invisible
    watermark and without progress bars."""
    source = (
        spec if isinstance(spec, ModelSource) else resolve_model(spec, single_file_config=single_file_config)
    )
    quiet_libraries()
    if source.kind == "sdxl-random":
        pipe = random_sdxl_pipeline(source.path, device=device, dtype=dtype)
    elif source.kind == "single-file":
        pipe = load_single_file(source.path, source.config or sdxl_base_config_path(), dtype)
    else:
        pipe = load_diffusers_folder(source.path, dtype)
    pipe.to(device)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def quiet_libraries() -> None:
    """A server's log is for its own lines: no loading progress bars, no library chatter below errors."""
    import diffusers.utils.logging
    import transformers.utils.logging

    for library in (diffusers.utils.logging, transformers.utils.logging):
        library.disable_progress_bar()
        library.set_verbosity_error()


def load_diffusers_folder(folder: Path, dtype: torch.dtype) -> StableDiffusionXLImg2ImgPipeline:
    return StableDiffusionXLImg2ImgPipeline.from_pretrained(
        folder, dtype=dtype, local_files_only=True, add_watermarker=False
    )


def load_single_file(checkpoint: Path, config: Path, dtype: torch.dtype) -> StableDiffusionXLImg2ImgPipeline:
    """Read an original-layout checkpoint; `config` is a diffusers folder that supplies every component's
    config, the tokenizers and the scheduler, so that diffusers never looks for them on the Hub."""
    return StableDiffusionXLImg2ImgPipeline.from_single_file(
        str(checkpoint),
        config=str(config),
        dtype=dtype,
        local_files_only=True,
        add_watermarker=False,
    )


def random_sdxl_pipeline(config: Path, device: str, dtype: torch.dtype) -> StableDiffusionXLImg2ImgPipeline:
    """Full-size SDXL base with seeded random weights, initialised directly on `device` (for benchmarks)."""
    from diffusers import EulerDiscreteScheduler
    from transformers import CLIPTokenizer

    models = random_sdxl_models(
        sdxl_base_component_configs(), seed=RANDOM_SDXL_SEED, device=device, dtype=dtype
    )
    return StableDiffusionXLImg2ImgPipeline(
        vae=models.vae,
        text_encoder=models.text_encoder,
        text_encoder_2=models.text_encoder_2,
        unet=models.unet,
        tokenizer=CLIPTokenizer.from_pretrained(config / "tokenizer", local_files_only=True),
        tokenizer_2=CLIPTokenizer.from_pretrained(config / "tokenizer_2", local_files_only=True),
        scheduler=EulerDiscreteScheduler.from_pretrained(
            config, subfolder="scheduler", local_files_only=True
        ),
        force_zeros_for_empty_prompt=True,
        add_watermarker=False,
    )
