"""Logging: a request id on every line (from a context variable), plain text or JSON lines.

Request content (prompts, images) is never logged; a request is one line with its id, route, status, time.
What a client chose (a path, a header) is logged with its control characters escaped: a `%1b` or a `%0d`
in a path must neither drive the terminal that shows the log nor start a forged line.
"""

from __future__ import annotations

import contextvars
import json
import logging
import re
import time

request_id_var: contextvars.ContextVar[str] = contextvars.ContextVar("request_id", default="-")


class RequestIdFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        record.request_id = request_id_var.get()
        return True


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
            TextFormatter("%(asctime)s %(levelname)s [%(request_id)s] %(name)s: %(message)s")
        )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(logging.INFO if verbose or json_lines else logging.WARNING)
    logging.getLogger("sdxl_bedrock.access").setLevel(logging.INFO)
    for noisy in ("diffusers", "transformers", "httpx", "botocore", "hypercorn.error"):
        logging.getLogger(noisy).setLevel(logging.WARNING if verbose else logging.ERROR)
