"""The LoRA library's listing (loras.py): the formats it serves, every refusal and its reason, A1111's names,
aliases, metadata and hashes, and names that never reach a path. Torch-free: headers are written with
safetensors' numpy writer, their weights random."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import numpy as np
import pytest
from safetensors.numpy import save_file

from sdxl_bedrock.loras import MAX_LORA_RANK, LoraLibrary, RefusedLora, UnknownLora

KOHYA_UNET = "lora_unet_input_blocks_4_1_transformer_blocks_0_attn2_to_k"
KOHYA_TE1 = "lora_te1_text_model_encoder_layers_0_self_attn_q_proj"
KOHYA_TE2 = "lora_te2_text_model_encoder_layers_0_self_attn_q_proj"
DIFFUSERS_UNET = "unet.down_blocks.1.attentions.0.transformer_blocks.0.attn2.to_k"


def lora_file(
    target: Path, modules: dict[str, tuple[int, int, int]], *, keys: str = "kohya", **metadata: str
) -> Path:
    """A LoRA file: each module (name: (in width, rank, out width)) as down/up weights in `keys`' names
    ("kohya", "diffusers": lora_A/lora_B, "old": lora.down/lora.up), kohya's with an alpha."""
    rng = np.random.default_rng(len(modules))
    tensors: dict[str, np.ndarray] = {}
    down, up = {"kohya": ("lora_down", "lora_up"), "diffusers": ("lora_A", "lora_B")}.get(
        keys, ("lora.down", "lora.up")
    )
    for module, (width_in, rank, width_out) in modules.items():
        tensors[f"{module}.{down}.weight"] = rng.standard_normal((rank, width_in), dtype=np.float32)
        tensors[f"{module}.{up}.weight"] = rng.standard_normal((width_out, rank), dtype=np.float32)
        if keys == "kohya":
            tensors[f"{module}.alpha"] = np.array(rank / 2, dtype=np.float32)
    return tensors_file(target, tensors, **metadata)


def tensors_file(target: Path, tensors: dict[str, np.ndarray], **metadata: str) -> Path:
    target.parent.mkdir(parents=True, exist_ok=True)
    save_file(tensors, str(target), metadata=metadata or None)
    return target


