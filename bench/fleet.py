"""Fleet load bench: N simulated agents against K collectors on one PostgreSQL database.

    .venv/bin/python bench/fleet.py --agents 2000 --seconds 30 --instances 2

Each agent posts a batch of 10 readings every 5 s with the real wire contract (its own
device, stream and seq, UUIDv7 ids). Arrivals follow an open model: request k is due at
t0 + k * 5 / N whatever the server does, and its latency is measured from that due time,
so a slow server cannot hide its queue (no coordinated omission). 1 % of batches are sent a
second time 1 s after the first, as a retry through the balancer would, to exercise dedup.

After the run, in the same process:
  check    every (device, stream, seq, id) sent is in `readings` exactly once, nothing else
           (sets compared in PostgreSQL, not counts)
  ceiling  the same rows, inserted by one asyncpg connection with no HTTP (COPY into a temp
           table, then the keys into the dedup ledger with ON CONFLICT DO NOTHING and the
           readings whose key went in) into a fresh schema
  store    the same batches through PostgresStore.receive, no HTTP, in another fresh schema

Its last line is one JSON object: agents, instances, requests_per_s, readings_per_s, p50_ms,
p99_ms, max_ms, errors, lost, duplicates, ceiling_readings_per_s. The line before it holds
the details (generator and server CPU, the store-without-HTTP rate, ack mismatches).

The servers come from `open_fleet`, the one place that knows how they start: deploy/fleet.py
(K collector processes behind nginx, all on a fresh schema of --database-url). With --direct
the generators POST to the collectors' own ports round robin, to show what nginx costs.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import csv
import datetime as dt
import json
import multiprocessing
import os
import random
import resource
import sys
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg
import psutil
from hdrh.histogram import HdrHistogram  # type: ignore[import-untyped]

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from collector.store_postgres import PostgresStore
from deploy.fleet import FleetOptions, ensure_database, free_port, start_fleet
from pulse_wire import Batch, Message, Reading, decode_ack, encode, new_reading_id

# its own database (created if missing): its wait events are then the bench's alone
DEFAULT_DATABASE_URL = "postgresql://postgres@127.0.0.1:5432/pulse_bench"
WAIT_SAMPLE_S = 0.02
PERIOD_S = 5.0
READINGS_PER_BATCH = 10
RETRY_SHARE = 0.01
RETRY_AFTER_S = 1.0
REQUEST_TIMEOUT_S = 60.0
# lets every generator process import and connect before the first request is due
START_DELAY_S = 3.0
# 1 µs .. 10 min, 3 significant digits
HISTOGRAM = (1, 600_000_000, 3)
CEILING_CHUNK = 10_000
STORE_CONCURRENCY = 32
STORE_MAX_S = 20.0
# a request fired this much after its due time counts as late: the generator itself lagged
LATE_S = 0.010
CATCH_UP_ATTEMPTS = 6
CATCH_UP_CONCURRENCY = 8
# building payloads before the run: msgspec structs, UUIDv7s and CSV rows (conservative)
PREPARE_READINGS_PER_S = 60_000
COLUMNS = ("device_id", "stream", "seq", "id", "datetime", "value", "unit")


@dataclass(frozen=True)
class Plan:
    """What one generator process sends: its share of the agents, on the common clock."""

    agents: int
    seconds: float
    generator: int
    generators: int
    urls: tuple[str, ...]
    start_wall: float
    rows_path: str
    connection_limit: int
    seed: int


@dataclass
class Outcome:
    """What one generator process measured; the histogram travels encoded."""

    histogram: bytes
    requests: int = 0
    readings: int = 0
    errors: int = 0
    ack_mismatches: int = 0
    first_error: str = ""
    cpu_s: float = 0.0
    wall_s: float = 0.0
    late_starts: int = 0
    resent: int = 0
    unsent: int = 0


@dataclass(frozen=True)
class Send:
    """One POST of the plan: when it is due (s after the start), where, and its body."""

    offset: float
    url: str
    body: bytes


@dataclass
class Sending:
    """A generator's running state: the histogram, the counters and the tasks it owns."""

    plan: Plan
    session: aiohttp.ClientSession
    histogram: Any
    outcome: Outcome
    failed: list[bytes] = field(default_factory=list)
    tasks: set[asyncio.Task[None]] = field(default_factory=set)


