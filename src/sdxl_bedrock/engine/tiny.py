"""The embedded models: what `--model tiny`, `--model micro` and `--clip-model tiny` load.

The tiny model has SDXL's architecture (two CLIP text encoders, a text_time UNet with SDXL's three levels
and block names, an 8x AutoencoderKL, Euler) at a size that runs a 1024x1024 img2img in about a second on
two CPU cores; its pictures are noise. The project's own tests use it: LoRA files are made for its blocks.
The micro model has the same interfaces (the same text encoders, latent channels, added conditioning and
8x VAE, so every request shape, size and wire behaves the same) with a smaller UNet of four levels
(attention at 1/64 of the image, not 1/32) and a one-channel VAE: 2.5x faster, for test suites of
client code (the testing fixture's default). The tiny CLIP is a CLIPModel of the same kind, for CLIP
guidance. All have seeded random weights and are built into the model cache on first use (saying so on
stderr), in folders named for their configs and seeds.
"""

from __future__ import annotations

import json
import shutil
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from sdxl_bedrock.engine.clip_vocab import write_clip_vocab_files
from sdxl_bedrock.engine.model_cache import (
    LAYOUT_VERSION,
    build_once,
    content_digest,
    default_cache_root,
    write_json,
)
from sdxl_bedrock.engine.random_models import save_random_pipeline, seeded
from sdxl_bedrock.engine.sdxl_base_config import SDXL_BASE_CONFIG_DIR

TINY_SEED = 20240601
TINY_TEXT_ENCODER_CONFIG: dict[str, Any] = {
    "architectures": ["CLIPTextModel"],
    "bos_token_id": 0,
    "eos_token_id": 2,
    "hidden_act": "quick_gelu",
    "hidden_size": 32,
    "intermediate_size": 64,
    "max_position_embeddings": 77,
    "model_type": "clip_text_model",
    "num_attention_heads": 2,
    "num_hidden_layers": 2,
    "pad_token_id": 1,
    "projection_dim": 32,
    "vocab_size": 49408,
}
# Hidden sizes of the two encoders must differ: from_single_file tells them apart by that width.
TINY_TEXT_ENCODER_2_CONFIG: dict[str, Any] = {
    **TINY_TEXT_ENCODER_CONFIG,
    "architectures": ["CLIPTextModelWithProjection"],
    "hidden_act": "gelu",
    "hidden_size": 64,
    "intermediate_size": 128,
    "num_attention_heads": 4,
    "projection_dim": 48,
}
TINY_ADDITION_TIME_EMBED_DIM = 8
TINY_UNET_CONFIG: dict[str, Any] = {
    "_class_name": "UNet2DConditionModel",
    "act_fn": "silu",
    "addition_embed_type": "text_time",
    "addition_time_embed_dim": TINY_ADDITION_TIME_EMBED_DIM,
    # Heads per block (diffusers' historical name), as in SDXL's [5, 10, 20].
    "attention_head_dim": [1, 1, 2],
    "block_out_channels": [8, 16, 32],
    "cross_attention_dim": TINY_TEXT_ENCODER_CONFIG["hidden_size"]
    + TINY_TEXT_ENCODER_2_CONFIG["hidden_size"],
    # Few channels, and attention only at the lowest resolution (128x128 latents -> 32x32), keep 1024px
    # runs cheap: full-resolution convolutions dominate the cost.
    "down_block_types": ["DownBlock2D", "DownBlock2D", "CrossAttnDownBlock2D"],
    "in_channels": 4,
    "layers_per_block": 1,
    "mid_block_type": "UNetMidBlock2DCrossAttn",
    "norm_num_groups": 8,
    "out_channels": 4,
    # original size, crop offset and target size: six numbers, each embedded at addition_time_embed_dim.
    "projection_class_embeddings_input_dim": 6 * TINY_ADDITION_TIME_EMBED_DIM
    + TINY_TEXT_ENCODER_2_CONFIG["projection_dim"],
    "sample_size": 128,
    "transformer_layers_per_block": 1,
    "up_block_types": ["CrossAttnUpBlock2D", "UpBlock2D", "UpBlock2D"],
    "use_linear_projection": True,
}
TINY_VAE_CONFIG: dict[str, Any] = {
    "_class_name": "AutoencoderKL",
    "act_fn": "silu",
    "block_out_channels": [4, 8, 16, 16],
    "down_block_types": ["DownEncoderBlock2D"] * 4,
    "force_upcast": True,
    "in_channels": 3,
    "latent_channels": 4,
    "layers_per_block": 1,
    # Self-attention over 128x128 latents would cost more than the rest of the model together.
    "mid_block_add_attention": False,
    "norm_num_groups": 4,
    "out_channels": 3,
    "sample_size": 1024,
    "scaling_factor": 0.13025,
    "up_block_types": ["UpDecoderBlock2D"] * 4,
}
IMG2IMG_MODEL_INDEX: dict[str, Any] = {
    "_class_name": "StableDiffusionXLImg2ImgPipeline",
    "_diffusers_version": "0.42.1",
    "feature_extractor": [None, None],
    "force_zeros_for_empty_prompt": True,
    "image_encoder": [None, None],
    "requires_aesthetics_score": False,
    "scheduler": ["diffusers", "EulerDiscreteScheduler"],
    "text_encoder": ["transformers", "CLIPTextModel"],
    "text_encoder_2": ["transformers", "CLIPTextModelWithProjection"],
    "tokenizer": ["transformers", "CLIPTokenizer"],
    "tokenizer_2": ["transformers", "CLIPTokenizer"],
    "unet": ["diffusers", "UNet2DConditionModel"],
    "vae": ["diffusers", "AutoencoderKL"],
}


