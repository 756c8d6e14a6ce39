"""LoRA adapters per row (engine/adapters.py): the image of a row with adapters is diffusers' own
(`load_lora_weights` + `set_adapters`), whatever adapters the rows it shares its ticks with carry."""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest
import torch

from sdxl_bedrock.engine.adapters import HostLoras, LoraRefused
from sdxl_bedrock.engine.pipeline import Engine
from sdxl_bedrock.errors import InvalidRequest
from sdxl_bedrock.schema import GenerationRequest, LoraUse, Sampler
from tests.engine.conftest import as_array, generation_request
from tests.library import loras as files

STEPS = 4


@pytest.fixture(scope="module")
def lora_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("loras")
    files.tiny_lora(folder / "ink.safetensors", seed=1)
    files.tiny_lora(folder / "kohya.safetensors", seed=2, format="kohya")
    files.tiny_lora(folder / "plain.safetensors", seed=3, text_encoders=False, conv=False)
    files.tiny_lora(folder / "third.safetensors", seed=4)
    files.nan_lora(folder / "nan.safetensors")
    files.huge_rank_lora(folder / "huge.safetensors", rank=1024)
    files.wrong_shape_lora(folder / "misfit.safetensors")
    files.dora_lora(folder / "dora.safetensors")
    files.dora_lora(folder / "kohya-dora.safetensors", format="kohya")
    return folder


def reader(folder: Path, **options: Any) -> HostLoras:
    def lookup(name: str) -> Any:
        path = folder / f"{name}.safetensors"
        if "/" in name or not path.is_file():
            raise LookupError(f"no LoRA {name!r}")
        return SimpleNamespace(filename=path)

    return HostLoras(lookup, max_rank=512, **options)


@pytest.fixture(scope="module")
def lora_engine(lora_dir: Path, cache_dir: object) -> Engine:
    return Engine.load("tiny", device="cpu", dtype="float32", loras=reader(lora_dir))


def request(*loras: LoraUse, seed: int = 1, **changes: Any) -> GenerationRequest:
    return generation_request("a lamp", seed=seed, steps=STEPS, sampler=Sampler.EULER, loras=loras, **changes)


def image(engine: Engine, *requests: GenerationRequest) -> list[np.ndarray]:
    return [as_array(generated.image) for generated in engine.generate(list(requests))]


def differs(first: np.ndarray, second: np.ndarray) -> int:
    return int(np.abs(first - second).max())


@pytest.mark.parametrize(
    ("names", "weights"),
    [(["ink"], [0.8]), (["kohya"], [1.0]), (["ink", "kohya"], [0.6, 0.9]), (["kohya", "plain"], [1.0, 0.5])],
)
def test_a_row_with_adapters_is_diffusers_own_image(
    lora_engine: Engine, reference_pipe: Any, lora_dir: Path, names: list[str], weights: list[float]
) -> None:
    """diffusers- and kohya-format LoRAs, text-encoder and conv parts included, one and two at a time."""
    uses = [LoraUse(name, weight, weight) for name, weight in zip(names, weights, strict=True)]
    ours = image(lora_engine, request(*uses))[0]
    theirs = files.diffusers_reference(
        reference_pipe,
        [(lora_dir / f"{name}.safetensors", weight) for name, weight in zip(names, weights, strict=True)],
        prompt="a lamp",
        seed=1,
        steps=STEPS,
    )
    assert differs(ours, as_array(theirs)) <= 1
    base = image(lora_engine, request())[0]
    assert np.abs(ours - base).mean() > 1, "the adapters change the image"


def test_unet_and_text_weights_apply_apart(lora_engine: Engine, reference_pipe: Any, lora_dir: Path) -> None:
    """A1111's te and unet multipliers: (unet 0.7, text 0.2) is diffusers' per-component weights."""
    ours = image(lora_engine, request(LoraUse("ink", unet_weight=0.7, text_weight=0.2)))[0]
    theirs = files.diffusers_reference(
        reference_pipe, [(lora_dir / "ink.safetensors", (0.7, 0.2))], prompt="a lamp", seed=1, steps=STEPS
    )
    assert differs(ours, as_array(theirs)) <= 1


def test_a_rows_image_does_not_depend_on_its_companions_adapters(lora_engine: Engine) -> None:
    """Rows with none, one, two adapters and other weights of the same adapter share every tick; each
    image equals the one it makes alone, within 1/255."""
    rows = [
        request(seed=5),
        request(LoraUse("ink", 0.8, 0.8), seed=6),
        request(LoraUse("ink", 0.3, 0.3), LoraUse("kohya", 1.0, 1.0), seed=7),
        request(LoraUse("plain", 1.0, 1.0), seed=8, cfg_scale=1.0),
        request(LoraUse("kohya", 0.5, 0.5), seed=9, init_image=None, denoise_from=0.6),
    ]
    together = image(lora_engine, *rows)
    for row, shared in zip(rows, together, strict=True):
        assert differs(shared, image(lora_engine, row)[0]) <= 1, row.loras


def test_a_weight_of_zero_is_the_base_image(lora_engine: Engine) -> None:
    base, zero = image(lora_engine, request(seed=3), request(LoraUse("ink", 0.0, 0.0), seed=3))
    assert differs(base, zero) <= 1


