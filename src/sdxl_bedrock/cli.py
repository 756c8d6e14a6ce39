"""sdxl-bedrock serve | invoke | model-path: arguments only; the work lives elsewhere."""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path
from typing import Any

from sdxl_bedrock.config import Settings


def main(argv: list[str] | None = None) -> None:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    code = args.run(args)
    if args.command == "serve":
        from sdxl_bedrock.server import exit_now

        exit_now(code)
    sys.exit(code)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="sdxl-bedrock", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)

    serve = commands.add_parser("serve", help="serve the Bedrock Runtime API")
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=int, default=8080)
    serve.add_argument(
        "--model",
        default="tiny",
        help="tiny | sdxl-random | a diffusers folder | a .safetensors file | a cached HF repo id",
    )
    serve.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto")
    serve.add_argument("--dtype", choices=["auto", "float32", "float16", "bfloat16"], default="auto")
    serve.add_argument(
        "--vae-dtype",
        choices=["auto", "float32", "float16", "bfloat16"],
        default="auto",
        help="auto: bfloat16 on a GPU under a half --dtype (SDXL's VAE overflows float16), else --dtype",
    )
    serve.add_argument(
        "--relaxed-sizes",
        action="store_true",
        help="accept any width/height that is a multiple of 64, not only SDXL's nine sizes",
    )
    serve.add_argument("--max-batch-size", type=int, default=8)
    serve.add_argument("--max-wait-ms", type=float, default=5.0)
    serve.add_argument("--max-queue", type=int, default=64, help="waiting requests beyond which: 429")
    serve.add_argument(
        "--request-timeout",
        type=float,
        metavar="SECONDS",
        help="answer ModelTimeoutException (408) and drop the work after this long",
    )
    serve.add_argument(
        "--shutdown-timeout",
        type=float,
        default=60.0,
        metavar="SECONDS",
        help="on SIGTERM, time allowed to finish accepted requests",
    )
    serve.add_argument(
        "--compile",
        action="store_true",
        help="torch.compile the UNet (reduce-overhead, CUDA graphs) for the --warmup shapes, compiled before"
        " serving; other shapes run eager",
    )
    serve.add_argument(
        "--warmup",
        metavar="BUCKETS",
        default=None,
        help="sizes and batch sizes to run once before serving, e.g. '1024x1024:1,2,4,8;832x1216:1'"
        " (default with --compile: 1024x1024 at 1, 2, 4, ... up to --max-batch-size)",
    )
    serve.add_argument("--log-json", action="store_true", help="log JSON lines, one per request")
    serve.add_argument("--tls-cert", type=Path)
    serve.add_argument("--tls-key", type=Path)
    serve.add_argument(
        "--access-key",
        action="append",
        default=[],
        metavar="ID:SECRET",
        help="verify SigV4 signatures with this key pair (repeatable); turns auth on",
    )
    serve.add_argument(
        "--api-key",
        action="append",
        default=[],
        metavar="TOKEN",
        help="accept `Authorization: Bearer TOKEN` (repeatable); turns auth on",
    )
    serve.add_argument(
        "--clip-model",
        metavar="PATH",
        help="a transformers CLIPModel folder (or `tiny`) for clip_guidance_preset; without one, refused",
    )
    serve.add_argument(
        "--blocked-terms",
        type=Path,
        metavar="FILE",
        help="content filter: a prompt with one of these terms (one a line) comes back blurred",
    )
    serve.add_argument("-v", "--verbose", action="store_true")
    add_ray_arguments(serve)
    serve.set_defaults(run=run_serve)

    invoke = commands.add_parser(
        "invoke", help="send one request to a running server through boto3 (streamed, with a progress bar)"
    )
    invoke.add_argument("--endpoint", default="http://127.0.0.1:8080")
    invoke.add_argument("--model-id", default="stability.stable-diffusion-xl-v1")
    invoke.add_argument("--prompt", required=True)
    invoke.add_argument("--negative-prompt")
    invoke.add_argument("--image", type=Path, help="init_image (image-to-image)")
    invoke.add_argument("--mask", type=Path, help="mask_image (masked image-to-image)")
    invoke.add_argument("--out", type=Path, default=Path("out.png"))
    invoke.add_argument("--no-progress", action="store_true", help="no progress bar on stderr")
    for field, kind in BODY_FIELDS.items():
        invoke.add_argument("--" + field.replace("_", "-"), dest=field, type=kind)
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
    model_path.add_argument("name", choices=["tiny"])
    model_path.set_defaults(run=run_model_path)
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


