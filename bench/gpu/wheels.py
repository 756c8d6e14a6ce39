"""Derive the wheels the GPU machine lacks, fetch them into .gpu-wheels/ and prove the set complete.

    python bench/gpu/wheels.py [--dest .gpu-wheels] [--python 3.12] [--max-mib 45]
    python bench/gpu/wheels.py [--python 3.12] --list {carried,absent,machine}

1. The set is derived, never written down: from pyproject.toml's `[project].dependencies` and RUNBOOK below
   (the little the runbook runs beyond the package), each requirement is followed through the metadata of
   the distributions installed in the CPU .venv (importlib.metadata; markers evaluated for Linux x86_64
   CPython at --python, the machine's 3.12). A package the machine already has (device-packages.txt) is
   not carried, and what it needs is the machine's business, unless a requirement rules out its known
   version or CARRY_OVER_THE_MACHINE says why ours must shadow it; then it is carried and followed like
   the rest. torch, triton and nvidia-* are never carried: the machine's CUDA builds are the ones to
   measure. Each carried package is pinned to the .venv's version, so GPU and CPU figures come from the
   same code. A dependency that is neither on the machine nor installed in the .venv is an error naming it.
2. `pip download --no-deps --only-binary=:all:` of those pins for CPython --python manylinux x86_64, of the
   pins not in --dest yet; wheels of other versions left in --dest go.
3. botocore is cut down to the service models that boto3 needs here (bedrock-runtime and the credential
   services): its ~450 other models are 15 MiB of the 64 MiB that may travel to the machine.
4. Checks, any failure exits 1: pip finds every pin in --dest for that interpreter (`pip install --dry-run
   --no-index`); every requirement of the package itself and of every carried wheel, as the downloaded
   wheels state them, is met by a carried wheel or by the machine; the total stays under --max-mib.

`--list` prints the derived set without downloading anything: `carried` (name==version, every wheel),
`absent` (the carried packages the machine lacks altogether) or `machine` (the machine's own packages that
the set relies on or shadows, ==version where known: what simulate.sh's stand-in for the machine holds).
`--python 3.11 --dest DIR` fetches the set for the CPU simulation of the machine on this 3.11 box (`make
gpu-check`).
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
import tempfile
import tomllib
import zipfile
from collections import deque
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from email.parser import Parser
from importlib import metadata
from pathlib import Path

from packaging.markers import default_environment
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name, parse_wheel_filename
from packaging.version import Version

REPO = Path(__file__).resolve().parents[2]
PYPROJECT = REPO / "pyproject.toml"
DEVICE_PACKAGES = Path(__file__).with_name("device-packages.txt")
PLATFORMS = ["manylinux_2_28_x86_64", "manylinux_2_17_x86_64", "manylinux2014_x86_64"]
MACHINE_PYTHON = "3.12.3"
PACKAGE = "sdxl-bedrock"

# What the runbook runs beyond the package's own runtime set, by name; the version ranges are
# pyproject's dev extra's, so they are written once.
RUNBOOK = {
    "pytest": "the tests stage runs `python -m pytest` on tests/gpu",
    "pytest-timeout": "pyproject's pytest settings set `timeout`, which only this plugin reads",
}
# The machine has these at versions nobody has read there, and an older one than ours breaks the run.
CARRY_OVER_THE_MACHINE = {
    "typing-extensions": "pydantic's typing-extensions>=4.16 is newer than an image's usual one, whose "
    "version there is not known; a too-old one breaks every import of pydantic",
    "anyio": "its version there is not known; an older anyio's pytest plugin breaks pytest 9.2 under our "
    "filterwarnings=error (seen in `make gpu-check`)",
}
# botocore's service models that a boto3 client with static keys and an endpoint_url reads here.
BOTOCORE_KEEP = {"bedrock-runtime", "sts", "sso", "sso-oidc"}


def never_carried(name: str) -> bool:
    """The machine's CUDA builds must stay the ones in use."""
    return name in {"torch", "triton"} or name.startswith("nvidia-")


@dataclass(frozen=True)
class Dist:
    """A distribution as its metadata describes it."""

    name: str
    version: Version
    requires: tuple[str, ...] = ()


