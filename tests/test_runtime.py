"""The warm-up plan `serve` runs before it is ready: the --warmup shapes, then with --compile each size's
longer prompt lengths."""

from __future__ import annotations

from sdxl_bedrock.config import Settings
from sdxl_bedrock.runtime import warmup_steps


def test_compiled_warm_up_adds_each_sizes_longer_prompts_at_batch_one() -> None:
    settings = Settings(compile_unet=True, warmup_buckets="64x64:1,2;128x64:4", warmup_prompt_chunks=4)
    assert warmup_steps(settings) == [
        (64, 64, 1, 1),
        (64, 64, 2, 1),
        (128, 64, 4, 1),
        (64, 64, 1, 2),
        (64, 64, 1, 4),
        (128, 64, 1, 2),
        (128, 64, 1, 4),
    ]


def test_the_default_warms_prompts_of_up_to_32_chunks_and_only_with_compile() -> None:
    default = Settings(compile_unet=True, max_batch_size=2)
    assert [chunks for _, _, _, chunks in warmup_steps(default)] == [1, 1, 2, 4, 8, 16, 32]
    assert warmup_steps(Settings(compile_unet=True, warmup_prompt_chunks=1, max_batch_size=1)) == [
        (1024, 1024, 1, 1)
    ]
    assert warmup_steps(Settings(warmup_buckets="64x64:1")) == [(64, 64, 1, 1)]
