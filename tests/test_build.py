"""The one-file executable from agent.spec: build it with PyInstaller, then run it for real.

Selected with `-m build` (and left out with `-m "not build"`): the build takes about 20 s.
The same tests run on Windows in .github/workflows/windows.yml, against the .exe it built
($PULSE_AGENT_EXE).
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest

from tests.harness import (
    Proc,
    collector_readings,
    free_port,
    get_json,
    start_collector,
    wait_until,
    write_agent_config,
)
from tests.requirements import require

ROOT = Path(__file__).resolve().parent.parent
EXE_NAME = "pulse-agent.exe" if sys.platform == "win32" else "pulse-agent"
MAX_SIZE_MB = 35

pytestmark = pytest.mark.build


@pytest.fixture(scope="module")
def binary(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """`pyinstaller agent.spec`, built into a temporary folder, or $PULSE_AGENT_EXE if set."""
    prebuilt = os.environ.get("PULSE_AGENT_EXE")
    if prebuilt:
        return Path(prebuilt).resolve()
    has_pyinstaller = importlib.util.find_spec("PyInstaller") is not None
    require(has_pyinstaller, "PyInstaller is not installed (pip install -e '.[build]')")
    out = tmp_path_factory.mktemp("pyinstaller")
    cmd = [sys.executable, "-m", "PyInstaller", "agent.spec", "--noconfirm"]
    cmd += ["--distpath", str(out / "dist"), "--workpath", str(out / "build")]
    done = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=600, check=False)
    exe = out / "dist" / EXE_NAME
    assert done.returncode == 0, done.stdout + done.stderr
    assert exe.is_file(), done.stdout + done.stderr
    return exe


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env.pop("DISPLAY", None)  # headless on Linux: the smoke test is about the agent
    return env


def _stop(proc: Proc) -> int:
    """SIGTERM; on Windows, where there is no SIGTERM, taskkill's WM_CLOSE to the tray window."""
    if sys.platform == "win32":
        subprocess.run(["taskkill", "/PID", str(proc.popen.pid)], check=False, timeout=30)
        return proc.popen.wait(30)
    return proc.stop()


def _logs(workdir: Path) -> str:
    # a windowed build on Windows has no stderr: the hour-named log files say what happened
    return "".join(p.read_text(errors="replace") for p in sorted((workdir / "logs").glob("*.log")))


def _status(url: str) -> int:
    with urllib.request.urlopen(url, timeout=5) as resp:
        return int(resp.status)


def test_binary_size(binary: Path) -> None:
    size_mb = binary.stat().st_size / 1e6
    assert size_mb <= MAX_SIZE_MB, f"{binary.name} is {size_mb:.1f} MB"


def test_binary_serves_sends_and_stops_cleanly(
    binary: Path, procs: list[Proc], tmp_path: Path
) -> None:
    collector = start_collector(tmp_path / "collector")
    procs.append(collector)
    workdir = tmp_path / "agent"
    port = free_port()
    config = write_agent_config(workdir, collector.port, port)
    log = workdir / "agent.out"
    with log.open("wb") as out:
        popen = subprocess.Popen(
            [str(binary), "--config", str(config)],
            cwd=workdir,
            env=_env(),
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    agent = Proc(popen, port, workdir, log, [str(binary)])
    procs.append(agent)

    def health() -> bool:
        assert popen.poll() is None, f"the binary exited:\n{agent.output()}{_logs(workdir)}"
        try:
            return bool(get_json(f"{agent.url}/api/health", timeout=1.0))
        except OSError:
            return False

    wait_until(health, timeout=60)
    # the dashboard page and a static file: templates and static files are in the bundle
    assert _status(f"{agent.url}/") == 200
    assert _status(f"{agent.url}/static/app.css") == 200
    wait_until(lambda: len(collector_readings(collector, "test-device")) >= 5)

    assert _stop(agent) == 0, agent.output() + _logs(workdir)
    assert "stopped cleanly" in _logs(workdir)


def test_binary_creates_its_config_beside_itself(binary: Path, tmp_path: Path) -> None:
    folder = tmp_path / "Pulse Agent"
    folder.mkdir()
    exe = Path(shutil.copy2(binary, folder / EXE_NAME))
    done = subprocess.run(
        [str(exe), "check-config"], cwd=tmp_path, env=_env(), capture_output=True, timeout=60
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert (folder / "config.json").is_file()
    assert not (tmp_path / "config.json").exists()
