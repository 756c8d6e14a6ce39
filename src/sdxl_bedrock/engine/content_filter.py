"""The content filter: a pluggable check on the prompt and on the finished image.

A flagged result is not an error: the image comes back strongly blurred with finish reason
CONTENT_FILTERED, as Bedrock does it. The built-in filter reads a list of blocked terms; an image
classifier is one more class with the same two methods.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Protocol

from PIL import Image, ImageFilter

# The blur radius as a fraction of the image's longer side: 1024 px -> radius 64, nothing recognisable left.
OBSCURING_BLUR_FRACTION = 1 / 16


class ContentFilter(Protocol):
    def check_prompt(self, texts: Sequence[str]) -> bool:
        """True when the prompt texts are to be flagged."""
        ...

    def check_image(self, image: Image.Image) -> bool:
        """True when the image is to be flagged."""
        ...


class BlockedTerms:
    """Flags a prompt containing any of the terms as whole words, case-insensitively; never an image.

    A term may be several words ("blocked phrase"); it matches with any whitespace between them."""

    def __init__(self, terms: Iterable[str]) -> None:
        self.terms = tuple(term.strip() for term in terms if term.strip())
        words = [r"\s+".join(map(re.escape, term.split())) for term in self.terms]
        self._pattern = re.compile(r"\b(?:" + "|".join(words) + r")\b", re.IGNORECASE) if words else None

    @classmethod
    def from_file(cls, path: Path) -> BlockedTerms:
        """One term per line; blank lines and lines starting with `#` are skipped."""
        lines = path.read_text(encoding="utf-8").splitlines()
        return cls(line for line in lines if not line.lstrip().startswith("#"))

    def check_prompt(self, texts: Sequence[str]) -> bool:
        return self._pattern is not None and any(self._pattern.search(text) for text in texts)

    def check_image(self, image: Image.Image) -> bool:
        return False


def obscure(image: Image.Image) -> Image.Image:
    """A strong Gaussian blur of the whole image."""
    radius = max(2.0, max(image.size) * OBSCURING_BLUR_FRACTION)
    return image.filter(ImageFilter.GaussianBlur(radius))
