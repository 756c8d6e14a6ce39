"""The shipped SDXL 1.0 base configs (configs/sdxl-base: every component's config, no weights).

`sdxl_base_config_path` materialises them into the cache together with the CLIP tokenizer files: a complete
offline diffusers folder that `from_single_file` reads a checkpoint with and `sdxl-random` builds from.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

from sdxl_bedrock.engine.clip_vocab import BPE_VOCAB_FILE, write_clip_vocab_files
from sdxl_bedrock.engine.model_cache import LAYOUT_VERSION, build_once, content_digest, default_cache_root

SDXL_BASE_CONFIG_DIR = Path(__file__).parent / "configs" / "sdxl-base"
TOKENIZER_FOLDERS = ("tokenizer", "tokenizer_2")
NETWORKS = ("text_encoder", "text_encoder_2", "unet", "vae")


def write_sdxl_tokenizers(model_folder: Path) -> None:
    """tokenizer/ and tokenizer_2/ of SDXL base: same vocabulary, pad token `<|endoftext|>` and `!`."""
    for name in TOKENIZER_FOLDERS:
        shutil.copytree(SDXL_BASE_CONFIG_DIR / name, model_folder / name, dirs_exist_ok=True)
        write_clip_vocab_files(model_folder / name)


def sdxl_base_config_path(cache_root: Path | None = None) -> Path:
    """A complete offline SDXL 1.0 base config folder (no weights): the shipped configs plus tokenizers,
    built on first use under the cache root, in a folder named for the shipped files' contents."""
    files = sorted(path for path in SDXL_BASE_CONFIG_DIR.rglob("*") if path.is_file())
    version = content_digest(
        str(LAYOUT_VERSION).encode(),
        BPE_VOCAB_FILE.read_bytes(),
        *(str(path.relative_to(SDXL_BASE_CONFIG_DIR)).encode() + path.read_bytes() for path in files),
    )
    target = (cache_root or default_cache_root()) / f"sdxl-base-config-{version}"
    return build_once(target, materialise_sdxl_base_config)


def materialise_sdxl_base_config(folder: Path) -> None:
    shutil.copytree(SDXL_BASE_CONFIG_DIR, folder, dirs_exist_ok=True)
    write_sdxl_tokenizers(folder)


def load_sdxl_base_component_config(component: str) -> dict[str, Any]:
    """The shipped config of one component: unet, vae, text_encoder, text_encoder_2 or scheduler.

    Raises FileNotFoundError for any other name."""
    name = "scheduler_config.json" if component == "scheduler" else "config.json"
    config: dict[str, Any] = json.loads((SDXL_BASE_CONFIG_DIR / component / name).read_text(encoding="utf-8"))
    return config


def sdxl_base_component_configs() -> dict[str, dict[str, Any]]:
    """The shipped configs of SDXL base's four networks, by their model_index.json names."""
    return {name: load_sdxl_base_component_config(name) for name in NETWORKS}
