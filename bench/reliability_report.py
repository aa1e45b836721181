"""Render docs/reliability.md from the figures the reliability suite wrote.

    .venv/bin/python bench/reliability_report.py --run     # run the suite, then render
    .venv/bin/python bench/reliability_report.py           # render the last run's figures

The suite (tests/reliability, marker `reliability`) writes test-artifacts/reliability.json;
this script turns it into the tables of docs/reliability.md, with the fsync policy and the
limits of what the suite proves. bench/soak.py runs the same suite with bigger counts.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from collections import Counter
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_JSON = ROOT / "test-artifacts" / "reliability.json"
DEFAULT_OUT = ROOT / "docs" / "reliability.md"

GROUPS = {
    "kill": "kill -9 torture",
    "network": "Network faults (TCP fault proxy)",
    "outage": "Long outage",
    "power_loss": "Power loss (kill -9 while writing)",
    "files": "Corrupt and missing files",
    "disk": "Full disk and disk cap",
    "hostile_collector": "Hostile input to the collector",
    "hostile_dashboard": "Hostile input to the dashboard",
}

INTRO = """\
# Reliability

Pulse promises that every reading reaches the collector exactly once: none lost, none
stored twice, whatever happens to the agent, the collector, the network or the disk. The
reliability suite in `tests/reliability/` tries to break that promise with real processes,
real sockets and real files, and this page holds the figures of its last run. The suite
writes them itself (`test-artifacts/reliability.json`); `bench/reliability_report.py`
renders this page from them: no figure on it is typed in by hand.

The suite runs in CI with the rest of the tests (`scripts/check`; select it alone with
`pytest -m reliability`). Rerun it and this page with one command (about two and a half
minutes on a 2-core machine):

```sh
.venv/bin/python bench/reliability_report.py --run
```

The same scenarios with bigger counts (a soak; `--scale 10` means ten times as many kills,
faults, fuzzed inputs and readings):

```sh
.venv/bin/python bench/soak.py --scale 10
```

Every scenario that moves readings runs the agent with the `counter` source (values 1, 2,
3…, continued across restarts) and ends with the same check. The agent is stopped and
started once more with a sensor that reads once and then not for a day, so that nothing new
arrives; it drains its queue; then the check compares two things with the collector:

- **by identity:** the counter's queue keeps a ledger of every reading it committed (seq, id
  and value, written in the same transaction as the reading). The collector must hold
  exactly those readings, each once, each under the seq and id the agent gave it and with
  its value, and nothing else in those streams. A reading under the wrong id (*wrong id*)
  fails the scenario even when every seq is present;
- **by seq:** every `seq` from 1 to the highest seq the queue ever assigned (SQLite's
  AUTOINCREMENT counter in the queue file) exactly once for the stream, and no reading left
  in the queue file.

*Lost* counts committed readings missing at the collector, *duplicates* the seqs or ids
stored more than once plus readings the agent never committed, *lost to file damage* the
committed readings that a fault destroyed on disk before they could be sent (a WAL cut
short, damaged pages): no queue can send what the disk no longer holds, and the figures say
so rather than hide it. *Recovery to drained* is the time from a recovery (the collector
back, a fault lifted, the agent restarted, disk space freed) to a queue with less than one
batch left. Scenarios marked *(sqlite, postgres)* run once against a collector on its
SQLite file and once against a collector on PostgreSQL.
"""

HOW = """\
## How the scenarios work

- **Collector backends:** the kill -9 and network-fault scenarios run twice: against a
  collector on SQLite and against a collector on PostgreSQL (a schema of the test's own).
  `tests/test_collector_postgres.py` adds many concurrent posts of overlapping batches on
  PostgreSQL, which must store each reading once and report no conflict.
- **kill -9, agent:** 100 SIGKILLs while the agent reads every 10 ms and sends every 50 ms;
  each lands 0–0.3 s after the agent is up, and about one in seven while it is still starting
  (opening or creating its queue). Each kill is followed by a restart on the same files.
- **kill -9, collector:** 100 SIGKILLs of the collector while a busy agent (a reading every
  5 ms) sends to it, some with the collector left down for up to 0.2 s; then
  `PRAGMA integrity_check` on the collector's database.
- **Network faults:** `tests/faultproxy.py` sits between agent and collector and injects
  each fault as a burst, then all of them in a random mix: latency with jitter, a reset in
  the middle of a request, a black hole (the client times out after 0.5 s), 500 and 503 with
  `Retry-After: 1` (a stretch of 503 only checks that each round of requests waits that
  long), a truncated response, and a lost ack (the collector commits, the client never hears).
- **Long outage:** 100,000 readings queued with the agent's own `Store.add_many` (an outage
  of hours, compressed), the agent started with the collector down and its sensor adding
  more, then the collector started: the catch-up is timed and the normal cadence checked.
