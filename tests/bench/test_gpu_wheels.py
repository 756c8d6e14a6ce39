"""The GPU runbook's wheel set (bench/gpu/wheels.py): every runtime dependency of the package, transitively,
is carried to the machine or already there. Nothing is downloaded: the CPU .venv's metadata, and small
synthetic worlds for the rules."""

from __future__ import annotations

from pathlib import Path

import pytest
from bench.gpu.wheels import PYPROJECT, Dist, Machine, derive, installed, never_carried, roots, target, unmet
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

PY312 = target("3.12")


def dist(name: str, version: str, *requires: str) -> Dist:
    return Dist(canonicalize_name(name), Version(version), requires)


def wanted(*lines: str) -> list[tuple[str, Requirement]]:
    return [("sdxl-bedrock", Requirement(line)) for line in lines]


SETTINGS_FOR_AWS = "boto3>=1.35.0; extra == 'aws-secrets-manager'"
# A .venv and a machine in small, shaped like the real ones.
VENV = {
    d.name: d
    for d in (
        dist("pydantic", "2.14.4", "pydantic-core==2.50.5", "annotated-types>=0.6.0"),
        dist("pydantic-core", "2.50.5"),
        dist("annotated-types", "0.8.0"),
        dist("pydantic-settings", "2.16.3", "pydantic>=2.7.0", "python-dotenv>=1.2.2", SETTINGS_FOR_AWS),
        dist("python-dotenv", "1.2.4"),
        dist("boto3", "1.44.18", "botocore<1.45,>=1.44.18"),
        dist("botocore", "1.44.18"),
        dist("fastapi", "0.165.0", "starlette>=1.6.0", "pydantic>=2.9.0"),
        dist("starlette", "1.10.0", "anyio<5,>=3.6.2", "exceptiongroup; python_version < '3.12'"),
        dist("exceptiongroup", "1.3.0"),
        dist("anyio", "4.16.0", "idna>=2.8", "pywin32; sys_platform == 'win32'"),
        dist("transformers", "5.24.0", "numpy>=1.17", "tokenizers<0.24.0,>=0.23.1"),
        dist("huggingface-hub", "1.40.0", "hf-newthing>=1"),
        dist("torch", "2.13.0", "sympy>=1.13"),
    )
}
MACHINE_VERSIONS = {
    "torch": "2.11.0",
    "tokenizers": "0.23.2",
    "transformers": "5.17.0",
    "huggingface-hub": "1.33.0",
}
MACHINE = Machine(
    frozenset(map(canonicalize_name, [*MACHINE_VERSIONS, "numpy", "idna", "anyio", "triton"])),
    {canonicalize_name(name): Version(version) for name, version in MACHINE_VERSIONS.items()},
)
PACKAGE = wanted(
    *(
        "torch==2.13.0",
        "transformers==5.24.0",
        "huggingface-hub>=1.0",
        "pydantic>=2.7",
        "pydantic-settings>=2.7",
    ),
    *("fastapi>=0.115", "boto3>=1.35"),
)
# The hand-kept list as it stood when the runbook broke: everything but pydantic-settings and its own needs.
HAND_KEPT = ["pydantic", "pydantic-core", "annotated-types", "fastapi", "starlette", "anyio", "transformers",
             "boto3", "botocore"]  # fmt: skip


def test_a_wheel_set_without_pydantic_settings_is_caught_naming_it() -> None:
    hand_kept = {name: VENV[name] for name in HAND_KEPT}
    assert unmet(PACKAGE, hand_kept, MACHINE, PY312) == [
        "sdxl-bedrock needs pydantic-settings>=2.7: pydantic-settings is neither carried nor on the machine"
    ]


def test_the_derived_set_carries_pydantic_settings_and_what_it_needs() -> None:
    derived = derive(PACKAGE, VENV.get, MACHINE, PY312)
    assert derived.problems == []
    assert {"pydantic-settings", "python-dotenv"} <= set(derived.carried)
    assert derived.carried["pydantic-settings"].version == Version("2.16.3")  # the .venv's
    assert unmet(PACKAGE, derived.carried, MACHINE, PY312) == []


