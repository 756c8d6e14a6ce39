"""The first start on an empty model cache: one line says what is being built and when it is done, and no
library progress bar (transformers draws one per weights file it saves) reaches the user."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

from tests.conftest import start_server


def announcement(what: str) -> list[str]:
    """The two lines (as regular expressions) that say `what` is being built, then that it is."""
    return [
        re.escape(f"sdxl-bedrock: building {what} (first run only) ..."),
        re.escape(f"sdxl-bedrock: ... {what} built in ") + r"\d+\.\d s",
    ]


TINY_MODEL_LINES = announcement("the embedded tiny model")
TINY_CLIP_LINES = announcement("the embedded tiny CLIP model")
# What any tqdm bar prints, whatever its description: "  0%|" ... "100%|".
PROGRESS_BAR = re.compile(r"\d+%\|")


def model_path(cache: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "sdxl_bedrock", "model-path", "tiny"],
        env={**os.environ, "SDXL_BEDROCK_CACHE": str(cache)},
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_model_path_on_an_empty_cache_says_it_builds_and_nothing_else(tmp_path: Path) -> None:
    first = model_path(tmp_path)
    assert first.returncode == 0, first.stderr
    folder = Path(first.stdout.strip())
    assert first.stdout == f"{folder}\n" and folder.parent == tmp_path
    lines = first.stderr.splitlines()
    assert len(lines) == 2, first.stderr
    assert all(re.fullmatch(pattern, line) for pattern, line in zip(TINY_MODEL_LINES, lines, strict=True))

    again = model_path(tmp_path)
    assert (again.returncode, again.stdout, again.stderr) == (0, first.stdout, "")


def test_the_servers_first_start_says_what_it_builds_without_progress_bars(tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    server = start_server(
        tmp_path, "--model", "tiny", "--clip-model", "tiny", env={"SDXL_BEDROCK_CACHE": str(cache)}
    )
    try:
        log = server.log()
    finally:
        assert server.stop() == 0
    lines = log.splitlines()
    for expected in (*TINY_MODEL_LINES, *TINY_CLIP_LINES):
        assert sum(bool(re.fullmatch(expected, line)) for line in lines) == 1, (expected, log)
    assert not PROGRESS_BAR.search(log), log
    assert "Writing model shards" not in log
