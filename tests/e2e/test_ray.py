"""`serve --ray`: the same app as a Ray Serve deployment on a local Ray, two replicas on one CPU each.

One Ray for the module (starting one takes a while), Bedrock's strict size rule so that the seed example
itself runs unchanged; the last test stops it with SIGTERM and checks that no Ray process is left behind.
"""

from __future__ import annotations

import base64
import contextlib
import importlib.util
import json
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from botocore.exceptions import ClientError

from sdxl_bedrock.config import Settings
from sdxl_bedrock.serve.ray_serve import DEPLOYMENT_NAME, Scaling, deployment_options, settings_from_args
from tests.conftest import (
    REPO,
    RunningServer,
    bedrock,
    bedrock_environment,
    free_port,
    gradient_png,
    run_seed_example,
    start_server,
    wait_ready,
)

needs_ray = pytest.mark.skipif(
    importlib.util.find_spec("ray") is None,
    reason="ray is not installed: pip install -e '.[ray]' (the dev extra has it)",
)
MODEL_ARN = "arn:aws:bedrock:us-east-1::foundation-model/stability.stable-diffusion-xl-v1"
# In the server's environment, so in that of every process it starts (raylet, GCS, agents, workers).
RUN_MARKER = f"SDXL_BEDROCK_RAY_TEST_RUN={uuid.uuid4()}"


def raylets() -> set[int]:
    """This run's raylets: another test run on the machine (a second clone's suite) has its own."""
    found = subprocess.run(["pgrep", "-f", "raylet"], capture_output=True, text=True)
    return {int(pid) for pid in found.stdout.split()} & processes_of_this_run()


# How long Ray gets to stop its processes itself (raylet, GCS, agents, workers) once asked; on a loaded
# machine that takes far longer than on a quiet one.
RAY_SHUTDOWN_S = 180


def wait_for_ray_to_leave() -> set[int]:
    """Wait up to RAY_SHUTDOWN_S for this run's Ray processes to end on their own; kill those that do not
    (so none outlives the test) and return their ids."""
    deadline = time.monotonic() + RAY_SHUTDOWN_S
    while processes_of_this_run() and time.monotonic() < deadline:
        time.sleep(0.5)
    left = processes_of_this_run()
    for pid in left:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + 30
    while processes_of_this_run() and time.monotonic() < deadline:
        time.sleep(0.2)
    return left


def processes_of_this_run() -> set[int]:
    """The live processes whose environment carries RUN_MARKER: the server and all that Ray started."""
    pids = set()
    for environ in Path("/proc").glob("[0-9]*/environ"):
        try:
            if RUN_MARKER.encode() in environ.read_bytes().split(b"\0"):
                pids.add(int(environ.parent.name))
        except OSError:  # gone meanwhile
            continue
    return pids


@pytest.fixture(scope="module")
def raylets_before() -> set[int]:
    return raylets()


@pytest.fixture(scope="module")
def ray_server(
    tmp_path_factory: pytest.TempPathFactory, cache_dir: Path, raylets_before: set[int]
) -> Iterator[RunningServer]:
    marker, value = RUN_MARKER.split("=")
    running = start_server(
        tmp_path_factory.mktemp("ray-logs"),
        *("--ray", "--replicas", "2", "--cpus-per-replica", "1", "--model", "tiny"),
        # a Ray of its own, never a cluster this machine happens to name
        env={"RAY_ADDRESS": "", marker: value},
    )
    # /ping answers once one replica is up; the listening line, once all are.
    deadline = time.monotonic() + 120
    while "sdxl-bedrock listening on" not in running.log() and time.monotonic() < deadline:
        time.sleep(0.2)
    yield running
    if running.process.poll() is None:
        running.stop()
    wait_for_ray_to_leave()


