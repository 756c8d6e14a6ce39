"""Weighted, multiple and long prompts, through the engine's own encoding."""

from __future__ import annotations

import io
from collections.abc import Sequence

import numpy as np
import torch
from diffusers import StableDiffusionXLImg2ImgPipeline
from PIL import Image

from sdxl_bedrock.engine.pipeline import Engine
from sdxl_bedrock.engine.prompts import CLIP_WINDOW, chunk_token_ids, stack_rows
from sdxl_bedrock.schema import GenerationRequest, Sampler, WeightedPrompt
from tests.conftest import gradient_png
from tests.engine.conftest import as_array

LONG_PROMPT = ("a lighthouse on a cliff above a stormy sea at dusk, oil painting, " * 40)[:2000]


def request(
    prompts: Sequence[tuple[str, float]], negatives: Sequence[tuple[str, float]] = (), seed: int = 4
) -> GenerationRequest:
    return GenerationRequest(
        prompts=tuple(WeightedPrompt(text, weight) for text, weight in prompts),
        negative_prompts=tuple(WeightedPrompt(text, weight) for text, weight in negatives),
        width=64,
        height=64,
        seed=seed,
        steps=10,
        cfg_scale=7.0,
        sampler=Sampler.EULER,
        denoise_from=0.8,
        init_image=Image.open(io.BytesIO(gradient_png(64, 64))).convert("RGB"),
    )


def encoded(engine: Engine, *requests: GenerationRequest) -> tuple[torch.Tensor, torch.Tensor]:
    """The batch's positive conditioning as the UNet receives it: tokens and pooled embedding."""
    with torch.inference_mode():
        conditionings = [row.conditioning for row in engine.start(list(requests))]
    assert all(conditioning is not None for conditioning in conditionings)
    positives = [conditioning.positive for conditioning in conditionings if conditioning is not None]
    empty_chunk = next(c.empty_chunk for c in conditionings if c is not None)
    stacked = stack_rows(positives, empty_chunk)
    return stacked.tokens, stacked.pooled


# -- chunking ------------------------------------------------------------------------------------------------


def test_a_short_prompt_is_one_chunk_wrapped_and_padded() -> None:
    assert chunk_token_ids([5, 6], bos=1, eos=2, pad=0) == [[1, 5, 6, 2, *[0] * 73]]
    assert chunk_token_ids([], bos=1, eos=2, pad=0) == [[1, 2, *[0] * 75]]


def test_a_long_prompt_is_split_into_chunks_of_75_tokens() -> None:
    chunks = chunk_token_ids(list(range(10, 170)), bos=1, eos=2, pad=0)  # 160 tokens
    assert [len(chunk) for chunk in chunks] == [CLIP_WINDOW] * 3
    assert chunks[0] == [1, *range(10, 85), 2]
    assert chunks[1] == [1, *range(85, 160), 2]
    assert chunks[2] == [1, *range(160, 170), 2, *[0] * 65]


def test_a_prompt_of_up_to_75_tokens_encodes_exactly_as_diffusers(
    engine: Engine, reference_pipe: StableDiffusionXLImg2ImgPipeline
) -> None:
    text = "a red fox in the snow, " * 10  # 70 tokens
    with torch.inference_mode():
        ours = engine.prompts.encode_texts([text])[0]
    theirs, _, pooled, _ = reference_pipe.encode_prompt(text, do_classifier_free_guidance=False)
    assert ours.tokens.shape == theirs[0].shape == (CLIP_WINDOW, theirs.shape[-1])
    assert torch.allclose(ours.tokens, theirs[0], atol=1e-5)
    assert torch.allclose(ours.pooled, pooled[0], atol=1e-5)


