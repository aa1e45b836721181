"""docs/openapi.yaml against a live collector, checked by schemathesis, a tool nobody here wrote.

Authors of other sources write their clients from the document, so it must say exactly what
the server accepts and answers. schemathesis reads it, generates requests (valid ones and
invalid ones), sends them to a real `python -m collector` process and checks every answer
against it: every operation the document lists (a new one is covered as soon as it is
listed), every check (`--checks all`), every phase (examples, coverage, fuzzing and the
stateful phase that follows the document's links). It runs on SQLite, with device tokens
(no credentials, so every POST meets the 401; then one device's token, so 200 and 403),
with a user and a read token (no credentials, so every read meets the 401; the read token,
so reads pass and changes meet the 403; a session with its CSRF token, so changes pass),
and on PostgreSQL. A failure shows schemathesis's report, with a curl line per case.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jsonschema_rs
import msgspec
import pytest
import yaml

import pulse_wire as wire
from collector.app import create_app
from collector.config import CollectorConfig
from tests.harness import ROOT, Proc, start_collector
from tests.requirements import postgres_schema_url, require

pytestmark = pytest.mark.contract

OPENAPI = ROOT / "docs" / "openapi.yaml"
ST_CONFIG = ROOT / "tests" / "schemathesis.toml"
ST = Path(sys.executable).parent / "st"
METHODS = {"get", "put", "post", "delete", "options", "head", "patch", "trace"}
# enough cases for every phase to reach every documented answer, in about 15 s per run
MAX_EXAMPLES = 100
SEED = 20261126
# each request gets this long; the whole run is ended well before pytest's own timeout
REQUEST_TIMEOUT_S = 10
RUN_TIMEOUT_S = 240
DEVICE = "living-room"
TOKEN = "secret-1"
READ_TOKEN = "read-secret-1"
# the document's own example sign-in: its examples phase signs in for real (303, 200)
USER, PASSWORD = "alice", "correct horse"
# every whitespace or control character of Python's re or of ECMA-262 lies below U+3100 but
# U+FEFF; a few more beyond stand for the rest
CODE_POINTS = [*range(0x3100), 0xFEFF, 0xFFFD, 0xFFFF, 0x10000, 0x1F600, 0x10FFFF]


def openapi() -> dict[str, Any]:
    """docs/openapi.yaml, parsed."""
    doc: dict[str, Any] = yaml.safe_load(OPENAPI.read_text())
    return doc


def documented_operations() -> set[tuple[str, str]]:
    """(METHOD, path) of every operation the document lists."""
    return {
        (method.upper(), path)
        for path, item in openapi()["paths"].items()
        for method in item
        if method in METHODS
    }


def run_schemathesis(collector: Proc, workdir: Path, *extra: str, skipped: int = 0) -> None:
    """`st run` over the document against `collector` (but `skipped` operations excluded by
    `extra`); fail with its report."""
    require(ST.exists(), f"schemathesis is not installed at {ST} (the dev extra has it)")
    command = [
        str(ST),
        # what --checks=all cannot know from the document alone (see the file)
        f"--config-file={ST_CONFIG}",
        "run",
        str(OPENAPI),
        f"--url={collector.url}",
        "--checks=all",
        "--phases=examples,coverage,fuzzing,stateful",
        f"--max-examples={MAX_EXAMPLES}",
        f"--seed={SEED}",
        # the same cases on every run, so a failure in CI reproduces on a laptop
        "--generation-deterministic",
        f"--request-timeout={REQUEST_TIMEOUT_S}",
        "--no-color",
        *extra,
    ]
    # cwd: schemathesis would read a schemathesis.toml it found there
    try:
        result = subprocess.run(
            command, cwd=workdir, capture_output=True, text=True, timeout=RUN_TIMEOUT_S
        )
    except subprocess.TimeoutExpired as err:
        pytest.fail(f"schemathesis ran over {RUN_TIMEOUT_S} s:\n{err.stdout!s}\n{err.stderr!s}")
    report = f"{' '.join(command)}\n{result.stdout}\n{result.stderr}\nlogs: {workdir / 'logs'}"
    assert result.returncode == 0, f"schemathesis found disagreements:\n{report}"
    # a run that silently skipped an operation would pass while checking less
    count = len(documented_operations())
    assert f"Selected: {count - skipped}/{count}" in result.stdout, report
    assert f"Tested: {count - skipped}" in result.stdout, report


@pytest.fixture
def sqlite_collector(tmp_path: Path) -> Iterator[Proc]:
    """A collector on a fresh SQLite file, without tokens."""
    proc = start_collector(tmp_path)
    yield proc
    proc.stop()


@pytest.fixture
def token_collector(tmp_path: Path) -> Iterator[Proc]:
    """A collector on SQLite that takes batches of DEVICE only, with TOKEN."""
    config = tmp_path / "collector.json"
    config.write_text(json.dumps({"tokens": {DEVICE: TOKEN}}))
    proc = start_collector(tmp_path, None, "--config", str(config))
    yield proc
    proc.stop()


@pytest.fixture
def account_collector(tmp_path: Path) -> Iterator[Proc]:
    """A collector on SQLite with a user (made by `create-user`) and a read token."""
    config = tmp_path / "collector.json"
    config.write_text(json.dumps({"read_tokens": [READ_TOKEN]}))
    command = [sys.executable, "-m", "collector", "create-user", USER, "--password-stdin"]
    command += ["--config", str(config), "--db", str(tmp_path / "collector.db")]
    subprocess.run(command, input=f"{PASSWORD}\n", text=True, check=True, capture_output=True)
    proc = start_collector(tmp_path, None, "--config", str(config))
    yield proc
    proc.stop()


def sign_in(collector: Proc) -> tuple[str, str]:
    """A session of USER: its cookie (name=value) and its CSRF token."""
    body = json.dumps({"username": USER, "password": PASSWORD}).encode()
    request = urllib.request.Request(
        f"{collector.url}/api/v1/session", data=body, headers={"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(request, timeout=10) as resp:
        return resp.headers["Set-Cookie"].split(";")[0], json.loads(resp.read())["csrf"]


@pytest.fixture
def postgres_collector(tmp_path: Path) -> Iterator[Proc]:
    """A collector on a fresh PostgreSQL schema."""
    with postgres_schema_url("pulse_contract") as url:
        proc = start_collector(tmp_path, None, "--database-url", url)
        yield proc
        proc.stop()


def test_every_route_of_the_collector_is_in_the_document() -> None:
    """An endpoint missing from the document would be one schemathesis never checks."""
    app = create_app(CollectorConfig())
    routes = {
        (route.method, route.resource.canonical)
        for route in app.router.routes()
        if route.resource is not None and route.method != "HEAD"
    }
    # OpenAPI cannot describe a websocket: the document lists it under x-websockets, and the
    # static files are a folder, not an operation
    websockets = {("GET", path) for path in openapi().get("x-websockets", {})}
    assert routes - {("GET", "/static")} == documented_operations() | websockets


def test_id_patterns_mean_the_same_to_the_server_and_to_json_schema() -> None:
    """Python's re and a JSON Schema validator agree on every character in an id or unit."""
    schemas = openapi()["components"]["schemas"]
    cases = [
        (wire.DeviceId, schemas["Batch"]["properties"]["device_id"]),
        (wire.StreamId, schemas["Batch"]["properties"]["stream"]),
        (wire.Unit, schemas["Message"]["properties"]["unit"]),
    ]
    for kind, schema in cases:
        validator = jsonschema_rs.validator_for(schema)
        disagreements = []
        for code in CODE_POINTS:
            for text in (chr(code), f"a{chr(code)}", f"{chr(code)}a"):
                try:
                    msgspec.convert(text, kind)
                    server = True
                except msgspec.ValidationError:
                    server = False
                if server != validator.is_valid(text):
                    disagreements.append(text)
        shown = [ascii(text) for text in disagreements[:10]]
        assert not disagreements, f"{schema}: {len(disagreements)} disagree, e.g. {shown}"


