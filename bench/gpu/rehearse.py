"""The priority order of bench/gpu/run.sh, rehearsed on a CPU with a cut at each stage (`make gpu-check`).

    python bench/gpu/rehearse.py --recorded DIR --python STAND_IN --wheels DIR --scratch DIR --out-root DIR

run.sh is the code under rehearsal; its stages' commands are replayed: a stand-in interpreter
(`replay-python`, this file run as `--replay ...`) answers `-m pytest`, `-m bench.run` and `-m bench.vae` by
writing the figures a real dry run of run.sh recorded into DIR (run by simulate.sh just before, so the
commands themselves are proven there), skips the set-up's version probe and `pip check` (proven there too)
and passes everything else (pip install, summary.py) to the stand-in python. `bench.run --help` is answered
with a `--workload` line, so the mixed stage runs too.

For each stage, in priority order, run.sh is started in a process group of its own; the replayed command
of that stage writes its figures and then hangs, and once those figures are in $OUT the whole group is
killed with SIGKILL, as the device tool kills a command at its timeout_s. Then $OUT must hold: the figures
of every earlier stage and of the cut one, none of a later one; a summary.md whose stage table says ok for
the earlier stages, "running when the call ended" for the cut one and "not reached" for the later ones, and
whose targets say "not measured" where the figures are missing; at most 8 files, no half-written `.part`.
Last, one stage (compiled) hangs past its own cap (20 s): it must be recorded as cut at its cap and the
later stages must still run. Exits 1 on the first broken expectation.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
STAGES = ("tests", "eager", "compiled", "mixed", "vae")
FIGURES = {"eager": "bench-eager.json", "compiled": "bench-compiled.json", "mixed": "bench-mixed.json",
           "vae": "vae.json"}  # fmt: skip
NAME = re.compile(r"^[A-Za-z0-9._-]+$")
MEASURED = re.compile(r"[0-9.]+ s: (met|NOT met)( \(stage .*\))?")  # a target cell with a figure
WAIT_S = 600  # for a stage to be reached: the set-up imports torch on a shared CPU


# -- the replaying interpreter ------------------------------------------------------------------------------


def option(argv: list[str], name: str) -> str:
    for index, argument in enumerate(argv):
        if argument == name:
            return argv[index + 1]
        if argument.startswith(name + "="):
            return argument.split("=", 1)[1]
    raise SystemExit(f"replay: {name} missing from {argv}")


def mixed_from(recorded: Path) -> dict[str, object]:
    """The mixed phase's JSON: the recorded one, or, while bench.run has no such phase, the eager one with
    the keys the continuous-batching issue adds (a `workload`, `mean_rows_per_tick` under the server's)."""
    if (recorded / "bench-mixed.json").exists():
        return json.loads((recorded / "bench-mixed.json").read_text())
    results = json.loads((recorded / "bench-eager.json").read_text())
    results["workload"] = "mixed"
    served = results["server_boto3"]
    served["images_per_s"] = {"1": 1.0, **served["images_per_s"]}
    served["mean_rows_per_tick"] = 1.5
    return results


def replay(argv: list[str]) -> int:
    stand_in = os.environ["SDXL_GPU_REPLAY_PYTHON"]
    recorded = Path(os.environ["SDXL_GPU_REPLAY_FROM"])
    stage = os.environ.get("SDXL_GPU_STAGE", "")
    module = argv[1] if argv[:1] == ["-m"] else None
    if argv == ["-"] or argv[:3] == ["-m", "pip", "check"]:
        # The set-up's version probe and pip check: proven by the full dry run; here they would only
        # cost each rehearsal a torch import.
        sys.stdin.read()
        print(f"replay: {' '.join(argv)} skipped (the full dry run ran it)")
        return 0
    if module == "bench.run" and "--help" in argv:
        help_text = subprocess.run([stand_in, *argv], capture_output=True, text=True, check=True).stdout
        print(help_text + "  --workload {alike,mixed}   (rehearsal: the continuous-batching phase, replayed)")
        return 0
    if module == "pytest" and stage:
        shutil.copy(recorded / "pytest-gpu.xml", option(argv, "--junitxml"))
    elif module == "bench.run" and stage:
        out_dir = Path(option(argv, "--out-dir"))
        if stage == "mixed":
            results = mixed_from(recorded)
        else:
            results = json.loads((recorded / FIGURES[stage]).read_text())
        (out_dir / "server-1.log").write_text(f"sdxl-bedrock listening on (replayed for {stage})\n")
        (out_dir / "bench-replayed.json").write_text(json.dumps(results, indent=2))
    elif module == "bench.vae" and stage:
        out_dir = Path(option(argv, "--out-dir"))
        out_dir.mkdir(parents=True, exist_ok=True)  # as bench.vae does
        shutil.copy(recorded / "vae.json", out_dir / "vae-replayed.json")
    else:
        os.execv(stand_in, [stand_in, *argv])
    print(f"replay: {stage} wrote its figures", flush=True)
    if stage == os.environ.get("SDXL_GPU_REPLAY_HANG"):
        Path(os.environ["SDXL_GPU_REPLAY_MARKER"]).write_text(stage)
        print(f"replay: {stage} hangs, as a stage does when the call is cut there", flush=True)
        while True:
            signal.pause()
    return 0


# -- the rehearsal -------------------------------------------------------------------------------------------


class Broken(Exception):
    pass


def expect(condition: bool, message: str) -> None:
    if not condition:
        raise Broken(message)


def stage_rows(summary: str) -> dict[str, str]:
    """The status column of summary.md's stage table, by stage."""
    rows = {}
    for line in summary.splitlines():
        cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
        if len(cells) == 7 and cells[1] in STAGES and cells[0].isdigit():
            rows[cells[1]] = cells[6]
    return rows


def shows(path: Path, stage: str) -> bool:
    """Whether summary.md shows `stage` running, with the figures it has written so far."""
    summary = path.read_text() if path.exists() else ""
    if stage_rows(summary).get(stage) != "running when the call ended: cut there":
        return False
    if stage in ("eager", "compiled"):
        cell = p50_cells(summary)[("eager", "compiled").index(stage)]
        return MEASURED.fullmatch(cell) is not None
    if stage == "mixed":
        line = next(line for line in summary.splitlines() if line.startswith("- mixed"))
        return re.search(r": [0-9]+ clients [0-9.]+x", line) is not None
    if stage == "vae":
        return "#### VAE" in summary
    return True


def p50_cells(summary: str) -> list[str]:
    """The eager and compiled cells of the targets' p50 row."""
    for line in summary.splitlines():
        if line.startswith("| p50 of one request"):
            return [cell.strip() for cell in line.strip().strip("|").split("|")][1:]
    raise Broken("summary.md has no p50 target row")


def start(args: argparse.Namespace, out: Path, hang: str, extra: dict[str, str]) -> subprocess.Popen[bytes]:
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    marker = out.parent / f"{out.name}.marker"
    marker.unlink(missing_ok=True)
    environment = {
        **os.environ,
        "OUT": str(out),
        "SDXL_GPU_DRYRUN": "1",
        "PIP_NO_INDEX": "1",
        "SDXL_GPU_PYTHON": str(args.replay_python),
        "SDXL_GPU_REPLAY_PYTHON": str(args.python),
        "SDXL_GPU_REPLAY_FROM": str(args.recorded),
        "SDXL_GPU_REPLAY_HANG": hang,
        "SDXL_GPU_REPLAY_MARKER": str(marker),
        "SDXL_GPU_WHEELS": str(args.wheels),
        "SDXL_GPU_SCRATCH": str(args.scratch),
        **extra,
    }
    log = (out.parent / f"{out.name}.log").open("wb")
    # A session of its own: its process group is what the device tool kills at a call's timeout_s.
    return subprocess.Popen(
        ["bash", str(ROOT / "bench/gpu/run.sh")], env=environment, stdout=log, stderr=subprocess.STDOUT,
        start_new_session=True,
    )  # fmt: skip


def session_members(session: int) -> list[int]:
    """The processes of one session (run.sh's: each stage's `timeout` makes a process group in it)."""
    members = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError, ValueError, IndexError):
            # The fields after the command's closing parenthesis: state ppid pgrp session ...
            state, _, _, member_of = stat.read_text().rsplit(")", 1)[1].split()[:4]
            if int(member_of) == session and state != "Z":
                members.append(int(stat.parent.name))
    return members


