"""The model library's checkpoints as A1111 names them, and the A1111 settings (`/sdapi/v1/options`) that
describe this server.

Only settings that mean something here are listed (A1111 lists hundreds). Most are fixed, each at the value
that describes what the server does; setting one (POST /sdapi/v1/options, or a request's
`override_settings`) is accepted when it asks for that value. `sd_checkpoint_hash` is read-only and
ignored when set (A1111 does not save it either), so that GET's very dict can be posted back. Five can
change, as in A1111, because this server honours every value A1111 takes for them on SDXL:

- `sd_model_checkpoint`: any checkpoint of the model library (library.py), by its title, name, file name,
  full or short hash, or A1111's closest match (the shortest title that contains the text). Unlike A1111,
  changing it moves no weights at once and changes nothing for other wires: it is this app's checkpoint
  for A1111 requests that name none, loaded when a request needs it.

- `sd_vae`: `Automatic`, `None` or the checkpoint's own VAE by the checkpoint's name; all three are the
  one VAE here (A1111: `None` is the checkpoint's baked-in VAE, `Automatic` that one when no VAE file
  matches the checkpoint, as none does here).
- `CLIP_stop_at_last_layers` (1..12, A1111's slider) and `sdxl_clip_l_skip`: A1111's Clip skip on SDXL
  (modules/sd_hijack_clip.py, FrozenCLIPEmbedderForSDXLWithCustomWords): without `sdxl_clip_l_skip` it
  has no effect (SDXL's text encoders give their penultimate layer); with it, the first encoder's
  `hidden_states[-N]` conditions the UNet.
- `enable_prompt_comments` (default true, A1111 1.8+'s modules/processing_scripts/comments.py): `#` to the
  end of its line is taken out of every prompt (prompts.strip_comments).

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
from sdxl_bedrock.config import Settings
from sdxl_bedrock.errors import Location, ProblemKind
from sdxl_bedrock.library import Checkpoint, Listing, UnknownCheckpoint, only_model


@dataclass(frozen=True)
class ServedModel:
    """One checkpoint of the library as A1111 lists it (sd-models, infotext, the response's info)."""

    title: str
    model_name: str
    filename: str
    sha256: str | None = None
    shorthash: str | None = None
    name: str = ""  # the library's name, which the engine takes

    @classmethod
    def of(cls, checkpoint: Checkpoint) -> ServedModel:
        filename = (
            str(checkpoint.filename)
            if checkpoint.filename is not None
            else checkpoint.spec or checkpoint.name
        )
        return cls(
            checkpoint.title,
            checkpoint.name,
            filename,
            checkpoint.sha256,
            checkpoint.shorthash,
            checkpoint.name,
        )

    @classmethod
    def current(cls, listing: Listing, adjustable: Mapping[str, Any]) -> ServedModel:
        """The checkpoint `sd_model_checkpoint` names now (the default where it names none, or one that has
        left the library since: A1111 falls back to its first checkpoint)."""
        name = adjustable.get("sd_model_checkpoint")
        try:
            return cls.of(listing.find(name) if name else listing.checkpoints[listing.default])
        except UnknownCheckpoint:
            return cls.of(listing.checkpoints[listing.default])

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
    "sd_model_checkpoint": None,  # the library's name; None: the server's default checkpoint
    "sd_vae": "Automatic",
    "CLIP_stop_at_last_layers": 1,
    "sdxl_clip_l_skip": False,
    "enable_prompt_comments": True,
}
CLIP_SKIP_MAX = 12  # A1111's slider


@dataclass
class Adjustable:
    """The changeable settings of one app (A1111 keeps one set for the process); read and written on the
    event loop only."""

    values: dict[str, Any] = field(default_factory=lambda: dict(ADJUSTABLE_DEFAULTS))

    def snapshot(self) -> dict[str, Any]:
        return dict(self.values)


# Listed by GET, ignored by POST (A1111's do_not_save settings).
READ_ONLY = frozenset({"sd_checkpoint_hash"})


def options(
    settings: Settings,
    adjustable: Mapping[str, Any] = ADJUSTABLE_DEFAULTS,
    listing: Listing | None = None,
) -> dict[str, Any]:
    """GET /sdapi/v1/options: the current checkpoint, the fixed settings, the changeable ones as they are,
    and where `save_images` writes (A1111's output folders) when the server has --outputs-dir. `listing`
    is the model library's (None: --model alone)."""
    listing = listing or only_model(settings.model)
    served = ServedModel.current(listing, adjustable)
    return {
        **FIXED_OPTIONS,
        **output_options(settings.outputs_dir),
        **adjustable,
        "sd_model_checkpoint": served.title,
        "sd_checkpoint_hash": served.sha256,
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
    requested: Mapping[str, Any],
    location: Location,
    settings: Settings,
    adjustable: Mapping[str, Any],
    listing: Listing | None = None,
) -> dict[str, Any]:
    """Settings asked for (POST /options, override_settings): the changeable ones' new values (a
    checkpoint by its library name), after checking that every other one is what the server does
    already. Raises MalformedBody (422) naming the first one that is not."""
    listing = listing or only_model(settings.model)
    listed = options(settings, adjustable, listing)
    changes: dict[str, Any] = {}
    for key, value in requested.items():
        if key in READ_ONLY:
            continue
        if key == "sd_model_checkpoint":
            try:
                changes[key] = listing.find(value, closest=True).name
            except UnknownCheckpoint:
                raise malformed(
                    (*location, key),
                    f"{shown(value)} is not a checkpoint here; GET /sdapi/v1/sd-models lists them: "
                    + ", ".join(checkpoint.title for checkpoint in listing.checkpoints.values()),
                    kind=ProblemKind.NOT_ALLOWED,
                    value=value,
                ) from None
        elif key in ADJUSTABLE_DEFAULTS:
            changes[key] = adjusted(key, value, (*location, key), ServedModel.current(listing, adjustable))
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
