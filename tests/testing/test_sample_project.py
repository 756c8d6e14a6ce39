"""The testing plugin as another project meets it: this package built into a wheel and installed into a
venv of its own, and tests/testing/sample_project's suite run there, alone, beside moto, and under
pytest-xdist (one server per worker, or the one --sdxl-bedrock-url names).

Nothing downloads: the venv sees this venv's packages through a .pth file (torch and the rest are not
installed twice), and the wheel is installed with --no-index."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

from sdxl_bedrock import testing
from tests.conftest import REPO

SAMPLE = Path(__file__).parent / "sample_project"
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def sample_venv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A venv holding the wheel of this checkout, its dependencies seen from this venv."""
    folder = tmp_path_factory.mktemp("sample-venv")
    wheels, venv = folder / "wheels", folder / "venv"
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "--no-build-isolation",
            "--no-index",
            "-q",
            "-w",
            str(wheels),
            str(REPO),
        ],
        check=True,
        timeout=300,
        capture_output=True,
    )
    [wheel] = wheels.glob("sdxl_bedrock-*.whl")
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=120)
    python = venv / "bin" / "python"
    site = subprocess.run(
        [str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        check=True,
        capture_output=True,
        text=True,
        timeout=60,
    ).stdout.strip()
    (Path(site) / "outer-venv.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    subprocess.run(
        [
            str(python),
            "-m",
            "pip",
            "install",
            "-q",
            "--no-index",
            "--no-deps",
            "--ignore-installed",
            str(wheel),
        ],
        check=True,
        timeout=300,
        capture_output=True,
    )
    where = subprocess.run(
        [str(python), "-c", "import sdxl_bedrock; print(sdxl_bedrock.__file__)"],
        check=True,
        capture_output=True,
        text=True,
        timeout=60,
    ).stdout
    assert where.startswith(site), f"the sample venv imports sdxl_bedrock from {where}, not its wheel"
    return venv


@pytest.fixture
def project(tmp_path: Path) -> Path:
    copy = tmp_path / "project"
    shutil.copytree(SAMPLE, copy)
    return copy


def run_sample(venv: Path, project: Path, *args: str, env: dict[str, str] | None = None) -> str:
    # The outer suite's own variables must not reach the sample (an endpoint, keys, xdist's worker name).
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "PYTEST_"))}
    done = subprocess.run(
        [str(venv / "bin" / "python"), "-m", "pytest", "-p", "no:cacheprovider", "-q", *args],
        cwd=project,
        env={**clean, **(env or {})},
        capture_output=True,
        text=True,
        timeout=900,
    )
    return f"exit {done.returncode}\n{done.stdout}{done.stderr}"


def test_the_sample_suite_passes_alone_and_beside_moto(sample_venv: Path, project: Path) -> None:
    output = run_sample(sample_venv, project)
    assert output.startswith("exit 0"), output
    assert "5 passed" in output, output


def recorded(record: Path) -> dict[str, str]:
    return {path.stem: path.read_text() for path in record.glob("*.url")}


def test_under_xdist_each_worker_has_its_own_server(sample_venv: Path, project: Path, tmp_path: Path) -> None:
    output = run_sample(sample_venv, project, "-n", "2", env={"SAMPLE_RECORD_DIR": str(tmp_path)})
    assert output.startswith("exit 0"), output
    urls = recorded(tmp_path)
    assert set(urls) == {"gw0", "gw1"}, output
    assert len(set(urls.values())) == 2, f"the workers shared a server: {urls}"


def test_under_xdist_every_worker_uses_the_server_named(
    sample_venv: Path, project: Path, tmp_path: Path
) -> None:
    with testing.server("--relaxed-sizes", log_dir=tmp_path / "logs") as url:
        output = run_sample(
            sample_venv,
            project,
            "-n",
            "2",
            f"--sdxl-bedrock-url={url}",
            "test_app.py",
            env={"SAMPLE_RECORD_DIR": str(tmp_path)},
        )
    assert output.startswith("exit 0"), output
    assert set(recorded(tmp_path).values()) == {url}, output


def test_a_server_that_cannot_start_fails_the_fixture_in_one_line(sample_venv: Path, project: Path) -> None:
    output = run_sample(
        sample_venv, project, "--sdxl-bedrock-model=no-such-model", "test_app.py::test_beside_moto"
    )
    assert output.startswith("exit 1"), output
    [line] = [line for line in output.splitlines() if line.startswith("E ") and "ServerDidNotStart:" in line]
    assert (
        "exited with status 1 before it was ready: sdxl-bedrock: could not load model 'no-such-model'" in line
    )
