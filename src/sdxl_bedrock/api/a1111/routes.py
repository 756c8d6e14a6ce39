"""The A1111 web UI API routes (`/sdapi/v1/...`) over the shared engine.

txt2img and img2img make images through the batcher, so concurrent calls share UNet calls (A1111 runs one
at a time), the hires fix's second pass too (hires.py); progress, interrupt and skip act on this wire's
requests in progress (progress.py); the listing routes describe this server in A1111's shapes, and
`/options` changes the settings that can change here (options.py).
"""

from __future__ import annotations

import io
import os
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any

from fastapi import APIRouter, Depends, FastAPI, Query, Request
from PIL import Image
from pydantic import BaseModel, TypeAdapter
from starlette.responses import Response

from sdxl_bedrock.api.a1111 import images, openapi
from sdxl_bedrock.api.a1111.auth import check_auth
from sdxl_bedrock.api.a1111.bodies import Plan, parse_img2img, parse_txt2img
from sdxl_bedrock.api.a1111.errors import A1111Refusal
from sdxl_bedrock.api.a1111.hires import (
    LATENT_MODES,
    PIXEL_UPSCALERS,
    UPSCALER_SCALE,
    HiresFix,
    without_steps,
)
from sdxl_bedrock.api.a1111.names import SAMPLERS, SCHEDULERS
from sdxl_bedrock.api.a1111.options import Adjustable, ServedModel, check_settings, options
from sdxl_bedrock.api.a1111.progress import FirstPass, Preview, Task, Tasks
from sdxl_bedrock.api.a1111.responses import (
    Empty,
    GenerationResponse,
    LatentUpscaleModeItem,
    LoraItem,
    MemoryResponse,
    ProgressResponse,
    PromptStyleItem,
    SamplerItem,
    SchedulerItem,
    ScriptsList,
    SDModelItem,
    SDVaeItem,
    SettingsMap,
    UpscalerItem,
    generation_body,
    infotext,
)
from sdxl_bedrock.api.a1111.saving import save_images
from sdxl_bedrock.api.body import read_body
from sdxl_bedrock.api.deps import authenticated
from sdxl_bedrock.api.openapi import JSON
from sdxl_bedrock.api.validation import load_json_object
from sdxl_bedrock.codecs import encode_png, png_to_base64, with_png_text
from sdxl_bedrock.generation import sample_requests
from sdxl_bedrock.library import UnknownCheckpoint
from sdxl_bedrock.presets import STYLE_PRESETS
from sdxl_bedrock.runtime import Runtime
from sdxl_bedrock.schema import Artifact, GenerationRequest

router = APIRouter(prefix="/sdapi/v1")
ANY_JSON: TypeAdapter[Any] = TypeAdapter(Any)

Parser = Callable[..., Plan]


Caller = Annotated[Runtime, Depends(authenticated(check_auth))]


def tasks_of(app: FastAPI) -> Tasks:
    """This app's A1111 requests in progress (one registry per app, made on first use)."""
    tasks: Tasks | None = getattr(app.state, "a1111_tasks", None)
    if tasks is None:
        tasks = Tasks()
        app.state.a1111_tasks = tasks
    return tasks


def adjustable_of(app: FastAPI) -> Adjustable:
    """This app's changeable A1111 settings (made on first use, at A1111's defaults)."""
    adjustable: Adjustable | None = getattr(app.state, "a1111_options", None)
    if adjustable is None:
        adjustable = app.state.a1111_options = Adjustable()
    return adjustable


def json_response(answer: BaseModel | list[Any] | None) -> Response:
    """A model, a list of models, or JSON's null (A1111's answer where its handler returns nothing)."""
    if isinstance(answer, BaseModel):
        return Response(answer.model_dump_json(), media_type=JSON)
    return Response(ANY_JSON.dump_json(answer), media_type=JSON)


