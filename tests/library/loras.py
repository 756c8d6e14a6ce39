"""Tiny test LoRAs for the embedded tiny model, made at test time (nothing is downloaded), and the image
diffusers' own pipeline makes with them, for the engine's LoRA tests to compare with.

`tiny_lora` writes a random, non-zero LoRA in diffusers' layout or in kohya's (A1111's); the other writers
make files the server must refuse (LyCORIS LoHa and LoKr, DoRA, SD 1.5, NaN, shapes that do not fit, a
huge rank, a truncated file). Key names and shapes come from PEFT injecting LoRA layers into the tiny
model's own networks and from diffusers' converters, so the files are what those libraries write.
"""

from __future__ import annotations

import copy
import functools
import json
import struct
import warnings
import zlib
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

import torch
from PIL import Image
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from sdxl_bedrock.engine.tiny import TINY_UNET_CONFIG, tiny_model_path

LoraFormat = Literal["diffusers", "kohya"]
TEXT_ENCODERS = ("text_encoder", "text_encoder_2")

# kohya's sd-scripts (networks/lora.py) puts LoRA on every Linear inside a Transformer2DModel, and with a
# conv dim on every Linear and Conv2d inside ResnetBlock2D, Downsample2D and Upsample2D; on the text
# encoders, on CLIPAttention's and CLIPMLP's Linears. The same module suffixes here.
UNET_LINEAR_TARGETS = ("to_q", "to_k", "to_v", "to_out.0", "proj_in", "proj_out", "ff.net.0.proj", "ff.net.2")
UNET_CONV_TARGETS = (
    "conv1",
    "conv2",
    "conv_shortcut",
    "time_emb_proj",
    "downsamplers.0.conv",
    "upsamplers.0.conv",
)
TEXT_TARGETS = ("q_proj", "k_proj", "v_proj", "out_proj", "fc1", "fc2")

# How far the LoRA moves each layer at weight 1: the RMS of its delta over the RMS of the layer's weight.
# On the tiny model (64x64, a few Euler steps) 0.5 moves the image by several /255 on average and stays
# far from overflow.
DEFAULT_SCALE = 0.5


@functools.cache
def _tiny_networks() -> dict[str, torch.nn.Module]:
    """The tiny model's UNet and text encoders, read once; callers deep-copy before changing them."""
    from diffusers import UNet2DConditionModel
    from transformers import CLIPTextModel, CLIPTextModelWithProjection

    folder = tiny_model_path()
    return {
        "unet": UNet2DConditionModel.from_pretrained(folder, subfolder="unet"),
        "text_encoder": CLIPTextModel.from_pretrained(folder / "text_encoder"),
        "text_encoder_2": CLIPTextModelWithProjection.from_pretrained(folder / "text_encoder_2"),
    }


def _target_names(network: str, module: torch.nn.Module, *, conv: bool, sgm_names: bool) -> list[str]:
    suffixes = (
        TEXT_TARGETS
        if network in TEXT_ENCODERS
        else UNET_LINEAR_TARGETS + (UNET_CONV_TARGETS if conv else ())
    )
    names = [
        name
        for name, child in module.named_modules()
        if isinstance(child, torch.nn.Linear | torch.nn.Conv2d)
        and any(name == suffix or name.endswith("." + suffix) for suffix in suffixes)
    ]
    if sgm_names and network == "unet":
        # diffusers' SGM block mapping reads output_blocks.N.1 as an attention; in an up block without
        # attention (the tiny model's up_blocks.1) the upsampler sits there, and SDXL has no such block.
        names = [name for name in names if _sgm_name(name) is not None]
    return names


def _peft_state_dict(
    network: str, *, rank: int, alpha: float, conv: bool, sgm_names: bool, dora: bool = False
) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """PEFT's LoRA state dict for one tiny network (lora_A / lora_B, no prefix, PEFT's freshly
    initialised values) and the LoraConfig it was made with, as a dict."""
    from peft import LoraConfig, inject_adapter_in_model
    from peft.utils import get_peft_model_state_dict

    module = copy.deepcopy(_tiny_networks()[network])
    config = LoraConfig(
        r=rank,
        lora_alpha=alpha,  # type: ignore[arg-type]  # typed int, but kohya's alphas are often fractional
        target_modules=_target_names(network, module, conv=conv, sgm_names=sgm_names),
        init_lora_weights=False,
        use_dora=dora,
    )
    inject_adapter_in_model(config, module, adapter_name="default")
    state = get_peft_model_state_dict(module, adapter_name="default")
    base = {name: tensor for name, tensor in module.state_dict().items() if ".base_layer." in name}
    state = {name: tensor.detach().clone() for name, tensor in state.items()}
    return _with_base_rms(state, base), config.to_dict()


