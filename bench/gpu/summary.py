"""The Markdown for bench/RESULTS.md from what bench/gpu/run.sh left in $OUT: stages, figures, targets.

    python bench/gpu/summary.py --out DIR [--stages stages.tsv] [--card NAME] [--junit pytest-gpu.xml]
                                [--elapsed S] [--budget S]

Reads whichever of DIR/bench-eager.json, bench-compiled.json, bench-mixed.json and vae.json exist (run.sh
rewrites summary.md while stages run, so any of them may be missing or partial) and marks each target met,
NOT met, or not measured with the reason (the stage's status from --stages, the tab-separated table run.sh
keeps: stage, cap_s, estimate_s, limit_s, took_s, status).

Targets (issue 6, anchored on one H100; 1024x1024 image-to-image, 30 steps, image_strength 0.35, cfg 7,
K_DPMPP_2M): server p50 <= 0.5 s for one request; >= 2.5 images/s with 16 concurrent clients; no black/NaN
image. The mixed workload (the continuous-batching issue): >= 1.5x the server's own sequential throughput
at 8 clients is the CPU target; on a GPU the ratio is reported. Published baselines for context (H100,
text-to-image, 30 steps): diffusers eager 1.8 s, diffusers + CUDA graphs 0.85 s per image.
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
import xml.etree.ElementTree as ElementTree
from pathlib import Path
from typing import Any

P50_TARGET_S = 0.5
THROUGHPUT_TARGET = 2.5
TARGET_CONCURRENCY = "16"
MIXED_CPU_TARGET = 1.5
MIXED_CPU_CONCURRENCY = "8"
ANCHOR_CARD = "H100"
STAGES = ("tests", "eager", "compiled", "mixed", "vae")
FILES = {"eager": "bench-eager.json", "compiled": "bench-compiled.json", "mixed": "bench-mixed.json"}


def verdict(ok: bool) -> str:
    return "met" if ok else "NOT met"


def read_json(path: Path) -> dict[str, Any] | None:
    try:
        loaded = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return loaded if isinstance(loaded, dict) else None


def read_stages(path: Path | None) -> dict[str, dict[str, str]]:
    if path is None or not path.exists():
        return {}
    with path.open(newline="") as table:
        return {row["stage"]: row for row in csv.DictReader(table, delimiter="\t")}


def why_missing(stage: dict[str, str] | None) -> str:
    """What to write where a stage's figure is absent: the stage's status, said plainly."""
    status = (stage or {}).get("status", "not run")
    if status == "running":
        return "not measured: the call ended during this stage"
    if status == "waiting":
        return "not measured: the call ended before this stage"
    if status == "ok":
        return "not in its JSON"
    return f"not measured: stage {status}"


def healthy(results: dict[str, Any]) -> tuple[bool, str]:
    served = results.get("server_boto3") or {}
    reference = results.get("diffusers_in_process") or {}
    reasons = served.get("finish_reasons", {})
    blanks = served.get("blank_images_of_latency_run", 0) + reference.get("blank_images", 0)
    ok = blanks == 0 and set(reasons) <= {"SUCCESS"} and bool(reasons)
    return ok, f"finish reasons {reasons}, blank images {blanks}"


def target_rows(figures: dict[str, dict[str, Any] | None], stages: dict[str, dict[str, str]]) -> list[str]:
    lines = ["| target | eager | compiled |", "|---|---|---|"]
    cells: dict[str, list[str]] = {"p50": [], "rate": [], "health": []}
    for name in ("eager", "compiled"):
        served = (figures.get(name) or {}).get("server_boto3")
        missing = why_missing(stages.get(name))
        if not served:
            for key in cells:
                cells[key].append(missing)
            continue
        # Figures a stage wrote before it was cut stand, said so.
        status = (stages.get(name) or {}).get("status", "ok")
        note = "" if status == "ok" else f" (stage {stage_status(stages.get(name))})"
        p50 = served["p50_s"]
        cells["p50"].append(f"{p50:.3f} s: {verdict(p50 <= P50_TARGET_S)}{note}")
        rate = served.get("images_per_s", {}).get(TARGET_CONCURRENCY)
        cells["rate"].append(
            f"{rate:.2f}: {verdict(rate >= THROUGHPUT_TARGET)}{note}"
            if rate is not None
            else f"no {TARGET_CONCURRENCY}-client figure in its JSON{note}"
        )
        ok, detail = healthy(figures[name] or {})
        cells["health"].append(f"{verdict(ok)} ({detail}){note}")
    lines.append(
        f"| p50 of one request, server via boto3, <= {P50_TARGET_S} s | " + " | ".join(cells["p50"]) + " |"
    )
    lines.append(
        f"| images/s at {TARGET_CONCURRENCY} concurrent clients >= {THROUGHPUT_TARGET} | "
        + " | ".join(cells["rate"])
        + " |"
    )
    lines.append("| no black/NaN image | " + " | ".join(cells["health"]) + " |")
    return lines


def mixed_line(results: dict[str, Any] | None, stage: dict[str, str] | None) -> str:
    label = (
        f"- mixed workload, throughput against the server's own sequential (CPU target >= "
        f"{MIXED_CPU_TARGET}x at {MIXED_CPU_CONCURRENCY} clients; on this card: reported)"
    )
    served = (results or {}).get("mixed_server_boto3")
    if not served:
        status = (stage or {}).get("status", "not run")
        if status.startswith("phase not present"):
            return f"{label}: {status}"
        return f"{label}: {why_missing(stage)}"
    runs = served.get("runs", {})
    if "1" not in runs:
        return f"{label}: the JSON has no sequential rate to compare with"
    base = runs["1"]["images_per_s"]
    ratios = []
    for concurrency, run in runs.items():
        if concurrency == "1":
            continue
        ratio = run["images_per_s"] / base
        against = f" ({verdict(ratio >= MIXED_CPU_TARGET)} against the CPU target)"
        if concurrency != MIXED_CPU_CONCURRENCY:
            against = ""
        ratios.append(
            f"{concurrency} clients {ratio:.2f}x{against}, {run['mean_rows_per_tick']:.1f} rows per tick, "
            f"p50 {run['p50_s']:.2f} s"
        )
    return f"{label}: " + ("; ".join(ratios) or "no concurrent figure") + f" (sequential {base:.2f}/s)"


def describe(name: str, results: dict[str, Any], stage: dict[str, str] | None) -> list[str]:
    heading = f"#### {name}: {results.get('hardware', '?')}"
    if (stage or {}).get("status", "ok") != "ok":
        heading += f" (stage {stage_status(stage)}: what it wrote before that)"
    lines = [heading, ""]
    size = results.get("size")
    serve = " ".join(results.get("server_args", []))
    workload = results.get("workload")
    lines.append(
        f"{results.get('model')} {size}x{size}, {results.get('requests')} requests per latency figure, "
        + (f"workload {json.dumps(workload)}, " if workload is not None else "")
        + f"serve {serve}"
    )
    lines.append("")
    reference = results.get("diffusers_in_process")
    served = results.get("server_boto3")
    lines += ["| | p50 s | p95 s | ratio |", "|---|---|---|---|"]
    if reference:
        lines.append(
            f"| diffusers img2img, in-process | {reference['p50_s']:.3f} | {reference['p95_s']:.3f} | 1.00 |"
        )
    if served:
        ratio = f"{results['latency_ratio_p50']:.2f}x" if "latency_ratio_p50" in results else ""
        lines.append(
            f"| sdxl-bedrock via HTTP + boto3 | {served['p50_s']:.3f} | {served['p95_s']:.3f} | {ratio} |"
        )
    lines += ["", "| throughput | images/s | vs diffusers sequential |", "|---|---|---|"]
    if reference:
        lines.append(f"| diffusers, sequential | {reference['sequential_images_per_s']:.2f} | 1.00 |")
    if served:
        for concurrency, rate in served.get("images_per_s", {}).items():
            ratio = results.get("throughput_ratio", {}).get(concurrency)
            lines.append(
                f"| server, {concurrency} concurrent clients | {rate:.2f} | "
                + (f"{ratio:.2f}x |" if ratio is not None else " |")
            )
    lines.append("")
    if not served:
        lines.append("- the server part did not finish: see run.log and servers.log")
    else:
        ok, detail = healthy(results)
        lines.append(f"- image health: {detail}: {verdict(ok)}")
        rows = served.get("mean_rows_per_tick")
        if rows is not None:
            lines.append(f"- mean UNet rows per tick: {json.dumps(rows)}")
    codecs = results.get("host_codecs_1024")
    if codecs:
        lines.append(
            f"- host codecs 1024x1024: decode {codecs['decode_request_ms']:.1f} ms, "
            f"encode {codecs['encode_answer_ms']:.1f} ms"
        )
    return [*lines, ""]


def describe_vae(results: dict[str, Any], stage: dict[str, str] | None) -> list[str]:
    from bench.vae import table  # torch comes with it: imported only once the VAE stage has written

    size = results.get("size")
    heading = f"#### VAE (bench.vae): {results.get('model')} {size}x{size}, {results.get('hardware', '?')}"
    if (stage or {}).get("status", "ok") != "ok":
        heading += f" (stage {stage_status(stage)})"
    return [heading, "", *table(results["vae"]), ""]


def stage_status(stage: dict[str, str] | None) -> str:
    status = (stage or {}).get("status", "not run")
    if status == "running":
        return "running when the call ended: cut there"
    if status == "waiting":
        return "not reached: the call ended before it"
    return status


def describe_tests(junit: Path | None, stage: dict[str, str] | None) -> str:
    status = stage_status(stage)
    root = None
    if junit is not None and junit.exists():
        try:
            root = ElementTree.parse(junit).getroot()
        except ElementTree.ParseError:
            root = None
    if root is None:
        return f"- tests/gpu: {status}, no report"
    suite = root if root.tag == "testsuite" else root.find("testsuite")
    if suite is None:
        return f"- tests/gpu: {status}, empty report"
    counts = {key: int(suite.get(key, "0")) for key in ("tests", "failures", "errors", "skipped")}
    passed = counts["tests"] - counts["failures"] - counts["errors"] - counts["skipped"]
    failing = [
        f"{case.get('classname', '')}.{case.get('name', '')}"
        for case in suite.iter("testcase")
        if case.find("failure") is not None or case.find("error") is not None
    ]
    line = (
        f"- tests/gpu ({status}): {passed} passed, {counts['failures']} failed, {counts['errors']} errors, "
        f"{counts['skipped']} skipped"
    )
    return line + (": " + ", ".join(failing) if failing else "")


def stage_table(stages: dict[str, dict[str, str]]) -> list[str]:
    lines = [
        "| # | stage | cap s | estimate s | limit s | took s | status |",
        "|---|---|---|---|---|---|---|",
    ]
    for number, name in enumerate(STAGES, start=1):
        row = stages.get(name)
        if row is None:
            continue
        cells = [str(number), name, row["cap_s"], row["estimate_s"], row["limit_s"], row["took_s"]]
        lines.append("| " + " | ".join(cells) + f" | {stage_status(row)} |")
    return lines


def render(args: argparse.Namespace) -> list[str]:
    stages = read_stages(args.stages)
    figures = {name: read_json(args.out / file) for name, file in FILES.items()}
    vae = read_json(args.out / "vae.json")
    first = next((results for results in figures.values() if results), vae) or {}
    versions = ", ".join(f"{k} {v}" for k, v in first.get("versions", {}).items())
    card = args.card or first.get("hardware", "?")
    lines = [f"### GPU run: {card}", ""]
    timing = f"{args.elapsed} s" if args.elapsed is not None else "?"
    lines.append(
        f"`bash bench/gpu/run.sh`, written {timing} into a {args.budget or '?'} s budget"
        + (f"; {versions}" if versions else "")
        + (f"; {first.get('model')} {first.get('size')}x{first.get('size')}" if first else "")
        + ". bench.run: image-to-image, 30 steps, image_strength 0.35 (19 denoising steps), cfg 7, K_DPMPP_2M"
    )
    lines.append("")
    if ANCHOR_CARD not in card:
        lines += [
            f"The targets are anchored on an {ANCHOR_CARD}; this card is `{card.split(',')[0]}`, so a met or "
            f"missed target here is not a like-for-like verdict on the {ANCHOR_CARD} (an H200 has the H100's "
            "arithmetic rates and about 1.4x its memory bandwidth): compare these figures only with runs "
            "on the same card.",
            "",
        ]
    lines += ["#### Targets", "", *target_rows(figures, stages), ""]
    lines.append(mixed_line(figures["mixed"], stages.get("mixed")))
    lines.append(describe_tests(args.junit, stages.get("tests")))
    lines.append("")
    if stages:
        lines += ["#### Stages, in priority order", "", *stage_table(stages), ""]
    for name, results in figures.items():
        if results:
            lines += describe(name, results, stages.get(name))
    if vae and "vae" in vae:
        lines += describe_vae(vae, stages.get("vae"))
    return lines


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--out", type=Path, required=True, help="the folder run.sh wrote ($OUT)")
    parser.add_argument("--stages", type=Path, help="run.sh's stage table (tab-separated)")
    parser.add_argument("--card", default="", help="the card as nvidia-smi names it: name, memory, driver")
    parser.add_argument("--junit", type=Path, help="pytest's JUnit XML of the tests stage")
    parser.add_argument("--elapsed", type=int, help="seconds the run has taken so far")
    parser.add_argument("--budget", type=int, help="the run's budget in seconds")
    args = parser.parse_args()
    print("\n".join(render(args)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
