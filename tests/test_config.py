"""Settings: one model for the `serve` flags, the SDXL_BEDROCK_* environment and Ray's args.

No server here: the model, the flags made from it and the precedence between flag, variable and default.
"""

from __future__ import annotations

import argparse
import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from pydantic import ValidationError

from sdxl_bedrock.cli import build_parser, explain, given_fields, option_of, run_serve, serve_settings
from sdxl_bedrock.config import ENV_PREFIX, Settings
from sdxl_bedrock.serve.ray_serve import SETTINGS_FIELDS, Scaling, settings_from_args

SECRET = "wJalrXUtnFEMI-K7MDENG-bPxRfiCYEXAMPLEKEY"
TOKEN = "sk-test-0123456789abcdef"


@pytest.fixture(autouse=True)
def no_settings_in_environment(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Each test sees only the SDXL_BEDROCK_* variables it sets (the model cache's is not a setting)."""
    for name in Settings.model_fields:
        monkeypatch.delenv(f"{ENV_PREFIX}{name.upper()}", raising=False)
    yield


def serve_args(*flags: str) -> argparse.Namespace:
    return build_parser().parse_args(["serve", *flags])


def test_the_defaults() -> None:
    settings = Settings()
    assert (settings.host, settings.port, settings.model) == ("127.0.0.1", 8080, "tiny")
    assert settings.request_timeout_s == 300
    assert (settings.max_batch_size, settings.max_wait_ms, settings.max_queue) == (8, 5.0, 64)
    assert settings.shutdown_timeout_s == 60
    assert settings.warmup_buckets == ()
    assert settings.access_keys == {} and settings.api_keys == frozenset()
    assert not settings.auth_enabled
    assert settings.scheme == "http"


def test_every_field_has_a_description_and_no_variable_is_the_model_caches() -> None:
    for name, field in Settings.model_fields.items():
        assert field.description, name
        assert f"{ENV_PREFIX}{name.upper()}" != "SDXL_BEDROCK_CACHE"


def test_a_flag_wins_over_its_variable_which_wins_over_the_default(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SDXL_BEDROCK_PORT", "9001")
    monkeypatch.setenv("SDXL_BEDROCK_MAX_QUEUE", "7")
    monkeypatch.setenv("SDXL_BEDROCK_RELAXED_SIZES", "true")
    monkeypatch.setenv("SDXL_BEDROCK_REQUEST_TIMEOUT_S", "12.5")
    settings = serve_settings(serve_args("--port", "9002", "--no-relaxed-sizes"))
    assert settings.port == 9002  # the flag
    assert settings.relaxed_sizes is False  # the flag, against a variable that says true
    assert settings.max_queue == 7  # the variable
    assert settings.request_timeout_s == 12.5
    assert settings.max_batch_size == 8  # the default


def test_the_old_flag_names_set_their_fields() -> None:
    settings = serve_settings(
        serve_args(
            *("--request-timeout", "0", "--shutdown-timeout", "5", "--compile", "--max-batch-size", "4"),
            *("--access-key", f"AKID1:{SECRET}", "--access-key", "AKID2:other", "--api-key", TOKEN),
            *("--device", "cpu", "--dtype", "float32", "--vae-dtype", "bfloat16", "--log-json"),
        )
    )
    assert settings.request_timeout_s is None  # 0: no limit
    assert settings.shutdown_timeout_s == 5
    assert settings.compile_unet is True
    assert settings.warmup_buckets == ((1024, 1024, 1), (1024, 1024, 2), (1024, 1024, 4))
    assert settings.access_keys == {"AKID1": SECRET, "AKID2": "other"}
    assert settings.api_keys == frozenset({TOKEN})
    assert (settings.device, settings.dtype, settings.vae_dtype) == ("cpu", "float32", "bfloat16")
    assert settings.log_json is True


def test_warmup_text_and_its_errors() -> None:
    settings = serve_settings(serve_args("--warmup", "1024x1024:1,2;832x1216"))
    assert settings.warmup_buckets == ((1024, 1024, 1), (1024, 1024, 2), (832, 1216, 1))
    with pytest.raises(ValidationError, match="'1024x' is not WIDTHxHEIGHT"):
        Settings(warmup_buckets="1024x")


def test_secrets_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SDXL_BEDROCK_ACCESS_KEYS", f"AKID1:{SECRET},AKID2:s2\nAKID3:s3")
    monkeypatch.setenv("SDXL_BEDROCK_API_KEYS", f"{TOKEN}, tok-2\n")
    settings = Settings()
    assert settings.access_keys == {"AKID1": SECRET, "AKID2": "s2", "AKID3": "s3"}
    assert settings.api_keys == frozenset({TOKEN, "tok-2"})
    assert settings.auth_enabled


def test_secrets_from_files_join_those_given_otherwise(tmp_path: Path) -> None:
    access, api = tmp_path / "access-keys", tmp_path / "api-keys"
    access.write_text(f"# SigV4 keys\n\nAKID1:{SECRET}\n  AKID2:with:colons  \n")
    api.write_text(f"# tokens\n{TOKEN}\n\n")
    settings = serve_settings(
        serve_args("--access-key-file", str(access), "--api-key-file", str(api), "--api-key", "tok-2")
    )
    assert settings.access_keys == {"AKID1": SECRET, "AKID2": "with:colons"}
    assert settings.api_keys == frozenset({TOKEN, "tok-2"})


def test_a_malformed_secret_line_names_the_file_and_line_never_the_secret(tmp_path: Path) -> None:
    access = tmp_path / "access-keys"
    access.write_text(f"AKID1:s1\n# comment\n{SECRET}\n")
    args = serve_args("--access-key-file", str(access))
    with pytest.raises(ValidationError) as raised:
        serve_settings(args)
    said = explain(raised.value, Settings, given_fields(args, Settings), ENV_PREFIX)
    assert said == f"sdxl-bedrock serve: --access-key-file: {access} line 3: wants ID:SECRET " + (
        "(an access key id, a colon, its secret key)"
    )
    assert SECRET not in str(raised.value)

    api = tmp_path / "api-keys"
    api.write_text(f"{TOKEN} {SECRET}\n")
    with pytest.raises(ValidationError) as raised:
        Settings(api_key_file=api)
    assert f"{api} line 1: a token is one word" in str(raised.value)
    assert SECRET not in str(raised.value) and TOKEN not in str(raised.value)


@pytest.mark.parametrize("option", ["--access-key-file", "--api-key-file"])
@pytest.mark.parametrize("text", ["", "# the keys go here\n\n"])
def test_a_key_file_without_keys_is_refused(tmp_path: Path, option: str, text: str) -> None:
    """The option turns auth on: a file that holds no key must not leave it off without a word."""
    keys = tmp_path / "keys"
    keys.write_text(text)
    args = serve_args(option, str(keys))
    with pytest.raises(ValidationError) as raised:
        serve_settings(args)
    said = explain(raised.value, Settings, given_fields(args, Settings), ENV_PREFIX)
    assert said.startswith(f"sdxl-bedrock serve: {option}: {keys} holds no ")


def test_a_malformed_secret_in_a_variable_or_flag_is_never_repeated(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SDXL_BEDROCK_ACCESS_KEYS", f"AKID1:s1,{SECRET}")
    args = serve_args()
    with pytest.raises(ValidationError) as raised:
        serve_settings(args)
    said = explain(raised.value, Settings, given_fields(args, Settings), ENV_PREFIX)
    assert said.startswith("sdxl-bedrock serve: SDXL_BEDROCK_ACCESS_KEYS: entry 2: wants ID:SECRET")
    assert SECRET not in str(raised.value)

    args = serve_args("--access-key", SECRET)
    with pytest.raises(ValidationError) as raised:
        serve_settings(args)
    said = explain(raised.value, Settings, given_fields(args, Settings), ENV_PREFIX)
    assert said.startswith("sdxl-bedrock serve: --access-key: entry 1: wants ID:SECRET")
    assert SECRET not in str(raised.value) and SECRET not in said


def test_repr_holds_no_secret(tmp_path: Path) -> None:
    api = tmp_path / "api-keys"
    api.write_text("tok-from-file\n")
    settings = Settings(access_keys={"AKID1": SECRET}, api_keys=frozenset({TOKEN}), api_key_file=api)
    for shown in (repr(settings), str(settings)):
        assert SECRET not in shown and TOKEN not in shown and "tok-from-file" not in shown
        assert "api_key_file" in shown  # the file's name is no secret
    assert settings.access_keys["AKID1"] == SECRET  # what the auth code reads: plain strings
    assert TOKEN in settings.api_keys and "tok-from-file" in settings.api_keys


def test_bad_values_are_refused_in_words(monkeypatch: pytest.MonkeyPatch) -> None:
    for flags, said in [
        (("--port", "0"), "sdxl-bedrock serve: --port: Input should be greater than or equal to 1"),
        (
            ("--max-batch-size", "zero"),
            "sdxl-bedrock serve: --max-batch-size: Input should be a valid integer",
        ),
        (("--tls-cert", "cert.pem"), "sdxl-bedrock serve: --tls-cert and --tls-key go together"),
    ]:
        args = serve_args(*flags)
        with pytest.raises(ValidationError) as raised:
            serve_settings(args)
        assert explain(raised.value, Settings, given_fields(args, Settings), ENV_PREFIX).startswith(said)
    monkeypatch.setenv("SDXL_BEDROCK_DEVICE", "tpu")
    args = serve_args()
    with pytest.raises(ValidationError) as raised:
        serve_settings(args)
    said = explain(raised.value, Settings, given_fields(args, Settings), ENV_PREFIX)
    assert said == "sdxl-bedrock serve: SDXL_BEDROCK_DEVICE: Input should be 'auto', 'cpu' or 'cuda'"


def test_a_bad_value_stops_serve_before_anything_starts(capsys: pytest.CaptureFixture[str]) -> None:
    assert run_serve(serve_args("--max-queue", "0")) == 2
    assert capsys.readouterr().err == (
        "sdxl-bedrock serve: --max-queue: Input should be greater than or equal to 1\n"
    )


def test_ray_flags_without_ray_are_refused(capsys: pytest.CaptureFixture[str]) -> None:
    assert run_serve(serve_args("--replicas", "2", "--max-replicas", "4")) == 2
    assert capsys.readouterr().err == "sdxl-bedrock serve: --replicas, --max-replicas: only with --ray\n"


def test_the_ray_flags_are_scalings_fields() -> None:
    args = serve_args("--ray", "--replicas", "3", "--gpus-per-replica", "0.5", "--max-ongoing-requests", "6")
    assert Scaling(**given_fields(args, Scaling)) == Scaling(
        replicas=3, gpus_per_replica=0.5, max_ongoing_requests=6
    )


def test_rays_args_go_through_the_same_model(monkeypatch: pytest.MonkeyPatch) -> None:
    assert set(SETTINGS_FIELDS) == set(Settings.model_fields)
    settings = settings_from_args(
        {"model": "/models/sdxl", "warmup_buckets": [[1024, 1024, 2]], "api_keys": [TOKEN], "port": 8081}
    )
    assert settings.warmup_buckets == ((1024, 1024, 2),)
    assert settings.api_keys == frozenset({TOKEN})
    assert settings.request_timeout_s == 300  # the default, as for the command line
    with pytest.raises(ValidationError, match="max_batch_size"):
        settings_from_args({"max_batch_size": "many"})
    with pytest.raises(ValueError, match="unknown sdxl-bedrock settings in args: replicas"):
        settings_from_args({"replicas": 2})
    monkeypatch.setenv("SDXL_BEDROCK_MAX_QUEUE", "9")
    assert settings_from_args({}).max_queue == 9  # a variable fills in what the args leave out


def test_the_readme_lists_every_option_and_its_variable() -> None:
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    table = readme.split("| option | variable | default | what |", 1)[1].split("\n\n", 1)[0]
    for name, field in Settings.model_fields.items():
        option = option_of(name, field)
        row = next((line for line in table.splitlines() if re.search(f"`{option}[ `]", line)), "")
        assert f"`{ENV_PREFIX}{name.upper()}`" in row, f"README's options table misses {name}"


def test_model_aliases_name_the_served_checkpoint() -> None:
    settings = Settings(model="/models/sd_xl_base_1.0.safetensors", model_aliases=["dall-e-3=sd_xl_base_1.0"])
    assert settings.model_aliases == {"dall-e-3": "sd_xl_base_1.0"}
    for checkpoint in ("sd_xl_base_1.0.safetensors", "/models/sd_xl_base_1.0.safetensors"):
        assert Settings(model="/models/sd_xl_base_1.0.safetensors", model_aliases=[f"x={checkpoint}"])
    with pytest.raises(ValueError, match="'sd_xl_refiner' is not served here; the one checkpoint is"):
        Settings(model="/models/sd_xl_base_1.0.safetensors", model_aliases=["dall-e-3=sd_xl_refiner"])
    with pytest.raises(ValueError, match="wants NAME=CHECKPOINT"):
        Settings(model_aliases=["dall-e-3"])
    with pytest.raises(ValueError, match="given twice"):
        Settings(model_aliases=["a=tiny", "a=other"])


def test_checkpoint_dirs_come_from_flags_or_a_variable_and_defer_the_alias_check() -> None:
    assert Settings(checkpoint_dirs="/models, /more\n/third").checkpoint_dirs == (
        Path("/models"),
        Path("/more"),
        Path("/third"),
    )
    # With a library, an alias may name any checkpoint in it: the server checks them when it reads it.
    assert Settings(checkpoint_dirs=["/models"], model_aliases=["x=house-style"]).model_aliases == {
        "x": "house-style"
    }


def test_lora_settings_come_from_flags_or_variables_within_bounds(monkeypatch: pytest.MonkeyPatch) -> None:
    settings = Settings()
    assert settings.lora_dirs == ()
    assert (settings.max_loaded_loras, settings.max_host_loras, settings.max_loras_per_request) == (8, 32, 8)
    flags = serve_settings(
        serve_args("--lora-dir", "/loras", "--lora-dir", "~/more", "--max-host-loras", "0")
    )
    assert flags.lora_dirs == (Path("/loras"), Path("~/more").expanduser())
    assert flags.max_host_loras == 0
    monkeypatch.setenv("SDXL_BEDROCK_LORA_DIRS", "/a, /b\n/c")
    monkeypatch.setenv("SDXL_BEDROCK_MAX_LORAS_PER_REQUEST", "3")
    assert Settings().lora_dirs == (Path("/a"), Path("/b"), Path("/c"))
    assert Settings().max_loras_per_request == 3
    for field, low in (("max_loaded_loras", 0), ("max_host_loras", -1), ("max_loras_per_request", 0)):
        with pytest.raises(ValidationError, match=field):
            Settings(**{field: low})
