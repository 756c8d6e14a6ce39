"""`make serve` installs what serving needs and nothing of the development set; `make test` adds the rest.

The install check runs `make serve`'s install recipe as make prints it (`make -n`), in a throwaway venv, with
each `pip install` given `--dry-run --report`: pip resolves exactly what that command would install (the
same requirements, the same indexes, the local torch wheel) without unpacking several GB, so the test takes
about a minute rather than the real install's several. The report lists every distribution pip would
install, dependencies included, which is what a real install would leave in the venv.
"""

from __future__ import annotations

import json
import re
import shlex
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.conftest import REPO

DEVELOPMENT_PACKAGES = {"pytest", "ray", "playwright", "awscli", "mypy", "schemathesis"}
SERVING_PACKAGES = {"torch", "diffusers", "transformers", "fastapi", "granian", "sdxl-bedrock"}

pytestmark = pytest.mark.skipif(shutil.which("make") is None, reason="needs make")


def normalized(name: str) -> str:
    """A distribution name as PEP 503 compares them."""
    return re.sub(r"[-_.]+", "-", name).lower()


def make_dry_run(venv: Path, *targets: str, what_if: str | None = None) -> list[str]:
    """The shell commands `make TARGETS` would run for a venv at `venv`, one a line (`make -n`); `what_if`
    names a file make is to treat as just changed (`-W`), without touching it."""
    options = ["-W", what_if] if what_if else []
    printed = subprocess.run(
        ["make", "-n", "--no-print-directory", "-C", str(REPO), f"VENV={venv}", *options, *targets],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    ).stdout
    return printed.replace("\\\n", " ").splitlines()


def pip_installs(commands: list[str], venv: Path) -> list[list[str]]:
    """The `pip install` commands among `commands`, as argument lists."""
    pip = str(venv / "bin" / "pip")
    return [argv for argv in map(shlex.split, commands) if argv[:2] == [pip, "install"]]


@pytest.mark.slow
def test_make_serve_installs_no_development_package(tmp_path: Path) -> None:
    venv = tmp_path / "venv"
    commands = make_dry_run(venv, "install-serve")
    installs = pip_installs(commands, venv)
    assert len(installs) >= 2, commands  # torch first, then the project
    would_install: dict[str, str] = {}
    build_output = []
    for number, command in enumerate(commands):
        argv = shlex.split(command)
        if argv in installs:
            report = tmp_path / f"report-{number}.json"
            # -v: the build backend's own output (its warnings) comes through too.
            argv = [*argv[:2], "--dry-run", "--report", str(report), "-v", *argv[2:]]
            ran = subprocess.run(argv, cwd=REPO, capture_output=True, text=True, timeout=600)
            assert ran.returncode == 0, f"{command}\n{ran.stdout[-4000:]}\n{ran.stderr[-4000:]}"
            build_output.append(ran.stdout + ran.stderr)
            for item in json.loads(report.read_text())["install"]:
                metadata = item["metadata"]
                would_install[normalized(metadata["name"])] = metadata["version"]
        elif argv and not argv[0].startswith("#"):
            # Making the venv and the stamp: run as written.
            subprocess.run(command, shell=True, cwd=REPO, check=True, timeout=300)
    assert set(would_install) & DEVELOPMENT_PACKAGES == set()
    assert set(would_install) >= SERVING_PACKAGES, sorted(would_install)
    # pyproject's license is an SPDX expression: setuptools no longer warns about it while building.
    assert not any("SetuptoolsDeprecationWarning" in output for output in build_output)
    assert (venv / ".installed-serve").exists()


def test_make_test_adds_the_development_extras_to_a_serve_venv(tmp_path: Path) -> None:
    venv = tmp_path / "venv"
    venv.mkdir()
    (venv / ".installed-serve").touch()  # what `make serve` leaves, newer than pyproject.toml
    extras = f"{venv}/bin/pip install -e '.[dev]'"
    after_serve = make_dry_run(venv, "install")
    assert extras in after_serve
    assert not any("torch==" in command for command in after_serve)  # the runtime set is there already

    (venv / ".installed").touch()
    assert make_dry_run(venv, "serve") == [
        f"{venv}/bin/sdxl-bedrock serve --host 127.0.0.1 --port 8080 --model tiny"
    ]
    assert extras not in make_dry_run(venv, "install")
    # A changed pyproject.toml redoes both installs, in order.
    changed = make_dry_run(venv, "install", what_if="pyproject.toml")
    runtime = f"{venv}/bin/pip install -e ."
    assert runtime in changed and extras in changed
    assert changed.index(runtime) < changed.index(extras)


def test_make_serve_takes_port_and_model() -> None:
    commands = make_dry_run(Path("/nonexistent/venv"), "serve", "PORT=9000", "MODEL=/models/sdxl")
    serve = "/nonexistent/venv/bin/sdxl-bedrock serve --host 127.0.0.1 --port 9000 --model /models/sdxl"
    assert commands[-1] == serve


@pytest.mark.parametrize("cut", ["pip-removed", "python-broken"])
def test_an_install_cut_short_is_repaired_by_the_next_make(tmp_path: Path, cut: str) -> None:
    """Ctrl-C while pip upgrades itself leaves a venv without pip; the next `make serve` or `make test` ran
    `.venv/bin/pip` and failed on it for good. The recipe's lines before its first pip install must leave a
    working pip, whatever state the venv was cut in."""
    python = shutil.which("python3.11")
    if python is None:
        pytest.skip("needs python3.11, the Makefile's PYTHON")
    venv = tmp_path / "venv"
    subprocess.run([python, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=120)
    if cut == "python-broken":
        (venv / "bin" / "python").unlink()
        (venv / "bin" / "python").symlink_to(tmp_path / "gone")
    commands = make_dry_run(venv, "install-serve")
    first_install = next(number for number, command in enumerate(commands) if "pip install" in command)
    for command in commands[:first_install]:
        subprocess.run(command, shell=True, cwd=REPO, check=True, timeout=300)
    done = subprocess.run(
        [str(venv / "bin" / "pip"), "--version"], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
