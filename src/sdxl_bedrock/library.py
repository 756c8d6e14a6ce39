"""The model library: every checkpoint a server can serve, found in `--checkpoint-dir` folders, named on
every wire by the one listing here. No torch: the wires list and look up checkpoints without the engine.

What a folder holds (directly in it; subfolders that are not diffusers folders are not searched):
- an SDXL single-file checkpoint (`NAME.safetensors`, Stability's original SGM layout), read with SDXL
  base's shipped configs, or with `--single-file-config` where its architecture differs (its UNet's first
  convolution and its second text encoder's width are compared with each config, from the file's header);
- a diffusers SDXL folder (`NAME/model_index.json` naming an SDXL pipeline).
Everything else that looks like a model is listed as *refused*, with the reason, and never loaded: pickle
checkpoints (`.ckpt`, `.pt`, `.pth`, `.bin`: loading one runs arbitrary code), SD 1.x and 2.x checkpoints,
the SDXL refiner, inpainting UNets, LoRA and LyCORIS adapters, truncated or unreadable files, symlinks out
of the folder, and names already taken. Reading a safetensors header reads only the header (its JSON), so
listing is cheap; the SHA-256 A1111 shows (`title`'s short hash) reads every byte once per file and is
remembered by (path, size, mtime).

Names, as AUTOMATIC1111 forms them (modules/sd_models.py, CheckpointInfo): `name` is the file or folder
name without extension; `title` is `FILE [shorthash]`, the short hash being the SHA-256's first 10 hex
digits; A1111 also answers to the full SHA-256 and its legacy 8-digit `model_hash`. A name is only ever
looked up in the listing, never joined into a path, so `../x`, absolute paths and over-long names match
nothing.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import os
import re
import struct
import threading
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, NamedTuple

from sdxl_bedrock.config import checkpoint_name
from sdxl_bedrock.schema import MAX_LORA_WEIGHT, LoraUse

CheckpointKind = Literal["embedded", "sdxl-random", "diffusers-folder", "single-file", "hf-cache"]
# Made from code, never read from a file the operator placed (engine/tiny.py, engine/models.py): nothing
# to hash. Named here, not imported, so that listing checkpoints never imports torch.
BUILT_IN_MODELS: dict[str, CheckpointKind] = {
    "tiny": "embedded",
    "micro": "embedded",
    "sdxl-random": "sdxl-random",
}

SDXL_BASE_CONFIG_DIR = Path(__file__).parent / "engine" / "configs" / "sdxl-base"
SDXL_PIPELINES = frozenset({"StableDiffusionXLPipeline", "StableDiffusionXLImg2ImgPipeline"})
PICKLE_SUFFIXES = frozenset({".ckpt", ".pt", ".pth", ".bin"})
# Longer than any file name a filesystem keeps (255 bytes): a longer name can only be a probe.
MAX_NAME_LENGTH = 255
HEADER_LIMIT = 100 * 2**20  # safetensors' own reader refuses headers over 100 MB
LEGACY_HASH_OFFSET, LEGACY_HASH_LENGTH = 0x100000, 0x10000
HASH_CHUNK = 8 * 2**20

UNET_CONV_IN = "model.diffusion_model.input_blocks.0.0.weight"
OPEN_CLIP_LN_FINAL = "conditioner.embedders.1.model.ln_final.weight"


class UnknownCheckpoint(LookupError):
    """No checkpoint of the library answers to `name` (each wire answers its own not-found error)."""

    def __init__(self, name: str, known: Sequence[str]) -> None:
        super().__init__(name)
        self.name = name
        self.known = tuple(known)

    def __str__(self) -> str:
        shown = self.name if len(self.name) <= 80 else self.name[:77] + "..."
        return f"no checkpoint {shown!r} is served here; the checkpoints are: {', '.join(self.known)}"


@dataclass(frozen=True)
class Checkpoint:
    """One entry of the listing.

    `name` is what every wire calls it (the file or folder name without extension); `filename` its path
    on disk; `config` the diffusers config folder a single file is read with (None: SDXL base's, or not a
    single file); `size_bytes` the bytes on disk; `sha256` the full hash (None where there are no files:
    sdxl-random); `refused` why it cannot be served (None: it can)."""

    name: str
    kind: CheckpointKind | Literal["refused"]
    filename: Path | None
    size_bytes: int = 0
    sha256: str | None = None
    legacy_hash: str | None = None
    config: Path | None = None
    refused: str | None = None
    spec: str | None = None  # what the engine loads: the --model spec, or the file or folder
    is_default: bool = False  # --model's: it also answers to --model as given

    @property
    def shorthash(self) -> str | None:
        return self.sha256[:10] if self.sha256 else None

    @property
    def file_title(self) -> str:
        """A1111's `name`: the file or folder name, extension kept."""
        return self.filename.name if self.filename is not None else self.name

    @property
    def title(self) -> str:
        """A1111's title: `FILE [shorthash]`."""
        return f"{self.file_title} [{self.shorthash}]" if self.shorthash else self.file_title

    @property
    def ids(self) -> tuple[str, ...]:
        """Every string that names it exactly, as A1111's CheckpointInfo.ids (plus the --model spec)."""
        ids = [self.name, self.file_title, self.title]
        if self.shorthash:
            ids += [self.shorthash, self.sha256 or "", f"{self.name} [{self.shorthash}]"]
        if self.legacy_hash:
            ids += [self.legacy_hash, f"{self.file_title} [{self.legacy_hash}]"]
        if self.is_default and self.spec:
            ids.append(self.spec)
        return tuple(dict.fromkeys(ids))

    def describe(self) -> dict[str, Any]:
        """A JSON-ready line of `sdxl-bedrock models`."""
        return {
            "name": self.name,
            "title": self.title,
            "kind": self.kind,
            "filename": str(self.filename) if self.filename else None,
            "size_bytes": self.size_bytes,
            "sha256": self.sha256,
            "config": str(self.config) if self.config else None,
            "refused": self.refused,
        }


