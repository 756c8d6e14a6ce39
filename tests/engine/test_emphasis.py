"""Per-token emphasis (A1111's "Original" rule) on the engine's encoded prompt, and chunking by spans."""

from __future__ import annotations

import numpy as np
import torch

from sdxl_bedrock.engine.pipeline import Engine
from sdxl_bedrock.engine.prompt_encoding import PENULTIMATE
from sdxl_bedrock.engine.prompts import (
    CHUNK_TOKENS,
    CLIP_WINDOW,
    chunk_spans,
    chunk_token_ids,
    emphasize,
    tokenize_prompts,
)
from sdxl_bedrock.schema import PromptSpan, WeightedPrompt
from tests.engine.conftest import as_array, generation_request


def test_one_plain_span_chunks_as_plain_text() -> None:
    ids = list(range(10, 170))
    chunks = chunk_spans([(ids, 1.0, False)], bos=1, eos=2, pad=0)
    assert chunks.token_ids == chunk_token_ids(ids, bos=1, eos=2, pad=0)
    assert all(factor == 1.0 for factors in chunks.emphasis for factor in factors)
    assert chunk_spans([], bos=1, eos=2, pad=0).token_ids == [[1, 2, *[0] * CHUNK_TOKENS]]


def test_spans_keep_their_emphasis_and_a_break_pads_the_chunk() -> None:
    chunks = chunk_spans([([5, 6], 1.0, False), ([7], 1.5, False), ([8, 9], 0.5, True)], bos=1, eos=2, pad=0)
    assert chunks.token_ids == [[1, 5, 6, 7, 2, *[0] * 72], [1, 8, 9, 2, *[0] * 73]]
    assert chunks.emphasis == [[1.0, 1.0, 1.0, 1.5, 1.0, *[1.0] * 72], [1.0, 0.5, 0.5, 1.0, *[1.0] * 73]]
    # A break first makes an empty chunk, as A1111's; one last makes none.
    leading = chunk_spans([([5], 1.0, True)], bos=1, eos=2, pad=0).token_ids
    assert leading == [[1, 2, *[0] * 75], [1, 5, 2, *[0] * 74]]
    trailing = chunk_spans([([5], 1.0, False), ([], 1.0, True)], bos=1, eos=2, pad=0).token_ids
    assert trailing == [[1, 5, 2, *[0] * 74]]


def test_a_span_longer_than_a_chunk_carries_its_emphasis_across() -> None:
    chunks = chunk_spans([(list(range(100)), 1.3, False)], bos=1, eos=2, pad=0)
    assert [len(chunk) for chunk in chunks.token_ids] == [CLIP_WINDOW, CLIP_WINDOW]
    assert chunks.emphasis[0][1:76] == [1.3] * 75
    assert chunks.emphasis[1][1:26] == [1.3] * 25 and chunks.emphasis[1][26:] == [1.0] * 51


def test_emphasize_scales_tokens_and_restores_each_chunks_mean() -> None:
    generator = torch.Generator().manual_seed(0)
    hidden = torch.randn(3, CLIP_WINDOW, 16, generator=generator) + 0.3
    factors = [[1.0] * CLIP_WINDOW, [1.0, 1.5, *[1.0] * 75], [1.0, 0.5, 1.2, *[1.0] * 74]]
    out = emphasize(hidden, factors)
    assert torch.equal(out[0], hidden[0]), "a chunk without emphasis is untouched"
    for row in (1, 2):
        multiplied = hidden[row] * torch.tensor(factors[row])[:, None]
        expected = multiplied * (hidden[row].mean() / multiplied.mean())
        assert torch.allclose(out[row], expected, atol=1e-6)
        assert torch.allclose(out[row].mean(), hidden[row].mean(), atol=1e-6)


def test_spans_tokenize_as_the_whole_text(engine: Engine) -> None:
    spans = (PromptSpan("a photo of "), PromptSpan("a cat", 1.5), PromptSpan(" on a sofa"))
    for tokenizer in (engine.pipe.tokenizer, engine.pipe.tokenizer_2):
        (by_spans, whole) = tokenize_prompts(tokenizer, [spans, "a photo of a cat on a sofa"])
        assert by_spans.token_ids == whole.token_ids


def test_the_encoded_prompt_is_emphasised_per_encoder_and_the_pooled_one_is_not(engine: Engine) -> None:
    spans = (PromptSpan("a photo of "), PromptSpan("a cat", 1.5), PromptSpan(" on a sofa"))
    with torch.inference_mode():
        plain, weighted = engine.prompts.encode_texts(["a photo of a cat on a sofa", spans])
    (chunks,) = tokenize_prompts(engine.pipe.tokenizer, [spans])
    first_width = engine.pipe.text_encoder.config.hidden_size
    expected = torch.cat(
        [
            emphasize(plain.tokens[None, :, :first_width], chunks.emphasis)[0],
            emphasize(plain.tokens[None, :, first_width:], chunks.emphasis)[0],
        ],
        dim=-1,
    )
    assert chunks.emphasis[0][1:4] == [1.0, 1.0, 1.0] and 1.5 in chunks.emphasis[0]
    assert torch.allclose(weighted.tokens, expected, atol=1e-5)
    assert not torch.allclose(weighted.tokens, plain.tokens, atol=1e-3)
    assert torch.equal(weighted.pooled, plain.pooled)


def test_the_cache_keys_on_the_emphasis(engine: Engine) -> None:
    plain = WeightedPrompt("a cat", 1.0)
    same = WeightedPrompt("a cat", 1.0, (PromptSpan("a "), PromptSpan("cat")))
    stronger = WeightedPrompt("a cat", 1.0, (PromptSpan("a "), PromptSpan("cat", 1.4)))
    weaker = WeightedPrompt("a cat", 1.0, (PromptSpan("a "), PromptSpan("cat", 0.7)))
    broken = WeightedPrompt("a cat", 1.0, (PromptSpan("a "), PromptSpan("cat", starts_chunk=True)))
    assert plain.encoding_key() == same.encoding_key() == "a cat"
    assert len({stronger.encoding_key(), weaker.encoding_key(), broken.encoding_key(), "a cat"}) == 4
    with torch.inference_mode():
        first = engine.prompts.encode_texts([stronger.encoding_key()])[0]
        other = engine.prompts.encode_texts([weaker.encoding_key()])[0]
        chunked = engine.prompts.encode_texts([broken.encoding_key()])[0]
    assert not torch.allclose(first.tokens, other.tokens)
    assert chunked.chunks == 2
    assert engine.prompts.cache[PENULTIMATE, (), stronger.encoding_key()] is first


def test_emphasis_changes_the_image(engine: Engine) -> None:
    # Each alone (a batch may move a pixel by one level); the tiny random model barely reads its prompt, so
    # the emphasis is strong.
    spans = (PromptSpan("a "), PromptSpan("lighthouse", 3.0))
    (plain,) = engine.generate([generation_request("a lighthouse", seed=3)])
    (emphasised,) = engine.generate(
        [generation_request(prompts=(WeightedPrompt("a lighthouse", 1.0, spans),), seed=3)]
    )
    assert np.abs(as_array(plain.image) - as_array(emphasised.image)).max() > 1