def device_name(agent: int) -> str:
    """The device id of agent number `agent`."""
    return f"fleet-{agent:06d}"


def stream_name(agent: int) -> str:
    """A stream per agent, as each agent's queue file has its own."""
    return f"s{agent:06d}"


def make_batch(agent: int, round_no: int, when: dt.datetime, rng: random.Random) -> Batch:
    """The `round_no`th batch of `agent`, read up to `when`: 10 consecutive seqs, UUIDv7s."""
    first = round_no * READINGS_PER_BATCH + 1
    readings = [
        Reading(
            id=new_reading_id(),
            seq=first + i,
            datetime=when - dt.timedelta(seconds=(READINGS_PER_BATCH - i) * 0.5),
            message=Message(value=float(rng.randint(50, 150)), unit="bpm"),
        )
        for i in range(READINGS_PER_BATCH)
    ]
    return Batch(device_id=device_name(agent), stream=stream_name(agent), readings=readings)


def csv_rows(batch: Batch) -> list[str]:
    """The batch's readings as CSV lines in COLUMNS order, for the check and the ceiling."""
    return [
        f"{batch.device_id},{batch.stream},{r.seq},{r.id},{r.datetime.isoformat()},"
        f"{r.message.value!r},{r.message.unit}\n"
        for r in batch.readings
    ]


def rounds_of(seconds: float) -> int:
    """How many batches each agent sends in `seconds` (at least one)."""
    return max(1, round(seconds / PERIOD_S))


def schedule(plan: Plan) -> Iterator[tuple[float, int, int]]:
    """(due offset in s, agent, round) of this generator's first sends, in time order."""
    gap = PERIOD_S / plan.agents
    for round_no in range(rounds_of(plan.seconds)):
        for agent in range(plan.generator, plan.agents, plan.generators):
            yield (round_no * plan.agents + agent) * gap, agent, round_no


def prepare(plan: Plan) -> tuple[list[Send], list[str]]:
    """Every POST this generator will make, in due order, and the CSV rows of what it sends.

    Built before the clock starts, so that the generator's own CPU during the run goes to
    HTTP and not to building payloads: on 2 cores it competes with the servers."""
    rng = random.Random(plan.seed)
    sends: list[Send] = []
    rows: list[str] = []
    for index, (offset, agent, round_no) in enumerate(schedule(plan)):
        when = dt.datetime.fromtimestamp(plan.start_wall + offset, dt.UTC)
        batch = make_batch(agent, round_no, when, rng)
        body = encode(batch)
        sends.append(Send(offset, plan.urls[(index + agent) % len(plan.urls)], body))
        rows.extend(csv_rows(batch))
        if rng.random() < RETRY_SHARE:
            # the retry may land on another process, as through the balancer
            url = plan.urls[(index + agent + 1) % len(plan.urls)]
            sends.append(Send(offset + RETRY_AFTER_S, url, body))
    sends.sort(key=lambda send: send.offset)
    return sends, rows


async def post(state: Sending, url: str, body: bytes) -> None:
    """POST one batch and check its Ack; raise on any failure."""
    async with state.session.post(
        url, data=body, headers={"Content-Type": "application/json"}
    ) as resp:
        payload = await resp.read()
        if resp.status != 200:
            raise RuntimeError(f"HTTP {resp.status}: {payload[:200]!r}")
    ack = decode_ack(payload)
    if ack.accepted + ack.duplicates != READINGS_PER_BATCH or ack.rejected:
        state.outcome.ack_mismatches += 1


async def send(state: Sending, due: float, url: str, body: bytes) -> None:
    """POST on schedule; record the latency from its due time, or keep it for the catch-up."""
    outcome = state.outcome
    try:
        await post(state, url, body)
    except Exception as err:  # every failure is a data point: counted, resent later
        outcome.errors += 1
        outcome.first_error = outcome.first_error or f"{type(err).__name__}: {err}"
        state.failed.append(body)
        return
    elapsed_us = (asyncio.get_running_loop().time() - due) * 1e6
    state.histogram.record_value(max(1, min(int(elapsed_us), HISTOGRAM[1])))


