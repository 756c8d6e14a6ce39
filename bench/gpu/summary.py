"""The figures of bench/gpu/run.sh's JSON files as Markdown for bench/RESULTS.md, against issue 6's targets.

    python bench/gpu/summary.py OUT/bench-eager.json [OUT/bench-compiled.json] [OUT/vae.json]

Targets (one H100, 1024x1024 image-to-image, 30 steps, image_strength 0.35, cfg 7): server p50 <= 0.5 s
for one request; >= 2.5 images/s with 16 concurrent clients; no black/NaN images. Published baselines for
context: diffusers eager 1.8 s, diffusers + CUDA graphs 0.85 s per image.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

P50_TARGET_S = 0.5
THROUGHPUT_TARGET = 2.5
TARGET_CONCURRENCY = "16"


def verdict(ok: bool) -> str:
    return "met" if ok else "NOT met"


def describe(name: str, results: dict[str, Any]) -> list[str]:
    lines = [f"### {name}: {results.get('hardware', '?')}", ""]
    versions = results.get("versions", {})
    size = results.get("size")
    serve = " ".join(results.get("server_args", []))
    lines.append(
        f"{results.get('model')} {size}x{size}, {results.get('requests')} requests per latency figure, "
        f"serve {serve}; " + ", ".join(f"{k} {v}" for k, v in versions.items())
    )
    lines.append("")
    reference = results.get("diffusers_in_process")
    served = results.get("server_boto3")
    lines += ["| | p50 s | p95 s | ratio |", "|---|---|---|---|"]
    if reference:
        lines.append(
            f"| diffusers img2img, in-process | {reference['p50_s']:.3f} | {reference['p95_s']:.3f} | 1.00 |"
        )
    if served:
        ratio = f"{results['latency_ratio_p50']:.2f}x" if "latency_ratio_p50" in results else ""
        lines.append(
            f"| sdxl-bedrock via HTTP + boto3 | {served['p50_s']:.3f} | {served['p95_s']:.3f} | {ratio} |"
        )
    lines += ["", "| throughput | images/s | vs diffusers sequential |", "|---|---|---|"]
    if reference:
        lines.append(f"| diffusers, sequential | {reference['sequential_images_per_s']:.2f} | 1.00 |")
    if served:
        for concurrency, rate in served["images_per_s"].items():
            ratio = results.get("throughput_ratio", {}).get(concurrency)
            lines.append(
                f"| server, {concurrency} concurrent clients | {rate:.2f} | "
                + (f"{ratio:.2f}x |" if ratio is not None else " |")
            )
    lines.append("")
    if served:
        rate_16 = served["images_per_s"].get(TARGET_CONCURRENCY)
        reasons = served.get("finish_reasons", {})
        blanks = served.get("blank_images_of_latency_run", 0) + (reference or {}).get("blank_images", 0)
        healthy = blanks == 0 and set(reasons) <= {"SUCCESS"}
        lines.append(
            f"- p50 {served['p50_s']:.3f} s <= {P50_TARGET_S} s: {verdict(served['p50_s'] <= P50_TARGET_S)}"
        )
        if rate_16 is not None:
            lines.append(
                f"- {rate_16:.2f} images/s at {TARGET_CONCURRENCY} clients >= {THROUGHPUT_TARGET}: "
                f"{verdict(rate_16 >= THROUGHPUT_TARGET)}"
            )
        lines.append(f"- image health: finish reasons {reasons}, blank images {blanks}: {verdict(healthy)}")
    else:
        lines.append("- the server part did not finish: see run.log and servers.log")
    codecs = results.get("host_codecs_1024")
    if codecs:
        lines.append(
            f"- host codecs 1024x1024: decode {codecs['decode_request_ms']:.1f} ms, "
            f"encode {codecs['encode_answer_ms']:.1f} ms"
        )
    return [*lines, ""]


def describe_vae(results: dict[str, Any]) -> list[str]:
    from bench.vae import table

    size = results.get("size")
    heading = f"### VAE (bench.vae): {results.get('model')} {size}x{size}, {results.get('hardware', '?')}"
    return [heading, "", *table(results["vae"]), ""]


def main() -> int:
    if len(sys.argv) < 2:
        print(__doc__, file=sys.stderr)
        return 2
    for argument in sys.argv[1:]:
        path = Path(argument)
        try:
            results = json.loads(path.read_text())
        except (OSError, ValueError) as error:
            print(f"### {path.name}: unreadable ({error})\n")
            continue
        if "vae" in results:
            print("\n".join(describe_vae(results)))
        else:
            print("\n".join(describe(path.stem.removeprefix("bench-"), results)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