@dataclass(frozen=True)
class Machine:
    has: frozenset[str]
    versions: Mapping[str, Version]

    @classmethod
    def read(cls, path: Path = DEVICE_PACKAGES) -> Machine:
        lines = [line.split("#")[0].strip() for line in path.read_text().splitlines()]
        has: set[str] = set()
        versions: dict[str, Version] = {}
        for requirement in (Requirement(line) for line in lines if line):
            name = canonicalize_name(requirement.name)
            has.add(name)
            pins = [spec.version for spec in requirement.specifier if spec.operator == "=="]
            if pins:
                versions[name] = Version(pins[0])
        return cls(frozenset(has), versions)


@dataclass
class WheelSet:
    carried: dict[str, Dist] = field(default_factory=dict)
    # the first requirement that brought each carried package, for the printout
    why: dict[str, str] = field(default_factory=dict)
    # the machine's packages the set relies on, with the requirements on each
    machine: dict[str, list[str]] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)


def target(python: str) -> dict[str, str]:
    """Marker variables of CPython `python` on Linux x86_64 (the machine's, for 3.12)."""
    full = MACHINE_PYTHON if python == MACHINE_PYTHON.rsplit(".", 1)[0] else python + ".0"
    environment = {key: str(value) for key, value in default_environment().items()}
    environment.update(
        python_version=python, python_full_version=full, implementation_name="cpython",
        implementation_version=full, platform_python_implementation="CPython", sys_platform="linux",
        platform_system="Linux", platform_machine="x86_64", os_name="posix",
    )  # fmt: skip
    return environment


def roots(pyproject: Path = PYPROJECT) -> list[tuple[str, Requirement]]:
    """What the machine must run, each with who asks for it."""
    project = tomllib.loads(pyproject.read_text())["project"]
    wanted = [(PACKAGE, Requirement(line)) for line in project["dependencies"]]
    development = {
        canonicalize_name(requirement.name): requirement
        for requirement in map(Requirement, project["optional-dependencies"]["dev"])
    }
    for name, reason in RUNBOOK.items():
        if name not in development:
            raise SystemExit(f"wheels.py: RUNBOOK names {name} ({reason}), which pyproject's dev extra lacks")
        wanted.append(("the runbook", development[canonicalize_name(name)]))
    return wanted


def installed() -> Callable[[str], Dist | None]:
    """The distributions of the running interpreter (the CPU .venv), by canonical name."""
    found: dict[str, Dist] = {}
    for distribution in metadata.distributions():
        name = canonicalize_name(distribution.metadata["Name"])
        # the first on sys.path wins, as it does for an import
        found.setdefault(name, Dist(name, Version(distribution.version), tuple(distribution.requires or ())))
    return found.get


def applies(requirement: Requirement, extra: str, environment: Mapping[str, str]) -> bool:
    if requirement.marker is None:
        return extra == ""
    return requirement.marker.evaluate({**environment, "extra": extra})


def follow(
    wanted: Iterable[tuple[str, Requirement]],
    carry: Callable[[str, Requirement, str], Dist | None],
    environment: Mapping[str, str],
) -> None:
    """Walk the requirements from `wanted`: `carry(requirer, requirement, name)` says which distribution
    travels for it (its requirements are followed too, with the extras asked of it) or None (a leaf)."""
    work = deque(wanted)
    extras: dict[str, set[str]] = {}
    followed: dict[str, set[str]] = {}
    while work:
        requirer, requirement = work.popleft()
        name = canonicalize_name(requirement.name)
        extras.setdefault(name, {""}).update(requirement.extras)
        dist = carry(requirer, requirement, name)
        if dist is None:
            continue
        for extra in sorted(extras[name] - followed.setdefault(name, set())):
            followed[name].add(extra)
            for line in dist.requires:
                needed = Requirement(line)
                if applies(needed, extra, environment):
                    work.append((name, needed))