def launch(state: Sending, due: float, url: str, body: bytes) -> None:
    """Start a send as an owned task, kept until it is done."""
    task = asyncio.create_task(send(state, due, url, body))
    state.tasks.add(task)
    task.add_done_callback(state.tasks.discard)
    state.outcome.requests += 1


async def run_arrivals(state: Sending, sends: Sequence[Send], start: float) -> None:
    """Fire each request at its due time on the loop clock, whatever earlier ones are doing."""
    loop = asyncio.get_running_loop()
    for item in sends:
        due = start + item.offset
        delay = due - loop.time()
        if delay > 0:
            await asyncio.sleep(delay)
        elif delay < -LATE_S:
            state.outcome.late_starts += 1
        launch(state, due, item.url, item.body)


async def catch_up(state: Sending) -> None:
    """Resend what failed during the run, as an agent's sender would, outside the figures."""
    for attempt in range(CATCH_UP_ATTEMPTS):
        failed, state.failed = state.failed, []
        if not failed:
            return
        await asyncio.sleep(min(2**attempt, 8))
        state.outcome.resent += len(failed)
        slots = asyncio.Semaphore(CATCH_UP_CONCURRENCY)
        await asyncio.gather(*(resend(state, slots, body) for body in failed))
    state.outcome.unsent = len(state.failed)


async def resend(state: Sending, slots: asyncio.Semaphore, body: bytes) -> None:
    """One resend of the catch-up; a failure goes back on the list for the next round."""
    async with slots:
        try:
            await post(state, state.plan.urls[0], body)
        except Exception:  # tried again on the next round
            state.failed.append(body)


async def generate(plan: Plan) -> tuple[Outcome, list[str]]:
    """Send this generator's share of the fleet, wait for every answer, resend failures."""
    sends, rows = prepare(plan)
    loop = asyncio.get_running_loop()
    # a late generator starts late rather than firing its first second at once
    start = loop.time() + max(0.0, plan.start_wall - time.time())
    connector = aiohttp.TCPConnector(limit=plan.connection_limit)
    timeout = aiohttp.ClientTimeout(total=REQUEST_TIMEOUT_S)
    histogram = HdrHistogram(*HISTOGRAM)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
        state = Sending(plan, session, histogram, Outcome(histogram=b""))
        state.outcome.readings = len(rows)
        cpu = psutil.Process().cpu_times()
        await run_arrivals(state, sends, start)
        if state.tasks:
            await asyncio.gather(*state.tasks)
        after = psutil.Process().cpu_times()
        state.outcome.wall_s = loop.time() - start
        await catch_up(state)
    outcome = state.outcome
    outcome.cpu_s = (after.user - cpu.user) + (after.system - cpu.system)
    outcome.histogram = histogram.encode()
    return outcome, rows


def run_generator(plan: Plan) -> Outcome:
    """The body of one generator process."""
    outcome, rows = asyncio.run(generate(plan))
    Path(plan.rows_path).write_text("".join(rows))
    return outcome


