"""The playground page at GET /, in Debian's headless Chromium driven by Playwright, against a real server."""

from __future__ import annotations

import base64
import io
import json
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any, get_args
from urllib.parse import quote

import httpx
import numpy as np
import pytest
from PIL import Image
from playwright.sync_api import Browser, FilePayload, Page, expect

from sdxl_bedrock.api.bedrock import eventstream
from sdxl_bedrock.api.stability.fields import ClipGuidancePresetName, MaskSource, SamplerName
from sdxl_bedrock.api.validation import SDXL_V1_SIZES
from sdxl_bedrock.presets import STYLE_PRESETS
from sdxl_bedrock.testing import bedrock_client
from tests.conftest import RunningServer, gradient_png, start_server
from tests.e2e.browser import PageWatch, chromium, needs_chromium
from tests.library.checkpoints import tiny_variant
from tests.library.loras import tiny_lora

GENERATION_TIMEOUT_MS = 120_000
# Chromium logs every 4xx answer to fetch() as a console error; the error test wants one.
EXPECTED_CONSOLE = ("the server responded with a status of 400",)
DEFAULT_MODEL_ID = "stability.stable-diffusion-xl-v1"

pytestmark = needs_chromium


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with chromium() as launched:
        yield launched


@pytest.fixture
def artifacts(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> Path:
    folder = Path(os.environ.get("SDXL_BEDROCK_ARTIFACTS") or tmp_path)
    folder.mkdir(parents=True, exist_ok=True)
    with capsys.disabled():
        print(f"\nplayground screenshots: {folder}")
    return folder


def open_playground(browser: Browser, server: RunningServer) -> tuple[Page, PageWatch]:
    page = browser.new_page(viewport={"width": 1280, "height": 1000})
    watch = PageWatch(page, server.url, EXPECTED_CONSOLE)
    page.goto(server.url + "/")
    expect(page.locator("body")).to_have_attribute("data-ready", "true")
    return page, watch


def png_file(name: str, width: int = 64, height: int = 64) -> FilePayload:
    return {"name": name, "mimeType": "image/png", "buffer": gradient_png(width, height)}


def select_values(page: Page, selector: str) -> list[str]:
    values: list[str] = page.eval_on_selector_all(
        f"{selector} option", "options => options.map(o => o.value)"
    )
    return [value for value in values if value]


def test_the_page_is_served_with_a_self_only_content_security_policy(server: RunningServer) -> None:
    page = httpx.get(server.url + "/")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    policy = page.headers["content-security-policy"]
    assert "default-src 'self'" in policy and "img-src 'self' data: blob:" in policy
    for asset, media_type in (("app.js", "text/javascript"), ("style.css", "text/css")):
        response = httpx.get(f"{server.url}/playground/{asset}")
        assert response.status_code == 200 and response.headers["content-type"].startswith(media_type)
    # The page names nothing outside this server.
    for text in (page.text, httpx.get(server.url + "/playground/app.js").text):
        assert not re.search(r"(src|href)=\"(https?:)?//", text)
    missing = httpx.get(server.url + "/playground/playground.py")
    assert missing.status_code == 404
    assert missing.headers["x-amzn-ErrorType"].startswith("ResourceNotFoundException:")


def test_generate_progress_reuse_seed_and_an_error_in_words(
    browser: Browser, server: RunningServer, artifacts: Path, tmp_path: Path
) -> None:
    page, watch = open_playground(browser, server)
    expect(page.locator("#server-status")).to_have_text("model ready")
    assert select_values(page, "#sampler") == list(get_args(SamplerName))
    assert select_values(page, "#style_preset") == list(STYLE_PRESETS)
    assert select_values(page, "#mask_source") == list(get_args(MaskSource))

    page.set_input_files("#init-image", files=[png_file("door.png")])
    expect(page.locator("#init-info")).to_have_text("door.png, 64×64")
    expect(page.locator("#mode")).to_have_text("image-to-image")
    page.fill(".prompt-text", "a red door in a white wall")
    page.click("#add-negative")
    page.locator(".prompt-text").nth(1).fill("blurry")
    page.fill("#steps", "20")
    page.fill("#preview-every", "2")
    page.click("#generate")

    expect(page.locator("#result-image")).to_be_visible(timeout=GENERATION_TIMEOUT_MS)
    assert page.get_attribute("#result-image", "src").startswith("data:image/png;base64,")  # type: ignore[union-attr]
    seed = page.inner_text("#result-seed")
    assert seed.isdigit() and int(seed) > 0
    expect(page.locator("#result-finish")).to_have_text("SUCCESS")
    # Image-to-image runs only the tail of the schedule, and the bar says so: 20 - int(20 * 0.65) = 7 is
    # the window's first step, so 13 steps run.
    steps_run = 13
    expect(page.locator("#progress-text")).to_have_text(
        "step 13 of 13 (image_strength 0.35 runs the last 13 of 20 steps)"
    )
    expect(page.locator("#elapsed")).to_have_text(re.compile(r"^\d+\.\d s$"))
    previews_expected = steps_run // 2 + steps_run % 2  # every 2nd step, and the last one
    expect(page.locator("#previews img")).to_have_count(previews_expected)
    expect(page.locator("#error")).to_be_hidden()

    request_json = page.inner_text("#request-json")
    assert '"steps": 20' in request_json and '"weight": -1' in request_json
    assert "clip_guidance_preset" not in request_json  # this server has no CLIP model
    assert '"init_image": "<base64,' in request_json and '"progress": true' in request_json
    expect(page.locator("#response-json")).to_contain_text(
        f"{steps_run} progress chunks, then the result chunk"
    )
    expect(page.locator("#response-json")).to_contain_text(f'"seed": {seed}')

    page.click("#reuse-seed")
    expect(page.locator("#seed")).to_have_value(seed)
    snippet = page.inner_text("#boto3-snippet")
    assert f'"seed": {seed}' in snippet and 'b64("door.png")' in snippet
    assert f'endpoint_url="{server.url}"' in snippet and "client.invoke_model(" in snippet
    (tmp_path / "door.png").write_bytes(png_file("door.png")["buffer"])
    ran = subprocess.run(
        [sys.executable, "-c", snippet], cwd=tmp_path, capture_output=True, text=True, timeout=300
    )
    assert ran.returncode == 0, ran.stderr
    assert ran.stdout.split() == [seed, "SUCCESS"] and (tmp_path / "result.png").exists()
    page.screenshot(path=str(artifacts / "playground-result.png"), full_page=True)

    page.fill("#steps", "5")  # the input takes it; the server refuses it
    page.click("#generate")
    expect(page.locator("#error")).to_be_visible(timeout=GENERATION_TIMEOUT_MS)
    expect(page.locator("#error-type")).to_have_text("ValidationException")
    expect(page.locator("#error-message")).to_have_text(
        "Malformed input request: #/steps: 5 is not greater or equal to 10, "
        "please reformat your input and try again."
    )
    expect(page.locator("#response-json")).to_contain_text("HTTP 400")
    expect(page.locator("#generate")).to_be_enabled()
    page.screenshot(path=str(artifacts / "playground-error.png"), full_page=True)

    assert watch.problems == []
    page.close()


def test_text_to_image_sends_the_size_and_no_image_fields(browser: Browser, server: RunningServer) -> None:
    page, watch = open_playground(browser, server)
    page.select_option("#size-preset", "1216x832")
    body: dict[str, Any] = page.evaluate("formToBody()")
    assert (body["width"], body["height"]) == (1216, 832)
    assert "init_image" not in body and "image_strength" not in body and "mask_source" not in body
    page.fill("#width", "64")
    page.fill("#height", "128")
    page.select_option("#sampler", "K_EULER")
    page.select_option("#style_preset", "pixel-art")
    page.fill("#seed", "42")
    page.fill("#steps", "10")
    page.click("#generate")
    expect(page.locator("#result-image")).to_be_visible(timeout=GENERATION_TIMEOUT_MS)
    expect(page.locator("#result-seed")).to_have_text("42")
    size = page.eval_on_selector("#result-image", "image => [image.naturalWidth, image.naturalHeight]")
    assert size == [64, 128]
    assert watch.problems == []
    page.close()


@pytest.fixture(scope="module")
def clip_server(tmp_path_factory: pytest.TempPathFactory, cache_dir: Path) -> Iterator[RunningServer]:
    """The tiny model with a CLIP model and SDXL's size rule (no --relaxed-sizes)."""
    running = start_server(tmp_path_factory.mktemp("logs"), "--model", "tiny", "--clip-model", "tiny")
    yield running
    running.stop()


def test_without_a_clip_model_the_page_offers_no_guidance_and_any_multiple_of_64(
    browser: Browser, server: RunningServer
) -> None:
    page, watch = open_playground(browser, server)
    expect(page.locator("#clip-guidance-field")).to_be_hidden()
    expect(page.locator("#clip-guidance-absent")).to_be_visible()
    assert "clip_guidance_preset" not in page.evaluate("formToBody()")
    # --relaxed-sizes: free width and height, within the server's rule.
    for field in ("#width", "#height"):
        expect(page.locator(field)).to_be_visible()
        attributes = page.eval_on_selector(field, "input => [input.min, input.max, input.step]")
        assert attributes == ["64", "2048", "64"]
    expect(page.locator("#size-rule")).to_contain_text("any multiple of 64 from 64 to 2048")
    assert select_values(page, "#size-preset") == [f"{w}x{h}" for w, h in SDXL_V1_SIZES]
    assert page.eval_on_selector("#size-preset", "select => select.options[0].value") == ""  # custom
    assert watch.problems == []
    page.close()


def test_with_a_clip_model_and_sdxl_sizes_the_page_offers_guidance_and_only_those_sizes(
    browser: Browser, clip_server: RunningServer
) -> None:
    page, watch = open_playground(browser, clip_server)
    expect(page.locator("#clip-guidance-field")).to_be_visible()
    expect(page.locator("#clip-guidance-absent")).to_be_hidden()
    assert select_values(page, "#clip_guidance_preset") == list(get_args(ClipGuidancePresetName))
    page.select_option("#clip_guidance_preset", "FAST_BLUE")
    assert page.evaluate("formToBody()")["clip_guidance_preset"] == "FAST_BLUE"
    # No free width and height: the select holds the nine sizes and nothing else.
    expect(page.locator("#width")).to_be_hidden()
    expect(page.locator("#height")).to_be_hidden()
    expect(page.locator("#size-rule")).to_contain_text("SDXL's nine sizes only")
    sizes = page.eval_on_selector_all("#size-preset option", "options => options.map(o => o.value)")
    assert sizes == [f"{w}x{h}" for w, h in SDXL_V1_SIZES]
    expect(page.locator("#size-preset")).to_have_value("1024x1024")
    page.select_option("#size-preset", "832x1216")
    body: dict[str, Any] = page.evaluate("formToBody()")
    assert (body["width"], body["height"]) == (832, 1216)
    assert watch.problems == []
    page.close()


def test_the_progress_note_names_the_window_of_each_mode(browser: Browser, server: RunningServer) -> None:
    page, _ = open_playground(browser, server)
    notes = page.evaluate(
        """() => [
            windowNote({init_image: "x", steps: 20, image_strength: 0.35}, 13),
            windowNote({init_image: "x", init_image_mode: "STEP_SCHEDULE", steps: 20,
                        step_schedule_start: 0.65, step_schedule_end: 0.2}, 9),
            windowNote({init_image: "x"}, 20),
            windowNote({init_image: "x", image_strength: 0}, 30),
            windowNote({steps: 20}, 20),
        ]"""
    )
    assert notes == [
        " (image_strength 0.35 runs the last 13 of 20 steps)",
        " (step_schedule_start 0.65 to step_schedule_end 0.2 runs 9 of 20 steps)",
        " (image_strength 0.35 runs the last 20 of 30 steps)",  # the server's defaults
        "",
        "",
    ]
    page.close()


def test_the_image_fields_follow_the_mode(browser: Browser, server: RunningServer) -> None:
    page, watch = open_playground(browser, server)
    expect(page.locator("#mask-slot")).to_be_hidden()
    page.set_input_files("#init-image", files=[png_file("init.png")])
    expect(page.locator("#size-fields")).to_be_hidden()
    page.set_input_files("#mask-image", files=[png_file("mask.png")])
    expect(page.locator("#mode")).to_have_text("masked image-to-image")
    page.select_option("#init_image_mode", "STEP_SCHEDULE")
    expect(page.locator("#step_schedule_start")).to_be_visible()
    expect(page.locator("#image_strength")).to_be_hidden()
    body: dict[str, Any] = page.evaluate("formToBody()")
    assert body["mask_source"] == "MASK_IMAGE_WHITE" and body["mask_image"] == body["init_image"]
    assert (body["init_image_mode"], body["step_schedule_start"], body["step_schedule_end"]) == (
        "STEP_SCHEDULE",
        0.65,
        0,
    )
    assert "image_strength" not in body and "width" not in body
    assert 'b64("mask.png")' in page.inner_text("#boto3-snippet")

    page.click("#init-clear")
    expect(page.locator("#mode")).to_have_text("text-to-image")
    expect(page.locator("#mask-slot")).to_be_hidden()
    body = page.evaluate("formToBody()")
    assert "init_image" not in body and "mask_image" not in body and body["width"] == 1024
    assert watch.problems == []
    page.close()


def test_the_frame_parser_reads_split_frames_and_exceptions(browser: Browser, server: RunningServer) -> None:
    """The page's JS parser on frames made by the server's encoder, cut at awkward places."""
    page, _ = open_playground(browser, server)
    stream = (
        eventstream.chunk_frame(b'{"progress": {"step": 1, "steps": 2}}')
        + eventstream.chunk_frame(b'{"result": "success", "artifacts": []}')
        + eventstream.exception_frame("modelTimeoutException", "The model took too long.")
    )
    pieces = [list(stream[start : start + 7]) for start in range(0, len(stream), 7)]
    messages = page.evaluate(
        """pieces => {
            const parse = createFrameParser();
            const frames = pieces.flatMap(piece => parse(new Uint8Array(piece)));
            return {messages: frames.map(interpretFrame), pending: parse.pending()};
        }""",
        pieces,
    )
    assert messages == {
        "messages": [
            {"chunk": {"progress": {"step": 1, "steps": 2}}},
            {"chunk": {"result": "success", "artifacts": []}},
            {"error": {"type": "modelTimeoutException", "message": "The model took too long."}},
        ],
        "pending": 0,
    }
    corrupt = bytearray(eventstream.chunk_frame(b"{}"))
    corrupt[-6] ^= 0xFF
    error = page.evaluate(
        """bytes => {
            try { createFrameParser()(new Uint8Array(bytes)); return null } catch (e) { return e.message }
        }""",
        list(corrupt),
    )
    assert error == "event stream: message checksum mismatch"
    page.close()


HOUSE_ARN = "arn:aws:bedrock:us-east-1:123456789012:custom-model/stability.stable-diffusion-xl-v1/house"


@pytest.fixture(scope="module")
def lora_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("loras")
    tiny_lora(folder / "ink.safetensors", seed=1)
    tiny_lora(folder / "paper.safetensors", seed=2)
    return folder


@pytest.fixture(scope="module")
def library_server(
    tmp_path_factory: pytest.TempPathFactory, lora_folder: Path, cache_dir: Path
) -> Iterator[RunningServer]:
    """The tiny model beside a library of two tiny checkpoints, one of them reachable from Bedrock through
    an alias ARN and the other through none, and a LoRA library of two tiny adapters, two per request at
    most (one server for both libraries saves a start)."""
    library = tmp_path_factory.mktemp("checkpoints")
    tiny_variant(library / "house-style", seed=1)
    tiny_variant(library / "anime", seed=2)
    running = start_server(
        tmp_path_factory.mktemp("logs"),
        *("--model", "tiny", "--relaxed-sizes", "--checkpoint-dir", str(library)),
        *("--model-alias", f"{HOUSE_ARN}=house-style"),
        *("--lora-dir", str(lora_folder), "--max-loras-per-request", "2"),
    )
    yield running
    running.stop()


def png_pixels(base64_png: str) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(base64.b64decode(base64_png))).convert("RGB"), dtype=np.int16)


