"""Models: offline tokenizers, the tiny SDXL, the shipped SDXL base configs, resolving and loading specs."""

from __future__ import annotations

import filecmp
import shutil
import threading
from pathlib import Path

import numpy as np
import pytest
import torch
from diffusers import (
    AutoencoderKL,
    EulerDiscreteScheduler,
    StableDiffusionXLImg2ImgPipeline,
    UNet2DConditionModel,
)
from diffusers.loaders.single_file_utils import convert_ldm_unet_checkpoint, convert_ldm_vae_checkpoint
from PIL import Image
from safetensors.torch import load_file
from transformers import CLIPTextConfig, CLIPTokenizer

from sdxl_bedrock.engine import clip_vocab, model_cache, models, random_models, sdxl_base_config, tiny
from sdxl_bedrock.engine.models import ModelSource, load_pipeline, resolve_model
from tests.engine import single_file

A_PHOTO_OF_A_CAT = [49406, 320, 1125, 539, 320, 2368, 49407]
# The published sizes of SDXL 1.0 base's components.
SDXL_PARAMETER_COUNTS = {
    "unet": 2_567_463_684,
    "vae": 83_653_863,
    "text_encoder": 123_060_480,
    "text_encoder_2": 694_659_840,
}
EXPECTED_SCHEDULER = {
    "beta_start": 0.00085,
    "beta_end": 0.012,
    "beta_schedule": "scaled_linear",
    "num_train_timesteps": 1000,
    "steps_offset": 1,
    "timestep_spacing": "leading",
    "prediction_type": "epsilon",
    "interpolation_type": "linear",
    "use_karras_sigmas": False,
}


@pytest.fixture(scope="module")
def cache_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("sdxl-bedrock-cache")


@pytest.fixture(scope="module")
def tiny_folder(cache_root: Path) -> Path:
    return tiny.tiny_model_path(cache_root)


@pytest.fixture(scope="module", params=sorted(tiny.EMBEDDED_MODELS))
def embedded_folder(request: pytest.FixtureRequest, cache_root: Path) -> Path:
    """Each embedded model's folder (tiny, micro): what holds for one holds for both."""
    return tiny.EMBEDDED_MODELS[request.param].path(cache_root)