def _with_text_model(layers: dict[str, dict[str, torch.Tensor]]) -> dict[str, dict[str, torch.Tensor]]:
    """`layers` with `text_model.` before the first encoder's module names where its class lacks it.

    transformers 5 dropped CLIPTextModel's `text_model` wrapper (CLIPTextModelWithProjection keeps it), so
    PEFT names its layers `encoder.layers...`; every SDXL LoRA written before (kohya's `lora_te1_text_model_
    encoder_...` included) says `text_model.encoder.layers...`, which diffusers' loader strips again."""
    state = layers.get("text_encoder")
    if state is not None:
        layers["text_encoder"] = {
            name if name.startswith("text_model.") else f"text_model.{name}": tensor
            for name, tensor in state.items()
        }
    return layers


def _with_base_rms(
    state: dict[str, torch.Tensor], base: Mapping[str, torch.Tensor]
) -> dict[str, torch.Tensor]:
    """`state`, each lora_A also carrying (as attribute `base_rms`) the RMS of the weight it adapts."""
    for name, tensor in state.items():
        if ".lora_A." in name:
            weight = base[name.replace(".lora_A.weight", ".base_layer.weight")]
            tensor.base_rms = float(weight.pow(2).mean().sqrt())  # type: ignore[attr-defined]
    return state


def _randomised(
    state: dict[str, torch.Tensor], *, rank: int, alpha: float, scale: float, seed: int
) -> dict[str, torch.Tensor]:
    """`state` with seeded random A and B, sized so that each layer's delta (alpha / rank) B A has an RMS of
    `scale` times its weight's: A and B get the same magnitude, as no trainer's output has an all-zero B."""
    out: dict[str, torch.Tensor] = {}
    for name in state:
        if ".lora_A." not in name:
            continue
        # Seeded by module, so that a module's weights do not depend on which others the file holds (an
        # SGM-named file, which leaves one out, has the same weights as its diffusers-named twin). One
        # 32-bit number: torch's CPU generator keeps only the low 32 bits of a seed.
        generator = torch.Generator().manual_seed(zlib.crc32(f"{seed}/{name}".encode()))
        down, up_name = state[name], name.replace(".lora_A.", ".lora_B.")
        up = state[up_name]
        # RMS(B A) = sqrt(rank) * std(A) * std(B) for independent Gaussian entries.
        each = (scale * down.base_rms / ((alpha / rank) * rank**0.5)) ** 0.5  # type: ignore[attr-defined]
        out[name] = torch.randn(down.shape, generator=generator) * each
        out[up_name] = torch.randn(up.shape, generator=generator) * each
    for name, tensor in state.items():
        out.setdefault(name, tensor)  # DoRA's magnitude vectors: PEFT's own (the weight's column norms)
    return out


def _lora_layers(
    *,
    seed: int,
    rank: int,
    alpha: float,
    scale: float,
    text_encoders: bool,
    conv: bool,
    sgm_names: bool,
    dora: bool = False,
    text_model: bool = True,
) -> tuple[dict[str, dict[str, torch.Tensor]], dict[str, dict[str, Any]]]:
    networks = ("unet", *TEXT_ENCODERS) if text_encoders else ("unet",)
    layers: dict[str, dict[str, torch.Tensor]] = {}
    configs: dict[str, dict[str, Any]] = {}
    for offset, network in enumerate(networks):
        state, configs[network] = _peft_state_dict(
            network, rank=rank, alpha=alpha, conv=conv, sgm_names=sgm_names, dora=dora
        )
        layers[network] = _randomised(state, rank=rank, alpha=alpha, scale=scale, seed=seed * 3 + offset)
    return (_with_text_model(layers) if text_model else layers), configs


