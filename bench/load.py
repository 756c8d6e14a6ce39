"""Load test: many more concurrent clients than the queue holds; every request answered, memory flat.

    python -m bench.load [--requests 2000] [--concurrency 64] [--max-queue 8] [--size 64] [--steps 10]

Starts `sdxl-bedrock serve` on loopback (tiny model, relaxed sizes, `--max-queue`), warms it up, then sends
`--requests` InvokeModel calls (image-to-image, a size x size image, `--steps` steps) from `--concurrency`
asyncio httpx clients that never wait between calls. The server must answer each one with 200 or 429
ThrottlingException (nothing else, no dropped connection, no timeout), and its resident memory after the
run must be within `--rss-limit-mb` of what it was after the warm-up. Prints a table, writes
bench/out/load.json, and exits 1 when a condition fails. Bounded: at most MAX_REQUESTS requests, and the
run stops at `--deadline-s` (the requests still open then count as unanswered).

Not part of the test suite: it runs for a minute or more and wants the machine to itself.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import io
import json
import os
import platform
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import numpy as np
from PIL import Image
from tests.conftest import RunningServer, wait_ready
from tests.conftest import start_server as start_server_process

REPO = Path(__file__).resolve().parents[1]
OUT = REPO / "bench" / "out"
INVOKE = "/model/stability.stable-diffusion-xl-v1/invoke"
MAX_REQUESTS = 20_000
PAGE_SIZE = os.sysconf("SC_PAGE_SIZE")


@dataclass
class Outcome:
    """What came back for each request: (status, error code) counts, latencies, and failures to answer."""

    answers: Counter[tuple[int, str]] = field(default_factory=Counter)
    latencies: dict[int, list[float]] = field(default_factory=dict)
    unanswered: Counter[str] = field(default_factory=Counter)

    def record(self, status: int, code: str, seconds: float) -> None:
        self.answers[(status, code)] += 1
        self.latencies.setdefault(status, []).append(seconds)

    def count(self, status: int) -> int:
        return sum(n for (answered, _), n in self.answers.items() if answered == status)

    @property
    def total(self) -> int:
        return sum(self.answers.values()) + sum(self.unanswered.values())


# ---- the server -------------------------------------------------------------------------------------------


def start_server(args: argparse.Namespace, log_dir: Path) -> RunningServer:
    server = start_server_process(
        log_dir,
        "--model",
        args.model,
        "--relaxed-sizes",
        "--max-queue",
        str(args.max_queue),
        *args.server_args,
        wait=False,
    )
    wait_ready(server, timeout_s=300)
    return server


def process_tree(pid: int) -> list[int]:
    pids = [pid]
    for index in range(len(pids)):
        try:
            for task in os.listdir(f"/proc/{pids[index]}/task"):
                with open(f"/proc/{pids[index]}/task/{task}/children") as children:
                    pids.extend(int(child) for child in children.read().split())
        except OSError:
            continue
    return pids


def rss_bytes(pid: int) -> int:
    """Resident memory of the server and any processes it started, from /proc/PID/statm."""
    total = 0
    for member in process_tree(pid):
        try:
            with open(f"/proc/{member}/statm") as statm:
                total += int(statm.read().split()[1]) * PAGE_SIZE
        except OSError:
            continue
    return total


# ---- the load ---------------------------------------------------------------------------------------------


def request_body(size: int, steps: int) -> bytes:
    y, x = np.mgrid[0:size, 0:size]
    pixels = np.stack([x * 255 // (size - 1), y * 255 // (size - 1), (x ^ y) % 256], -1).astype("uint8")
    buffer = io.BytesIO()
    Image.fromarray(pixels, "RGB").save(buffer, "PNG")
    body = {
        "text_prompts": [{"text": "a lighthouse on a cliff at dusk"}],
        "init_image": base64.b64encode(buffer.getvalue()).decode(),
        "steps": steps,
        "seed": 42,
    }
    return json.dumps(body).encode()


async def one_request(client: httpx.AsyncClient, body: bytes, outcome: Outcome) -> None:
    started = time.perf_counter()
    try:
        response = await client.post(INVOKE, content=body, headers={"Content-Type": "application/json"})
    except httpx.HTTPError as error:
        outcome.unanswered[type(error).__name__] += 1
        return
    code = response.headers.get("x-amzn-ErrorType", "").split(":", 1)[0]
    outcome.record(response.status_code, code, time.perf_counter() - started)


async def load(url: str, args: argparse.Namespace, body: bytes, outcome: Outcome) -> float:
    """`args.requests` requests from `args.concurrency` workers, each sending its next as soon as it has its
    answer; returns the wall time. Requests still open at the deadline are counted as unanswered."""
    remaining = iter(range(args.requests))
    limits = httpx.Limits(max_connections=args.concurrency, max_keepalive_connections=args.concurrency)
    timeout = httpx.Timeout(args.request_timeout_s, connect=30)
    async with httpx.AsyncClient(base_url=url, limits=limits, timeout=timeout) as client:

        async def worker() -> None:
            for _ in remaining:
                await one_request(client, body, outcome)

        started = time.perf_counter()
        workers = [asyncio.create_task(worker()) for _ in range(args.concurrency)]
        done, pending = await asyncio.wait(workers, timeout=args.deadline_s)
        for task in pending:
            task.cancel()
        await asyncio.gather(*pending, return_exceptions=True)
        for task in done:
            task.result()  # a bug in this script must not pass for a result
        wall_s = time.perf_counter() - started
    # Requests never sent, or cut off, at the deadline.
    if outcome.total < args.requests:
        outcome.unanswered["deadline"] += args.requests - outcome.total
    return wall_s


async def sample_peak_rss(pid: int, stop: asyncio.Event, interval_s: float = 0.5) -> int:
    peak = 0
    while not stop.is_set():
        peak = max(peak, rss_bytes(pid))
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), interval_s)
    return peak


async def measured_load(
    url: str, pid: int, args: argparse.Namespace, body: bytes, outcome: Outcome
) -> tuple[float, int]:
    stop = asyncio.Event()
    sampler = asyncio.create_task(sample_peak_rss(pid, stop))
    try:
        wall_s = await load(url, args, body, outcome)
    finally:
        stop.set()
    return wall_s, await sampler


def warm_up(url: str, body: bytes, count: int) -> None:
    """A few requests first, so that the memory baseline includes the allocator's first pools."""
    with httpx.Client(base_url=url, timeout=120) as client:
        for _ in range(count):
            response = client.post(INVOKE, content=body, headers={"Content-Type": "application/json"})
            if response.status_code != 200:
                raise SystemExit(f"warm-up request failed: {response.status_code} {response.text[:300]}")


