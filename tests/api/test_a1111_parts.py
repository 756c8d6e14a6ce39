"""The A1111 wire's parts without a server: its pixel work, progress accounting, error shapes and auth."""

from __future__ import annotations

import base64
import json

import numpy as np
import pytest
from PIL import Image

from sdxl_bedrock import errors
from sdxl_bedrock.api.a1111 import images
from sdxl_bedrock.api.a1111.auth import check_auth
from sdxl_bedrock.api.a1111.errors import error_response
from sdxl_bedrock.api.a1111.progress import Tasks
from sdxl_bedrock.api.validation import malformed
from sdxl_bedrock.config import Settings

# -- pixels --------------------------------------------------------------------------------------------------


def test_resize_modes_keep_the_aspect_as_a1111s() -> None:
    wide = Image.new("RGB", (200, 100), (255, 0, 0))
    wide.paste((0, 0, 255), (0, 0, 100, 100))
    stretched = images.resize_image(0, wide, 64, 64)
    cropped = images.resize_image(1, wide, 64, 64)
    filled = images.resize_image(2, wide, 64, 64)
    assert stretched.size == cropped.size == filled.size == (64, 64)
    # Crop and resize: the middle of the image fills the square, blue left and red right.
    assert cropped.getpixel((2, 32))[2] > 200 and cropped.getpixel((61, 32))[0] > 200
    # Resize and fill: the image fits in a 64x32 band, the bands above and below repeat its edge rows.
    assert filled.getpixel((10, 2)) == filled.getpixel((10, 17))
    assert filled.getpixel((50, 62))[0] > 200


def opencv_blur(levels: np.ndarray, sigma: float, axis: int) -> np.ndarray:
    """OpenCV's GaussianBlur along one axis, written out: kernel 2*int(2.5 sigma + 0.5) + 1 wide, weights
    exp(-x^2 / 2 sigma^2) normalised, BORDER_REFLECT_101 (numpy's `reflect`)."""
    radius = int(2.5 * sigma + 0.5)
    offsets = np.arange(-radius, radius + 1)
    kernel = np.exp(-(offsets**2) / (2 * sigma**2))
    kernel /= kernel.sum()
    pad = [(0, 0), (0, 0)]
    pad[axis] = (radius, radius)
    padded = np.pad(levels, pad, mode="reflect")
    moved = np.moveaxis(padded, axis, 0)
    out = sum(weight * moved[index : index + levels.shape[axis]] for index, weight in enumerate(kernel))
    return np.moveaxis(np.asarray(out), 0, axis)


def test_the_mask_blur_is_opencvs_gaussian() -> None:
    mask = Image.new("L", (40, 30), 0)
    mask.paste(255, (10, 8, 25, 20))
    levels = np.asarray(mask, dtype=np.float64)
    expected = np.rint(opencv_blur(levels, 4, axis=1)).clip(0, 255)
    expected = np.rint(opencv_blur(expected, 2, axis=0)).clip(0, 255)
    assert np.array_equal(np.asarray(images.blur_mask(mask, 4, 2)), expected.astype(np.uint8))
    assert images.blur_mask(mask, 0, 0).tobytes() == mask.tobytes()


def test_a_mask_with_transparency_is_its_alpha() -> None:
    rgba = Image.new("RGBA", (4, 4), (0, 0, 0, 0))
    rgba.putpixel((1, 1), (0, 0, 0, 200))
    assert np.asarray(images.binary_mask(rgba)).tolist()[1][1] == 255
    assert images.binary_mask(Image.new("RGB", (4, 4), (255, 255, 255))).getextrema() == (255, 255)


def test_fill_paints_only_the_masked_area() -> None:
    image = Image.new("RGB", (32, 32), (10, 200, 30))
    image.paste((250, 250, 250), (12, 12, 20, 20))
    mask = Image.new("L", (32, 32), 0)
    mask.paste(255, (12, 12, 20, 20))
    filled = images.fill(image, mask)
    outside = np.asarray(mask) == 0
    assert np.array_equal(np.asarray(filled)[outside], np.asarray(image)[outside])
    assert filled.getpixel((16, 16))[1] > 150, "painted from the green around it"


def test_the_crop_region_grows_to_the_outputs_aspect_inside_the_image() -> None:
    mask = Image.new("L", (100, 100), 0)
    mask.paste(255, (10, 40, 30, 50))
    region = images.crop_region(mask, 2)
    assert region == (8, 38, 32, 52)
    assert images.expand_crop_region(region, 64, 64, 100, 100) == (8, 33, 32, 57)
    # Too narrow for 2:1 and against the left edge: shifted right, then cut at the image's width.
    assert images.expand_crop_region((0, 0, 10, 90), 64, 32, 100, 100) == (0, 0, 100, 90)
    assert images.crop_region(Image.new("L", (10, 10), 0), 4) is None


def test_the_overlay_keeps_the_original_outside_the_mask() -> None:
    original = Image.new("RGB", (64, 64), (0, 0, 255))
    generated = Image.new("RGB", (64, 64), (255, 0, 0))
    mask = Image.new("L", (64, 64), 0)
    mask.paste(255, (16, 16, 48, 48))
    whole = images.apply_overlay(
        generated, images.Overlay(images.overlay_of(original, images.double_mask(mask)))
    )
    assert whole.getpixel((2, 2)) == (0, 0, 255) and whole.getpixel((32, 32)) == (255, 0, 0)
    only_masked = images.apply_overlay(
        Image.new("RGB", (32, 32), (255, 0, 0)),
        images.Overlay(images.overlay_of(original, mask), (16, 16, 32, 32)),
    )
    assert only_masked.size == (64, 64)
    assert only_masked.getpixel((2, 2)) == (0, 0, 255) and only_masked.getpixel((32, 32)) == (255, 0, 0)