def tiny_lora(
    path: Path,
    *,
    seed: int = 0,
    rank: int = 4,
    format: LoraFormat = "diffusers",
    text_encoders: bool = True,
    conv: bool = True,
    alpha: float | None = None,
    scale: float = DEFAULT_SCALE,
    sgm_names: bool = True,
    text_model: bool = True,
) -> Path:
    """A random LoRA for the tiny model at `path` (one .safetensors file).

    Targets the UNet's transformer Linears (attention to_q/to_k/to_v/to_out.0, proj_in/out, feed-forward)
    and, with `conv`, its resnets' conv1/conv2/conv_shortcut/time_emb_proj and the down- and upsamplers'
    convs; with `text_encoders`, both CLIP encoders' q/k/v/out_proj and fc1/fc2. Each layer's delta at
    weight 1 has an RMS of `scale` times its weight's.

    `format="diffusers"`: what `StableDiffusionXLPipeline.save_lora_weights` writes (it writes it):
    `unet.` / `text_encoder.` / `text_encoder_2.` keys with `lora_A` / `lora_B`; with an `alpha` other than
    the rank, the LoraConfigs go in the file's metadata, as diffusers stores them.
    `format="kohya"`: `lora_unet_*` / `lora_te1_*` / `lora_te2_*` keys with `.lora_down.weight`,
    `.lora_up.weight` and `.alpha` (diffusers' `convert_state_dict_to_kohya`); UNet blocks named the SGM way
    (`input_blocks_5_1_...`, `middle_block_1_...`, `output_blocks_...`) as real SDXL kohya files are unless
    `sgm_names=False` (then `down_blocks_2_attentions_0_...`). SGM naming leaves out the upsampler of the
    tiny model's up_blocks.1, which diffusers' SGM mapping cannot place (SDXL has no block like it).

    `text_model`: the first text encoder's names start `text_model.` (kohya: `lora_te1_text_model_`), as in
    every file written before transformers 5 dropped that wrapper from CLIPTextModel; False: the names
    today's PEFT gives it (`text_encoder.encoder.layers...`). diffusers' loader takes both.

    `alpha`: None is the rank for diffusers (scale 1, no metadata) and half the rank for kohya (a common
    training choice, and one that catches a loader ignoring alpha)."""
    if alpha is None:
        alpha = rank / 2 if format == "kohya" else float(rank)
    sgm = sgm_names and format == "kohya"
    layers, configs = _lora_layers(
        seed=seed,
        rank=rank,
        alpha=alpha,
        scale=scale,
        text_encoders=text_encoders,
        conv=conv,
        sgm_names=sgm,
        text_model=text_model,
    )
    if format == "diffusers":
        _save_diffusers(path, layers, configs if alpha != rank else None)
    else:
        save_file(_kohya(layers, alpha=alpha, sgm_names=sgm), path)
    return path


def _save_diffusers(
    path: Path, layers: Mapping[str, dict[str, torch.Tensor]], configs: Mapping[str, dict[str, Any]] | None
) -> None:
    from diffusers import StableDiffusionXLPipeline

    metadata = configs or {}
    StableDiffusionXLPipeline.save_lora_weights(
        path.parent,
        unet_lora_layers=layers.get("unet"),
        text_encoder_lora_layers=layers.get("text_encoder"),
        text_encoder_2_lora_layers=layers.get("text_encoder_2"),
        weight_name=path.name,
        unet_lora_adapter_metadata=metadata.get("unet"),
        text_encoder_lora_adapter_metadata=metadata.get("text_encoder"),
        text_encoder_2_lora_adapter_metadata=metadata.get("text_encoder_2"),
    )


