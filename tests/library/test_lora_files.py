"""The test LoRAs (tests/library/loras.py) are what they say: diffusers loads the good ones into all three
networks (conv layers included) and they change the image; the refused ones are what they claim to be."""

from __future__ import annotations

import copy
import io
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from diffusers import StableDiffusionXLPipeline
from peft.tuners.lora import LoraLayer
from PIL import Image
from safetensors import SafetensorError
from safetensors.torch import load_file

from sdxl_bedrock.engine.tiny import tiny_model_path
from tests.conftest import gradient_png
from tests.library import loras
from tests.library.loras import LoraFormat, diffusers_reference, tiny_lora

NETWORKS = ("unet", "text_encoder", "text_encoder_2")
PROMPT: dict[str, Any] = {
    "prompt": "a lamp",
    "negative_prompt": "blurry",
    "seed": 3,
    "steps": 3,
    "width": 64,
    "height": 64,
}


@pytest.fixture(scope="module", autouse=True)
def one_thread() -> Iterator[None]:
    """The tiny model gains nothing from a second thread, and on a busy two-core box torch's spinning
    threads made each reference image 30x slower (9 s instead of 0.3 s)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def pipe(cache_dir: object) -> Any:
    pipe = StableDiffusionXLPipeline.from_pretrained(tiny_model_path(), torch_dtype=torch.float32)
    pipe.set_progress_bar_config(disable=True)
    return pipe


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory, cache_dir: object) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("loras")
    return {
        "diffusers": tiny_lora(folder / "style.safetensors", seed=1),
        "kohya": tiny_lora(folder / "kohya.safetensors", seed=2, format="kohya", rank=8),
    }


@pytest.fixture(scope="module")
def base_image(pipe: Any) -> np.ndarray:
    return pixels(diffusers_reference(pipe, [], **PROMPT))


def pixels(image: Any) -> np.ndarray:
    return np.asarray(image.convert("RGB"), dtype=np.int16)


def scratch_pipe(pipe: Any) -> Any:
    """A pipeline on copies of `pipe`'s networks, for loads that may fail halfway."""
    parts = {
        name: copy.deepcopy(part) if name in NETWORKS else part for name, part in pipe.components.items()
    }
    return StableDiffusionXLPipeline(**parts)


def lora_layers(module: torch.nn.Module) -> dict[str, LoraLayer]:
    return {name: layer for name, layer in module.named_modules() if isinstance(layer, LoraLayer)}


def modules_in(tensors: dict[str, torch.Tensor], network: str) -> set[str]:
    """The names of the modules `tensors` (a LoRA file, either format) adapts in `network`."""
    kohya = {"unet": "lora_unet_", "text_encoder": "lora_te1_", "text_encoder_2": "lora_te2_"}[network]
    return {
        key.split(".")[0] if key.startswith(kohya) else key.rsplit(".", 2)[0]
        for key in tensors
        if key.startswith((kohya, network + "."))
    }


def test_the_diffusers_file_has_diffusers_keys_with_random_non_zero_weights(files: dict[str, Path]) -> None:
    tensors = load_file(files["diffusers"])
    assert {key.split(".")[0] for key in tensors} == set(NETWORKS)
    assert all(key.endswith((".lora_A.weight", ".lora_B.weight")) for key in tensors)
    assert any(key.startswith("text_encoder.text_model.encoder.layers.") for key in tensors)
    assert any(key.startswith("text_encoder_2.text_model.encoder.layers.") for key in tensors)
    assert all(tensor.abs().min() > 0 and tensor.isfinite().all() for tensor in tensors.values())
    assert "__metadata__" not in loras.header(files["diffusers"]) or "lora_adapter_metadata" not in str(
        loras.header(files["diffusers"])["__metadata__"]
    )


def test_seeds_give_different_loras_and_the_same_seed_the_same(tmp_path: Path) -> None:
    first, again, other = (
        load_file(tiny_lora(tmp_path / f"{n}.safetensors", seed=s)) for n, s in enumerate([5, 5, 6])
    )
    assert first.keys() == other.keys()
    assert all(torch.equal(first[key], again[key]) for key in first)
    assert not any(torch.equal(first[key], other[key]) for key in first)


