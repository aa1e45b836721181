"""The suite's figures: what each scenario did to the pipeline, and what came out.

Each test fills one Scenario; the session writes them all to test-artifacts/reliability.json,
which bench/reliability_report.py renders into docs/reliability.md.
"""

from __future__ import annotations

import json
import os
import platform
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
DEFAULT_PATH = ROOT / "test-artifacts" / "reliability.json"


def scale() -> float:
    """PULSE_SOAK_SCALE multiplies every count of the suite (bench/soak.py sets it)."""
    return float(os.environ.get("PULSE_SOAK_SCALE", "1"))


def scaled(n: int) -> int:
    """A count of the CI run, multiplied by the soak scale."""
    return max(1, round(n * scale()))


def output_path() -> Path:
    """Where the figures go; PULSE_RELIABILITY_JSON overrides the default."""
    return Path(os.environ.get("PULSE_RELIABILITY_JSON", DEFAULT_PATH))


@dataclass
class Scenario:
    """One test's figures; the final check fills readings, lost and duplicates."""

    name: str
    group: str
    title: str
    kills: Counter[str] = field(default_factory=Counter)
    faults: Counter[str] = field(default_factory=Counter)
    hostile: Counter[str] = field(default_factory=Counter)
    readings: int = 0
    lost: int = 0
    duplicates: int = 0
    # readings at the collector under another seq or id than the agent committed them with
    wrong: int = 0
    # committed readings destroyed by the fault itself (a cut WAL, damaged pages): the
    # pipeline cannot deliver what the disk no longer holds, and the figures say so
    lost_to_file_damage: int = 0
    # readings compared one by one (seq, id, value) with the agent's ledger
    identity_checked: int = 0
    checked: bool = False
    recoveries_s: list[float] = field(default_factory=list)
    notes: dict[str, Any] = field(default_factory=dict)
    outcome: str = "not run"
    duration_s: float = 0.0
    _started: float = field(default_factory=time.monotonic)

    def recovered(self, seconds: float) -> None:
        """Note one time from recovery (restart, fault cleared) to a drained backlog."""
        self.recoveries_s.append(round(seconds, 3))

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready copy."""
        return {
            "name": self.name,
            "group": self.group,
            "title": self.title,
            "kills": dict(self.kills),
            "faults": dict(self.faults),
            "hostile_inputs": dict(self.hostile),
            "readings": self.readings,
            "lost": self.lost,
            "duplicates": self.duplicates,
            "wrong_identity": self.wrong,
            "lost_to_file_damage": self.lost_to_file_damage,
            "identity_checked": self.identity_checked,
            "checked": self.checked,
            "recovery_to_drained_s": self.recoveries_s,
            "notes": self.notes,
            "outcome": self.outcome,
            "duration_s": round(self.duration_s, 2),
        }


@dataclass
class Figures:
    """Every scenario of one session."""

    scenarios: list[Scenario] = field(default_factory=list)
    started: float = field(default_factory=time.time)

    def add(self, name: str, group: str, title: str) -> Scenario:
        """Start the figures of one test."""
        scenario = Scenario(name, group, title)
        self.scenarios.append(scenario)
        return scenario

    def write(self, path: Path, wall_s: float) -> None:
        """Write the session's figures as JSON."""
        path.parent.mkdir(parents=True, exist_ok=True)
        data = {
            "generated_at": time.strftime("%Y-%m-%dT%H:%M:%S%z", time.localtime(self.started)),
            "scale": scale(),
            "wall_s": round(wall_s, 1),
            "machine": f"{platform.system()} {platform.machine()}, {os.cpu_count()} cores",
            "python": platform.python_version(),
            "scenarios": [s.to_dict() for s in self.scenarios],
        }
        path.write_text(json.dumps(data, indent=2) + "\n")
