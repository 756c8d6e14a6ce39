"""Synthetic SDXL pipelines with seeded random weights, and the offline files every SDXL folder needs.

- The CLIP tokenizer files (vocab.json, merges.txt) are derived from the vendored OpenAI BPE list, so no
  folder here ever needs the Hub.
- The shipped SDXL 1.0 base configs (configs/sdxl-base) are materialised into the cache together with
  those tokenizer files; `from_single_file` and `sdxl-random` use that folder.
- The tiny model has SDXL's architecture (two CLIP text encoders, a text_time UNet, an 8x AutoencoderKL,
  Euler) at a size that runs a 1024x1024 img2img in about a second on two CPU cores. Its pictures are noise.
- `export_single_file` writes a diffusers folder as one original-layout (SGM) checkpoint, the inverse of
  what `from_single_file` reads.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import os
import shutil
import tempfile
import threading
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, fields
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from safetensors.torch import load_file, save_file

if TYPE_CHECKING:
    # Real module paths: mypy resolves diffusers' top-level names to dummy placeholders.
    from diffusers.models.autoencoders.autoencoder_kl import AutoencoderKL
    from diffusers.models.unets.unet_2d_condition import UNet2DConditionModel
    from transformers import CLIPTextModel, CLIPTextModelWithProjection

ENGINE_DIR = Path(__file__).parent
BPE_VOCAB_FILE = ENGINE_DIR / "vocab" / "bpe_simple_vocab_16e6.txt.gz"
SDXL_BASE_CONFIG_DIR = ENGINE_DIR / "configs" / "sdxl-base"

CACHE_ENV_VAR = "SDXL_BEDROCK_CACHE"
CLIP_MERGE_COUNT = 49152 - 256 - 2
CLIP_SPECIAL_TOKENS = ("<|startoftext|>", "<|endoftext|>")
TOKENIZER_FOLDERS = ("tokenizer", "tokenizer_2")
TINY_SEED = 20240601
RANDOM_SDXL_SEED = 0
# Bump when the way a folder is written changes; config changes already change the folder name.
LAYOUT_VERSION = 1

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


# --- cache ------------------------------------------------------------------------------------------


def default_cache_root() -> Path:
    """`$SDXL_BEDROCK_CACHE` when set, else ~/.cache/sdxl-bedrock."""
    configured = os.environ.get(CACHE_ENV_VAR)
    return Path(configured) if configured else Path.home() / ".cache" / "sdxl-bedrock"


def build_once(target: Path, build: Callable[[Path], None]) -> Path:
    """Return `target`, first filling it with `build(folder)` unless it exists.

    Safe across processes: each builds into its own hidden sibling and renames it into place, which is
    atomic; a process that loses the race drops its copy and uses the winner's (the builds are identical).
    """
    if target.is_dir():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".partial", dir=target.parent))
    try:
        build(staging)
        staging.chmod(0o755)
        try:
            staging.rename(target)
        except OSError:
            if not target.is_dir():
                raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return target


def content_digest(*parts: bytes) -> str:
    digest = hashlib.sha256()
    for part in parts:
        digest.update(hashlib.sha256(part).digest())
    return digest.hexdigest()[:12]


def load_json(path: Path) -> dict[str, Any]:
    return json.loads(path.read_text(encoding="utf-8"))


def write_json(path: Path, data: Mapping[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n", encoding="utf-8")


# --- CLIP tokenizer files ---------------------------------------------------------------------------


def bytes_to_unicode() -> dict[int, str]:
    """CLIP's (and GPT-2's) reversible map from bytes to printable characters, in CLIP's vocab order."""
    printable = [*range(ord("!"), ord("~") + 1), *range(0xA1, 0xAC + 1), *range(0xAE, 0xFF + 1)]
    byte_values = list(printable)
    code_points = list(printable)
    for byte in range(256):
        if byte not in printable:
            byte_values.append(byte)
            code_points.append(256 + len(code_points) - len(printable))
    return dict(zip(byte_values, map(chr, code_points), strict=True))


@cache
def clip_merges() -> tuple[str, ...]:
    """The BPE merges, "a b" per entry, exactly the lines CLIP's simple_tokenizer reads."""
    lines = gzip.decompress(BPE_VOCAB_FILE.read_bytes()).decode("utf-8").split("\n")
    return tuple(lines[1 : CLIP_MERGE_COUNT + 1])


@cache
def clip_vocab() -> dict[str, int]:
    """Token -> id, as OpenAI CLIP builds it: bytes, bytes + </w>, merged pairs, then the two specials."""
    alphabet = list(bytes_to_unicode().values())
    tokens = [
        *alphabet,
        *(char + "</w>" for char in alphabet),
        *(merge.replace(" ", "") for merge in clip_merges()),
        *CLIP_SPECIAL_TOKENS,
    ]
    return {token: index for index, token in enumerate(tokens)}


