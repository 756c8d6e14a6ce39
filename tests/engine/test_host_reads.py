"""The denoising loop never reads a tensor's value back to the host: on a GPU each read is a sync that
drains the queue of kernels. Checked on the CPU by watching every op the loop dispatches after its first
step (the GPU suite, tests/gpu, checks the same with CUDA's own sync detector), for every sampler, beside a
streaming row that takes a preview at each step (engine/previews.py: the engine thread only queues a copy;
the picture is made on a host thread)."""

from __future__ import annotations

import collections
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

import pytest
import torch
from PIL import Image
from torch.utils._python_dispatch import TorchDispatchMode

from sdxl_bedrock.engine.pipeline import Engine
from sdxl_bedrock.scheduler.types import PendingPreview, Preview
from sdxl_bedrock.schema import GenerationRequest, Sampler, WeightedPrompt
from tests.engine.conftest import generation_request
from tests.engine.test_noise import sampler_cases

HOST_READS = {
    torch.ops.aten._local_scalar_dense.default,  # .item(), float(t), int(t)
    torch.ops.aten.is_nonzero.default,  # bool(t), `if t:`
    torch.ops.aten.nonzero.default,  # data-dependent shapes
    torch.ops.aten.equal.default,
}


# What making a preview may dispatch on the engine thread: a view of the row's latents, a host buffer and the
# copy into it. The picture's arithmetic (the latent-to-RGB map, clamping, rounding) belongs to a host thread.
PREVIEW_OPS = {
    torch.ops.aten.select.int,
    torch.ops.aten.slice.Tensor,
    torch.ops.aten.empty.memory_format,
    torch.ops.aten.copy_.default,
}


class HostReads(TorchDispatchMode):
    """Counts host reads (thread-local, as every dispatch mode: only the engine thread's ops), and records
    what is dispatched while `in_preview` is set."""

    def __init__(self) -> None:
        super().__init__()
        self.seen: collections.Counter[str] = collections.Counter()
        self.in_preview = False
        self.preview_ops: set[Any] = set()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        if func in HOST_READS:
            self.seen[str(func)] += 1
        if self.in_preview:
            self.preview_ops.add(func)
        return func(*args, **(kwargs or {}))


def host_reads_in_loop(engine: Engine, requests: list[GenerationRequest]) -> collections.Counter[str]:
    """The host reads of steps 2..N (the first step may still settle the schedule)."""
    reads = HostReads()

    def on_step(done: int, total: int, preview: object) -> None:
        if done == 1:
            reads.__enter__()
        if done == total:
            reads.__exit__(None, None, None)

    engine.generate(requests, [on_step, *[None] * (len(requests) - 1)])
    return reads.seen


def request(source: Image.Image | None, cfg_scale: float, seed: int) -> GenerationRequest:
    return generation_request(
        "a harbour at dawn",
        negative_prompts=(WeightedPrompt("fog", 1.0),),
        seed=seed,
        steps=30,
        cfg_scale=cfg_scale,
        init_image=source,
        denoise_from=0.65 if source is not None else 1.0,
    )


@pytest.mark.parametrize("image_to_image", [True, False], ids=["image-to-image", "text-to-image"])
def test_the_default_sampler_reads_nothing_back_during_the_loop(
    engine: Engine, source: Image.Image, image_to_image: bool
) -> None:
    init = source if image_to_image else None
    requests = [request(init, 7.0, seed=1), request(init, 1.0, seed=2)]  # per-row guidance, one skipped
    assert host_reads_in_loop(engine, requests) == {}


@pytest.mark.parametrize(("sampler", "eta"), sampler_cases())
def test_a_streaming_row_with_previews_adds_no_host_read_whatever_the_sampler(
    engine: Engine, source: Image.Image, sampler: Sampler, eta: float | None
) -> None:
    """A streaming row's step callback does what api/bedrock/stream.py's does: starts the preview on the
    engine thread and hands it to a host thread for the picture. The engine thread then reads back exactly
    what it reads without previews: some samplers read their own schedule, which lives on the host
    (test_meta_device shows that none reads a device tensor), and the preview adds nothing but a view and a
    copy."""

    def plain(seed: int, cfg_scale: float, **changes: Any) -> GenerationRequest:
        return generation_request(
            seed=seed, steps=12, cfg_scale=cfg_scale, sampler=sampler, eta=eta, **changes
        )

    requests = [
        plain(1, 7.0),
        plain(2, 1.0, init_image=source, denoise_from=0.65),
        plain(3, 7.0, negative_prompts=(WeightedPrompt("fog", 1.0),)),
    ]
    host = ThreadPoolExecutor(1, thread_name_prefix="host")
    pictures: list[Future[Image.Image]] = []

    def run(with_previews: bool) -> HostReads:
        reads = HostReads()

        def on_step(done: int, total: int, preview: Preview) -> None:
            if done == 1:
                reads.__enter__()
            if with_previews:
                reads.in_preview = True
                pending: PendingPreview = preview()
                reads.in_preview = False
                pictures.append(host.submit(pending.image))
            if done == total:
                reads.__exit__(None, None, None)

        engine.generate(requests, [on_step, None, None])
        return reads

    try:
        without, streaming = run(with_previews=False), run(with_previews=True)
        images = [picture.result(timeout=60) for picture in pictures]
    finally:
        host.shutdown()
    assert streaming.seen == without.seen
    assert streaming.preview_ops <= PREVIEW_OPS, (
        f"on the engine thread: {streaming.preview_ops - PREVIEW_OPS}"
    )
    assert len(images) == 12 and all(image.size == (8, 8) for image in images)
