"""Start at login: Linux for real in a temporary XDG_CONFIG_HOME, Windows and macOS against
a fake registry and a temporary LaunchAgents folder, all through the same interface."""

from __future__ import annotations

import json
import os
import plistlib
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable
from pathlib import Path

import pytest

# the console script pulse-agent imports the same function
from agent.__main__ import main
from agent.autostart import (
    APPROVED_KEY,
    RUN_KEY,
    Autostart,
    LinuxAutostart,
    MacAutostart,
    WindowsAutostart,
    exec_value,
    launch_command,
    parse_exec_value,
    windows_command_line,
)
from tests.requirements import missing

ROOT = Path(__file__).resolve().parent.parent
# real XDG autostart files, HOME, GLib and the CLI on this machine's own OS
LINUX_ONLY = pytest.mark.skipif(sys.platform != "linux", reason="Linux desktop only")
# every character the Desktop Entry spec reserves, plus % (field codes) and a space
AWKWARD = "we ird $HOME `x` \"q\" 'a' \\b 50% #(;)&|<>~*?"


class FakeRegistry:
    """HKCU as a dict: (key, name) -> data."""

    def __init__(self) -> None:
        self.values: dict[tuple[str, str], str | bytes] = {}

    def get(self, key: str, name: str) -> str | bytes | None:
        return self.values.get((key, name))

    def set_string(self, key: str, name: str, value: str) -> None:
        self.values[(key, name)] = value

    def delete(self, key: str, name: str) -> None:
        self.values.pop((key, name), None)


Factory = Callable[[list[str]], Autostart]


@pytest.fixture(params=["linux", "macos", "windows"])
def factory(request: pytest.FixtureRequest, tmp_path: Path) -> Factory:
    """Makes autostarts of one OS that share one target (folder or fake registry)."""
    registry = FakeRegistry()

    def make(command: list[str]) -> Autostart:
        if request.param == "linux":
            return LinuxAutostart(command, config_home=tmp_path / "xdg", desktop="XFCE")
        if request.param == "macos":
            return MacAutostart(command, agents_dir=tmp_path / "LaunchAgents")
        return WindowsAutostart(command, registry)

    return make


def test_enable_disable_status_on_every_os(factory: Factory) -> None:
    auto = factory(["/opt/pulse/pulse-agent"])
    assert not auto.is_enabled()
    assert not auto.is_registered()
    auto.enable()
    assert auto.is_enabled()
    assert auto.is_registered()
    assert auto.registered_program() == "/opt/pulse/pulse-agent"
    auto.enable()  # twice is fine
    auto.disable()
    assert not auto.is_enabled()
    assert not auto.is_registered()
    auto.disable()  # so is disabling what is not there


def test_follow_moves_only_a_vanished_program(factory: Factory, tmp_path: Path) -> None:
    old = tmp_path / "old" / "pulse-agent"
    factory([str(old), "--config", "/c.json"]).enable()
    new = tmp_path / "new place" / "pulse-agent"
    moved = factory([str(new)])
    assert moved.follow()
    assert moved.registered_program() == str(new)
    assert moved.is_enabled()
    assert not moved.follow()  # already there

    # another install whose program still exists keeps its entry
    new.parent.mkdir()
    new.touch()
    other = factory([str(old)])
    assert not other.follow()
    assert other.registered_program() == str(new)


def test_follow_without_an_entry_registers_nothing(factory: Factory) -> None:
    auto = factory(["/nowhere/pulse-agent"])
    assert not auto.follow()
    assert not auto.is_registered()


# --- Linux -----------------------------------------------------------------------------


def test_linux_desktop_file(tmp_path: Path) -> None:
    program = f"/opt/{AWKWARD}/python"
    auto = LinuxAutostart([program, "-m", "agent"], config_home=tmp_path)
    auto.enable()
    path = tmp_path / "autostart" / "pulse-agent.desktop"
    assert auto.location == str(path)
    text = path.read_text()
    assert text.startswith("[Desktop Entry]\nType=Application\n")
    exec_line = next(line for line in text.splitlines() if line.startswith("Exec="))
    # quoted, % doubled, and backslash: escaped in quotes, then again as a string value
    assert exec_line == (
        'Exec="/opt/we ird \\\\$HOME \\\\`x\\\\` \\\\"q\\\\" \'a\' \\\\\\\\b 50%% #(;)&|<>~*?'
        '/python" -m agent'
    )
    assert parse_exec_value(exec_line.removeprefix("Exec=")) == [program, "-m", "agent"]