def write_clip_vocab_files(folder: Path) -> None:
    """vocab.json and merges.txt as openai/clip-vit-large-patch14 ships them."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "vocab.json").write_text(json.dumps(clip_vocab(), ensure_ascii=False), encoding="utf-8")
    merges = "#version: 0.2\n" + "\n".join(clip_merges()) + "\n"
    (folder / "merges.txt").write_text(merges, encoding="utf-8")


def write_sdxl_tokenizers(model_folder: Path) -> None:
    """tokenizer/ and tokenizer_2/ of SDXL base: same vocabulary, pad token `<|endoftext|>` and `!`."""
    for name in TOKENIZER_FOLDERS:
        shutil.copytree(SDXL_BASE_CONFIG_DIR / name, model_folder / name, dirs_exist_ok=True)
        write_clip_vocab_files(model_folder / name)


# --- shipped SDXL base configs -----------------------------------------------------------------------


def shipped_config_files() -> list[Path]:
    return sorted(path for path in SDXL_BASE_CONFIG_DIR.rglob("*") if path.is_file())


def sdxl_base_config_path(cache_root: Path | None = None) -> Path:
    """A complete offline SDXL 1.0 base config folder (no weights): the shipped configs plus tokenizers."""
    files = shipped_config_files()
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
    """The shipped config of one component: unet, vae, text_encoder, text_encoder_2 or scheduler."""
    name = "scheduler_config.json" if component == "scheduler" else "config.json"
    return load_json(SDXL_BASE_CONFIG_DIR / component / name)


# --- random-weight pipelines -------------------------------------------------------------------------


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
    """The SDXL networks randomly initialised from their configs, directly on `device`."""
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
    """Write a complete diffusers folder whose weights are deterministic for a given seed and machine."""
    models = random_sdxl_models(component_configs, seed=seed)
    for name in models.by_name():
        getattr(models, name).save_pretrained(folder / name)
    write_json(folder / "scheduler" / "scheduler_config.json", load_sdxl_base_component_config("scheduler"))
    write_sdxl_tokenizers(folder)
    write_json(folder / "model_index.json", model_index)


def tiny_component_configs() -> dict[str, dict[str, Any]]:
    return {
        "text_encoder": TINY_TEXT_ENCODER_CONFIG,
        "text_encoder_2": TINY_TEXT_ENCODER_2_CONFIG,
        "unet": TINY_UNET_CONFIG,
        "vae": TINY_VAE_CONFIG,
    }


def sdxl_base_component_configs() -> dict[str, dict[str, Any]]:
    return {
        name: load_sdxl_base_component_config(name)
        for name in ("text_encoder", "text_encoder_2", "unet", "vae")
    }


def build_tiny_model(folder: Path) -> None:
    """Write the tiny SDXL img2img pipeline (seeded random weights) as a diffusers folder."""
    save_random_pipeline(folder, tiny_component_configs(), IMG2IMG_MODEL_INDEX, seed=TINY_SEED)


def tiny_model_version() -> str:
    described = {"configs": tiny_component_configs(), "index": IMG2IMG_MODEL_INDEX, "seed": TINY_SEED}
    return f"v{LAYOUT_VERSION}-" + content_digest(json.dumps(described, sort_keys=True).encode())


def tiny_model_path(cache_root: Path | None = None) -> Path:
    """The tiny model's folder, built on first use under the cache root (see `default_cache_root`)."""
    target = (cache_root or default_cache_root()) / f"tiny-sdxl-{tiny_model_version()}"
    return build_once(target, build_tiny_model)


# --- original (SGM) single-file layout ---------------------------------------------------------------
# The inverse of diffusers' single-file conversion, driven by the component configs so that it works for
# the tiny model as well as for SDXL base. Key names follow Stability's sd_xl_base_1.0.safetensors.

UNET_PREFIX = "model.diffusion_model."
VAE_PREFIX = "first_stage_model."
CLIP_L_PREFIX = "conditioner.embedders.0.transformer."
OPEN_CLIP_PREFIX = "conditioner.embedders.1.model."

