"""Two checkpoints on one server against one: the model library's cost, measured in one run.

    python -m bench.checkpoints [--size 256] [--steps 20] [--requests 16] [--concurrency 8] [--out-dir DIR]

One server with a library of two tiny checkpoints (made at run time from the embedded tiny model, as the
tests make them; with the default --max-loaded-checkpoints 1 on a CPU, so every turn may switch). Phases,
each the same `--requests` image-to-image requests (their own steps and strengths):
- baseline: all on one checkpoint, by `--concurrency` clients;
- mixed, sequential: alternating between the two checkpoints, one at a time;
- mixed, concurrent: alternating, by `--concurrency` clients.
Reports images/s (and the mixed runs' ratio to the baseline), mean rows per UNet call and the switch time
(the server's own sdxl_checkpoint_move_seconds). Target on a CPU: mixed at 8 clients >= 0.8x the baseline.
Writes JSON to --out-dir. Timings compare within one run on one machine.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
from tests.conftest import start_server
from tests.library.checkpoints import tiny_variant

from bench.run import rows_per_tick, source_png
from sdxl_bedrock.testing import bedrock_client

REPO = Path(__file__).resolve().parents[1]
FIRST = "arn:aws:bedrock:us-east-1:123456789012:custom-model/stability.stable-diffusion-xl-v1/first"
SECOND = "arn:aws:bedrock:us-east-1:123456789012:custom-model/stability.stable-diffusion-xl-v1/second"


def moves(url: str) -> tuple[float, float]:
    """(sum, count) of sdxl_checkpoint_move_seconds for loads and returns to the device."""
    total = count = 0.0
    for line in httpx.get(url + "/metrics", timeout=30).text.splitlines():
        if line.startswith("sdxl_checkpoint_move_seconds_") and (
            'to="disk-device"' in line or 'to="device"' in line
        ):
            value = float(line.rsplit(" ", 1)[1])
            if line.startswith("sdxl_checkpoint_move_seconds_sum"):
                total += value
            elif line.startswith("sdxl_checkpoint_move_seconds_count"):
                count += value
    return total, count


def bodies(count: int, size: int, steps: int) -> list[dict[str, Any]]:
    import base64

    image = base64.b64encode(source_png(size)).decode()
    return [
        {
            "text_prompts": [{"text": f"a boat, picture {index}"}],
            "init_image": image,
            "image_strength": (0.35, 0.5, 0.65)[index % 3],
            "steps": steps + 10 * (index % 2),
            "seed": index + 1,
        }
        for index in range(count)
    ]


def phase(url: str, model_ids: list[str], requests: list[dict[str, Any]], concurrency: int) -> dict[str, Any]:
    client = bedrock_client(url)

    def one(pair: tuple[str, dict[str, Any]]) -> None:
        answer = client.invoke_model(modelId=pair[0], body=json.dumps(pair[1]))
        json.loads(answer["body"].read())

    rows_before, ticks_before = rows_per_tick(url)
    moved_before, moves_before = moves(url)
    started = time.perf_counter()
    with ThreadPoolExecutor(concurrency) as pool:
        list(pool.map(one, zip(model_ids, requests, strict=True)))
    seconds = time.perf_counter() - started
    rows_after, ticks_after = rows_per_tick(url)
    moved_after, moves_after = moves(url)
    switches = moves_after - moves_before
    return {
        "images_per_s": len(requests) / seconds,
        "seconds": seconds,
        "mean_rows_per_tick": (rows_after - rows_before) / max(ticks_after - ticks_before, 1),
        "switches": switches,
        "mean_switch_s": (moved_after - moved_before) / switches if switches else None,
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--requests", type=int, default=16)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--out-dir", type=Path, default=REPO / "bench" / "out")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as scratch:
        library = Path(scratch) / "checkpoints"
        library.mkdir()
        tiny_variant(library / "first", seed=1)
        tiny_variant(library / "second", seed=2)
        server = start_server(
            Path(scratch),
            *("--model", "tiny", "--relaxed-sizes", "--checkpoint-dir", str(library)),
            *("--model-alias", f"{FIRST}=first", "--model-alias", f"{SECOND}=second"),
            *("--max-queue", str(4 * args.requests)),
        )
        try:
            requests = bodies(args.requests, args.size, args.steps)
            mixed = [FIRST if index % 2 == 0 else SECOND for index in range(args.requests)]
            phase(server.url, [FIRST, SECOND], requests[:2], 2)  # both loaded once, off the clock
            results = {
                "baseline": phase(server.url, [FIRST] * args.requests, requests, args.concurrency),
                "mixed_sequential": phase(server.url, mixed, requests, 1),
                "mixed_concurrent": phase(server.url, mixed, requests, args.concurrency),
            }
        finally:
            server.stop()
    baseline = results["baseline"]["images_per_s"]
    machine = f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs"
    print(f"model library: {args.requests} image-to-image requests at {args.size}x{args.size}, {machine}")
    print(f"{'phase':<18}{'images/s':>10}{'x baseline':>12}{'rows/tick':>11}{'switches':>10}{'switch s':>10}")
    for name, run in results.items():
        switch = f"{run['mean_switch_s']:.3f}" if run["mean_switch_s"] is not None else "-"
        print(
            f"{name:<18}{run['images_per_s']:10.3f}{run['images_per_s'] / baseline:12.2f}"
            f"{run['mean_rows_per_tick']:11.2f}{run['switches']:10.0f}{switch:>10}"
        )
    args.out_dir.mkdir(parents=True, exist_ok=True)
    report = {"machine": machine, "args": {k: str(v) for k, v in vars(args).items()}, "results": results}
    (args.out_dir / "checkpoints.json").write_text(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