def raise_file_limit() -> None:
    """Open sockets are files: an overloaded server makes the pool grow."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def schema_url(url: str, schema: str) -> str:
    """`url` with its search_path set to `schema` (asyncpg passes it to the server)."""
    return f"{url}{'&' if '?' in url else '?'}search_path={schema}"


@contextlib.asynccontextmanager
async def fresh_schema(url: str, prefix: str, keep: bool) -> AsyncIterator[str]:
    """A new schema, dropped afterwards unless `keep`; yields a URL that uses it."""
    name = f"{prefix}_{uuid.uuid4().hex[:10]}"
    conn = await asyncpg.connect(url)
    try:
        await conn.execute(f"CREATE SCHEMA {name}")
    finally:
        await conn.close()
    try:
        yield schema_url(url, name)
    finally:
        if not keep:
            conn = await asyncpg.connect(url)
            try:
                await conn.execute(f"DROP SCHEMA {name} CASCADE")
            finally:
                await conn.close()


@dataclass(frozen=True)
class Servers:
    """The running setup as the bench sees it: where to POST, and whose CPU to charge."""

    post_urls: tuple[str, ...]
    collector_pids: tuple[int, ...]
    nginx_pids: tuple[int, ...]


@contextlib.asynccontextmanager
async def open_fleet(
    database_url: str, instances: int, workdir: Path, direct: bool
) -> AsyncIterator[Servers]:
    """The balanced setup from deploy/fleet.py (K collectors behind nginx); with `direct`,
    the generators POST to the collectors' own ports round robin and nginx is idle."""
    options = FleetOptions(
        instances=instances,
        port=free_port(),
        database_url=database_url,
        run_dir=workdir / "fleet",
        log_level="WARNING",
    )
    # in a thread: the launcher runs its own event loop for the database checks
    fleet = await asyncio.to_thread(start_fleet, options)
    try:
        ports = [c.port for c in fleet.collectors]
        bases = [f"http://127.0.0.1:{p}" for p in ports] if direct else [fleet.url]
        nginx = [fleet.nginx.popen.pid] if fleet.nginx else []
        nginx += [c.pid for pid in nginx for c in psutil.Process(pid).children()]
        yield Servers(
            post_urls=tuple(f"{base}/api/v1/readings" for base in bases),
            collector_pids=tuple(c.popen.pid for c in fleet.collectors),
            nginx_pids=tuple(nginx),
        )
    finally:
        await asyncio.to_thread(fleet.stop)


# what each busy backend of this database is doing; no wait event while active means CPU
WAITS = """
SELECT coalesce(wait_event_type || ':' || wait_event, 'CPU')
FROM pg_stat_activity
WHERE datname = current_database() AND pid <> pg_backend_pid() AND state = 'active'
"""


async def run_wait_sampler(url: str, counts: dict[str, int]) -> None:
    """Sample pg_stat_activity until cancelled: where PostgreSQL's busy backends spend time
    (pg_stat_statements needs a restart to load; this needs nothing)."""
    conn = await asyncpg.connect(url)
    try:
        while True:
            for row in await conn.fetch(WAITS):
                counts[row[0]] = counts.get(row[0], 0) + 1
            counts["samples"] = counts.get("samples", 0) + 1
            await asyncio.sleep(WAIT_SAMPLE_S)
    finally:
        await conn.close()


def busy_backends(counts: dict[str, int]) -> dict[str, float]:
    """The sampler's counts as the average number of backends in each state, top six."""
    samples = max(1, counts.pop("samples", 0))
    top = sorted(counts.items(), key=lambda item: -item[1])[:6]
    return {name: round(count / samples, 3) for name, count in top}


def cpu_seconds(pids: Sequence[int]) -> float:
    """User + system CPU seconds of these processes so far (gone ones count 0)."""
    total = 0.0
    for pid in pids:
        with contextlib.suppress(psutil.Error):
            times = psutil.Process(pid).cpu_times()
            total += times.user + times.system
    return total


def postgres_cpu() -> float:
    """CPU seconds of the PostgreSQL server's processes, with the children of its main one:
    the backends that exited (connections closed) are summed into the parent's children."""
    total = 0.0
    for proc in psutil.process_iter(["name", "cpu_times"]):
        if proc.info["name"] == "postgres" and proc.info["cpu_times"] is not None:
            times = proc.info["cpu_times"]
            total += times.user + times.system + times.children_user + times.children_system
    return total


async def copy_sent(conn: Any, rows_paths: Sequence[Path]) -> None:
    """Load the sent rows into the temp table `sent` on this connection."""
    await conn.execute(
        "CREATE TEMP TABLE sent (device_id text, stream text, seq bigint, id uuid, "
        "datetime timestamptz, value float8, unit text)"
    )
    for path in rows_paths:
        await conn.copy_to_table("sent", source=str(path), format="csv", columns=COLUMNS)