def test_a_unet_only_lora_without_conv_layers_has_only_the_transformer_linears(tmp_path: Path) -> None:
    tensors = load_file(tiny_lora(tmp_path / "linear.safetensors", text_encoders=False, conv=False, rank=2))
    assert {key.split(".")[0] for key in tensors} == {"unet"}
    assert all(".transformer_blocks." in key or ".proj_" in key for key in tensors)
    assert {tensor.shape[0] for key, tensor in tensors.items() if ".lora_A." in key} == {2}


def test_the_kohya_file_has_kohya_keys_sgm_block_names_and_an_alpha_other_than_the_rank(
    files: dict[str, Path],
) -> None:
    tensors = load_file(files["kohya"])
    modules = {key.split(".")[0] for key in tensors}
    assert {key.partition(".")[2] for key in tensors} == {"lora_down.weight", "lora_up.weight", "alpha"}
    assert all(f"{module}.alpha" in tensors and f"{module}.lora_up.weight" in tensors for module in modules)
    assert {module.split("_")[1] for module in modules} == {"unet", "te1", "te2"}
    assert "lora_unet_input_blocks_5_1_transformer_blocks_0_attn2_to_k" in modules
    assert "lora_unet_middle_block_1_transformer_blocks_0_attn1_to_q" in modules
    assert "lora_unet_output_blocks_0_0_in_layers_2" in modules
    assert "lora_te1_text_model_encoder_layers_0_mlp_fc1" in modules
    assert not any("down_blocks" in module or "up_blocks" in module for module in modules)
    assert {float(tensors[f"{module}.alpha"]) for module in modules} == {4.0}
    assert tensors["lora_unet_input_blocks_5_1_transformer_blocks_0_attn2_to_k.lora_down.weight"].shape == (
        8,
        96,
    )


def test_sgm_and_diffusers_block_names_read_back_as_the_same_lora(tmp_path: Path, pipe: Any) -> None:
    sgm = tiny_lora(tmp_path / "sgm.safetensors", seed=4, format="kohya")
    plain = tiny_lora(tmp_path / "plain.safetensors", seed=4, format="kohya", sgm_names=False)
    assert any("down_blocks" in key for key in load_file(plain))
    read = [
        StableDiffusionXLPipeline.lora_state_dict(str(path), unet_config=pipe.unet.config)
        for path in (sgm, plain)
    ]
    (sgm_state, sgm_alphas), (plain_state, plain_alphas) = read
    # The SGM file leaves out the one upsampler diffusers' SGM mapping cannot place (loras.tiny_lora).
    left_out = {key for key in plain_state if "up_blocks.1.upsamplers" in key}
    assert left_out and set(sgm_state) == set(plain_state) - left_out
    assert all(torch.equal(sgm_state[key], plain_state[key]) for key in sgm_state)
    assert {key: plain_alphas[key] for key in sgm_alphas} == sgm_alphas


@pytest.mark.parametrize("format", ["diffusers", "kohya"])
def test_diffusers_loads_the_lora_into_every_network_conv_layers_included(
    pipe: Any, files: dict[str, Path], format: LoraFormat
) -> None:
    tensors = load_file(files[format])
    pipe.load_lora_weights(str(files[format]), adapter_name="check")
    try:
        for network in NETWORKS:
            layers = lora_layers(getattr(pipe, network))
            assert len(layers) == len(modules_in(tensors, network)) > 0
            assert {layer.scaling["check"] for layer in layers.values()} == {
                0.5 if format == "kohya" else 1.0
            }
        unet_layers = lora_layers(pipe.unet)
        assert isinstance(unet_layers["down_blocks.0.resnets.0.conv1"].base_layer, torch.nn.Conv2d)
        assert "up_blocks.0.upsamplers.0.conv" in unet_layers
        assert "mid_block.attentions.0.transformer_blocks.0.attn2.to_k" in unet_layers
    finally:
        pipe.unload_lora_weights()
    assert not any(lora_layers(getattr(pipe, network)) for network in NETWORKS)