async def generate(request: Request, runtime: Runtime, job: str, parse: Parser) -> Response:
    raw = await read_body(request)
    adjustable = adjustable_of(request.app)
    plan = await runtime.workers.on_host(
        parse,
        raw,
        settings=runtime.settings,
        listing=runtime.library.listing,
        loras=runtime.loras.listing,
        adjustable=adjustable.snapshot(),
        max_images=runtime.settings.max_queue,
    )
    adjustable.values.update(plan.kept_settings)
    passes = 1 if plan.hires is None else 2
    with tasks_of(request.app).track(
        job, plan.images, passes=passes, steps_per_image=plan.steps_per_image
    ) as task:
        if plan.hires is None:
            artifacts = await runtime.generations.generate(plan.request, task.on_step, task.stop)
        else:
            artifacts = await hires_fix(runtime, task, plan.request, plan.hires.fix)
        stopped = task.stop.interrupted or task.skipped
    body = await runtime.workers.on_host(
        answer,
        plan,
        artifacts,
        ServedModel.current(runtime.library.listing, plan.settings),
        job,
        runtime.settings.outputs_dir,
        stopped,
    )
    return Response(body, media_type=JSON)


async def hires_fix(runtime: Runtime, task: Task, first: GenerationRequest, fix: HiresFix) -> list[Artifact]:
    """Both passes of each image (hires.py), stopped where A1111 stops them: modules/processing.py,
    StableDiffusionProcessingTxt2Img.sample_hr_pass, and process_images_inner's state.skipped."""
    runtime.generations.admit(first)  # all of the first pass's images or none, as one request
    samples = sample_requests(first)
    passes = [FirstPass(task) for _ in samples]
    made = await runtime.generations.generate_each(samples, [p.on_step for p in passes], task.stop)
    firsts = [(p, artifacts[0]) for p, artifacts in zip(passes, made, strict=True) if artifacts]
    if task.stop.interrupted:
        # sample_hr_pass checks state.interrupted before it upscales: the first pass's images are the answer.
        return [artifact for _, artifact in firsts]
    seconds = await runtime.workers.on_host(lambda: [fix.second_pass(artifact) for _, artifact in firsts])
    answers: list[Artifact | None] = [None] * len(seconds)
    running = [i for i, (p, _) in enumerate(firsts) if not p.skipped and not task.stop.interrupted]
    ran = await runtime.generations.generate_each(
        [seconds[i] for i in running], [task.on_step] * len(running), task.stop
    )
    for i, artifacts in zip(running, ran, strict=True):
        answers[i] = artifacts[0] if artifacts else None
    # Skipped, or interrupted before its first step (its row dropped): the upscale, with no step.
    idle = [i for i, artifact in enumerate(answers) if artifact is None]
    unstepped = await runtime.generations.generate_each(
        [without_steps(seconds[i]) for i in idle], [None] * len(idle)
    )
    for i, artifacts in zip(idle, unstepped, strict=True):
        answers[i] = artifacts[0]
    return [artifact for artifact in answers if artifact is not None]


def answer(
    plan: Plan,
    artifacts: list[Artifact],
    served: ServedModel,
    job: str,
    outputs_dir: Path | None,
    stopped: bool,
) -> bytes:
    """The images (composited with the init image where A1111 does that: inpainting), each carrying its
    infotext, saved where asked, and the answer."""
    overlay = plan.overlay
    if overlay is None:
        pngs = [artifact.png for artifact in artifacts]
    else:
        pngs = [encode_png(images.apply_overlay(Image.open(io.BytesIO(a.png)), overlay)) for a in artifacts]
    texts = [infotext(plan, artifact.seed, served) for artifact in artifacts]
    saved: list[str] | None = None
    not_saved: str | None = None
    if plan.body.save_images:
        if outputs_dir is None:
            not_saved = "save_images: nothing was saved; this server was started without --outputs-dir"
        elif stopped:
            not_saved = "save_images: nothing was saved; the request was interrupted or skipped, as in A1111"
        elif pngs:
            saved = save_images(outputs_dir, job, pngs, [a.seed for a in artifacts], texts)
    encoded = [
        png_to_base64(with_png_text(png, "parameters", text)) for png, text in zip(pngs, texts, strict=True)
    ]
    return generation_body(plan, artifacts, encoded, served, saved, not_saved)