@dataclass(frozen=True)
class Listing:
    """The library at one moment: served checkpoints by name (the default first), and refused entries."""

    default: str
    checkpoints: dict[str, Checkpoint]
    refused: tuple[Checkpoint, ...] = ()

    @property
    def names(self) -> list[str]:
        return list(self.checkpoints)

    def find(self, name: object, *, closest: bool = False) -> Checkpoint:
        """The checkpoint `name` names (any of its `ids`); with `closest`, A1111's fallback
        (get_closet_checkpoint_match): the shortest title containing `name`, then `name` without a
        trailing `[hash]`. Raises UnknownCheckpoint."""
        if not isinstance(name, str) or not name or len(name) > 2 * MAX_NAME_LENGTH:
            raise UnknownCheckpoint(str(name), self.names)
        for checkpoint in self.checkpoints.values():
            if name in checkpoint.ids:
                return checkpoint
        if closest:
            for search in (name, re.sub(r"\s*\[[^]]+]\s*$", "", name)):
                found = sorted(
                    (info for info in self.checkpoints.values() if search and search in info.title),
                    key=lambda info: len(info.title),
                )
                if found:
                    return found[0]
        raise UnknownCheckpoint(name, self.names)


def only_model(model: str) -> Listing:
    """A listing of `--model` alone, read from no file (no hash): for code that runs without a library."""
    name = checkpoint_name(model)
    builtin = model in BUILT_IN_MODELS
    kind: CheckpointKind = BUILT_IN_MODELS.get(model, "single-file")
    entry = Checkpoint(name, kind, None if builtin else Path(model), spec=model, is_default=True)
    return Listing(name, {name: entry})


