"""Soak: the reliability suite with bigger counts, then its page of figures.

    .venv/bin/python bench/soak.py [--scale 10] [-- extra pytest arguments]

PULSE_SOAK_SCALE multiplies every count of tests/reliability: kills, faults, fuzzed inputs,
the outage's backlog and the disk cap. The figures go to test-artifacts/reliability-soak.json
and docs/reliability-soak.md; the CI run's page, docs/reliability.md, stays as it is.

A test's time grows with its counts. pyproject.toml gives every test 300 s (pytest-timeout),
sized for the CI run at scale 1, where the slowest tests, the kill -9 ones, take about 40 s.
At the default scale of 10 they take over 300 s: measured on 2 cores, 460 s for kill -9 of
the agent and 541 s for kill -9 of the collector. So the soak passes pytest `--timeout` of
pyproject's value times the scale (3000 s at scale 10): a hung test still fails with a
traceback, but a long one is not cut off. A `--timeout` among the extra pytest arguments
comes later on the command line and wins.
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "bench"))

import reliability_report

DEFAULT_SCALE = 10.0


def ci_timeout_s() -> float:
    """The per-test timeout of the CI run, from pyproject.toml's pytest settings."""
    settings = tomllib.loads((ROOT / "pyproject.toml").read_text())
    return float(settings["tool"]["pytest"]["ini_options"]["timeout"])


def scale_timeout(scale: float) -> int:
    """The per-test timeout at this scale: the CI run's, times the scale (never less).

    Every count a test runs through is multiplied by the scale, and its time with it: on 2
    cores, kill -9 of the collector took 40 s at scale 1, 209 s at scale 5, 541 s at 10.
    """
    return math.ceil(ci_timeout_s() * max(1.0, scale))


def main() -> int:
    """Entry point."""
    parser = argparse.ArgumentParser(description="the reliability suite, scaled up")
    parser.add_argument("--scale", type=float, default=DEFAULT_SCALE, help="multiply every count")
    parser.add_argument("pytest_args", nargs="*", help="extra pytest arguments, e.g. -k kill")
    args = parser.parse_args()
    figures = ROOT / "test-artifacts" / "reliability-soak.json"
    env = {
        **os.environ,
        "PULSE_SOAK_SCALE": str(args.scale),
        "PULSE_RELIABILITY_JSON": str(figures),
    }
    timeout = f"--timeout={scale_timeout(args.scale)}"
    code = reliability_report.run_suite(env, [timeout, *args.pytest_args])
    if figures.exists():
        reliability_report.main(
            ["--json", str(figures), "--out", str(ROOT / "docs" / "reliability-soak.md")]
        )
    return code


if __name__ == "__main__":
    sys.exit(main())