def zeros(*names: str, shape: tuple[int, ...] = (4, 4)) -> dict[str, np.ndarray]:
    return {name: np.zeros(shape, dtype=np.float32) for name in names}


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A LoRA folder with one LoRA of each served format and one of each thing that must be refused."""
    root = tmp_path_factory.mktemp("loras")
    lora_file(
        root / "kohya-style.safetensors",
        {KOHYA_UNET: (2048, 16, 640), KOHYA_TE1: (768, 8, 768), KOHYA_TE2: (1280, 4, 1280)},
        ss_output_name="Kohya Style",
        ss_tag_frequency='{"dog": 3}',
        ss_network_dim="16",
    )
    lora_file(root / "styles" / "peft-unet.safetensors", {DIFFUSERS_UNET: (2048, 32, 640)}, keys="diffusers")
    lora_file(
        root / "old-diffusers.safetensors",
        {"unet.mid_block.attentions.0.transformer_blocks.0.attn1.to_q": (1280, 4, 1280)},
        keys="old",
    )
    lora_file(root / "bare-peft.safetensors", {"up_blocks.0.resnets.0.conv1": (9, 4, 9)}, keys="diffusers")
    lora_file(root / "sd15.safetensors", {"lora_te_text_model_encoder_layers_0_mlp_fc1": (768, 4, 3072)})
    lora_file(
        root / "sd21-unet.safetensors",
        {"lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn2_to_k": (1024, 4, 320)},
    )
    tensors_file(root / "loha.safetensors", zeros(f"{KOHYA_UNET}.hada_w1_a", f"{KOHYA_UNET}.hada_w1_b"))
    tensors_file(root / "lokr.safetensors", zeros(f"{KOHYA_UNET}.lokr_w1", f"{KOHYA_UNET}.lokr_w2"))
    tensors_file(root / "oft.safetensors", zeros(f"{KOHYA_UNET}.oft_blocks"))
    tensors_file(
        root / "dora.safetensors",
        {
            **zeros(f"{KOHYA_UNET}.lora_down.weight", f"{KOHYA_UNET}.lora_up.weight"),
            **zeros(f"{KOHYA_UNET}.dora_scale", shape=(1, 4)),
        },
    )
    tensors_file(
        root / "peft-dora.safetensors",
        {
            **zeros(f"{DIFFUSERS_UNET}.lora_A.weight", f"{DIFFUSERS_UNET}.lora_B.weight"),
            **zeros(f"{DIFFUSERS_UNET}.lora_magnitude_vector", shape=(4,)),
        },
    )
    tensors_file(root / "checkpoint.safetensors", zeros("model.diffusion_model.input_blocks.0.0.weight"))
    tensors_file(root / "nothing.safetensors", zeros("some.other.weight"))
    lora_file(root / "huge-rank.safetensors", {KOHYA_UNET: (2048, MAX_LORA_RANK + 1, 640)})
    tensors_file(
        root / "disagree.safetensors",
        {
            f"{KOHYA_UNET}.lora_down.weight": np.zeros((8, 64), np.float32),
            f"{KOHYA_UNET}.lora_up.weight": np.zeros((64, 4), np.float32),
        },
    )
    tensors_file(root / "half.safetensors", zeros(f"{KOHYA_UNET}.lora_down.weight"))
    tensors_file(
        root / "flux.safetensors", zeros("transformer.single_transformer_blocks.0.attn.to_k.lora_A.weight")
    )
    truncated = lora_file(root / "truncated.safetensors", {KOHYA_UNET: (2048, 4, 640)})
    truncated.write_bytes(truncated.read_bytes()[:-10])
    (root / "garbage.safetensors").write_bytes(b"\xff" * 64)
    (root / "pickled.pt").write_bytes(b"\x80\x04not really")
    (root / "kohya-style.preview.png").write_bytes(b"not a model")
    lora_file(root / "styles" / "kohya-style.safetensors", {KOHYA_UNET: (2048, 4, 640)})  # the name is taken
    outside = lora_file(root.parent / "outside.safetensors", {KOHYA_UNET: (2048, 4, 640)})
    os.symlink(outside, root / "escape.safetensors")
    return root


def test_a_folder_lists_its_loras_and_refuses_the_rest_saying_why(folder: Path) -> None:
    listing = LoraLibrary([folder]).refresh()

    assert sorted(listing.loras) == ["bare-peft", "kohya-style", "old-diffusers", "peft-unet"]
    kohya = listing.loras["kohya-style"]
    assert (kohya.format, kohya.rank, kohya.parts) == (
        "kohya",
        16,
        ("unet", "text_encoder", "text_encoder_2"),
    )
    peft = listing.loras["peft-unet"]
    assert (peft.format, peft.rank, peft.parts) == ("diffusers", 32, ("unet",))
    assert peft.filename == folder / "styles" / "peft-unet.safetensors", "subfolders are searched, as A1111"
    assert listing.loras["old-diffusers"].format == "diffusers"
    assert listing.loras["bare-peft"].parts == ("unet",), "bare UNet module names: a UNet LoRA (conv too)"
    reasons = {
        entry.name: entry.refused or "" for entry in listing.refused if entry.filename.parent == folder
    }
    assert set(reasons) == {
        *("sd15", "sd21-unet", "loha", "lokr", "oft", "dora", "peft-dora", "checkpoint", "nothing"),
        *("huge-rank", "disagree", "half", "flux", "truncated", "garbage", "pickled", "escape"),
    }
    supported = "not supported: only LoRA (kohya and diffusers/PEFT formats)"
    for lycoris, kind in (("loha", "LoHa"), ("lokr", "LoKr"), ("oft", "OFT")):
        assert kind in reasons[lycoris] and supported in reasons[lycoris]
    assert "DoRA" in reasons["dora"] and "per row" in reasons["dora"] and "DoRA" in reasons["peft-dora"]
    for older in ("sd15", "sd21-unet"):
        assert "a LoRA for Stable Diffusion 1.x/2.x, not SDXL" in reasons[older]
    assert "1024-wide" in reasons["sd21-unet"]
    assert "a checkpoint, not a LoRA" in reasons["checkpoint"]
    assert "no LoRA weights" in reasons["nothing"]
    assert f"rank {MAX_LORA_RANK + 1} is over {MAX_LORA_RANK}" in reasons["huge-rank"]
    assert "disagree in rank" in reasons["disagree"] and "no up weight" in reasons["half"]
    assert "transformer model" in reasons["flux"] and "truncated" in reasons["truncated"]
    assert "not a safetensors file" in reasons["garbage"]
    assert "arbitrary code" in reasons["pickled"] and "symlink out of the folder" in reasons["escape"]
    (taken,) = [entry for entry in listing.refused if entry.filename.parent == folder / "styles"]
    assert taken.refused == f"the name 'kohya-style' is taken by {folder / 'kohya-style.safetensors'}"


def test_names_aliases_metadata_and_hashes_are_a1111s(folder: Path) -> None:
    listing = LoraLibrary([folder]).refresh()
    kohya = listing.loras["kohya-style"]

    data = kohya.filename.read_bytes()
    header_length = int.from_bytes(data[:8], "little")
    assert kohya.sha256 == hashlib.sha256(data[8 + header_length :]).hexdigest(), "the bytes after the header"
    assert kohya.shorthash == kohya.sha256[:12]
    assert kohya.size_bytes == len(data)
    assert kohya.alias == "Kohya Style", "ss_output_name"
    assert listing.loras["peft-unet"].alias == "peft-unet", "no metadata: the name"
    assert kohya.metadata["ss_tag_frequency"] == {"dog": 3}, "JSON objects decoded, as A1111"
    assert next(iter(kohya.metadata)) == "ss_tag_frequency", "A1111's keys first"
    assert kohya.metadata["ss_network_dim"] == "16"
    assert listing.find("kohya-style") is kohya
    assert listing.find("Kohya Style") is kohya, "A1111 finds a LoRA by its alias too"


def test_only_listed_names_resolve(folder: Path) -> None:
    listing = LoraLibrary([folder]).refresh()

    for probe in (
        "../kohya-style",
        str(folder / "kohya-style"),
        "styles/peft-unet",
        "x" * 600,
        "",
        "kohya-style.safetensors",
    ):
        with pytest.raises(UnknownLora) as unknown:
            listing.find(probe)
        assert "the LoRAs are: bare-peft, kohya-style, old-diffusers, peft-unet" in str(unknown.value)
    with pytest.raises(RefusedLora, match="the LoRA 'loha' is not served here: a LyCORIS LoHa adapter"):
        listing.find("loha")
    with pytest.raises(RefusedLora, match="symlink"):
        listing.find("escape")
    assert "none (--lora-dir)" in str(UnknownLora("x", []))


def test_an_alias_two_files_share_names_neither_and_a_name_wins(tmp_path: Path) -> None:
    lora_file(tmp_path / "one.safetensors", {KOHYA_UNET: (2048, 4, 640)}, ss_output_name="shared")
    lora_file(tmp_path / "two.safetensors", {KOHYA_UNET: (2048, 4, 640)}, ss_output_name="shared")
    lora_file(tmp_path / "three.safetensors", {KOHYA_UNET: (2048, 4, 640)}, ss_output_name="one")
    listing = LoraLibrary([tmp_path]).refresh()

    with pytest.raises(UnknownLora):
        listing.find("shared")
    assert listing.find("one").name == "one", "a file's own name, not another's alias"


def test_refresh_sees_new_and_removed_files_and_rehashes_only_changed_ones(tmp_path: Path) -> None:
    library = LoraLibrary([tmp_path, tmp_path / "missing"])
    assert library.refresh().names == []
    assert "cannot be read" in (library.listing.refused[0].refused or "")
    first = lora_file(tmp_path / "first.safetensors", {KOHYA_UNET: (2048, 4, 640)})
    hash_before = library.refresh().loras["first"].sha256
    assert library.listing.names == ["first"]
    lora_file(first, {KOHYA_UNET: (2048, 8, 640), KOHYA_TE1: (768, 4, 768)})
    os.utime(first, ns=(1, 1))
    changed = library.refresh().loras["first"]
    assert changed.sha256 != hash_before and changed.rank == 8
    first.unlink()
    assert library.refresh().names == []
