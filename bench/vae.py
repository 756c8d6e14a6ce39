"""The VAE's cost in each dtype: what `--vae-dtype auto` (bfloat16 on a GPU) saves over float32.

    python -m bench.vae [--model tiny] [--device cpu] [--size 512] [--batch 1 8] [--repeats 3]
                        [--out-dir bench/out]

Times the engine's own decode (model latents to pixels) and the VAE's encode (an image-to-image request's
source to latents) at each batch size, float32 against bfloat16, on the same weights in one run, and
reports how far bfloat16's pictures land from float32's (in 8-bit levels, on random latents).
Writes vae-MODEL-DEVICE-SIZE.json and prints a Markdown table.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from collections.abc import Callable
from typing import Any

import torch

from bench.run import add_model_arguments, hardware, versions

DTYPES = ("float32", "bfloat16")


def timed(
    function: Callable[[], torch.Tensor], device: torch.device, repeats: int
) -> tuple[float, torch.Tensor]:
    """Median seconds over `repeats` calls after one warm-up, and the last result."""
    result = function()
    latencies = []
    for _ in range(repeats):
        if device.type == "cuda":
            torch.cuda.synchronize()
        started = time.perf_counter()
        result = function()
        if device.type == "cuda":
            torch.cuda.synchronize()
        latencies.append(time.perf_counter() - started)
    return statistics.median(latencies), result


def levels(pixels: torch.Tensor) -> torch.Tensor:
    """[-1, 1] pixels as the 8-bit levels the answer's PNG holds."""
    return ((pixels.float().clamp(-1, 1) + 1) * 127.5).round()


@torch.inference_mode()
def measure(args: argparse.Namespace) -> dict[str, Any]:
    from sdxl_bedrock.engine.pipeline import Engine

    # The UNet is not timed: the default dtype (float16 on a GPU) only makes the model quicker to load.
    engine = Engine.load(args.model, args.device, vae_dtype="float32")
    generator = torch.Generator().manual_seed(0)
    latent_side = args.size // engine.vae_scale_factor
    results: dict[str, Any] = {}
    for batch in args.batch:
        latents = torch.randn(batch, 4, latent_side, latent_side, generator=generator).to(engine.device)
        images = torch.rand(batch, 3, args.size, args.size, generator=generator).to(engine.device) * 2 - 1
        results[str(batch)] = one_batch(engine, latents, images, args.repeats)
    return results


def one_batch(engine: Any, latents: torch.Tensor, images: torch.Tensor, repeats: int) -> dict[str, Any]:
    vae, row, decoded = engine.pipe.vae, {}, {}
    for name in DTYPES:
        vae.to(getattr(torch, name))
        decode_s, decoded[name] = timed(lambda: engine.decode_pixels(latents), engine.device, repeats)
        encode_s, _ = timed(lambda: vae.encode(images.to(vae.dtype)).latent_dist.mean, engine.device, repeats)
        row[f"decode_{name}_ms"], row[f"encode_{name}_ms"] = 1000 * decode_s, 1000 * encode_s
        print(
            f"batch {len(latents)}, {name}: decode {1000 * decode_s:.1f} ms, encode {1000 * encode_s:.1f} ms",
            flush=True,
        )
    difference = (levels(decoded["bfloat16"]) - levels(decoded["float32"])).abs()
    row["bfloat16_levels_off_mean"] = float(difference.mean())
    row["bfloat16_levels_off_max"] = float(difference.max())
    return row


def table(results: dict[str, Any]) -> list[str]:
    lines = [
        "| batch | decode float32 ms | decode bfloat16 ms | ratio "
        "| encode float32 ms | encode bfloat16 ms | ratio | bfloat16 off by (levels, mean / max) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for batch, row in results.items():
        cells = [batch]
        for op in ("decode", "encode"):
            single, half = row[f"{op}_float32_ms"], row[f"{op}_bfloat16_ms"]
            cells += [f"{single:.1f}", f"{half:.1f}", f"{half / single:.2f}x"]
        cells.append(f"{row['bfloat16_levels_off_mean']:.2f} / {row['bfloat16_levels_off_max']:.0f}")
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    add_model_arguments(parser)
    parser.add_argument("--batch", type=int, nargs="+", default=[1, 8])
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    results = {
        "hardware": hardware(),
        "versions": versions(),
        "model": args.model,
        "size": args.size,
        "vae": measure(args),
    }
    args.out_dir.mkdir(parents=True, exist_ok=True)
    target = args.out_dir / f"vae-{args.model}-{args.device}-{args.size}.json"
    target.write_text(json.dumps(results, indent=2))
    print(f"\nVAE, {args.model} {args.size}x{args.size} on {results['hardware']}\n")
    print("\n".join(table(results["vae"])))
    print(f"\nwrote {target}")


if __name__ == "__main__":
    main()
