"""The LoRA library: every LoRA adapter a request may name, found in `--lora-dir` folders and told apart
from what cannot be served by each file's safetensors header alone. No torch: the wires list LoRAs and look
them up without the engine, and whether a LoRA's shapes fit a checkpoint is the engine's to tell at load.

What a folder holds (in it and its subfolders, as A1111's walk of `--lora-dir`; a symlinked subfolder is not
followed): `NAME.safetensors` LoRAs, in either of two formats,
- kohya (A1111's and most community LoRAs): `lora_unet_*`, `lora_te1_*`, `lora_te2_*` modules, each with
  `.lora_down.weight`, `.lora_up.weight` and an optional `.alpha`;
- diffusers / PEFT: `unet.`, `text_encoder.`, `text_encoder_2.` (or bare UNet module names, or PEFT's
  `base_model.model.`) with `lora_A` / `lora_B` weights, or diffusers' older `lora.down` / `lora.up`.
Everything else that looks like a model is listed as *refused* with the reason, and never loaded: pickle
files (`.ckpt`, `.pt`, `.pth`, `.bin`: loading one runs arbitrary code), truncated or unreadable files,
LyCORIS adapters (LoHa, LoKr, OFT, IA3, ...), DoRA (its weight decomposition cannot be added per row),
LoRAs for Stable Diffusion 1.x/2.x or for transformer models, checkpoints, files with no LoRA weights, a
rank over MAX_LORA_RANK, up and down weights that disagree, symlinks out of the folder, and names taken.

Names, as A1111 forms them (extensions-builtin/Lora/network.py, NetworkOnDisk): `name` is the file name
without `.safetensors`; `alias` the `ss_output_name` of the file's `__metadata__` (else the name), and a
LoRA is found by either (networks.py, available_network_aliases: an alias two files share answers to
neither file by that alias, only to a file *named* so); `metadata` the header's `__metadata__`, its JSON
strings decoded (sd_models.read_metadata_from_safetensors). The hash is A1111's for a safetensors LoRA:
SHA-256 of the bytes after the header (kohya's "addnet" hash, which kohya also writes as `sshs_model_hash`;
computed here, never taken from the metadata), remembered by (path, size, mtime); `shorthash` is its first
12 hex digits, as A1111's infotext `Lora hashes` shows it. A name is only ever looked up in the listing,
never joined into a path, so `../x`, absolute paths and over-long names match nothing.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import threading
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from sdxl_bedrock.library import (
    MAX_NAME_LENGTH,
    PICKLE_SUFFIXES,
    NotACheckpoint,
    is_within,
    read_safetensors,
    same_file,
    sha256_of,
    size_of,
)

LoraFormat = Literal["kohya", "diffusers"]
LoraPart = Literal["unet", "text_encoder", "text_encoder_2"]

# The largest rank served: a LoRA of rank r adds 2r x width weights per layer; past this, a file is far
# from the community's (4 to 128) and its deltas cost as much as the layers they change.
MAX_LORA_RANK = 512
SHORTHASH_LENGTH = 12  # A1111's NetworkOnDisk.set_hash
SUPPORTED = "only LoRA (kohya and diffusers/PEFT formats)"
# A1111's forbidden_network_aliases start with these: `none` names no LoRA.
RESERVED_ALIASES = frozenset({"none"})
# sd_models.read_metadata_from_safetensors's order of metadata keys shown first (network.py).
METADATA_ORDER = {
    "ss_sd_model_name": 1,
    "ss_resolution": 2,
    "ss_clip_skip": 3,
    "ss_num_train_images": 10,
    "ss_tag_frequency": 20,
}

KOHYA_PREFIXES: dict[str, LoraPart] = {
    "lora_unet_": "unet",
    "lora_te1_": "text_encoder",
    "lora_te2_": "text_encoder_2",
}
DIFFUSERS_PREFIXES: dict[str, LoraPart] = {
    "unet.": "unet",
    "text_encoder.": "text_encoder",
    "text_encoder_2.": "text_encoder_2",
}
PEFT_PREFIX = "base_model.model."
# A diffusers UNet's top-level modules: a key starting with one is a UNet key without the `unet.` prefix.
UNET_MODULES = frozenset(
    {
        "down_blocks",
        "up_blocks",
        "mid_block",
        "conv_in",
        "conv_out",
        "conv_norm_out",
        "time_embedding",
        "add_embedding",
    }
)
# (suffix, role) of a LoRA module's keys, longest first; `role` is "down", "up" or "alpha".
KOHYA_ROLES: tuple[tuple[str, str], ...] = (
    (".lora_down.weight", "down"),
    (".lora_up.weight", "up"),
    (".alpha", "alpha"),
)
DIFFUSERS_ROLES: tuple[tuple[str, str], ...] = (
    ("_lora.down.weight", "down"),
    ("_lora.up.weight", "up"),
    (".lora.down.weight", "down"),
    (".lora.up.weight", "up"),
    (".lora_A.weight", "down"),
    (".lora_B.weight", "up"),
    (".lora_A.default.weight", "down"),
    (".lora_B.default.weight", "up"),
    (".alpha", "alpha"),
)
# Key fragments of adapters that are not plain LoRA, and what they are.
LYCORIS_MARKERS = (
    ("hada_w1", "LoHa"),
    ("hada_t1", "LoHa"),
    ("lokr_", "LoKr"),
    (".oft_", "OFT"),
    ("oft_blocks", "OFT"),
    ("oft_diag", "OFT"),
    (".on_input", "IA3"),
    (".lora_mid.", "LoCon with CP decomposition (lora_mid)"),
    (".a1.weight", "GLoRA"),
    (".b1.weight", "GLoRA"),
    (".diff_b", "full-weight difference (diff)"),
    (".w_norm", "norm-layer"),
    (".b_norm", "norm-layer"),
)
DORA_MARKERS = ("dora_scale", "lora_magnitude_vector")
# Keys of LoRAs for DiT models (SD3's and Flux's transformer, SD3's third text encoder).
TRANSFORMER_PREFIXES = (
    "transformer.",
    "lora_transformer_",
    "lora_unet_double_blocks",
    "lora_unet_single_blocks",
    "lora_te3_",
)
CHECKPOINT_PREFIXES = ("model.diffusion_model.", "conditioner.", "cond_stage_model.", "first_stage_model.")
FLOAT_DTYPES = frozenset({"F16", "BF16", "F32", "F64"})
# Cross-attention widths of the SD 1.x (CLIP ViT-L) and 2.x (OpenCLIP ViT-H) UNets; SDXL's is 2048.
OLDER_CROSS_ATTENTION_WIDTHS = frozenset({768, 1024})
OLDER_SD = "a LoRA for Stable Diffusion 1.x/2.x, not SDXL"


class NotALora(ValueError):
    """Why a file is not a LoRA this server serves."""


class UnknownLora(LookupError):
    """No LoRA of the library answers to `name`."""

    def __init__(self, name: str, known: Sequence[str]) -> None:
        super().__init__(name)
        self.name = name
        self.known = tuple(known)

    def __str__(self) -> str:
        shown = self.name if len(self.name) <= 80 else self.name[:77] + "..."
        known = ", ".join(self.known) if self.known else "none (--lora-dir)"
        return f"no LoRA {shown!r} is served here; the LoRAs are: {known}"


class RefusedLora(ValueError):
    """`name` is a file of the library that is not served, for `reason`."""

    def __init__(self, name: str, reason: str) -> None:
        super().__init__(name)
        self.name = name
        self.reason = reason

    def __str__(self) -> str:
        return f"the LoRA {self.name!r} is not served here: {self.reason}"


@dataclass(frozen=True)
class Lora:
    """One entry of the listing.

    `name`: the file name without `.safetensors`; `filename`: its path; `size_bytes`: bytes on disk;
    `sha256`: A1111's LoRA hash (SHA-256 of the bytes after the safetensors header, hex; None where refused
    before hashing); `format`: its key names' format; `rank`: its largest rank (the down weights' first
    dimension); `parts`: the models it changes, in SDXL's order; `alias`: A1111's (`ss_output_name`, else the
    name); `metadata`: the header's `__metadata__`, A1111's way; `refused`: why it is not served (None: it
    is)."""

    name: str
    filename: Path
    size_bytes: int = 0
    sha256: str | None = None
    format: LoraFormat | None = None
    rank: int = 0
    parts: tuple[LoraPart, ...] = ()
    alias: str = ""
    metadata: Mapping[str, Any] = field(default_factory=dict, hash=False)
    refused: str | None = None

    @property
    def shorthash(self) -> str | None:
        """A1111's LoRA short hash: the hash's first 12 hex digits."""
        return self.sha256[:SHORTHASH_LENGTH] if self.sha256 else None


@dataclass(frozen=True)
class LoraShape:
    """What a LoRA's header tells: its format, largest rank and the models it changes."""

    format: LoraFormat
    rank: int
    parts: tuple[LoraPart, ...]


