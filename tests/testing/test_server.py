"""sdxl_bedrock.testing in this process: a port another program holds is one clear line, and the
environment it sets is put back."""

from __future__ import annotations

import os
import socket
from pathlib import Path

import pytest

from sdxl_bedrock import testing


def test_a_port_that_is_taken_fails_at_once_in_one_line(tmp_path: Path) -> None:
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        with pytest.raises(testing.ServerDidNotStart) as caught, testing.server(port=port, log_dir=tmp_path):
            pass
    first_line = str(caught.value).splitlines()[0]
    assert first_line == (
        f"the sdxl-bedrock server exited with status 1 before it was ready: sdxl-bedrock: port {port} is in "
        "use (on 127.0.0.1); stop the program that holds it, or choose another --port"
    )


def test_the_environment_is_set_inside_and_restored_after(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "mine")
    monkeypatch.setenv("AWS_SESSION_TOKEN", "session")
    monkeypatch.delenv("AWS_ENDPOINT_URL_BEDROCK_RUNTIME", raising=False)
    with testing.bedrock_env("http://127.0.0.1:1") as variables:
        assert os.environ["AWS_ENDPOINT_URL_BEDROCK_RUNTIME"] == "http://127.0.0.1:1"
        assert os.environ["AWS_ACCESS_KEY_ID"] == variables["AWS_ACCESS_KEY_ID"] == "testing"
        assert "AWS_SESSION_TOKEN" not in os.environ
    assert os.environ["AWS_ACCESS_KEY_ID"] == "mine"
    assert os.environ["AWS_SESSION_TOKEN"] == "session"
    assert "AWS_ENDPOINT_URL_BEDROCK_RUNTIME" not in os.environ