@router.post(
    "/txt2img",
    summary="txt2img (A1111)",
    response_class=Response,
    responses=openapi.responses(GenerationResponse, "The images.", openapi.GENERATION_ERRORS),
    openapi_extra=openapi.generation_request_body(img2img=False),
)
async def txt2img(request: Request, runtime: Caller) -> Response:
    return await generate(request, runtime, "txt2img", parse_txt2img)


@router.post(
    "/img2img",
    summary="img2img (A1111)",
    response_class=Response,
    responses=openapi.responses(
        GenerationResponse, "The images.", openapi.GENERATION_ERRORS, openapi.IMG2IMG_REFUSALS
    ),
    openapi_extra=openapi.generation_request_body(img2img=True),
)
async def img2img(request: Request, runtime: Caller) -> Response:
    return await generate(request, runtime, "img2img", parse_img2img)


@router.get(
    "/progress",
    summary="Progress of the A1111 requests running (A1111)",
    response_class=Response,
    responses=openapi.responses(ProgressResponse, "Progress.", openapi.ROUTE_ERRORS),
)
async def progress(
    request: Request,
    runtime: Caller,
    skip_current_image: Annotated[bool, Query(description="Leave out the preview.")] = False,
) -> Response:
    snapshot = tasks_of(request.app).snapshot()
    current_image = None
    if snapshot.preview is not None and not skip_current_image:
        current_image = await runtime.workers.on_host(preview_base64, snapshot.preview)
    return json_response(
        ProgressResponse.model_validate(
            {
                "progress": snapshot.progress,
                "eta_relative": snapshot.eta_relative,
                "state": snapshot.state,
                "current_image": current_image,
                "textinfo": moving_text(runtime) or snapshot.textinfo,
            }
        )
    )


def moving_text(runtime: Runtime) -> str | None:
    """While a checkpoint is loaded or moved (rows wait for it), progress says so, as A1111's
    "Loading weights" does."""
    moving = runtime.engine.moving if runtime.engine is not None else None
    if moving is None:
        return None
    name, where = moving
    return f"Loading checkpoint {name}" if where == "device" else f"Moving checkpoint {name} to {where}"


def preview_base64(preview: Preview) -> str:
    return png_to_base64(encode_png(preview()))


@router.post(
    "/interrupt",
    summary="Stop the A1111 requests running; each answers its images so far (A1111)",
    response_class=Response,
    responses=openapi.responses(Empty, "Asked.", openapi.ROUTE_ERRORS),
)
async def interrupt(request: Request, runtime: Caller) -> Response:
    tasks_of(request.app).interrupt()
    return json_response(Empty())


@router.post(
    "/skip",
    summary="End the images being made now with what they have; the rest go on (A1111)",
    response_class=Response,
    responses=openapi.responses(openapi.NULL, "Asked (A1111 answers null).", openapi.ROUTE_ERRORS),
)
async def skip(request: Request, runtime: Caller) -> Response:
    tasks_of(request.app).skip()
    return json_response(None)


@router.get(
    "/samplers",
    summary="Samplers (A1111)",
    response_class=Response,
    responses=openapi.responses(list[SamplerItem], "The samplers this server runs.", openapi.ROUTE_ERRORS),
)
async def samplers(runtime: Caller) -> Response:
    items = [SamplerItem(name=s.name, aliases=list(s.aliases), options=s.options) for s in SAMPLERS]
    return json_response(items)


@router.get(
    "/schedulers",
    summary="Schedulers (A1111)",
    response_class=Response,
    responses=openapi.responses(list[SchedulerItem], "The schedules this server runs.", openapi.ROUTE_ERRORS),
)
async def schedulers(runtime: Caller) -> Response:
    items = [
        SchedulerItem(
            name=s.name,
            label=s.label,
            aliases=list(s.aliases) if s.aliases is not None else None,
            default_rho=s.default_rho,
            need_inner_model=s.need_inner_model,
        )
        for s in SCHEDULERS
    ]
    return json_response(items)


