"""LoRA adapters named outside a prompt, torch-free: `--model-alias ID=CHECKPOINT+LORA:WEIGHT` targets
(library.alias_target), Bedrock's `extras.loras` (api/bedrock/loras.py), and `sdxl-bedrock models
--lora-dir`."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from sdxl_bedrock.api.bedrock.loras import loras_of
from sdxl_bedrock.errors import InvalidRequest
from sdxl_bedrock.library import AliasTarget, alias_target
from sdxl_bedrock.schema import LoraUse


@pytest.mark.parametrize(
    ("target", "expected"),
    [
        ("tiny", AliasTarget("tiny")),
        ("house-style+ink", AliasTarget("house-style", (LoraUse("ink"),))),
        ("tiny+ink:0.8", AliasTarget("tiny", (LoraUse("ink", 0.8, 0.8),))),
        (
            "tiny+ink:0.2:0.9+paper:-1",
            AliasTarget("tiny", (LoraUse("ink", 0.9, 0.2), LoraUse("paper", -1, -1))),
        ),
        (" tiny + ink : 0.5 ", AliasTarget("tiny", (LoraUse("ink", 0.5, 0.5),))),
    ],
)
def test_an_alias_target_names_a_checkpoint_and_adapters_as_a1111_weighs_tags(
    target: str, expected: AliasTarget
) -> None:
    """One weight is both parts'; two are A1111's te then unet."""
    assert alias_target(target) == expected


@pytest.mark.parametrize(
    ("target", "message"),
    [
        ("+ink", "names no checkpoint"),
        ("tiny+", "wants LORA"),
        ("tiny+ink:1:2:3", "wants LORA"),
        ("tiny+ink:strong", "not numbers"),
        ("tiny+ink:nan", "not finite"),
        ("tiny+ink:11", "within -10..10"),
    ],
)
def test_a_malformed_alias_target_says_what_it_wants(target: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        alias_target(target)


def test_extras_loras_reads_names_and_weights() -> None:
    assert loras_of({}) == () and loras_of({"loras": None}) == ()
    assert loras_of({"loras": [{"name": "ink"}, {"name": "paper", "weight": 0.5, "text_weight": 0}]}) == (
        LoraUse("ink"),
        LoraUse("paper", unet_weight=0.5, text_weight=0.0),
    )


@pytest.mark.parametrize(
    ("given", "message"),
    [
        ("ink", "#/extras/loras: expected type: JSONArray"),
        (["ink"], "#/extras/loras/0: expected type: JSONObject"),
        ([{"weight": 1}], "#/extras/loras/0/name: expected a non-empty String"),
        ([{"name": "ink", "weight": True}], "#/extras/loras/0/weight: expected type: Number"),
        (
            [{"name": "ink", "unet_weight": float("inf")}],
            "#/extras/loras/0/unet_weight: expected type: Number",
        ),
        ([{"name": "ink", "scale": 1}], "#/extras/loras/0: extraneous key [scale] is not permitted"),
        ([{"name": "ink", "weight": 1e9}], "#/extras/loras/0/weight: 1e+09 is not within -10..10"),
    ],
)
def test_extras_loras_refuses_other_shapes_in_bedrocks_words(given: object, message: str) -> None:
    with pytest.raises(InvalidRequest) as caught:
        loras_of({"loras": given})
    assert str(caught.value) == message


def test_the_models_command_lists_adapters_and_refusals(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from sdxl_bedrock.cli import build_parser
    from tests.library.test_loras import KOHYA_UNET, lora_file, tensors_file, zeros

    lora_file(tmp_path / "ink.safetensors", {KOHYA_UNET: (2048, 4, 640)})
    tensors_file(tmp_path / "loha.safetensors", zeros(f"{KOHYA_UNET}.hada_w1_a", f"{KOHYA_UNET}.hada_w1_b"))
    args = build_parser().parse_args(["models", "--lora-dir", str(tmp_path), "--json"])
    assert args.run(args) == 0
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    adapters = {line["name"]: line for line in lines if line.get("kind") == "lora"}
    assert adapters["ink"]["format"] == "kohya" and adapters["ink"]["rank"] == 4
    assert adapters["ink"]["refused"] is None and "LoHa" in adapters["loha"]["refused"]
    args = build_parser().parse_args(["models", "--lora-dir", str(tmp_path)])
    assert args.run(args) == 0
    out = capsys.readouterr().out
    assert "lora ink  kohya  rank 4  unet" in out and "refused lora: loha" in out


def test_an_alias_naming_an_adapter_the_library_lacks_stops_the_server(tmp_path: Path) -> None:
    from sdxl_bedrock.library import Library, LibraryError
    from sdxl_bedrock.loras import LoraLibrary
    from sdxl_bedrock.runtime import check_aliases
    from tests.library.test_loras import KOHYA_UNET, lora_file

    lora_file(tmp_path / "ink.safetensors", {KOHYA_UNET: (2048, 4, 640)})
    library, loras = Library("tiny"), LoraLibrary([tmp_path])
    library.refresh()
    loras.refresh()
    check_aliases({"house": "tiny+ink:0.5"}, library, loras)
    with pytest.raises(LibraryError, match=r"--model-alias house=tiny\+paper: no LoRA 'paper'"):
        check_aliases({"house": "tiny+paper"}, library, loras)
    with pytest.raises(LibraryError, match="not numbers"):
        check_aliases({"house": "tiny+ink:x"}, library, loras)
