"""Only for the suite that runs this one (tests/testing/test_sample_project.py): which server each xdist
worker used. A project of your own needs no conftest.py: the plugin comes with the package."""

from __future__ import annotations

import os
from pathlib import Path

import pytest


@pytest.fixture(autouse=True)
def record_the_server(request: pytest.FixtureRequest) -> None:
    record = os.environ.get("SAMPLE_RECORD_DIR")
    if record:
        url = request.getfixturevalue("sdxl_bedrock_url")
        worker = os.environ.get("PYTEST_XDIST_WORKER", "main")
        (Path(record) / f"{worker}.url").write_text(url)