# -- progress ------------------------------------------------------------------------------------------------


class HostPreview:
    """A step's preview already on the host (engine/previews.py's LatentPreview has its copy to wait for)."""

    def image(self) -> Image.Image:
        return Image.new("RGB", (1, 1))


def test_progress_counts_the_steps_of_every_request_in_progress() -> None:
    tasks = Tasks()
    assert tasks.snapshot().progress == 0 and tasks.snapshot().state["job_count"] == 0
    with tasks.track("txt2img", 2) as first, tasks.track("img2img", 1) as second:
        first.started = second.started = 100.0
        for done in (1, 2):
            first.on_step(done, 4, HostPreview)
        second.on_step(1, 2, HostPreview)
        second.on_step(2, 2, HostPreview)
        snapshot = tasks.snapshot(now=110.0)
        assert snapshot.state["job_count"] == 3 and snapshot.state["job_no"] == 1
        assert snapshot.progress == pytest.approx(0.01 + 4 / (2 * 4 + 1 * 2))
        assert snapshot.eta_relative == pytest.approx(10 / snapshot.progress - 10)
        assert snapshot.state["job"] == "img2img+txt2img" and snapshot.preview is not None
        assert snapshot.preview().size == (1, 1), "the picture, made when asked"
        tasks.interrupt()
        assert first.stop.interrupted and second.stop.interrupted
    assert tasks.snapshot().state["interrupted"] is True, "A1111 keeps the flag until the next job"
    with tasks.track("txt2img", 1):
        assert tasks.snapshot().state["interrupted"] is False


def test_progress_covers_both_passes_of_the_hires_fix() -> None:
    """A1111's init doubles state.job_count for the hires fix; each pass of each image is a job."""
    tasks = Tasks()
    with tasks.track("txt2img", 2, passes=2, steps_per_image=4 + 3) as task:
        preview = HostPreview
        for _image in range(2):
            for done in range(1, 5):
                task.on_step(done, 4, preview)
        snapshot = tasks.snapshot()
        assert snapshot.state["job_count"] == 4 and snapshot.state["job_no"] == 2
        assert snapshot.progress == pytest.approx(0.01 + 8 / 14)
        for done in range(1, 4):
            task.on_step(done, 3, preview)
        snapshot = tasks.snapshot()
        assert snapshot.state["job_no"] == 3 and snapshot.state["sampling_steps"] == 3
        assert snapshot.progress == pytest.approx(0.01 + 11 / 14)
        tasks.skip()
        assert task.skipped


# -- errors and auth -----------------------------------------------------------------------------------------


def body_of(error: errors.ServiceError) -> tuple[int, dict[str, object], dict[str, str]]:
    response = error_response(error, "id")
    return response.status_code, json.loads(bytes(response.body)), dict(response.headers)


def test_errors_take_fastapis_and_a1111s_shapes() -> None:
    status, body, _ = body_of(malformed(("styles", 0), "nope", kind=errors.ProblemKind.NOT_ALLOWED))
    assert status == 422 and body == {
        "detail": [{"loc": ["body", "styles", 0], "msg": "nope", "type": "value_error.const"}]
    }
    status, body, _ = body_of(
        malformed((), "required", kind=errors.ProblemKind.REQUIRED_KEY, value="init_images")
    )
    assert body["detail"][0]["loc"] == ["body", "init_images"]  # type: ignore[index]
    assert body_of(errors.NotFound("x"))[:2] == (404, {"detail": "Not Found"})
    status, body, headers = body_of(errors.AccessDenied("Incorrect username or password"))
    assert status == 401 and headers["www-authenticate"] == "Basic"
    assert body == {
        "error": "HTTPException",
        "detail": "Incorrect username or password",
        "body": "",
        "errors": "401: Incorrect username or password",
    }
    assert body_of(errors.Throttled("full"))[0] == 429
    assert body_of(errors.ModelNotReady("loading"))[0] == 503
    assert body_of(errors.ModelFailure("failed"))[0] == 500


def basic(user: str, password: str) -> dict[str, str]:
    return {"authorization": "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()}


def test_auth_takes_basic_with_an_api_key_or_an_access_key_pair_and_bearer() -> None:
    settings = Settings(api_keys=frozenset({"key-1"}), access_keys={"AKID": "secret"})
    check_auth(settings, basic("anyone", "key-1"))
    check_auth(settings, basic("AKID", "secret"))
    check_auth(settings, {"authorization": "Bearer key-1"})
    for headers in ({}, {"authorization": "Digest x"}):
        with pytest.raises(errors.MissingCredentials, match="Not authenticated"):
            check_auth(settings, headers)
    for headers in (
        basic("anyone", "wrong"),
        basic("AKID", "key-2"),
        basic("someone", "secret"),
        {"authorization": "Basic !!!"},
        {"authorization": "Bearer wrong"},
    ):
        with pytest.raises(errors.AccessDenied, match="Incorrect username or password"):
            check_auth(settings, headers)
    check_auth(Settings(), {})
