"""What front-ends send, as their source makes it, for the unit tests and the end-to-end replays alike."""

from __future__ import annotations

from typing import Any

# SillyTavern's txt2img body for its AUTOMATIC1111 source with its default settings: generateAutoImage in
# public/scripts/extensions/stable-diffusion/index.js (extension_settings.sd's defaults), sent on by
# src/endpoints/stable-diffusion.js (`/generate` posts `request.body` itself, its `url` and `auth`
# included), at SillyTavern/SillyTavern ba6f7b7a98cf7a5eaf4f0e81da9779a9a668ced4. `seed: undefined` and
# `sd_vae: undefined` leave the JSON.
SILLYTAVERN_TXT2IMG: dict[str, Any] = {
    "url": "http://localhost:7860",
    "auth": "",
    "prompt": "a castle on a hill",
    "negative_prompt": "lowres, bad anatomy",
    "sampler_name": "DDIM",
    "scheduler": "normal",
    "steps": 20,
    "cfg_scale": 7,
    "width": 512,
    "height": 512,
    "restore_faces": False,
    "enable_hr": False,
    "hr_upscaler": "Latent",
    "hr_scale": 2.0,
    "denoising_strength": 0.7,
    "hr_second_pass_steps": 0,
    "override_settings": {"CLIP_stop_at_last_layers": 1},
    "override_settings_restore_afterwards": True,
    "clip_skip": 1,
    "save_images": True,
    "send_images": True,
    "do_not_save_grid": False,
    "do_not_save_samples": False,
}
