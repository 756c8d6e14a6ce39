"""The testing fixture's costs: how long `sdxl_bedrock.testing.server()` takes to come up, and one call of
each Bedrock body family through boto3 at its default size.

    python -m bench.fixture [--starts 3] [--calls 3] [--out-dir bench/out]

The baseline, measured in the same run on the same server, is SDXL 1.0's default image-to-image request
(1024x1024, 30 steps, image_strength 0.35): each family's median is given as a ratio to it, with the
absolute figures and the machine. The same calls are then made on a server of the `tiny` model (the
fixture's model before `micro`, and the server's default), and each family's micro median given as a ratio
to tiny's. The first start builds the micro model into the cache when it is not there yet; it is reported
apart from the warm starts a test suite sees.
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
from collections.abc import Callable
from pathlib import Path
from typing import Any

from PIL import Image

from sdxl_bedrock import testing

BASELINE = "SDXL 1.0 image-to-image"


def png(size: tuple[int, int], mode: str = "RGB") -> str:
    buffer = io.BytesIO()
    Image.new(mode, size, (90, 140, 200)).save(buffer, "PNG")
    return base64.b64encode(buffer.getvalue()).decode()


def mask(size: tuple[int, int]) -> str:
    image = Image.new("L", size, 0)
    image.paste(255, (0, 0, size[0] // 4, size[1] // 4))
    buffer = io.BytesIO()
    image.save(buffer, "PNG")
    return base64.b64encode(buffer.getvalue()).decode()


SQUARE = (1024, 1024)
# (family, model id, body): each at the size a default server answers it with.
CALLS: list[tuple[str, str, dict[str, Any]]] = [
    (
        BASELINE,
        "stability.stable-diffusion-xl-v1",
        {"text_prompts": [{"text": "a lighthouse"}], "init_image": png(SQUARE), "seed": 1},
    ),
    (
        "SDXL 1.0 text-to-image",
        "stability.stable-diffusion-xl-v1",
        {"text_prompts": [{"text": "a lighthouse"}]},
    ),
    (
        "SD3.5 Large image-to-image",
        "stability.sd3-5-large-v1:0",
        {"prompt": "a lighthouse", "mode": "image-to-image", "image": png(SQUARE), "strength": 0.65},
    ),
    ("SD3.5 Large text-to-image", "stability.sd3-5-large-v1:0", {"prompt": "a lighthouse"}),
    ("Stable Image Core", "stability.stable-image-core-v1:1", {"prompt": "a lighthouse"}),
    ("Stable Image Ultra", "stability.stable-image-ultra-v1:1", {"prompt": "a lighthouse"}),
    (
        "Inpaint",
        "stability.stable-image-inpaint-v1:0",
        {"prompt": "a door", "image": png(SQUARE), "mask": mask(SQUARE)},
    ),
    ("Outpaint", "stability.stable-outpaint-v1:0", {"image": png((768, 1024)), "right": 256}),
    (
        "Erase object",
        "stability.stable-image-erase-object-v1:0",
        {"image": png(SQUARE), "mask": mask(SQUARE)},
    ),
]


def timed(action: Callable[[], object]) -> float:
    started = time.monotonic()
    action()
    return time.monotonic() - started


def start_once() -> float:
    def start() -> None:
        with testing.server():
            pass

    return timed(start)


def call_each_family(model: str, calls: int) -> dict[str, list[float]]:
    """Each body family's call times (s) on one fresh server of `model`, after one untimed call each."""
    latencies: dict[str, list[float]] = {}
    with testing.server(model=model) as url:
        client = testing.bedrock_client(url, read_timeout_s=600)
        for family, model_id, body in CALLS:
            encoded = json.dumps(body)

            def call(model_id: str = model_id, encoded: str = encoded) -> None:
                client.invoke_model(modelId=model_id, body=encoded)["body"].read()

            call()  # the first call of a size pays for its one-time work
            latencies[family] = [timed(call) for _ in range(calls)]
    return latencies


def machine() -> dict[str, Any]:
    import torch

    return {
        "cpu": platform.processor() or platform.machine(),
        "cores": os.cpu_count(),
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "python": platform.python_version(),
        "load_average": os.getloadavg(),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--starts", type=int, default=3)
    parser.add_argument("--calls", type=int, default=3)
    parser.add_argument("--out-dir", type=Path, default=Path("bench/out"))
    options = parser.parse_args()
    first_start = start_once()
    warm_starts = [start_once() for _ in range(options.starts)]
    latencies = call_each_family(testing.DEFAULT_MODEL, options.calls)
    tiny_latencies = call_each_family("tiny", options.calls)
    baseline = statistics.median(latencies[BASELINE])
    report = {
        "machine": machine(),
        "model": testing.DEFAULT_MODEL,
        "first_start_s": first_start,
        "warm_start_s": warm_starts,
        "calls_s": latencies,
        "ratio_to_baseline": {
            family: statistics.median(times) / baseline for family, times in latencies.items()
        },
        "tiny_calls_s": tiny_latencies,
        "ratio_to_tiny": {
            family: statistics.median(times) / statistics.median(tiny_latencies[family])
            for family, times in latencies.items()
        },
    }
    options.out_dir.mkdir(parents=True, exist_ok=True)
    (options.out_dir / "fixture.json").write_text(json.dumps(report, indent=2))
    print(f"machine: {report['machine']}")
    print(f"fixture start-up: first {first_start:.2f} s, warm median {statistics.median(warm_starts):.2f} s")
    print(f"{'body family':<30} {'median s':>9} {'vs ' + BASELINE:>28} {'tiny s':>7} {'vs tiny':>8}")
    for family, times in latencies.items():
        print(
            f"{family:<30} {statistics.median(times):>9.3f} {report['ratio_to_baseline'][family]:>27.2f}x "
            f"{statistics.median(tiny_latencies[family]):>7.3f} {report['ratio_to_tiny'][family]:>7.2f}x"
        )


if __name__ == "__main__":
    main()