def test_the_prompt_cache_keeps_encodings_apart_by_adapters(lora_engine: Engine) -> None:
    """The same prompt with and without the text encoders' adapter parts is two encodings."""
    encoder = lora_engine.prompts
    plain = image(lora_engine, request(seed=2))[0]
    image(lora_engine, request(LoraUse("ink", unet_weight=0.0, text_weight=1.0), seed=2))
    again = image(lora_engine, request(seed=2))[0]
    assert differs(plain, again) == 0
    keys = {adapters for _, adapters, text in encoder.cache if text == "a lamp"}
    assert len(keys) >= 2


@pytest.mark.parametrize(
    ("name", "reason"),
    [
        ("nan", "non-finite"),
        ("huge", "rank 1024"),
        ("misfit", "does not fit"),
        ("dora", "DoRA"),
        ("kohya-dora", "DoRA"),
        ("../ink", "no LoRA"),
        ("missing", "no LoRA"),
    ],
)
def test_a_bad_adapter_is_refused_and_the_models_are_unchanged(
    lora_engine: Engine, name: str, reason: str
) -> None:
    base = image(lora_engine, request(seed=4))[0]
    with pytest.raises(InvalidRequest, match=reason):
        lora_engine.generate([request(LoraUse(name), seed=4)])
    assert differs(image(lora_engine, request(seed=4))[0], base) == 0


def test_a_refused_adapter_fails_only_its_own_row_in_the_batcher_stages(lora_engine: Engine) -> None:
    """start() raises for the group; the stage runner then runs it row by row (scheduler/stages.py): the
    good row, alone, starts."""
    with pytest.raises(LoraRefused):
        lora_engine.start([request(LoraUse("ink")), request(LoraUse("nan"))])
    rows = lora_engine.start([request(LoraUse("ink"))])
    assert rows[0].unet_adapters


def test_adapters_beyond_the_bounds_move_out_least_recently_used_first(
    lora_dir: Path, cache_dir: object
) -> None:
    """One on the device, one in host memory (on a CPU both are host memory): the third adapter drops the
    least recently used; an adapter a running row uses is never moved out, and images are unchanged."""
    engine = Engine.load(
        "tiny", device="cpu", dtype="float32", loras=reader(lora_dir), max_loaded_loras=1, max_host_loras=1
    )
    first = image(engine, request(LoraUse("ink"), seed=2))[0]
    image(engine, request(LoraUse("kohya"), seed=2))
    assert engine.adapters.resident() == {"ink": "host", "kohya": "device"}
    image(engine, request(LoraUse("third"), seed=2))
    assert engine.adapters.resident() == {"kohya": "host", "third": "device"}
    running = engine.start([request(LoraUse("kohya"), seed=2)])
    engine.start([request(LoraUse("ink"), seed=3)])
    assert "kohya" in engine.adapters.resident(), "a running row's adapter stays"
    engine.denoise(running)
    assert differs(image(engine, request(LoraUse("ink"), seed=2))[0], first) <= 1


def test_a_file_changed_on_disk_is_loaded_anew(tmp_path: Path, cache_dir: object) -> None:
    files.tiny_lora(tmp_path / "style.safetensors", seed=1)
    engine = Engine.load("tiny", device="cpu", dtype="float32", loras=reader(tmp_path))
    before = image(engine, request(LoraUse("style")))[0]
    files.tiny_lora(tmp_path / "style.safetensors", seed=2)
    stat = (tmp_path / "style.safetensors").stat()
    # A later copy: two writes within the clock's granularity may share an mtime.
    os.utime(tmp_path / "style.safetensors", ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))
    after = image(engine, request(LoraUse("style")))[0]
    assert differs(before, after) > 1
    assert len(engine.adapters.resident()) == 1


def test_the_reader_reads_off_the_calling_thread_and_says_when(lora_dir: Path) -> None:
    """ready() never blocks: it starts the read and answers False; the reader calls on_ready when done."""
    woken = []
    host = reader(lora_dir, on_ready=lambda: woken.append(True))
    try:
        uses = [LoraUse("ink"), LoraUse("kohya")]
        assert not host.ready(uses)
        for _ in range(600):
            if host.ready(uses):
                break
            torch.set_num_threads(torch.get_num_threads())  # nothing: lets the reader thread run
            import time

            time.sleep(0.05)
        assert host.ready(uses) and woken
        assert host.ready([LoraUse("missing")]), "an unknown name is ready: its row fails as it joins"
    finally:
        host.close()


def test_without_a_lora_library_a_request_with_adapters_is_refused(engine: Engine) -> None:
    with pytest.raises(InvalidRequest, match="--lora-dir"):
        engine.generate([dataclasses.replace(request(), loras=(LoraUse("ink"),))])


def test_runs_of_consecutive_rows() -> None:
    from sdxl_bedrock.engine.adapters import runs_of

    assert runs_of([0, 1, 2]) == ((0, 3),)
    assert runs_of([1, 4, 5, 7]) == ((1, 2), (4, 6), (7, 8))


def test_sliced_and_gathered_rows_give_the_same_image(
    lora_engine: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An adapter's rows are slices of the batch where they are a few runs, else gathered: the same deltas."""
    import sdxl_bedrock.engine.adapters as adapters

    rows = [request(seed=1), request(LoraUse("ink", 0.7, 0.7), seed=2), request(LoraUse("kohya"), seed=3)]
    sliced = image(lora_engine, *rows)
    monkeypatch.setattr(adapters, "MAX_SLICED_RUNS", 0)
    lora_engine._unet_plan = ((), None)
    gathered = image(lora_engine, *rows)
    for first, second in zip(sliced, gathered, strict=True):
        assert differs(first, second) <= 1
