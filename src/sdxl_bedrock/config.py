"""Server settings: one definition for the `serve` flags, the `SDXL_BEDROCK_*` environment and Ray's args.

`Settings` is a frozen pydantic-settings model. Each field carries its default, its help text and (through
`Flag`) its command-line spelling; `sdxl_bedrock.cli` builds the `serve` flags from these fields, and
`sdxl_bedrock.serve.ray_serve.app_builder` validates a Serve config file's `args:` through the same model. A
value comes from, first to last: the flag or arg, the environment variable `SDXL_BEDROCK_<FIELD NAME>`, the
default.

Secrets (SigV4 secret keys, bearer tokens) can come from the environment or from files, so that they stay
out of the command line that `ps` shows to every local user; they never appear in `repr(settings)` or in
validation errors.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path, PurePath
from typing import Annotated, Any, Literal

from pydantic import Field, PositiveInt, ValidationInfo, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

BODY_LIMIT_BYTES = 25_000_000
ENV_PREFIX = "SDXL_BEDROCK_"
DEFAULT_REQUEST_TIMEOUT_S = 300.0
# "Any Host" / "any Origin" in --allowed-hosts and --allowed-origins.
ANY = "*"
# Where a secret in the environment is a list: entries split on commas or line breaks.
ENTRY_SEPARATORS = re.compile(r"[,\n]")

Device = Literal["auto", "cpu", "cuda"]
DType = Literal["auto", "float32", "float16", "bfloat16"]
WarmupBucket = tuple[PositiveInt, PositiveInt, PositiveInt]


@dataclass(frozen=True)
class Flag:
    """How a field is spelled on the command line, where that is not `--field-name` with a plain value.

    `name`: the flag (`--request-timeout` for `request_timeout_s`); `metavar`: the value's placeholder in
    `--help`; `default_text`: how `--help` states a default that is not a plain value; `repeatable`: the
    flag may be given many times, each value one entry of a collection field.
    """

    name: str | None = None
    metavar: str | None = None
    default_text: str | None = None
    repeatable: bool = False


class Settings(BaseSettings):
    """What one server (or each Ray replica) runs with. Frozen; build it with keyword arguments (which win
    over `SDXL_BEDROCK_*` environment variables, which win over the defaults).

    Raises pydantic.ValidationError (a ValueError) for a value of the wrong type or range, an unknown field,
    a malformed secrets file or variable (the message names the file and line, never the secret),
    `tls_cert` without `tls_key` (or the reverse), or `auth_all_routes` without any key.
    """

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX,
        frozen=True,
        extra="forbid",
        # A secret given in the wrong shape must not come back in the error that says so.
        hide_input_in_errors=True,
    )

    host: Annotated[str, Flag(metavar="ADDRESS")] = Field(
        default="127.0.0.1", description="address to listen on; 0.0.0.0 or :: for every interface"
    )
    port: Annotated[int, Flag(metavar="PORT")] = Field(
        default=8080,
        ge=1,
        le=65535,
        description="TCP port to listen on; a port another program holds is refused at once",
    )
    model: Annotated[str, Flag(metavar="MODEL")] = Field(
        default="tiny",
        description="tiny | micro (smaller, faster, for testing clients) | sdxl-random | "
        "a diffusers folder | a .safetensors file | a Hugging Face repo id already in the local cache",
    )
    checkpoint_dirs: Annotated[
        tuple[Path, ...],
        NoDecode,
        Flag("--checkpoint-dir", metavar="DIR", default_text="none", repeatable=True),
    ] = Field(
        default=(),
        description="a model library folder, repeatable: every SDXL .safetensors checkpoint and diffusers "
        "folder directly in it is served beside --model (the default), by its name on every wire "
        "(docs/MODELS.md)",
    )
    single_file_config: Annotated[Path | None, Flag(metavar="DIR")] = Field(
        default=None,
        description="a diffusers folder whose configs read the single-file checkpoints whose architecture "
        "is not SDXL base's (the tiny model written as one file, for one)",
    )
    max_loaded_checkpoints: Annotated[
        int | None, Flag(metavar="N", default_text="1 on a CPU; on a GPU what fits")
    ] = Field(
        default=None,
        ge=1,
        description="checkpoints held on the device at once; the least recently used beyond that move to "
        "host memory",
    )
    max_host_checkpoints: Annotated[int, Flag(metavar="N")] = Field(
        default=1,
        ge=0,
        description="checkpoints kept in host memory off the device; beyond that the least recently used "
        "are dropped (read from disk again when asked for)",
    )
    lora_dirs: Annotated[
        tuple[Path, ...],
        NoDecode,
        Flag("--lora-dir", metavar="DIR", default_text="none", repeatable=True),
    ] = Field(
        default=(),
        description="a LoRA library folder, repeatable (A1111's --lora-dir): every LoRA .safetensors in it "
        "and its subfolders may be named by a request, by its file name (docs/MODELS.md)",
    )
    max_loaded_loras: Annotated[int, Flag(metavar="N")] = Field(
        default=8,
        ge=1,
        description="LoRA adapters held on the device per checkpoint; the least recently used beyond that "
        "move to host memory",
    )
    max_host_loras: Annotated[int, Flag(metavar="N")] = Field(
        default=32,
        ge=0,
        description="parsed LoRA adapters kept in host memory off the device; beyond that the least "
        "recently used are dropped (read from disk again when asked for)",
    )
    max_loras_per_request: Annotated[int, Flag(metavar="N")] = Field(
        default=8,
        ge=1,
        description="LoRA adapters one request may name (each <lora:...> tag counts); more is refused",
    )
    device: Device = Field(default="auto", description="auto: cuda when PyTorch sees a GPU, else cpu")
    dtype: DType = Field(
        default="auto", description="the models' dtype; auto: float16 on a GPU, float32 on the CPU"
    )
    vae_dtype: DType = Field(
        default="auto",
        description="auto: bfloat16 on a GPU under a half --dtype (SDXL's VAE overflows float16), "
        "else --dtype",
    )
    vae_budget_mib: Annotated[int, Flag("--vae-budget", metavar="MIB")] = Field(
        default=6144,
        ge=64,
        description="the VAE's working memory per call: finished images decode (and init images encode) "
        "in slices that fit it, one image larger than it in tiles (docs/BATCHING.md)",
    )
    relaxed_sizes: bool = Field(
        default=False,
        description="accept any width/height that is a multiple of 64, not only SDXL's nine sizes",
    )
    stability_image_models: bool = Field(
        default=False,
        description="also answer Bedrock's SD3.5 Large, Stable Image Core and Ultra, and the Image Services "
        "an SDXL checkpoint can do (inpaint, outpaint, erase object), with this server's SDXL model",
    )
    max_batch_size: Annotated[int, Flag(metavar="N")] = Field(
        default=8, ge=1, description="compatible requests run together, up to this many images a batch"
    )
    max_wait_ms: Annotated[float, Flag(metavar="MS")] = Field(
        default=5.0, ge=0, description="how long a request waits for others to share its batch"
    )
    max_queue: Annotated[int, Flag(metavar="N")] = Field(
        default=64, ge=1, description="waiting requests beyond which a new one gets ThrottlingException (429)"
    )
    # None: no limit (given as 0).
    request_timeout_s: Annotated[float | None, Flag("--request-timeout", metavar="SECONDS")] = Field(
        default=DEFAULT_REQUEST_TIMEOUT_S,
        ge=0,
        description="answer ModelTimeoutException (408) and drop the work when a request has waited and "
        "run this long; 0: no limit",
    )
    shutdown_timeout_s: Annotated[float, Flag("--shutdown-timeout", metavar="SECONDS")] = Field(
        default=60.0, ge=0, description="on SIGTERM, time allowed to finish accepted requests"
    )
    idle_timeout_s: Annotated[float, Flag("--idle-timeout", metavar="SECONDS")] = Field(
        default=20.0,
        gt=0,
        description="close a connection that has no request in flight for this long: before its first "
        "byte (and TLS handshake), while its request head arrives, between requests",
    )
    body_timeout_s: Annotated[float, Flag("--body-timeout", metavar="SECONDS")] = Field(
        default=60.0,
        gt=0,
        description="a request body must arrive in full within this long of its head; past it the answer "
        "is a 408 timeout and the connection is closed",
    )
    max_connections: Annotated[int, Flag(metavar="N")] = Field(
        default=512,
        ge=1,
        description="open connections beyond which a new one is refused at once "
        "(ServiceUnavailableException, 503, then closed)",
    )
    front: bool = Field(
        default=True,
        description="accept connections in the front (serve/front.py), which holds them to "
        "--max-connections and to the first bytes' and TLS handshake's --idle-timeout; --no-front: "
        "granian serves the port itself, and those are the job of a reverse proxy in front "
        "(docs/SECURITY.md)",
    )
    max_body_bytes_in_flight: Annotated[int, Flag(metavar="BYTES")] = Field(
        default=256_000_000,
        ge=BODY_LIMIT_BYTES,
        description="request body bytes being received at once across all connections (at least the "
        f"{BODY_LIMIT_BYTES}-byte body limit); a body beyond it waits for room, within --body-timeout",
    )
    # Host header names (any port) a request may carry; ANY for any. Empty: the loopback names while `host`
    # is a loopback address, else any.
    allowed_hosts: Annotated[
        tuple[str, ...],
        NoDecode,
        Flag(metavar="NAMES", default_text="localhost and loopback addresses on a loopback --host, else any"),
    ] = Field(
        default=(),
        description="Host names requests may name, split by commas ('*' for any); on a loopback --host "
        "the loopback names are always allowed (a DNS-rebinding page names its own host and is refused)",
    )
    # Web origins (scheme://host[:port]) whose pages may call the API; ANY for any.
    allowed_origins: Annotated[
        tuple[str, ...], NoDecode, Flag(metavar="ORIGINS", default_text="the server's own")
    ] = Field(
        default=(),
        description="web origins (scheme://host[:port]) whose pages may call the server and read its answers "
        "(CORS), split by commas ('*' for any); a request with any other Origin header is refused (SDKs "
        "send none)",
    )
    host_threads: Annotated[int, Flag(metavar="N")] = Field(
        default=4, ge=1, description="threads for the host's share of a request (base64, image codecs, JSON)"
    )
    compile_unet: Annotated[bool, Flag("--compile")] = Field(
        default=False,
        description="torch.compile the UNet (reduce-overhead, CUDA graphs) for the --warmup shapes, "
        "compiled before serving; other shapes run eager",
    )
    # (width, height, batch size) shapes run once before serving. Given as text
    # `1024x1024:1,2,4;832x1216:1`, or as lists in a Serve config file; left out, see `warmup_default`.
    warmup_buckets: Annotated[
        tuple[WarmupBucket, ...],
        NoDecode,
        Flag(
            "--warmup",
            metavar="BUCKETS",
            default_text="none; with --compile 1024x1024 at 1, 2, 4, ... up to --max-batch-size",
        ),
    ] = Field(
        default=None,  # replaced by `warmup_default` (validate_default)
        validate_default=True,
        description="sizes and batch sizes to run once before serving, e.g. '1024x1024:1,2,4,8;832x1216:1'",
    )
    # Each doubling of it is one more graph per warmed size (engine/acceleration.py's chunk_buckets).
    warmup_prompt_chunks: Annotated[int, Flag(metavar="N")] = Field(
        default=32,
        ge=1,
        description="with --compile, prompts of up to N chunks of 77 tokens run compiled: each --warmup "
        "size is also warmed (at batch 1) with prompts of 2, 4, 8, ... and N chunks, and a prompt runs "
        "padded to the next of these; longer ones run eager (docs/BATCHING.md)",
    )
    log_json: bool = Field(default=False, description="log JSON lines, one per request")
    tls_cert: Annotated[Path | None, Flag(metavar="FILE")] = Field(
        default=None, description="serve HTTPS with this PEM certificate and --tls-key"
    )
    tls_key: Annotated[Path | None, Flag(metavar="FILE")] = Field(
        default=None, description="the PEM private key of --tls-cert"
    )
    # Each file comes before its keys: the keys' validator adds what the file holds.
    access_key_file: Annotated[Path | None, Flag(metavar="FILE")] = Field(
        default=None,
        description="verify SigV4 signatures with the key pairs in this file, a line ID:SECRET each "
        "(blank lines and # comments skipped); turns auth on",
    )
    # SigV4 access key id -> secret key. Auth is off while this and api_keys are empty (any credentials
    # pass, like a local emulator).
    access_keys: Annotated[
        dict[str, str],
        NoDecode,
        Flag("--access-key", metavar="ID:SECRET", default_text="none", repeatable=True),
    ] = Field(
        default_factory=dict,
        validate_default=True,
        repr=False,
        description="verify SigV4 signatures with this key pair, repeatable; turns auth on. `ps` shows "
        "flags to every local user: prefer the file or the variable (ID:SECRET entries split by commas "
        "or lines)",
    )
    api_key_file: Annotated[Path | None, Flag(metavar="FILE")] = Field(
        default=None,
        description="accept `Authorization: Bearer TOKEN` for the tokens in this file, one a line "
        "(blank lines and # comments skipped); turns auth on",
    )
    # Accepted `Authorization: Bearer` tokens.
    api_keys: Annotated[
        frozenset[str], NoDecode, Flag("--api-key", metavar="TOKEN", default_text="none", repeatable=True)
    ] = Field(
        default_factory=frozenset,
        validate_default=True,
        repr=False,
        description="accept `Authorization: Bearer TOKEN`, repeatable; turns auth on. `ps` shows flags "
        "to every local user: prefer the file or the variable (tokens split by commas or lines)",
    )
    # The server's own routes (not a wire's, which check credentials themselves): api/private_routes.py.
    auth_all_routes: bool = Field(
        default=False,
        description="with keys configured, require them on /metrics, /openapi.json, /docs and the playground "
        "(/ and its files) too; /ping stays open",
    )
    clip_model: Annotated[str | None, Flag(metavar="PATH")] = Field(
        default=None,
        description="a transformers CLIPModel folder (or `tiny`) for clip_guidance_preset; "
        "without one, guidance is refused",
    )
    blocked_terms: Annotated[Path | None, Flag(metavar="FILE")] = Field(
        default=None,
        description="content filter: a prompt with one of these terms (one a line) comes back blurred",
    )
    outputs_dir: Annotated[Path | None, Flag(metavar="DIR")] = Field(
        default=None,
        description="where A1111 requests with save_images write their PNGs, in A1111's layout "
        "(txt2img-images/DATE/00000-SEED.png, with the `parameters` text); without it nothing is saved",
    )
    # Model names a wire takes for a checkpoint, beyond the checkpoint's own (the model library extends this).
    model_aliases: Annotated[
        dict[str, str],
        NoDecode,
        Flag("--model-alias", metavar="NAME=CHECKPOINT[+LORA:W...]", default_text="none", repeatable=True),
    ] = Field(
        default_factory=dict,
        validate_default=True,
        description="serve NAME (a Bedrock model ARN or inference profile, an OpenAI model id such as "
        "dall-e-3, or any other) with CHECKPOINT, repeatable; CHECKPOINT is a checkpoint's name (--model's "
        "or a --checkpoint-dir entry's file or folder name), optionally with LoRA adapters: "
        "CHECKPOINT+LORA:WEIGHT+... (--lora-dir names)",
    )
    strict_model_names: bool = Field(
        default=False,
        description="the OpenAI wire takes only stability.stable-diffusion-xl-v1 and --model-alias names, "
        "not OpenAI's own model ids (dall-e-2, dall-e-3, gpt-image-1, ...)",
    )

    @property
    def auth_enabled(self) -> bool:
        return bool(self.access_keys or self.api_keys)

    @property
    def scheme(self) -> str:
        return "https" if self.tls_cert else "http"

    @field_validator("request_timeout_s", mode="after")
    @classmethod
    def no_limit_as_none(cls, seconds: float | None) -> float | None:
        return seconds or None

    @field_validator("checkpoint_dirs", "lora_dirs", mode="before")
    @classmethod
    def folders_from_entries(cls, value: Any) -> Any:
        """Repeated flags, or a variable's folders split by commas or lines."""
        if isinstance(value, str):
            value = ENTRY_SEPARATORS.split(value)
        if isinstance(value, list | tuple):
            return tuple(Path(str(entry).strip()).expanduser() for entry in value if str(entry).strip())
        return value

    @field_validator("allowed_hosts", "allowed_origins", mode="before")
    @classmethod
    def names_from_text(cls, value: Any) -> Any:
        """A comma-separated string (a flag, a variable) or a list (a Serve config file), blanks dropped."""
        if isinstance(value, str):
            value = value.split(",")
        if isinstance(value, list | tuple):
            return tuple(name.strip() for name in value if name.strip())
        return value

    @field_validator("allowed_origins", mode="after")
    @classmethod
    def origins_are_origins(cls, origins: tuple[str, ...]) -> tuple[str, ...]:
        for origin in origins:
            if origin != ANY and not re.fullmatch(r"[a-z][a-z0-9+.-]*://[^/?#\s]+/?", origin.lower()):
                raise ValueError(f"{origin!r} is not an origin: scheme://host or scheme://host:port, no path")
        return tuple(origin if origin == ANY else origin.lower().rstrip("/") for origin in origins)

    @field_validator("warmup_buckets", mode="before")
    @classmethod
    def warmup_default(cls, value: Any, info: ValidationInfo) -> Any:
        """Text parsed; left out, none, or with compile_unet 1024x1024 in power-of-two batches up to
        max_batch_size (other batch sizes run as chunks of these, padded)."""
        if isinstance(value, str):
            return parse_warmup_buckets(value)
        if value is not None:
            return value
        if not info.data.get("compile_unet"):
            return ()
        most = info.data.get("max_batch_size", 1)
        return tuple((1024, 1024, 2**n) for n in range(most.bit_length()) if 2**n <= most)

    @field_validator("model_aliases", mode="before")
    @classmethod
    def aliases_from_entries(cls, value: Any) -> Any:
        """NAME=CHECKPOINT entries (repeated flags, or a variable's entries split by commas or lines)."""
        if isinstance(value, str):
            value = ENTRY_SEPARATORS.split(value)
        if isinstance(value, list | tuple):
            aliases: dict[str, str] = {}
            for entry in filter(None, (item.strip() for item in value)):
                name, separator, checkpoint = entry.partition("=")
                if not separator or not name.strip() or not checkpoint.strip():
                    raise ValueError(f"{entry!r}: wants NAME=CHECKPOINT")
                if aliases.get(name.strip(), checkpoint.strip()) != checkpoint.strip():
                    raise ValueError(
                        f"the model name {name.strip()!r} is given twice, for different checkpoints"
                    )
                aliases[name.strip()] = checkpoint.strip()
            return aliases
        return value

    @model_validator(mode="after")
    def aliases_name_the_served_model(self) -> Settings:
        if self.checkpoint_dirs:
            return self  # the library is read at start, and checks the aliases then (library.py)
        names = checkpoint_names(self.model)
        for name, target in self.model_aliases.items():
            checkpoint = target.split("+")[0].strip()  # adapters after a '+' (library.alias_target)
            if checkpoint not in names:
                raise ValueError(
                    f"--model-alias {name}={checkpoint}: {checkpoint!r} is not served here; the one "
                    f"checkpoint is {checkpoint_title(self.model)!r} (--model {self.model}), by any of: "
                    + ", ".join(sorted(names))
                )
        return self

    @field_validator("access_key_file", mode="after")
    @classmethod
    def access_key_file_is_well_formed(cls, path: Path | None) -> Path | None:
        if path is not None:
            read_access_key_file(path)
        return path

    @field_validator("api_key_file", mode="after")
    @classmethod
    def api_key_file_is_well_formed(cls, path: Path | None) -> Path | None:
        if path is not None:
            read_api_key_file(path)
        return path

    @field_validator("access_keys", mode="before")
    @classmethod
    def access_keys_from_entries(cls, value: Any) -> Any:
        if isinstance(value, str):  # the environment: ID:SECRET entries
            return parse_access_key_entries(ENTRY_SEPARATORS.split(value))
        if isinstance(value, list | tuple):  # repeated flags
            return parse_access_key_entries(value)
        if isinstance(value, Mapping):  # a Serve config file's {ID: SECRET}
            for key_id, secret in value.items():
                split_access_key(f"{key_id}:{secret}", f"access key id {key_id}")
        return value

    @field_validator("access_keys", mode="after")
    @classmethod
    def access_keys_with_file(cls, keys: dict[str, str], info: ValidationInfo) -> dict[str, str]:
        path = info.data.get("access_key_file")
        return keys if path is None else merge_access_keys(keys, read_access_key_file(path), path)

    @field_validator("api_keys", mode="before")
    @classmethod
    def api_keys_from_entries(cls, value: Any) -> Any:
        if isinstance(value, str):  # the environment
            value = ENTRY_SEPARATORS.split(value)
        if isinstance(value, list | tuple | set | frozenset):
            return frozenset(token.strip() for token in value if token.strip())
        return value

    @field_validator("api_keys", mode="after")
    @classmethod
    def api_keys_with_file(cls, tokens: frozenset[str], info: ValidationInfo) -> frozenset[str]:
        path = info.data.get("api_key_file")
        return tokens if path is None else tokens | read_api_key_file(path)

    @model_validator(mode="after")
    def auth_all_routes_has_keys(self) -> Settings:
        if self.auth_all_routes and not self.auth_enabled:
            raise ValueError(
                "--auth-all-routes needs keys to check: give --access-key-file or --api-key-file "
                "(or their variables)"
            )
        return self

    @model_validator(mode="after")
    def adapters_run_eager(self) -> Settings:
        if self.compile_unet and self.lora_dirs:
            # Adapters are forward hooks on the eager UNet's layers (engine/adapters.py); injecting them
            # changes the module tree the compiled graphs were traced over, so every row would recompile.
            raise ValueError(
                "--compile and --lora-dir do not go together yet: LoRA adapters run on the eager UNet; "
                "serve adapters without --compile (docs/MODELS.md#lora-adapters)"
            )
        return self

    @model_validator(mode="after")
    def tls_files_together(self) -> Settings:
        if (self.tls_cert is None) != (self.tls_key is None):
            raise ValueError("--tls-cert and --tls-key go together: give both or neither")
        return self


