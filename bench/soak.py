"""Soak: the reliability suite with bigger counts, then its page of figures.

    .venv/bin/python bench/soak.py [--scale 10]

PULSE_SOAK_SCALE multiplies every count of tests/reliability: kills, faults, fuzzed inputs,
the outage's backlog and the disk cap. The figures go to test-artifacts/reliability-soak.json
and docs/reliability-soak.md; the CI run's page, docs/reliability.md, stays as it is.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "bench"))

import reliability_report


def main() -> int:
    """Entry point."""
    parser = argparse.ArgumentParser(description="the reliability suite, scaled up")
    parser.add_argument("--scale", type=float, default=10.0, help="multiply every count")
    parser.add_argument("pytest_args", nargs="*", help="extra pytest arguments, e.g. -k kill")
    args = parser.parse_args()
    figures = ROOT / "test-artifacts" / "reliability-soak.json"
    env = {
        **os.environ,
        "PULSE_SOAK_SCALE": str(args.scale),
        "PULSE_RELIABILITY_JSON": str(figures),
    }
    code = reliability_report.run_suite(env, args.pytest_args)
    if figures.exists():
        reliability_report.main(
            ["--json", str(figures), "--out", str(ROOT / "docs" / "reliability-soak.md")]
        )
    return code


if __name__ == "__main__":
    sys.exit(main())
