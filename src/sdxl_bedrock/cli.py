"""sdxl-bedrock: serve Stable Diffusion XL behind the Amazon Bedrock Runtime API
(stability.stable-diffusion-xl-v1) and Stability's REST v1 API, and send it requests."""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import typing
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ValidationError
from pydantic.fields import FieldInfo

from sdxl_bedrock.config import ENV_PREFIX, Flag, Settings
from sdxl_bedrock.faults import Faults

EXAMPLES = """\
examples:
  sdxl-bedrock serve                        the built-in tiny model on http://127.0.0.1:8080
  sdxl-bedrock serve --model /models/sd_xl_base_1.0.safetensors --device cuda
  sdxl-bedrock invoke --prompt 'a boat' --image in.png --out boat.png

`sdxl-bedrock serve --help` lists every option, its default and its SDXL_BEDROCK_* variable.
"""


def main(argv: list[str] | None = None) -> None:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    code = args.run(args)
    if args.command == "serve":
        from sdxl_bedrock.serve.server import exit_now

        exit_now(code)
    sys.exit(code)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="sdxl-bedrock",
        description=__doc__,
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    commands = parser.add_subparsers(dest="command", required=True)

    serve = commands.add_parser(
        "serve",
        help="serve the Bedrock Runtime and Stability v1 APIs",
        description="Serve the Bedrock Runtime and Stability v1 APIs. Every option can also be set by its "
        f"environment variable ({ENV_PREFIX}<NAME>); an option given here wins over its variable.",
    )
    add_model_flags(serve, Settings, env_prefix=ENV_PREFIX)
    serve.add_argument(
        "-v", "--verbose", action="store_true", help="also log INFO lines, and Ray Serve's own (default: off)"
    )
    ray = serve.add_argument_group("Ray Serve (pip install 'sdxl-bedrock[ray]'; see docs/SCALING.md)")
    ray.add_argument(
        "--ray",
        action="store_true",
        help="serve as a Ray Serve deployment: a local Ray, or the cluster that RAY_ADDRESS names "
        "(default: off)",
    )
    from sdxl_bedrock.serve.ray_serve import Scaling

    add_model_flags(ray, Scaling)
    serve.set_defaults(run=run_serve)

    invoke = commands.add_parser(
        "invoke",
        help="send one request to a running server through boto3 (streamed, with a progress bar)",
        description="Send one request to a running server through boto3, as a Bedrock user would; write "
        "the image to --out and print its seed.",
    )
    invoke.add_argument(
        "--endpoint", default="http://127.0.0.1:8080", help="the server (default: %(default)s)"
    )
    invoke.add_argument(
        "--model-id", default="stability.stable-diffusion-xl-v1", help="the model id (default: %(default)s)"
    )
    invoke.add_argument("--prompt", required=True, help="what the picture shows")
    invoke.add_argument("--negative-prompt", help="what it should not show")
    invoke.add_argument("--image", type=Path, metavar="FILE", help="init_image (image-to-image)")
    invoke.add_argument("--mask", type=Path, metavar="FILE", help="mask_image (masked image-to-image)")
    invoke.add_argument(
        "--out",
        type=Path,
        default=Path("out.png"),
        metavar="FILE",
        help="where the PNG goes (default: %(default)s)",
    )
    invoke.add_argument("--force", action="store_true", help="overwrite --out if it exists")
    invoke.add_argument("--no-progress", action="store_true", help="no progress bar on stderr")
    for field, kind in BODY_FIELDS.items():
        invoke.add_argument(
            "--" + field.replace("_", "-"), dest=field, type=kind, help=f"the body's {field} (server default)"
        )
    invoke.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=JSON",
        help="any other body field, its value as JSON (repeatable)",
    )
    invoke.set_defaults(run=run_invoke)

    model_path = commands.add_parser(
        "model-path", help="print the folder of a built-in model (diffusers layout)"
    )
    model_path.add_argument("name", choices=["tiny", "micro"])
    model_path.set_defaults(run=run_model_path)

    models = commands.add_parser(
        "models",
        help="list the checkpoints (and LoRA adapters) a server with these folders would serve, and what it "
        "would refuse",
        description="List the model library as `serve` would read it: each checkpoint's name, kind, size "
        "and SHA-256 (A1111's short hash is its first 10 digits), then every file it would refuse, with "
        "the reason. Nothing is loaded and nothing is downloaded.",
    )
    models.add_argument(
        "--model", default="tiny", metavar="MODEL", help="the default checkpoint (as serve's)"
    )
    models.add_argument(
        "--checkpoint-dir", action="append", default=[], type=Path, metavar="DIR", help="repeatable"
    )
    models.add_argument("--single-file-config", type=Path, metavar="DIR", help="as serve's")
    models.add_argument(
        "--lora-dir",
        action="append",
        default=[],
        type=Path,
        metavar="DIR",
        help="repeatable: also list the LoRA adapters these folders hold, and those refused",
    )
    models.add_argument("--json", action="store_true", help="one JSON object per line")
    models.set_defaults(run=run_models)
    return parser


