"""Server settings: one frozen object built by the CLI (or a test) and handed to create_app."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

BODY_LIMIT_BYTES = 25_000_000


@dataclass(frozen=True)
class Settings:
    host: str = "127.0.0.1"
    port: int = 8080
    model: str = "tiny"
    device: str = "auto"
    dtype: str = "auto"
    vae_dtype: str = "auto"
    # Accept any multiple of 64 as a size instead of SDXL's nine; for other models and for quick tests.
    relaxed_sizes: bool = False
    max_batch_size: int = 8
    max_wait_ms: float = 5.0
    max_queue: int = 64
    # Seconds a request may wait and run before ModelTimeoutException; None waits as long as it takes.
    request_timeout_s: float | None = None
    # On SIGTERM, how long to finish accepted requests before leaving anyway.
    shutdown_timeout_s: float = 60.0
    host_threads: int = 4
    # torch.compile the UNet (CUDA graphs), and the (width, height, batch) shapes run once before serving.
    compile_unet: bool = False
    warmup_buckets: tuple[tuple[int, int, int], ...] = ()
    log_json: bool = False
    tls_cert: Path | None = None
    tls_key: Path | None = None
    # Auth is off while both are empty (any credentials pass, like a local emulator).
    access_keys: dict[str, str] = field(default_factory=dict)  # SigV4 access key id -> secret
    api_keys: frozenset[str] = frozenset()  # accepted `Authorization: Bearer` tokens
    # A transformers CLIPModel folder (or `tiny`) for clip_guidance_preset; None refuses guidance.
    clip_model: str | None = None
    # The content filter's blocked terms, one per line; None runs no content filter.
    blocked_terms: Path | None = None

    @property
    def auth_enabled(self) -> bool:
        return bool(self.access_keys or self.api_keys)

    @property
    def scheme(self) -> str:
        return "https" if self.tls_cert else "http"
