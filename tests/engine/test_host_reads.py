"""The denoising loop never reads a tensor's value back to the host: on a GPU each read is a sync that
drains the queue of kernels. Checked on the CPU by watching every op the loop dispatches after its first
step (the GPU suite, tests/gpu, checks the same with CUDA's own sync detector)."""

from __future__ import annotations

import collections

import pytest
import torch
from PIL import Image
from torch.utils._python_dispatch import TorchDispatchMode

from sdxl_bedrock.engine.pipeline import Engine
from sdxl_bedrock.schema import GenerationRequest, WeightedPrompt
from tests.engine.conftest import generation_request

HOST_READS = {
    torch.ops.aten._local_scalar_dense.default,  # .item(), float(t), int(t)
    torch.ops.aten.is_nonzero.default,  # bool(t), `if t:`
    torch.ops.aten.nonzero.default,  # data-dependent shapes
    torch.ops.aten.equal.default,
}


class HostReads(TorchDispatchMode):
    def __init__(self) -> None:
        super().__init__()
        self.seen: collections.Counter[str] = collections.Counter()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        if func in HOST_READS:
            self.seen[str(func)] += 1
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