BODY_FIELDS: dict[str, Any] = {
    "seed": int,
    "steps": int,
    "cfg_scale": float,
    "sampler": str,
    "style_preset": str,
    "samples": int,
    "image_strength": float,
    "init_image_mode": str,
    "step_schedule_start": float,
    "step_schedule_end": float,
    "width": int,
    "height": int,
    "mask_source": str,
    "clip_guidance_preset": str,
}


# --- flags made from a model's fields ------------------------------------------------------------------
# Not pydantic-settings' own CliSettingsSource: our flags keep names that are not their fields' names
# (`--request-timeout` sets request_timeout_s, `--access-key ID:SECRET` adds to access_keys), and there the
# way to rename a flag is an alias, which renames the environment variable and the Serve config arg with it.


def flag_of(field: FieldInfo) -> Flag:
    return next((item for item in field.metadata if isinstance(item, Flag)), Flag())


def option_of(name: str, field: FieldInfo) -> str:
    return flag_of(field).name or "--" + name.replace("_", "-")


def add_model_flags(
    parser: argparse.ArgumentParser | argparse._ArgumentGroup,
    model: type[BaseModel],
    env_prefix: str | None = None,
) -> None:
    """One flag per field of `model`: its description and default (and variable) as help. A flag left out
    is absent from the parsed namespace, so the model's own precedence (environment, default) decides."""
    for name, field in model.model_fields.items():
        flag = flag_of(field)
        help_text = f"{field.description} (default: {default_text(field, flag)}"
        if env_prefix is not None:
            help_text += f"; env {env_prefix}{name.upper()}"
        options: dict[str, Any] = {
            "dest": name,
            "default": argparse.SUPPRESS,
            "help": (help_text + ")").replace("%", "%%"),
        }
        if field.annotation is bool:
            options["action"] = argparse.BooleanOptionalAction
        else:
            options["metavar"] = flag.metavar
            options["choices"] = literal_choices(field.annotation)
            if flag.repeatable:
                options["action"] = "append"
        parser.add_argument(option_of(name, field), **options)


def default_text(field: FieldInfo, flag: Flag) -> str:
    if flag.default_text is not None:
        return flag.default_text
    value = field.get_default(call_default_factory=True)
    if isinstance(value, bool):
        return "on" if value else "off"
    if isinstance(value, float):
        return f"{value:g}"
    return "none" if value is None else str(value)


def literal_choices(annotation: Any) -> list[str] | None:
    if typing.get_origin(annotation) is typing.Literal:
        return list(typing.get_args(annotation))
    return None


def given_fields(args: argparse.Namespace, model: type[BaseModel]) -> dict[str, Any]:
    return {name: getattr(args, name) for name in model.model_fields if hasattr(args, name)}


def explain(error: ValidationError, model: type[BaseModel], given: dict[str, Any], env_prefix: str) -> str:
    """One line per problem, naming the flag (or, where the value came from there, the variable); the
    value itself is never repeated, since it may be a secret."""
    lines = []
    for problem in error.errors(include_url=False, include_input=False, include_context=False):
        message = problem["msg"].removeprefix("Value error, ")
        if problem["loc"]:
            name = str(problem["loc"][0])
            field = model.model_fields.get(name)
            source = option_of(name, field) if field is not None else name
            if name not in given and f"{env_prefix}{name.upper()}" in os.environ:
                source = f"{env_prefix}{name.upper()}"
            message = f"{source}: {message}"
        lines.append(f"sdxl-bedrock serve: {message}")
    return "\n".join(lines)


