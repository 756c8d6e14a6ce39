"""Engine-test fixtures: one tiny engine for the session, the plain diffusers pipeline to compare with."""

from __future__ import annotations

import dataclasses
import io
from typing import Any

import numpy as np
import pytest
import torch
from diffusers import StableDiffusionXLImg2ImgPipeline
from PIL import Image
from torch._dynamo.utils import counters

from sdxl_bedrock.engine.pipeline import Engine
from sdxl_bedrock.engine.tiny import tiny_model_path
from sdxl_bedrock.schema import GenerationRequest, Sampler, WeightedPrompt
from tests.conftest import gradient_png


@pytest.fixture(scope="session")
def engine(cache_dir: object) -> Engine:
    return Engine.load("tiny", device="cpu", dtype="float32")


@pytest.fixture(scope="session")
def reference_pipe(cache_dir: object) -> StableDiffusionXLImg2ImgPipeline:
    pipe = StableDiffusionXLImg2ImgPipeline.from_pretrained(tiny_model_path(), torch_dtype=torch.float32)
    pipe.set_progress_bar_config(disable=True)
    return pipe


@pytest.fixture(scope="session")
def source() -> Image.Image:
    return Image.open(io.BytesIO(gradient_png(64, 64))).convert("RGB")


def as_array(image: Image.Image) -> np.ndarray:
    return np.asarray(image.convert("RGB"), dtype=np.int16)


def generation_request(prompt: str = "a lamp", **changes: Any) -> GenerationRequest:
    """A 64x64 text-to-image request, 10 steps of K_DPMPP_2M, cfg 7, seed 1; `changes` replace fields."""
    base = GenerationRequest(
        prompts=(WeightedPrompt(prompt, 1.0),),
        negative_prompts=(),
        width=64,
        height=64,
        seed=1,
        steps=10,
        cfg_scale=7.0,
        sampler=Sampler.DPMPP_2M,
    )
    return dataclasses.replace(base, **changes)


def compilations() -> int:
    """Graphs torch.compile has made in this process so far."""
    return int(counters["stats"]["unique_graphs"])