def test_a_2000_character_prompt_is_encoded_whole_in_chunks(
    engine: Engine, reference_pipe: StableDiffusionXLImg2ImgPipeline
) -> None:
    with torch.inference_mode():
        ours = engine.prompts.encode_texts([LONG_PROMPT])[0]
    assert ours.chunks > 4
    # The first chunk, and the pooled embedding taken from it, are what diffusers makes of the prompt cut
    # at 75 tokens.
    theirs, _, pooled, _ = reference_pipe.encode_prompt(LONG_PROMPT, do_classifier_free_guidance=False)
    assert torch.allclose(ours.tokens[:CLIP_WINDOW], theirs[0], atol=1e-5)
    assert torch.allclose(ours.pooled, pooled[0], atol=1e-5)
    # The rest is not dropped: a different ending changes the conditioning.
    with torch.inference_mode():
        changed = engine.prompts.encode_texts([LONG_PROMPT[:-40] + " and a purple dragon flying overhead"])[0]
    assert not torch.allclose(ours.tokens, changed.tokens)


def test_a_2000_character_prompt_makes_an_image(engine: Engine) -> None:
    image = engine.generate([request([(LONG_PROMPT, 1.0)], [(LONG_PROMPT[:300], 1.0)])])[0].image
    assert image.size == (64, 64)


def test_a_short_prompt_gives_the_same_image_beside_a_long_one(engine: Engine) -> None:
    alone = engine.generate([request([("a cat", 1.0)])])[0].image
    batch = engine.generate([request([(LONG_PROMPT, 1.0)], seed=8), request([("a cat", 1.0)])])
    assert np.abs(as_array(alone) - as_array(batch[1].image)).max() <= 1


# -- weights -------------------------------------------------------------------------------------------------


def test_a_prompt_of_weight_zero_changes_nothing(engine: Engine) -> None:
    tokens, pooled = encoded(engine, request([("a cat", 1.0)]))
    weighted_tokens, weighted_pooled = encoded(engine, request([("a cat", 1.0), (LONG_PROMPT, 0.0)]))
    # Equal up to float rounding: the text encoder sees a different batch of texts.
    assert torch.allclose(tokens, weighted_tokens, atol=1e-6)
    assert torch.allclose(pooled, weighted_pooled, atol=1e-6)


def test_two_identical_prompts_equal_one(engine: Engine) -> None:
    tokens, pooled = encoded(engine, request([("a cat", 1.0)]))
    twice_tokens, twice_pooled = encoded(engine, request([("a cat", 1.0), ("a cat", 1.0)]))
    assert torch.allclose(tokens, twice_tokens, atol=1e-6)
    assert torch.allclose(pooled, twice_pooled, atol=1e-6)


def test_weights_blend_prompts_in_proportion(engine: Engine) -> None:
    cat, _ = encoded(engine, request([("a cat", 1.0)]))
    dog, _ = encoded(engine, request([("a dog", 1.0)]))
    blend, _ = encoded(engine, request([("a cat", 3.0), ("a dog", 1.0)]))
    assert torch.allclose(blend, 0.75 * cat + 0.25 * dog, atol=1e-5)


def test_a_negative_prompt_changes_the_image(engine: Engine) -> None:
    plain = engine.generate([request([("a cat", 1.0)])])[0].image
    negative = engine.generate([request([("a cat", 1.0)], [("blurry, dark", 1.0)])])[0].image
    assert np.abs(as_array(plain) - as_array(negative)).max() > 1


def test_a_text_the_two_tokenizers_cut_into_different_chunk_counts_is_encoded(engine: Engine) -> None:
    # The tiny model's two tokenizers have different vocabularies: the first reads "!?" as one token, the
    # second as two, so 60 of them are one chunk for the first and two for the second.
    text = "!?" * 60
    counts = [
        len(tokenizer([text], add_special_tokens=False).input_ids[0])
        for tokenizer in (engine.pipe.tokenizer, engine.pipe.tokenizer_2)
    ]
    assert counts[0] <= 75 < counts[1]
    with torch.inference_mode():
        encoded = engine.prompts.encode_texts([text])[0]
    assert encoded.chunks == 2
    image = engine.generate([request([(text, 1.0)], [])])[0].image
    assert image.size == (64, 64)