# --- serve ---------------------------------------------------------------------------------------------


def run_serve(args: argparse.Namespace) -> int:
    from sdxl_bedrock.serve.ray_serve import Scaling

    try:
        settings = serve_settings(args)
    except ValidationError as error:
        print(explain(error, Settings, given_fields(args, Settings), ENV_PREFIX), file=sys.stderr, flush=True)
        return 2
    try:
        Faults.from_environment()
    except ValueError as error:
        print(f"sdxl-bedrock serve: {error}", file=sys.stderr, flush=True)
        return 2
    scaling_given = given_fields(args, Scaling)
    if not args.ray:
        if scaling_given:
            flags = ", ".join(option_of(name, Scaling.model_fields[name]) for name in scaling_given)
            print(f"sdxl-bedrock serve: {flags}: only with --ray", file=sys.stderr, flush=True)
            return 2
        from sdxl_bedrock.serve.server import serve

        return serve(settings, verbose=args.verbose)

    from sdxl_bedrock.serve.ray_serve import serve_with_ray
    from sdxl_bedrock.serve.server import PortUnavailable, check_port

    try:
        scaling = Scaling(**scaling_given)
    except ValidationError as error:
        print(explain(error, Scaling, scaling_given, ENV_PREFIX), file=sys.stderr, flush=True)
        return 2
    if not os.environ.get("RAY_ADDRESS"):
        # Ray's proxy binds the port itself, once Ray and the replicas have started; a busy port should
        # fail now. (On a cluster the proxies listen on its nodes, not necessarily here.)
        try:
            check_port(settings.host, settings.port)
        except PortUnavailable as error:
            print(f"sdxl-bedrock: {error}", file=sys.stderr, flush=True)
            return 1
    return serve_with_ray(settings, scaling, verbose=args.verbose)


def serve_settings(args: argparse.Namespace) -> Settings:
    """The Settings that parsed `serve` flags give: each flag given wins over its SDXL_BEDROCK_* variable,
    which wins over the default. Raises pydantic.ValidationError (see `explain`)."""
    return Settings(**given_fields(args, Settings))


# --- invoke --------------------------------------------------------------------------------------------


class CommandFailed(Exception):
    """A one-line reason to stop (the message), and the exit status."""

    def __init__(self, message: str, code: int = 1) -> None:
        super().__init__(message)
        self.code = code


def run_invoke(args: argparse.Namespace) -> int:
    try:
        return invoke_once(args)
    except CommandFailed as failure:
        print(f"sdxl-bedrock: {failure}", file=sys.stderr, flush=True)
        return failure.code
    except KeyboardInterrupt:
        print(file=sys.stderr)
        return 130


