"""The README's curl examples for the Stability v1 face, read out of README.md and run as written (only the
address changed to the test server's) against a server with the default size rule; and the documents name
no file outside the repository."""

from __future__ import annotations

import base64
import io
import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest
from PIL import Image

from tests.conftest import REPO, RunningServer, gradient_png

README_ADDRESS = "http://127.0.0.1:8080"
CODE_BLOCK = re.compile(r"^```[a-z]*\n(.*?)^```", re.MULTILINE | re.DOTALL)


def curl_examples() -> list[str]:
    blocks = CODE_BLOCK.findall((REPO / "README.md").read_text())
    return [block for block in blocks if block.startswith("curl ") and "/v1/generation/" in block]


def test_the_readme_has_both_stability_examples() -> None:
    examples = curl_examples()
    assert len(examples) == 2
    assert "/text-to-image" in examples[0] and "-d '{" in examples[0]
    assert "/image-to-image" in examples[1] and "-F init_image=@in.png" in examples[1]


@pytest.mark.skipif(shutil.which("curl") is None, reason="needs curl")
@pytest.mark.parametrize("example", curl_examples(), ids=["text-to-image", "image-to-image"])
def test_a_readme_curl_example_runs_as_written(
    example: str, strict_server: RunningServer, tmp_path: Path
) -> None:
    (tmp_path / "in.png").write_bytes(gradient_png(1024, 1024))
    assert README_ADDRESS in example
    ran = subprocess.run(
        ["bash", "-euo", "pipefail", "-c", example.replace(README_ADDRESS, strict_server.url)],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert ran.returncode == 0, ran.stdout + ran.stderr
    written = {path.name for path in tmp_path.iterdir()} - {"in.png"}
    assert len(written) == 1, written
    output = tmp_path / written.pop()
    if output.suffix == ".png":
        png = output.read_bytes()
    else:
        answer = json.loads(output.read_text())
        [artifact] = answer["artifacts"]
        assert (artifact["seed"], artifact["finishReason"]) == (42, "SUCCESS")
        png = base64.b64decode(artifact["base64"])
    assert Image.open(io.BytesIO(png)).size == (1024, 1024)


def test_the_docs_stand_alone() -> None:
    """The repository's documents name no file outside it."""
    documents = [REPO / "README.md", *REPO.glob("docs/*.md"), *REPO.glob("bench/**/*.md")]
    for document in documents:
        text = document.read_text()
        assert "SPEC.md" not in text and "../shared" not in text, document