def test_a_dependency_the_venv_lacks_is_an_error_naming_it() -> None:
    venv = {name: d for name, d in VENV.items() if name != "pydantic-settings"}
    problems = derive(PACKAGE, venv.get, MACHINE, PY312).problems
    assert len(problems) == 1
    assert problems[0].startswith(
        "pydantic-settings: sdxl-bedrock needs pydantic-settings>=2.7, which is neither"
    )


def test_the_machines_packages_are_carried_only_when_their_version_is_ruled_out() -> None:
    derived = derive(PACKAGE, VENV.get, MACHINE, PY312)
    # 5.17.0 there, ==5.24.0 asked: ours shadows it, and its needs are followed (tokenizers 0.23.2 will do).
    assert "shadows the machine's 5.17.0" in derived.why["transformers"]
    assert "tokenizers" not in derived.carried and "numpy" not in derived.carried
    # The machine's huggingface-hub 1.33.0 meets >=1.0: not carried, nor what our newer one needs.
    assert "huggingface-hub" not in derived.carried and "hf-newthing" not in derived.carried
    # anyio is there at a version nobody read: CARRY_OVER_THE_MACHINE carries ours anyway.
    assert "anyio" in derived.carried and "idna" not in derived.carried
    # torch==2.13.0 is not the machine's 2.11.0, and is never carried all the same, nor what it needs.
    assert not {"torch", "sympy"} & set(derived.carried)


def test_markers_are_evaluated_for_the_machines_python_and_extras_only_when_asked() -> None:
    on_312 = derive(PACKAGE, VENV.get, MACHINE, PY312)
    assert "exceptiongroup" not in on_312.carried  # python_version < '3.12'
    assert "exceptiongroup" in derive(PACKAGE, VENV.get, MACHINE, target("3.11")).carried
    assert "pywin32" not in on_312.carried and on_312.problems == []
    with_extra = wanted("pydantic-settings[aws-secrets-manager]>=2.7")
    assert "boto3" in derive(with_extra, VENV.get, MACHINE, PY312).carried
    assert "boto3" not in derive(wanted("pydantic-settings>=2.7"), VENV.get, MACHINE, PY312).carried


def test_a_need_of_the_machines_python_alone_that_the_venv_lacks_is_an_error() -> None:
    # The .venv's 3.11 never installed it, so nothing here could carry it: only the 3.12 derivation knows.
    venv = {
        **VENV,
        "fastapi": dist("fastapi", "0.165.0", "starlette>=1.6.0", "py312-only; python_version >= '3.12'"),
    }
    assert derive(PACKAGE, venv.get, MACHINE, target("3.11")).problems == []
    problems = derive(PACKAGE, venv.get, MACHINE, PY312).problems
    assert [problem.split(":")[0] for problem in problems] == ["py312-only"]


def test_a_dependency_added_to_pyproject_is_picked_up(tmp_path: Path) -> None:
    text = PYPROJECT.read_text()
    assert "dependencies = [\n" in text
    pyproject = tmp_path / "pyproject.toml"
    pyproject.write_text(text.replace("dependencies = [\n", 'dependencies = [\n    "lora-adapters>=1",\n', 1))
    venv = {**VENV, "lora-adapters": dist("lora-adapters", "1.2.0", "python-dotenv>=1")}
    derived = derive(roots(pyproject), venv.get, MACHINE, PY312)
    assert derived.carried["lora-adapters"].version == Version("1.2.0")
    assert "lora-adapters" in derive(roots(pyproject), installed(), Machine.read(), PY312).problems[0]


@pytest.mark.parametrize("python", ["3.12", "3.11"])  # the machine, and make gpu-check's stand-in
def test_every_runtime_dependency_is_carried_or_on_the_machine(python: str) -> None:
    """The real pyproject.toml, the real .venv, the machine's package list."""
    machine, environment = Machine.read(), target(python)
    derived = derive(roots(), installed(), machine, environment)
    assert derived.problems == []
    assert unmet(roots(), derived.carried, machine, environment) == []
    assert not [name for name in derived.carried if never_carried(name)]
    assert "pydantic-settings" in derived.carried
