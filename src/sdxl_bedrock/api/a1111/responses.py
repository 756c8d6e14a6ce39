"""A1111's answers as pydantic models (they serialize and document them), and the `info` of a generation.

`info` is a JSON string, as A1111's `Processed.js()` makes it: the styled prompts of every image asked for,
its seeds, the sampler, size and steps (the first pass's, with the hires fix), and one infotext per image
returned (A1111's PNG "parameters" text: `prompt`, `Negative prompt: ...`, `Steps: 20, Sampler: Euler a,
Schedule type: Automatic, ...`, in create_infotext's order), which each PNG also carries
(`enable_pnginfo`). A1111's `Lora hashes` (`"name: shorthash, ..."`, lora_add_hashes_to_infotext) closes the
extra parameters. Ours: where a request asked for `save_images`, `saved_images`, the files written (relative
to --outputs-dir); `comments`, A1111's comments on the run (`Lora not found: NAME`, which A1111 shows beside
the infotext in its UI but leaves out of the API's `info`) and why nothing was saved, one a line.
"""

from __future__ import annotations

import json
from datetime import datetime
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, RootModel

from sdxl_bedrock import __version__
from sdxl_bedrock.api.a1111.bodies import Hires, Img2ImgBody, Plan, Txt2ImgBody
from sdxl_bedrock.api.a1111.options import ServedModel
from sdxl_bedrock.generation import sample_requests
from sdxl_bedrock.schema import Artifact

VERSION = f"sdxl-bedrock {__version__}"
BASE64_PNG: dict[str, Any] = {"contentEncoding": "base64", "contentMediaType": "image/png"}


class GenerationResponse(BaseModel):
    """txt2img and img2img: the images (base64 PNG; none with `send_images` false), the request's
    parameters with their defaults filled in, and `info` (a JSON string)."""

    images: list[Annotated[str, Field(json_schema_extra=BASE64_PNG)]]
    parameters: dict[str, Any]
    info: str


class ProgressState(BaseModel):
    skipped: bool
    interrupted: bool
    stopping_generation: bool
    job: str
    job_count: int
    job_timestamp: str
    job_no: int
    sampling_step: int
    sampling_steps: int


class ProgressResponse(BaseModel):
    progress: Annotated[float, Field(ge=0, le=1)]
    eta_relative: float
    state: ProgressState
    current_image: Annotated[str | None, Field(json_schema_extra=BASE64_PNG)] = None
    textinfo: str | None = None


class SamplerItem(BaseModel):
    name: str
    aliases: list[str]
    options: dict[str, str]


class SchedulerItem(BaseModel):
    name: str
    label: str
    aliases: list[str] | None
    default_rho: float | None
    need_inner_model: bool | None


class SDModelItem(BaseModel):
    title: str
    model_name: str
    hash: str | None
    sha256: str | None
    filename: str
    config: str | None


class LoraItem(BaseModel):
    """One LoRA of `GET /sdapi/v1/loras`, A1111's four fields."""

    name: str
    alias: str
    path: str
    metadata: dict[str, Any]


class SDVaeItem(BaseModel):
    model_name: str
    filename: str


class UpscalerItem(BaseModel):
    name: str
    model_name: str | None
    model_path: str | None
    model_url: str | None
    scale: float | None


class LatentUpscaleModeItem(BaseModel):
    name: str


class PromptStyleItem(BaseModel):
    name: str
    prompt: str | None
    negative_prompt: str | None


class ScriptsList(BaseModel):
    txt2img: list[str]
    img2img: list[str]


class MemoryResponse(BaseModel):
    ram: dict[str, Any] = Field(description="System memory: free, used (this process), total, in bytes.")
    cuda: dict[str, Any] = Field(description="GPU memory in bytes, or {error} without a GPU.")


class SettingsMap(RootModel[dict[str, Any]]):
    """A1111 settings or command-line flags by name."""


class Empty(BaseModel):
    """`{}`."""

    model_config = ConfigDict(extra="forbid")


def generation_body(
    plan: Plan,
    artifacts: list[Artifact],
    images_base64: list[str],
    served: ServedModel,
    saved: list[str] | None = None,
    not_saved: str | None = None,
) -> bytes:
    """The txt2img / img2img answer; `saved` and `not_saved` where the request asked for save_images."""
    body = plan.body
    excluded = (
        {"init_images", "mask"} if isinstance(body, Img2ImgBody) and not body.include_init_images else set()
    )
    parameters = body.model_dump(mode="json")
    for key in excluded:
        parameters[key] = None
    info = info_json(plan, artifacts, served, saved, not_saved)
    answer = GenerationResponse(
        images=images_base64 if body.send_images else [], parameters=parameters, info=info
    )
    return answer.model_dump_json().encode()


