"""End-to-end benchmark: the server through boto3 against plain diffusers in-process, measured in one run.

    python -m bench.run [--model tiny] [--device cpu] [--size 512] [--requests 8] [--concurrency 1 4 8 16]
                        [--out-dir bench/out] [--server-args ...]

Reports, on the same weights and parameters (image-to-image, 30 steps, image_strength 0.35, cfg 7,
K_DPMPP_2M = diffusers' DPMSolverMultistepScheduler):
- latency p50/p95 through HTTP with boto3 vs `StableDiffusionXLImg2ImgPipeline` called in-process;
- throughput at several client concurrencies vs the pipeline called sequentially;
- the host-side codec cost (base64 + PNG decode of the request, PNG encode + base64 of the answer);
- image health: finish reasons of every answer, and blank (constant: black, or NaN cast to black) images
  among the baseline's and the latency run's pictures (decoded outside the timed span).
Prints a table and writes JSON (after each phase, so a run cut short keeps what it measured) and the
server's log to --out-dir (bench/out/). Timings are for comparison within one run on one machine.
On a GPU: bench/gpu/run.sh (bench/gpu/README.md).
"""

from __future__ import annotations

import argparse
import base64
import io
import json
import os
import platform
import statistics
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image
from tests.conftest import RunningServer, wait_ready
from tests.conftest import start_server as start_server_process

REPO = Path(__file__).resolve().parents[1]
OUT = REPO / "bench" / "out"
MODEL_ID = "stability.stable-diffusion-xl-v1"


def source_png(size: int) -> bytes:
    y, x = np.mgrid[0:size, 0:size]
    pixels = np.stack([x * 255 // (size - 1), y * 255 // (size - 1), (x ^ y) % 256], -1).astype("uint8")
    buffer = io.BytesIO()
    Image.fromarray(pixels, "RGB").save(buffer, "PNG")
    return buffer.getvalue()


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(fraction * (len(ordered) - 1)))]


def blank(image: Image.Image) -> bool:
    """A constant picture: what a NaN in the latents becomes (black) once cast to 8 bits."""
    return float(np.asarray(image.convert("RGB"), dtype=np.float32).std()) < 1.0


def versions() -> dict[str, str]:
    import diffusers
    import torch
    import transformers

    return {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "cuda": str(torch.version.cuda),
        "diffusers": diffusers.__version__,
        "transformers": transformers.__version__,
    }


def hardware() -> str:
    import torch

    cpu = platform.processor() or platform.machine()
    if torch.cuda.is_available():
        return f"{torch.cuda.get_device_name(0)} (CUDA), host {os.cpu_count()} cores"
    return f"CPU {cpu}, {os.cpu_count()} cores, torch threads {torch.get_num_threads()}"


# -- the baseline: plain diffusers, in-process -----------------------------------------------------------


def baseline(args: argparse.Namespace, image_png: bytes) -> dict[str, Any]:
    import torch
    from diffusers import DPMSolverMultistepScheduler

    from sdxl_bedrock.engine.models import load_pipeline
    from sdxl_bedrock.engine.pipeline import resolve_device, resolve_dtype

    device = resolve_device(args.device)
    pipe: Any = load_pipeline(args.model, device=str(device), dtype=resolve_dtype("auto", device))
    pipe.scheduler = DPMSolverMultistepScheduler.from_config(
        pipe.scheduler.config, algorithm_type="dpmsolver++", solver_order=2
    )
    pipe.set_progress_bar_config(disable=True)
    image = Image.open(io.BytesIO(image_png)).convert("RGB")

    blanks = 0

    def one(seed: int) -> float:
        nonlocal blanks
        started = time.perf_counter()
        output = pipe(
            prompt="A space ship.",
            image=image,
            strength=0.65,
            num_inference_steps=30,
            guidance_scale=7.0,
            generator=torch.Generator().manual_seed(seed),
        )
        if device.type == "cuda":
            torch.cuda.synchronize()
        elapsed = time.perf_counter() - started
        blanks += sum(blank(picture) for picture in output.images)
        return elapsed

    one(0)  # warm-up
    latencies = [one(seed) for seed in range(1, args.requests + 1)]
    return {
        "p50_s": statistics.median(latencies),
        "p95_s": percentile(latencies, 0.95),
        "sequential_images_per_s": len(latencies) / sum(latencies),
        "images": len(latencies) + 1,
        "blank_images": blanks,
    }


def release_gpu_memory() -> None:
    """Hand the memory the baseline's pipeline held back to the GPU, for the server process."""
    import gc

    import torch

    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


# -- the server, through boto3 ----------------------------------------------------------------------------


def start_server(args: argparse.Namespace) -> RunningServer:
    args.out_dir.mkdir(parents=True, exist_ok=True)
    server = start_server_process(
        args.out_dir,
        "--model",
        args.model,
        "--device",
        args.device,
        "--relaxed-sizes",
        "--max-queue",
        "256",
        *args.server_args,
        wait=False,
    )
    wait_ready(server, timeout_s=900)  # sdxl-random on a GPU builds 2.6 B parameters and compiles first
    return server


