"""The acceptance test in our own words: a stock boto3 program, pointed at us only by the environment."""

from __future__ import annotations

import io
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
from PIL import Image

from tests.conftest import RunningServer, bedrock_environment, gradient_png, run_seed_example

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
    done = subprocess.run(
        [sys.executable, str(program), str(source), str(out)],
        env={**os.environ, **bedrock_environment(strict_server.url)},
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
    done = run_seed_example(strict_server.url, tmp_path)
    assert "success" in done.stdout.splitlines(), done.stdout + done.stderr
    assert "Finished generating" in done.stdout
