"""Hub footprint: the agent with ten sources, three of them MQTT fed 10 messages/s each.

    .venv/bin/python bench/hub_footprint.py [--seconds 60] [--rate 10] [--mqtt 127.0.0.1:1883]

Side by side in one run, over the same window, each a real `python -m agent` sending to a
real collector, with the MQTT broker on 127.0.0.1:1883 (or --mqtt):
  one source   today's agent: the fake heart rate every 3 s (bench/footprint.py's agent)
  hub, quiet   ten sources: seven simulated devices every 3 s, three MQTT sources not fed
  hub, fed     the same ten, the three MQTT topics each fed `--rate` messages a second by a
               publisher in its own process (its CPU is not the agent's)
  hub, idle    ten MQTT sources whose topics nobody publishes to: a hub with nothing to do
Reports RSS (MiB) at the end of the window and CPU as % of one core, then the fed hub's RSS
once the dashboard's page was opened and /metrics scraped (both load a library at first
use); the last line is one
JSON object with the figures. Goals (issue 12): hub, fed <= 50 MB RSS; idle < 0.2 % CPU.
The agents run from this tree with their environment as it is: `python -m agent` sets its
own allocator and library switches (agent/__init__.py, agent/memory.py).
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import textwrap
import threading
import time
import urllib.request
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import psutil

from tests.harness import free_port, start_agent, start_collector, write_agent_config

SIMULATED = [
    ("bulb-power", "bulb_power"),
    ("bulb-state", "bulb_state"),
    ("boiler", "water_heater"),
    ("mirror-presence", "mirror_presence"),
    ("mirror-lux", "mirror_lux"),
    ("heart", "fake_heart_rate"),
    ("counter", "counter"),
]

PUBLISHER = textwrap.dedent(
    """
    import asyncio, json, sys, aiomqtt
    async def main(topics, rate):
        async with aiomqtt.Client({host!r}, {port}) as client:
            n = 0
            while True:
                n += 1
                for topic in topics:
                    await client.publish(topic, json.dumps({{"power": n % 100 + 0.5}}), qos=1)
                await asyncio.sleep(1 / rate)
    asyncio.run(main({topics!r}, {rate}))
    """
)


def measure(pid: int, seconds: float) -> tuple[float, float]:
    """CPU % of one core over `seconds`, and RSS in MiB at the end (as bench/footprint.py)."""
    proc = psutil.Process(pid)
    before = proc.cpu_times()
    time.sleep(seconds)
    after = proc.cpu_times()
    cpu = (after.user + after.system - before.user - before.system) / seconds * 100
    return cpu, proc.memory_info().rss / 2**20


def hub_sources(prefix: str) -> list[dict[str, object]]:
    """Seven simulated devices every 3 s and three MQTT topics under `prefix`."""
    sources: list[dict[str, object]] = [
        {"device_id": device, "kind": kind, "interval_s": 3.0} for device, kind in SIMULATED
    ]
    sources += [
        {
            "device_id": f"plug-{i}",
            "kind": "mqtt",
            "topic": f"{prefix}/plug{i}",
            "value_path": "power",
            "unit": "W",
        }
        for i in range(3)
    ]
    return sources


def idle_sources(prefix: str) -> list[dict[str, object]]:
    """Ten MQTT sources on topics under `prefix` that nobody publishes to."""
    return [
        {"device_id": f"idle-{i}", "kind": "mqtt", "topic": f"{prefix}/idle{i}", "unit": "W"}
        for i in range(10)
    ]


def main() -> None:
    """Start the three agents and the publisher, let them settle, measure one window."""
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--rate", type=float, default=10.0)
    parser.add_argument("--mqtt", default="127.0.0.1:1883", help="the broker, host:port")
    args = parser.parse_args()
    host, _, port = args.mqtt.rpartition(":")
    work = Path(tempfile.mkdtemp(prefix="pulse-hub-footprint-"))
    collector = start_collector(work / "collector")
    agents = {}
    prefixes = {}
    publisher = None
    try:
        kinds = (
            ("one source", None),
            ("hub, quiet", hub_sources),
            ("hub, fed", hub_sources),
            ("hub, idle", idle_sources),
        )
        for name, sources in kinds:
            folder = work / name.replace(", ", "-").replace(" ", "-")
            extra: dict[str, object] = {"sensor": {"interval_s": 3.0, "seed": None}}
            if sources:
                prefixes[name] = f"pulsebench/{uuid.uuid4().hex[:8]}"
                extra = {
                    "sources": sources(prefixes[name]),
                    "mqtt": {"host": host, "port": int(port)},
                }
            config = write_agent_config(
                folder,
                collector.port,
                free_port(),
                device_id=f"bench-{folder.name}",
                sender={"interval_s": 5.0},
                logs={"level": "INFO"},
                **extra,
            )
            if sources:
                # the test config's sensor section and a sources list are refused together
                raw = json.loads(config.read_text())
                raw.pop("sensor", None)
                config.write_text(json.dumps(raw))
            agents[name] = start_agent(folder, config)
        topics = [f"{prefixes['hub, fed']}/plug{i}" for i in range(3)]
        publisher = subprocess.Popen(
            [
                sys.executable,
                "-c",
                PUBLISHER.format(topics=topics, rate=args.rate, host=host, port=int(port)),
            ]
        )
        time.sleep(8)  # past start-up work, and the feed running
        results: dict[str, tuple[float, float]] = {}

        def run(name: str, pid: int) -> None:
            results[name] = measure(pid, args.seconds)

        threads = [
            threading.Thread(target=run, args=(name, agent.popen.pid))
            for name, agent in agents.items()
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        print(f"window {args.seconds:.0f} s, MQTT feed {args.rate:g} messages/s on each of 3")
        for name, (cpu, rss) in results.items():
            print(f"{name:12s}  RSS {rss:6.1f} MiB   CPU {cpu:6.3f} % of one core")
        # what a person opening the dashboard, or a Prometheus scraping, adds: the pages'
        # jinja2 and prometheus-client are loaded at first use
        fed = agents["hub, fed"]
        for path in ("/", "/metrics"):
            with urllib.request.urlopen(fed.url + path, timeout=10) as response:
                response.read()
        time.sleep(5)
        opened = psutil.Process(fed.popen.pid).memory_info().rss / 2**20
        print(f"hub, fed, after one page and one scrape: RSS {opened:6.1f} MiB")
        figures = {
            name.replace(", ", "_").replace(" ", "_"): {
                "rss_mib": round(rss, 1),
                "cpu_pct": round(cpu, 3),
            }
            for name, (cpu, rss) in results.items()
        }
        figures["hub_fed_after_page_and_scrape"] = {"rss_mib": round(opened, 1)}
        print(json.dumps({"seconds": args.seconds, "rate": args.rate, **figures}))
    finally:
        if publisher is not None:
            publisher.terminate()
            publisher.wait()
        for agent in agents.values():
            agent.stop()
        collector.stop()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