def tiny_component_configs() -> dict[str, dict[str, Any]]:
    """The tiny model's four network configs, by their model_index.json names."""
    return {
        "text_encoder": TINY_TEXT_ENCODER_CONFIG,
        "text_encoder_2": TINY_TEXT_ENCODER_2_CONFIG,
        "unet": TINY_UNET_CONFIG,
        "vae": TINY_VAE_CONFIG,
    }


MICRO_SEED = 20261207
MICRO_UNET_CONFIG: dict[str, Any] = {
    **TINY_UNET_CONFIG,
    # A fourth level puts the only attention at 16x16 for 1024px images (256 tokens, not 1024), and
    # 4 channels at full latent resolution halve the convolutions and norms that dominate what is left:
    # 17 ms a guided step at 128x128 latents on two CPU cores against 42 ms for the tiny UNet.
    "attention_head_dim": [1, 1, 1, 1],
    "block_out_channels": [4, 8, 16, 16],
    "down_block_types": ["DownBlock2D", "DownBlock2D", "DownBlock2D", "CrossAttnDownBlock2D"],
    "norm_num_groups": 4,
    "up_block_types": ["CrossAttnUpBlock2D", "UpBlock2D", "UpBlock2D", "UpBlock2D"],
}
MICRO_VAE_CONFIG: dict[str, Any] = {
    **TINY_VAE_CONFIG,
    # Still four levels (an 8x VAE, as SDXL's); at 1024x1024 the full-resolution levels are the cost, so
    # they carry one channel: decode 0.13 s, encode 0.08 s, against 0.26 s and 0.11 s.
    "block_out_channels": [1, 1, 2, 4],
    "norm_num_groups": 1,
}


def micro_component_configs() -> dict[str, dict[str, Any]]:
    """The micro model's four network configs: the tiny model's text encoders, a smaller UNet and VAE."""
    return {**tiny_component_configs(), "unet": MICRO_UNET_CONFIG, "vae": MICRO_VAE_CONFIG}


@dataclass(frozen=True)
class EmbeddedModel:
    """A random-weight pipeline made from code: `configs` by model_index.json names, built with `seed`."""

    name: str
    what: str  # as the first run's message says it
    configs: Callable[[], dict[str, dict[str, Any]]]
    seed: int

    def version(self) -> str:
        described = {"configs": self.configs(), "index": IMG2IMG_MODEL_INDEX, "seed": self.seed}
        return f"v{LAYOUT_VERSION}-" + content_digest(json.dumps(described, sort_keys=True).encode())

    def build(self, folder: Path) -> None:
        """Write the pipeline (seeded random weights) as a diffusers img2img folder."""
        save_random_pipeline(folder, self.configs(), IMG2IMG_MODEL_INDEX, seed=self.seed)

    def path(self, cache_root: Path | None = None) -> Path:
        """The model's folder, built on first use under the cache root (see `default_cache_root`)."""
        target = (cache_root or default_cache_root()) / f"{self.name}-sdxl-{self.version()}"
        return build_once(target, announced(self.what, self.build))


