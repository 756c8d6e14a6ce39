"""Output sizes that are multiples of 8 but not of 64 (A1111 takes any from 64 to 2048): latents of any size
go through the UNet (diffusers hands the skip connections' sizes to its upsamplers) and the VAE."""

from __future__ import annotations

import json

import pytest
import torch
from diffusers import AutoencoderKL, UNet2DConditionModel

from sdxl_bedrock.engine.pipeline import Engine
from sdxl_bedrock.engine.sdxl_base_config import SDXL_BASE_CONFIG_DIR
from tests.engine.conftest import generation_request


@pytest.mark.parametrize(("width", "height"), [(72, 64), (64, 88), (104, 120)])
def test_the_tiny_model_makes_any_multiple_of_8(engine: Engine, width: int, height: int) -> None:
    (result,) = engine.generate([generation_request(width=width, height=height, steps=2)])
    assert result.image.size == (width, height)


def test_sdxls_own_unet_and_vae_take_latents_of_any_size() -> None:
    """On the meta device: shapes only, no weights (SDXL 1.0 base's shipped configs)."""
    config = json.loads((SDXL_BASE_CONFIG_DIR / "unet" / "config.json").read_text())
    vae_config = json.loads((SDXL_BASE_CONFIG_DIR / "vae" / "config.json").read_text())
    with torch.device("meta"):
        unet = UNet2DConditionModel.from_config(config)
        vae = AutoencoderKL.from_config(vae_config)
        for height, width in ((9, 11), (13, 7), (255, 129)):
            latents = torch.empty(1, 4, height, width)
            noise = unet(
                latents,
                torch.tensor([500.0]),
                encoder_hidden_states=torch.empty(1, 77, 2048),
                added_cond_kwargs={"text_embeds": torch.empty(1, 1280), "time_ids": torch.empty(1, 6)},
            ).sample
            assert noise.shape == latents.shape
            assert vae.decode(noise).sample.shape == (1, 3, height * 8, width * 8)
            assert (
                vae.encode(torch.empty(1, 3, height * 8, width * 8)).latent_dist.mean.shape == latents.shape
            )