@pytest.fixture
def cache_env(cache_root: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv(model_cache.CACHE_ENV_VAR, str(cache_root))
    return cache_root


@pytest.fixture(scope="module")
def base_config(cache_root: Path) -> Path:
    return sdxl_base_config.sdxl_base_config_path(cache_root)


def gradient_image(size: int = 64) -> Image.Image:
    ramp = np.linspace(0, 255, size, dtype=np.float32)
    pixels = np.stack(
        [ramp[None, :].repeat(size, 0), ramp[:, None].repeat(size, 1), 255 - ramp[None, :].repeat(size, 0)],
        -1,
    )
    return Image.fromarray(pixels.astype(np.uint8))


def small_img2img(pipe: StableDiffusionXLImg2ImgPipeline) -> np.ndarray:
    result = pipe(
        "a photo of a cat",
        image=gradient_image(),
        num_inference_steps=4,
        strength=0.75,
        guidance_scale=7.0,
        generator=torch.Generator().manual_seed(0),
        output_type="np",
    )
    return result.images[0]


# --- tokenizers -------------------------------------------------------------------------------------


def test_clip_vocab_has_clips_layout() -> None:
    vocab = clip_vocab.clip_vocab()
    assert len(vocab) == 49408
    assert len(clip_vocab.clip_merges()) == 48894
    assert vocab["!"] == 0
    assert vocab["a</w>"] == 320
    assert vocab["in"] == 512  # the first merge, "i n"
    assert vocab["<|startoftext|>"] == 49406
    assert vocab["<|endoftext|>"] == 49407


@pytest.mark.parametrize(
    ("folder", "pad_token", "pad_id"), [("tokenizer", "<|endoftext|>", 49407), ("tokenizer_2", "!", 0)]
)
def test_sdxl_tokenizers_give_clips_ids(tmp_path: Path, folder: str, pad_token: str, pad_id: int) -> None:
    sdxl_base_config.write_sdxl_tokenizers(tmp_path)

    tokenizer = CLIPTokenizer.from_pretrained(tmp_path / folder, local_files_only=True)

    assert tokenizer.model_max_length == 77
    assert tokenizer.pad_token == pad_token
    assert tokenizer("a photo of a cat").input_ids == A_PHOTO_OF_A_CAT
    padded = tokenizer("a photo of a cat", padding="max_length", max_length=77).input_ids
    assert padded == A_PHOTO_OF_A_CAT + [pad_id] * 70


# --- the tiny model ---------------------------------------------------------------------------------


def test_embedded_models_are_sdxl_shaped(embedded_folder: Path) -> None:
    pipe = StableDiffusionXLImg2ImgPipeline.from_pretrained(embedded_folder, local_files_only=True)

    unet, vae = pipe.unet.config, pipe.vae.config
    hidden_1, hidden_2 = pipe.text_encoder.config.hidden_size, pipe.text_encoder_2.config.hidden_size
    assert unet.addition_embed_type == "text_time"
    assert unet.cross_attention_dim == hidden_1 + hidden_2
    assert unet.projection_class_embeddings_input_dim == (
        6 * unet.addition_time_embed_dim + pipe.text_encoder_2.config.projection_dim
    )
    assert pipe.vae_scale_factor == 8
    assert (vae.latent_channels, vae.scaling_factor, vae.force_upcast) == (4, 0.13025, True)
    assert isinstance(pipe.scheduler, EulerDiscreteScheduler)
    assert pipe.config.force_zeros_for_empty_prompt is True
    assert pipe.config.requires_aesthetics_score is False


def test_embedded_models_run_img2img(embedded_folder: Path) -> None:
    pipe = StableDiffusionXLImg2ImgPipeline.from_pretrained(embedded_folder, local_files_only=True)
    pipe.set_progress_bar_config(disable=True)

    image = small_img2img(pipe)

    assert image.shape == (64, 64, 3)
    assert np.isfinite(image).all()
    assert image.std() > 0.01


def test_building_twice_writes_identical_files(tmp_path: Path) -> None:
    tiny.build_tiny_model(tmp_path / "a")
    tiny.build_tiny_model(tmp_path / "b")

    files = sorted(path.relative_to(tmp_path / "a") for path in (tmp_path / "a").rglob("*") if path.is_file())
    assert any(path.suffix == ".safetensors" for path in files)
    _, mismatched, errors = filecmp.cmpfiles(tmp_path / "a", tmp_path / "b", files, shallow=False)
    assert (mismatched, errors) == ([], [])


def test_building_leaves_the_callers_random_state_alone(tmp_path: Path) -> None:
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)

    tiny.build_tiny_model(tmp_path / "tiny")

    assert torch.equal(torch.rand(3), expected)


def test_micro_model_has_the_tiny_models_interfaces(tiny_folder: Path, cache_root: Path) -> None:
    micro = StableDiffusionXLImg2ImgPipeline.from_pretrained(tiny.MICRO_MODEL.path(cache_root))
    same = StableDiffusionXLImg2ImgPipeline.from_pretrained(tiny_folder)

    def config(pipe: StableDiffusionXLImg2ImgPipeline, name: str) -> dict[str, object]:
        return {k: v for k, v in getattr(pipe, name).config.to_dict().items() if k != "_name_or_path"}

    for name in ("text_encoder", "text_encoder_2"):
        assert config(micro, name) == config(same, name)
    for key in ("in_channels", "out_channels", "cross_attention_dim", "addition_time_embed_dim"):
        assert micro.unet.config[key] == same.unet.config[key]
    assert micro.vae_scale_factor == same.vae_scale_factor == 8
    assert micro.vae.config.latent_channels == same.vae.config.latent_channels
    assert sum(p.numel() for p in micro.unet.parameters()) < sum(p.numel() for p in same.unet.parameters())


def test_embedded_model_names_are_the_librarys_built_in_ones() -> None:
    from sdxl_bedrock.library import BUILT_IN_MODELS

    assert {name for name, kind in BUILT_IN_MODELS.items() if kind == "embedded"} == set(tiny.EMBEDDED_MODELS)