@dataclass(frozen=True)
class LoraListing:
    """The LoRA library at one moment: served LoRAs by name, the refused entries, and A1111's alias table
    (`aliases`: every name and alias to the name it means; `ambiguous`: aliases, lower case, that two files
    share or that are reserved, which answer only to a file of that name)."""

    loras: dict[str, Lora] = field(default_factory=dict)
    refused: tuple[Lora, ...] = ()
    aliases: dict[str, str] = field(default_factory=dict)
    ambiguous: frozenset[str] = RESERVED_ALIASES

    @classmethod
    def of(cls, loras: Iterable[Lora], refused: Iterable[Lora] = ()) -> LoraListing:
        """A listing of these entries, its aliases made as A1111's process_network_files makes them."""
        served = {lora.name: lora for lora in loras}
        aliases: dict[str, str] = {}
        ambiguous = set(RESERVED_ALIASES)
        for lora in served.values():
            if lora.alias in aliases:
                ambiguous.add(lora.alias.lower())
            aliases[lora.name] = lora.name
            aliases[lora.alias] = lora.name
        return cls(served, tuple(refused), aliases, frozenset(ambiguous))

    @property
    def names(self) -> list[str]:
        return list(self.loras)

    def find(self, name: object) -> Lora:
        """The LoRA `name` names: its name, or its alias unless that is ambiguous (A1111's load_networks
        lookup). Raises RefusedLora for a refused file's name or alias, UnknownLora for anything else."""
        if not isinstance(name, str) or not name or len(name) > 2 * MAX_NAME_LENGTH:
            raise UnknownLora(str(name), self.names)
        if name.lower() in self.ambiguous:
            found = self.loras.get(name)
        else:
            found = self.loras.get(self.aliases.get(name, ""))
        if found is not None:
            return found
        for entry in self.refused:
            if name in (entry.name, entry.alias):
                raise RefusedLora(name, entry.refused or "refused")
        raise UnknownLora(name, self.names)


