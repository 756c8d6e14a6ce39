"""The VAE's working memory per image: what the engine's VAE budget (engine/vae.py) is sized by.

    python -m bench.vae_memory [--device cpu] [--dtype float32] [--sizes 512 1024] [--batch 1 2]

Builds SDXL 1.0 base's VAE from the shipped config with random weights (the architecture decides the
activations, not the weights) and measures, for each size and batch, the peak memory one decode (latents
to pixels) and one encode (pixels to latents) take beyond the weights: on CUDA torch's own peak counter,
on a CPU the peak resident set of a fresh process (each measurement runs in its own). Prints a Markdown
table with bytes per output pixel, the figure `VAE_BYTES_PER_PIXEL` is chosen from.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys

from bench.run import hardware


def measure(device: str, dtype: str, size: int, batch: int, direction: str) -> int:
    """Peak bytes beyond the loaded weights for one call (run in this process)."""
    import torch
    from diffusers import AutoencoderKL

    from sdxl_bedrock.engine.sdxl_base_config import load_sdxl_base_component_config

    torch.manual_seed(0)
    torch_dtype = getattr(torch, dtype)
    vae = AutoencoderKL.from_config(load_sdxl_base_component_config("vae")).to(device, torch_dtype).eval()
    if direction == "decode":
        tensor = torch.randn(batch, 4, size // 8, size // 8, device=device, dtype=torch_dtype)
    else:
        tensor = torch.rand(batch, 3, size, size, device=device, dtype=torch_dtype) * 2 - 1
    with torch.inference_mode():
        if device == "cuda":
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
            before = torch.cuda.memory_allocated()
        else:
            before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
        output = vae.decode(tensor).sample if direction == "decode" else vae.encode(tensor).latent_dist.mean
        if device == "cuda":
            torch.cuda.synchronize()
            peak = torch.cuda.max_memory_allocated()
        else:
            peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
        del output
    return int(peak - before)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", default="float32")
    parser.add_argument("--sizes", type=int, nargs="+", default=[512, 1024])
    parser.add_argument("--batch", type=int, nargs="+", default=[1])
    parser.add_argument("--directions", nargs="+", default=["decode", "encode"])
    parser.add_argument("--one", nargs=4, metavar=("SIZE", "BATCH", "DIRECTION", "_"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        size, batch, direction, _ = args.one
        print(json.dumps(measure(args.device, args.dtype, int(size), int(batch), direction)))
        return
    print(f"VAE working memory, SDXL 1.0 base architecture, {args.dtype} on {args.device} ({hardware()})\n")
    print("| call | size | batch | peak beyond weights | bytes per pixel |")
    print("|---|---|---|---|---|")
    for direction in args.directions:
        for size in args.sizes:
            for batch in args.batch:
                command = [sys.executable, "-m", "bench.vae_memory", "--device", args.device]
                command += ["--dtype", args.dtype, "--one", str(size), str(batch), direction, "-"]
                peak = int(subprocess.run(command, check=True, capture_output=True, text=True).stdout)
                per_pixel = peak / (batch * size * size)
                print(f"| {direction} | {size}x{size} | {batch} | {peak / 2**20:.0f} MiB | {per_pixel:.0f} |")


if __name__ == "__main__":
    main()