def test_a_kohya_alpha_is_honoured(pipe: Any, tmp_path: Path) -> None:
    path = tiny_lora(tmp_path / "alpha.safetensors", format="kohya", rank=4, alpha=1.0)
    pipe.load_lora_weights(str(path), adapter_name="alpha")
    try:
        assert {layer.scaling["alpha"] for layer in lora_layers(pipe.unet).values()} == {0.25}
    finally:
        pipe.unload_lora_weights()


def test_a_diffusers_alpha_travels_in_the_metadata(pipe: Any, tmp_path: Path) -> None:
    path = tiny_lora(tmp_path / "alpha.safetensors", rank=4, alpha=2.0)
    assert "lora_adapter_metadata" in loras.header(path)["__metadata__"]
    pipe.load_lora_weights(str(path), adapter_name="alpha")
    try:
        for network in NETWORKS:
            assert {layer.scaling["alpha"] for layer in lora_layers(getattr(pipe, network)).values()} == {0.5}
    finally:
        pipe.unload_lora_weights()


@pytest.mark.parametrize("format", ["diffusers", "kohya"])
def test_at_weight_1_the_image_changes_visibly_and_stays_finite(
    pipe: Any, files: dict[str, Path], base_image: np.ndarray, format: LoraFormat
) -> None:
    image = pixels(diffusers_reference(pipe, [(files[format], 1.0)], **PROMPT))
    difference = np.abs(image - base_image).mean()
    assert 3 <= difference <= 40, difference
    assert image.std() > 5  # not a flat (NaN-turned-black) picture


def test_the_unet_part_and_the_text_part_each_change_the_image(
    pipe: Any, files: dict[str, Path], base_image: np.ndarray
) -> None:
    unet_only = pixels(diffusers_reference(pipe, [(files["kohya"], (1.0, 0.0))], **PROMPT))
    text_only = pixels(diffusers_reference(pipe, [(files["kohya"], (0.0, 1.0))], **PROMPT))
    nothing = pixels(diffusers_reference(pipe, [(files["kohya"], 0.0)], **PROMPT))
    assert np.abs(unet_only - base_image).mean() >= 2
    assert np.abs(text_only - base_image).mean() >= 1
    assert np.abs(nothing - base_image).max() <= 1


def test_two_loras_load_together(pipe: Any, files: dict[str, Path], base_image: np.ndarray) -> None:
    both = [(files["diffusers"], 1.0), (files["kohya"], 0.5)]
    together = pixels(diffusers_reference(pipe, both, **PROMPT))
    alone = [pixels(diffusers_reference(pipe, [lora], **PROMPT)) for lora in both]
    assert all(np.abs(together - image).mean() >= 1 for image in [base_image, *alone])


def test_the_reference_is_deterministic_and_leaves_the_components_unchanged(
    pipe: Any, files: dict[str, Path]
) -> None:
    before = {name: copy.deepcopy(getattr(pipe, name).state_dict()) for name in NETWORKS}
    first = pixels(diffusers_reference(pipe, [(files["diffusers"], 0.8)], **PROMPT))
    second = pixels(diffusers_reference(pipe.components, [(files["diffusers"], 0.8)], **PROMPT))
    assert np.array_equal(first, second)
    for name in NETWORKS:
        after = getattr(pipe, name).state_dict()
        assert after.keys() == before[name].keys()
        assert all(torch.equal(after[key], before[name][key]) for key in after)
    assert not any(lora_layers(getattr(pipe, network)) for network in NETWORKS)


def test_the_image_to_image_reference_changes_with_a_lora(pipe: Any, files: dict[str, Path]) -> None:
    source = Image.open(io.BytesIO(gradient_png(64, 64))).convert("RGB")
    arguments = {**PROMPT, "image": source, "strength": 0.6, "steps": 4}
    plain = pixels(diffusers_reference(pipe, [], **arguments))
    styled = pixels(diffusers_reference(pipe, [(files["kohya"], 1.0)], **arguments))
    assert plain.shape == styled.shape == (64, 64, 3)
    assert np.abs(styled - plain).mean() >= 2


# --- files to refuse -----------------------------------------------------------------------------------


