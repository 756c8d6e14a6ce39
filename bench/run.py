"""End-to-end benchmark: the server through boto3 against plain diffusers in-process, measured in one run.

    python -m bench.run [--model tiny] [--device cpu] [--size 512] [--requests 8] [--concurrency 1 4 8 16]
                        [--workload both|alike|mixed] [--out-dir bench/out] [--server-args ...]

The alike workload: every request the same parameters (image-to-image, 30 steps, image_strength 0.35,
cfg 7, K_DPMPP_2M = diffusers' DPMSolverMultistepScheduler). Reports:
- latency p50/p95 through HTTP with boto3 vs `StableDiffusionXLImg2ImgPipeline` called in-process;
- throughput at several client concurrencies vs the pipeline called sequentially;
- mean rows per UNet call (from the server's sdxl_rows_per_tick);
- the host-side codec cost (base64 + PNG decode of the request, PNG encode + base64 of the answer);
- image health: finish reasons of every answer, and blank (constant: black, or NaN cast to black) images
  among the baseline's and the latency run's pictures (decoded outside the timed span).
The mixed workload (continuous batching's case): 16 image-to-image requests with their own steps (20, 30,
40), image_strength (0.2, 0.35, 0.5, 0.65) and sampler (K_DPMPP_2M, K_EULER, DDIM, K_EULER_ANCESTRAL),
sent one at a time (the server's own sequential run) and by 4, 8 and 16 concurrent clients (--concurrency);
reports images/s with its ratio to the server's sequential run and to diffusers in-process sequential on
the same 16 requests, p50/p95 latency and mean rows per UNet call.
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
from collections.abc import Callable
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


ALIKE = {"steps": 30, "image_strength": 0.35, "sampler": "K_DPMPP_2M"}


def mixed_workload() -> list[dict[str, Any]]:
    """16 image-to-image requests, each with its own steps, image_strength and sampler."""
    samplers = ("K_DPMPP_2M", "K_EULER", "DDIM", "K_EULER_ANCESTRAL")
    return [
        {
            "steps": (20, 30, 40)[i % 3],
            "image_strength": (0.2, 0.35, 0.5, 0.65)[i % 4],
            "sampler": samplers[i // 4],
        }
        for i in range(16)
    ]


def baseline(args: argparse.Namespace, image_png: bytes, workload: list[dict[str, Any]]) -> dict[str, Any]:
    """`workload`'s requests through StableDiffusionXLImg2ImgPipeline in-process, one after another, each
    with the diffusers scheduler of its sampler (the server's own table says which)."""
    import torch

    from sdxl_bedrock.engine.loading import resolve_device, resolve_dtype
    from sdxl_bedrock.engine.models import load_pipeline
    from sdxl_bedrock.engine.samplers import make_scheduler
    from sdxl_bedrock.presets import SAMPLER_NAMES

    device = resolve_device(args.device)
    pipe: Any = load_pipeline(args.model, device=str(device), dtype=resolve_dtype("auto", device))
    config = dict(pipe.scheduler.config)
    pipe.set_progress_bar_config(disable=True)
    image = Image.open(io.BytesIO(image_png)).convert("RGB")

    blanks = 0

    def one(seed: int, fields: dict[str, Any]) -> float:
        nonlocal blanks
        pipe.scheduler = make_scheduler(SAMPLER_NAMES[fields["sampler"]], config)
        started = time.perf_counter()
        output = pipe(
            prompt="A space ship.",
            image=image,
            strength=1 - fields["image_strength"],
            num_inference_steps=fields["steps"],
            guidance_scale=7.0,
            generator=torch.Generator().manual_seed(seed),
        )
        if device.type == "cuda":
            torch.cuda.synchronize()
        elapsed = time.perf_counter() - started
        blanks += sum(blank(picture) for picture in output.images)
        return elapsed

    one(0, workload[0])  # warm-up
    latencies = [one(seed, fields) for seed, fields in enumerate(workload, start=1)]
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


def rows_per_tick(url: str) -> tuple[float, float]:
    """(sum, count) of the server's sdxl_rows_per_tick histogram: rows and UNet calls so far."""
    import httpx

    found = {"sum": 0.0, "count": 0.0}
    for line in httpx.get(url + "/metrics", timeout=30).text.splitlines():
        for part in found:
            if line.startswith(f"sdxl_rows_per_tick_{part} "):
                found[part] = float(line.split()[1])
    return found["sum"], found["count"]


class ServerClient:
    """boto3 against the running server, counting finish reasons and blank images."""

    def __init__(self, url: str, image_png: bytes) -> None:
        import boto3
        from botocore.config import Config

        self.url = url
        self.client = boto3.client(
            "bedrock-runtime",
            endpoint_url=url,
            region_name="us-east-1",
            aws_access_key_id="bench",
            aws_secret_access_key="bench",
            config=Config(max_pool_connections=64, read_timeout=900, retries={"max_attempts": 1}),
        )
        self.template = {
            "text_prompts": [{"text": "A space ship."}],
            "init_image": base64.b64encode(image_png).decode(),
            "cfg_scale": 7,
        }
        self.finish_reasons: Counter[str] = Counter()
        self.blanks = 0

    def one(self, seed: int, fields: dict[str, Any], inspect: bool = False) -> float:
        started = time.perf_counter()
        body = json.dumps({**self.template, **fields, "seed": seed})
        response = self.client.invoke_model(modelId=MODEL_ID, body=body)
        answer = json.loads(response["body"].read())
        elapsed = time.perf_counter() - started
        for artifact in answer["artifacts"]:
            self.finish_reasons[artifact["finishReason"]] += 1  # Counter's += is one bytecode-safe update
            if inspect:
                self.blanks += blank(Image.open(io.BytesIO(base64.b64decode(artifact["base64"]))))
        return elapsed

    def concurrently(self, workload: list[dict[str, Any]], clients: int, first_seed: int) -> dict[str, Any]:
        """The workload's requests by `clients` concurrent clients: images/s, latencies, rows per tick."""
        rows_before, ticks_before = rows_per_tick(self.url)
        started = time.perf_counter()
        with ThreadPoolExecutor(clients) as pool:
            latencies = list(
                pool.map(lambda item: self.one(first_seed + item[0], item[1]), enumerate(workload))
            )
        seconds = time.perf_counter() - started
        rows_after, ticks_after = rows_per_tick(self.url)
        return {
            "images_per_s": len(workload) / seconds,
            "p50_s": statistics.median(latencies),
            "p95_s": percentile(latencies, 0.95),
            "mean_rows_per_tick": (rows_after - rows_before) / max(ticks_after - ticks_before, 1),
        }


def alike_phase(
    client: ServerClient, args: argparse.Namespace, partial: Callable[[dict[str, Any]], None]
) -> dict[str, Any]:
    """`partial` gets the latency figures as soon as they exist (a run cut short keeps them)."""
    client.one(1000, ALIKE, inspect=True)  # warm-up
    latencies = [client.one(seed, ALIKE, inspect=True) for seed in range(1, args.requests + 1)]
    partial({"p50_s": statistics.median(latencies), "p95_s": percentile(latencies, 0.95)})
    runs = {
        concurrency: client.concurrently([ALIKE] * max(args.requests, concurrency * 2), concurrency, 2000)
        for concurrency in args.concurrency
    }
    return {
        "p50_s": statistics.median(latencies),
        "p95_s": percentile(latencies, 0.95),
        "images_per_s": {c: run["images_per_s"] for c, run in runs.items()},
        "mean_rows_per_tick": {c: run["mean_rows_per_tick"] for c, run in runs.items()},
        "finish_reasons": dict(client.finish_reasons),
        "blank_images_of_latency_run": client.blanks,
    }


def mixed_phase(client: ServerClient, args: argparse.Namespace) -> dict[str, Any]:
    workload = mixed_workload()
    client.one(3000, workload[0])  # warm-up
    runs = {1: client.concurrently(workload, 1, 4000)}
    for concurrency in args.concurrency:
        if concurrency > 1:
            runs[concurrency] = client.concurrently(workload, concurrency, 4000 + 100 * concurrency)
    sequential = runs[1]["images_per_s"]
    return {
        "requests": len(workload),
        "runs": runs,
        "ratio_to_server_sequential": {c: run["images_per_s"] / sequential for c, run in runs.items()},
        "finish_reasons": dict(client.finish_reasons),
    }


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


def report_alike(results: dict[str, Any], args: argparse.Namespace) -> None:
    served = results["server_boto3"]
    print(f"hardware: {results['hardware']}")
    if "diffusers_in_process" not in results:
        print(f"alike workload, server via boto3: p50 {served['p50_s']:.3f} s, p95 {served['p95_s']:.3f} s")
        for concurrency, ips in served["images_per_s"].items():
            rows = served["mean_rows_per_tick"][concurrency]
            print(f"  {concurrency} concurrent clients: {ips:.3f} images/s, {rows:.2f} rows per tick")
        return
    reference = results["diffusers_in_process"]
    print(f"{'alike workload':34} {'p50 s':>8} {'p95 s':>8}")
    print(f"{'diffusers in-process':34} {reference['p50_s']:8.3f} {reference['p95_s']:8.3f}")
    print(
        f"{'server via boto3':34} {served['p50_s']:8.3f} {served['p95_s']:8.3f}   "
        f"ratio {results['latency_ratio_p50']:.2f}x"
    )
    print(f"{'throughput (images/s)':34} {'server':>8} {'ratio':>8} {'rows/tick':>9}")
    print(f"{'diffusers sequential':34} {reference['sequential_images_per_s']:8.3f}")
    for concurrency, ips in served["images_per_s"].items():
        print(
            f"{f'server, {concurrency} concurrent clients':34} {ips:8.3f} "
            f"{results['throughput_ratio'][concurrency]:7.2f}x "
            f"{served['mean_rows_per_tick'][concurrency]:9.2f}"
        )
    print(
        f"image health: finish reasons {served['finish_reasons']}; blank images: diffusers "
        f"{reference['blank_images']} of {reference['images']}, "
        f"server {served['blank_images_of_latency_run']} of {args.requests + 1}"
    )


def report_mixed(results: dict[str, Any]) -> None:
    mixed = results["mixed_server_boto3"]
    diffusers = results.get("mixed_diffusers_in_process", {}).get("sequential_images_per_s", float("nan"))
    print(f"mixed workload ({mixed['requests']} requests): diffusers sequential {diffusers:.3f} images/s")
    columns = ("images/s", "vs seq", "vs diff", "p50 s", "p95 s", "rows/tick")
    print(f"{'clients':>8} " + " ".join(f"{column:>9}" for column in columns))
    for clients, run in mixed["runs"].items():
        figures = (
            f"{run['images_per_s']:9.3f}",
            f"{mixed['ratio_to_server_sequential'][clients]:8.2f}x",
            f"{mixed.get('ratio_to_diffusers_sequential', {}).get(clients, float('nan')):8.2f}x",
            f"{run['p50_s']:9.3f}",
            f"{run['p95_s']:9.3f}",
            f"{run['mean_rows_per_tick']:9.2f}",
        )
        print(f"{clients:>8} " + " ".join(figures))
    print(f"mixed finish reasons: {mixed['finish_reasons']}")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    add_model_arguments(parser)
    parser.add_argument("--requests", type=int, default=8)
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 4, 8, 16])
    parser.add_argument(
        "--workload",
        choices=["both", "alike", "mixed"],
        default="both",
        help="alike: one set of parameters; mixed: each request its own steps, strength and sampler",
    )
    parser.add_argument(
        "--no-baseline", action="store_true", help="skip diffusers in-process (no ratios to it): saves time"
    )
    parser.add_argument(
        "--server-args",
        nargs=argparse.REMAINDER,
        default=[],
        help="passed on to `sdxl-bedrock serve` (e.g. --max-batch-size 8)",
    )
    args = parser.parse_args()

    image_png = source_png(args.size)
    print(
        f"benchmark: {args.model} on {args.device}, {args.size}x{args.size} image-to-image, cfg 7; "
        f"{args.workload} workload(s); alike: 30 steps, image_strength 0.35, K_DPMPP_2M, "
        f"{args.requests} requests per figure",
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

    workloads = ["alike", "mixed"] if args.workload == "both" else [args.workload]
    if "alike" in workloads and not args.no_baseline:
        results["diffusers_in_process"] = baseline(args, image_png, [ALIKE] * args.requests)
        save()
    if "mixed" in workloads and not args.no_baseline:
        results["mixed_diffusers_in_process"] = baseline(args, image_png, mixed_workload())
        save()
    release_gpu_memory()
    server = start_server(args)
    try:
        client = ServerClient(server.url, image_png)
        if "alike" in workloads:

            def partial(figures: dict[str, Any]) -> None:
                results["server_boto3"] = figures
                save()

            served = results["server_boto3"] = alike_phase(client, args, partial)
            reference = results.get("diffusers_in_process")
            if reference is not None:
                results["latency_ratio_p50"] = served["p50_s"] / reference["p50_s"]
                results["throughput_ratio"] = {
                    c: ips / reference["sequential_images_per_s"] for c, ips in served["images_per_s"].items()
                }
            save()
            report_alike(results, args)
        if "mixed" in workloads:
            mixed = results["mixed_server_boto3"] = mixed_phase(client, args)
            if "mixed_diffusers_in_process" in results:
                diffusers = results["mixed_diffusers_in_process"]["sequential_images_per_s"]
                mixed["ratio_to_diffusers_sequential"] = {
                    c: run["images_per_s"] / diffusers for c, run in mixed["runs"].items()
                }
            save()
            report_mixed(results)
    finally:
        server.stop()
    codecs = results["host_codecs_1024"] = codec_cost()
    save()
    print(
        f"host codecs for 1024x1024: decode request {codecs['decode_request_ms']:.1f} ms, "
        f"encode answer {codecs['encode_answer_ms']:.1f} ms"
    )
    print(f"wrote {target}")


if __name__ == "__main__":
    main()