@router.get(
    "/sd-models",
    summary="The model library's checkpoints, as A1111 lists them",
    response_class=Response,
    responses=openapi.responses(list[SDModelItem], "Every checkpoint served.", openapi.ROUTE_ERRORS),
)
async def sd_models(runtime: Caller) -> Response:
    """A1111's fields: `hash` is the short hash (the SHA-256's first 10 hex digits, null for a built-in
    model), `config` null (no .yaml beside a checkpoint is read)."""
    items = [
        SDModelItem(
            title=served.title,
            model_name=served.model_name,
            hash=served.shorthash,
            sha256=served.sha256,
            filename=served.filename,
            config=None,
        )
        for served in map(ServedModel.of, runtime.library.listing.checkpoints.values())
    ]
    return json_response(items)


@router.post(
    "/refresh-checkpoints",
    summary="Read the model library's folders again (A1111)",
    response_class=Response,
    responses=openapi.responses(openapi.NULL, "Done (A1111 answers null).", openapi.ROUTE_ERRORS),
)
async def refresh_checkpoints(runtime: Caller) -> Response:
    """New files are listed, removed ones go (one that is loaded finishes the requests it has first)."""
    await runtime.refresh_library()
    return json_response(None)


@router.get(
    "/loras",
    summary="The LoRA library's LoRAs, as A1111 lists them",
    response_class=Response,
    responses=openapi.responses(list[LoraItem], "Every LoRA served.", openapi.ROUTE_ERRORS),
)
async def loras(runtime: Caller) -> Response:
    """A1111's fields (lora_script.py, create_lora_json): `name` the file name without extension, `alias`
    its `ss_output_name` (else the name), `path` the file, `metadata` its safetensors metadata. A file the
    library refuses is not listed (the server's log says why)."""
    items = [
        LoraItem(name=lora.name, alias=lora.alias, path=str(lora.filename), metadata=dict(lora.metadata))
        for lora in runtime.loras.listing.loras.values()
    ]
    return json_response(items)


@router.post(
    "/refresh-loras",
    summary="Read the LoRA library's folders again (A1111)",
    response_class=Response,
    responses=openapi.responses(openapi.NULL, "Done (A1111 answers null).", openapi.ROUTE_ERRORS),
)
async def refresh_loras(runtime: Caller) -> Response:
    """New files are listed, removed ones go; a request already accepted keeps the LoRAs it named."""
    await runtime.refresh_loras()
    return json_response(None)


@router.get(
    "/sd-vae",
    summary="VAEs (A1111): the checkpoint's own",
    response_class=Response,
    responses=openapi.responses(list[SDVaeItem], "The VAE files A1111 would list.", openapi.ROUTE_ERRORS),
)
async def sd_vaes(request: Request, runtime: Caller) -> Response:
    """A1111 lists its VAE files here, never its `Automatic` and `None` choices; the one VAE here is the
    checkpoint's own, listed by the checkpoint's name (sd_vae takes all three)."""
    served = ServedModel.current(runtime.library.listing, adjustable_of(request.app).snapshot())
    return json_response([SDVaeItem(model_name=served.model_name, filename=served.filename)])


@router.get(
    "/upscalers",
    summary="Upscalers (A1111): those that need no model",
    response_class=Response,
    responses=openapi.responses(list[UpscalerItem], "The pixel upscalers.", openapi.ROUTE_ERRORS),
)
async def upscalers(runtime: Caller) -> Response:
    items = [
        UpscalerItem(name=name, model_name=None, model_path=None, model_url=None, scale=UPSCALER_SCALE)
        for name in PIXEL_UPSCALERS
    ]
    return json_response(items)


@router.get(
    "/latent-upscale-modes",
    summary="Latent upscale modes (A1111)",
    response_class=Response,
    responses=openapi.responses(list[LatentUpscaleModeItem], "A1111's six.", openapi.ROUTE_ERRORS),
)
async def latent_upscale_modes(runtime: Caller) -> Response:
    return json_response([LatentUpscaleModeItem(name=name) for name in LATENT_MODES])