- **Power loss:** a writer process drives the agent's `Store` as hard as it can and says
  after each commit what is durable; it is killed at random moments, and in the WAL
  checkpoint of a close. After each kill: `integrity_check`, every commit it reported is
  there, every ack it reported is gone, and the counters agree with the rows.
- **Corrupt and missing files:** a queue.db of random bytes, a queue.db from schema version
  99 (left byte for byte untouched; the agent queues in `queue.v2.db` beside it), a queue
  with damaged pages (moved aside, and every readable reading salvaged and delivered under
  its original stream, seq and id), a WAL cut in the middle of a frame, invalid config.json
  (not JSON, not UTF-8, wrong types, not an object), a logs folder that cannot be created,
  a queue folder not there.
- **Full disk:** the queue on a 1 MiB tmpfs, filled by the agent while the collector is down,
  then grown (space freed); a start on a disk already full; and a disk filled three times
  while readings flow to a live collector: commits fail at the WAL append while the sender
  reads and acks. This is the scenario that caught readings sent before their commit (a
  failed commit hands the same seq to the next reading, and an ack by seq deleted it).
- **Disk cap:** `storage.max_pending` 2,000 with the collector down and a reading every 2 ms.
- **Hostile input, collector:** `docs/openapi.yaml` is checked against the wire contract,
  then hypothesis fuzzes `POST /api/v1/readings` (batches with one mutation each, random
  bytes, random JSON); every answer must be one the document lists, a refused batch must
  store nothing and an accepted one exactly what its ack says. Hand-made cases add bodies
  over the limit (declared and chunked), deep nesting, huge numbers, NaN and Infinity,
  non-UTF-8, duplicate ids, seqs going backwards and a 10,000-character device_id.
- **Hostile input, dashboard:** foreign Host headers (DNS rebinding), cross-site form and
  fetch posts with the victim's cookie, websocket hijacking, missing and wrong CSRF tokens,
  a wrong unlock secret, and 100 fuzzed settings edits through the real API; config.json
  must load after each edit and stay byte for byte the same after each refusal.
"""

POLICY = """\
## The fsync policy, and what it guarantees

Both sides keep their data in SQLite in WAL mode with `synchronous=FULL`:

- **Agent queue** (`agent/store.py`): one connection, WAL, `synchronous=FULL`. A reading is
  committed before the sensor reads the next one; the commit returns only after the WAL,
  with the reading's frame and its commit mark, has been fsynced. A batch leaves the queue
  in one transaction with the counters (`sent`, `dead`, `dropped`), and only after the
  collector's 200 acknowledged it.
- **Collector** (`collector/store_sqlite.py`): WAL, `synchronous=FULL`, one transaction per
  batch, and the 200 with the ack is sent only after that commit returned. The dedup keys
  (`id`, and `device_id, stream, seq`) make a resent batch count as duplicates; a seq that
  already holds another id is a conflict, refused in `rejected`, never a duplicate.
- **Checkpoints** copy WAL pages into the database file and fsync it before the WAL is reset
  (SQLite does this on its own at 1,000 pages, and the agent does a `TRUNCATE` checkpoint on
  a clean stop). A checkpoint interrupted at any point leaves the WAL in place; the next open
  replays it.

What this guarantees: once `add` returned, the reading survives a crash of the agent, a
`kill -9`, and a power cut or a kernel panic, on storage that honours fsync. Once the agent
saw a 200, the collector's copy survives the same. Between the two, a crash at any point
means the agent sends the batch again and the collector counts it as duplicates: at least
once on the wire, exactly once in the collector's table.

What it does not guarantee: storage that lies about fsync (some consumer disks and virtual
machines with write caching), and a WAL damaged from outside. A WAL cut short loses the
transactions in the cut part and keeps every whole transaction before it (the truncated-WAL
scenario checks that); SQLite's checksums make sure that no half transaction is applied.

What the suite can and cannot show: a `kill -9` stops a process between any two
instructions, but the kernel still writes out what the process had written, so the
power-loss scenarios prove crash consistency (integrity_check, every acknowledged commit
present, counters that agree with the rows), not the fsync itself. The fsync is SQLite's
documented behaviour under `synchronous=FULL`.
"""

LIMITS = """\
## Known limits

