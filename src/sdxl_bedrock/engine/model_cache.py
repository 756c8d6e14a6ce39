"""The model cache folder, and building a folder into it exactly once, even with racing processes.

Every folder this package builds (the tiny model, the tiny CLIP, the SDXL base config folder) is named for
what it holds, so a changed description lands in a new folder and an old one is never read by mistake.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

CACHE_ENV_VAR = "SDXL_BEDROCK_CACHE"
# Bump when the way a folder is written changes; config changes already change the folder name.
LAYOUT_VERSION = 1


def default_cache_root() -> Path:
    """`$SDXL_BEDROCK_CACHE` when set, else ~/.cache/sdxl-bedrock."""
    configured = os.environ.get(CACHE_ENV_VAR)
    return Path(configured) if configured else Path.home() / ".cache" / "sdxl-bedrock"


def build_once(target: Path, build: Callable[[Path], None]) -> Path:
    """Return `target`, first filling it with `build(folder)` unless it exists.

    Safe across processes: each builds into its own hidden sibling and renames it into place, which is
    atomic; a process that loses the race drops its copy and uses the winner's (the builds are identical).
    Whatever `build` raises propagates, and its half-written folder is removed.
    """
    if target.is_dir():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".partial", dir=target.parent))
    try:
        build(staging)
        staging.chmod(0o755)
        try:
            staging.rename(target)
        except OSError:
            if not target.is_dir():
                raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return target


def content_digest(*parts: bytes) -> str:
    """12 hex digits of SHA-256 over the parts, each hashed on its own so that no two splits collide."""
    digest = hashlib.sha256()
    for part in parts:
        digest.update(hashlib.sha256(part).digest())
    return digest.hexdigest()[:12]


def write_json(path: Path, data: Mapping[str, Any]) -> None:
    """`data` as indented JSON with sorted keys, so that a folder built twice is byte-identical."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n", encoding="utf-8")