def invoke_once(args: argparse.Namespace) -> int:
    from botocore.exceptions import (
        BotoCoreError,
        ClientError,
        EndpointConnectionError,
        EventStreamError,
        ReadTimeoutError,
    )

    from sdxl_bedrock.client import bedrock_client, build_body, invoke_streaming

    out: Path = args.out
    # Checked before the request, so that a long generation is never thrown away at the end.
    if out.exists() and not args.force:
        raise CommandFailed(f"{out} exists; pass --force to overwrite it, or choose another --out")
    if not out.parent.is_dir():
        raise CommandFailed(f"cannot write {out}: no folder {out.parent}")
    for option, path in (("--image", args.image), ("--mask", args.mask)):
        if path is not None and not path.is_file():
            raise CommandFailed(f"{option}: no such file: {path}")
    fields = {field: getattr(args, field) for field in BODY_FIELDS}
    for assignment in args.set:
        key, _, value = assignment.partition("=")
        try:
            fields[key] = json.loads(value)
        except json.JSONDecodeError as error:
            raise CommandFailed(f"--set {key}=...: the value is not JSON ({error})", code=2) from None
    try:
        body = build_body(
            args.prompt, negative_prompt=args.negative_prompt, image=args.image, mask=args.mask, **fields
        )
    except OSError as error:
        raise CommandFailed(f"cannot read {error.filename}: {error.strerror}") from None
    bar = None if args.no_progress else progress_bar
    try:
        result = invoke_streaming(bedrock_client(args.endpoint), body, bar, model_id=args.model_id)
    except (ClientError, EventStreamError) as error:
        raise CommandFailed(
            f"{error.response['Error']['Code']}: {error.response['Error']['Message']}"
        ) from None
    except EndpointConnectionError:
        raise CommandFailed(
            f"could not connect to {args.endpoint} (is `sdxl-bedrock serve` running there?)"
        ) from None
    except ReadTimeoutError:
        raise CommandFailed(f"{args.endpoint} did not answer in time") from None
    except BotoCoreError as error:
        raise CommandFailed(f"{args.endpoint}: {error}") from None
    finally:
        if bar is not None:
            print(file=sys.stderr)
    try:
        with out.open("wb" if args.force else "xb") as file:
            file.write(result.png)
    except FileExistsError:
        raise CommandFailed(f"{out} appeared meanwhile; pass --force to overwrite it") from None
    except OSError as error:
        raise CommandFailed(f"cannot write {out}: {error.strerror}") from None
    print(f"sdxl-bedrock: wrote {out} (seed {result.seed}, {result.finish_reason})", file=sys.stderr)
    print(result.seed)
    return 0 if result.finish_reason == "SUCCESS" else 2


def progress_bar(step: int, steps: int, _preview: bytes | None) -> None:
    width = 30
    filled = width * step // max(steps, 1)
    print(
        f"\r[{'#' * filled}{'.' * (width - filled)}] step {step}/{steps}", end="", file=sys.stderr, flush=True
    )


def run_models(args: argparse.Namespace) -> int:
    from sdxl_bedrock.library import Library
    from sdxl_bedrock.loras import LoraLibrary

    try:
        listing = Library(
            args.model, args.checkpoint_dir, single_file_config=args.single_file_config
        ).refresh()
    except ValueError as error:
        print(f"sdxl-bedrock models: {error}", file=sys.stderr)
        return 1
    entries = [*listing.checkpoints.values(), *listing.refused]
    loras = LoraLibrary(args.lora_dir).refresh()
    adapters = [*loras.loras.values(), *loras.refused]
    if args.json:
        for entry in entries:
            print(json.dumps({**entry.describe(), "default": entry.name == listing.default}))
        for lora in adapters:
            print(json.dumps(describe_lora(lora)))
        return 0
    for entry in listing.checkpoints.values():
        default = "  (default)" if entry.name == listing.default else ""
        size = f"{entry.size_bytes / 2**20:,.1f} MiB" if entry.size_bytes else "built in"
        print(f"{entry.name}  {entry.kind}  {size}  {entry.sha256 or '-'}{default}")
        if entry.filename is not None:
            print(f"    {entry.filename}")
    for entry in listing.refused:
        print(f"refused: {entry.name} ({entry.filename}): {entry.refused}")
    for lora in loras.loras.values():
        alias = f"  alias {lora.alias!r}" if lora.alias and lora.alias != lora.name else ""
        parts = ", ".join(lora.parts)
        print(f"lora {lora.name}  {lora.format}  rank {lora.rank}  {parts}  {lora.shorthash}{alias}")
        print(f"    {lora.filename}")
    for lora in loras.refused:
        print(f"refused lora: {lora.name} ({lora.filename}): {lora.refused}")
    return 0


def describe_lora(lora: Any) -> dict[str, Any]:
    """A JSON-ready line of `sdxl-bedrock models` for a LoRA adapter (loras.Lora)."""
    return {
        "name": lora.name,
        "kind": "lora",
        "filename": str(lora.filename),
        "size_bytes": lora.size_bytes,
        "sha256": lora.sha256,
        "format": lora.format,
        "rank": lora.rank,
        "parts": list(lora.parts),
        "alias": lora.alias,
        "refused": lora.refused,
    }


def run_model_path(args: argparse.Namespace) -> int:
    from sdxl_bedrock.engine.tiny import EMBEDDED_MODELS

    print(EMBEDDED_MODELS[args.name].path())
    return 0