def _kohya(
    layers: Mapping[str, dict[str, torch.Tensor]], *, alpha: float, sgm_names: bool
) -> dict[str, torch.Tensor]:
    from diffusers.utils.state_dict_utils import convert_state_dict_to_kohya

    prefixed = {
        f"{network}.{name}": tensor for network, state in layers.items() for name, tensor in state.items()
    }
    magnitudes = {
        name: prefixed.pop(name) for name in list(prefixed) if name.endswith(".lora_magnitude_vector")
    }
    kohya = convert_state_dict_to_kohya(prefixed)
    # convert_state_dict_to_kohya means to write DoRA's magnitudes as `dora_scale` but mangles their names
    # (its rename sits behind the unet/text encoder ones); they go through it dressed as down matrices.
    if magnitudes:
        dressed = {
            name.replace(".lora_magnitude_vector", ".lora_A.weight"): tensor
            for name, tensor in magnitudes.items()
        }
        for key, tensor in convert_state_dict_to_kohya(dressed).items():
            if key.endswith(".lora_down.weight"):
                kohya[key.replace(".lora_down.weight", ".dora_scale")] = tensor
    out: dict[str, torch.Tensor] = {}
    for key, tensor in kohya.items():
        module, _, kind = key.partition(".")
        if sgm_names and module.startswith("lora_unet_"):
            module = "lora_unet_" + _sgm_name(module.removeprefix("lora_unet_").replace("_", "."), "_")  # type: ignore[operator]
        # convert_state_dict_to_kohya writes alpha as the rank, an int64; trainers write a float scalar.
        out[f"{module}.{kind}"] = torch.tensor(float(alpha)) if kind == "alpha" else tensor.contiguous()
    return out


# --- SGM (original Stability) names for the tiny UNet's diffusers blocks --------------------------------
# diffusers maps SGM block numbers to its own (loaders/lora_conversion_utils.py,
# _maybe_map_sgm_blocks_to_diffusers) but has no way back; this is the inverse for layers_per_block
# resnets per down block (layers_per_block + 1 per up block), as SGM's UNetModel numbers them.

SGM_RESNET_PARTS = {
    "conv1": "in_layers.2",
    "conv2": "out_layers.3",
    "time_emb_proj": "emb_layers.1",
    "conv_shortcut": "skip_connection",
}


def _sgm_name(name: str, delimiter: str = ".") -> str | None:
    """The SGM name of a tiny-UNet module named the diffusers way (`down_blocks.2.attentions.0.proj_in`),
    with `delimiter` between parts; None where diffusers' mapping would not read it back. `name` may have
    lost the underscores inside its parts (kohya's names): they are put back first."""
    name = _diffusers_name(name)
    per_down = TINY_UNET_CONFIG["layers_per_block"]
    parts = name.split(".")
    kind = parts[0]
    if kind == "mid_block":
        inner, index, rest = parts[1], int(parts[2]), parts[3:]
        block = {("resnets", 0): 0, ("attentions", 0): 1, ("resnets", 1): 2}[(inner, index)]
        sgm = ["middle_block", str(block)]  # a plain sequence in SGM: no inner index
    elif kind in ("down_blocks", "up_blocks"):
        block, inner, index, rest = int(parts[1]), parts[2], int(parts[3]), parts[4:]
        if kind == "down_blocks":
            if inner == "downsamplers":
                sgm = ["input_blocks", str(1 + block * (per_down + 1) + per_down), "0"]
                rest = ["op"]
            else:
                sgm = [
                    "input_blocks",
                    str(1 + block * (per_down + 1) + index),
                    "0" if inner == "resnets" else "1",
                ]
        else:
            per_up = per_down + 1
            has_attention = TINY_UNET_CONFIG["up_block_types"][block].startswith("CrossAttn")
            if inner == "upsamplers":
                if not has_attention:
                    return None
                sgm = ["output_blocks", str(block * per_up + per_up - 1), "2"]
            else:
                sgm = ["output_blocks", str(block * per_up + index), "0" if inner == "resnets" else "1"]
    else:
        return None
    if inner == "resnets":
        rest = SGM_RESNET_PARTS[".".join(rest)].split(".")
    return delimiter.join(sgm + rest)


def _diffusers_name(name: str) -> str:
    """A diffusers UNet module name, from itself or from its kohya spelling with every `_` made a `.`."""
    for part in (
        "down_blocks",
        "up_blocks",
        "mid_block",
        "transformer_blocks",
        "proj_in",
        "proj_out",
        "to_q",
        "to_k",
        "to_v",
        "to_out",
        "time_emb_proj",
        "conv_shortcut",
    ):
        name = name.replace(part.replace("_", "."), part)
    return name


