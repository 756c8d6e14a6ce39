"""Logging: a request's id and its client's address on every line it logs (from context variables), plain
text or JSON lines.

Request content (prompts, images) is never logged; a request is one line with its id, its client, route,
status and time. What a client chose (a path, a header) is logged with its control characters escaped: a
`%1b` or a `%0d` in a path must neither drive the terminal that shows the log nor start a forged line.
"""

from __future__ import annotations

import contextlib
import contextvars
import json
import logging
import os
import re
import sys
import time
from collections.abc import Sequence
from typing import Any, TextIO

request_id_var: contextvars.ContextVar[str] = contextvars.ContextVar("request_id", default="-")
# The request's client as `HOST:PORT` (`[HOST]:PORT` for IPv6), or "-".
client_var: contextvars.ContextVar[str] = contextvars.ContextVar("client", default="-")


class RequestIdFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        record.request_id = request_id_var.get()
        record.client = client_var.get()
        return True


def address_text(client: Sequence[Any] | None) -> str:
    """An ASGI scope's `client`, (host, port), as `HOST:PORT` (`[HOST]:PORT` for IPv6); "-" when unknown."""
    if not client or not client[0]:
        return "-"
    host, port = str(client[0]), client[1]
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


CONTROL_CHARACTERS = re.compile(r"[\x00-\x1f\x7f-\x9f]")


def printable(text: str) -> str:
    """`text` with each control character (C0, DEL, C1) as its escape: `\x1b`, `\x0d`."""
    return CONTROL_CHARACTERS.sub(lambda found: f"\\x{ord(found.group()):02x}", text)


class TextFormatter(logging.Formatter):
    """One line per message: control characters in the message escaped (a traceback follows on its own
    lines)."""

    def formatMessage(self, record: logging.LogRecord) -> str:
        record.message = printable(record.message)
        return super().formatMessage(record)


class JsonFormatter(logging.Formatter):
    FIELDS = ("route", "status", "seconds", "method")

    def format(self, record: logging.LogRecord) -> str:
        line = {
            "time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "request_id": getattr(record, "request_id", "-"),
            "client": getattr(record, "client", "-"),
            "message": record.getMessage(),
        }
        line.update({field: getattr(record, field) for field in self.FIELDS if hasattr(record, field)})
        if record.exc_info:
            line["error"] = self.formatException(record.exc_info)
        return json.dumps(line)


def configure_logging(*, json_lines: bool, verbose: bool = False) -> None:
    handler = logging.StreamHandler()
    handler.addFilter(RequestIdFilter())
    if json_lines:
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(
            TextFormatter("%(asctime)s %(levelname)s [%(request_id)s %(client)s] %(name)s: %(message)s")
        )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(logging.INFO if verbose or json_lines else logging.WARNING)
    logging.getLogger("sdxl_bedrock.access").setLevel(logging.INFO)
    for noisy in ("diffusers", "transformers", "httpx", "botocore", "hypercorn.error"):
        logging.getLogger(noisy).setLevel(logging.WARNING if verbose else logging.ERROR)


class SurvivingStream:
    """A text stream whose writes never fail because its reader has gone (`serve 2>&1 | head` after head
    left, a log collector that died): at the first failed write its file descriptor is pointed at
    /dev/null, as Python's documentation advises for SIGPIPE, and what follows is dropped there. Without
    this, the first line written after the reader left raises BrokenPipeError wherever it is written: a
    signal handler's line kept SIGTERM from stopping the server."""

    def __init__(self, stream: TextIO) -> None:
        self._stream = stream

    def _silence(self) -> None:
        devnull = os.open(os.devnull, os.O_WRONLY)
        try:
            os.dup2(devnull, self._stream.fileno())
        except (OSError, ValueError):  # no descriptor to point elsewhere: failing writes are dropped
            pass
        finally:
            os.close(devnull)

    def write(self, text: str) -> int:
        try:
            return self._stream.write(text)
        except OSError:
            self._silence()
            return len(text)

    def flush(self) -> None:
        try:
            self._stream.flush()
        except OSError:
            self._silence()
            with contextlib.suppress(OSError):
                self._stream.flush()  # what was buffered goes to /dev/null

    def __getattr__(self, name: str) -> Any:
        return getattr(self._stream, name)


def survive_closed_output() -> None:
    """Wrap sys.stdout and sys.stderr in SurvivingStream (the server's; once, before logging is set up)."""
    for name in ("stdout", "stderr"):
        stream = getattr(sys, name)
        if not isinstance(stream, SurvivingStream):
            setattr(sys, name, SurvivingStream(stream))
