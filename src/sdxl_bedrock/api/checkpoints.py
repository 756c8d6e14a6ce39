"""Which checkpoint of the model library a wire's model name means, for the wires that name models by id
(Bedrock's model id, OpenAI's `model`, Stability's engine id); A1111 looks up its own way (a1111/options.py).

A name means, in order: a `--model-alias` (its checkpoint, and the LoRA adapters it names), or a
checkpoint's own library name. It is only ever compared with the listing's names, never joined into a
path (library.py).
"""

from __future__ import annotations

from collections.abc import Sequence

from sdxl_bedrock.errors import InvalidRequest
from sdxl_bedrock.library import AliasTarget, Listing, UnknownCheckpoint, alias_target
from sdxl_bedrock.runtime import Runtime
from sdxl_bedrock.schema import LoraUse


def checkpoint_named(runtime: Runtime, name: str) -> str | None:
    """The library name `name` means (an alias's checkpoint, or a checkpoint), or None: no such model."""
    model = model_named(runtime, name)
    return model.checkpoint if model is not None else None


def model_named(runtime: Runtime, name: str) -> AliasTarget | None:
    """The checkpoint (its library name) and LoRA adapters `name` means: an alias's (`--model-alias
    ID=CHECKPOINT+LORA:WEIGHT`), or a checkpoint's with none; None: no such model."""
    listing = runtime.library.listing
    alias = runtime.settings.model_aliases.get(name)
    if alias is not None:
        try:
            target = alias_target(alias)
            return AliasTarget(listing.find(target.checkpoint).name, target.loras)
        except (UnknownCheckpoint, ValueError):
            return None  # its checkpoint left the library since the server started
    checkpoint = listing.checkpoints.get(name)
    return AliasTarget(checkpoint.name) if checkpoint is not None else None


def model_names(runtime: Runtime) -> list[str]:
    """Every name `checkpoint_named` takes: the checkpoints' names (the default first), then the aliases."""
    listing: Listing = runtime.library.listing
    return list(dict.fromkeys([*listing.checkpoints, *runtime.settings.model_aliases]))


def check_loras(runtime: Runtime, loras: Sequence[LoraUse]) -> None:
    """The adapters a request names are within --max-loras-per-request and each served by the LoRA
    library; InvalidRequest (each wire's 400) naming the first that is not, and why."""
    limit = runtime.settings.max_loras_per_request
    if len(loras) > limit:
        raise InvalidRequest(
            f"{len(loras)} LoRA adapters are named; this server takes at most {limit} per request",
            field="loras",
        )
    if loras and not runtime.settings.lora_dirs:
        raise InvalidRequest("this server has no LoRA adapters (it was started without --lora-dir)")
    for use in loras:
        try:
            runtime.loras.listing.find(use.name)
        except (LookupError, ValueError) as error:
            raise InvalidRequest(str(error), field="loras") from None