CHECKPOINT_SUFFIXES = (".safetensors", ".ckpt")


def checkpoint_title(model: str) -> str:
    """The served checkpoint as A1111 titles it: `--model`'s file or folder name (`tiny` for tiny)."""
    return PurePath(model).name or model


def checkpoint_name(model: str) -> str:
    """The served checkpoint's name: its title without a weights file's suffix (`sd_xl_base_1.0`)."""
    name = checkpoint_title(model)
    for suffix in CHECKPOINT_SUFFIXES:
        name = name.removesuffix(suffix)
    return name


def checkpoint_names(model: str) -> frozenset[str]:
    """Every name the served checkpoint answers to: its title, its name and `--model` as given."""
    return frozenset({checkpoint_title(model), checkpoint_name(model), model})


def parse_warmup_buckets(text: str) -> tuple[tuple[int, int, int], ...]:
    """`1024x1024:1,2,4;832x1216` -> ((1024, 1024, 1), (1024, 1024, 2), (1024, 1024, 4), (832, 1216, 1)).

    Raises ValueError naming the group that is not `WIDTHxHEIGHT[:BATCH,BATCH...]`.
    """
    buckets: list[tuple[int, int, int]] = []
    for group in filter(None, (part.strip() for part in text.split(";"))):
        match = re.fullmatch(r"(\d+)x(\d+)(?::(\d+(?:,\d+)*))?", group.replace(" ", ""))
        if match is None:
            raise ValueError(f"{group!r} is not WIDTHxHEIGHT or WIDTHxHEIGHT:BATCH,BATCH,...")
        width, height, batches = match.groups()
        buckets.extend((int(width), int(height), int(batch)) for batch in (batches or "1").split(","))
    return tuple(buckets)