@LINUX_ONLY
def test_linux_exec_is_read_back_by_glib(tmp_path: Path) -> None:
    """GLib (what GNOME, XFCE and others use) launches the entry with the exact argv."""
    # not % in the program's own path: GLib checks that it exists before expanding %%
    folder = tmp_path / AWKWARD.replace("%", "")
    folder.mkdir()
    program = folder / "record argv"
    out = tmp_path / "argv.txt"
    program.write_text(
        f"#!{sys.executable}\nimport sys, json\n"
        f"open({str(out)!r}, 'w').write(json.dumps(sys.argv[1:]))\n"
    )
    program.chmod(0o755)
    args = ["--config", str(folder / "config.json"), "100%", ""]
    auto = LinuxAutostart([str(program), *args], config_home=tmp_path / "xdg")
    auto.enable()
    # in a child: gi's importer warns, and this suite turns warnings into errors
    launch = textwrap.dedent("""
        import sys
        try:
            import gi
            gi.require_version("Gio", "2.0")
            from gi.repository import Gio
        except (ImportError, ValueError):
            sys.exit(4)
        info = Gio.DesktopAppInfo.new_from_filename(sys.argv[1])
        sys.exit(0 if info is not None and info.launch([], None) else 3)
    """)
    done = subprocess.run([sys.executable, "-c", launch, auto.location], timeout=30, check=False)
    if done.returncode == 4:
        missing("no PyGObject here (scripts/setup installs python3-gi)")
    assert done.returncode == 0, "GLib rejected or could not launch the desktop file"
    deadline = time.monotonic() + 10
    while not out.exists() and time.monotonic() < deadline:
        time.sleep(0.02)
    assert json.loads(out.read_text()) == args


def test_linux_hidden_and_gnome_switch(tmp_path: Path) -> None:
    auto = LinuxAutostart(["/usr/bin/pulse-agent"], config_home=tmp_path, desktop="XFCE")
    auto.enable()
    path = Path(auto.location)
    path.write_text(path.read_text() + "Hidden=true\n")
    assert auto.is_registered()
    assert not auto.is_enabled()
    auto.enable()  # enabling again writes a fresh, visible file
    assert auto.is_enabled()

    path.write_text(path.read_text().replace("Autostart-enabled=true", "Autostart-enabled=false"))
    assert auto.is_enabled(), "only GNOME reads X-GNOME-Autostart-enabled"
    gnome = LinuxAutostart(["/usr/bin/pulse-agent"], config_home=tmp_path, desktop="ubuntu:GNOME")
    assert not gnome.is_enabled()


def test_linux_follow_keeps_the_users_keys(tmp_path: Path) -> None:
    LinuxAutostart(["/gone/pulse-agent"], config_home=tmp_path).enable()
    path = tmp_path / "autostart" / "pulse-agent.desktop"
    path.write_text(path.read_text() + "Hidden=true\n")
    moved = LinuxAutostart(["/new/pulse-agent"], config_home=tmp_path)
    assert moved.follow()
    text = path.read_text()
    assert "Exec=/new/pulse-agent\n" in text
    assert "Hidden=true\n" in text
    assert not moved.is_enabled()


@LINUX_ONLY
def test_linux_xdg_config_home(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path))
    assert LinuxAutostart(["x"]).path == tmp_path / "autostart" / "pulse-agent.desktop"
    monkeypatch.setenv("XDG_CONFIG_HOME", "relative/is/ignored")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert LinuxAutostart(["x"]).path == tmp_path / "home/.config/autostart/pulse-agent.desktop"


def test_exec_value_leaves_plain_arguments_alone() -> None:
    assert exec_value(["/usr/bin/python3", "-m", "agent"]) == "/usr/bin/python3 -m agent"
    assert exec_value(["a", ""]) == 'a ""'


# --- macOS -----------------------------------------------------------------------------


def test_macos_plist(tmp_path: Path) -> None:
    command = ["/Applications/Pulse Agent.app/Contents/MacOS/pulse-agent"]
    auto = MacAutostart(command, agents_dir=tmp_path)
    auto.enable()
    path = tmp_path / "org.pulse.agent.plist"
    data = plistlib.loads(path.read_bytes())
    assert data["Label"] == "org.pulse.agent"
    assert data["ProgramArguments"] == command
    assert data["RunAtLoad"] is True
    data["Disabled"] = True
    path.write_bytes(plistlib.dumps(data))
    assert auto.is_registered()
    assert not auto.is_enabled()
    path.write_text("not a plist")
    with pytest.raises(OSError, match="not a valid plist"):
        auto.is_enabled()


# --- Windows ---------------------------------------------------------------------------


