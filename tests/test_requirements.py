"""tests/requirements.py: a missing requirement skips locally and fails under PULSE_STRICT=1."""

from __future__ import annotations

import socket
from collections.abc import Iterator

import pytest

from tests import requirements
from tests.harness import free_port
from tests.requirements import missing, mosquitto_address, postgres_url, require, require_programs

pytest_plugins = ["pytester"]

VARIABLES = ("PULSE_STRICT", "PULSE_REQUIRE_POSTGRES", "PULSE_TEST_DATABASE_URL", "PULSE_TEST_MQTT")


@pytest.fixture(autouse=True)
def lenient(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """No strictness and no addresses from the caller's environment (CI sets them)."""
    for name in VARIABLES:
        monkeypatch.delenv(name, raising=False)
    requirements.unreachable.cache_clear()
    yield
    # the next test, and the real PostgreSQL tests, must not see our fake ports' answers
    requirements.unreachable.cache_clear()


@pytest.fixture
def listener() -> Iterator[int]:
    """A port on loopback that accepts TCP connections."""
    with socket.create_server(("127.0.0.1", 0)) as server:
        yield int(server.getsockname()[1])


def test_missing_skips_by_default() -> None:
    with pytest.raises(pytest.skip.Exception, match="^no frobnicator$"):
        missing("no frobnicator")


@pytest.mark.parametrize("value", ["0", "", "true"])
def test_only_1_is_strict(monkeypatch: pytest.MonkeyPatch, value: str) -> None:
    monkeypatch.setenv("PULSE_STRICT", value)
    with pytest.raises(pytest.skip.Exception):
        missing("no frobnicator")


def test_missing_fails_under_strict(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PULSE_STRICT", "1")
    with pytest.raises(pytest.fail.Exception, match=r"^no frobnicator, and PULSE_STRICT=1$"):
        missing("no frobnicator")


def test_require(monkeypatch: pytest.MonkeyPatch) -> None:
    require(True, "never said")
    with pytest.raises(pytest.skip.Exception, match="no root"):
        require(False, "no root")
    monkeypatch.setenv("PULSE_STRICT", "1")
    require(True, "never said")
    with pytest.raises(pytest.fail.Exception, match="no root, and PULSE_STRICT=1"):
        require(False, "no root")


def test_require_programs_names_the_missing_ones(monkeypatch: pytest.MonkeyPatch) -> None:
    require_programs("sh")
    with pytest.raises(pytest.skip.Exception, match="missing no-such-tool-1, no-such-tool-2"):
        require_programs("sh", "no-such-tool-1", "no-such-tool-2")
    monkeypatch.setenv("PULSE_STRICT", "1")
    with pytest.raises(pytest.fail.Exception, match="missing no-such-tool-1.*PULSE_STRICT=1"):
        require_programs("no-such-tool-1")


def test_postgres_url_when_reachable(monkeypatch: pytest.MonkeyPatch, listener: int) -> None:
    url = f"postgresql://u@127.0.0.1:{listener}/db"
    monkeypatch.setenv("PULSE_TEST_DATABASE_URL", url)
    monkeypatch.setenv("PULSE_STRICT", "1")
    assert postgres_url() == url


@pytest.mark.parametrize(
    ("variable", "outcome"),
    [
        (None, pytest.skip.Exception),
        ("PULSE_STRICT", pytest.fail.Exception),
        ("PULSE_REQUIRE_POSTGRES", pytest.fail.Exception),
    ],
)
def test_postgres_url_when_unreachable(
    monkeypatch: pytest.MonkeyPatch, variable: str | None, outcome: type[BaseException]
) -> None:
    port = free_port()  # nothing listens on it
    monkeypatch.setenv("PULSE_TEST_DATABASE_URL", f"postgresql://u@127.0.0.1:{port}/db")
    if variable is not None:
        monkeypatch.setenv(variable, "1")
    with pytest.raises(outcome, match=f"PostgreSQL at 127.0.0.1:{port} is unreachable") as info:
        postgres_url()
    assert "PULSE_TEST_DATABASE_URL" in str(info.value)
    if variable is not None:
        assert str(info.value).endswith(f"and {variable}=1")


def test_mosquitto_address_when_reachable(monkeypatch: pytest.MonkeyPatch, listener: int) -> None:
    monkeypatch.setenv("PULSE_STRICT", "1")
    monkeypatch.setenv("PULSE_TEST_MQTT", f"127.0.0.1:{listener}")
    assert mosquitto_address() == ("127.0.0.1", listener)
    monkeypatch.setenv("PULSE_TEST_MQTT", f"mqtt://127.0.0.1:{listener}")
    assert mosquitto_address() == ("127.0.0.1", listener)


def test_mosquitto_address_when_unreachable(monkeypatch: pytest.MonkeyPatch) -> None:
    port = free_port()
    monkeypatch.setenv("PULSE_TEST_MQTT", f"127.0.0.1:{port}")
    with pytest.raises(pytest.skip.Exception, match=f"Mosquitto at 127.0.0.1:{port}"):
        mosquitto_address()
    monkeypatch.setenv("PULSE_STRICT", "1")
    with pytest.raises(pytest.fail.Exception, match="PULSE_TEST_MQTT, and PULSE_STRICT=1$"):
        mosquitto_address()


def test_a_malformed_address_fails_even_when_lenient(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PULSE_TEST_MQTT", "127.0.0.1:mqtt")
    with pytest.raises(pytest.fail.Exception, match="PULSE_TEST_MQTT='127.0.0.1:mqtt'"):
        mosquitto_address()


INNER_TEST = """
from tests.requirements import missing

def test_needs_a_frobnicator():
    missing("no frobnicator")
"""


@pytest.mark.parametrize(("strict", "failed", "skipped"), [(False, 0, 1), (True, 1, 0)])
def test_a_real_run_reports_it(
    pytester: pytest.Pytester,
    monkeypatch: pytest.MonkeyPatch,
    strict: bool,
    failed: int,
    skipped: int,
) -> None:
    """As pytest reports it: skipped in a lenient run, failed (not skipped) in a strict one."""
    if strict:
        monkeypatch.setenv("PULSE_STRICT", "1")
    pytester.makeini("[pytest]\nasyncio_default_fixture_loop_scope = function\n")
    pytester.makepyfile(test_inner=INNER_TEST)
    result = pytester.runpytest_inprocess("-p", "no:cacheprovider", "-rsf")
    result.assert_outcomes(failed=failed, skipped=skipped)
    if strict:
        result.stdout.fnmatch_lines(["*no frobnicator, and PULSE_STRICT=1*"])