class LoraLibrary:
    """The listing, refreshed on demand (`refresh`, on a host thread: it reads the folders' headers and
    hashes new files), read from any thread (`listing` is replaced whole, never changed in place)."""

    def __init__(self, lora_dirs: Sequence[Path] = ()) -> None:
        self.lora_dirs = tuple(lora_dirs)
        self._hashes: dict[tuple[str, int, int], str] = {}
        self._lock = threading.Lock()
        self.listing = LoraListing()

    def refresh(self) -> LoraListing:
        """Read the folders again: new files are listed, removed ones go."""
        with self._lock:
            served: dict[str, Lora] = {}
            refused: list[Lora] = []
            for entry in self.scan():
                if entry.refused is not None:
                    refused.append(entry)
                elif entry.name in served:
                    if same_file(served[entry.name].filename, entry.filename):
                        continue
                    reason = f"the name {entry.name!r} is taken by {served[entry.name].filename}"
                    refused.append(dataclasses.replace(entry, refused=reason))
                else:
                    served[entry.name] = entry
            self.listing = LoraListing.of(served.values(), refused)
            return self.listing

    def scan(self) -> Iterable[Lora]:
        """Every entry in the folders and their subfolders, served or refused, in path order per folder."""
        for folder in self.lora_dirs:
            root = folder.expanduser()
            if not root.is_dir():
                yield Lora(root.name, root, refused="the folder cannot be read: not a folder")
                continue
            errors: list[OSError] = []
            for directory, subfolders, files in os.walk(root, onerror=errors.append):
                subfolders.sort()
                for file in sorted(files):
                    entry = self.entry(root, Path(directory) / file)
                    if entry is not None:
                        yield entry
            for error in errors:
                where = Path(error.filename) if error.filename else root
                yield Lora(where.name, where, refused=f"the folder cannot be read: {error.strerror}")

    def entry(self, folder: Path, path: Path) -> Lora | None:
        """`path`'s entry, or None for what is not a model at all (a preview image, a .json note)."""
        suffix = path.suffix.lower()
        if suffix != ".safetensors" and suffix not in PICKLE_SUFFIXES:
            return None
        name = path.stem
        if len(name.encode()) > MAX_NAME_LENGTH:
            return Lora(name[:40] + "...", path, refused="the name is too long")
        if path.is_symlink() and not is_within(path.resolve(), folder.resolve()):
            return Lora(name, path, refused="a symlink out of the folder (not followed)")
        size = size_of(path)
        if suffix in PICKLE_SUFFIXES:
            return Lora(
                name,
                path,
                size_bytes=size,
                alias=name,
                refused=f"a pickle file ({suffix}): loading one runs arbitrary code; convert it to "
                ".safetensors",
            )
        try:
            header = read_safetensors(path)
        except NotACheckpoint as error:
            return Lora(name, path, size_bytes=size, alias=name, refused=str(error))
        metadata = a1111_metadata(header.metadata)
        output_name = metadata.get("ss_output_name")
        alias = output_name if isinstance(output_name, str) and output_name else name
        found = Lora(name, path, size_bytes=size, alias=alias, metadata=metadata)
        try:
            shape = classify_lora(header.tensors)
        except NotALora as error:
            return dataclasses.replace(found, refused=str(error))
        return dataclasses.replace(
            found,
            sha256=self.tensor_hash(path, header.data_start),
            format=shape.format,
            rank=shape.rank,
            parts=shape.parts,
        )

    def tensor_hash(self, path: Path, data_start: int) -> str:
        """A1111's LoRA hash (the bytes after the header), remembered by (path, size, mtime)."""
        stat = path.stat()
        key = (str(path.resolve()), stat.st_size, stat.st_mtime_ns)
        if key not in self._hashes:
            self._hashes[key] = sha256_of(path, start=data_start)
        return self._hashes[key]


