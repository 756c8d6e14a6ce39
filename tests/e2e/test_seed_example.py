"""The acceptance test in our own words: a stock boto3 program, pointed at us only by the environment."""

from __future__ import annotations

import io
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
from PIL import Image

from tests.conftest import RunningServer, gradient_png

USER_PROGRAM = """
import base64, json, sys
import boto3

with open(sys.argv[1], "rb") as source:
    init_image = base64.b64encode(source.read()).decode("utf8")
body = json.dumps({"text_prompts": [{"text": "A space ship."}], "init_image": init_image,
                   "style_preset": "isometric"})
client = boto3.client(service_name="bedrock-runtime")
response = client.invoke_model(body=body, modelId="stability.stable-diffusion-xl-v1",
                               accept="application/json", contentType="application/json")
answer = json.loads(response.get("body").read())
print(answer["result"])
artifact = answer["artifacts"][0]
print(artifact["finishReason"], artifact["seed"])
with open(sys.argv[2], "wb") as out:
    out.write(base64.b64decode(artifact["base64"].encode("ascii")))
"""


def test_a_stock_boto3_program_gets_a_png_of_the_input_size(
    strict_server: RunningServer, tmp_path: Path
) -> None:
    source = tmp_path / "in.png"
    source.write_bytes(gradient_png(1024, 1024))
    program = tmp_path / "user_program.py"
    program.write_text(USER_PROGRAM)
    out = tmp_path / "out.png"
    env = {
        **os.environ,
        "AWS_ENDPOINT_URL_BEDROCK_RUNTIME": strict_server.url,
        "AWS_ACCESS_KEY_ID": "any",
        "AWS_SECRET_ACCESS_KEY": "thing",
        "AWS_DEFAULT_REGION": "us-east-1",
    }
    done = subprocess.run(
        [sys.executable, str(program), str(source), str(out)],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0] == "success"
    finish_reason, seed = lines[1].split()
    assert finish_reason == "SUCCESS"
    assert 1 <= int(seed) <= 4294967295
    image = Image.open(io.BytesIO(out.read_bytes()))
    assert image.format == "PNG"
    assert image.size == (1024, 1024)
    assert len(np.unique(np.asarray(image.convert("RGB")).reshape(-1, 3), axis=0)) > 100, (
        "the picture should not be flat"
    )


def test_the_seed_example_itself_runs_unchanged_but_for_the_image_path(
    strict_server: RunningServer, tmp_path: Path
) -> None:
    example = Path(__file__).resolve().parents[3] / "shared" / "seed" / "example.py"
    if not example.exists():
        import pytest

        pytest.skip("../shared/seed/example.py is not beside this checkout")
    source = tmp_path / "in.png"
    source.write_bytes(gradient_png(1024, 1024))
    program = tmp_path / "example.py"
    program.write_text(example.read_text().replace("/path/to/image", str(source)))
    env = {
        **os.environ,
        "AWS_ENDPOINT_URL_BEDROCK_RUNTIME": strict_server.url,
        "AWS_ACCESS_KEY_ID": "x",
        "AWS_SECRET_ACCESS_KEY": "y",
        "AWS_DEFAULT_REGION": "us-east-1",
        "DISPLAY": "",
    }
    done = subprocess.run(
        [sys.executable, str(program)], env=env, capture_output=True, text=True, timeout=300, cwd=tmp_path
    )
    assert "success" in done.stdout.splitlines(), done.stdout + done.stderr
    assert "Finished generating" in done.stdout