# --- files the server must refuse ----------------------------------------------------------------------


def loha_file(path: Path, *, rank: int = 4, seed: int = 0) -> Path:
    """A LyCORIS LoHa (Hadamard product) for the tiny model: `hada_w1_a`, `hada_w1_b`, `hada_w2_a`,
    `hada_w2_b` and `alpha` on kohya-named modules, shapes that fit the tiny UNet's and encoders' layers."""
    generator = torch.Generator().manual_seed(seed)
    tensors: dict[str, torch.Tensor] = {}
    for module, (out_features, in_features) in _kohya_linear_shapes().items():
        for half in ("1", "2"):
            tensors[f"{module}.hada_w{half}_a"] = 0.1 * torch.randn(out_features, rank, generator=generator)
            tensors[f"{module}.hada_w{half}_b"] = 0.1 * torch.randn(rank, in_features, generator=generator)
        tensors[f"{module}.alpha"] = torch.tensor(float(rank))
    save_file(tensors, path)
    return path


def lokr_file(path: Path, *, factor: int = 4, seed: int = 0) -> Path:
    """A LyCORIS LoKr (Kronecker product) for the tiny model: `lokr_w1` (factor x factor) and `lokr_w2`
    (the rest of the weight), whose Kronecker product has each layer's shape, and `alpha`."""
    generator = torch.Generator().manual_seed(seed)
    tensors: dict[str, torch.Tensor] = {}
    for module, (out_features, in_features) in _kohya_linear_shapes().items():
        if out_features % factor or in_features % factor:
            continue
        tensors[f"{module}.lokr_w1"] = 0.1 * torch.randn(factor, factor, generator=generator)
        tensors[f"{module}.lokr_w2"] = 0.1 * torch.randn(
            out_features // factor, in_features // factor, generator=generator
        )
        tensors[f"{module}.alpha"] = torch.tensor(float(factor))
    save_file(tensors, path)
    return path


@functools.cache
def _kohya_linear_shapes() -> dict[str, tuple[int, int]]:
    """Kohya (SGM) module names of the tiny model's LoRA-able Linears, with their (out, in) shapes."""
    layers, _ = _lora_layers(
        seed=0, rank=1, alpha=1.0, scale=DEFAULT_SCALE, text_encoders=True, conv=False, sgm_names=True
    )
    kohya = _kohya(layers, alpha=1.0, sgm_names=True)
    shapes: dict[str, tuple[int, int]] = {}
    for key, tensor in kohya.items():
        module, _, kind = key.partition(".")
        if kind == "lora_down.weight":
            shapes[module] = (int(kohya[f"{module}.lora_up.weight"].shape[0]), int(tensor.shape[1]))
    return shapes


def dora_lora(path: Path, *, format: LoraFormat = "diffusers", seed: int = 0, rank: int = 4) -> Path:
    """A DoRA for the tiny model (PEFT's `use_dora`): a LoRA plus a magnitude vector per layer (PEFT's own,
    the weight's norms), as `lora_magnitude_vector` (diffusers' layout, UNet and text encoders) or kohya's
    `dora_scale`.

    diffusers 0.42 loads the first as a DoRA (its text encoders' magnitudes reported MISSING and left at
    PEFT's initial values), and drops kohya's `dora_scale` with a logged warning, loading the rest as a
    plain LoRA: a server that leaves the check to diffusers serves either wrong."""
    alpha = float(rank)
    layers, _ = _lora_layers(
        seed=seed,
        rank=rank,
        alpha=alpha,
        scale=DEFAULT_SCALE,
        text_encoders=True,
        conv=False,
        sgm_names=format == "kohya",
        dora=True,
    )
    if format == "diffusers":
        _save_diffusers(path, layers, None)
    else:
        save_file(_kohya(layers, alpha=alpha, sgm_names=True), path)
    return path


