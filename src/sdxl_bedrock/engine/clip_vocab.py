"""CLIP's BPE vocabulary, vendored, and the tokenizer files derived from it, so no folder needs the Hub.

`vocab/bpe_simple_vocab_16e6.txt.gz` is the merge list OpenAI's CLIP ships; vocab.json and merges.txt are
what transformers' CLIPTokenizer reads, written here exactly as openai/clip-vit-large-patch14 has them.
"""

from __future__ import annotations

import gzip
import json
from functools import cache
from pathlib import Path

from transformers.convert_slow_tokenizer import bytes_to_unicode

BPE_VOCAB_FILE = Path(__file__).parent / "vocab" / "bpe_simple_vocab_16e6.txt.gz"
# CLIP's vocabulary is 49408 tokens: 256 bytes, 256 bytes ending a word, the merges and two specials.
CLIP_MERGE_COUNT = 49152 - 256 - 2
CLIP_SPECIAL_TOKENS = ("<|startoftext|>", "<|endoftext|>")


@cache
def clip_merges() -> tuple[str, ...]:
    """The BPE merges, "a b" per entry, exactly the lines CLIP's simple_tokenizer reads."""
    lines = gzip.decompress(BPE_VOCAB_FILE.read_bytes()).decode("utf-8").split("\n")
    return tuple(lines[1 : CLIP_MERGE_COUNT + 1])


@cache
def clip_vocab() -> dict[str, int]:
    """Token -> id, as OpenAI CLIP builds it: bytes, bytes + </w>, merged pairs, then the two specials."""
    alphabet = list(bytes_to_unicode().values())
    tokens = [
        *alphabet,
        *(char + "</w>" for char in alphabet),
        *(merge.replace(" ", "") for merge in clip_merges()),
        *CLIP_SPECIAL_TOKENS,
    ]
    return {token: index for index, token in enumerate(tokens)}


def write_clip_vocab_files(folder: Path) -> None:
    """vocab.json and merges.txt into `folder` (created if missing)."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "vocab.json").write_text(json.dumps(clip_vocab(), ensure_ascii=False), encoding="utf-8")
    merges = "#version: 0.2\n" + "\n".join(clip_merges()) + "\n"
    (folder / "merges.txt").write_text(merges, encoding="utf-8")
