"""The served model as A1111 names checkpoints, and the A1111 settings (`/sdapi/v1/options`) that describe
this server.

Only settings that mean something here are listed (A1111 lists hundreds). Most are fixed, each at the value
that describes what the server does; setting one (POST /sdapi/v1/options, or a request's
`override_settings`) is accepted when it asks for that value, and the checkpoint when it names the served
model (its title, name or file name). Three can change, as in A1111, because this server honours every
value A1111 takes for them on SDXL:

- `sd_vae`: `Automatic`, `None` or the checkpoint's own VAE by the checkpoint's name; all three are the
  one VAE here (A1111: `None` is the checkpoint's baked-in VAE, `Automatic` that one when no VAE file
  matches the checkpoint, as none does here).
- `CLIP_stop_at_last_layers` (1..12, A1111's slider) and `sdxl_clip_l_skip`: A1111's Clip skip on SDXL
  (modules/sd_hijack_clip.py, FrozenCLIPEmbedderForSDXLWithCustomWords): without `sdxl_clip_l_skip` it
  has no effect (SDXL's text encoders give their penultimate layer); with it, the first encoder's
  `hidden_states[-N]` conditions the UNet.

POST /options keeps a change for the app (A1111 keeps it in its config file; here it lasts as long as the
process); `override_settings` for one request, or for good with `override_settings_restore_afterwards`
false, as A1111. Anything else is a 422 naming the key.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
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

    @property
    def vae_names(self) -> tuple[str, ...]:
        """What `sd_vae` takes: A1111's two choices, and the checkpoint's own VAE (/sdapi/v1/sd-vae)."""
        return ("Automatic", "None", self.model_name)


# What each means here: PNG answers and files carrying their infotext; eta defaults (DDIM 0, ancestral
# 1); A1111's "Original" emphasis without comma backtracking; no grid in the answer; img2img runs
# int(steps x strength) steps; transparent init images on white; inpainting overlays the original;
# previews from the cheap latent-to-RGB map, every step; SDXL crop ids 0; CPU noise; no churn.
FIXED_OPTIONS: dict[str, Any] = {
    "samples_format": "png",
    "return_grid": False,
    "enable_pnginfo": True,
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
    # How save_images names its files (saving.py): A1111's defaults.
    "save_to_dirs": True,
    "grid_save_to_dirs": True,
    "directories_filename_pattern": "[date]",
    "samples_filename_pattern": "",
    "save_images_add_number": True,
    "grid_only_if_multiple": True,
    "grid_format": "png",
    "n_rows": -1,
    "save_incomplete_images": False,
    "save_images_before_highres_fix": False,
}


# The settings a client can change, at A1111's defaults.
ADJUSTABLE_DEFAULTS: dict[str, Any] = {
    "sd_vae": "Automatic",
    "CLIP_stop_at_last_layers": 1,
    "sdxl_clip_l_skip": False,
}
CLIP_SKIP_MAX = 12  # A1111's slider


@dataclass
class Adjustable:
    """The changeable settings of one app (A1111 keeps one set for the process); read and written on the
    event loop only."""

    values: dict[str, Any] = field(default_factory=lambda: dict(ADJUSTABLE_DEFAULTS))

    def snapshot(self) -> dict[str, Any]:
        return dict(self.values)


def options(settings: Settings, adjustable: Mapping[str, Any] = ADJUSTABLE_DEFAULTS) -> dict[str, Any]:
    """GET /sdapi/v1/options: the served checkpoint, the fixed settings, the changeable ones as they are,
    and where `save_images` writes (A1111's output folders) when the server has --outputs-dir."""
    served = ServedModel.of(settings)
    return {
        "sd_model_checkpoint": served.title,
        "sd_checkpoint_hash": None,
        **FIXED_OPTIONS,
        **output_options(settings.outputs_dir),
        **adjustable,
    }


def output_options(outputs_dir: Path | None) -> dict[str, Any]:
    """A1111 saves samples and grids for `save_images` when `samples_save` and `grid_save` are on (their
    defaults), into these folders (its defaults under `outputs/`)."""
    if outputs_dir is None:
        return {"samples_save": False, "grid_save": False}
    folders = {
        f"outdir_{job}_{kind}": str(outputs_dir / f"{job}-{'images' if kind == 'samples' else 'grids'}")
        for job in ("txt2img", "img2img")
        for kind in ("samples", "grids")
    }
    return {"samples_save": True, "grid_save": True, **folders}


def check_settings(
    requested: Mapping[str, Any], location: Location, settings: Settings, adjustable: Mapping[str, Any]
) -> dict[str, Any]:
    """Settings asked for (POST /options, override_settings): the changeable ones' new values, after
    checking that every other one is what the server does already. Raises MalformedBody (422) naming the
    first one that is not."""
    served = ServedModel.of(settings)
    listed = options(settings, adjustable)
    changes: dict[str, Any] = {}
    for key, value in requested.items():
        if key == "sd_model_checkpoint":
            if value not in served.names:
                raise malformed(
                    (*location, key),
                    f"{shown(value)} is not served here; the one model is {shown(served.title)}",
                    kind=ProblemKind.NOT_ALLOWED,
                    value=value,
                )
        elif key in ADJUSTABLE_DEFAULTS:
            changes[key] = adjusted(key, value, (*location, key), served)
        elif key not in listed:
            raise malformed(
                location,
                f"{shown(key)} is not a setting this server has (GET /sdapi/v1/options lists them)",
                kind=ProblemKind.EXTRANEOUS_KEY,
                value=key,
            )
        elif not same_setting(value, listed[key]):
            raise malformed(
                (*location, key),
                f"{shown(value)}: this server runs with {shown(listed[key])} and cannot change it",
                kind=ProblemKind.NOT_ALLOWED,
                value=value,
            )
    return changes


def adjusted(key: str, value: Any, location: Location, served: ServedModel) -> Any:
    """A changeable setting's value, or MalformedBody."""
    if key == "sd_vae":
        if value in served.vae_names:
            return value
        reason = f"the VAEs here are {', '.join(served.vae_names)} (all the checkpoint's own)"
    elif key == "CLIP_stop_at_last_layers":
        if type(value) is int and 1 <= value <= CLIP_SKIP_MAX:
            return value
        reason = f"expected an integer from 1 to {CLIP_SKIP_MAX}"
    else:
        if type(value) is bool:
            return value
        reason = "expected true or false"
    raise malformed(location, f"{shown(value)}: {reason}", kind=ProblemKind.NOT_ALLOWED, value=value)


def first_encoder_layer(settings: Mapping[str, Any]) -> int | None:
    """What Clip skip does on SDXL under these settings: the first encoder's layer from its output, or None
    (SDXL's own) without `sdxl_clip_l_skip`."""
    if not settings["sdxl_clip_l_skip"]:
        return None
    return int(settings["CLIP_stop_at_last_layers"])


def same_setting(value: Any, fixed: Any) -> bool:
    """Equal as JSON values: 1 and 1.0 are the same number, but true is not 1."""
    return isinstance(value, bool) == isinstance(fixed, bool) and value == fixed