def test_tiny_model_path_is_cached_and_versioned(tiny_folder: Path, cache_root: Path) -> None:
    assert tiny.tiny_model_path(cache_root) == tiny_folder
    assert tiny_folder.parent == cache_root
    assert tiny_folder.name == f"tiny-sdxl-{tiny.tiny_model_version()}"
    assert not list(cache_root.glob(".*partial"))


def test_default_cache_root_follows_the_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv(model_cache.CACHE_ENV_VAR, str(tmp_path))
    assert model_cache.default_cache_root() == tmp_path
    monkeypatch.delenv(model_cache.CACHE_ENV_VAR)
    assert model_cache.default_cache_root() == Path.home() / ".cache" / "sdxl-bedrock"


# --- building once, across racing builders -------------------------------------------------------------


def test_build_once_loser_of_a_race_uses_the_winners_folder(tmp_path: Path) -> None:
    target = tmp_path / "model"

    def build_while_another_finishes_first(folder: Path) -> None:
        (folder / "marker").write_text("loser")
        target.mkdir()
        (target / "marker").write_text("winner")

    assert model_cache.build_once(target, build_while_another_finishes_first) == target
    assert (target / "marker").read_text() == "winner"
    assert [path.name for path in tmp_path.iterdir()] == ["model"]


def test_build_once_from_many_threads_builds_one_complete_folder(tmp_path: Path) -> None:
    target = tmp_path / "model"
    everyone_started = threading.Barrier(6)

    def build(folder: Path) -> None:
        everyone_started.wait(timeout=10)
        (folder / "weights").write_bytes(b"x" * 100_000)

    results: list[Path] = []
    threads = [
        threading.Thread(target=lambda: results.append(model_cache.build_once(target, build)))
        for _ in range(6)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert results == [target] * 6
    assert (target / "weights").stat().st_size == 100_000
    assert [path.name for path in tmp_path.iterdir()] == ["model"]


def test_build_once_leaves_nothing_behind_when_the_build_fails(tmp_path: Path) -> None:
    def fail(folder: Path) -> None:
        (folder / "half-written").write_text("")
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError, match="disk full"):
        model_cache.build_once(tmp_path / "model", fail)
    assert list(tmp_path.iterdir()) == []


# --- shipped SDXL base configs --------------------------------------------------------------------------


def test_sdxl_base_configs_have_sdxl_values(base_config: Path) -> None:
    unet = UNet2DConditionModel.load_config(base_config, subfolder="unet", local_files_only=True)
    vae = AutoencoderKL.load_config(base_config, subfolder="vae", local_files_only=True)
    text_1 = CLIPTextConfig.from_pretrained(base_config, subfolder="text_encoder", local_files_only=True)
    text_2 = CLIPTextConfig.from_pretrained(base_config, subfolder="text_encoder_2", local_files_only=True)
    scheduler = EulerDiscreteScheduler.from_pretrained(
        base_config, subfolder="scheduler", local_files_only=True
    )

    assert unet["block_out_channels"] == [320, 640, 1280]
    assert unet["transformer_layers_per_block"] == [1, 2, 10]
    assert unet["attention_head_dim"] == [5, 10, 20]
    assert (unet["cross_attention_dim"], unet["addition_time_embed_dim"]) == (2048, 256)
    assert unet["projection_class_embeddings_input_dim"] == 2816 == 6 * 256 + text_2.projection_dim
    assert (unet["use_linear_projection"], unet["sample_size"]) == (True, 128)
    assert vae["block_out_channels"] == [128, 256, 512, 512]
    assert (vae["scaling_factor"], vae["sample_size"], vae["force_upcast"]) == (0.13025, 1024, True)
    assert (text_1.hidden_size, text_1.num_hidden_layers, text_1.num_attention_heads) == (768, 12, 12)
    assert (text_1.intermediate_size, text_1.hidden_act) == (3072, "quick_gelu")
    assert (text_2.hidden_size, text_2.num_hidden_layers, text_2.num_attention_heads) == (1280, 32, 20)
    assert (text_2.intermediate_size, text_2.hidden_act, text_2.projection_dim) == (5120, "gelu", 1280)
    assert text_1.hidden_size + text_2.hidden_size == unet["cross_attention_dim"]
    assert {key: scheduler.config[key] for key in EXPECTED_SCHEDULER} == EXPECTED_SCHEDULER