class Library:
    """The listing, refreshed on demand (`refresh`, on a host thread: it reads the folders and hashes new
    files), read from any thread (`listing` is replaced whole, never changed in place)."""

    def __init__(
        self,
        model: str,
        checkpoint_dirs: Sequence[Path] = (),
        *,
        single_file_config: Path | None = None,
    ) -> None:
        self.model = model
        self.checkpoint_dirs = tuple(checkpoint_dirs)
        self.single_file_config = single_file_config
        self._hashes: dict[tuple[str, int, int], tuple[str, str | None]] = {}
        self._lock = threading.Lock()
        self.listing = Listing(checkpoint_name(model), {})

    def refresh(self) -> Listing:
        """Read the folders again: new files are listed, removed ones go (a loaded one keeps serving what
        it has queued: the engine holds it until its rows are done)."""
        with self._lock:
            default = self.default_checkpoint()
            checkpoints = {default.name: default}
            refused: list[Checkpoint] = []
            for entry in self.scan():
                if entry.refused is not None:
                    refused.append(entry)
                elif entry.name in checkpoints:
                    if same_file(checkpoints[entry.name].filename, entry.filename):
                        continue
                    taken = checkpoints[entry.name].filename or checkpoints[entry.name].name
                    refused.append(refuse(entry, f"the name {entry.name!r} is taken by {taken}"))
                else:
                    checkpoints[entry.name] = entry
            self.listing = Listing(default.name, checkpoints, tuple(refused))
            return self.listing

    def default_checkpoint(self) -> Checkpoint:
        """`--model` as an entry: a built-in name, a path, or a cached Hugging Face repo."""
        model = self.model
        name = checkpoint_name(model)
        if model in BUILT_IN_MODELS:
            return Checkpoint(name, BUILT_IN_MODELS[model], None, spec=model, is_default=True)
        path = Path(model).expanduser()
        if path.is_dir():
            return dataclasses.replace(self.folder_entry(path, name), spec=model, is_default=True)
        if path.is_file():
            entry = self.file_entry(path, name)
            if entry.refused:
                raise ValueError(f"--model {model}: {entry.refused}")
            return dataclasses.replace(entry, spec=model, is_default=True)
        return Checkpoint(name, "hf-cache", None, spec=model, is_default=True)

    def scan(self) -> Iterable[Checkpoint]:
        """Every entry directly in the folders, served or refused, in name order per folder."""
        for folder in self.checkpoint_dirs:
            try:
                children = sorted(folder.expanduser().iterdir(), key=lambda path: path.name)
            except OSError as error:
                yield Checkpoint(
                    folder.name, "refused", folder, refused=f"the folder cannot be read: {error}"
                )
                continue
            for path in children:
                entry = self.entry(folder.expanduser(), path)
                if entry is not None:
                    yield entry

    def entry(self, folder: Path, path: Path) -> Checkpoint | None:
        """`path`'s entry, or None for what is not a model at all (a README, a preview image)."""
        suffix = path.suffix.lower()
        is_model_file = suffix == ".safetensors" or suffix in PICKLE_SUFFIXES
        is_folder = path.is_dir() and (path / "model_index.json").exists()
        if not (is_model_file or is_folder):
            return None
        name = path.stem if is_model_file else path.name
        if len(name.encode()) > MAX_NAME_LENGTH:
            return Checkpoint(name[:40] + "...", "refused", path, refused="the name is too long")
        if path.is_symlink() and not is_within(path.resolve(), folder.resolve()):
            return Checkpoint(name, "refused", path, refused="a symlink out of the folder (not followed)")
        if suffix in PICKLE_SUFFIXES:
            return Checkpoint(
                name,
                "refused",
                path,
                size_bytes=size_of(path),
                refused=f"a pickle file ({suffix}): loading one runs arbitrary code; convert it to "
                ".safetensors",
            )
        if is_folder:
            return self.folder_entry(path, name)
        return self.file_entry(path, name)

    def file_entry(self, path: Path, name: str) -> Checkpoint:
        size = size_of(path)
        try:
            header = read_safetensors_header(path)
            config = self.config_for(classify_single_file(header))
        except NotACheckpoint as error:
            return Checkpoint(name, "refused", path, size_bytes=size, refused=str(error))
        sha256, legacy = self.hashes(path)
        return Checkpoint(
            name,
            "single-file",
            path,
            size_bytes=size,
            sha256=sha256,
            legacy_hash=legacy,
            config=config,
            spec=str(path),
        )

    def config_for(self, shapes: ArchitectureShapes) -> Path | None:
        """The config folder to read a single file with: None for SDXL base's; NotACheckpoint if none fits."""
        base = config_shapes(SDXL_BASE_CONFIG_DIR)
        if shapes == base:
            return None
        if self.single_file_config is not None and shapes == config_shapes(self.single_file_config):
            return self.single_file_config
        hint = (
            f"nor --single-file-config {self.single_file_config}'s"
            if self.single_file_config
            else "and no --single-file-config is given"
        )
        expected = base.describe() if base is not None else "unreadable"
        raise NotACheckpoint(
            f"its architecture ({shapes.describe()}) is not SDXL base's ({expected}), {hint}"
        )

    def folder_entry(self, path: Path, name: str) -> Checkpoint:
        try:
            index = json.loads((path / "model_index.json").read_text())
            pipeline = index.get("_class_name") if isinstance(index, dict) else None
        except (OSError, ValueError) as error:
            return Checkpoint(name, "refused", path, refused=f"model_index.json cannot be read: {error}")
        size = sum(size_of(file) for file in folder_files(path))
        if pipeline not in SDXL_PIPELINES:
            return Checkpoint(
                name,
                "refused",
                path,
                size_bytes=size,
                refused=f"a {pipeline} folder, not an SDXL one ({', '.join(sorted(SDXL_PIPELINES))})",
            )
        missing = [
            part for part in ("unet", "vae", "text_encoder", "text_encoder_2") if not (path / part).is_dir()
        ]
        if missing:
            return Checkpoint(
                name, "refused", path, size_bytes=size, refused=f"incomplete: no {', '.join(missing)}"
            )
        return Checkpoint(
            name, "diffusers-folder", path, size_bytes=size, sha256=self.folder_hash(path), spec=str(path)
        )

    def hashes(self, path: Path) -> tuple[str, str | None]:
        """(SHA-256, A1111's legacy model_hash) of a file, remembered by (path, size, mtime)."""
        stat = path.stat()
        key = (str(path.resolve()), stat.st_size, stat.st_mtime_ns)
        if key not in self._hashes:
            self._hashes[key] = (sha256_of(path), legacy_model_hash(path))
        return self._hashes[key]

    def folder_hash(self, folder: Path) -> str:
        """A folder's hash: SHA-256 over its files' relative paths and hashes (A1111 hashes no folders)."""
        digest = hashlib.sha256()
        for file in folder_files(folder):
            digest.update(str(file.relative_to(folder)).encode() + b"\0" + self.hashes(file)[0].encode())
        return digest.hexdigest()


