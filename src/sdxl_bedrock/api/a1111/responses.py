"""A1111's answers as pydantic models (they serialize and document them), and the `info` of a generation.

`info` is a JSON string, as A1111's `Processed.js()` makes it: the styled prompts of every image asked for,
its seeds, the sampler, size and steps, and one infotext per image returned (A1111's PNG "parameters"
line: `prompt`, `Negative prompt: ...`, `Steps: 20, Sampler: Euler a, Schedule type: Automatic, ...`).
The infotext is not written into the PNGs (A1111's `enable_pnginfo`; off here, and said so in /options).
"""

from __future__ import annotations

import json
from datetime import datetime
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, RootModel

from sdxl_bedrock import __version__
from sdxl_bedrock.api.a1111.bodies import Img2ImgBody, Plan
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
    plan: Plan, artifacts: list[Artifact], images_base64: list[str], served: ServedModel
) -> bytes:
    """The txt2img / img2img answer."""
    body = plan.body
    excluded = (
        {"init_images", "mask"} if isinstance(body, Img2ImgBody) and not body.include_init_images else set()
    )
    parameters = body.model_dump(mode="json")
    for key in excluded:
        parameters[key] = None
    info = info_json(plan, artifacts, served)
    answer = GenerationResponse(
        images=images_base64 if body.send_images else [], parameters=parameters, info=info
    )
    return answer.model_dump_json().encode()


def info_json(plan: Plan, artifacts: list[Artifact], served: ServedModel) -> str:
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
        "sd_model_hash": None,
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
        "clip_skip": 1,
        "is_using_inpainting_conditioning": False,
        "version": VERSION,
    }
    return json.dumps(obj, ensure_ascii=False)


def extra_parameters(plan: Plan) -> dict[str, Any]:
    body = plan.body
    extra: dict[str, Any] = {"Schedule type": plan.resolved.scheduler}
    if plan.request.eta is not None:
        extra["Eta"] = plan.request.eta
    if isinstance(body, Img2ImgBody):
        extra["Denoising strength"] = body.denoising_strength
        if body.mask is not None:
            extra["Mask blur"] = body.mask_blur_x if body.mask_blur_x == body.mask_blur_y else None
            extra["Inpaint area"] = "Only masked" if body.inpaint_full_res else None
            extra["Masked area padding"] = body.inpaint_full_res_padding if body.inpaint_full_res else None
            extra["Mask mode"] = "Inpaint not masked" if body.inpainting_mask_invert else None
            extra["Masked content"] = "fill" if body.inpainting_fill == 0 else None
    return {key: value for key, value in extra.items() if value is not None}


def infotext(plan: Plan, seed: int, served: ServedModel) -> str:
    """A1111's create_infotext for one image, with what this server knows."""
    body = plan.body
    prompt, negative_prompt = plan.all_prompts
    extra = extra_parameters(plan)
    parameters: dict[str, Any] = {
        "Steps": body.steps,
        "Sampler": plan.resolved.sampler.name,
        "Schedule type": extra.pop("Schedule type"),
        "CFG scale": body.cfg_scale,
        "Seed": seed,
        "Size": f"{body.width}x{body.height}",
        "Model": served.model_name,
        **extra,
        "Version": VERSION,
    }
    line = ", ".join(f"{key}: {quoted(value)}" for key, value in parameters.items())
    negative = f"\nNegative prompt: {negative_prompt}" if negative_prompt else ""
    return f"{prompt}{negative}\n{line}".strip()


def quoted(value: Any) -> str:
    """A1111's infotext_utils.quote: a value holding `,`, `:` or a newline as a JSON string."""
    text = str(value)
    if "," not in text and "\n" not in text and ":" not in text:
        return text
    return json.dumps(text, ensure_ascii=False)
