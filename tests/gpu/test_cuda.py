"""The CUDA paths, on a GPU (skipped without one): the same engine code the CPU suite tests, checked for
what only a GPU can show. Run with `python -m pytest -m gpu tests/gpu` (bench/gpu/run.sh does it on a lent
machine)."""

from __future__ import annotations

import io
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image

from sdxl_bedrock.engine.pipeline import Engine
from sdxl_bedrock.scheduler.types import PendingPreview, Preview
from sdxl_bedrock.schema import SAMPLERS_WITH_ETA, GenerationRequest, Sampler, WeightedPrompt
from tests.conftest import gradient_png
from tests.engine.conftest import compilations, generation_request

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device"),
]

# Every sampler, and the two that take an eta with one that adds noise: the ancestral ones draw their step
# noise from each request's CPU generator (so a seed gives the same picture on any device), made ahead and
# copied to the GPU from pinned memory without waiting (engine/noise.py).
SAMPLER_CASES = [(sampler, None) for sampler in Sampler] + [
    (sampler, 0.5) for sampler in sorted(SAMPLERS_WITH_ETA)
]


def request(seed: int = 1, **changes: Any) -> GenerationRequest:
    source = Image.open(io.BytesIO(gradient_png(128, 128))).convert("RGB")
    image_to_image = {"width": 128, "height": 128, "init_image": source, "denoise_from": 0.65}
    return generation_request("a lighthouse", seed=seed, steps=30, **{**image_to_image, **changes})


def pixels(image: Image.Image) -> np.ndarray:
    return np.asarray(image.convert("RGB"), dtype=np.int16)


@pytest.fixture(scope="module")
def half(cache_dir: object) -> Engine:
    return Engine.load("tiny", "cuda", "float16")


@pytest.fixture(scope="module")
def single(cache_dir: object) -> Engine:
    return Engine.load("tiny", "cuda", "float32")


@pytest.mark.parametrize(("sampler", "eta"), SAMPLER_CASES)
def test_the_denoising_loop_never_syncs_with_the_host(
    half: Engine, sampler: Sampler, eta: float | None
) -> None:
    """CUDA's sync detector is armed from the end of the first step to the end of the last of a streaming row
    that takes a preview at every step as api/bedrock/stream.py does (started on the engine thread, its
    picture made on a host thread: engine/previews.py); its window is the longest, its companions' shorter."""
    host = ThreadPoolExecutor(1, thread_name_prefix="host")
    pictures: list[Future[Image.Image]] = []

    def streaming(done: int, total: int, preview: Preview) -> None:
        torch.cuda.set_sync_debug_mode("error" if done < total else "default")
        pending: PendingPreview = preview()
        pictures.append(host.submit(pending.image))

    try:
        half.generate(
            [
                request(sampler=sampler, eta=eta),
                request(seed=2, sampler=sampler, eta=eta, cfg_scale=1.0),
                request(seed=3, sampler=sampler, eta=eta, init_image=None, denoise_from=1.0),
            ],
            [None, None, streaming],
        )
        images = [picture.result(timeout=60) for picture in pictures]
    finally:
        torch.cuda.set_sync_debug_mode("default")
        host.shutdown()
    assert len(images) == 30 and all(image.size == (16, 16) for image in images)


def test_half_precision_makes_finite_images_equal_alone_and_batched(half: Engine) -> None:
    alone = half.generate([request(seed=5)])[0].image
    others = [request(seed=i, prompts=(WeightedPrompt(f"p{i}", 1.0),)) for i in range(4)]
    batched = half.generate([*others, request(seed=5)])[-1].image
    assert pixels(alone).std() > 0
    assert np.abs(pixels(alone) - pixels(batched)).max() <= 2


@pytest.mark.parametrize("sampler", [Sampler.DPMPP_2M, Sampler.EULER_ANCESTRAL, Sampler.DPMPP_2S_ANCESTRAL])
def test_a_seed_gives_the_same_picture_on_the_gpu_as_on_the_cpu(
    single: Engine, cache_dir: object, sampler: Sampler
) -> None:
    cpu = Engine.load("tiny", "cpu", "float32")
    on_gpu, on_cpu = (pixels(e.generate([request(seed=9, sampler=sampler)])[0].image) for e in (single, cpu))
    # Other noise would put them tens of levels apart; TF32 matmuls on the GPU leave a few levels at most.
    assert np.abs(on_gpu - on_cpu).mean() < 3.0, "same noise (CPU generators), only rounding apart"


def test_image_conversions_on_the_gpu_match_the_cpu_to_the_bit() -> None:
    from sdxl_bedrock.engine.pixels import images_from_pixels, pixels_from_images

    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    source = Image.open(io.BytesIO(gradient_png(64, 64))).convert("RGB")
    on_gpu = pixels_from_images([source], cuda, torch.float32)
    assert torch.equal(on_gpu.cpu(), pixels_from_images([source], cpu, torch.float32))
    [image_on_gpu], [image_on_cpu] = images_from_pixels(on_gpu * 1.3), images_from_pixels(on_gpu.cpu() * 1.3)
    assert np.array_equal(pixels(image_on_gpu), pixels(image_on_cpu))


def test_the_default_bfloat16_vae_makes_the_float32_vae_picture(half: Engine, cache_dir: object) -> None:
    assert half.pipe.vae.dtype == torch.bfloat16, "--vae-dtype auto on a GPU with bfloat16"
    float32_vae = Engine.load("tiny", "cuda", "float16", vae_dtype="float32")
    ours, theirs = (pixels(e.generate([request(seed=11)])[0].image) for e in (half, float32_vae))
    assert np.abs(ours - theirs).mean() < 1.5


def test_compiled_cuda_graphs_serve_any_batch_size_without_recompiling(
    half: Engine, cache_dir: object
) -> None:
    compiled = Engine.load("tiny", "cuda", "float16", compile_unet=True)
    compiled.warm_up(128, 128, 1)
    compiled.warm_up(128, 128, 2)
    before, eager = compilations(), compiled.unet.calls["eager"]
    batch = [request(seed=i) for i in range(3)]  # 6 UNet rows: a 4-row graph and a 2-row graph
    ours, theirs = compiled.generate(batch), half.generate(batch)
    assert compilations() == before
    assert compiled.unet.calls["eager"] == eager
    for a, b in zip(ours, theirs, strict=True):
        assert np.abs(pixels(a.image) - pixels(b.image)).max() <= 3


def test_out_of_memory_frees_the_cache_and_the_engine_recovers(half: Engine) -> None:
    free, _ = torch.cuda.mem_get_info()
    hog = torch.empty(free - 64 * 2**20, dtype=torch.uint8, device="cuda")
    try:
        big = dict(width=1024, height=1024, init_image=None, denoise_from=1.0)
        with pytest.raises(torch.OutOfMemoryError):
            half.generate([request(seed=i, **big) for i in range(8)])
    finally:
        del hog
    assert half.generate([request()])[0].image.size == (128, 128)
