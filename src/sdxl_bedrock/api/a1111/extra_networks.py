"""A1111's extra networks in a prompt: `<lora:NAME:TE_WEIGHT:UNET_WEIGHT>` tags into the request's LoRAs.

As A1111 parses them (modules/extra_networks.py, extensions-builtin/Lora/extra_networks_lora.py):
- a tag is `<KIND:ARGS>` (`re_extra_net`), ARGS split on `:`; an item `KEY=VALUE` is named, the others are
  positional; the tag is removed from the text. `lyco` is `lora` (A1111 registers it as an alias).
- `<lora:NAME>`: positional NAME, then the text encoders' weight (default 1.0), then the UNet's (default the
  text encoders'); named `te=` and `unet=` override them. A weight is Python's `float()` of the item.
- Only the prompt is parsed (and, for the hires fix's second pass, the hires prompt); a tag in a negative
  prompt stays in its text, as in A1111.
- A name no LoRA answers to is skipped and the images made anyway, noted as A1111 notes it
  (`Lora not found: NAME`, networks.py load_networks); other kinds (`<hypernet:...>`, ...) are removed
  and ignored, as A1111's lookup_extra_networks skips kinds it has no network for (no hypernetwork is
  loaded here, so every hypernet name is one A1111 would not find).
- A LoRA named twice is applied twice, at the last tag's weights: A1111's load_networks appends the same
  network twice, its multipliers set by the last tag. The request carries it once, at the sum.

Our rules where A1111 has none, or fails silently: a weight that is not a finite number is a 422 (A1111's
`float()` raises inside activate, which drops every LoRA of the prompt and generates without them); `dyn=`
(rank truncation) is a 422 unless it keeps the whole rank; a tag naming no LoRA (`<lora:te=1>`) is a 422;
more LoRA tags than --max-loras-per-request is a 422; a name of a refused file answers the refusal's reason
(A1111 would fail to load it and skip it).
"""

from __future__ import annotations

import logging
import math
import re
from collections import defaultdict
from dataclasses import dataclass, field

from sdxl_bedrock.api.validation import malformed, shown
from sdxl_bedrock.errors import ProblemKind
from sdxl_bedrock.loras import LoraListing, RefusedLora, UnknownLora
from sdxl_bedrock.schema import MAX_LORA_WEIGHT, LoraUse

log = logging.getLogger(__name__)

RE_EXTRA_NETWORK = re.compile(r"<(\w+):([^>]+)>")
LORA_KINDS = frozenset({"lora", "lyco"})
# extra_networks_lora.py's remove_symbols: what the `Lora hashes` infotext cannot hold in a name.
HASH_NAME_SYMBOLS = str.maketrans("", "", ":,")


@dataclass(frozen=True)
class ExtraNetworkParams:
    """One tag's arguments, as A1111's ExtraNetworkParams: `items` as written, `positional` the items
    without `=`, `named` the `KEY=VALUE` ones."""

    items: tuple[str, ...]
    positional: tuple[str, ...] = ()
    named: dict[str, str] = field(default_factory=dict)

    @classmethod
    def of(cls, args: str) -> ExtraNetworkParams:
        items = tuple(args.split(":"))
        positional: list[str] = []
        named: dict[str, str] = {}
        for item in items:
            # A1111 splits at most twice: `a=b=c` is three parts, so positional.
            parts = item.split("=", 2)
            if len(parts) == 2:
                named[parts[0]] = parts[1]
            else:
                positional.append(item)
        return cls(items, tuple(positional), named)


def parse_extra_networks(prompt: str) -> tuple[str, dict[str, list[ExtraNetworkParams]]]:
    """A1111's parse_prompt: the prompt without its tags, and each kind's tags in order."""
    found: dict[str, list[ExtraNetworkParams]] = defaultdict(list)

    def removed(match: re.Match[str]) -> str:
        found[match.group(1)].append(ExtraNetworkParams.of(match.group(2)))
        return ""

    return RE_EXTRA_NETWORK.sub(removed, prompt), dict(found)


@dataclass(frozen=True)
class PromptLoras:
    """A prompt's LoRAs: the prompt's text without its tags, the request's `loras`, the `Lora hashes`
    (mentioned name, `:` and `,` removed, to short hash, in order) and the names not found."""

    text: str
    loras: tuple[LoraUse, ...] = ()
    hashes: dict[str, str] = field(default_factory=dict)
    not_found: tuple[str, ...] = ()


