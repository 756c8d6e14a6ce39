"""The images behind `response_format: url`: held in memory for an hour at an unguessable name, like OpenAI's
expiring URLs, within a byte budget (beyond it the least recently used go first).

The name is the only credential (256 random bits, as a signed URL's signature): a browser showing the
image sends no API key. Used from the event loop only, so it takes no lock.
"""

from __future__ import annotations

import secrets
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

# OpenAI's URLs are valid for 60 minutes.
LIFETIME_S = 3600.0
# About 170 PNGs of 1024x1024, or a few hundred JPEGs: bounded whatever the traffic.
MAX_BYTES = 256 * 1024 * 1024


@dataclass(frozen=True)
class StoredImage:
    data: bytes
    media_type: str
    expires_at: float  # on the store's clock


class ImageStore:
    """Images by name, each kept `lifetime_s` seconds at most, `max_bytes` of them in all at most."""

    def __init__(
        self,
        *,
        lifetime_s: float = LIFETIME_S,
        max_bytes: int = MAX_BYTES,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.lifetime_s = lifetime_s
        self.max_bytes = max_bytes
        self.clock = clock
        self._images: OrderedDict[str, StoredImage] = OrderedDict()
        self.bytes = 0

    def __len__(self) -> int:
        return len(self._images)

    def put(self, data: bytes, media_type: str, extension: str) -> str:
        """Keep `data`; returns its name (`<token>.<extension>`). May drop the least recently used others."""
        name = f"{secrets.token_urlsafe(32)}.{extension}"
        self._images[name] = StoredImage(data, media_type, self.clock() + self.lifetime_s)
        self.bytes += len(data)
        self._drop_expired()
        while self.bytes > self.max_bytes and len(self._images) > 1:
            self._drop(next(iter(self._images)))
        return name

    def get(self, name: str) -> StoredImage | None:
        """The image, or None once it has expired or was dropped; a read counts as a use."""
        image = self._images.get(name)
        if image is None:
            return None
        if image.expires_at <= self.clock():
            self._drop(name)
            return None
        self._images.move_to_end(name)
        return image

    def seconds_left(self, image: StoredImage) -> int:
        return max(0, int(image.expires_at - self.clock()))

    def _drop_expired(self) -> None:
        now = self.clock()
        for name in [name for name, image in self._images.items() if image.expires_at <= now]:
            self._drop(name)

    def _drop(self, name: str) -> None:
        self.bytes -= len(self._images.pop(name).data)