# SD 1.5's CLIP ViT-L text encoder and UNet widths, for a few of the layers a kohya SD 1.5 LoRA carries.
SD15_LAYERS = {
    "lora_te_text_model_encoder_layers_0_self_attn_q_proj": (768, 768),
    "lora_te_text_model_encoder_layers_0_self_attn_k_proj": (768, 768),
    "lora_te_text_model_encoder_layers_0_mlp_fc1": (3072, 768),
    "lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn1_to_q": (320, 320),
    "lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn2_to_k": (320, 768),
    "lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn2_to_v": (320, 768),
    "lora_unet_mid_block_attentions_0_transformer_blocks_0_attn2_to_k": (1280, 768),
    "lora_unet_up_blocks_3_attentions_2_proj_out": (320, 320),
}


def sd15_lora(path: Path, *, rank: int = 4, seed: int = 0) -> Path:
    """A kohya LoRA for SD 1.5: one text encoder (`lora_te_text_model_...`), cross-attention to_k/to_v
    taking 768 wide text, diffusers-style block names (kohya trains SD 1.x on diffusers' UNet)."""
    generator = torch.Generator().manual_seed(seed)
    tensors: dict[str, torch.Tensor] = {}
    for module, (out_features, in_features) in SD15_LAYERS.items():
        tensors[f"{module}.lora_down.weight"] = 0.01 * torch.randn(rank, in_features, generator=generator)
        tensors[f"{module}.lora_up.weight"] = 0.01 * torch.randn(out_features, rank, generator=generator)
        tensors[f"{module}.alpha"] = torch.tensor(float(rank))
    save_file(tensors, path)
    return path


def nan_lora(
    path: Path, *, format: LoraFormat = "diffusers", value: float = float("nan"), seed: int = 0
) -> Path:
    """A valid tiny LoRA (`tiny_lora`) with one element of one UNet up matrix set to `value` (NaN; inf also
    makes sense): the file loads, the image it would make is not finite."""
    tiny_lora(path, format=format, seed=seed)
    tensors, metadata = _read(path)
    name = sorted(
        key
        for key in tensors
        if key.startswith(("unet.", "lora_unet_")) and ("lora_B" in key or "lora_up" in key)
    )[0]
    tensors[name].view(-1)[0] = value
    save_file(tensors, path, metadata=metadata)
    return path


def wrong_shape_lora(path: Path, *, format: LoraFormat = "diffusers", seed: int = 0, extra: int = 8) -> Path:
    """A valid tiny LoRA whose first cross-attention to_k down matrix reads `extra` more input features than
    the tiny model's text width (96): every key is one the tiny model has, one shape does not fit."""
    tiny_lora(path, format=format, seed=seed)
    tensors, metadata = _read(path)
    name = sorted(
        key for key in tensors if "attn2" in key and "to_k" in key and ("lora_A" in key or "lora_down" in key)
    )[0]
    down = tensors[name]
    tensors[name] = torch.cat([down, torch.zeros(down.shape[0], extra)], dim=1)
    save_file(tensors, path, metadata=metadata)
    return path


def huge_rank_lora(path: Path, rank: int = 512, *, format: LoraFormat = "diffusers", seed: int = 0) -> Path:
    """A valid tiny LoRA on the UNet's transformer Linears only, of `rank` (past every layer's width, 32 to
    256, at the default; the file is about 10 MB at 512, 20 MB at 1024)."""
    return tiny_lora(path, seed=seed, rank=rank, format=format, text_encoders=False, conv=False)