# ---- the report -------------------------------------------------------------------------------------------


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(fraction * (len(ordered) - 1)))] if ordered else float("nan")


def verdicts(args: argparse.Namespace, outcome: Outcome, rss_delta_mb: float) -> dict[str, bool]:
    allowed = {(200, ""), (429, "ThrottlingException")}
    return {
        "only 200 and 429 ThrottlingException": set(outcome.answers) <= allowed,
        "every request answered": not outcome.unanswered and outcome.total == args.requests,
        "some requests served (200)": outcome.count(200) > 0,
        f"RSS grew at most {args.rss_limit_mb} MB": rss_delta_mb <= args.rss_limit_mb,
    }


def report(args: argparse.Namespace, results: dict[str, Any], outcome: Outcome) -> None:
    print()
    print(f"{'load test':44} {'value':>24}")
    rows: list[tuple[str, str]] = [
        ("requests / concurrency / --max-queue", f"{args.requests} / {args.concurrency} / {args.max_queue}"),
        ("request", f"{args.size}x{args.size} img2img, {args.steps} steps"),
        ("wall time s", f"{results['wall_s']:.1f}"),
        ("answers/s", f"{results['answers_per_s']:.1f}"),
        ("images/s (200)", f"{results['images_per_s']:.2f}"),
    ]
    for (status, code), count in sorted(outcome.answers.items()):
        rows.append((f"{status} {code}".rstrip(), str(count)))
    for reason, count in sorted(outcome.unanswered.items()):
        rows.append((f"unanswered: {reason}", str(count)))
    for status, values in sorted(outcome.latencies.items()):
        rows.append(
            (
                f"latency {status} p50 / p95 s",
                f"{percentile(values, 0.5):.3f} / {percentile(values, 0.95):.3f}",
            )
        )
    rows += [
        ("server RSS after warm-up MB", f"{results['rss_before_mb']:.0f}"),
        ("server RSS peak during load MB", f"{results['rss_peak_mb']:.0f}"),
        ("server RSS after load MB", f"{results['rss_after_mb']:.0f}"),
        ("server RSS growth MB", f"{results['rss_delta_mb']:+.0f}"),
        ("server exit code after SIGTERM", str(results["server_exit_code"])),
    ]
    for name, value in rows:
        print(f"{name:44} {value:>24}")
    print()
    for name, passed in results["verdicts"].items():
        print(f"{'PASS' if passed else 'FAIL'}  {name}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--max-queue", type=int, default=8)
    parser.add_argument(
        "--size", type=int, default=64, help="a multiple of 64 (the server runs --relaxed-sizes)"
    )
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--model", default="tiny")
    parser.add_argument("--warmup", type=int, default=8, help="sequential requests before the baseline")
    parser.add_argument("--rss-limit-mb", type=float, default=200)
    parser.add_argument("--request-timeout-s", type=float, default=120)
    parser.add_argument("--deadline-s", type=float, default=900, help="the whole load phase stops here")
    parser.add_argument("--server-args", nargs=argparse.REMAINDER, default=[], help="more `serve` arguments")
    args = parser.parse_args(argv)
    if not 1 <= args.requests <= MAX_REQUESTS:
        parser.error(f"--requests must be 1..{MAX_REQUESTS}")
    if not 1 <= args.concurrency <= 1024:
        parser.error("--concurrency must be 1..1024")

    OUT.mkdir(parents=True, exist_ok=True)
    body = request_body(args.size, args.steps)
    print(
        f"load: {args.requests} requests, {args.concurrency} concurrent, server --max-queue "
        f"{args.max_queue}, {args.model} model, {args.size}x{args.size}, {args.steps} steps; "
        f"{platform.machine()}, {os.cpu_count()} cores",
        flush=True,
    )
    server = start_server(args, OUT)
    url, pid = server.url, server.process.pid
    outcome = Outcome()
    try:
        warm_up(url, body, args.warmup)
        rss_before = rss_bytes(pid)
        wall_s, rss_peak = asyncio.run(measured_load(url, pid, args, body, outcome))
        time.sleep(1)  # let the last answers' buffers go
        rss_after = rss_bytes(pid)
    finally:
        exit_code = server.stop()
    megabyte = 1024 * 1024
    rss_delta_mb = (rss_after - rss_before) / megabyte
    results: dict[str, Any] = {
        "requests": args.requests,
        "concurrency": args.concurrency,
        "max_queue": args.max_queue,
        "size": args.size,
        "steps": args.steps,
        "wall_s": wall_s,
        "answers_per_s": sum(outcome.answers.values()) / wall_s,
        "images_per_s": outcome.count(200) / wall_s,
        "answers": {f"{status} {code}".rstrip(): n for (status, code), n in sorted(outcome.answers.items())},
        "unanswered": dict(outcome.unanswered),
        "latency_s": {
            str(status): {"p50": percentile(values, 0.5), "p95": percentile(values, 0.95)}
            for status, values in outcome.latencies.items()
        },
        "rss_before_mb": rss_before / megabyte,
        "rss_peak_mb": rss_peak / megabyte,
        "rss_after_mb": rss_after / megabyte,
        "rss_delta_mb": rss_delta_mb,
        "server_exit_code": exit_code,
        "verdicts": verdicts(args, outcome, rss_delta_mb),
    }
    report(args, results, outcome)
    (OUT / "load.json").write_text(json.dumps(results, indent=2) + "\n")
    return 0 if all(results["verdicts"].values()) else 1


if __name__ == "__main__":
    sys.exit(main())
