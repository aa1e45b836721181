"""The reliability suite: marker, scale, and the figures each test reports."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest

from tests.reliability.figures import Figures, Scenario, output_path
from tests.requirements import postgres_schema_url

_FIGURES = pytest.StashKey[Figures]()
_STARTED = pytest.StashKey[float]()


def pytest_configure(config: pytest.Config) -> None:
    """Register the marker and start the session's figures."""
    config.addinivalue_line(
        "markers", "reliability: the reliability suite (kill -9, faults, hostile input)"
    )
    config.stash[_FIGURES] = Figures()
    config.stash[_STARTED] = time.monotonic()


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Every test in this folder carries the marker, so `-m reliability` selects the suite."""
    for item in items:
        if "tests/reliability/" in item.nodeid:
            item.add_marker(pytest.mark.reliability)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[None]:
    """Note each test's outcome in its figures."""
    report = yield
    scenario = getattr(item, "_scenario", None)
    counts = report.when == "call" or report.outcome != "passed"
    if scenario is not None and counts and scenario.outcome in ("not run", "passed"):
        scenario.outcome = report.outcome
    return report


def pytest_sessionfinish(session: pytest.Session) -> None:
    """Write the figures if any reliability test ran."""
    figures = session.config.stash[_FIGURES]
    if figures.scenarios:
        wall = time.monotonic() - session.config.stash[_STARTED]
        figures.write(output_path(), wall)


@pytest.fixture
def figures(request: pytest.FixtureRequest) -> Iterator[Scenario]:
    """This test's figures, named after the test; its docstring's first line is the title."""
    doc = (request.function.__doc__ or request.node.name).strip().splitlines()[0]
    group = request.module.__name__.rsplit(".", 1)[-1].removeprefix("test_")
    scenario = request.config.stash[_FIGURES].add(request.node.name, group, doc)
    request.node._scenario = scenario
    started = time.monotonic()
    yield scenario
    scenario.duration_s = time.monotonic() - started


@pytest.fixture(params=["sqlite", "postgres"])
def collector_db(request: pytest.FixtureRequest) -> Iterator[str | None]:
    """The collector's database: None for its SQLite file, or a PostgreSQL URL whose
    search_path is a schema of this test's own, dropped afterwards."""
    if request.param == "sqlite":
        yield None
        return
    with postgres_schema_url("pulse_rel") as url:
        yield url