@router.get(
    "/prompt-styles",
    summary="Styles: this server's style presets (A1111)",
    response_class=Response,
    responses=openapi.responses(list[PromptStyleItem], "The styles `styles` takes.", openapi.ROUTE_ERRORS),
)
async def prompt_styles(runtime: Caller) -> Response:
    items = [
        PromptStyleItem(name=style.name, prompt=style.template, negative_prompt=style.negative)
        for style in STYLE_PRESETS.values()
    ]
    return json_response(items)


@router.get(
    "/scripts",
    summary="Scripts (A1111): none run here",
    response_class=Response,
    responses=openapi.responses(ScriptsList, "No scripts.", openapi.ROUTE_ERRORS),
)
async def scripts(runtime: Caller) -> Response:
    return json_response(ScriptsList(txt2img=[], img2img=[]))


@router.get(
    "/options",
    summary="Settings (A1111): those that describe this server",
    response_class=Response,
    responses=openapi.responses(SettingsMap, "The settings.", openapi.ROUTE_ERRORS),
)
async def get_options(request: Request, runtime: Caller) -> Response:
    snapshot = adjustable_of(request.app).snapshot()
    return json_response(SettingsMap(options(runtime.settings, snapshot, runtime.library.listing)))


@router.post(
    "/options",
    summary="Set settings (A1111): only to what the server does already",
    response_class=Response,
    responses=openapi.responses(
        openapi.NULL, "Accepted (A1111 answers null).", openapi.SETTINGS_ERRORS, openapi.SETTINGS_REFUSALS
    ),
    openapi_extra=openapi.settings_request_body(),
)
async def set_options(request: Request, runtime: Caller) -> Response:
    requested = await runtime.workers.on_host(load_json_object, await read_body(request))
    listing = runtime.library.listing
    checkpoint = requested.get("sd_model_checkpoint")
    if checkpoint is not None:
        try:
            listing.find(checkpoint, closest=True)
        except UnknownCheckpoint:
            # A1111's set_config raises before it sets anything; its middleware answers the exception.
            raise A1111Refusal(
                500, "", error="RuntimeError", text=f"model {checkpoint!r} not found"
            ) from None
    adjustable = adjustable_of(request.app)
    adjustable.values.update(check_settings(requested, (), runtime.settings, adjustable.snapshot(), listing))
    return json_response(None)


@router.get(
    "/cmd-flags",
    summary="Command-line flags (A1111's names, where they mean something here)",
    response_class=Response,
    responses=openapi.responses(SettingsMap, "The flags.", openapi.ROUTE_ERRORS),
)
async def cmd_flags(runtime: Caller) -> Response:
    settings = runtime.settings
    flags = {
        "api": True,
        "nowebui": True,
        "listen": settings.host not in ("127.0.0.1", "localhost", "::1"),
        "port": settings.port,
        "ckpt": settings.model,
        "ckpt_dir": str(settings.checkpoint_dirs[0]) if settings.checkpoint_dirs else None,
        "lora_dir": str(settings.lora_dirs[0]) if settings.lora_dirs else None,
        "tls_certfile": str(settings.tls_cert) if settings.tls_cert else None,
        "tls_keyfile": str(settings.tls_key) if settings.tls_key else None,
    }
    return json_response(SettingsMap(flags))


@router.get(
    "/memory",
    summary="Memory (A1111)",
    response_class=Response,
    responses=openapi.responses(MemoryResponse, "Memory in bytes.", openapi.ROUTE_ERRORS),
)
async def memory(runtime: Caller) -> Response:
    engine = runtime.engine
    cuda = engine.cuda_memory() if engine is not None else None
    return json_response(
        MemoryResponse(ram=ram(), cuda=cuda if cuda is not None else {"error": "unavailable"})
    )


def ram() -> dict[str, Any]:
    """A1111's: this process's resident memory as `used`, the machine's as `total`."""
    try:
        page = os.sysconf("SC_PAGE_SIZE")
        total = os.sysconf("SC_PHYS_PAGES") * page
        with open("/proc/self/statm") as statm:
            used = int(statm.read().split()[1]) * page
    except (OSError, ValueError, IndexError) as error:
        return {"error": str(error)}
    return {"free": total - used, "used": used, "total": total}