def bedrock_pixels(server: RunningServer, model_id: str, body: dict[str, Any]) -> np.ndarray:
    answer = bedrock_client(server.url).invoke_model(modelId=model_id, body=json.dumps(body))
    return png_pixels(json.loads(answer["body"].read())["artifacts"][0]["base64"])


def test_the_chooser_offers_the_librarys_checkpoints_and_sends_the_alias(
    browser: Browser, library_server: RunningServer, artifacts: Path
) -> None:
    options = httpx.get(library_server.url + "/playground/options.json").json()
    assert options["models"] == [
        {"model_id": DEFAULT_MODEL_ID, "checkpoint": "tiny", "default": True},
        {"model_id": HOUSE_ARN, "checkpoint": "house-style", "default": False},
        {"model_id": None, "checkpoint": "anime", "default": False},
    ]
    page, watch = open_playground(browser, library_server)
    chooser = page.eval_on_selector_all(
        "#model option", "options => options.map(o => [o.value, o.textContent, o.disabled])"
    )
    assert chooser == [
        [DEFAULT_MODEL_ID, "tiny (default)", False],
        [HOUSE_ARN, "house-style (alias …/house)", False],
        ["", "anime (no Bedrock id)", True],
    ]
    expect(page.locator("#model-note")).to_have_text(
        "anime: add --model-alias ID=anime to reach it from Bedrock"
    )
    expect(page.locator("#model-id")).to_have_text(DEFAULT_MODEL_ID)
    expect(page.locator("#request-model")).to_have_text(
        f"modelId {DEFAULT_MODEL_ID}: the default checkpoint tiny"
    )

    page.select_option("#model", HOUSE_ARN)
    path = f"/model/{quote(HOUSE_ARN, safe='')}/invoke-with-response-stream"
    expect(page.locator("#model-id")).to_have_text(HOUSE_ARN)
    expect(page.locator("#request-path")).to_have_text(f"POST {path}")
    expect(page.locator("#request-model")).to_have_text(
        f"modelId {HOUSE_ARN}: a --model-alias for checkpoint house-style"
    )
    assert f'client.invoke_model(modelId="{HOUSE_ARN}"' in page.inner_text("#boto3-snippet")

    body = {
        "text_prompts": [{"text": "a boat", "weight": 1}],
        "cfg_scale": 7,
        "seed": 7,
        "steps": 10,
        "width": 64,
        "height": 64,
    }
    page.fill(".prompt-text", "a boat")
    for field in ("width", "height", "steps", "seed"):
        page.fill(f"#{field}", str(body[field]))
    page.uncheck("#progress-enabled")
    with page.expect_request(lambda request: request.method == "POST") as sent:
        page.click("#generate")
    assert sent.value.url == library_server.url + path
    assert json.loads(sent.value.post_data or "") == body
    expect(page.locator("#result-image")).to_be_visible(timeout=GENERATION_TIMEOUT_MS)
    expect(page.locator("#result-finish")).to_have_text("SUCCESS")
    made = png_pixels(page.get_attribute("#result-image", "src").split(",", 1)[1])  # type: ignore[union-attr]
    # The alias's checkpoint made it: boto3 through the alias makes the same picture (the library's own
    # tests show that the alias's checkpoint makes pictures of its own).
    assert np.abs(made - bedrock_pixels(library_server, HOUSE_ARN, body)).max() <= 1
    page.screenshot(path=str(artifacts / "playground-models.png"), full_page=True)
    assert watch.problems == []
    page.close()


