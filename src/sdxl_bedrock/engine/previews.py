"""Progress previews: a row's latents at one step, copied to the host without waiting, then made into a
small picture on a host thread.

A preview made on the engine thread the plain way (`latents.cpu()`, then the picture and its JPEG) makes
the host wait until the device has run everything queued before it: every row of the tick waits for one
streaming client. Here making a preview only queues a copy into pinned host memory, on a side stream behind
the work that made the latents, and records a CUDA event after it; whoever wants the picture (a host thread)
waits for that event and does the arithmetic and the encoding on the host. On the CPU the copy is plain and
done at once."""

from __future__ import annotations

import functools
import time

import torch
from PIL import Image

# A linear map from SDXL's 4 latent channels to RGB, fitted on SDXL latents (the "cheap approximation"
# preview of ComfyUI and A1111): good enough to watch a picture form, at 1/8 of the output size.
SDXL_LATENT_RGB_FACTORS = (
    (0.3651, 0.4232, 0.4341),
    (-0.2533, -0.0042, 0.1068),
    (0.1076, 0.1111, -0.0362),
    (-0.3165, -0.2492, -0.2188),
)
SDXL_LATENT_RGB_BIAS = (0.1084, -0.0175, -0.0011)

# How often a waiting host thread looks at the copy's event: it ends behind the kernels queued before it,
# a tick at most, and a blocking wait would count as a sync where CUDA's sync detector is armed.
POLL_SECONDS = 0.002


def latent_rgb(latent: torch.Tensor) -> Image.Image:
    """Latents [C, h, w] (on the host, C >= 4) as an RGB picture h x w, by the linear latent-to-RGB map."""
    factors = torch.tensor(SDXL_LATENT_RGB_FACTORS, dtype=torch.float32)
    bias = torch.tensor(SDXL_LATENT_RGB_BIAS, dtype=torch.float32)
    rgb = torch.einsum("chw,cr->hwr", latent[: factors.shape[0]].float(), factors) + bias
    pixels = ((rgb.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).numpy()
    return Image.fromarray(pixels, "RGB")


@functools.cache
def copy_stream(device: torch.device) -> torch.cuda.Stream:
    """The side stream that previews are copied to the host on, one per device."""
    return torch.cuda.Stream(device)


class LatentPreview:
    """Batch row 0 of latents [B, C, h, w] (on any device) at the moment it is made, on its way to the host.

    Making one queues the copy and returns (call it on the engine thread, or any other); `image()` waits for
    the copy and makes the picture (call it on a host thread: it may wait up to a tick).
    """

    def __init__(self, latents: torch.Tensor) -> None:
        channels = latents[0, : len(SDXL_LATENT_RGB_FACTORS)]
        on_cuda = channels.device.type == "cuda"
        self._host = torch.empty(channels.shape, dtype=channels.dtype, pin_memory=on_cuda)
        self._copied: torch.cuda.Event | None = None
        if not on_cuda:
            self._host.copy_(channels)
            return
        # On a stream of its own, behind the work that made the latents: the copy engine overlaps the next
        # tick's kernels instead of sitting in their queue.
        copies = copy_stream(channels.device)
        copies.wait_stream(torch.cuda.current_stream(channels.device))
        with torch.cuda.stream(copies):
            self._host.copy_(channels, non_blocking=True)
            self._copied = torch.cuda.Event()
            self._copied.record(copies)
        # The caching allocator must not hand the latents' memory to the main stream before the copy ran.
        channels.record_stream(copies)

    def ready(self) -> bool:
        """Whether the copy has landed (never waits)."""
        return self._copied is None or self._copied.query()

    def image(self) -> Image.Image:
        """The picture, h x w RGB, once the copy has landed."""
        while not self.ready():
            time.sleep(POLL_SECONDS)
        return latent_rgb(self._host)