def add_ray_arguments(serve: argparse.ArgumentParser) -> None:
    ray = serve.add_argument_group("Ray Serve (pip install 'sdxl-bedrock[ray]'; see docs/SCALING.md)")
    ray.add_argument(
        "--ray",
        action="store_true",
        help="serve as a Ray Serve deployment: a local Ray, or the cluster that RAY_ADDRESS names",
    )
    ray.add_argument("--replicas", type=int, default=1, metavar="N", help="replicas, one model each")
    ray.add_argument(
        "--gpus-per-replica",
        type=float,
        metavar="X",
        help="GPUs each replica reserves (fractions share a GPU); default 1 where Ray sees GPUs, else 0",
    )
    ray.add_argument(
        "--cpus-per-replica", type=float, default=1.0, metavar="X", help="CPUs each replica reserves"
    )
    ray.add_argument("--min-replicas", type=int, metavar="N", help="autoscale, down to N replicas")
    ray.add_argument("--max-replicas", type=int, metavar="N", help="autoscale, up to N replicas")
    ray.add_argument(
        "--target-ongoing-requests",
        type=float,
        metavar="X",
        help="autoscaling aims at this many requests in flight per replica",
    )
    ray.add_argument(
        "--max-ongoing-requests",
        type=int,
        metavar="N",
        help="requests Ray sends one replica at once (default: twice --max-batch-size)",
    )


def run_serve(args: argparse.Namespace) -> int:
    settings = serve_settings(args)
    if args.ray:
        from sdxl_bedrock.ray_serve import Scaling, serve_with_ray

        scaling = Scaling(
            replicas=args.replicas,
            gpus_per_replica=args.gpus_per_replica,
            cpus_per_replica=args.cpus_per_replica,
            min_replicas=args.min_replicas,
            max_replicas=args.max_replicas,
            target_ongoing_requests=args.target_ongoing_requests,
            max_ongoing_requests=args.max_ongoing_requests,
        )
        return serve_with_ray(settings, scaling, verbose=args.verbose)
    from sdxl_bedrock.server import serve

    return serve(settings, verbose=args.verbose)


def serve_settings(args: argparse.Namespace) -> Settings:
    return Settings(
        host=args.host,
        port=args.port,
        model=args.model,
        device=args.device,
        dtype=args.dtype,
        vae_dtype=args.vae_dtype,
        relaxed_sizes=args.relaxed_sizes,
        max_batch_size=args.max_batch_size,
        max_wait_ms=args.max_wait_ms,
        max_queue=args.max_queue,
        request_timeout_s=args.request_timeout,
        shutdown_timeout_s=args.shutdown_timeout,
        log_json=args.log_json,
        compile_unet=args.compile,
        warmup_buckets=warmup_buckets(args.warmup, args.compile, args.max_batch_size),
        tls_cert=args.tls_cert,
        tls_key=args.tls_key,
        access_keys=parse_access_keys(args.access_key),
        api_keys=frozenset(args.api_key),
        clip_model=args.clip_model,
        blocked_terms=args.blocked_terms,
    )


def warmup_buckets(text: str | None, compiled: bool, max_batch_size: int) -> tuple[tuple[int, int, int], ...]:
    """The --warmup shapes; with --compile and none named, 1024x1024 in power-of-two batches up to
    `max_batch_size` (other batch sizes run as chunks of these, padded)."""
    from sdxl_bedrock.engine.acceleration import parse_buckets

    if text is None:
        if not compiled:
            return ()
        batches = [2**n for n in range(max_batch_size.bit_length()) if 2**n <= max_batch_size]
        text = "1024x1024:" + ",".join(map(str, batches))
    return tuple(parse_buckets(text))


def parse_access_keys(pairs: list[str]) -> dict[str, str]:
    keys = {}
    for pair in pairs:
        key_id, separator, secret = pair.partition(":")
        if not separator or not key_id or not secret:
            raise SystemExit(f"--access-key wants ID:SECRET, got {pair.split(':')[0]}:...")
        keys[key_id] = secret
    return keys


def run_invoke(args: argparse.Namespace) -> int:
    from botocore.exceptions import ClientError, EventStreamError

    from sdxl_bedrock.client import bedrock_client, build_body, invoke_streaming

    fields = {field: getattr(args, field) for field in BODY_FIELDS}
    for assignment in args.set:
        key, _, value = assignment.partition("=")
        fields[key] = json.loads(value)
    body = build_body(
        args.prompt, negative_prompt=args.negative_prompt, image=args.image, mask=args.mask, **fields
    )
    bar = None if args.no_progress else progress_bar
    try:
        result = invoke_streaming(bedrock_client(args.endpoint), body, bar, model_id=args.model_id)
    except (ClientError, EventStreamError) as error:
        print(f"{error.response['Error']['Code']}: {error.response['Error']['Message']}", file=sys.stderr)
        return 1
    finally:
        if bar is not None:
            print(file=sys.stderr)
    args.out.write_bytes(result.png)
    print(result.seed)
    return 0 if result.finish_reason == "SUCCESS" else 2


def progress_bar(step: int, steps: int, _preview: bytes | None) -> None:
    width = 30
    filled = width * step // max(steps, 1)
    print(
        f"\r[{'#' * filled}{'.' * (width - filled)}] step {step}/{steps}", end="", file=sys.stderr, flush=True
    )


def run_model_path(args: argparse.Namespace) -> int:
    from sdxl_bedrock.engine.tiny import tiny_model_path

    print(tiny_model_path())
    return 0
