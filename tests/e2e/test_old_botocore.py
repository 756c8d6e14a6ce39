"""The oldest client that knows Bedrock: boto3 1.28.57 / botocore 1.31.57 (Bedrock's launch, September 2023).

`make install` puts it in .venv/old-botocore (a pip --target folder); the program below runs with that folder
ahead of the venv's own, newer boto3, and finds us through the environment as a user's program would.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from tests.conftest import RunningServer, bedrock_environment, gradient_png

OLD_BOTOCORE = Path(__file__).resolve().parents[2] / ".venv" / "old-botocore"
OLD_VERSIONS = "boto3 1.28.57, botocore 1.31.57"

USER_PROGRAM = """
import base64, json, sys
import boto3, botocore
from botocore.exceptions import ClientError

client = boto3.client("bedrock-runtime")
model = "stability.stable-diffusion-xl-v1"
with open(sys.argv[1], "rb") as source:
    init_image = base64.b64encode(source.read()).decode()
body = {"text_prompts": [{"text": "a harbour"}], "init_image": init_image, "steps": 10, "seed": 77}
report = {"versions": f"boto3 {boto3.__version__}, botocore {botocore.__version__}"}

answer = json.loads(client.invoke_model(body=json.dumps(body), modelId=model, accept="application/json",
                                        contentType="application/json")["body"].read())
report["invoke"] = {"result": answer["result"], "seed": answer["artifacts"][0]["seed"],
                    "png": base64.b64decode(answer["artifacts"][0]["base64"])[:8].hex()}

stream = client.invoke_model_with_response_stream(body=json.dumps(body), modelId=model)
chunks = [json.loads(event["chunk"]["bytes"]) for event in stream["body"] if "chunk" in event]
report["stream"] = {"chunks": len(chunks), "seed": chunks[-1]["artifacts"][0]["seed"]}

try:
    client.invoke_model(body=json.dumps({**body, "steps": 5}), modelId=model)
except ClientError as error:
    report["error"] = {"code": error.response["Error"]["Code"], "message": error.response["Error"]["Message"],
                       "status": error.response["ResponseMetadata"]["HTTPStatusCode"]}
print(json.dumps(report))
"""


def test_the_launch_botocore_invokes_streams_and_reads_errors(server: RunningServer, tmp_path: Path) -> None:
    assert (OLD_BOTOCORE / "botocore").is_dir(), f"{OLD_BOTOCORE} is missing: run `make install`"
    source, program = tmp_path / "in.png", tmp_path / "user_program.py"
    source.write_bytes(gradient_png(64, 64))
    program.write_text(USER_PROGRAM)
    env = {
        **os.environ,
        **bedrock_environment(server.url),
        "PYTHONPATH": str(OLD_BOTOCORE),
        "AWS_EC2_METADATA_DISABLED": "true",
    }
    done = subprocess.run(
        [sys.executable, "-s", str(program), str(source)],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert report["versions"] == OLD_VERSIONS
    assert report["invoke"] == {"result": "success", "seed": 77, "png": "89504e470d0a1a0a"}
    assert report["stream"] == {"chunks": 1, "seed": 77}
    assert report["error"]["code"] == "ValidationException"
    assert report["error"]["status"] == 400
    assert "#/steps" in report["error"]["message"]
