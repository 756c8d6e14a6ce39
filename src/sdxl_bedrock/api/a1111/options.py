"""The served model as A1111 names checkpoints, and the A1111 settings (`/sdapi/v1/options`) that describe
this server.

Only settings that mean something here are listed, each at the value that describes what the server does
(A1111 lists hundreds). Setting one (POST /sdapi/v1/options, or a request's `override_settings`) is
accepted when it asks for what the server already does: the checkpoint by the served model's title, name
or file name, any other listed key at its listed value. Anything else is a 422 naming the key: one model is
served, and its behaviour is fixed by the command line.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from sdxl_bedrock.api.validation import malformed, shown
from sdxl_bedrock.config import Settings, checkpoint_name, checkpoint_names, checkpoint_title
from sdxl_bedrock.errors import Location, ProblemKind


@dataclass(frozen=True)
class ServedModel:
    """The model `serve --model` names, as A1111 lists a checkpoint (no hash: none is computed here)."""

    title: str
    model_name: str
    filename: str

    @classmethod
    def of(cls, settings: Settings) -> ServedModel:
        return cls(checkpoint_title(settings.model), checkpoint_name(settings.model), settings.model)

    @property
    def names(self) -> frozenset[str]:
        return checkpoint_names(self.filename)


# What each means here: the model's own VAE; no clip skip (SDXL's penultimate layers); PNG answers without
# infotext; eta defaults (DDIM 0, ancestral 1); A1111's "Original" emphasis without comma backtracking;
# img2img runs int(steps x strength) steps; transparent init images on white; inpainting overlays the
# original; previews from the cheap latent-to-RGB map, every step; SDXL crop ids 0; CPU noise; no churn.
FIXED_OPTIONS: dict[str, Any] = {
    "sd_vae": "Automatic",
    "CLIP_stop_at_last_layers": 1,
    "samples_format": "png",
    "samples_save": False,
    "grid_save": False,
    "return_grid": False,
    "enable_pnginfo": False,
    "eta_ddim": 0.0,
    "eta_ancestral": 1.0,
    "eta_noise_seed_delta": 0,
    "emphasis": "Original",
    "comma_padding_backtrack": 0,
    "img2img_fix_steps": False,
    "initial_noise_multiplier": 1.0,
    "img2img_background_color": "#ffffff",
    "upscaler_for_img2img": None,
    "overlay_inpaint": True,
    "live_previews_enable": True,
    "show_progress_type": "Approx cheap",
    "show_progress_every_n_steps": 1,
    "sdxl_crop_top": 0,
    "sdxl_crop_left": 0,
    "randn_source": "CPU",
    "s_churn": 0.0,
    "s_tmin": 0.0,
    "s_noise": 1.0,
    "s_min_uncond": 0.0,
}


def options(settings: Settings) -> dict[str, Any]:
    """GET /sdapi/v1/options."""
    served = ServedModel.of(settings)
    return {"sd_model_checkpoint": served.title, "sd_checkpoint_hash": None, **FIXED_OPTIONS}


def check_settings(requested: Mapping[str, Any], location: Location, served: ServedModel) -> None:
    """Settings asked for (POST /options, override_settings): each must be what the server does already.
    Raises MalformedBody (422) naming the first other one."""
    for key, value in requested.items():
        if key == "sd_model_checkpoint":
            if value not in served.names:
                raise malformed(
                    (*location, key),
                    f"{shown(value)} is not served here; the one model is {shown(served.title)}",
                    kind=ProblemKind.NOT_ALLOWED,
                    value=value,
                )
            continue
        if key not in FIXED_OPTIONS:
            raise malformed(
                location,
                f"{shown(key)} is not a setting this server has (GET /sdapi/v1/options lists them)",
                kind=ProblemKind.EXTRANEOUS_KEY,
                value=key,
            )
        if not same_setting(value, FIXED_OPTIONS[key]):
            raise malformed(
                (*location, key),
                f"{shown(value)}: this server runs with {shown(FIXED_OPTIONS[key])} and cannot change it",
                kind=ProblemKind.NOT_ALLOWED,
                value=value,
            )


def same_setting(value: Any, fixed: Any) -> bool:
    """Equal as JSON values: 1 and 1.0 are the same number, but true is not 1."""
    return isinstance(value, bool) == isinstance(fixed, bool) and value == fixed
