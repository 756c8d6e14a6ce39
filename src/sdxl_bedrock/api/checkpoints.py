"""Which checkpoint of the model library a wire's model name means, for the wires that name models by id
(Bedrock's model id, OpenAI's `model`, Stability's engine id); A1111 looks up its own way (a1111/options.py).

A name means, in order: a `--model-alias` (its checkpoint), or a checkpoint's own library name. It is only
ever compared with the listing's names, never joined into a path (library.py).
"""

from __future__ import annotations

from sdxl_bedrock.library import Listing, UnknownCheckpoint
from sdxl_bedrock.runtime import Runtime


def checkpoint_named(runtime: Runtime, name: str) -> str | None:
    """The library name `name` means (an alias's checkpoint, or a checkpoint), or None: no such model."""
    listing = runtime.library.listing
    alias = runtime.settings.model_aliases.get(name)
    if alias is not None:
        try:
            return listing.find(alias).name
        except UnknownCheckpoint:
            return None  # its checkpoint left the library since the server started
    checkpoint = listing.checkpoints.get(name)
    return checkpoint.name if checkpoint is not None else None


def model_names(runtime: Runtime) -> list[str]:
    """Every name `checkpoint_named` takes: the checkpoints' names (the default first), then the aliases."""
    listing: Listing = runtime.library.listing
    return list(dict.fromkeys([*listing.checkpoints, *runtime.settings.model_aliases]))
