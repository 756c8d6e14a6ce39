"""The content filter: blocked terms as whole words, and a flagged image comes back blurred."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from sdxl_bedrock.engine.content_filter import BlockedTerms, obscure
from sdxl_bedrock.engine.pipeline import Engine
from sdxl_bedrock.schema import FinishReason, GenerationRequest, Sampler, WeightedPrompt
from tests.engine.conftest import generation_request


@pytest.mark.parametrize(
    ("text", "flagged"),
    [
        ("a SPIDER on the wall", True),
        ("spiders everywhere", False),  # whole words only
        ("a red   Barn Owl at night", True),  # a several-word term, any spacing and case
        ("a barn; owl", False),
        ("a kitten", False),
    ],
)
def test_blocked_terms_match_whole_words_case_insensitively(text: str, flagged: bool) -> None:
    terms = BlockedTerms(["spider", "barn owl", "  "])
    assert terms.check_prompt(["something else", text]) is flagged


def test_blocked_terms_read_one_term_a_line(tmp_path: Path) -> None:
    path = tmp_path / "terms.txt"
    path.write_text("# a comment\nspider\n\nbarn owl\n", encoding="utf-8")
    assert BlockedTerms.from_file(path).terms == ("spider", "barn owl")


def test_an_empty_list_flags_nothing() -> None:
    assert not BlockedTerms([]).check_prompt(["anything"])


def test_obscuring_removes_detail() -> None:
    pixels = np.random.default_rng(0).integers(0, 256, (128, 128, 3), dtype=np.uint8)
    blurred = np.asarray(obscure(Image.fromarray(pixels)), dtype=np.float64)
    assert blurred.std() < pixels.std() / 5


def test_the_engine_blurs_a_flagged_prompt_and_says_so(cache_dir: object) -> None:
    engine = Engine.load("tiny", device="cpu", dtype="float32", content_filter=BlockedTerms(["spider"]))

    def request(text: str) -> GenerationRequest:
        return generation_request(
            text, negative_prompts=(WeightedPrompt("no spider", 1.0),), sampler=Sampler.EULER
        )

    clean, flagged = engine.generate([request("a cat"), request("a spider")])
    assert clean.finish_reason == FinishReason.SUCCESS  # a blocked term in a negative prompt is fine
    assert flagged.finish_reason == FinishReason.CONTENT_FILTERED
    assert flagged.seed == 1
    unfiltered = Engine(engine.pipe, engine.device, engine.dtype).generate([request("a spider")])[0].image
    assert np.asarray(flagged.image, dtype=np.float64).std() < np.asarray(unfiltered, dtype=np.float64).std()