def derive(
    wanted: Iterable[tuple[str, Requirement]],
    lookup: Callable[[str], Dist | None],
    machine: Machine,
    environment: Mapping[str, str],
) -> WheelSet:
    """The packages to carry so that everything `wanted` needs is carried or on the machine."""
    result = WheelSet()
    constraints: dict[str, list[tuple[str, Requirement]]] = {}

    def carry(requirer: str, requirement: Requirement, name: str) -> Dist | None:
        key = canonicalize_name(name)
        constraints.setdefault(key, []).append((requirer, requirement))
        if never_carried(key):
            return None
        if key not in result.carried:
            reason = reason_to_carry(key, requirer, requirement, machine)
            if reason is None:
                result.machine.setdefault(key, []).append(f"{requirement} ({requirer})")
                return None
            dist = lookup(key)
            if dist is None:
                result.problems.append(
                    f"{key}: {requirer} needs {requirement}, which is neither on the machine nor installed "
                    "in the CPU .venv to carry (`make install` after a pyproject.toml change)"
                )
                return None
            result.carried[key] = dist
            result.why[key] = reason
            result.machine.pop(key, None)
        return result.carried[key]

    follow(wanted, carry, environment)
    for name, dist in result.carried.items():
        for requirer, requirement in constraints[name]:
            if not requirement.specifier.contains(dist.version, prereleases=True):
                result.problems.append(
                    f"{name}: {requirer} needs {requirement}, the .venv has {dist.version}"
                )
    return result


def reason_to_carry(name: str, requirer: str, requirement: Requirement, machine: Machine) -> str | None:
    if name not in machine.has:
        return f"{requirer} needs {requirement}; the machine lacks it"
    if name in CARRY_OVER_THE_MACHINE:
        return f"shadows the machine's: {CARRY_OVER_THE_MACHINE[name]}"
    known = machine.versions.get(name)
    if known is not None and not requirement.specifier.contains(known, prereleases=True):
        return f"shadows the machine's {known}: {requirer} needs {requirement}"
    return None


def unmet(
    wanted: Iterable[tuple[str, Requirement]],
    carried: Mapping[str, Dist],
    machine: Machine,
    environment: Mapping[str, str],
) -> list[str]:
    """What a proposed wheel set leaves unmet: every requirement reachable from `wanted` through carried
    packages must be met by a carried one or by the machine (a version not known there is trusted)."""
    problems: list[str] = []
    carried = {canonicalize_name(name): dist for name, dist in carried.items()}

    def carry(requirer: str, requirement: Requirement, name: str) -> Dist | None:
        key = canonicalize_name(name)
        if never_carried(key):
            return None
        if key in carried:
            version: Version | None = carried[key].version
            where = "carries"
        elif key in machine.has:
            version = machine.versions.get(key)
            where = "the machine has"
        else:
            problems.append(f"{requirer} needs {requirement}: {key} is neither carried nor on the machine")
            return None
        if version is not None and not requirement.specifier.contains(version, prereleases=True):
            problems.append(f"{requirer} needs {requirement}, but the set {where} {key} {version}")
        return carried.get(key)

    follow(wanted, carry, environment)
    return list(dict.fromkeys(problems))


# -- fetching ------------------------------------------------------------------------------------------------


def tags(python: str) -> list[str]:
    abi = "cp" + python.replace(".", "")
    platforms = [arg for platform in PLATFORMS for arg in ("--platform", platform)]
    interpreter = ["--python-version", python, "--implementation", "cp", "--abi", abi]
    return ["--only-binary=:all:", *interpreter, *platforms]


def pip(*args: str) -> None:
    print("+ pip " + " ".join(args), flush=True)
    subprocess.run([sys.executable, "-m", "pip", *args], check=True)


def wheels(dest: Path) -> dict[str, Dist]:
    """The wheels in `dest`, as their own metadata describes them."""
    found: dict[str, Dist] = {}
    for path in sorted(dest.glob("*.whl")):
        name, version, _, _ = parse_wheel_filename(path.name)
        with zipfile.ZipFile(path) as wheel:
            metadata_name = next(n for n in wheel.namelist() if n.endswith(".dist-info/METADATA"))
            parsed = Parser().parsestr(wheel.read(metadata_name).decode())
        found[canonicalize_name(name)] = Dist(name, version, tuple(parsed.get_all("Requires-Dist") or ()))
    return found


def prune(dest: Path, pins: Mapping[str, Version]) -> None:
    """Leave one wheel per pin: pip refuses two versions of one name in a --no-deps install."""
    for path in sorted(dest.glob("*.whl")):
        name, version, _, _ = parse_wheel_filename(path.name)
        if pins.get(canonicalize_name(name)) != version:
            print(f"removing {path.name}: not in the derived set")
            path.unlink()