UNET_RESNET_RENAMES = (
    ("norm1.", "in_layers.0."),
    ("conv1.", "in_layers.2."),
    ("norm2.", "out_layers.0."),
    ("conv2.", "out_layers.3."),
    ("time_emb_proj.", "emb_layers.1."),
    ("conv_shortcut.", "skip_connection."),
)
VAE_ATTENTION_RENAMES = (
    ("group_norm.", "norm."),
    ("to_q.", "q."),
    ("to_k.", "k."),
    ("to_v.", "v."),
    ("to_out.0.", "proj_out."),
)
OPEN_CLIP_LAYER_RENAMES = (
    ("layer_norm1.", "ln_1."),
    ("layer_norm2.", "ln_2."),
    ("mlp.fc1.", "mlp.c_fc."),
    ("mlp.fc2.", "mlp.c_proj."),
    ("self_attn.out_proj.", "attn.out_proj."),
)

Tensors = dict[str, torch.Tensor]


def unet_prefix_map(config: Mapping[str, Any]) -> list[tuple[str, str]]:
    """(diffusers prefix, original prefix) for every block of a UNet2DConditionModel config."""
    layers = config["layers_per_block"]
    pairs = [
        ("time_embedding.linear_1.", "time_embed.0."),
        ("time_embedding.linear_2.", "time_embed.2."),
        ("add_embedding.linear_1.", "label_emb.0.0."),
        ("add_embedding.linear_2.", "label_emb.0.2."),
        ("conv_in.", "input_blocks.0.0."),
        ("conv_norm_out.", "out.0."),
        ("conv_out.", "out.2."),
        ("mid_block.resnets.0.", "middle_block.0."),
        ("mid_block.attentions.0.", "middle_block.1."),
        ("mid_block.resnets.1.", "middle_block.2."),
    ]
    for block, up_block_type in enumerate(config["up_block_types"]):
        first_input = 1 + block * (layers + 1)
        for layer in range(layers):
            pairs.append((f"down_blocks.{block}.resnets.{layer}.", f"input_blocks.{first_input + layer}.0."))
            pairs.append(
                (f"down_blocks.{block}.attentions.{layer}.", f"input_blocks.{first_input + layer}.1.")
            )
        pairs.append(
            (f"down_blocks.{block}.downsamplers.0.conv.", f"input_blocks.{first_input + layers}.0.op.")
        )
        first_output = block * (layers + 1)
        for layer in range(layers + 1):
            pairs.append((f"up_blocks.{block}.resnets.{layer}.", f"output_blocks.{first_output + layer}.0."))
            pairs.append(
                (f"up_blocks.{block}.attentions.{layer}.", f"output_blocks.{first_output + layer}.1.")
            )
        # The upsampler follows the last resnet and, in a cross-attention block, its transformer.
        position = 2 if up_block_type.startswith("CrossAttn") else 1
        pairs.append(
            (f"up_blocks.{block}.upsamplers.0.", f"output_blocks.{first_output + layers}.{position}.")
        )
    return pairs


def vae_prefix_map(config: Mapping[str, Any]) -> list[tuple[str, str]]:
    """(diffusers prefix, original prefix) for every block of an AutoencoderKL config."""
    blocks = len(config["block_out_channels"])
    layers = config["layers_per_block"]
    pairs = []
    for side in ("encoder", "decoder"):
        pairs.append((f"{side}.conv_norm_out.", f"{side}.norm_out."))
        pairs.append((f"{side}.mid_block.attentions.0.", f"{side}.mid.attn_1."))
        pairs += [
            (f"{side}.mid_block.resnets.{index}.", f"{side}.mid.block_{index + 1}.") for index in range(2)
        ]
    for block in range(blocks):
        pairs += [
            (f"encoder.down_blocks.{block}.resnets.{j}.", f"encoder.down.{block}.block.{j}.")
            for j in range(layers)
        ]
        pairs.append((f"encoder.down_blocks.{block}.downsamplers.0.", f"encoder.down.{block}.downsample."))
        # The decoder's up blocks are numbered from the bottom in the original layout.
        original = blocks - 1 - block
        pairs += [
            (f"decoder.up_blocks.{block}.resnets.{j}.", f"decoder.up.{original}.block.{j}.")
            for j in range(layers + 1)
        ]
        pairs.append((f"decoder.up_blocks.{block}.upsamplers.0.", f"decoder.up.{original}.upsample."))
    return pairs


def rename_with_prefixes(key: str, pairs: list[tuple[str, str]]) -> tuple[str, str, str]:
    """(diffusers prefix, original prefix, rest of the key); prefixes are '' when none matches."""
    for diffusers_prefix, original_prefix in pairs:
        if key.startswith(diffusers_prefix):
            return diffusers_prefix, original_prefix, key.removeprefix(diffusers_prefix)
    return "", "", key


def replace_leading(name: str, renames: tuple[tuple[str, str], ...]) -> str:
    for old, new in renames:
        if name.startswith(old):
            return new + name.removeprefix(old)
    return name