def parse_access_key_entries(entries: Iterable[str]) -> dict[str, str]:
    """`ID:SECRET` strings -> {ID: SECRET}; blank entries skipped. Raises ValueError naming the entry by
    its number, never by its text, which may be a secret."""
    keys: dict[str, str] = {}
    for number, entry in enumerate(entries, start=1):
        if entry.strip():
            key_id, secret = split_access_key(entry, f"entry {number}")
            keys = merge_access_keys(keys, {key_id: secret}, f"entry {number}")
    return keys


def split_access_key(entry: str, where: str) -> tuple[str, str]:
    key_id, separator, secret = entry.strip().partition(":")
    if not separator or not key_id or not secret or any(space.isspace() for space in key_id):
        raise ValueError(f"{where}: wants ID:SECRET (an access key id, a colon, its secret key)")
    return key_id, secret


def merge_access_keys(keys: Mapping[str, str], more: Mapping[str, str], where: object) -> dict[str, str]:
    """The union; an id with two different secrets is a ValueError (naming the id, which is not secret)."""
    for key_id, secret in more.items():
        if keys.get(key_id, secret) != secret:
            raise ValueError(f"{where}: access key id {key_id} is given twice, with different secrets")
    return {**keys, **more}


def secret_lines(path: Path) -> Iterable[tuple[int, str]]:
    """(line number, stripped line) of a secrets file, blank lines and `#` comments left out."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as error:
        raise ValueError(f"cannot read {path}: {getattr(error, 'strerror', None) or error}") from None
    for number, line in enumerate(text.splitlines(), start=1):
        line = line.strip()
        if line and not line.startswith("#"):
            yield number, line


def read_access_key_file(path: Path) -> dict[str, str]:
    """{ID: SECRET} from a file of `ID:SECRET` lines. Raises ValueError naming the file and line, or the file
    when it holds no key."""
    keys: dict[str, str] = {}
    for number, line in secret_lines(path):
        key_id, secret = split_access_key(line, f"{path} line {number}")
        keys = merge_access_keys(keys, {key_id: secret}, f"{path} line {number}")
    if not keys:
        # An empty file would leave auth off without a word, while the option says it turns auth on.
        raise ValueError(f"{path} holds no access key (ID:SECRET lines; blank lines and # comments skipped)")
    return keys


def read_api_key_file(path: Path) -> frozenset[str]:
    """The tokens of a file, one a line. Raises ValueError naming the file and line of a token with a
    space in it (which no `Authorization: Bearer` header can carry), or the file when it holds none."""
    tokens = set()
    for number, line in secret_lines(path):
        if any(character.isspace() for character in line):
            raise ValueError(f"{path} line {number}: a token is one word, one a line")
        tokens.add(line)
    if not tokens:
        raise ValueError(f"{path} holds no API key (one a line; blank lines and # comments skipped)")
    return frozenset(tokens)