@dataclass(frozen=True)
class AliasTarget:
    """What a `--model-alias NAME=TARGET` serves: a checkpoint's name, and LoRA adapters on it."""

    checkpoint: str
    loras: tuple[LoraUse, ...] = ()


def alias_target(target: str) -> AliasTarget:
    """`CHECKPOINT+LORA:WEIGHT+LORA:TE_WEIGHT:UNET_WEIGHT+LORA` -> AliasTarget: each adapter after a `+`,
    its weights as in A1111's `<lora:NAME:TE:UNET>` (none: 1.0; one: both parts'). ValueError where a
    weight is not a finite number, or an adapter or the checkpoint is unnamed."""
    checkpoint, *adapters = (part.strip() for part in target.split("+"))
    if not checkpoint:
        raise ValueError(f"{target!r}: names no checkpoint before its adapters")
    loras = []
    for adapter in adapters:
        name, *weights = (item.strip() for item in adapter.split(":"))
        if not name or len(weights) > 2:
            raise ValueError(f"{target!r}: {adapter!r} wants LORA, LORA:WEIGHT or LORA:TE_WEIGHT:UNET_WEIGHT")
        try:
            numbers = [float(weight) for weight in weights]
        except ValueError:
            raise ValueError(f"{target!r}: the weights of {adapter!r} are not numbers") from None
        if not all(math.isfinite(number) and abs(number) <= MAX_LORA_WEIGHT for number in numbers):
            raise ValueError(
                f"{target!r}: the weights of {adapter!r} are not finite numbers within "
                f"-{MAX_LORA_WEIGHT:g}..{MAX_LORA_WEIGHT:g}"
            )
        text_weight = numbers[0] if numbers else 1.0
        unet_weight = numbers[1] if len(numbers) > 1 else text_weight
        loras.append(LoraUse(name, unet_weight=unet_weight, text_weight=text_weight))
    return AliasTarget(checkpoint, tuple(loras))