def through_server(args: argparse.Namespace, image_png: bytes) -> dict[str, Any]:
    import boto3
    from botocore.config import Config

    server = start_server(args)
    url = server.url
    body_template = {
        "text_prompts": [{"text": "A space ship."}],
        "init_image": base64.b64encode(image_png).decode(),
        "cfg_scale": 7,
        "steps": 30,
        "image_strength": 0.35,
        "sampler": "K_DPMPP_2M",
    }
    try:
        client = boto3.client(
            "bedrock-runtime",
            endpoint_url=url,
            region_name="us-east-1",
            aws_access_key_id="bench",
            aws_secret_access_key="bench",
            config=Config(max_pool_connections=64, read_timeout=900, retries={"max_attempts": 1}),
        )

        finish_reasons: Counter[str] = Counter()
        blanks = 0

        def one(seed: int, inspect: bool = False) -> float:
            nonlocal blanks
            started = time.perf_counter()
            response = client.invoke_model(modelId=MODEL_ID, body=json.dumps({**body_template, "seed": seed}))
            answer = json.loads(response["body"].read())
            elapsed = time.perf_counter() - started
            for artifact in answer["artifacts"]:
                finish_reasons[artifact["finishReason"]] += 1  # Counter's += is one bytecode-safe update
                if inspect:
                    blanks += blank(Image.open(io.BytesIO(base64.b64decode(artifact["base64"]))))
            return elapsed

        one(1000, inspect=True)  # warm-up
        latencies = [one(seed, inspect=True) for seed in range(1, args.requests + 1)]
        throughput = {}
        for concurrency in args.concurrency:
            count = max(args.requests, concurrency * 2)
            started = time.perf_counter()
            with ThreadPoolExecutor(concurrency) as pool:
                list(pool.map(one, range(2000, 2000 + count)))
            throughput[concurrency] = count / (time.perf_counter() - started)
        return {
            "p50_s": statistics.median(latencies),
            "p95_s": percentile(latencies, 0.95),
            "images_per_s": throughput,
            "finish_reasons": dict(finish_reasons),
            "blank_images_of_latency_run": blanks,
        }
    finally:
        server.stop()


# -- host codecs ------------------------------------------------------------------------------------------


def codec_cost(repeats: int = 10) -> dict[str, float]:
    from sdxl_bedrock.codecs import decode_base64_image, encode_png, png_to_base64

    request_b64 = base64.b64encode(source_png(1024)).decode()
    answer = Image.fromarray(np.random.default_rng(0).integers(0, 256, (1024, 1024, 3), dtype=np.uint8))

    def timed(function: Any) -> float:
        samples = []
        for _ in range(repeats):
            started = time.perf_counter()
            function()
            samples.append(time.perf_counter() - started)
        return statistics.median(samples) * 1000

    return {
        "decode_request_ms": timed(lambda: decode_base64_image(request_b64, "init_image")),
        "encode_answer_ms": timed(lambda: png_to_base64(encode_png(answer))),
    }


def add_model_arguments(parser: argparse.ArgumentParser) -> None:
    """What a benchmark runs on, and where its figures go: the options every benchmark here shares."""
    parser.add_argument("--model", default="tiny")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument(
        "--out-dir", type=Path, default=OUT, help="where the JSON (and a server's log) go (bench/out)"
    )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    add_model_arguments(parser)
    parser.add_argument("--requests", type=int, default=8)
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 4, 8, 16])
    parser.add_argument(
        "--server-args",
        nargs=argparse.REMAINDER,
        default=[],
        help="passed on to `sdxl-bedrock serve` (e.g. --max-batch-size 8)",
    )
    args = parser.parse_args()

    image_png = source_png(args.size)
    print(
        f"benchmark: {args.model} on {args.device}, {args.size}x{args.size} image-to-image, 30 steps, "
        f"image_strength 0.35, cfg 7, K_DPMPP_2M; {args.requests} requests per figure",
        flush=True,
    )
    args.out_dir.mkdir(parents=True, exist_ok=True)
    target = args.out_dir / f"bench-{args.model}-{args.device}-{args.size}.json"
    results: dict[str, Any] = {
        "hardware": hardware(),
        "versions": versions(),
        "model": args.model,
        "size": args.size,
        "requests": args.requests,
        "server_args": args.server_args,
    }

    def save() -> None:
        target.write_text(json.dumps(results, indent=2))

    reference = results["diffusers_in_process"] = baseline(args, image_png)
    save()
    release_gpu_memory()
    served = results["server_boto3"] = through_server(args, image_png)
    results["latency_ratio_p50"] = served["p50_s"] / reference["p50_s"]
    results["throughput_ratio"] = {
        c: ips / reference["sequential_images_per_s"] for c, ips in served["images_per_s"].items()
    }
    save()
    codecs = results["host_codecs_1024"] = codec_cost()
    save()
    print(f"hardware: {results['hardware']}")
    print(f"{'':34} {'p50 s':>8} {'p95 s':>8}")
    print(f"{'diffusers in-process':34} {reference['p50_s']:8.3f} {reference['p95_s']:8.3f}")
    print(
        f"{'server via boto3':34} {served['p50_s']:8.3f} {served['p95_s']:8.3f}   "
        f"ratio {results['latency_ratio_p50']:.2f}x"
    )
    print(f"{'throughput (images/s)':34} {'server':>8} {'ratio':>8}")
    print(f"{'diffusers sequential':34} {reference['sequential_images_per_s']:8.3f}")
    for concurrency, ips in served["images_per_s"].items():
        print(
            f"{f'server, {concurrency} concurrent clients':34} {ips:8.3f} "
            f"{results['throughput_ratio'][concurrency]:7.2f}x"
        )
    print(
        f"host codecs for 1024x1024: decode request {codecs['decode_request_ms']:.1f} ms, "
        f"encode answer {codecs['encode_answer_ms']:.1f} ms"
    )
    print(
        f"image health: finish reasons {served['finish_reasons']}; blank images: diffusers "
        f"{reference['blank_images']} of {reference['images']}, "
        f"server {served['blank_images_of_latency_run']} of {args.requests + 1}"
    )
    print(f"wrote {target}")


if __name__ == "__main__":
    main()