def test_sdxl_base_config_folder_is_a_complete_offline_pipeline_config(base_config: Path) -> None:
    index = StableDiffusionXLImg2ImgPipeline.load_config(base_config, local_files_only=True)
    pad_tokens = [
        CLIPTokenizer.from_pretrained(base_config / name, local_files_only=True).pad_token
        for name in sdxl_base_config.TOKENIZER_FOLDERS
    ]

    assert index["force_zeros_for_empty_prompt"] is True
    assert {name for name, value in index.items() if isinstance(value, list)} == {
        "scheduler",
        "text_encoder",
        "text_encoder_2",
        "tokenizer",
        "tokenizer_2",
        "unet",
        "vae",
    }
    assert pad_tokens == ["<|endoftext|>", "!"]


def test_sdxl_base_configs_build_sdxl_sized_models() -> None:
    models = random_models.random_sdxl_models(
        sdxl_base_config.sdxl_base_component_configs(), seed=0, device="meta"
    )

    counts = {name: sum(p.numel() for p in module.parameters()) for name, module in models.by_name().items()}
    assert counts == SDXL_PARAMETER_COUNTS


def test_original_layout_keys_round_trip_through_diffusers_at_full_size() -> None:
    configs = sdxl_base_config.sdxl_base_component_configs()
    with torch.device("meta"):
        unet = UNet2DConditionModel.from_config(random_models.without_private_keys(configs["unet"]))
        vae = AutoencoderKL.from_config(random_models.without_private_keys(configs["vae"]))
    unet_state, vae_state = unet.state_dict(), vae.state_dict()

    original_unet = single_file.prefixed(
        single_file.UNET_PREFIX, single_file.unet_to_original(unet_state, configs["unet"])
    )
    original_vae = single_file.prefixed(
        single_file.VAE_PREFIX, single_file.vae_to_original(vae_state, configs["vae"])
    )

    # Key names and counts of Stability's sd_xl_base_1.0.safetensors.
    assert (len(original_unet), len(original_vae)) == (1680, 248)
    assert {
        "model.diffusion_model.input_blocks.3.0.op.weight",
        "model.diffusion_model.input_blocks.8.1.transformer_blocks.9.attn2.to_k.weight",
        "model.diffusion_model.middle_block.1.proj_in.weight",
        "model.diffusion_model.output_blocks.2.2.conv.weight",
        "model.diffusion_model.output_blocks.8.0.skip_connection.weight",
        "model.diffusion_model.label_emb.0.0.weight",
    } <= set(original_unet)
    assert {
        "first_stage_model.encoder.mid.attn_1.q.weight",
        "first_stage_model.decoder.up.3.upsample.conv.weight",
        "first_stage_model.decoder.up.0.block.0.nin_shortcut.weight",
    } <= set(original_vae)
    back_unet = convert_ldm_unet_checkpoint(original_unet, dict(unet.config))
    back_vae = convert_ldm_vae_checkpoint(original_vae, dict(vae.config))
    assert {key: value.shape for key, value in back_unet.items()} == {
        k: v.shape for k, v in unet_state.items()
    }
    assert {key: value.shape for key, value in back_vae.items()} == {k: v.shape for k, v in vae_state.items()}


# --- resolving specs --------------------------------------------------------------------------------


def test_resolve_tiny(cache_env: Path, tiny_folder: Path) -> None:
    assert resolve_model("tiny") == ModelSource("tiny", "embedded", tiny_folder)
    assert resolve_model("micro") == ModelSource("micro", "embedded", tiny.MICRO_MODEL.path(cache_env))


def test_resolve_sdxl_random(cache_env: Path, base_config: Path) -> None:
    assert resolve_model("sdxl-random") == ModelSource("sdxl-random", "sdxl-random", base_config)


def test_resolve_diffusers_folder(tiny_folder: Path) -> None:
    assert resolve_model(str(tiny_folder)) == ModelSource(str(tiny_folder), "diffusers-folder", tiny_folder)