class LibraryError(ValueError):
    """The library's settings do not hold together (an alias naming no checkpoint): no start."""


class NotACheckpoint(ValueError):
    """Why a file is not an SDXL checkpoint this server reads."""


@dataclass(frozen=True)
class ArchitectureShapes:
    """What tells SDXL architectures apart, from weights' shapes: the UNet's first convolution
    (channels out, channels in) and the second text encoder's width."""

    unet_channels: int
    unet_in_channels: int
    text_encoder_2_width: int

    def describe(self) -> str:
        return (
            f"UNet {self.unet_in_channels} to {self.unet_channels} channels, "
            f"second text encoder {self.text_encoder_2_width} wide"
        )


def config_shapes(config: Path) -> ArchitectureShapes | None:
    try:
        unet = json.loads((config / "unet" / "config.json").read_text())
        encoder = json.loads((config / "text_encoder_2" / "config.json").read_text())
        return ArchitectureShapes(unet["block_out_channels"][0], unet["in_channels"], encoder["hidden_size"])
    except (OSError, ValueError, KeyError, IndexError, TypeError):
        return None


class SafetensorsHeader(NamedTuple):
    """A .safetensors file's header: `tensors` (name: {dtype, shape, data_offsets}), `metadata` (its
    `__metadata__`, string to string as the format has it; {} where there is none) and `data_start`, the
    byte where the tensors' data begins (8 + the header's length)."""

    tensors: dict[str, Any]
    metadata: dict[str, Any]
    data_start: int


def read_safetensors_header(path: Path) -> dict[str, Any]:
    """The tensor table of a .safetensors file (name: {dtype, shape, data_offsets}), checked against the
    file's size; NotACheckpoint when it is not a whole safetensors file. Reads only the header."""
    return read_safetensors(path).tensors


def read_safetensors(path: Path) -> SafetensorsHeader:
    """A .safetensors file's header (`read_safetensors_header`'s checks), its metadata kept."""
    try:
        size = path.stat().st_size
        with path.open("rb") as file:
            prefix = file.read(8)
            if len(prefix) < 8:
                raise NotACheckpoint("not a safetensors file (shorter than its header)")
            (length,) = struct.unpack("<Q", prefix)
            if length > HEADER_LIMIT or 8 + length > size:
                raise NotACheckpoint("not a safetensors file, or truncated (its header runs past its end)")
            table = json.loads(file.read(length))
    except OSError as error:
        raise NotACheckpoint(f"cannot be read: {error}") from None
    except (ValueError, UnicodeDecodeError):
        raise NotACheckpoint("not a safetensors file (its header is not JSON)") from None
    if not isinstance(table, dict):
        raise NotACheckpoint("not a safetensors file (its header is not a table)")
    metadata = table.pop("__metadata__", None)
    data_bytes = size - 8 - length
    try:
        end = max((int(info["data_offsets"][1]) for info in table.values()), default=0)
    except (TypeError, KeyError, IndexError, ValueError):
        raise NotACheckpoint("not a safetensors file (its tensor table is malformed)") from None
    if end > data_bytes:
        raise NotACheckpoint(
            f"truncated: its tensors need {end} bytes after the header, the file has {data_bytes}"
        )
    return SafetensorsHeader(table, metadata if isinstance(metadata, dict) else {}, 8 + length)


