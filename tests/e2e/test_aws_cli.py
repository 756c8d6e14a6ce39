"""The AWS CLI, unchanged, writes the model's JSON (with the PNG) to its outfile."""

from __future__ import annotations

import base64
import io
import json
import os
import subprocess
import sys
from pathlib import Path

from PIL import Image

from tests.conftest import RunningServer, gradient_png


def test_aws_cli_invoke_model(server: RunningServer, tmp_path: Path) -> None:
    request = tmp_path / "request.json"
    request.write_text(
        json.dumps(
            {
                "text_prompts": [{"text": "a lantern"}],
                "steps": 10,
                "seed": 77,
                "init_image": base64.b64encode(gradient_png(128, 64)).decode(),
            }
        )
    )
    outfile = tmp_path / "answer.json"
    aws = Path(sys.executable).with_name("aws")
    env = {
        **os.environ,
        "AWS_ACCESS_KEY_ID": "cli",
        "AWS_SECRET_ACCESS_KEY": "cli",
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_CONFIG_FILE": str(tmp_path / "none"),
        "AWS_SHARED_CREDENTIALS_FILE": str(tmp_path / "none"),
    }
    done = subprocess.run(
        [
            str(aws),
            "bedrock-runtime",
            "invoke-model",
            "--endpoint-url",
            server.url,
            "--model-id",
            "stability.stable-diffusion-xl-v1",
            "--content-type",
            "application/json",
            "--accept",
            "application/json",
            "--body",
            f"fileb://{request}",
            str(outfile),
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["contentType"] == "application/json"
    answer = json.loads(outfile.read_text())
    assert answer["result"] == "success"
    artifact = answer["artifacts"][0]
    assert artifact["seed"] == 77 and artifact["finishReason"] == "SUCCESS"
    assert Image.open(io.BytesIO(base64.b64decode(artifact["base64"]))).size == (128, 64)
