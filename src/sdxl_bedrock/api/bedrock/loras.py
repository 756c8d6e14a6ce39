"""`extras.loras`: LoRA adapters on an SDXL 1.0 InvokeModel body, this server's extension of the wire.

    "extras": {"loras": [{"name": "ink-style", "weight": 0.8}, {"name": "detail", "weight": 0.5}]}

Each entry names an adapter of the LoRA library (`--lora-dir`; GET /sdapi/v1/loras lists them) and its
weight (default 1.0; it scales the UNet's and the text encoders' parts alike, as diffusers'
`set_adapters(adapter_weights=)`); `text_weight` / `unet_weight` set the two apart (A1111's `te` and `unet`
multipliers). Bedrock itself has no such key: its SDXL model ignores `extras`, so a body without it runs
unchanged on both. A `--model-alias` id's own adapters come first.
"""

from __future__ import annotations

import math
from typing import Any

from sdxl_bedrock.errors import InvalidRequest
from sdxl_bedrock.schema import LoraUse

ENTRY_KEYS = frozenset({"name", "weight", "text_weight", "unet_weight"})


def loras_of(extras: dict[str, Any]) -> tuple[LoraUse, ...]:
    """The adapters `extras.loras` names, in order. Raises InvalidRequest (ValidationException) naming the
    key, in the wire's `#/path: expected ...` words, for a value of the wrong shape."""
    given = extras.get("loras")
    if given is None:
        return ()
    if not isinstance(given, list):
        raise InvalidRequest("#/extras/loras: expected type: JSONArray", field="extras.loras")
    loras = []
    for index, entry in enumerate(given):
        path = f"#/extras/loras/{index}"
        if not isinstance(entry, dict):
            raise InvalidRequest(f"{path}: expected type: JSONObject", field=f"extras.loras.{index}")
        unknown = sorted(set(entry) - ENTRY_KEYS)
        if unknown:
            raise InvalidRequest(
                f"{path}: extraneous key [{unknown[0]}] is not permitted", field=f"extras.loras.{index}"
            )
        name = entry.get("name")
        if not isinstance(name, str) or not name:
            raise InvalidRequest(
                f"{path}/name: expected a non-empty String", field=f"extras.loras.{index}.name"
            )
        weight = number(entry, "weight", 1.0, path, index)
        loras.append(
            LoraUse(
                name,
                unet_weight=number(entry, "unet_weight", weight, path, index),
                text_weight=number(entry, "text_weight", weight, path, index),
            )
        )
    return tuple(loras)


def number(entry: dict[str, Any], key: str, default: float, path: str, index: int) -> float:
    value = entry.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise InvalidRequest(f"{path}/{key}: expected type: Number", field=f"extras.loras.{index}.{key}")
    return float(value)