def classify_single_file(table: dict[str, Any]) -> ArchitectureShapes:
    """The architecture of an SDXL single file, or NotACheckpoint saying what the file is instead."""
    keys = table.keys()

    def any_key(*parts: str) -> bool:
        return any(part in key for key in keys for part in parts)

    if any_key("lora_up", "lora_down", "lora_A", "lora_B", ".lora."):
        raise NotACheckpoint("a LoRA adapter, not a checkpoint (adapters are not served as checkpoints)")
    if any_key("hada_w1", "lokr_w1", ".oft_"):
        raise NotACheckpoint("a LyCORIS adapter (LoHa, LoKr or OFT), not a checkpoint")
    if any(key.startswith("cond_stage_model.transformer.") for key in keys):
        raise NotACheckpoint("a Stable Diffusion 1.x checkpoint, not SDXL")
    if any(key.startswith("cond_stage_model.model.") for key in keys):
        raise NotACheckpoint("a Stable Diffusion 2.x checkpoint, not SDXL")
    if UNET_CONV_IN not in table:
        raise NotACheckpoint(
            "not an SDXL single-file checkpoint (no UNet under model.diffusion_model.: a diffusers component "
            "file, a VAE, or another model)"
        )
    if OPEN_CLIP_LN_FINAL not in table:
        if any(key.startswith("conditioner.embedders.0.model.") for key in keys):
            raise NotACheckpoint("the SDXL refiner (one text encoder): not served, it is not a base model")
        raise NotACheckpoint("not an SDXL checkpoint (no second text encoder under conditioner.embedders.1.)")
    try:
        channels, in_channels = (int(n) for n in table[UNET_CONV_IN]["shape"][:2])
        width = int(table[OPEN_CLIP_LN_FINAL]["shape"][0])
    except (KeyError, TypeError, ValueError, IndexError):
        raise NotACheckpoint("its tensor table is malformed") from None
    if in_channels == 9:
        raise NotACheckpoint("an inpainting checkpoint (its UNet takes 9 channels): not served")
    return ArchitectureShapes(channels, in_channels, width)


def refuse(entry: Checkpoint, reason: str) -> Checkpoint:
    return dataclasses.replace(entry, kind="refused", refused=reason, spec=None)


def is_within(path: Path, folder: Path) -> bool:
    return path == folder or folder in path.parents


def same_file(first: Path | None, second: Path | None) -> bool:
    try:
        return first is not None and second is not None and os.path.samefile(first, second)
    except OSError:
        return False


def size_of(path: Path) -> int:
    try:
        return path.stat().st_size
    except OSError:
        return 0


def folder_files(folder: Path) -> list[Path]:
    return sorted(path for path in folder.rglob("*") if path.is_file())


def sha256_of(path: Path, start: int = 0) -> str:
    """SHA-256 of a file's bytes from `start` on (hex)."""
    digest = hashlib.sha256()
    with path.open("rb") as file:
        file.seek(start)
        while chunk := file.read(HASH_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def legacy_model_hash(path: Path) -> str | None:
    """A1111's old `model_hash`: SHA-256 of 64 KiB at 1 MiB, 8 hex digits (None for smaller files)."""
    with path.open("rb") as file:
        file.seek(LEGACY_HASH_OFFSET)
        data = file.read(LEGACY_HASH_LENGTH)
    return hashlib.sha256(data).hexdigest()[:8] if data else None