def a1111_metadata(metadata: Mapping[str, Any]) -> dict[str, Any]:
    """`__metadata__` as A1111 shows it: values that are JSON objects decoded, A1111's keys first."""
    decoded: dict[str, Any] = {}
    for key, value in metadata.items():
        decoded[str(key)] = value
        if isinstance(value, str) and value.startswith("{"):
            with contextlib.suppress(ValueError):
                decoded[str(key)] = json.loads(value)
    return dict(sorted(decoded.items(), key=lambda item: METADATA_ORDER.get(item[0], 999)))


@dataclass
class Module:
    """One layer's LoRA weights as the header names them: (key, dtype, shape) per role."""

    part: LoraPart
    weights: dict[str, tuple[str, str, list[int]]] = field(default_factory=dict)


def classify_lora(table: Mapping[str, Any]) -> LoraShape:
    """What a safetensors tensor table holds, as a LoRA; NotALora saying what it is instead."""
    keys = list(table)
    if not keys:
        raise NotALora("no tensors at all: not a LoRA")
    for marker in DORA_MARKERS:
        if any(marker in key for key in keys):
            raise NotALora(
                f"a DoRA ({marker} keys): not supported, a DoRA's weight decomposition cannot be "
                "applied per row; " + SUPPORTED
            )
    for marker, kind in LYCORIS_MARKERS:
        if any(marker in key for key in keys):
            raise NotALora(f"a LyCORIS {kind} adapter ({marker} keys): not supported: {SUPPORTED}")
    if any(key.endswith(".diff") for key in keys):
        raise NotALora(f"a LyCORIS full-weight difference (.diff keys): not supported: {SUPPORTED}")
    transformer = next((key for key in keys if key.startswith(TRANSFORMER_PREFIXES)), None)
    if transformer is not None:
        raise NotALora(f"a LoRA for a transformer model (SD3, Flux, ...), not SDXL ({shown(transformer)})")
    if any(key.startswith("bundle_emb.") for key in keys):
        raise NotALora("bundled textual-inversion embeddings (bundle_emb. keys): not supported")
    if any(key.startswith("lora_te_") for key in keys):
        raise NotALora(f"{OLDER_SD} (lora_te_ keys: one text encoder)")
    weight_suffixes = tuple(suffix for suffix, role in (*KOHYA_ROLES, *DIFFUSERS_ROLES) if role != "alpha")
    if not any(key.endswith(weight_suffixes) for key in keys):
        if any(key.startswith(CHECKPOINT_PREFIXES) for key in keys):
            raise NotALora("a checkpoint, not a LoRA (a checkpoint goes in --checkpoint-dir)")
        raise NotALora("no LoRA weights (lora_down/lora_up or lora_A/lora_B keys): not a LoRA")
    modules, formats = lora_modules(table)
    if len(formats) > 1:
        raise NotALora("its keys mix kohya and diffusers names: not one LoRA format")
    rank = max(module_rank(name, module) for name, module in modules.items())
    if rank > MAX_LORA_RANK:
        raise NotALora(f"its rank {rank} is over {MAX_LORA_RANK}, the largest served here (MAX_LORA_RANK)")
    for name, module in modules.items():
        down = module.weights["down"]
        if (
            "attn2" in name
            and ("to_k" in name or "to_v" in name)
            and down[2][1] in OLDER_CROSS_ATTENTION_WIDTHS
        ):
            raise NotALora(f"{OLDER_SD} (its cross-attention reads {down[2][1]}-wide text embeddings)")
    parts = {module.part for module in modules.values()}
    return LoraShape(
        formats.pop(), rank, tuple(part for part in DIFFUSERS_PREFIXES.values() if part in parts)
    )