async def check_exactly_once(url: str, rows_paths: Sequence[Path]) -> dict[str, int]:
    """Sent and stored compared reading by reading: lost, stored twice, stored but not sent."""
    conn = await asyncpg.connect(url)
    try:
        await copy_sent(conn, rows_paths)
        key = "device_id, stream, seq, id"
        lost = await conn.fetchval(
            f"SELECT count(*) FROM (SELECT {key} FROM sent EXCEPT SELECT {key} FROM readings) x"
        )
        extra = await conn.fetchval(
            f"SELECT count(*) FROM (SELECT {key} FROM readings EXCEPT SELECT {key} FROM sent) x"
        )
        twice = await conn.fetchval(f"SELECT count(*) - count(DISTINCT ({key})) FROM readings")
        sent_twice = await conn.fetchval(f"SELECT count(*) - count(DISTINCT ({key})) FROM sent")
    finally:
        await conn.close()
    return {"lost": lost, "stored_twice": twice, "extra": extra, "sent_twice": sent_twice}


# dedup as the store does it (the ledger's keys decide), then the readings whose key went in;
# no rollups and no summaries: the bare rows, as before the ledger
CEILING_INSERT = """
WITH keys AS (
    INSERT INTO reading_keys (device_id, stream, seq, id, datetime)
    SELECT device_id, stream, seq, id, datetime FROM incoming
    ON CONFLICT DO NOTHING
    RETURNING id
)
INSERT INTO readings (device_id, stream, seq, id, datetime, value, unit, received_at)
SELECT i.device_id, i.stream, i.seq, i.id, i.datetime, i.value, i.unit, now()
FROM incoming AS i JOIN keys AS k ON k.id = i.id
"""


async def measure_ceiling(url: str, rows_paths: Sequence[Path]) -> tuple[int, float]:
    """The same rows by one connection, COPY + INSERT ... ON CONFLICT per 10,000; rows/s."""
    store = await PostgresStore.open(url, max_connections=1)  # the collector's own schema
    await store.close()
    records = [_record(row) for path in rows_paths for row in csv.reader(path.open())]
    conn = await asyncpg.connect(url)
    try:
        await conn.execute(
            "CREATE TEMP TABLE incoming (device_id text, stream text, seq bigint, id uuid, "
            "datetime timestamptz, value float8, unit text) ON COMMIT DELETE ROWS"
        )
        began = time.perf_counter()
        for start in range(0, len(records), CEILING_CHUNK):
            async with conn.transaction():
                chunk = records[start : start + CEILING_CHUNK]
                await conn.copy_records_to_table("incoming", records=chunk, columns=COLUMNS)
                await conn.execute(CEILING_INSERT)
        elapsed = time.perf_counter() - began
        stored = await conn.fetchval("SELECT count(*) FROM readings")
    finally:
        await conn.close()
    return stored, len(records) / elapsed


def _record(row: list[str]) -> tuple[Any, ...]:
    device, stream, seq, rid, when, value, unit = row
    return (
        device,
        stream,
        int(seq),
        uuid.UUID(rid),
        dt.datetime.fromisoformat(when),
        float(value),
        unit,
    )


async def measure_store(url: str, rows_paths: Sequence[Path]) -> float:
    """The same batches through PostgresStore.receive, 32 at once, no HTTP; readings/s."""
    batches = list(_batches(rows_paths))
    store = await PostgresStore.open(url)
    queue: asyncio.Queue[Batch] = asyncio.Queue()
    for batch in batches:
        queue.put_nowait(batch)
    done = 0
    deadline = time.perf_counter() + STORE_MAX_S

    async def run_worker() -> None:
        nonlocal done
        while time.perf_counter() < deadline and not queue.empty():
            await store.receive(queue.get_nowait())
            done += 1

    try:
        began = time.perf_counter()
        await asyncio.gather(*(run_worker() for _ in range(STORE_CONCURRENCY)))
        elapsed = time.perf_counter() - began
    finally:
        await store.close()
    return done * READINGS_PER_BATCH / elapsed


