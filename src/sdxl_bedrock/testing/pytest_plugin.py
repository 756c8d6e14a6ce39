"""pytest fixtures for code that calls Amazon Bedrock's image models: a real sdxl-bedrock server with the
embedded micro model, a boto3 `bedrock-runtime` client for it, and the environment that points an unchanged
program at it. Registered by installing the package (the `pytest11` entry point `sdxl_bedrock`); nothing
starts until a test asks for a fixture, and loading the plugin imports neither torch nor boto3.

One server per test session, which under pytest-xdist means one per worker (each worker is a session of its
own): no worker waits on another's requests, and none outlives its worker. docs/TESTING.md has the examples.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from sdxl_bedrock import testing

OPTIONS = (
    # (command-line option, ini key, metavar, help)
    (
        "--sdxl-bedrock-url",
        "sdxl_bedrock_url",
        "URL",
        "use the sdxl-bedrock server already running at this URL instead of starting one",
    ),
    (
        "--sdxl-bedrock-model",
        "sdxl_bedrock_model",
        "MODEL",
        f"the model the started server serves (default: {testing.DEFAULT_MODEL})",
    ),
    (
        "--sdxl-bedrock-flags",
        "sdxl_bedrock_flags",
        "FLAGS",
        "more `sdxl-bedrock serve` flags for the started server, split as a shell would "
        '(write --sdxl-bedrock-flags="--relaxed-sizes -v", with `=`: the value starts with --)',
    ),
    (
        "--sdxl-bedrock-start-timeout",
        "sdxl_bedrock_start_timeout",
        "SECONDS",
        f"seconds the started server has to answer /ping (default: {testing.READY_TIMEOUT_S:g})",
    ),
)


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("sdxl-bedrock", "a local Amazon Bedrock image endpoint (sdxl-bedrock)")
    for option, ini_key, metavar, help_text in OPTIONS:
        group.addoption(option, dest=ini_key, metavar=metavar, default=None, help=help_text)
        parser.addini(ini_key, help_text, default=None)


def setting(config: pytest.Config, ini_key: str) -> str | None:
    """The command line's value, else the ini file's."""
    value = config.getoption(ini_key) or config.getini(ini_key)
    return str(value) if value else None


@pytest.fixture(scope="session")
def sdxl_bedrock_url(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[str]:
    """The URL of a running sdxl-bedrock server: `--sdxl-bedrock-url` as given, else one started for this
    session (this xdist worker) on a free loopback port, stopped and waited for when the session ends. A
    server that does not come up fails the fixture with its log's last lines."""
    config = request.config
    given = setting(config, "sdxl_bedrock_url")
    if given:
        yield given.rstrip("/")
        return
    timeout = setting(config, "sdxl_bedrock_start_timeout")
    with testing.server(
        *testing.split_flags(setting(config, "sdxl_bedrock_flags")),
        model=setting(config, "sdxl_bedrock_model") or testing.DEFAULT_MODEL,
        log_dir=tmp_path_factory.mktemp("sdxl-bedrock"),
        timeout_s=float(timeout) if timeout else testing.READY_TIMEOUT_S,
    ) as url:
        yield url


@pytest.fixture(scope="session")
def sdxl_bedrock_client(sdxl_bedrock_url: str) -> Any:
    """A boto3 `bedrock-runtime` client for the server, with dummy credentials; no retries, so that an
    error reaches the test at once."""
    return testing.bedrock_client(sdxl_bedrock_url)


@pytest.fixture
def sdxl_bedrock_env(sdxl_bedrock_url: str) -> Iterator[str]:
    """For one test: AWS_ENDPOINT_URL_BEDROCK_RUNTIME, a region and dummy keys in the environment, so that
    code that builds its own `boto3.client("bedrock-runtime")` reaches the server; every variable restored
    afterwards. Yields the URL."""
    with testing.bedrock_env(sdxl_bedrock_url):
        yield sdxl_bedrock_url