- On a disk so full that SQLite cannot even create the queue's WAL, the agent cannot open its
  queue: it exits with `cannot open the queue file … (database or disk is full)`, leaves the
  file untouched and starts normally once there is room. While running, a full disk only stops
  new readings from being stored (reported in `storage_problem`), and the agent recovers on
  its own when space returns.
- A log folder that cannot be written is reported at start (`storage_problem`, and on the
  console); one that fails later is retried every 10 s and reported on the console.
- Readings dropped at `storage.max_pending` are gone by design: they are counted in
  `dropped_total`, logged once per episode, and are the oldest ones. Lowering the cap below
  the queue from the dashboard or the API needs an explicit confirmation.
- A WAL cut short, or pages damaged, destroy the committed readings they held: the figures
  count them under *lost to file damage*. A cut WAL also rolls the queue's AUTOINCREMENT
  counter back, so new readings reuse seqs that may already be at the collector under other
  ids; the collector refuses those as seq conflicts and the agent keeps them as dead letters,
  on the dashboard.
- A kill -9 between moving a damaged file aside and queueing its salvage leaves the salvage
  undone: the readable readings stay in the moved-aside file, which is never deleted.
"""


def _sum(scenarios: list[dict[str, Any]], key: str) -> Counter[str]:
    total: Counter[str] = Counter()
    for s in scenarios:
        total.update(s[key])
    return total


def _kinds(counts: Counter[str] | dict[str, int]) -> str:
    return ", ".join(f"{kind} {n:,}" for kind, n in sorted(counts.items())) or "—"


def _longest(values: list[float]) -> str:
    return f"{max(values):.2f} s" if values else "—"


def summary(data: dict[str, Any]) -> list[str]:
    """The one table of totals."""
    scenarios = data["scenarios"]
    kills = _sum(scenarios, "kills")
    faults = _sum(scenarios, "faults")
    hostile = _sum(scenarios, "hostile_inputs")
    checked = [s for s in scenarios if s["checked"]]
    recoveries = [r for s in scenarios for r in s["recovery_to_drained_s"]]
    passed = sum(s["outcome"] == "passed" for s in scenarios)
    return [
        "| figure | value |",
        "| --- | --- |",
        f"| kills survived (SIGKILL, each followed by a restart) | {sum(kills.values()):,}"
        f" ({_kinds(kills)}) |",
        f"| faults injected | {sum(faults.values()):,} |",
        f"| hostile inputs tried | {sum(hostile.values()):,} |",
        f"| scenarios ending in the exactly-once check | {len(checked)} |",
        f"| readings checked | {sum(s['readings'] for s in checked):,} |",
        f"| of them compared by identity (seq, id, value) | "
        f"{sum(s.get('identity_checked', 0) for s in checked):,} |",
        f"| readings lost | {sum(s['lost'] for s in checked)} |",
        f"| duplicates | {sum(s['duplicates'] for s in checked)} |",
        f"| delivered under a wrong seq or id | "
        f"{sum(s.get('wrong_identity', 0) for s in checked)} |",
        f"| committed readings lost to file damage (WAL cut, damaged pages) | "
        f"{sum(s.get('lost_to_file_damage', 0) for s in scenarios)} |",
        f"| longest time from recovery to drained backlog | {_longest(recoveries)} |",
        f"| tests with figures passed | {passed} of {len(scenarios)} |",
    ]


def faults_table(data: dict[str, Any]) -> list[str]:
    """Faults by kind, and hostile inputs by kind."""
    lines = ["| fault | injected |", "| --- | ---: |"]
    lines += [f"| {k} | {n:,} |" for k, n in sorted(_sum(data["scenarios"], "faults").items())]
    lines += ["", "| hostile input | tried |", "| --- | ---: |"]
    hostile = _sum(data["scenarios"], "hostile_inputs")
    lines += [f"| {k} | {n:,} |" for k, n in sorted(hostile.items())]
    return lines


def _merge(group: list[dict[str, Any]]) -> dict[str, Any]:
    """Parametrized cases of one test, as one row."""
    first = group[0]
    outcomes = {s["outcome"] for s in group}
    return {
        "title": first["title"],
        "kills": _sum(group, "kills"),
        "faults": _sum(group, "faults"),
        "hostile": sum(sum(s["hostile_inputs"].values()) for s in group),
        "checked": any(s["checked"] for s in group),
        "readings": sum(s["readings"] for s in group),
        "lost": sum(s["lost"] for s in group),
        "duplicates": sum(s["duplicates"] for s in group),
        "wrong": sum(s.get("wrong_identity", 0) for s in group),
        "damage": sum(s.get("lost_to_file_damage", 0) for s in group),
        "recoveries": [r for s in group for r in s["recovery_to_drained_s"]],
        "outcome": "passed" if outcomes == {"passed"} else ", ".join(sorted(outcomes)),
        "cases": len(group),
        "params": [s["name"].partition("[")[2].rstrip("]") for s in group],
        "duration": sum(s["duration_s"] for s in group),
    }


def scenario_tables(data: dict[str, Any]) -> list[str]:
    """One table per group, one row per test (its parametrized cases merged)."""
    lines: list[str] = []
    by_group: dict[str, dict[str, list[dict[str, Any]]]] = {}
    for s in data["scenarios"]:
        test = s["name"].split("[", 1)[0]
        by_group.setdefault(s["group"], {}).setdefault(test, []).append(s)
    order = [*GROUPS, *sorted(set(by_group) - set(GROUPS))]
    for group in [g for g in order if g in by_group]:
        tests = by_group[group]
        lines += [
            f"### {GROUPS.get(group, group)}",
            "",
            "| scenario | kills | faults | hostile inputs | readings | lost | dup. | wrong id "
            "| lost to file damage | recovery → drained | result |",
            "| --- | --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- |",
        ]
        for cases in tests.values():
            row = _merge(cases)
            title = row["title"]
            if set(row["params"]) == {"sqlite", "postgres"}:
                title += " (sqlite, postgres)"
            elif row["cases"] > 1:
                title += f" ({row['cases']} cases)"
            check = [
                f"{row['readings']:,}",
                str(row["lost"]),
                str(row["duplicates"]),
                str(row["wrong"]),
                str(row["damage"]),
            ]
            if not row["checked"]:
                check = ["—"] * 4 + [str(row["damage"]) if row["damage"] else "—"]
            lines.append(
                f"| {title} | {_kinds(row['kills'])} | {_kinds(row['faults'])} "
                f"| {row['hostile'] or '—'} | {' | '.join(check)} "
                f"| {_longest(row['recoveries'])} | {row['outcome']} ({row['duration']:.1f} s) |"
            )
        lines.append("")
    return lines


def notes(data: dict[str, Any]) -> list[str]:
    """Per-scenario extra figures (catch-up rate, kills inside a checkpoint, ...)."""
    lines = ["| scenario | figures |", "| --- | --- |"]
    for s in data["scenarios"]:
        if s["notes"]:
            shown = ", ".join(
                f"{k.replace('_', ' ')}: {v:,}"
                if isinstance(v, int)
                else f"{k.replace('_', ' ')}: {v}"
                for k, v in s["notes"].items()
            )
            lines.append(f"| {s['name']} | {shown} |")
    return lines


def render(data: dict[str, Any]) -> str:
    """The whole page."""
    scale = data["scale"]
    run = (
        f"Last run: {data['generated_at']}, {data['machine']}, Python {data['python']}, "
        f"scale {scale:g}, {data['wall_s'] / 60:.1f} min for the whole suite."
    )
    parts = [
        INTRO,
        "## Figures",
        "",
        run,
        "",
        *summary(data),
        "",
        "## By scenario",
        "",
        *scenario_tables(data),
        "## Faults and hostile inputs by kind",
        "",
        *faults_table(data),
        "",
        "## Other figures",
        "",
        *notes(data),
        "",
        HOW,
        POLICY,
        LIMITS,
    ]
    return "\n".join(parts)


def run_suite(env: dict[str, str], extra: list[str] | None = None) -> int:
    """Run the reliability suite; return pytest's exit code."""
    cmd = [sys.executable, "-m", "pytest", "tests/reliability", "-m", "reliability", "-q"]
    cmd += extra or []
    return subprocess.run(cmd, cwd=ROOT, env=env, check=False).returncode


def main(argv: list[str] | None = None) -> int:
    """Entry point."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", action="store_true", help="run the suite first")
    parser.add_argument("--json", type=Path, default=DEFAULT_JSON, help="the suite's figures")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="the page to write")
    args = parser.parse_args(argv)
    code = 0
    if args.run:
        env = {**os.environ, "PULSE_RELIABILITY_JSON": str(args.json)}
        code = run_suite(env)
    data = json.loads(args.json.read_text())
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(render(data))
    print(f"wrote {args.out} from {args.json}")
    return code


if __name__ == "__main__":
    sys.exit(main())
