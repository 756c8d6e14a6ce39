"""A diffusers SDXL folder written as one original-layout (SGM) checkpoint: the inverse of what diffusers'
`from_single_file` reads, so that the tests can prove `--model file.safetensors` loads the same weights.

Driven by the component configs, so that it works for the tiny model as well as for SDXL base. Key names
follow Stability's sd_xl_base_1.0.safetensors. diffusers converts only the other way (SGM to diffusers),
hence this code; it lives with the tests because only they write such files.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

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
    unet_config = json.loads((model_folder / "unet" / "config.json").read_text())
    vae_config = json.loads((model_folder / "vae" / "config.json").read_text())
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