TINY_MODEL = EmbeddedModel("tiny", "the embedded tiny model", tiny_component_configs, TINY_SEED)
MICRO_MODEL = EmbeddedModel("micro", "the embedded micro model", micro_component_configs, MICRO_SEED)
EMBEDDED_MODELS: dict[str, EmbeddedModel] = {model.name: model for model in (TINY_MODEL, MICRO_MODEL)}


def build_tiny_model(folder: Path) -> None:
    """Write the tiny SDXL img2img pipeline (seeded random weights) as a diffusers folder."""
    TINY_MODEL.build(folder)


def tiny_model_version() -> str:
    return TINY_MODEL.version()


def tiny_model_path(cache_root: Path | None = None) -> Path:
    """The tiny model's folder, built on first use under the cache root (see `default_cache_root`)."""
    return TINY_MODEL.path(cache_root)


# --- the tiny CLIP image-text model (for CLIP guidance) ----------------------------------------------

TINY_CLIP_SEED = 20240602
TINY_CLIP_CONFIG: dict[str, Any] = {
    "projection_dim": 16,
    "text_config": {
        "bos_token_id": 0,
        "eos_token_id": 2,
        "hidden_size": 32,
        "intermediate_size": 64,
        "max_position_embeddings": 77,
        "num_attention_heads": 2,
        "num_hidden_layers": 2,
        "pad_token_id": 1,
        "vocab_size": 49408,
    },
    "vision_config": {
        "hidden_size": 32,
        "image_size": 32,
        "intermediate_size": 64,
        "num_attention_heads": 2,
        "num_hidden_layers": 2,
        "patch_size": 8,
    },
}
CLIP_IMAGE_PROCESSOR_CONFIG: dict[str, Any] = {
    "image_processor_type": "CLIPImageProcessor",
    "image_mean": [0.48145466, 0.4578275, 0.40821073],
    "image_std": [0.26862954, 0.26130258, 0.27577711],
    "crop_size": {"height": 32, "width": 32},
    "size": {"shortest_edge": 32},
}


def build_tiny_clip(folder: Path) -> None:
    """Write a tiny CLIPModel (seeded random weights) with CLIP's tokenizer, in transformers' layout."""
    from transformers import CLIPConfig, CLIPModel

    with seeded(TINY_CLIP_SEED, torch.device("cpu")):
        model = CLIPModel(CLIPConfig(**TINY_CLIP_CONFIG))
    model.save_pretrained(folder)
    shutil.copytree(SDXL_BASE_CONFIG_DIR / "tokenizer", folder, dirs_exist_ok=True)
    write_clip_vocab_files(folder)
    write_json(folder / "preprocessor_config.json", CLIP_IMAGE_PROCESSOR_CONFIG)


def tiny_clip_path(cache_root: Path | None = None) -> Path:
    """The tiny CLIP's folder (`--clip-model tiny`), built on first use under the cache root."""
    described = {"config": TINY_CLIP_CONFIG, "seed": TINY_CLIP_SEED, "layout": LAYOUT_VERSION}
    version = content_digest(json.dumps(described, sort_keys=True).encode())
    target = (cache_root or default_cache_root()) / f"tiny-clip-{version}"
    return build_once(target, announced("the embedded tiny CLIP model", build_tiny_clip))


# --- saying what a first run is doing ----------------------------------------------------------------


def announced(what: str, build: Callable[[Path], None]) -> Callable[[Path], None]:
    """`build`, saying on stderr that `what` is being built and how long it took, without the progress
    bars transformers' save_pretrained draws for each weights file (they say nothing a user can act on)."""

    def build_and_say(folder: Path) -> None:
        import transformers.utils.logging

        print(f"sdxl-bedrock: building {what} (first run only) ...", file=sys.stderr, flush=True)
        started = time.perf_counter()
        bars_were_on = transformers.utils.logging.is_progress_bar_enabled()
        transformers.utils.logging.disable_progress_bar()
        try:
            build(folder)
        finally:
            if bars_were_on:
                transformers.utils.logging.enable_progress_bar()
        elapsed = time.perf_counter() - started
        print(f"sdxl-bedrock: ... {what} built in {elapsed:.1f} s", file=sys.stderr, flush=True)

    return build_and_say
