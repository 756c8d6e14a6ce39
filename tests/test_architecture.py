"""The layering the code promises (docs/ARCHITECTURE.md): the HTTP side never imports torch, and the engine
never sees a wire's field name or enum string."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src" / "sdxl_bedrock"
WIRE_WORDS = re.compile(r'"NONE"|style_preset|clip_guidance_preset|extras')


def test_the_engine_never_names_a_wire_field_or_enum_string() -> None:
    found = [
        f"{path.relative_to(SRC)}:{number}: {line.strip()}"
        for path in sorted((SRC / "engine").rglob("*.py"))
        for number, line in enumerate(path.read_text().splitlines(), start=1)
        if WIRE_WORDS.search(line)
    ]
    assert found == []


def test_the_http_side_loads_no_torch() -> None:
    script = (
        f"import sys; sys.path.insert(0, {str(SRC.parent)!r}); "
        "import sdxl_bedrock.api, sdxl_bedrock.api.bedrock, sdxl_bedrock.api.stability, sdxl_bedrock.app, "
        "sdxl_bedrock.api.validation, sdxl_bedrock.codecs, sdxl_bedrock.generation; "
        "from sdxl_bedrock.app import create_app; from sdxl_bedrock.config import Settings; "
        "create_app(Settings()).openapi(); "
        "assert 'torch' not in sys.modules, 'torch was imported'"
    )
    subprocess.run([sys.executable, "-c", script], check=True, timeout=120)


def test_the_testing_plugin_loads_neither_torch_nor_boto3() -> None:
    """pytest loads the plugin in every suite of a venv that holds the package: it must cost nothing."""
    script = (
        f"import sys; sys.path.insert(0, {str(SRC.parent)!r}); "
        "import sdxl_bedrock.testing.pytest_plugin; "
        "heavy = {'torch', 'boto3', 'botocore', 'numpy', 'PIL', 'httpx'} & set(sys.modules); "
        "assert not heavy, heavy"
    )
    subprocess.run([sys.executable, "-c", script], check=True, timeout=120)