def test_resolve_single_file(cache_env: Path, base_config: Path, tmp_path: Path, tiny_folder: Path) -> None:
    checkpoint = tmp_path / "model.safetensors"
    checkpoint.write_bytes(b"")

    assert resolve_model(str(checkpoint)).kind == "single-file"
    assert resolve_model(str(checkpoint)).config == base_config
    assert resolve_model(str(checkpoint), single_file_config=tiny_folder).config == tiny_folder


def test_resolve_repo_id_in_the_hugging_face_cache(
    tiny_folder: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path))
    commit = "0123456789abcdef0123456789abcdef01234567"
    repo = tmp_path / "models--acme--tiny-sdxl"
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(commit)
    shutil.copytree(tiny_folder, repo / "snapshots" / commit)

    source = resolve_model("acme/tiny-sdxl")

    assert source == ModelSource("acme/tiny-sdxl", "hf-cache", repo / "snapshots" / commit)
    assert load_pipeline(source).unet.config.block_out_channels == tiny.TINY_UNET_CONFIG["block_out_channels"]


@pytest.mark.parametrize("spec", ["acme/not-cached", "no-such-model", "/no/such/model.safetensors", "a/b/c"])
def test_resolve_unknown_spec_says_what_was_tried(
    spec: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path))
    with pytest.raises(
        ValueError, match=r"unknown model .*Tried: the names 'tiny', 'micro' and 'sdxl-random'.*local"
    ):
        resolve_model(spec)


def test_resolve_existing_path_that_is_not_a_model(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="neither a diffusers folder"):
        resolve_model(str(tmp_path))


# --- loading ----------------------------------------------------------------------------------------


def test_load_pipeline_tiny(cache_env: Path, tiny_folder: Path) -> None:
    pipe = load_pipeline("tiny")

    assert isinstance(pipe, StableDiffusionXLImg2ImgPipeline)
    assert pipe.watermark is None
    assert pipe._progress_bar_config == {"disable": True}
    assert pipe.unet.dtype == torch.float32


def test_single_file_checkpoint_loads_the_same_weights(tiny_folder: Path, tmp_path: Path) -> None:
    checkpoint = tmp_path / "tiny-sdxl.safetensors"
    single_file.export_single_file(tiny_folder, checkpoint)
    keys = load_file(checkpoint).keys()
    assert all(
        key.startswith(("model.diffusion_model.", "first_stage_model.", "conditioner.")) for key in keys
    )

    from_folder = load_pipeline(str(tiny_folder))
    from_file = load_pipeline(str(checkpoint), single_file_config=tiny_folder)

    for name in ("unet", "vae", "text_encoder", "text_encoder_2"):
        expected, loaded = getattr(from_folder, name).state_dict(), getattr(from_file, name).state_dict()
        assert loaded.keys() == expected.keys(), name
        assert all(torch.equal(loaded[key], expected[key]) for key in expected), name
    assert from_file.watermark is None
    assert np.array_equal(small_img2img(from_file), small_img2img(from_folder))


def test_load_sdxl_random_builds_from_the_sdxl_configs(
    cache_env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Full size is 2.6B parameters; the wiring is the same with the tiny configs.
    monkeypatch.setattr(models, "sdxl_base_component_configs", tiny.tiny_component_configs)

    pipe = load_pipeline("sdxl-random")

    assert pipe.unet.config.block_out_channels == tiny.TINY_UNET_CONFIG["block_out_channels"]
    assert pipe.tokenizer_2.pad_token == "!"
    assert pipe.scheduler.config.timestep_spacing == "leading"
    assert np.isfinite(small_img2img(pipe)).all()


@pytest.mark.parametrize("name", sorted(tiny.EMBEDDED_MODELS))
def test_model_path_prints_each_embedded_models_folder(
    name: str, cache_env: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from sdxl_bedrock.cli import build_parser

    args = build_parser().parse_args(["model-path", name])
    assert args.run(args) == 0
    assert capsys.readouterr().out.strip() == str(tiny.EMBEDDED_MODELS[name].path(cache_env))
