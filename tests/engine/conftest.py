"""Engine-test fixtures: one tiny engine for the session, the plain diffusers pipeline to compare with."""

from __future__ import annotations

import io

import numpy as np
import pytest
import torch
from diffusers import StableDiffusionXLImg2ImgPipeline
from PIL import Image

from sdxl_bedrock.engine.pipeline import Engine
from sdxl_bedrock.engine.tiny import tiny_model_path
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
