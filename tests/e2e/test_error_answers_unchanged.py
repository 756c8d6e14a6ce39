"""Every error answer the suite checked before the wires became packages is still given, byte for byte.

tests/e2e/golden/error_answers.json.gz holds 451 requests with their answers: every bad body the unit
tables sent to the validators (turned into the HTTP request each wire receives) and every request that a
server answered with a 4xx during the suite (auth left out: signatures expire), replayed against the
server as it was before the restructuring and recorded. Each case: which server (`relaxed`: the
`server` fixture, `--relaxed-sizes`; `strict`: the default size rule), the method, the raw path, the
headers that matter, the body (zlib, base64), and the status, Bedrock's `x-amzn-ErrorType` and the JSON
answer (Stability's per-request `id` left out). Where a later issue changed an answer on purpose, the case
says so in `changed_by` and holds the new answer; a request that is now accepted (200) is checked for its
status only (its image has a random seed).
"""

from __future__ import annotations

import base64
import gzip
import http.client
import json
import zlib
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest

from tests.conftest import RunningServer

GOLDEN = Path(__file__).parent / "golden" / "error_answers.json.gz"
CASES: list[dict[str, Any]] = json.loads(gzip.decompress(GOLDEN.read_bytes()))


def replay(server: RunningServer, case: dict[str, Any]) -> tuple[int, str | None, dict[str, Any]]:
    """The case's request sent as it was recorded (the raw path untouched by any URL normalisation)."""
    address = urlsplit(server.url)
    connection = http.client.HTTPConnection(address.hostname, address.port, timeout=120)
    try:
        body = zlib.decompress(base64.b64decode(case["body"]))
        connection.request(case["method"], case["path"], body=body, headers=case["headers"])
        response = connection.getresponse()
        answer = json.loads(response.read())
        answer.pop("id", None)
        return response.status, response.getheader("x-amzn-ErrorType"), answer
    finally:
        connection.close()


def test_the_golden_file_covers_both_wires_and_both_size_rules() -> None:
    assert len(CASES) >= 450
    assert {case["server"] for case in CASES} == {"relaxed", "strict"}
    assert sum(case["path"].startswith("/v1/") for case in CASES) >= 50
    assert sum(case["path"].startswith("/model/") for case in CASES) >= 350


@pytest.mark.parametrize("server_kind", ["relaxed", "strict"])
def test_every_recorded_error_answer_is_unchanged(
    server_kind: str, server: RunningServer, strict_server: RunningServer
) -> None:
    target = server if server_kind == "relaxed" else strict_server
    changed = []
    for case in (case for case in CASES if case["server"] == server_kind):
        expected = (case["status"], case["error_type"], case["answer"])
        answer = replay(target, case)
        if case["status"] == 200:
            answer = (answer[0], answer[1], {})
        if answer != expected:
            changed.append(f"{case['method']} {case['path'][:80]}\n  was {expected}\n  now {answer}")
    assert not changed, f"{len(changed)} answers changed:\n" + "\n".join(changed[:20])
