"""The model library's listing (library.py): what a folder holds, what is refused and why, and names."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest

from sdxl_bedrock.engine.tiny import tiny_model_path
from sdxl_bedrock.library import Library, UnknownCheckpoint
from tests.library.checkpoints import fake_safetensors, tiny_single_file, tiny_variant

SDXL_UNET_CONV_IN = "model.diffusion_model.input_blocks.0.0.weight"
SDXL_OPEN_CLIP = "conditioner.embedders.1.model.ln_final.weight"


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A library folder with two tiny checkpoints and one of each thing that must be refused."""
    root = tmp_path_factory.mktemp("library")
    tiny_variant(root / "house-style", seed=1)
    tiny_single_file(tiny_variant(root.parent / "variant-2", seed=2), root / "anime.safetensors")
    fake_safetensors(
        root / "sdxl-base.safetensors", {SDXL_UNET_CONV_IN: [320, 4, 3, 3], SDXL_OPEN_CLIP: [1280]}
    )
    fake_safetensors(root / "sd15.safetensors", {"cond_stage_model.transformer.text_model.x": [4]})
    fake_safetensors(root / "sd21.safetensors", {"cond_stage_model.model.ln_final.weight": [4]})
    fake_safetensors(root / "style-lora.safetensors", {"lora_unet_down_blocks_0.lora_down.weight": [4, 4]})
    fake_safetensors(
        root / "inpaint.safetensors", {SDXL_UNET_CONV_IN: [320, 9, 3, 3], SDXL_OPEN_CLIP: [1280]}
    )
    fake_safetensors(
        root / "refiner.safetensors",
        {SDXL_UNET_CONV_IN: [384, 4, 3, 3], "conditioner.embedders.0.model.x": [4]},
    )
    fake_safetensors(
        root / "truncated.safetensors",
        {SDXL_UNET_CONV_IN: [320, 4, 3, 3], SDXL_OPEN_CLIP: [1280]},
        truncate=10,
    )
    (root / "garbage.safetensors").write_bytes(b"\xff" * 64)
    (root / "pickled.ckpt").write_bytes(b"\x80\x04not really")
    (root / "README.txt").write_text("not a model")
    outside = root.parent / "outside.safetensors"
    fake_safetensors(outside, {SDXL_UNET_CONV_IN: [320, 4, 3, 3], SDXL_OPEN_CLIP: [1280]})
    os.symlink(outside, root / "escape.safetensors")
    return root


def test_a_folder_lists_its_checkpoints_and_refuses_the_rest_saying_why(folder: Path) -> None:
    listing = Library("tiny", [folder], single_file_config=tiny_model_path()).refresh()

    assert listing.names == ["tiny", "anime", "house-style", "sdxl-base"], "the default first"
    assert listing.checkpoints["house-style"].kind == "diffusers-folder"
    assert listing.checkpoints["anime"].kind == "single-file"
    assert listing.checkpoints["anime"].config == tiny_model_path(), "read with --single-file-config"
    assert listing.checkpoints["sdxl-base"].config is None, "SDXL base's own shapes: the shipped configs"
    reasons = {entry.name: entry.refused or "" for entry in listing.refused}
    assert set(reasons) == {
        *("sd15", "sd21", "style-lora", "inpaint", "refiner", "truncated", "garbage", "pickled", "escape")
    }
    assert "1.x" in reasons["sd15"] and "2.x" in reasons["sd21"]
    assert "LoRA" in reasons["style-lora"] and "inpainting" in reasons["inpaint"]
    assert "refiner" in reasons["refiner"] and "truncated" in reasons["truncated"]
    assert "not a safetensors file" in reasons["garbage"]
    assert "arbitrary code" in reasons["pickled"] and "symlink out of the folder" in reasons["escape"]


def test_a_single_file_of_another_architecture_needs_its_config(folder: Path) -> None:
    listing = Library("tiny", [folder]).refresh()

    assert "anime" not in listing.checkpoints
    (anime,) = [entry for entry in listing.refused if entry.name == "anime"]
    assert "--single-file-config" in (anime.refused or "")


def test_names_are_a1111s_and_only_listed_names_resolve(folder: Path) -> None:
    listing = Library("tiny", [folder], single_file_config=tiny_model_path()).refresh()
    anime = listing.checkpoints["anime"]
    digest = hashlib.sha256((folder / "anime.safetensors").read_bytes()).hexdigest()

    assert anime.sha256 == digest and anime.shorthash == digest[:10]
    assert anime.title == f"anime.safetensors [{digest[:10]}]"
    for name in ("anime", "anime.safetensors", anime.title, digest, digest[:10]):
        assert listing.find(name) is anime, name
    assert listing.find("anime.safetensors [0000000000]", closest=True) is anime, "A1111's closest match"
    for probe in ("../anime", str(folder / "anime.safetensors"), "escape", "x" * 600, "", "sd15"):
        with pytest.raises(UnknownCheckpoint):
            listing.find(probe)


def test_refresh_sees_new_and_removed_files(folder: Path, tmp_path: Path) -> None:
    library_dir = tmp_path / "lib"
    library_dir.mkdir()
    library = Library("tiny", [library_dir])
    assert library.refresh().names == ["tiny"]

    tiny_variant(library_dir / "added", seed=3)
    assert library.refresh().names == ["tiny", "added"]
    import shutil

    shutil.rmtree(library_dir / "added")
    assert library.refresh().names == ["tiny"]


def test_the_models_command_lists_what_a_server_would_find(
    folder: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import json

    from sdxl_bedrock.cli import build_parser

    args = build_parser().parse_args(
        ["models", "--checkpoint-dir", str(folder), "--single-file-config", str(tiny_model_path()), "--json"]
    )
    assert args.run(args) == 0
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    served = [line["name"] for line in lines if line["refused"] is None]
    assert served == ["tiny", "anime", "house-style", "sdxl-base"] and lines[0]["default"] is True
    anime = next(line for line in lines if line["name"] == "anime")
    assert anime["kind"] == "single-file" and anime["size_bytes"] > 0 and len(anime["sha256"]) == 64
    assert any(line["name"] == "pickled" and "arbitrary code" in line["refused"] for line in lines)


def test_a1111_progress_says_when_a_checkpoint_is_moving() -> None:
    from types import SimpleNamespace
    from typing import Any

    from sdxl_bedrock.api.a1111.routes import moving_text

    def runtime(moving: Any) -> Any:
        return SimpleNamespace(engine=SimpleNamespace(moving=moving))

    assert moving_text(runtime(None)) is None
    assert moving_text(runtime(("anime", "device"))) == "Loading checkpoint anime"
    assert moving_text(runtime(("anime", "host"))) == "Moving checkpoint anime to host"