def image_body(**fields: object) -> dict[str, object]:
    return {
        "text_prompts": [{"text": "A space ship."}],
        "init_image": base64.b64encode(gradient_png(1024, 1024)).decode(),
        "steps": 10,
        **fields,
    }


@needs_ray
def test_ping_says_healthy_and_names_the_replica(ray_server: RunningServer) -> None:
    answer = httpx.get(ray_server.url + "/ping", timeout=10)
    assert answer.status_code == 200
    assert answer.json() == {"status": "Healthy"}
    assert answer.headers["x-sdxl-replica"]
    assert answer.headers["x-amzn-RequestId"]
    assert "(model tiny, 2 replicas on Ray Serve, ready in " in ray_server.log()
    # The server, GCS, raylet, Serve's controller and proxy, two replicas: what the last test sees gone.
    assert len(processes_of_this_run()) >= 7


@needs_ray
def test_a_stock_boto3_program_through_ray(ray_server: RunningServer, tmp_path: Path) -> None:
    from tests.e2e.test_seed_example import USER_PROGRAM

    source, program, out = tmp_path / "in.png", tmp_path / "user_program.py", tmp_path / "out.png"
    source.write_bytes(gradient_png(1024, 1024))
    program.write_text(USER_PROGRAM)
    done = subprocess.run(
        [sys.executable, str(program), str(source), str(out)],
        env={**os.environ, **bedrock_environment(ray_server.url)},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines()[0] == "success"
    assert done.stdout.splitlines()[1].split()[0] == "SUCCESS"
    assert out.read_bytes().startswith(b"\x89PNG")


@needs_ray
def test_the_seed_example_itself_through_ray(ray_server: RunningServer, tmp_path: Path) -> None:
    done = run_seed_example(ray_server.url, tmp_path)
    assert "success" in done.stdout.splitlines(), done.stdout + done.stderr
    assert "Finished generating" in done.stdout


@needs_ray
def test_an_arn_model_id_keeps_its_percent_encoded_slash_through_rays_proxy(
    ray_server: RunningServer,
) -> None:
    client = bedrock(ray_server.url)
    answer = client.invoke_model(  # type: ignore[attr-defined]
        modelId=MODEL_ARN, body=json.dumps(image_body(seed=7)), contentType="application/json"
    )
    assert json.loads(answer["body"].read())["artifacts"][0]["seed"] == 7
    # A real separator inside the id is another path, and refused as Bedrock refuses it.
    raw = httpx.post(f"{ray_server.url}/model/{MODEL_ARN}/invoke", json=image_body(), timeout=60)
    assert raw.status_code == 400
    assert raw.json() == {"message": "The provided model identifier is invalid."}
    assert raw.headers["x-amzn-ErrorType"].startswith("ValidationException:")


@needs_ray
def test_errors_keep_bedrocks_shape_through_ray(ray_server: RunningServer) -> None:
    client = bedrock(ray_server.url)
    with pytest.raises(ClientError) as raised:
        client.invoke_model(  # type: ignore[attr-defined]
            modelId="stability.stable-diffusion-xl-v1", body=json.dumps(image_body(cfg_scale=40))
        )
    assert raised.value.response["Error"]["Code"] == "ValidationException"
    assert "#/cfg_scale: 40 is not less or equal to 35" in raised.value.response["Error"]["Message"]
    missing = httpx.get(ray_server.url + "/no/such/route", timeout=10)
    assert missing.status_code == 404
    assert missing.headers["x-amzn-ErrorType"].startswith("ResourceNotFoundException:")


@needs_ray
def test_concurrent_requests_are_spread_over_both_replicas(ray_server: RunningServer) -> None:
    def one(seed: int) -> tuple[int, str, int]:
        answer = httpx.post(
            f"{ray_server.url}/model/stability.stable-diffusion-xl-v1/invoke",
            json=image_body(seed=seed),
            timeout=120,
        )
        artifact_seed = answer.json()["artifacts"][0]["seed"] if answer.status_code == 200 else 0
        return answer.status_code, answer.headers.get("x-sdxl-replica", ""), artifact_seed

    with ThreadPoolExecutor(12) as pool:
        answers = list(pool.map(one, range(1, 13)))
    assert [status for status, _, _ in answers] == [200] * 12
    assert [seed for _, _, seed in answers] == list(range(1, 13))
    replicas = {replica for _, replica, _ in answers}
    assert len(replicas) >= 2, f"every answer came from {replicas}"


@needs_ray
def test_sigterm_finishes_the_accepted_request_then_stops_ray_completely(
    ray_server: RunningServer, raylets_before: set[int]
) -> None:
    """Last in this module: it stops the module's server."""
    client = bedrock(ray_server.url)
    body = image_body(steps=50, extras={"progress": True, "progress_preview_every": 0})
    stream = client.invoke_model_with_response_stream(  # type: ignore[attr-defined]
        modelId="stability.stable-diffusion-xl-v1", body=json.dumps(body)
    )
    events = iter(stream["body"])
    first = json.loads(next(events)["chunk"]["bytes"])
    assert first["progress"]["step"] >= 1  # the request is running on a replica: now stop the server
    ray_server.process.send_signal(signal.SIGTERM)
    chunks = [json.loads(event["chunk"]["bytes"]) for event in events]
    assert chunks[-1]["result"] == "success"
    assert chunks[-1]["artifacts"][0]["finishReason"] == "SUCCESS"
    assert ray_server.process.wait(RAY_SHUTDOWN_S) == 0, ray_server.log()
    assert wait_for_ray_to_leave() == set(), "Ray processes outlived the server"
    assert raylets() - raylets_before == set()


@needs_ray
def test_the_documented_serve_config_file_runs_the_same_app(tmp_path: Path, cache_dir: Path) -> None:
    """docs/SCALING.md's config file, on CPUs with the tiny model, through Ray's own `serve run`."""
    config = documented_serve_config()
    port = free_port()
    config["http_options"] = {"host": "127.0.0.1", "port": port}
    application = config["applications"][0]
    application["args"].update(model="tiny", device="cpu", dtype="float32")
    deployment = application["deployments"][0]
    deployment["ray_actor_options"] = {"num_cpus": 0.5}
    deployment["autoscaling_config"].update(min_replicas=1, initial_replicas=2, max_replicas=2)
    (tmp_path / "serve_config.yaml").write_text(yaml.safe_dump(config))
    marker, value = RUN_MARKER.split("=")
    log_path = tmp_path / "serve-run.log"
    with log_path.open("wb") as log_file:
        process = subprocess.Popen(
            [str(Path(sys.executable).parent / "serve"), "run", "--address", "local", "serve_config.yaml"],
            cwd=tmp_path,
            stdout=log_file,
            stderr=subprocess.STDOUT,
            env={**os.environ, "RAY_ADDRESS": "", "RAY_USAGE_STATS_ENABLED": "0", marker: value},
            # A suite started in the background by a shell (`nohup make test &`) runs with SIGINT ignored,
            # which its children inherit: `serve run` would then sit out the SIGINT below.
            preexec_fn=restore_sigint,
        )
    running = RunningServer(f"http://127.0.0.1:{port}", process, log_path)
    try:
        wait_ready(running, timeout_s=120)
        answer = bedrock(running.url).invoke_model(  # type: ignore[attr-defined]
            modelId=MODEL_ARN, body=json.dumps(image_body(seed=11))
        )
        assert answer["ResponseMetadata"]["HTTPHeaders"]["x-sdxl-replica"]
        assert json.loads(answer["body"].read())["artifacts"][0]["seed"] == 11
    finally:
        process.send_signal(signal.SIGINT)  # what `serve run` takes for Ctrl-C: it stops Serve and Ray
        try:
            process.wait(RAY_SHUTDOWN_S)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(30)
    left = wait_for_ray_to_leave()
    assert left == set(), f"Ray processes outlived `serve run` by {RAY_SHUTDOWN_S} s: {left}\n{running.log()}"


def restore_sigint() -> None:
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def documented_serve_config() -> dict[str, Any]:
    text = (REPO / "docs" / "SCALING.md").read_text()
    block = text.split("```yaml\n# serve_config.yaml\n", 1)[1].split("```", 1)[0]
    config: dict[str, Any] = yaml.safe_load(block)
    application = config["applications"][0]
    assert application["import_path"] == "sdxl_bedrock.serve.ray_serve:app_builder"
    assert application["deployments"][0]["name"] == DEPLOYMENT_NAME
    settings_from_args(application["args"])  # every documented arg is a Settings field
    return config


# --- without Ray: what the deployment is asked for ---------------------------------------------------------


def test_fixed_replicas_reserve_what_they_are_given() -> None:
    options = deployment_options(
        Settings(max_batch_size=4, shutdown_timeout_s=30), Scaling(replicas=8, gpus_per_replica=1)
    )
    assert options["num_replicas"] == 8
    assert options["ray_actor_options"] == {"num_cpus": 1.0, "num_gpus": 1}
    assert options["max_ongoing_requests"] == 8
    assert options["graceful_shutdown_timeout_s"] == 30
    assert "autoscaling_config" not in options


def test_min_or_max_replicas_turn_autoscaling_on() -> None:
    scaling = Scaling(replicas=2, min_replicas=1, max_replicas=6, target_ongoing_requests=3)
    options = deployment_options(Settings(), scaling)
    assert "num_replicas" not in options
    assert options["autoscaling_config"] == {
        "min_replicas": 1,
        "max_replicas": 6,
        "initial_replicas": 2,
        "target_ongoing_requests": 3,
    }


def test_a_gpu_each_by_default_only_where_ray_has_gpus_and_the_device_may_be_cuda() -> None:
    assert Scaling().with_gpus("auto", cluster_gpus=8).gpus_per_replica == 1
    assert Scaling().with_gpus("auto", cluster_gpus=0).gpus_per_replica == 0
    assert Scaling().with_gpus("cpu", cluster_gpus=8).gpus_per_replica == 0
    assert Scaling(gpus_per_replica=0.5).with_gpus("cuda", cluster_gpus=8).gpus_per_replica == 0.5


def test_autoscaling_starts_with_replicas_within_min_and_max() -> None:
    assert deployment_options(Settings(), Scaling(min_replicas=3))["autoscaling_config"] == {
        "min_replicas": 3,
        "max_replicas": 3,
        "initial_replicas": 3,
    }
    only_max = deployment_options(Settings(), Scaling(replicas=8, max_replicas=4))["autoscaling_config"]
    assert only_max == {"min_replicas": 1, "max_replicas": 4, "initial_replicas": 4}
    to_zero = deployment_options(Settings(), Scaling(min_replicas=0, max_replicas=2))["autoscaling_config"]
    assert to_zero == {"min_replicas": 0, "max_replicas": 2, "initial_replicas": 1}


def test_bad_scaling_is_refused_in_words() -> None:
    with pytest.raises(ValueError, match="--replicas must be at least 1"):
        Scaling(replicas=0).check()
    with pytest.raises(ValueError, match="--max-replicas must be at least 1 and at least --min-replicas"):
        Scaling(min_replicas=4, max_replicas=2).check()


def test_a_serve_config_files_args_are_settings_fields() -> None:
    settings = settings_from_args(
        {"model": "/models/sdxl.safetensors", "device": "cuda", "blocked_terms": "t"}
    )
    assert settings.model == "/models/sdxl.safetensors"
    assert settings.blocked_terms == Path("t")
    with pytest.raises(ValueError, match="unknown sdxl-bedrock settings in args: replicas"):
        settings_from_args({"replicas": 2})
