"""The private folder of granian's socket and the front's client-named sockets."""

from __future__ import annotations

import shutil
import socket
import stat
import tempfile
from pathlib import Path

import pytest

from sdxl_bedrock.serve.server import LONGEST_CLIENT_NAME, private_folder

# `[`, the longest IPv6 address, `%`, the longest interface name, `]:` and the highest port.
LONGEST_NAME = "[ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff%" + "e" * 15 + "]:65535"


@pytest.mark.parametrize("tmpdir_length", [3, 80])
def test_the_longest_client_name_can_be_bound_in_the_private_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, tmpdir_length: int
) -> None:
    assert len(LONGEST_NAME) == LONGEST_CLIENT_NAME
    tmpdir = Path(tempfile.mkdtemp(prefix="t" * tmpdir_length, dir="/tmp"))
    monkeypatch.setattr(tempfile, "tempdir", str(tmpdir))
    folder = private_folder()
    try:
        # A short TMPDIR holds it; a long one gives way to /tmp.
        assert folder.parent == (tmpdir if tmpdir_length == 3 else Path("/tmp"))
        assert stat.S_IMODE(folder.stat().st_mode) == 0o700
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.bind(str(folder / LONGEST_NAME))
    finally:
        shutil.rmtree(folder)
        shutil.rmtree(tmpdir)