# What options.json says of a tiny LoRA (tests/library/loras.py): both text encoders' parts and the UNet's.
TINY_LORA_PARTS = ["unet", "text_encoder", "text_encoder_2"]


def test_adapters_with_weights_are_sent_as_extras_loras_and_shown_in_the_request_and_snippet(
    browser: Browser, library_server: RunningServer, lora_folder: Path, artifacts: Path, tmp_path: Path
) -> None:
    options = httpx.get(library_server.url + "/playground/options.json").json()
    assert options["loras"] == [
        {"name": "ink", "alias": "ink", "parts": TINY_LORA_PARTS, "rank": 4},
        {"name": "paper", "alias": "paper", "parts": TINY_LORA_PARTS, "rank": 4},
    ]
    assert (options["lora_library"], options["max_loras_per_request"]) == (True, 2)
    page, watch = open_playground(browser, library_server)
    expect(page.locator("#adapters-absent")).to_be_hidden()
    assert select_values(page, "#adapter-choice") == ["ink", "paper"]

    # Each chosen adapter leaves the chooser; two fill the request, and removing one frees a place.
    page.get_by_label("adapter to add").select_option("paper")
    page.click("#add-adapter")
    page.click("#add-adapter")
    expect(page.locator(".adapter-row .adapter-name")).to_have_text(["paper", "ink"])
    expect(page.locator("#add-adapter")).to_be_disabled()
    expect(page.locator("#adapters-limit")).to_contain_text("--max-loras-per-request")
    expect(page.get_by_label("weight of paper")).to_have_value("1")
    page.get_by_role("button", name="remove adapter paper").click()
    expect(page.locator("#add-adapter")).to_be_enabled()
    assert select_values(page, "#adapter-choice") == ["paper"]
    page.get_by_label("weight of ink").fill("0.8")

    body = {
        "text_prompts": [{"text": "a boat", "weight": 1}],
        "cfg_scale": 7,
        "seed": 7,
        "steps": 10,
        "width": 64,
        "height": 64,
        "extras": {"loras": [{"name": "ink", "weight": 0.8}]},
    }
    page.fill(".prompt-text", "a boat")
    for field in ("width", "height", "steps", "seed"):
        page.fill(f"#{field}", str(body[field]))
    # With progress on, the body carries both; the snippet keeps the adapters and leaves progress out.
    assert page.evaluate("formToBody()")["extras"] == {
        "progress": True,
        "progress_preview_every": 5,
        **body["extras"],
    }
    snippet = page.inner_text("#boto3-snippet")
    assert '"extras": {"loras": [{"name": "ink", "weight": 0.8}]}' in snippet
    assert '"progress"' not in snippet
    assert "# The page also sends extras.progress" in snippet
    page.uncheck("#progress-enabled")
    with page.expect_request(lambda request: request.method == "POST") as sent:
        page.click("#generate")
    assert json.loads(sent.value.post_data or "") == body
    expect(page.locator("#result-image")).to_be_visible(timeout=GENERATION_TIMEOUT_MS)
    expect(page.locator("#result-finish")).to_have_text("SUCCESS")
    assert json.loads(page.inner_text("#request-json"))["extras"] == body["extras"]
    made = png_pixels(page.get_attribute("#result-image", "src").split(",", 1)[1])  # type: ignore[union-attr]
    without = {key: value for key, value in body.items() if key != "extras"}
    assert (
        np.abs(made - bedrock_pixels(library_server, DEFAULT_MODEL_ID, without)).max() > 8
    )  # the adapter acts

    # The shown snippet is a working boto3 call that makes the same picture, adapter and all.
    snippet = page.inner_text("#boto3-snippet")
    assert "# The page also sends extras.progress" not in snippet
    ran = subprocess.run(
        [sys.executable, "-c", snippet], cwd=tmp_path, capture_output=True, text=True, timeout=300
    )
    assert ran.returncode == 0, ran.stderr
    assert (
        np.abs(made - png_pixels(base64.b64encode((tmp_path / "result.png").read_bytes()).decode())).max()
        <= 1
    )
    page.screenshot(path=str(artifacts / "playground-adapters.png"), full_page=True)

    # The page reads the adapters again with the checkpoints (as it does once a loading server is ready).
    tiny_lora(lora_folder / "late.safetensors", seed=3)
    httpx.post(library_server.url + "/sdapi/v1/refresh-loras", timeout=60).raise_for_status()
    page.evaluate("reloadModels()")
    expect(page.locator("#adapter-choice option")).to_have_count(2)
    assert select_values(page, "#adapter-choice") == ["late", "paper"]
    expect(page.locator(".adapter-row .adapter-name")).to_have_text(["ink"])  # still chosen
    assert watch.problems == []
    page.close()


def test_without_a_lora_dir_the_adapters_section_says_how_to_get_some(
    browser: Browser, server: RunningServer
) -> None:
    options = httpx.get(server.url + "/playground/options.json").json()
    assert (options["loras"], options["lora_library"]) == ([], False)
    page, watch = open_playground(browser, server)
    expect(page.locator("#adapters-controls")).to_be_hidden()
    expect(page.locator("#adapters-absent")).to_have_text(
        "No adapters: start the server with --lora-dir DIR, a folder of LoRA .safetensors."
    )
    assert "loras" not in page.evaluate("formToBody()")["extras"]
    assert "loras" not in page.inner_text("#boto3-snippet")
    assert watch.problems == []
    page.close()
