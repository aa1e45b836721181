"""Accounts in real processes: `create-user` (stdin and a terminal), and the start refusal."""

from __future__ import annotations

import json
import os
import pty
import select
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from tests.conftest import batch, post_json
from tests.harness import Proc, free_port, start_collector, wait_until
from tests.requirements import postgres_schema_url

pytestmark = pytest.mark.e2e

PASSWORD = "correct horse"
READ_TOKEN = "read-token-1"


def collector_command(*args: str) -> list[str]:
    return [sys.executable, "-m", "collector", *args]


def create_user(
    cwd: Path, name: str, password: str, *args: str
) -> subprocess.CompletedProcess[str]:
    """`create-user NAME --password-stdin`, the password piped in."""
    return subprocess.run(
        collector_command("create-user", name, "--password-stdin", *args),
        cwd=cwd,
        input=f"{password}\n",
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def status_of(url: str, headers: dict[str, str] | None = None) -> int:
    request = urllib.request.Request(url, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=5) as resp:
            return int(resp.status)
    except urllib.error.HTTPError as err:
        return err.code


def sign_in(proc: Proc, name: str, password: str) -> tuple[int, str]:
    """The status of a JSON sign-in, and the session cookie (name=value) if one was set."""
    body = json.dumps({"username": name, "password": password}).encode()
    request = urllib.request.Request(
        f"{proc.url}/api/v1/session", data=body, headers={"Content-Type": "application/json"}
    )
    try:
        with urllib.request.urlopen(request, timeout=10) as resp:
            return int(resp.status), resp.headers["Set-Cookie"].split(";")[0]
    except urllib.error.HTTPError as err:
        return err.code, ""


def test_create_user_closes_a_running_open_collector(tmp_path: Path, procs: list[Proc]) -> None:
    proc = start_collector(tmp_path)
    procs.append(proc)
    devices = f"{proc.url}/api/v1/devices"
    assert status_of(devices) == 200
    db = str(tmp_path / "collector.db")
    done = create_user(tmp_path, "alice", PASSWORD, "--db", db)
    assert done.returncode == 0, done.stderr
    assert done.stdout == "created user 'alice'\n"
    assert PASSWORD not in done.stdout + done.stderr
    wait_until(lambda: status_of(devices) == 401)
    status, cookie = sign_in(proc, "alice", PASSWORD)
    assert status == 200
    assert status_of(devices, {"Cookie": cookie}) == 200
    # a new password ends the sessions of the old one
    changed = create_user(tmp_path, "alice", "another password", "--db", db)
    assert changed.returncode == 0, changed.stderr
    assert changed.stdout == "changed the password of 'alice' and ended its sessions\n"
    assert status_of(devices, {"Cookie": cookie}) == 401
    assert sign_in(proc, "alice", PASSWORD)[0] == 401
    assert sign_in(proc, "alice", "another password")[0] == 200
    # the readings' POST is untouched: devices still deliver
    assert post_json(f"{proc.url}/api/v1/readings", batch(3))[0] == 200
    assert proc.stop() == 0, proc.output()
    assert PASSWORD not in proc.output()


@pytest.mark.parametrize(
    ("stdin", "args", "message"),
    [
        ("short\n", ["alice"], "at least 8 characters"),
        ("\n", ["alice"], "at least 8 characters"),
        ("", ["alice"], "at least 8 characters"),
        (f"{PASSWORD}\n", ["a b"], "without spaces"),
    ],
)
def test_create_user_refuses_bad_input_with_exit_2(
    tmp_path: Path, stdin: str, args: list[str], message: str
) -> None:
    done = subprocess.run(
        collector_command("create-user", *args, "--password-stdin", "--db", "c.db"),
        cwd=tmp_path,
        input=stdin,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 2, done.stderr
    assert message in done.stderr
    assert done.stdout == ""


def test_create_user_without_a_terminal_says_to_use_password_stdin(tmp_path: Path) -> None:
    done = subprocess.run(
        collector_command("create-user", "alice", "--db", "c.db"),
        cwd=tmp_path,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 2
    assert "--password-stdin" in done.stderr


def test_delete_user_of_an_unknown_name_is_exit_2(tmp_path: Path) -> None:
    assert create_user(tmp_path, "alice", PASSWORD, "--db", "c.db").returncode == 0
    command = collector_command("delete-user", "bob", "--db", "c.db")
    done = subprocess.run(command, cwd=tmp_path, capture_output=True, text=True, check=False)
    assert done.returncode == 2
    assert "no user 'bob'" in done.stderr
    command = collector_command("delete-user", "alice", "--db", "c.db")
    done = subprocess.run(command, cwd=tmp_path, capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stderr


class Terminal:
    """A process on a pseudo-terminal of its own, as a person at a keyboard would run it."""

    def __init__(self, command: list[str], cwd: Path):
        self.pid, self.fd = pty.fork()
        if self.pid == 0:  # the child: the terminal is its controlling one, as getpass wants
            os.chdir(cwd)
            os.execv(command[0], command)
        self.seen = ""

    def expect(self, text: str, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while text not in self.seen:
            assert time.monotonic() < deadline, f"no {text!r} in {self.seen!r}"
            ready, _, _ = select.select([self.fd], [], [], 0.1)
            if ready:
                try:
                    self.seen += os.read(self.fd, 1024).decode(errors="replace")
                except OSError:  # the child closed the terminal: nothing more will come
                    assert text in self.seen, f"no {text!r} in {self.seen!r}"

    def type(self, line: str) -> None:
        os.write(self.fd, f"{line}\n".encode())

    def exit_code(self) -> int:
        _, status = os.waitpid(self.pid, 0)
        os.close(self.fd)
        return os.waitstatus_to_exitcode(status)


def test_create_user_asks_twice_on_a_terminal_without_echo(tmp_path: Path) -> None:
    terminal = Terminal(collector_command("create-user", "alice", "--db", "c.db"), tmp_path)
    terminal.expect("New password: ")
    terminal.type(PASSWORD)
    terminal.expect("Repeat it: ")
    terminal.type(PASSWORD)
    terminal.expect("created user 'alice'")
    assert terminal.exit_code() == 0
    assert PASSWORD not in terminal.seen  # getpass turned the echo off
    mismatch = Terminal(collector_command("create-user", "bob", "--db", "c.db"), tmp_path)
    mismatch.expect("New password: ")
    mismatch.type(PASSWORD)
    mismatch.expect("Repeat it: ")
    mismatch.type("something else")
    mismatch.expect("differ")
    assert mismatch.exit_code() == 2


def refused_start(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    command = collector_command("--host", "0.0.0.0", "--port", str(free_port()), *args)
    return subprocess.run(
        command, cwd=tmp_path, capture_output=True, text=True, timeout=60, check=False
    )


def test_off_loopback_without_user_or_token_the_collector_refuses_to_start(
    tmp_path: Path,
) -> None:
    done = refused_start(tmp_path, "--db", "c.db")
    assert done.returncode == 2, done.stderr
    assert "0.0.0.0 is not a loopback address" in done.stderr
    assert "python -m collector create-user NAME" in done.stderr
    assert "read_tokens" in done.stderr
    assert "listening" not in done.stderr
    assert "Traceback" not in done.stderr


def test_off_loopback_a_read_token_is_enough_to_start(tmp_path: Path, procs: list[Proc]) -> None:
    config = tmp_path / "collector.json"
    config.write_text(json.dumps({"read_tokens": [READ_TOKEN]}))
    proc = start_collector(tmp_path, None, "--config", str(config), "--host", "0.0.0.0")
    procs.append(proc)
    assert status_of(f"{proc.url}/api/v1/devices") == 401
    auth = {"Authorization": f"Bearer {READ_TOKEN}"}
    assert status_of(f"{proc.url}/api/v1/devices", auth) == 200
    assert proc.stop() == 0


def test_off_loopback_a_user_is_enough_to_start_on_postgresql(
    tmp_path: Path, procs: list[Proc]
) -> None:
    with postgres_schema_url("pulse_accounts") as url:
        refused = refused_start(tmp_path, "--database-url", url)
        assert refused.returncode == 2, refused.stderr
        done = create_user(tmp_path, "alice", PASSWORD, "--database-url", url)
        assert done.returncode == 0, done.stderr
        proc = start_collector(tmp_path, None, "--database-url", url, "--host", "0.0.0.0")
        procs.append(proc)
        assert status_of(f"{proc.url}/api/v1/devices") == 401
        status, cookie = sign_in(proc, "alice", PASSWORD)
        assert status == 200
        assert status_of(f"{proc.url}/api/v1/devices", {"Cookie": cookie}) == 200
        # a second server process on the same database knows the session
        other = start_collector(tmp_path / "b", None, "--database-url", url)
        procs.append(other)
        assert status_of(f"{other.url}/api/v1/devices", {"Cookie": cookie}) == 200
        assert other.stop() == 0
        assert proc.stop() == 0
