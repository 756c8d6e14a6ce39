"""What a prompt's length costs one SDXL UNet call: the figure `--warmup-prompt-chunks` is weighed by.

    python -m bench.prompt_lengths [--size 1024] [--chunks 1 2 4 8 16 32]

Builds SDXL 1.0 base's UNet from the shipped config on torch's `meta` device (no weights, no memory, no
GPU: the architecture decides the arithmetic) and counts, with torch.utils.flop_counter, the floating-point
operations of one UNet row at each prompt length, with the padding mask that compiled calls of more than
one chunk carry. Prints a Markdown table: TFLOPs a row, and the cost over a one-chunk prompt. Counted, not
timed: attention kernels differ in efficiency, so a GPU's time grows somewhat differently.
"""

from __future__ import annotations

import argparse
from typing import Any

from sdxl_bedrock.engine.prompts import CLIP_WINDOW


def meta_unet() -> Any:
    """SDXL base's UNet on the meta device."""
    import torch
    from diffusers import UNet2DConditionModel

    from sdxl_bedrock.engine.sdxl_base_config import load_sdxl_base_component_config

    with torch.device("meta"):
        return UNet2DConditionModel.from_config(load_sdxl_base_component_config("unet"))


def unet_flops(unet: Any, size: int, chunks: int) -> int:
    """Floating-point operations of one UNet row at `size` x `size` pixels and `chunks` prompt chunks."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    with torch.device("meta"):
        tokens = CLIP_WINDOW * chunks
        sample = torch.zeros(1, unet.config.in_channels, size // 8, size // 8)
        hidden_states = torch.zeros(1, tokens, unet.config.cross_attention_dim)
        mask = torch.ones(1, tokens) if chunks > 1 else None
        added = {"text_embeds": torch.zeros(1, 1280), "time_ids": torch.zeros(1, 6)}
        with FlopCounterMode(display=False) as counter, torch.inference_mode():
            unet(sample, torch.zeros(1), hidden_states, encoder_attention_mask=mask, added_cond_kwargs=added)
    return int(counter.get_total_flops())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=1024)
    parser.add_argument("--chunks", type=int, nargs="+", default=[1, 2, 4, 8, 16, 32])
    args = parser.parse_args()
    unet = meta_unet()
    counted = {chunks: unet_flops(unet, args.size, chunks) for chunks in args.chunks}
    baseline = counted[min(counted)]
    print(f"SDXL base UNet, one row at {args.size}x{args.size}, counted on the meta device\n")
    print("| prompt chunks | tokens | TFLOPs | over the shortest |")
    print("|---|---|---|---|")
    for chunks, flops in counted.items():
        print(f"| {chunks} | {chunks * CLIP_WINDOW} | {flops / 1e12:.2f} | {flops / baseline - 1:+.1%} |")


if __name__ == "__main__":
    main()