def lora_modules(table: Mapping[str, Any]) -> tuple[dict[str, Module], set[LoraFormat]]:
    """The table's keys grouped by layer, and the formats their names are in; NotALora for a key that is
    neither format's."""
    modules: dict[str, Module] = {}
    formats: set[LoraFormat] = set()
    for key, info in table.items():
        kohya = next((part for prefix, part in KOHYA_PREFIXES.items() if key.startswith(prefix)), None)
        if kohya is not None:
            format_: LoraFormat = "kohya"
            part: LoraPart = kohya
            roles = KOHYA_ROLES
        else:
            format_, part, roles = "diffusers", diffusers_part(key), DIFFUSERS_ROLES
        found = next(((key[: -len(suffix)], role) for suffix, role in roles if key.endswith(suffix)), None)
        if found is None:
            raise NotALora(f"{shown(key)} is not a LoRA weight of the {format_} format")
        module_name, role = found
        try:
            dtype, shape = str(info["dtype"]), [int(side) for side in info["shape"]]
        except (TypeError, KeyError, ValueError):
            raise NotALora(f"its tensor table is malformed at {shown(key)}") from None
        module = modules.setdefault(module_name, Module(part))
        if role in module.weights:
            raise NotALora(f"{shown(module_name)} has two {role} weights")
        module.weights[role] = (key, dtype, shape)
        formats.add(format_)
    return modules, formats


def diffusers_part(key: str) -> LoraPart:
    """The model a diffusers/PEFT key changes; NotALora for keys of another model."""
    for prefix, part in DIFFUSERS_PREFIXES.items():
        if key.startswith(prefix):
            return part
    bare = key.removeprefix(PEFT_PREFIX)
    if bare.split(".", 1)[0] in UNET_MODULES:
        return "unet"
    if bare.startswith("text_model."):
        raise NotALora(
            f"a text-encoder LoRA without a text_encoder. or text_encoder_2. prefix ({shown(key)}): which of "
            "SDXL's two text encoders it changes cannot be told"
        )
    raise NotALora(f"not an SDXL LoRA: {shown(key)} names no SDXL UNet or text-encoder layer")


def module_rank(name: str, module: Module) -> int:
    """A layer's rank, checked: a down and an up weight of floats, of at least 2 dimensions, agreeing."""
    down, up = module.weights.get("down"), module.weights.get("up")
    if down is None or up is None:
        missing = "up" if down is not None else "down"
        raise NotALora(f"incomplete: {shown(name)} has no {missing} weight")
    for key, dtype, shape in (down, up):
        if dtype not in FLOAT_DTYPES:
            raise NotALora(f"{shown(key)} holds {dtype}, not floating-point weights")
        if len(shape) < 2 or min(shape) < 1:
            raise NotALora(f"{shown(key)} has the shape {shape}, not a LoRA weight's")
    rank = down[2][0]
    if up[2][1] != rank:
        raise NotALora(f"{shown(name)}: its up weight {up[2]} and down weight {down[2]} disagree in rank")
    return rank


def shown(text: str) -> str:
    return repr(text if len(text) <= 120 else text[:117] + "...")
