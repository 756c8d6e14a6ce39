"""A real sdxl-bedrock server for other projects' tests: started on a free loopback port, waited for, and
stopped and waited for again, whatever happens in between.

```python
from sdxl_bedrock import testing

with testing.server() as url, testing.bedrock_env(url):
    run_the_code_under_test()  # its own boto3.client("bedrock-runtime") reaches `url`
```

The pytest plugin (`sdxl_bedrock.testing.pytest_plugin`, loaded by installing the package) builds its
fixtures on the same functions. Only the standard library is imported here: the server runs in a process of
its own (`python -m sdxl_bedrock serve`), so a test suite that loads this never imports torch.
"""

from __future__ import annotations

import contextlib
import os
import shlex
import socket
import ssl
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = [
    "DUMMY_CREDENTIALS",
    "IMAGE_MODELS_FLAG",
    "READY_TIMEOUT_S",
    "RunningServer",
    "ServerDidNotStart",
    "bedrock_client",
    "bedrock_env",
    "bedrock_environment",
    "free_port",
    "server",
    "start_server",
    "wait_ready",
]

READY_TIMEOUT_S = 240.0
# How long a stopped server gets to finish what it holds before it is killed.
STOP_TIMEOUT_S = 30.0
LOG_TAIL_LINES = 20
# The switch that answers Bedrock's SD3.5, Stable Image and Image Services ids; always on in `server()`.
IMAGE_MODELS_FLAG = "--stability-image-models"
# The fastest embedded model: the tiny model's interfaces (every size, body and error the same) with a
# smaller UNet and VAE. Its pictures are noise, like the tiny model's.
DEFAULT_MODEL = "micro"
# A free port can be taken by another process before the server binds it; a few fresh ones are tried.
PORT_TRIES = 3
PORT_IN_USE = "is in use"
DUMMY_CREDENTIALS = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing"}
DEFAULT_REGION = "us-east-1"
# Variables that would send an unchanged boto3 program elsewhere than the server, or sign for a session.
CLEARED_VARIABLES = ("AWS_SESSION_TOKEN", "AWS_BEARER_TOKEN_BEDROCK", "AWS_IGNORE_CONFIGURED_ENDPOINT_URLS")


class ServerDidNotStart(RuntimeError):
    """The server exited, or did not answer /ping in time. The first line of the message says which; the
    server's last log lines follow."""


@dataclass
class RunningServer:
    url: str
    process: subprocess.Popen[bytes]
    log_path: Path

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def log_tail(self, lines: int = LOG_TAIL_LINES) -> str:
        return "\n".join(self.log().splitlines()[-lines:])

    def stop(self, timeout_s: float = STOP_TIMEOUT_S) -> int:
        """SIGTERM (the server finishes what it accepted), then SIGKILL past `timeout_s`; the exit status."""
        if self.process.poll() is None:
            self.process.terminate()
        try:
            return self.process.wait(timeout_s)
        except subprocess.TimeoutExpired:
            self.process.kill()
            return self.process.wait()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def serve_command(port: int, args: Sequence[str], python: str = sys.executable) -> list[str]:
    return [python, "-m", "sdxl_bedrock", "serve", "--host", "127.0.0.1", "--port", str(port), *args]


def start_server(
    log_dir: Path,
    *args: str,
    wait: bool = True,
    env: Mapping[str, str] | None = None,
    port: int | None = None,
    timeout_s: float = READY_TIMEOUT_S,
) -> RunningServer:
    """`sdxl-bedrock serve ARGS` on 127.0.0.1, its output in `log_dir/server-PORT.log`.

    `port` None takes a free one (and another, should a process take it first). With `wait`, returns once
    /ping answers; raises ServerDidNotStart (the server stopped and waited for) when it exits first or
    `timeout_s` passes."""
    tries = PORT_TRIES if port is None else 1
    for attempt in range(1, tries + 1):
        running = launch(log_dir, port or free_port(), args, env)
        if not wait:
            return running
        try:
            wait_ready(running, timeout_s)
            return running
        except ServerDidNotStart:
            if attempt == tries or PORT_IN_USE not in running.log():
                raise
    raise AssertionError("unreachable")


def launch(log_dir: Path, port: int, args: Sequence[str], env: Mapping[str, str] | None) -> RunningServer:
    log_dir.mkdir(parents=True, exist_ok=True)
    log_path = log_dir / f"server-{port}.log"
    with log_path.open("wb") as log_file:
        process = subprocess.Popen(
            serve_command(port, args),
            stdout=log_file,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env={**os.environ, **(env or {})},
        )
    return RunningServer(f"http://127.0.0.1:{port}", process, log_path)