def truncated_lora(
    path: Path, *, format: LoraFormat = "diffusers", cut: int | None = None, seed: int = 0
) -> Path:
    """A valid tiny LoRA with its last `cut` bytes (None: half its tensor data) cut off; the header is whole,
    so only a reader that checks the data's length sees it."""
    tiny_lora(path, format=format, seed=seed)
    data = path.read_bytes()
    header = 8 + struct.unpack("<Q", data[:8])[0]
    path.write_bytes(data[: len(data) - (cut if cut is not None else (len(data) - header) // 2)])
    return path


def _read(path: Path) -> tuple[dict[str, torch.Tensor], dict[str, str] | None]:
    with safe_open(str(path), framework="pt") as handle:
        metadata = handle.metadata()
    return load_file(path), metadata


def header(path: Path) -> dict[str, Any]:
    """A .safetensors file's JSON header (tensor names to dtype, shape and offsets; `__metadata__`)."""
    with path.open("rb") as handle:
        size = struct.unpack("<Q", handle.read(8))[0]
        return json.loads(handle.read(size))


# --- diffusers' own image, with LoRAs ------------------------------------------------------------------

LoraWeight = float | tuple[float, float]


def diffusers_reference(
    components_or_pipe: Any,
    loras: Sequence[tuple[Path, LoraWeight]],
    *,
    prompt: str,
    negative_prompt: str | None = None,
    seed: int,
    steps: int,
    width: int = 64,
    height: int = 64,
    guidance_scale: float = 7.0,
    scheduler: Any = None,
    image: Any = None,
    strength: float | None = None,
) -> Image.Image:
    """The image diffusers' SDXL pipeline makes on these components with `loras` loaded
    (`load_lora_weights(path, adapter_name=f"lora{i}")`, then `set_adapters(names, adapter_weights=...)`).

    A weight is one float for the whole LoRA or (unet weight, text encoders' weight), as LoraUse has them.
    `scheduler`: a scheduler class, made from the components' scheduler config (None: Euler, as
    tests/engine/test_schedule.py compares K_EULER); `image` and `strength`: image-to-image (the img2img
    pipeline, `strength` = 1 - image_strength). The seed is a CPU `torch.Generator().manual_seed(seed)`, as
    in the engine's parity tests. The UNet and text encoders are deep copies, so the components passed in
    are never changed; without `loras`, the image is the pipeline's own."""
    from diffusers import EulerDiscreteScheduler, StableDiffusionXLImg2ImgPipeline, StableDiffusionXLPipeline

    given = dict(
        components_or_pipe.components if hasattr(components_or_pipe, "components") else components_or_pipe
    )
    components = {
        name: copy.deepcopy(given[name]) if name in ("unet", *TEXT_ENCODERS) else given.get(name)
        for name in ("vae", "text_encoder", "text_encoder_2", "tokenizer", "tokenizer_2", "unet", "scheduler")
    }
    components["scheduler"] = (scheduler or EulerDiscreteScheduler).from_config(given["scheduler"].config)
    kind = StableDiffusionXLPipeline if image is None else StableDiffusionXLImg2ImgPipeline
    # The given pipeline's own settings where it has them (from_pipe keeps them too); never a watermark,
    # which the engine does not draw (diffusers adds one whenever invisible-watermark is installed).
    config = dict(getattr(components_or_pipe, "config", {}))
    settings = {
        "force_zeros_for_empty_prompt": config.get("force_zeros_for_empty_prompt", True),
        "add_watermarker": False,
    }
    if image is not None:
        settings["requires_aesthetics_score"] = config.get("requires_aesthetics_score", False)
    pipe: Any = kind(**components, **settings)
    pipe.set_progress_bar_config(disable=True)
    names = [f"lora{index}" for index in range(len(loras))]
    with warnings.catch_warnings():
        # PEFT warns of every adapter after the first ("Already found a `peft_config` attribute"): that is
        # what adapters are for here, and the suite makes warnings errors.
        warnings.filterwarnings("ignore", message="Already found a `peft_config`", category=UserWarning)
        for name, (path, _) in zip(names, loras, strict=True):
            pipe.load_lora_weights(str(path), adapter_name=name)
    if loras:
        pipe.set_adapters(
            names,
            adapter_weights=[
                _component_weights(pipe, name, weight) for name, (_, weight) in zip(names, loras, strict=True)
            ],
        )
    arguments: dict[str, Any] = (
        {"image": image, "strength": strength} if image is not None else {"width": width, "height": height}
    )
    result = pipe(
        prompt=prompt,
        negative_prompt=negative_prompt,
        num_inference_steps=steps,
        guidance_scale=guidance_scale,
        generator=torch.Generator().manual_seed(seed),
        **arguments,
    ).images[0]
    return result


def _component_weights(pipe: Any, adapter: str, weight: LoraWeight) -> float | dict[str, float]:
    if not isinstance(weight, tuple):
        return float(weight)
    unet_weight, text_weight = weight
    parts = pipe.get_list_adapters()  # only the parts this LoRA has, or diffusers warns of the rest
    weights = {"unet": unet_weight, "text_encoder": text_weight, "text_encoder_2": text_weight}
    return {part: float(value) for part, value in weights.items() if adapter in parts.get(part, ())}