def kill(process: subprocess.Popen[bytes]) -> None:
    """SIGKILL to everything run.sh started (its stages, their servers), as at a call's timeout_s."""
    for _ in range(10):
        members = session_members(process.pid)
        if not members:
            break
        for pid in members:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        time.sleep(0.2)
    process.wait()


def wait_for(condition: object, what: str, process: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + WAIT_S
    while time.monotonic() < deadline:
        if callable(condition) and condition():
            return
        if process.poll() is not None:
            raise Broken(f"run.sh exited ({process.returncode}) before {what}")
        time.sleep(0.5)
    raise Broken(f"waited {WAIT_S} s for {what}")


def check_out(out: Path) -> str:
    files = [path for path in out.rglob("*") if path.is_file()]
    expect(len(files) <= 8, f"{len(files)} files in $OUT: at most 8 come back")
    expect(all(NAME.match(path.name) for path in files), f"a name the device tool would not return: {files}")
    expect(not [path for path in files if path.suffix == ".part"], f"a half-written file was left: {files}")
    expect((out / "summary.md").exists(), "no summary.md")
    return (out / "summary.md").read_text()


def cut_at(args: argparse.Namespace, index: int) -> None:
    cut = STAGES[index]
    out = args.out_root / f"cut-{cut}"
    process = start(args, out, cut, {})
    marker = out.parent / f"{out.name}.marker"
    try:
        wait_for(marker.exists, f"stage {cut} to be reached", process)
        if cut in FIGURES:
            wait_for((out / FIGURES[cut]).exists, f"{cut}'s figures in $OUT while it runs", process)
        wait_for(lambda: shows(out / "summary.md", cut), f"summary.md to show {cut}'s figures", process)
    finally:
        kill(process)
    summary = check_out(out)
    rows = stage_rows(summary)
    for earlier in STAGES[:index]:
        expect(rows.get(earlier) == "ok", f"cut at {cut}: {earlier} is {rows.get(earlier)!r}, not ok")
        if earlier in FIGURES:
            expect((out / FIGURES[earlier]).exists(), f"cut at {cut}: {FIGURES[earlier]} missing")
    for later in STAGES[index + 1 :]:
        expect(rows.get(later, "").startswith("not reached"), f"cut at {cut}: {later} is {rows.get(later)!r}")
        if later in FIGURES:
            expect(not (out / FIGURES[later]).exists(), f"cut at {cut}: {FIGURES[later]} of a later stage")
    for bench, cell in zip(("eager", "compiled"), p50_cells(summary), strict=True):
        if STAGES.index(bench) <= index:
            expect(MEASURED.fullmatch(cell) is not None, f"cut at {cut}: p50 {cell!r}")
        else:
            expect(cell == "not measured: the call ended before this stage", f"cut at {cut}: p50 {cell!r}")
    print(f"rehearse: cut at {cut}: earlier stages kept, {cut} marked running, later ones not reached: ok")


def over_cap(args: argparse.Namespace) -> None:
    stage = "compiled"
    out = args.out_root / f"over-cap-{stage}"
    process = start(args, out, stage, {f"SDXL_GPU_CAP_{stage.upper()}": "20"})
    try:
        process.wait(timeout=WAIT_S)
    except subprocess.TimeoutExpired:
        raise Broken(f"over cap: run.sh still running after {WAIT_S} s") from None
    finally:
        kill(process)
    expect(process.returncode == 1, f"over cap: run.sh exited {process.returncode}, not 1")
    rows = stage_rows(check_out(out))
    expect(rows.get(stage) == "cut at its cap (20s)", f"over cap: {stage} is {rows.get(stage)!r}")
    for other in STAGES:
        if other != stage:
            expect(rows.get(other) == "ok", f"over cap: {other} is {rows.get(other)!r}, not ok")
    for file in FIGURES.values():
        expect((out / file).exists(), f"over cap: {file} missing")
    print(f"rehearse: {stage} past its cap: cut there, the later stages still ran: ok")


def main() -> int:
    if sys.argv[1:2] == ["--replay"]:
        return replay(sys.argv[2:])
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--recorded", type=Path, required=True, help="a dry run's $OUT + pytest-gpu.xml")
    parser.add_argument("--python", type=Path, required=True, help="the stand-in for the machine's python3")
    parser.add_argument("--wheels", type=Path, required=True)
    parser.add_argument("--scratch", type=Path, required=True)
    parser.add_argument("--out-root", type=Path, required=True)
    args = parser.parse_args()
    args.out_root.mkdir(parents=True, exist_ok=True)
    args.replay_python = args.out_root / "replay-python"
    this = Path(__file__).resolve()
    args.replay_python.write_text(f'#!/bin/sh\nexec "{args.python}" "{this}" --replay "$@"\n')
    args.replay_python.chmod(0o755)
    try:
        for index in range(len(STAGES)):
            cut_at(args, index)
        over_cap(args)
    except Broken as broken:
        print(f"rehearse: FAILED: {broken} (logs: {args.out_root})", file=sys.stderr)
        return 1
    print(f"rehearse: the priority order holds at every cut ({args.out_root})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