def test_windows_run_value_is_quoted(tmp_path: Path) -> None:
    registry = FakeRegistry()
    exe = r"C:\Program Files\Pulse\pulse-agent.exe"
    auto = WindowsAutostart([exe, "--config", r"C:\Users\A B\pulse\config.json"], registry)
    auto.enable()
    assert registry.values[(RUN_KEY, "pulse-agent")] == (
        r'"C:\Program Files\Pulse\pulse-agent.exe" --config "C:\Users\A B\pulse\config.json"'
    )
    assert auto.location == rf"HKCU\{RUN_KEY}\pulse-agent"
    assert windows_command_line([exe]) == f'"{exe}"'


def test_windows_task_manager_switch(tmp_path: Path) -> None:
    registry = FakeRegistry()
    auto = WindowsAutostart([r"C:\Pulse\pulse-agent.exe"], registry)
    auto.enable()
    # what Task Manager writes when the user disables, then enables, the entry
    registry.values[(APPROVED_KEY, "pulse-agent")] = b"\x03\x00\x00\x00" + bytes(8)
    assert auto.is_registered()
    assert not auto.is_enabled()
    registry.values[(APPROVED_KEY, "pulse-agent")] = b"\x02" + bytes(11)
    assert auto.is_enabled()

    registry.values[(APPROVED_KEY, "pulse-agent")] = b"\x03" + bytes(11)
    moved = WindowsAutostart([r"D:\Pulse\pulse-agent.exe"], registry)
    assert moved.follow()
    assert not moved.is_enabled(), "following a move keeps the user's switch"
    moved.enable()  # our own checkbox overrides it
    assert moved.is_enabled()
    assert (APPROVED_KEY, "pulse-agent") not in registry.values
    registry.values[(APPROVED_KEY, "pulse-agent")] = b"\x03" + bytes(11)
    moved.disable()
    assert registry.values == {}


# --- the command -----------------------------------------------------------------------


def test_launch_command(tmp_path: Path) -> None:
    config = tmp_path / "config.json"
    exe = str(Path("/opt/pulse/pulse-agent").absolute())
    frozen = launch_command(None, frozen=True, executable="/opt/pulse/pulse-agent")
    assert frozen == [exe]
    explicit = launch_command(config, frozen=True, executable="/opt/pulse/pulse-agent")
    assert explicit == [exe, "--config", str(config)]
    source = launch_command(
        Path("config.json"), frozen=False, executable="/venv/bin/python", platform="linux"
    )
    assert source == [
        str(Path("/venv/bin/python").absolute()),
        "-m",
        "agent",
        "--config",
        str(Path.cwd() / "config.json"),
    ]

    scripts = tmp_path / "Scripts"
    scripts.mkdir()
    (scripts / "pythonw.exe").touch()
    win = launch_command(
        config, frozen=False, executable=str(scripts / "python.exe"), platform="win32"
    )
    assert win[:3] == [str(scripts / "pythonw.exe"), "-m", "agent"]


@LINUX_ONLY
def test_cli_enable_status_disable(tmp_path: Path) -> None:
    config = tmp_path / "my config" / "config.json"
    config.parent.mkdir()
    config.write_text("{}")
    env = {**os.environ, "XDG_CONFIG_HOME": str(tmp_path / "xdg"), "XDG_CURRENT_DESKTOP": ""}

    def cli(action: str) -> str:
        done = subprocess.run(
            [sys.executable, "-m", "agent", "autostart", action, "--config", str(config)],
            cwd=ROOT,
            env=env,
            capture_output=True,
            text=True,
            timeout=30,
            check=True,
        )
        return done.stderr

    assert "start at login: disabled" in cli("status")
    out = cli("enable")
    desktop = tmp_path / "xdg" / "autostart" / "pulse-agent.desktop"
    assert "start at login: enabled" in out
    assert str(desktop) in out
    exec_line = next(x for x in desktop.read_text().splitlines() if x.startswith("Exec="))
    assert parse_exec_value(exec_line[5:]) == [
        str(Path(sys.executable).absolute()),
        "-m",
        "agent",
        "--config",
        str(config),
    ]
    assert "start at login: enabled" in cli("status")
    assert "start at login: disabled" in cli("disable")
    assert not desktop.exists()


@LINUX_ONLY
def test_cli_in_process(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path))
    config = tmp_path / "config.json"
    config.write_text("{}")
    assert main(["autostart", "enable", "--config", str(config)]) == 0
    assert (tmp_path / "autostart" / "pulse-agent.desktop").is_file()
    assert main(["autostart", "disable", "--config", str(config)]) == 0
    assert not (tmp_path / "autostart" / "pulse-agent.desktop").exists()