def unet_to_original(state: Tensors, config: Mapping[str, Any]) -> Tensors:
    pairs = unet_prefix_map(config)
    converted = {}
    for key, tensor in state.items():
        diffusers_prefix, original_prefix, rest = rename_with_prefixes(key, pairs)
        if ".resnets." in diffusers_prefix:
            rest = replace_leading(rest, UNET_RESNET_RENAMES)
        converted[original_prefix + rest] = tensor
    return converted


def vae_to_original(state: Tensors, config: Mapping[str, Any]) -> Tensors:
    pairs = vae_prefix_map(config)
    converted = {}
    for key, tensor in state.items():
        diffusers_prefix, original_prefix, rest = rename_with_prefixes(key, pairs)
        if ".attentions." in diffusers_prefix:
            rest = replace_leading(rest, VAE_ATTENTION_RENAMES)
            # The original attention projections are 1x1 convolutions.
            tensor = tensor[..., None, None] if tensor.ndim == 2 else tensor
        elif ".resnets." in diffusers_prefix:
            rest = rest.replace("conv_shortcut.", "nin_shortcut.")
        converted[original_prefix + rest] = tensor
    return converted


def clip_to_original(state: Tensors) -> Tensors:
    """CLIP ViT-L keeps transformers' names; newer transformers drop the `text_model.` level, put it back."""
    return {
        key if key.startswith("text_model.") else f"text_model.{key}": tensor for key, tensor in state.items()
    }


def open_clip_to_original(state: Tensors) -> Tensors:
    """OpenCLIP names, with q/k/v fused into in_proj and the projection transposed."""
    state = {key.removeprefix("text_model."): tensor for key, tensor in state.items()}
    converted = {
        "token_embedding.weight": state.pop("embeddings.token_embedding.weight"),
        "positional_embedding": state.pop("embeddings.position_embedding.weight"),
        "ln_final.weight": state.pop("final_layer_norm.weight"),
        "ln_final.bias": state.pop("final_layer_norm.bias"),
        "text_projection": state.pop("text_projection.weight").T.contiguous(),
    }
    layer_count = len({key.split(".")[2] for key in state if key.startswith("encoder.layers.")})
    for layer in range(layer_count):
        source = f"encoder.layers.{layer}."
        target = f"transformer.resblocks.{layer}."
        for kind in ("weight", "bias"):
            projections = [state.pop(f"{source}self_attn.{name}_proj.{kind}") for name in ("q", "k", "v")]
            converted[f"{target}attn.in_proj_{kind}"] = torch.cat(projections)
    for key, tensor in state.items():
        if key.startswith("encoder.layers."):
            index, rest = key.removeprefix("encoder.layers.").split(".", 1)
            converted[f"transformer.resblocks.{index}.{replace_leading(rest, OPEN_CLIP_LAYER_RENAMES)}"] = (
                tensor
            )
        elif not key.startswith("embeddings.position_ids"):
            raise ValueError(f"unexpected key in text_encoder_2: {key}")
    return converted


def load_component_weights(folder: Path) -> Tensors:
    weights: Tensors = {}
    for path in sorted(folder.glob("*.safetensors")):
        weights.update(load_file(path))
    if not weights:
        raise FileNotFoundError(f"no .safetensors weights in {folder}")
    return weights


def prefixed(prefix: str, state: Tensors) -> Tensors:
    return {prefix + key: tensor for key, tensor in state.items()}


def original_layout_state_dict(model_folder: Path) -> Tensors:
    """The state dict of a diffusers SDXL folder, as one original-layout (SGM) checkpoint."""
    unet_config = load_json(model_folder / "unet" / "config.json")
    vae_config = load_json(model_folder / "vae" / "config.json")
    return {
        **prefixed(UNET_PREFIX, unet_to_original(load_component_weights(model_folder / "unet"), unet_config)),
        **prefixed(VAE_PREFIX, vae_to_original(load_component_weights(model_folder / "vae"), vae_config)),
        **prefixed(CLIP_L_PREFIX, clip_to_original(load_component_weights(model_folder / "text_encoder"))),
        **prefixed(
            OPEN_CLIP_PREFIX, open_clip_to_original(load_component_weights(model_folder / "text_encoder_2"))
        ),
    }


def export_single_file(model_folder: Path, target: Path) -> None:
    """Write a diffusers SDXL folder as one .safetensors in the layout Stability and civitai distribute."""
    save_file(original_layout_state_dict(model_folder), target)


# --- tiny CLIP image-text model (for CLIP guidance) ---------------------------------------------------

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
    return build_once((cache_root or default_cache_root()) / f"tiny-clip-{version}", build_tiny_clip)
