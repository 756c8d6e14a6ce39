"""`serve --ray` with a model library: Ray Serve's model multiplexing sends a request to the replica that
holds its checkpoint. Two CPU replicas, two tiny checkpoints made at test time, one Ray for the module;
small images, few steps. Which replica answered is read from `x-sdxl-replica`."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from sdxl_bedrock.config import Settings
from sdxl_bedrock.serve.ray_serve import checkpoints_per_replica
from tests.conftest import RunningServer, start_server
from tests.e2e.test_ray import RUN_MARKER, needs_ray, processes_of_this_run, wait_for_ray_to_leave
from tests.library.checkpoints import tiny_variant

STABILITY_BODY = {"text_prompts": [{"text": "a boat"}], "width": 64, "height": 64, "steps": 10, "seed": 7}
A1111_BODY = {"prompt": "a boat", "width": 64, "height": 64, "steps": 3, "sampler_name": "Euler", "seed": 7}


@pytest.fixture(scope="module")
def library_on_ray(tmp_path_factory: pytest.TempPathFactory, cache_dir: Path) -> Iterator[RunningServer]:
    root = tmp_path_factory.mktemp("checkpoints")
    tiny_variant(root / "house", seed=1)
    tiny_variant(root / "anime", seed=2)
    marker, value = RUN_MARKER.split("=")
    running = start_server(
        tmp_path_factory.mktemp("ray-library-logs"),
        *("--ray", "--replicas", "2", "--cpus-per-replica", "1", "--model", "tiny", "--relaxed-sizes"),
        *("--checkpoint-dir", str(root)),
        env={"RAY_ADDRESS": "", marker: value},
    )
    deadline = time.monotonic() + 120
    while "sdxl-bedrock listening on" not in running.log() and time.monotonic() < deadline:
        time.sleep(0.2)
    yield running
    running.stop()
    left = wait_for_ray_to_leave()
    assert left == set(), f"Ray processes outlived the server: {left}"


def stability(server: RunningServer, engine_id: str) -> str:
    answer = httpx.post(
        f"{server.url}/v1/generation/{engine_id}/text-to-image", json=STABILITY_BODY, timeout=120
    )
    assert answer.status_code == 200, answer.text
    return answer.headers["x-sdxl-replica"]


def a1111(server: RunningServer, checkpoint: str) -> str:
    body = {**A1111_BODY, "override_settings": {"sd_model_checkpoint": checkpoint}}
    answer = httpx.post(f"{server.url}/sdapi/v1/txt2img", json=body, timeout=120)
    assert answer.status_code == 200, answer.text
    return answer.headers["x-sdxl-replica"]


@needs_ray
def test_each_checkpoint_is_served_where_it_was_loaded(library_on_ray: RunningServer) -> None:
    assert "(model tiny, 2 replicas on Ray Serve, ready in " in library_on_ray.log()
    # The Stability wire names it in the path, A1111 in the body: the routing ingress reads either.
    house = stability(library_on_ray, "house")
    anime = a1111(library_on_ray, "anime")
    # A checkpoint no replica holds goes to the one holding the fewest: each replica loads what it is sent.
    assert house != anime
    titles = {model["model_name"]: model["title"] for model in sd_models(library_on_ray)}
    for _ in range(2):
        assert stability(library_on_ray, "anime") == anime
        # A1111's title (`name [hash]`) is the same checkpoint, so the same replica.
        assert a1111(library_on_ray, titles["house"]) == house
        assert a1111(library_on_ray, "house") == house
        assert stability(library_on_ray, "house") == house


@needs_ray
def test_a_name_the_wire_refuses_is_refused_in_its_shape(library_on_ray: RunningServer) -> None:
    answer = httpx.post(
        f"{library_on_ray.url}/v1/generation/no-such/text-to-image", json=STABILITY_BODY, timeout=60
    )
    assert answer.status_code == 404
    assert "no-such" in answer.json()["message"]
    assert answer.headers["x-sdxl-replica"]


@needs_ray
def test_a_library_adds_one_routing_process_and_nothing_else(library_on_ray: RunningServer) -> None:
    # The server, GCS, raylet, Serve's controller and proxy, two replicas, the routing ingress.
    assert len(processes_of_this_run()) >= 8


def sd_models(server: RunningServer) -> list[dict[str, str]]:
    answer = httpx.get(server.url + "/sdapi/v1/sd-models", timeout=30)
    assert answer.status_code == 200
    models: list[dict[str, str]] = answer.json()
    return models


def test_a_replica_reports_the_checkpoints_it_keeps_off_the_disk() -> None:
    assert checkpoints_per_replica(Settings()) == 2  # 1 on the device (CPU default), 1 in host memory
    assert checkpoints_per_replica(Settings(max_loaded_checkpoints=3, max_host_checkpoints=0)) == 3
