"""`python -m collector` as a real process on loopback: serve, log to hour files, stop cleanly."""

from __future__ import annotations

import json
import re
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from collector import APP_NAME
from tests.conftest import batch, post_json
from tests.harness import get_json, start_collector

pytestmark = pytest.mark.e2e
LOG_NAME = re.compile(r"^collector-\d{4}-\d{2}-\d{2}_\d{2}\.log$")


def log_text(workdir: Path) -> str:
    files = sorted((workdir / "logs").iterdir())
    assert files, "no log files"
    assert all(LOG_NAME.match(f.name) for f in files), [f.name for f in files]
    return "".join(f.read_text() for f in files)


def test_serves_a_batch_then_stops_on_sigterm(tmp_path: Path) -> None:
    proc = start_collector(tmp_path)
    try:
        health = get_json(f"{proc.url}/healthz")
        assert health["status"] == "ok"
        assert health["app"] == APP_NAME
        status, ack = post_json(f"{proc.url}/api/v1/readings", batch(5))
        assert (status, ack) == (200, {"accepted": 5, "duplicates": 0, "rejected": []})
        status, ack = post_json(f"{proc.url}/api/v1/readings", batch(5))
        assert (status, ack["duplicates"]) == (200, 5)
        readings = get_json(f"{proc.url}/api/v1/readings?device_id=proc-dev")
        assert [r["seq"] for r in readings] == [1, 2, 3, 4, 5]
    finally:
        code = proc.stop()
    assert code == 0, proc.output()
    assert (tmp_path / "collector.db").exists()
    text = log_text(proc.workdir)
    assert f"listening on http://127.0.0.1:{proc.port}" in text
    assert "stopped" in text
    assert "Traceback" not in text


def test_sigint_also_stops_with_exit_code_0(tmp_path: Path) -> None:
    proc = start_collector(tmp_path)
    proc.popen.send_signal(signal.SIGINT)
    assert proc.popen.wait(20) == 0, proc.output()
    assert "KeyboardInterrupt" not in proc.output()


def test_config_file_with_tokens(tmp_path: Path) -> None:
    config = tmp_path / "collector.json"
    config.write_text(json.dumps({"tokens": {"proc-dev": "s3cret"}, "log_level": "DEBUG"}))
    proc = start_collector(tmp_path, None, "--config", str(config))
    try:
        url = f"{proc.url}/api/v1/readings"
        assert post_json(url, batch(1))[0] == 401
        assert post_json(url, batch(1), {"Authorization": "Bearer nope"})[0] == 403
        assert post_json(url, batch(1), {"Authorization": "Bearer s3cret"})[0] == 200
    finally:
        assert proc.stop() == 0, proc.output()
    # the file's relative logs dir resolves beside the file; DEBUG came from the file
    assert "DEBUG" in log_text(proc.workdir)


def test_port_in_use_is_a_logged_failure(tmp_path: Path) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        cmd = [sys.executable, "-m", "collector", "--port", str(port), "--db", "c.db"]
        done = subprocess.run(cmd, cwd=tmp_path, capture_output=True, timeout=30, check=False)
    assert done.returncode == 1
    assert "failed" in log_text(tmp_path)
    assert "address already in use" in log_text(tmp_path).lower()