def info_json(
    plan: Plan,
    artifacts: list[Artifact],
    served: ServedModel,
    saved: list[str] | None = None,
    not_saved: str | None = None,
) -> str:
    body = plan.body
    prompt, negative_prompt = plan.all_prompts
    all_seeds = [sample.seed for sample in sample_requests(plan.request)]
    denoising = body.denoising_strength
    obj = {
        "prompt": prompt,
        "all_prompts": [prompt] * plan.images,
        "negative_prompt": negative_prompt,
        "all_negative_prompts": [negative_prompt] * plan.images,
        "seed": plan.seed,
        "all_seeds": all_seeds,
        "subseed": body.subseed,
        "all_subseeds": [body.subseed + index for index in range(plan.images)],
        "subseed_strength": body.subseed_strength,
        "width": body.width,
        "height": body.height,
        "sampler_name": plan.resolved.sampler.name,
        "cfg_scale": body.cfg_scale,
        "steps": body.steps,
        "batch_size": body.batch_size,
        "restore_faces": False,
        "face_restoration_model": None,
        "sd_model_name": served.model_name,
        "sd_model_hash": served.shorthash,
        "sd_vae_name": None,
        "sd_vae_hash": None,
        "seed_resize_from_w": body.seed_resize_from_w,
        "seed_resize_from_h": body.seed_resize_from_h,
        "denoising_strength": denoising,
        "extra_generation_params": extra_parameters(plan),
        "index_of_first_image": 0,
        "infotexts": [infotext(plan, artifact.seed, served) for artifact in artifacts],
        "styles": list(body.styles or ()),
        "job_timestamp": datetime.now().strftime("%Y%m%d%H%M%S"),
        "clip_skip": clip_skip(plan),
        "is_using_inpainting_conditioning": False,
        "version": VERSION,
    }
    comments = list(plan.comments)
    if plan.body.save_images:
        obj["saved_images"] = saved or []
        if not_saved is not None:
            comments.append(not_saved)
    if comments:
        obj["comments"] = "\n".join(comments)
    return json.dumps(obj, ensure_ascii=False)


def clip_skip(plan: Plan) -> int:
    """A1111 reports the setting whatever its effect (none on SDXL without sdxl_clip_l_skip)."""
    return int(plan.settings["CLIP_stop_at_last_layers"])


def extra_parameters(plan: Plan) -> dict[str, Any]:
    body = plan.body
    extra: dict[str, Any] = {"Schedule type": plan.resolved.scheduler}
    if plan.request.eta is not None:
        extra["Eta"] = plan.request.eta
    if isinstance(body, Txt2ImgBody) and plan.hires is not None:
        extra.update(hires_parameters(plan, body, plan.hires))
    if isinstance(body, Img2ImgBody):
        extra["Denoising strength"] = body.denoising_strength
        if body.mask is not None:
            extra["Mask blur"] = body.mask_blur_x if body.mask_blur_x == body.mask_blur_y else None
            extra["Inpaint area"] = "Only masked" if body.inpaint_full_res else None
            extra["Masked area padding"] = body.inpaint_full_res_padding if body.inpaint_full_res else None
            extra["Mask mode"] = "Inpaint not masked" if body.inpainting_mask_invert else None
            extra["Masked content"] = "fill" if body.inpainting_fill == 0 else None
    if plan.lora_hashes:
        extra["Lora hashes"] = ", ".join(f"{name}: {short}" for name, short in plan.lora_hashes.items())
    return {key: value for key, value in extra.items() if value is not None}


def hires_parameters(plan: Plan, body: Txt2ImgBody, hires: Hires) -> dict[str, Any]:
    """What StableDiffusionProcessingTxt2Img.init adds for the hires fix, in its order (and Forge's
    `Hires CFG Scale` for `hr_cfg`)."""
    prompt, negative_prompt = plan.all_prompts
    hires_prompt, hires_negative_prompt = hires.all_prompts
    first_label, hires_label = plan.resolved.scheduler, hires.resolved.scheduler
    resized = body.hr_resize_x != 0 or body.hr_resize_y != 0
    return {
        "Denoising strength": body.denoising_strength,
        "Hires sampler": hires.resolved.sampler.name
        if hires.resolved.sampler.name != plan.resolved.sampler.name
        else None,
        "Hires prompt": hires_prompt if hires_prompt != prompt else None,
        "Hires negative prompt": hires_negative_prompt if hires_negative_prompt != negative_prompt else None,
        "Hires schedule type": hires_label if hires_label != first_label else None,
        "Hires CFG Scale": body.hr_cfg,
        "Hires upscale": None if resized else body.hr_scale,
        "Hires resize": f"{body.hr_resize_x}x{body.hr_resize_y}" if resized else None,
        "Hires steps": body.hr_second_pass_steps or None,
        "Hires upscaler": body.hr_upscaler,
    }


def infotext(plan: Plan, seed: int, served: ServedModel) -> str:
    """A1111's create_infotext for one image, with what this server knows."""
    body = plan.body
    prompt, negative_prompt = plan.all_prompts
    extra = extra_parameters(plan)
    skip = clip_skip(plan)
    parameters: dict[str, Any] = {
        "Steps": body.steps,
        "Sampler": plan.resolved.sampler.name,
        "Schedule type": extra.pop("Schedule type"),
        "CFG scale": body.cfg_scale,
        "Seed": seed,
        "Size": f"{body.width}x{body.height}",
        "Model hash": served.shorthash,
        "Model": served.model_name,
        "Denoising strength": extra.pop("Denoising strength", None),
        "Clip skip": skip if skip > 1 else None,
        "RNG": "CPU",  # A1111 names its noise source unless it is the GPU
        **extra,
        "Version": VERSION,
    }
    line = ", ".join(f"{key}: {quoted(value)}" for key, value in parameters.items() if value is not None)
    negative = f"\nNegative prompt: {negative_prompt}" if negative_prompt else ""
    return f"{prompt}{negative}\n{line}".strip()


def quoted(value: Any) -> str:
    """A1111's infotext_utils.quote: a value holding `,`, `:` or a newline as a JSON string."""
    text = str(value)
    if "," not in text and "\n" not in text and ":" not in text:
        return text
    return json.dumps(text, ensure_ascii=False)
