"""A1111's "Clip skip" on SDXL with `sdxl_clip_l_skip` (modules/sd_hijack_clip.py at
AUTOMATIC1111/stable-diffusion-webui 00e09382cd85c77ac35545c7264855823dfc2eb1,
FrozenCLIPEmbedderForSDXLWithCustomWords.encode_with_transformers): the first encoder's hidden state
`hidden_states[-N]`, without the final layer norm; the second encoder keeps its penultimate layer."""

from __future__ import annotations

import numpy as np
import torch

from sdxl_bedrock.engine.pipeline import Engine
from tests.engine.conftest import as_array, generation_request

TEXT = "a red fox in the snow"


def hidden_states(engine: Engine, which: str, text: str = TEXT) -> tuple[torch.Tensor, ...]:
    pipe = engine.pipe
    tokenizer, encoder = (
        (pipe.tokenizer, pipe.text_encoder)
        if which == "first"
        else (
            pipe.tokenizer_2,
            pipe.text_encoder_2,
        )
    )
    ids = tokenizer(text, padding="max_length", max_length=77, truncation=True, return_tensors="pt")
    return tuple(encoder(ids.input_ids, output_hidden_states=True).hidden_states)


def test_the_first_encoders_layer_is_counted_from_its_output(engine: Engine) -> None:
    width = engine.pipe.text_encoder.config.hidden_size
    with torch.inference_mode():
        (default,) = engine.prompts.encode_texts([TEXT])
        (last,) = engine.prompts.encode_texts([TEXT], first_layer=1)
        (third,) = engine.prompts.encode_texts([TEXT], first_layer=3)
        first, second = hidden_states(engine, "first"), hidden_states(engine, "second")
    assert torch.allclose(default.tokens[:, :width], first[-2][0], atol=1e-5)
    assert torch.allclose(last.tokens[:, :width], first[-1][0], atol=1e-5)
    assert torch.allclose(third.tokens[:, :width], first[-3][0], atol=1e-5)
    for encoded in (default, last, third):
        assert torch.allclose(encoded.tokens[:, width:], second[-2][0], atol=1e-5)
        assert torch.equal(encoded.pooled, default.pooled)


def test_a_request_takes_its_layer_and_the_cache_keeps_layers_apart(engine: Engine) -> None:
    plain = generation_request(TEXT, seed=9, steps=4)
    skipped = generation_request(TEXT, seed=9, steps=4, first_encoder_layer=1)
    penultimate = generation_request(TEXT, seed=9, steps=4, first_encoder_layer=2)
    first, second, third, again = engine.generate([plain, skipped, penultimate, plain])
    assert np.array_equal(as_array(first.image), as_array(third.image)), "2 is SDXL's own layer"
    assert np.array_equal(as_array(first.image), as_array(again.image))
    assert np.abs(as_array(first.image) - as_array(second.image)).max() > 1