def test_sqlite(sqlite_collector: Proc, tmp_path: Path) -> None:
    run_schemathesis(sqlite_collector, tmp_path)


def test_tokens_without_credentials(token_collector: Proc, tmp_path: Path) -> None:
    """Every POST meets the 401, whose WWW-Authenticate header the document requires."""
    run_schemathesis(token_collector, tmp_path)


def test_tokens_with_one_device_token(token_collector: Proc, tmp_path: Path) -> None:
    """The document's example device is stored (200), the generated ones are refused (403)."""
    run_schemathesis(token_collector, tmp_path, f"--header=Authorization: Bearer {TOKEN}")


def test_accounts_without_credentials(account_collector: Proc, tmp_path: Path) -> None:
    """Every read and change meets the 401; sign-ins meet the 401, then the 429."""
    run_schemathesis(account_collector, tmp_path)


def test_accounts_with_a_read_token(account_collector: Proc, tmp_path: Path) -> None:
    """Reads pass; changes and the channels (which hold secrets) meet the 403."""
    run_schemathesis(account_collector, tmp_path, f"--header=Authorization: Bearer {READ_TOKEN}")


def test_accounts_with_a_session(account_collector: Proc, tmp_path: Path) -> None:
    """Reads and changes pass with the session's cookie and CSRF token.

    Signing out would end the session half-way through the run: those two are left out.
    """
    cookie, csrf = sign_in(account_collector)
    run_schemathesis(
        account_collector,
        tmp_path,
        f"--header=Cookie: {cookie}",
        f"--header=X-CSRF-Token: {csrf}",
        "--exclude-operation-id=postLogout",
        "--exclude-operation-id=deleteSession",
        skipped=2,
    )


def test_postgresql(postgres_collector: Proc, tmp_path: Path) -> None:
    run_schemathesis(postgres_collector, tmp_path)


def test_the_report_is_shown_when_the_document_is_wrong(
    sqlite_collector: Proc, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The harness fails on a disagreement: a document that forgets the 400 of a POST."""
    doc = openapi()
    del doc["paths"]["/api/v1/readings"]["post"]["responses"]["400"]
    wrong = tmp_path / "openapi.yaml"
    wrong.write_text(yaml.safe_dump(doc))
    monkeypatch.setattr(sys.modules[__name__], "OPENAPI", wrong)
    with pytest.raises(AssertionError, match=re.escape("Undocumented status code")):
        run_schemathesis(sqlite_collector, tmp_path, "--phases=coverage")