def prompt_loras(
    prompt: str, field_name: str, listing: LoraListing, *, max_loras: int, enabled: bool = True
) -> PromptLoras:
    """The LoRAs `prompt` asks for, looked up in `listing` (never as paths). `enabled` false is A1111's
    `disable_extra_networks`: the tags are removed, nothing is applied. MalformedBody (422, naming
    `field_name`) for a weight that is not a finite number, `dyn=` below the LoRA's rank, a tag without a
    name, a refused LoRA, or more than `max_loras` LoRA tags."""
    text, networks = parse_extra_networks(prompt)
    for kind in networks:
        if kind not in LORA_KINDS:
            log.info("Skipping unknown extra network: %s (only LoRAs are loaded here)", kind)
    tags = [params for kind in ("lora", "lyco") for params in networks.get(kind, [])]
    if len(tags) > max_loras:
        raise malformed(
            (field_name,),
            f"{len(tags)} LoRA tags; this server takes at most {max_loras} a request "
            "(--max-loras-per-request)",
            kind=ProblemKind.TOO_LONG,
            value=len(tags),
        )
    if not enabled:
        return PromptLoras(text)
    # mentioned name -> (count, te, unet): A1111 keys its loaded networks by the name as mentioned.
    mentioned: dict[str, tuple[int, float, float]] = {}
    for params in tags:
        name, te, unet, dyn = lora_arguments(params, field_name)
        count = mentioned.get(name, (0, 0.0, 0.0))[0]
        mentioned[name] = (count + 1, te, unet)
        if dyn is not None:
            check_dyn(name, dyn, listing, field_name)
    weights: dict[str, tuple[float, float]] = {}
    hashes: dict[str, str] = {}
    not_found: list[str] = []
    for name, (count, te, unet) in mentioned.items():
        try:
            lora = listing.find(name)
        except UnknownLora:
            not_found.append(name)
            continue
        except RefusedLora as refused:
            raise malformed(
                (field_name,), f"<lora:{shown(name)}>: {refused.reason}", kind=ProblemKind.NOT_ALLOWED
            ) from None
        text_weight, unet_weight = weights.get(lora.name, (0.0, 0.0))
        weights[lora.name] = (text_weight + count * te, unet_weight + count * unet)
        if lora.shorthash:
            hashes[name.translate(HASH_NAME_SYMBOLS)] = lora.shorthash
    loras = tuple(LoraUse(name, unet_weight=unet, text_weight=te) for name, (te, unet) in weights.items())
    return PromptLoras(text, loras, hashes, tuple(not_found))


def lora_arguments(params: ExtraNetworkParams, field_name: str) -> tuple[str, float, float, int | None]:
    """(name, te weight, unet weight, dyn) of one tag, as extra_networks_lora.py's activate reads them."""
    tag = f"<lora:{':'.join(params.items)}>"
    if not params.positional:
        raise malformed((field_name,), f"{shown(tag)} names no LoRA", kind=ProblemKind.INVALID)
    name = params.positional[0]
    te = weight(params.positional[1] if len(params.positional) > 1 else "1.0", tag, field_name)
    te = weight(params.named["te"], tag, field_name) if "te" in params.named else te
    unet = weight(params.positional[2], tag, field_name) if len(params.positional) > 2 else te
    unet = weight(params.named["unet"], tag, field_name) if "unet" in params.named else unet
    dyn_text = params.named.get("dyn", params.positional[3] if len(params.positional) > 3 else None)
    dyn = None
    if dyn_text is not None:
        try:
            dyn = int(dyn_text)
        except ValueError:
            raise malformed(
                (field_name,),
                f"{shown(tag)}: dyn {shown(dyn_text)} is not a whole number",
                kind=ProblemKind.INVALID,
            ) from None
    return name, te, unet, dyn


def weight(text: str, tag: str, field_name: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not math.isfinite(value):
        raise malformed(
            (field_name,),
            f"{shown(tag)}: the weight {shown(text)} is not a finite number",
            kind=ProblemKind.INVALID,
        )
    if abs(value) > MAX_LORA_WEIGHT:
        raise malformed(
            (field_name,),
            f"{shown(tag)}: the weight {shown(text)} is not within -{MAX_LORA_WEIGHT:g}..{MAX_LORA_WEIGHT:g}",
            kind=ProblemKind.OUT_OF_RANGE,
        )
    return value


def check_dyn(name: str, dyn: int, listing: LoraListing, field_name: str) -> None:
    """`dyn=` keeps a LoRA's first `dyn` ranks (A1111's rebuild_conventional); only a value that keeps them
    all (no change) is run here."""
    try:
        rank = listing.find(name).rank
    except (UnknownLora, RefusedLora):
        return  # skipped or refused on its own account
    if dyn < rank:
        raise malformed(
            (field_name,),
            f"<lora:{shown(name)}:...dyn={dyn}>: dyn below the LoRA's rank ({rank}) is not supported here "
            f"(it would keep {dyn} of its {rank} ranks); leave dyn out, or give dyn={rank} or more",
            kind=ProblemKind.NOT_ALLOWED,
        )
