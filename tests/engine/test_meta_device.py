"""The GPU's device rules, checked without a GPU: the engine runs with its models on torch's `meta` device.

Meta tensors hold no data, and torch applies to them the rules it applies to CUDA tensors: an op that meets
a CPU tensor of more than one element beside them fails (on a GPU: "expected all tensors to be on the same
device"), and reading a value back (`.item()`, `bool()`, a copy to the CPU) fails too (on a GPU: a sync that
drains the kernel queue). So every sampler running steps 1-5 (prompts, starting latents, the whole denoising
loop) to the end here means that on a GPU nothing in them mixes devices or waits on the GPU, from the first
step, in every mode.
"""

from __future__ import annotations

import pytest
import torch
from PIL import Image

from sdxl_bedrock.engine.pipeline import Engine
from sdxl_bedrock.engine.tiny import tiny_model_path
from sdxl_bedrock.schema import Sampler, WeightedPrompt
from tests.engine.conftest import generation_request

LONG_PROMPT = " ".join(["a lighthouse on a cliff above a stormy sea"] * 12)  # over 77 tokens: two chunks


@pytest.fixture(scope="module")
def meta_engine(cache_dir: object) -> Engine:
    from diffusers import StableDiffusionXLImg2ImgPipeline

    pipe = StableDiffusionXLImg2ImgPipeline.from_pretrained(tiny_model_path(), torch_dtype=torch.float32)
    pipe.set_progress_bar_config(disable=True)
    return Engine(pipe.to("meta"), torch.device("meta"), torch.float32)


@pytest.mark.parametrize("mode", ["text-to-image", "image-to-image", "masked"])
@pytest.mark.parametrize("sampler", list(Sampler))
def test_every_sampler_keeps_to_the_device(
    meta_engine: Engine, source: Image.Image, sampler: Sampler, mode: str
) -> None:
    image = {
        "init_image": source if mode != "text-to-image" else None,
        "denoise_from": 0.65 if mode != "text-to-image" else 1.0,
        "mask": Image.new("L", source.size, 255) if mode == "masked" else None,
    }
    batch = [
        generation_request(sampler=sampler, steps=10, **image),
        # Another prompt length (a padding mask over prompt chunks), a negative prompt, no guidance here.
        generation_request(
            LONG_PROMPT,
            sampler=sampler,
            steps=10,
            seed=2,
            cfg_scale=1.0,
            negative_prompts=(WeightedPrompt("fog", 1.0),),
            **image,
        ),
    ]
    for latents in meta_engine.denoised_latents(batch):
        assert latents is not None
        assert latents.device.type == "meta"
        assert latents.shape == (1, 4, 8, 8)