def slim_botocore(dest: Path) -> None:
    for path in dest.glob("botocore-*.whl"):
        kept = re.compile("botocore/data/(?:[^/]+$|(?:{})/)".format("|".join(map(re.escape, BOTOCORE_KEEP))))
        with zipfile.ZipFile(path) as source:
            names = source.namelist()
            dropped = {n for n in names if n.startswith("botocore/data/") and not kept.match(n)}
            if not dropped:
                continue
            slim = path.with_suffix(".slim")
            with zipfile.ZipFile(slim, "w", zipfile.ZIP_DEFLATED) as target_zip:
                for info in source.infolist():
                    if info.filename in dropped:
                        continue
                    data = source.read(info)
                    if info.filename.endswith(".dist-info/RECORD"):
                        lines = data.decode().splitlines(keepends=True)
                        data = "".join(line for line in lines if line.split(",")[0] not in dropped).encode()
                    target_zip.writestr(info, data)
        slim.replace(path)
        print(f"slimmed {path.name}: dropped {len(dropped)} files of unused botocore service models")


def listing(wheel_set: WheelSet, machine: Machine, what: str) -> list[str]:
    if what == "carried":
        return [f"{name}=={dist.version}" for name, dist in sorted(wheel_set.carried.items())]
    if what == "absent":
        return sorted(name for name in wheel_set.carried if name not in machine.has)
    # the machine's own packages the set touches: relied on, or shadowed by a carried one
    touched = set(wheel_set.machine) | (set(wheel_set.carried) & machine.has)
    return [
        f"{name}=={machine.versions[name]}" if name in machine.versions else name for name in sorted(touched)
    ]


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--dest", type=Path, default=REPO / ".gpu-wheels")
    parser.add_argument("--python", default="3.12", help="the target interpreter's X.Y (the machine: 3.12)")
    parser.add_argument("--max-mib", type=float, default=45.0)
    parser.add_argument("--list", choices=["carried", "absent", "machine"])
    args = parser.parse_args()

    machine = Machine.read()
    environment = target(args.python)
    wanted = roots()
    wheel_set = derive(wanted, installed(), machine, environment)
    for problem in wheel_set.problems:
        print(f"error: {problem}", file=sys.stderr)
    if wheel_set.problems:
        return 1
    if args.list:
        print("\n".join(listing(wheel_set, machine, args.list)))
        return 0

    print(f"derived from {PYPROJECT.name} and the .venv for CPython {args.python} (bench/gpu/wheels.py):")
    for name, dist in sorted(wheel_set.carried.items()):
        print(f"  carry {name}=={dist.version}: {wheel_set.why[name]}")
    print(f"  on the machine, not carried: {' '.join(sorted(wheel_set.machine))}")
    pins = {name: dist.version for name, dist in wheel_set.carried.items()}
    args.dest.mkdir(parents=True, exist_ok=True)
    prune(args.dest, pins)
    # Only what is not there yet: pip would fetch the slimmed botocore again (its hash is not PyPI's).
    present = wheels(args.dest)
    needed = [f"{name}=={version}" for name, version in sorted(pins.items()) if name not in present]
    if needed:
        pip("download", "--quiet", "--no-deps", *tags(args.python), "-d", str(args.dest), *needed)
    else:
        print(f"every wheel of the set is already in {args.dest}")
    slim_botocore(args.dest)

    requirements = [f"{name}=={version}" for name, version in sorted(pins.items())]
    with tempfile.TemporaryDirectory() as target_dir:
        pip(
            "install", "--quiet", "--dry-run", "--no-index", "--no-deps", "--find-links", str(args.dest),
            *tags(args.python), "--target", target_dir, *requirements,
        )  # fmt: skip
    fetched = wheels(args.dest)
    # The downloaded wheels' own metadata this time: a cp312 wheel may state other needs than the .venv's.
    problems = unmet(wanted, fetched, machine, environment)
    problems += [
        f"{name}: in the set but no wheel in {args.dest}" for name in sorted(set(pins) - set(fetched))
    ]
    total = sum(path.stat().st_size for path in args.dest.glob("*.whl"))
    for path in sorted(args.dest.glob("*.whl")):
        print(f"{path.stat().st_size / 2**20:8.2f} MiB  {path.name}")
    print(f"{total / 2**20:8.2f} MiB  in {len(fetched)} wheels, {args.dest}")
    if total > args.max_mib * 2**20:
        problems.append(f"{total / 2**20:.1f} MiB is over --max-mib {args.max_mib}")
    for problem in problems:
        print(f"error: {problem}", file=sys.stderr)
    if not problems:
        print("complete: every requirement is carried or already on the machine (torch is the machine's)")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
