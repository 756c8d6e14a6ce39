"""Fetch the wheels the GPU machine lacks into .gpu-wheels/ and prove the set complete (`make gpu-wheels`).

    python bench/gpu/wheels.py [--dest .gpu-wheels] [--python 3.12] [--max-mib 45]

1. `pip download --no-deps --only-binary=:all:` of bench/gpu/requirements.txt for CPython 3.12 manylinux
   x86_64 (the machine's /opt/torch/.venv/bin/python3), of the pins not in --dest yet; wheels of other
   versions left in --dest go.
2. botocore is cut down to the service models that boto3 needs here (bedrock-runtime and the credential
   services): its ~450 other models are 15 MiB of the 64 MiB that may travel to the machine.
3. Checks, any failure exits 1: pip finds every pinned requirement in --dest for that interpreter
   (`pip install --dry-run --no-index`); every requirement of every carried wheel (markers evaluated for
   Linux x86_64 and that Python) is met by a carried wheel or by a package the machine already has
   (bench/gpu/device-packages.txt, versions where known); nothing carried is torch; the total
   stays under --max-mib. Prints the size.

`--python 3.11 --dest DIR` fetches the same set for a CPU simulation of the machine on this 3.11 box.
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
import tempfile
import zipfile
from email.parser import Parser
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name, parse_wheel_filename
from packaging.version import Version

REPO = Path(__file__).resolve().parents[2]
REQUIREMENTS = Path(__file__).with_name("requirements.txt")
PLATFORMS = ["manylinux_2_28_x86_64", "manylinux_2_17_x86_64", "manylinux2014_x86_64"]

# Versions of what the machine's python3 holds, where a session's pip list there showed them;
# device-packages.txt names all of its packages.
DEVICE_VERSIONS = {
    "accelerate": "1.15.0",
    "huggingface-hub": "1.33.0",
    "numpy": "2.5.2",
    "safetensors": "0.8.0",
    "tokenizers": "0.23.2",
    "torch": "2.11.0",
    "transformers": "5.17.0",
    "triton": "3.6.0",
}
DEVICE_HAS = {
    canonicalize_name(line)
    for line in Path(__file__).with_name("device-packages.txt").read_text().splitlines()
    if line and not line.startswith("#")
}
# botocore's service models that a boto3 client with static keys and an endpoint_url reads here.
BOTOCORE_KEEP = {"bedrock-runtime", "sts", "sso", "sso-oidc"}
NEVER_CARRY = {"torch", "triton"}  # the machine's CUDA builds must stay the ones in use


def pinned() -> dict[str, Requirement]:
    lines = [line.split("#")[0].strip() for line in REQUIREMENTS.read_text().splitlines()]
    requirements = [Requirement(line) for line in lines if line]
    return {canonicalize_name(r.name): r for r in requirements}


def tags(python: str) -> list[str]:
    abi = "cp" + python.replace(".", "")
    platforms = [arg for platform in PLATFORMS for arg in ("--platform", platform)]
    interpreter = ["--python-version", python, "--implementation", "cp", "--abi", abi]
    return ["--only-binary=:all:", *interpreter, *platforms]


def pip(*args: str) -> None:
    print("+ pip " + " ".join(args), flush=True)
    subprocess.run([sys.executable, "-m", "pip", *args], check=True)


def wheels(dest: Path) -> dict[str, tuple[Version, Path]]:
    found: dict[str, tuple[Version, Path]] = {}
    for path in sorted(dest.glob("*.whl")):
        name, version, _, _ = parse_wheel_filename(path.name)
        found[canonicalize_name(name)] = (version, path)
    return found


def prune(dest: Path, wanted: dict[str, Requirement]) -> None:
    """Leave one wheel per pinned package: pip refuses two versions of one name in a --no-deps install."""
    for path in sorted(dest.glob("*.whl")):
        name, version, _, _ = parse_wheel_filename(path.name)
        requirement = wanted.get(canonicalize_name(name))
        if requirement is None or not requirement.specifier.contains(version, prereleases=True):
            print(f"removing {path.name}: not in {REQUIREMENTS.name}")
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
            with zipfile.ZipFile(slim, "w", zipfile.ZIP_DEFLATED) as target:
                for info in source.infolist():
                    if info.filename in dropped:
                        continue
                    data = source.read(info)
                    if info.filename.endswith(".dist-info/RECORD"):
                        lines = data.decode().splitlines(keepends=True)
                        data = "".join(line for line in lines if line.split(",")[0] not in dropped).encode()
                    target.writestr(info, data)
        slim.replace(path)
        print(f"slimmed {path.name}: dropped {len(dropped)} files of unused botocore service models")


def check_complete(dest: Path, python: str) -> list[str]:
    """Every requirement of every carried wheel met by a carried wheel or by the machine's own packages."""
    carried = wheels(dest)
    environment = {
        "python_version": python,
        "python_full_version": python + ".3",
        "implementation_name": "cpython",
        "platform_python_implementation": "CPython",
        "sys_platform": "linux",
        "platform_system": "Linux",
        "platform_machine": "x86_64",
        "os_name": "posix",
        "extra": "",
    }
    problems = []
    for name, (_, path) in carried.items():
        if name in NEVER_CARRY:
            problems.append(f"{path.name}: never carried (the machine's CUDA build is the one to use)")
        with zipfile.ZipFile(path) as wheel:
            metadata_name = next(n for n in wheel.namelist() if n.endswith(".dist-info/METADATA"))
            metadata = Parser().parsestr(wheel.read(metadata_name).decode())
        for line in metadata.get_all("Requires-Dist") or []:
            requirement = Requirement(line)
            if requirement.marker and not requirement.marker.evaluate(environment):
                continue
            needed = canonicalize_name(requirement.name)
            if needed in carried:
                version = carried[needed][0]
            elif needed in DEVICE_VERSIONS:
                version = Version(DEVICE_VERSIONS[needed])
            elif needed in DEVICE_HAS:
                continue  # there, version not known: run.sh's `pip check` on the machine reads it
            else:
                problems.append(f"{name} needs {requirement}: neither carried nor on the machine")
                continue
            if not requirement.specifier.contains(version, prereleases=True):
                problems.append(f"{name} needs {requirement}, but the machine gets {needed} {version}")
    return problems


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--dest", type=Path, default=REPO / ".gpu-wheels")
    parser.add_argument("--python", default="3.12", help="the target interpreter's X.Y (the machine: 3.12)")
    parser.add_argument("--max-mib", type=float, default=45.0)
    args = parser.parse_args()

    wanted = pinned()
    if NEVER_CARRY & set(wanted):
        print(f"error: {REQUIREMENTS} names {NEVER_CARRY & set(wanted)}", file=sys.stderr)
        return 1
    args.dest.mkdir(parents=True, exist_ok=True)
    prune(args.dest, wanted)
    # Only what is not there yet: pip would fetch the slimmed botocore again (its hash is not PyPI's).
    needed = [str(requirement) for name, requirement in wanted.items() if name not in wheels(args.dest)]
    if needed:
        pip("download", "--quiet", "--no-deps", *tags(args.python), "-d", str(args.dest), *needed)
    else:
        print(f"every pinned wheel is already in {args.dest}")
    slim_botocore(args.dest)

    with tempfile.TemporaryDirectory() as target:
        pip(
            "install", "--quiet", "--dry-run", "--no-index", "--no-deps", "--find-links", str(args.dest),
            *tags(args.python), "--target", target, "-r", str(REQUIREMENTS),
        )  # fmt: skip
    problems = check_complete(args.dest, args.python)
    missing = set(wanted) - set(wheels(args.dest))
    problems += [f"{name}: pinned but no wheel in {args.dest}" for name in sorted(missing)]
    total = sum(path.stat().st_size for path in args.dest.glob("*.whl"))
    for path in sorted(args.dest.glob("*.whl")):
        print(f"{path.stat().st_size / 2**20:8.2f} MiB  {path.name}")
    print(f"{total / 2**20:8.2f} MiB  in {len(wheels(args.dest))} wheels, {args.dest}")
    if total > args.max_mib * 2**20:
        problems.append(f"{total / 2**20:.1f} MiB is over --max-mib {args.max_mib}")
    for problem in problems:
        print(f"error: {problem}", file=sys.stderr)
    if not problems:
        print("complete: every requirement is carried or already on the machine (torch is the machine's)")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