def wait_ready(
    server: RunningServer, timeout_s: float = READY_TIMEOUT_S, verify: ssl.SSLContext | None = None
) -> None:
    """Until /ping answers 200 (`verify` for an https URL). Raises ServerDidNotStart, after stopping the
    server, when it exits first or `timeout_s` passes: never a hang."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        status = server.process.poll()
        if status is not None:
            raise ServerDidNotStart(
                f"the sdxl-bedrock server exited with status {status} before it was ready: "
                f"{last_line(server)}\n{server.log_tail()}"
            )
        if pings(server.url, verify):
            return
        time.sleep(0.05)
    server.stop()
    raise ServerDidNotStart(
        f"the sdxl-bedrock server did not answer /ping within {timeout_s:g} s; stopped it. "
        f"Its last log lines:\n{server.log_tail()}"
    )


def last_line(server: RunningServer) -> str:
    lines = [line for line in server.log().splitlines() if line.strip()]
    return lines[-1] if lines else "(it wrote nothing)"


def pings(url: str, verify: ssl.SSLContext | None) -> bool:
    # No proxy: an HTTP_PROXY set for the suite's other traffic must not carry a loopback ping away.
    opener = urllib.request.build_opener(
        urllib.request.ProxyHandler({}), urllib.request.HTTPSHandler(context=verify)
    )
    try:
        with opener.open(f"{url}/ping", timeout=2) as answer:
            return bool(answer.status == 200)
    except (urllib.error.URLError, OSError):
        return False


@contextlib.contextmanager
def server(
    *flags: str,
    model: str = DEFAULT_MODEL,
    port: int | None = None,
    log_dir: str | os.PathLike[str] | None = None,
    env: Mapping[str, str] | None = None,
    timeout_s: float = READY_TIMEOUT_S,
) -> Iterator[str]:
    """A server with `model` (the embedded micro one by default) and the extra `serve` `flags`, for the
    length of the `with` block; yields its URL. Bedrock's SD3.5, Stable Image and Image Services ids are
    answered too. The log goes to `log_dir` (default: a temporary folder, removed afterwards).

    Raises ServerDidNotStart when the server does not come up."""
    args = ["--model", model, *flags]
    if IMAGE_MODELS_FLAG not in args:
        args.append(IMAGE_MODELS_FLAG)
    with contextlib.ExitStack() as stack:
        folder = (
            Path(log_dir)
            if log_dir is not None
            else Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="sdxl-bedrock-")))
        )
        running = start_server(folder, *args, env=env, port=port, timeout_s=timeout_s)
        try:
            yield running.url
        finally:
            running.stop()


def split_flags(text: str | None) -> list[str]:
    """Extra `serve` flags written as one string (an option or an ini line), split as a shell would."""
    return shlex.split(text) if text else []


def bedrock_client(url: str, *, read_timeout_s: float = 300) -> Any:
    """A boto3 `bedrock-runtime` client for `url` with dummy credentials and no retries, so that an error
    reaches the caller at once. boto3 is imported here, not when this module loads."""
    import boto3
    from botocore.config import Config

    return boto3.client(
        "bedrock-runtime",
        endpoint_url=url,
        region_name=DEFAULT_REGION,
        aws_access_key_id=DUMMY_CREDENTIALS["AWS_ACCESS_KEY_ID"],
        aws_secret_access_key=DUMMY_CREDENTIALS["AWS_SECRET_ACCESS_KEY"],
        config=Config(retries={"total_max_attempts": 1}, read_timeout=read_timeout_s),
    )


def bedrock_environment(url: str, region: str = DEFAULT_REGION) -> dict[str, str]:
    """What points an unchanged boto3 (or AWS CLI, or JavaScript SDK) program at `url`: the Bedrock Runtime
    endpoint, a region, and dummy credentials."""
    return {
        "AWS_ENDPOINT_URL_BEDROCK_RUNTIME": url,
        "AWS_DEFAULT_REGION": region,
        "AWS_REGION": region,
        **DUMMY_CREDENTIALS,
    }


@contextlib.contextmanager
def bedrock_env(url: str, region: str = DEFAULT_REGION) -> Iterator[dict[str, str]]:
    """`os.environ` with `bedrock_environment(url)` (and no session token, bearer token or endpoint
    override) inside the block; every variable as it was afterwards."""
    changes: dict[str, str | None] = {name: None for name in CLEARED_VARIABLES}
    changes.update(bedrock_environment(url, region))
    saved = {name: os.environ.get(name) for name in changes}
    try:
        for name, value in changes.items():
            set_variable(name, value)
        yield {name: value for name, value in changes.items() if value is not None}
    finally:
        for name, value in saved.items():
            set_variable(name, value)


def set_variable(name: str, value: str | None) -> None:
    if value is None:
        os.environ.pop(name, None)
    else:
        os.environ[name] = value
