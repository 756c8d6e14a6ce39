"""`extras.loras`: LoRA adapters on an SDXL 1.0 InvokeModel body, this server's extension of the wire.

    "extras": {"loras": [{"name": "ink-style", "weight": 0.8}, {"name": "detail", "weight": 0.5}]}

Each entry names an adapter of the LoRA library (`--lora-dir`; GET /sdapi/v1/loras lists them) and its
weight (default 1.0; it scales the UNet's and the text encoders' parts alike, as diffusers'
`set_adapters(adapter_weights=)`); `text_weight` / `unet_weight` set the two apart (A1111's `te` and `unet`
multipliers). A weight is within +-MAX_LORA_WEIGHT (10): far beyond, an adapter's delta overflows the
image. Bedrock itself has no such key: its SDXL model ignores `extras`, so a body without it runs
unchanged on both. A `--model-alias` id's own adapters come first.
"""

from __future__ import annotations

import math
from typing import Any

from sdxl_bedrock.api.validation import malformed
from sdxl_bedrock.errors import ProblemKind
from sdxl_bedrock.schema import MAX_LORA_WEIGHT, LoraUse

ENTRY_KEYS = frozenset({"name", "weight", "text_weight", "unet_weight"})


def loras_of(extras: dict[str, Any]) -> tuple[LoraUse, ...]:
    """The adapters `extras.loras` names, in order. Raises MalformedBody (ValidationException, "Malformed
    input request: #/extras/loras/0/weight: ...", as Bedrock words its other body fields) for a value of the
    wrong shape, and for a weight outside +-MAX_LORA_WEIGHT."""
    given = extras.get("loras")
    if given is None:
        return ()
    if not isinstance(given, list):
        raise malformed(("extras", "loras"), "expected type: JSONArray", kind=ProblemKind.WRONG_TYPE)
    loras = []
    for index, entry in enumerate(given):
        at = ("extras", "loras", index)
        if not isinstance(entry, dict):
            raise malformed(at, "expected type: JSONObject", kind=ProblemKind.WRONG_TYPE)
        unknown = sorted(set(entry) - ENTRY_KEYS)
        if unknown:
            raise malformed(
                at,
                f"extraneous key [{unknown[0]}] is not permitted",
                kind=ProblemKind.EXTRANEOUS_KEY,
                value=unknown[0],
            )
        name = entry.get("name")
        if not isinstance(name, str) or not name:
            raise malformed((*at, "name"), "expected a non-empty String", kind=ProblemKind.WRONG_TYPE)
        weight = number(entry, "weight", 1.0, at)
        loras.append(
            LoraUse(
                name,
                unet_weight=number(entry, "unet_weight", weight, at),
                text_weight=number(entry, "text_weight", weight, at),
            )
        )
    return tuple(loras)


def number(entry: dict[str, Any], key: str, default: float, at: tuple[str | int, ...]) -> float:
    value = entry.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise malformed((*at, key), "expected type: Number", kind=ProblemKind.WRONG_TYPE)
    if abs(value) > MAX_LORA_WEIGHT:
        raise malformed(
            (*at, key),
            f"{value:g} is not within -{MAX_LORA_WEIGHT:g}..{MAX_LORA_WEIGHT:g}",
            kind=ProblemKind.OUT_OF_RANGE,
            value=value,
        )
    return float(value)