def _batches(rows_paths: Sequence[Path]) -> Iterator[Batch]:
    """The sent batches again, rebuilt from the rows (10 consecutive rows per batch)."""
    for path in rows_paths:
        rows = [_record(row) for row in csv.reader(path.open())]
        for start in range(0, len(rows), READINGS_PER_BATCH):
            part = rows[start : start + READINGS_PER_BATCH]
            readings = [
                Reading(id=r[3], seq=r[2], datetime=r[4], message=Message(r[5], r[6])) for r in part
            ]
            yield Batch(device_id=part[0][0], stream=part[0][1], readings=readings)


def merge(outcomes: Sequence[Outcome]) -> tuple[Any, Outcome]:
    """One histogram and one set of counters from every generator."""
    histogram = HdrHistogram(*HISTOGRAM)
    total = Outcome(histogram=b"")
    for outcome in outcomes:
        histogram.decode_and_add(outcome.histogram)
        total.requests += outcome.requests
        total.readings += outcome.readings
        total.errors += outcome.errors
        total.ack_mismatches += outcome.ack_mismatches
        total.first_error = total.first_error or outcome.first_error
        total.cpu_s += outcome.cpu_s
        total.wall_s = max(total.wall_s, outcome.wall_s)
        total.late_starts += outcome.late_starts
        total.resent += outcome.resent
        total.unsent += outcome.unsent
    return histogram, total


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    """The command line."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--agents", type=int, default=1000, help="simulated agents (N)")
    parser.add_argument("--seconds", type=float, default=30.0, help="how long to send (S)")
    parser.add_argument("--instances", type=int, default=1, help="collector processes (K)")
    parser.add_argument("--database-url", default=DEFAULT_DATABASE_URL, help="PostgreSQL")
    parser.add_argument("--generators", type=int, default=1, help="load generator processes")
    parser.add_argument("--connections", type=int, default=0, help="pool limit; 0: none")
    parser.add_argument("--direct", action="store_true", help="bypass nginx: POST to ports")
    parser.add_argument("--keep", action="store_true", help="keep the schemas for a look")
    parser.add_argument("--no-store", action="store_true", help="skip the store-only figure")
    parser.add_argument("--seed", type=int, default=11)
    args = parser.parse_args(argv)
    if args.agents < 1 or args.seconds < PERIOD_S or args.instances < 1 or args.generators < 1:
        parser.error("need --agents >= 1, --seconds >= 5, --instances >= 1, --generators >= 1")
    return args


async def run_load(args: argparse.Namespace, url: str, workdir: Path) -> dict[str, Any]:
    """Start the fleet, send, check; the figures of the HTTP run."""
    async with open_fleet(url, args.instances, workdir, args.direct) as servers:
        start_wall = time.time() + start_delay(args)
        plans = [
            Plan(
                agents=args.agents,
                seconds=args.seconds,
                generator=g,
                generators=args.generators,
                urls=servers.post_urls,
                start_wall=start_wall,
                rows_path=str(workdir / f"sent-{g}.csv"),
                connection_limit=args.connections,
                seed=args.seed * 1000 + g,
            )
            for g in range(args.generators)
        ]
        waits: dict[str, int] = {}
        sending_s = rounds_of(args.seconds) * PERIOD_S
        sampler = asyncio.create_task(run_wait_sampler(url, waits))
        window = asyncio.create_task(measure_cpu(servers, start_wall, sending_s))
        try:
            with multiprocessing.get_context("spawn").Pool(args.generators) as pool:
                outcomes = await asyncio.to_thread(pool.map, run_generator, plans)
            cpu = await window
        finally:
            for task in (sampler, window):
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
    histogram, total = merge(outcomes)
    rows_paths = [Path(plan.rows_path) for plan in plans]
    check = await check_exactly_once(url, rows_paths)
    return {
        "histogram": histogram,
        "total": total,
        "check": check,
        "rows_paths": rows_paths,
        "sending_s": sending_s,
        "waits": busy_backends(waits),
        "finish_s": round(total.wall_s, 1),
        # the generators exit before the window closes: they report their own CPU time
        "cpu": {**cpu, "generators_cores": round(total.cpu_s / sending_s, 2)},
    }


def start_delay(args: argparse.Namespace) -> float:
    """Time for the generators to start and build every payload before the first is due."""
    readings: int = args.agents * rounds_of(args.seconds) * READINGS_PER_BATCH
    return START_DELAY_S + readings / int(args.generators) / PREPARE_READINGS_PER_S


async def measure_cpu(servers: Servers, start_wall: float, seconds: float) -> dict[str, float]:
    """The servers' CPU over the sending window, in cores (1.0 = one core busy throughout);
    `busy` is the whole machine's: the generators, other programs and the kernel included."""
    await asyncio.sleep(max(0.0, start_wall - time.time()))
    parts = {
        "collectors": lambda: cpu_seconds(servers.collector_pids),
        "nginx": lambda: cpu_seconds(servers.nginx_pids),
        "postgres": postgres_cpu,
    }
    before = {name: read() for name, read in parts.items()}
    machine = psutil.cpu_times()
    await asyncio.sleep(seconds)
    used = {name: read() - before[name] for name, read in parts.items()}
    after = psutil.cpu_times()
    busy = (after.user + after.system + after.nice + after.irq + after.softirq) - (
        machine.user + machine.system + machine.nice + machine.irq + machine.softirq
    )
    shares = {f"{name}_cores": round(value / seconds, 2) for name, value in used.items()}
    shares["busy_cores"] = round(busy / seconds, 2)
    shares["machine_cores"] = float(os.cpu_count() or 1)
    return shares


