"""A1111's `<lora:...>` tags (api/a1111/extra_networks.py) into the request's LoRAs, through the txt2img and
img2img parsers: A1111's own examples, weights, named items, kinds, bounds, and what reaches the request."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from sdxl_bedrock.api.a1111.bodies import parse_img2img, parse_txt2img
from sdxl_bedrock.api.a1111.extra_networks import ExtraNetworkParams, parse_extra_networks, prompt_loras
from sdxl_bedrock.api.a1111.options import ServedModel
from sdxl_bedrock.api.a1111.responses import info_json, infotext
from sdxl_bedrock.config import Settings
from sdxl_bedrock.errors import MalformedBody
from sdxl_bedrock.library import only_model
from sdxl_bedrock.loras import Lora, LoraListing
from sdxl_bedrock.schema import LoraUse
from tests.api.test_a1111_bodies import png_base64

SETTINGS = Settings()
LISTING = LoraListing.of(
    [
        Lora(
            "detail",
            Path("/loras/detail.safetensors"),
            sha256="a" * 64,
            format="kohya",
            rank=16,
            alias="Detail Tweaker",
        ),
        Lora("ink", Path("/loras/ink.safetensors"), sha256="b" * 64, format="diffusers", rank=8, alias="ink"),
    ],
    [Lora("loha", Path("/loras/loha.safetensors"), alias="loha", refused="a LyCORIS LoHa adapter: no")],
)


def loras_of(prompt: str, **kwargs: Any) -> tuple[LoraUse, ...]:
    return prompt_loras(prompt, "prompt", LISTING, max_loras=8, **kwargs).loras


def txt2img(**body: Any) -> Any:
    raw = json.dumps({"steps": 2, "width": 64, "height": 64, **body}).encode()
    return parse_txt2img(raw, settings=SETTINGS, max_images=8, loras=LISTING, random_seed=lambda: 1)


def test_a1111s_example_parses_as_its_docstring_says() -> None:
    text, networks = parse_extra_networks(
        "1girl, <hypernet:agm:1.1> <extrasupernet:master:12:13:14> <hypernet:ray>"
    )
    assert text == "1girl,   "
    assert networks["hypernet"] == [ExtraNetworkParams.of("agm:1.1"), ExtraNetworkParams.of("ray")]
    assert networks["extrasupernet"][0].items == ("master", "12", "13", "14")
    named = ExtraNetworkParams.of("detail:te=0.5:unet=0.25:a=b=c")
    assert named.positional == ("detail", "a=b=c") and named.named == {"te": "0.5", "unet": "0.25"}


@pytest.mark.parametrize(
    ("prompt", "expected"),
    [
        ("a cat <lora:detail>", (LoraUse("detail", 1.0, 1.0),)),
        ("<lora:detail:0.8> a cat", (LoraUse("detail", unet_weight=0.8, text_weight=0.8),)),
        ("<lora:detail:0.5:1.5>", (LoraUse("detail", unet_weight=1.5, text_weight=0.5),)),
        ("<lora:detail:te=0.2:unet=0.7>", (LoraUse("detail", unet_weight=0.7, text_weight=0.2),)),
        ("<lora:detail:0.5:unet=2>", (LoraUse("detail", unet_weight=2.0, text_weight=0.5),)),
        ("<lyco:ink:0.3>", (LoraUse("ink", 0.3, 0.3),)),
        ("<lora:Detail Tweaker:0.6>", (LoraUse("detail", 0.6, 0.6),)),  # by alias
        ("<lora:ink:1> <lora:detail:-0.5>", (LoraUse("ink", 1.0, 1.0), LoraUse("detail", -0.5, -0.5))),
        # A1111 applies a LoRA named twice twice, at the last tag's weights.
        ("<lora:detail:0.2> <lora:detail:0.4>", (LoraUse("detail", 0.8, 0.8),)),
        ("<lora:detail:1.5:dyn=16>", (LoraUse("detail", 1.5, 1.5),)),  # dyn at the rank changes nothing
    ],
)
def test_lora_tags_give_the_requests_loras(prompt: str, expected: tuple[LoraUse, ...]) -> None:
    assert loras_of(prompt) == expected


def test_the_prompt_loses_its_tags_and_the_negative_prompt_keeps_them() -> None:
    plan = txt2img(prompt="a cat <lora:detail:0.5>, (red:1.2)", negative_prompt="<lora:ink:1> blurry")
    assert plan.request.loras == (LoraUse("detail", 0.5, 0.5),)
    assert plan.request.prompts[0].text == "a cat , red"
    assert plan.request.negative_prompts[0].text == "<lora:ink:1> blurry"
    assert plan.all_prompts[0] == "a cat <lora:detail:0.5>, (red:1.2)", "A1111 reports the prompt as given"
    trailing = txt2img(prompt="a cat <lora:detail:1.2>")  # not the composable-diffusion weight
    assert trailing.request.loras == (LoraUse("detail", 1.2, 1.2),)


def test_unknown_names_and_kinds_are_skipped_and_noted_as_a1111_does() -> None:
    plan = txt2img(prompt="a <lora:nope:1> <lora:../ink:1> <hypernet:x:1> <lora:detail> cat")
    assert plan.request.loras == (LoraUse("detail", 1.0, 1.0),)
    assert plan.request.prompts[0].text == "a     cat"
    assert plan.comments == ("Lora not found: nope, ../ink",)
    served = ServedModel.current(only_model("tiny"), plan.settings)
    info = json.loads(info_json(plan, [], served))
    assert info["comments"] == "Lora not found: nope, ../ink"
    assert info["extra_generation_params"]["Lora hashes"] == "detail: aaaaaaaaaaaa"
    text = infotext(plan, 1, served)
    assert 'Lora hashes: "detail: aaaaaaaaaaaa", Version:' in text
    assert text.startswith("a <lora:nope:1>")


def test_the_infotext_names_each_lora_as_mentioned_without_colons_or_commas() -> None:
    plan = txt2img(prompt="<lora:Detail Tweaker:1> <lora:ink:0.5>")
    assert plan.lora_hashes == {"Detail Tweaker": "aaaaaaaaaaaa", "ink": "bbbbbbbbbbbb"}


def test_disable_extra_networks_removes_the_tags_unapplied() -> None:
    plan = txt2img(prompt="a cat <lora:detail:1>", disable_extra_networks=True)
    assert plan.request.loras == () and plan.request.prompts[0].text == "a cat "
    assert plan.lora_hashes == {}


def test_the_hires_pass_takes_the_hires_prompts_loras() -> None:
    plan = txt2img(prompt="a cat <lora:detail:0.5>", enable_hr=True, hr_prompt="a cat <lora:ink:0.7>")
    assert plan.request.loras == (LoraUse("detail", 0.5, 0.5),)
    assert plan.hires is not None
    assert plan.hires.fix.request.loras == (LoraUse("ink", 0.7, 0.7),)
    assert plan.lora_hashes == {"detail": "aaaaaaaaaaaa", "ink": "bbbbbbbbbbbb"}, "both passes', as A1111"
    same = txt2img(prompt="a cat <lora:detail:0.5>", enable_hr=True)
    assert same.hires is not None and same.hires.fix.request.loras == (LoraUse("detail", 0.5, 0.5),)


def test_img2img_takes_loras_too() -> None:
    image = png_base64(Image.new("RGB", (64, 64), (200, 40, 40)))
    raw = json.dumps({"prompt": "<lora:ink:0.4> x", "init_images": [image], "width": 64, "height": 64})
    plan = parse_img2img(raw.encode(), settings=SETTINGS, max_images=8, loras=LISTING)
    assert plan.request.loras == (LoraUse("ink", 0.4, 0.4),)


@pytest.mark.parametrize(
    ("prompt", "message"),
    [
        ("<lora:detail:lots>", "the weight lots is not a finite number"),
        ("<lora:detail:nan>", "the weight nan is not a finite number"),
        ("<lora:detail:1:unet=inf>", "the weight inf is not a finite number"),
        ("<lora:detail:1:dyn=4>", "dyn below the LoRA's rank (16) is not supported here"),
        ("<lora:detail:12>", "the weight 12 is not within -10..10"),
        ("<lora:detail:1:dyn=x>", "dyn x is not a whole number"),
        ("<lora:te=1>", "names no LoRA"),
        ("<lora:loha:1>", "<lora:loha>: a LyCORIS LoHa adapter: no"),
        ("<lora:detail>" * 9, "9 LoRA tags; this server takes at most 8 a request (--max-loras-per-request)"),
    ],
)
def test_what_cannot_be_honoured_is_a_422_naming_the_prompt(prompt: str, message: str) -> None:
    with pytest.raises(MalformedBody) as raised:
        txt2img(prompt=prompt)
    assert raised.value.problem.location == ("prompt",)
    assert message in raised.value.problem.description
    with pytest.raises(MalformedBody) as hires:
        txt2img(prompt="a cat", enable_hr=True, hr_prompt=prompt)
    assert hires.value.problem.location == ("hr_prompt",)


def test_the_bound_counts_tags_of_unknown_loras_too_and_follows_the_setting() -> None:
    with pytest.raises(MalformedBody, match="at most 2"):
        prompt_loras("<lora:a><lora:b><lora:c>", "prompt", LISTING, max_loras=2)
    assert prompt_loras("<hypernet:a>" * 50, "prompt", LISTING, max_loras=2).loras == ()