def test_loha_and_lokr_files_carry_lycoris_keys_and_no_lora_ones(tmp_path: Path) -> None:
    loha = load_file(loras.loha_file(tmp_path / "loha.safetensors"))
    lokr = load_file(loras.lokr_file(tmp_path / "lokr.safetensors"))
    assert {key.partition(".")[2] for key in loha} == {
        "hada_w1_a",
        "hada_w1_b",
        "hada_w2_a",
        "hada_w2_b",
        "alpha",
    }
    assert {key.partition(".")[2] for key in lokr} == {"lokr_w1", "lokr_w2", "alpha"}
    assert "lora_unet_middle_block_1_transformer_blocks_0_attn2_to_k.hada_w1_b" in loha
    assert any(key.startswith("lora_te2_text_model_encoder_layers_1_") for key in lokr)
    to_k = "lora_unet_middle_block_1_transformer_blocks_0_attn2_to_k"
    assert torch.kron(lokr[f"{to_k}.lokr_w1"], lokr[f"{to_k}.lokr_w2"]).shape == (32, 96)


@pytest.mark.parametrize("format", ["diffusers", "kohya"])
def test_a_dora_file_carries_magnitude_vectors(tmp_path: Path, format: LoraFormat) -> None:
    tensors = load_file(loras.dora_lora(tmp_path / "dora.safetensors", format=format))
    marker = "lora_magnitude_vector" if format == "diffusers" else "dora_scale"
    magnitudes = [key for key in tensors if marker in key]
    assert (
        magnitudes
        and len(magnitudes) * 2 == sum("lora_A" in key or "lora_down" in key for key in tensors) * 2
    )
    assert any(key.startswith(("text_encoder_2.", "lora_te2_")) for key in magnitudes)


def test_an_sd15_lora_has_one_768_wide_text_encoder_and_does_not_load(pipe: Any, tmp_path: Path) -> None:
    path = loras.sd15_lora(tmp_path / "sd15.safetensors")
    tensors = load_file(path)
    assert any(key.startswith("lora_te_text_model_") for key in tensors)
    assert not any(key.startswith(("lora_te1_", "lora_te2_")) for key in tensors)
    assert (
        tensors[
            "lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn2_to_k.lora_down.weight"
        ].shape[1]
        == 768
    )
    with pytest.raises(Exception):  # noqa: B017 (diffusers' kind of error is no part of the contract)
        scratch_pipe(pipe).load_lora_weights(str(path), adapter_name="sd15")


@pytest.mark.parametrize("format", ["diffusers", "kohya"])
def test_a_nan_lora_loads_and_holds_nan(tmp_path: Path, format: LoraFormat) -> None:
    tensors = load_file(loras.nan_lora(tmp_path / "nan.safetensors", format=format))
    bad = [key for key, tensor in tensors.items() if not tensor.isfinite().all()]
    assert len(bad) == 1 and ("unet" in bad[0]) and tensors[bad[0]].isnan().sum() == 1


@pytest.mark.parametrize("format", ["diffusers", "kohya"])
def test_a_wrong_shape_lora_has_the_tiny_models_keys_and_does_not_load(
    pipe: Any, tmp_path: Path, files: dict[str, Path], format: LoraFormat
) -> None:
    path = loras.wrong_shape_lora(tmp_path / "wrong.safetensors", format=format)
    good = tiny_lora(tmp_path / "good.safetensors", format=format)
    tensors, expected = load_file(path), load_file(good)
    assert tensors.keys() == expected.keys()
    assert [key for key in tensors if tensors[key].shape != expected[key].shape] != []
    with pytest.raises(Exception):  # noqa: B017
        scratch_pipe(pipe).load_lora_weights(str(path), adapter_name="wrong")


def test_a_huge_rank_lora_is_a_lora_of_that_rank(tmp_path: Path) -> None:
    tensors = load_file(loras.huge_rank_lora(tmp_path / "huge.safetensors", rank=512))
    assert all(key.startswith("unet.") for key in tensors)
    assert {tensor.shape[0] for key, tensor in tensors.items() if "lora_A" in key} == {512}


def test_a_truncated_lora_has_a_whole_header_and_fails_to_read(tmp_path: Path) -> None:
    path = loras.truncated_lora(tmp_path / "cut.safetensors")
    assert len(loras.header(path)) > 10
    with pytest.raises(SafetensorError):
        load_file(path)