async def run_bench(args: argparse.Namespace) -> dict[str, Any]:
    """The load run, the end check, the ceiling and the store figure; the final JSON."""
    raise_file_limit()
    await ensure_database(args.database_url)
    with tempfile.TemporaryDirectory(prefix="pulse-fleet-") as tmp:
        workdir = Path(tmp)
        async with fresh_schema(args.database_url, "fleet", args.keep) as url:
            load = await run_load(args, url, workdir)
        rows_paths = load["rows_paths"]
        async with fresh_schema(args.database_url, "fleet_ceiling", args.keep) as url:
            ceiling_rows, ceiling = await measure_ceiling(url, rows_paths)
        store_rate = None
        if not args.no_store:
            async with fresh_schema(args.database_url, "fleet_store", args.keep) as url:
                store_rate = await measure_store(url, rows_paths)
    histogram, total, check = load["histogram"], load["total"], load["check"]
    details = {
        **load["cpu"],
        "ack_mismatches": total.ack_mismatches,
        "late_starts": total.late_starts,
        "resent_after_errors": total.resent,
        "unsent_after_catch_up": total.unsent,
        "first_error": total.first_error,
        "stored_twice": check["stored_twice"],
        "stored_not_sent": check["extra"],
        "ceiling_rows_stored": ceiling_rows,
        "store_no_http_readings_per_s": store_rate and round(store_rate),
        "finish_s": load["finish_s"],
        "postgres_busy_backends": load["waits"],
        "p90_ms": round(histogram.get_value_at_percentile(90) / 1000, 2),
        "p999_ms": round(histogram.get_value_at_percentile(99.9) / 1000, 2),
    }
    print("details", json.dumps(details))
    return {
        "agents": args.agents,
        "instances": args.instances,
        "requests_per_s": round(total.requests / load["sending_s"], 1),
        "readings_per_s": round(total.readings / load["sending_s"], 1),
        "p50_ms": round(histogram.get_value_at_percentile(50) / 1000, 2),
        "p99_ms": round(histogram.get_value_at_percentile(99) / 1000, 2),
        "max_ms": round(histogram.get_max_value() / 1000, 2),
        "errors": total.errors,
        "lost": check["lost"],
        "duplicates": check["stored_twice"] + check["extra"],
        "ceiling_readings_per_s": round(ceiling),
    }


def main(argv: Sequence[str] | None = None) -> int:
    """Run the bench; the last line printed is the JSON summary."""
    args = parse_args(argv)
    summary = asyncio.run(run_bench(args))
    print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
