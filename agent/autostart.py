"""Start at login: one interface, one implementation per OS, each with an injectable target.

- Windows: a value under HKCU\\...\\CurrentVersion\\Run holding the quoted command; an entry
  the user switched off in Task Manager (Explorer\\StartupApproved\\Run) counts as off.
- Linux: $XDG_CONFIG_HOME/autostart/pulse-agent.desktop (XDG Autostart), Exec quoted as the
  Desktop Entry spec says; Hidden=true, and on GNOME X-GNOME-Autostart-enabled=false, count
  as off.
- macOS: ~/Library/LaunchAgents/<label>.plist with ProgramArguments and RunAtLoad.

At login the working directory is not ours, so the command holds absolute paths only. The
methods do small blocking file or registry I/O and raise OSError when the target is not
writable.
"""

from __future__ import annotations

import abc
import logging
import os
import re
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Protocol

from pulse_common.files import write_atomic

logger = logging.getLogger(__name__)

ENTRY_NAME = "pulse-agent"
MAC_LABEL = "org.pulse.agent"
RUN_KEY = r"Software\Microsoft\Windows\CurrentVersion\Run"
APPROVED_KEY = r"Software\Microsoft\Windows\CurrentVersion\Explorer\StartupApproved\Run"

# characters that force quoting of an Exec argument (Desktop Entry spec, "The Exec key")
_EXEC_RESERVED = set(" \t\n\"'\\><~|&;$*?#()`")
_EXEC_ESCAPED_IN_QUOTES = set('"`$\\')
_STRING_ESCAPES = {"s": " ", "n": "\n", "t": "\t", "r": "\r", "\\": "\\"}


def launch_command(
    config: Path | None,
    *,
    frozen: bool | None = None,
    executable: str | None = None,
    platform: str = sys.platform,
) -> list[str]:
    """The command that starts this agent as it runs now, with absolute paths only.

    Frozen: the executable, plus --config when one was given. From source: pythonw (python
    outside Windows) -m agent --config <absolute path>.
    """
    frozen = bool(getattr(sys, "frozen", False)) if frozen is None else frozen
    exe = Path(executable or sys.executable).absolute()
    if frozen:
        command = [str(exe)]
    else:
        pythonw = exe.with_name("pythonw.exe")
        if platform == "win32" and pythonw.is_file():
            exe = pythonw  # no console window at login
        command = [str(exe), "-m", "agent"]
    if config is not None:
        command += ["--config", str(config.expanduser().absolute())]
    return command


class Autostart(abc.ABC):
    """Registers `command` to run at login; the same interface on every OS."""

    def __init__(self, command: Sequence[str]):
        self.command = list(command)

    @property
    @abc.abstractmethod
    def location(self) -> str:
        """Where the registration lives, for people (a file path or a registry value)."""

    @abc.abstractmethod
    def is_registered(self) -> bool:
        """True if an entry exists, whether or not it is switched on."""

    @abc.abstractmethod
    def is_enabled(self) -> bool:
        """True if the agent will start at the next login."""

    @abc.abstractmethod
    def enable(self) -> None:
        """Start the agent at login with this command."""

    @abc.abstractmethod
    def disable(self) -> None:
        """Do not start the agent at login."""

    @abc.abstractmethod
    def registered_program(self) -> str | None:
        """The program (first argument) of the existing entry, or None without one."""

    @abc.abstractmethod
    def _repoint(self) -> None:
        """Make the existing entry run `command`, keeping whether it is switched on."""

    def follow(self) -> bool:
        """If the registered program no longer exists (it moved), register this one instead.

        Only a vanished program counts: another install, or the same program with another
        config, keeps its entry. An entry the user switched off stays off. True if changed.
        """
        program = self.registered_program()
        if program is None or program == self.command[0] or Path(program).exists():
            return False
        self._repoint()
        logger.info("start at login: %s is gone; now %s", program, self.command[0])
        return True


# --- Linux (XDG Autostart) ---------------------------------------------------------------


def quote_exec_arg(arg: str) -> str:
    """Quote one argument for an Exec key, before the string-level escaping."""
    arg = arg.replace("%", "%%")
    if arg and not _EXEC_RESERVED.intersection(arg):
        return arg
    inner = "".join("\\" + c if c in _EXEC_ESCAPED_IN_QUOTES else c for c in arg)
    return f'"{inner}"'


def exec_value(command: Sequence[str]) -> str:
    """The Exec value for `command`: quoting rule, then the string escaping rule on top."""
    line = " ".join(quote_exec_arg(arg) for arg in command)
    # the spec applies string escapes before unquoting, so a literal backslash becomes 4
    return line.replace("\\", "\\\\").replace("\n", "\\n").replace("\t", "\\t")


def parse_exec_value(value: str) -> list[str]:
    """The arguments of an Exec value: undo the string escapes, then the quoting."""
    line = re.sub(r"\\(.)", lambda m: _STRING_ESCAPES.get(m[1], "\\" + m[1]), value)
    args: list[str] = []
    i = 0
    while i < len(line):
        if line[i] in " \t":
            i += 1
            continue
        arg = []
        if line[i] == '"':
            i += 1
            while i < len(line) and line[i] != '"':
                if line[i] == "\\" and i + 1 < len(line):
                    i += 1
                arg.append(line[i])
                i += 1
            i += 1
        else:
            while i < len(line) and line[i] not in " \t":
                arg.append(line[i])
                i += 1
        args.append("".join(arg).replace("%%", "%"))
    return args


def _desktop_entry(text: str) -> dict[str, str]:
    """The keys of the [Desktop Entry] group."""
    keys: dict[str, str] = {}
    group = None
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.startswith("[") and line.endswith("]"):
            group = line[1:-1]
        elif group == "Desktop Entry" and "=" in line:
            key, _, value = line.partition("=")
            keys[key.strip()] = value.strip()
    return keys


class LinuxAutostart(Autostart):
    """$XDG_CONFIG_HOME/autostart/pulse-agent.desktop."""

    def __init__(
        self,
        command: Sequence[str],
        config_home: Path | None = None,
        desktop: str | None = None,
    ):
        super().__init__(command)
        if config_home is None:
            xdg = os.environ.get("XDG_CONFIG_HOME", "")
            # the spec says a relative value is invalid and must be ignored
            config_home = Path(xdg) if os.path.isabs(xdg) else Path.home() / ".config"
        self.path = config_home / "autostart" / f"{ENTRY_NAME}.desktop"
        self.desktop = os.environ.get("XDG_CURRENT_DESKTOP", "") if desktop is None else desktop

    @property
    def location(self) -> str:
        """The .desktop file."""
        return str(self.path)

    def render(self) -> str:
        """The whole .desktop file."""
        return (
            "[Desktop Entry]\n"
            "Type=Application\n"
            "Version=1.5\n"
            "Name=Pulse agent\n"
            "Comment=Queues sensor readings and sends them to the Pulse collector\n"
            f"Exec={exec_value(self.command)}\n"
            "Terminal=false\n"
            "X-GNOME-Autostart-enabled=true\n"
        )

    def _read(self) -> str | None:
        try:
            return self.path.read_text(encoding="utf-8")
        except FileNotFoundError:
            return None

    def is_registered(self) -> bool:
        """True if the file exists."""
        return self.path.is_file()

    def is_enabled(self) -> bool:
        """The file exists, is not Hidden, and GNOME (only GNOME reads it) has it on."""
        text = self._read()
        if text is None:
            return False
        keys = _desktop_entry(text)
        if keys.get("Hidden", "false").lower() == "true":
            return False
        gnome_on = keys.get("X-GNOME-Autostart-enabled", "true").lower() != "false"
        return gnome_on or "GNOME" not in self.desktop.upper().split(":")

    def enable(self) -> None:
        """Write the file (over one that was hidden or switched off)."""
        write_atomic(self.path, self.render().encode("utf-8"))
        logger.info("start at login enabled: %s", self.path)

    def disable(self) -> None:
        """Remove the file: every desktop honours that, unlike X-GNOME-Autostart-enabled."""
        self.path.unlink(missing_ok=True)
        logger.info("start at login disabled: removed %s", self.path)

    def registered_program(self) -> str | None:
        """The first argument of the file's Exec line."""
        text = self._read()
        if text is None:
            return None
        args = parse_exec_value(_desktop_entry(text).get("Exec", ""))
        return args[0] if args else None

    def _repoint(self) -> None:
        """Replace the Exec line, keeping the user's other keys (Hidden, GNOME's switch)."""
        lines = (self._read() or "").splitlines()
        want = f"Exec={exec_value(self.command)}"
        lines = [want if line.startswith("Exec=") else line for line in lines]
        write_atomic(self.path, ("\n".join(lines) + "\n").encode("utf-8"))


# --- macOS (launchd) ---------------------------------------------------------------------


class MacAutostart(Autostart):
    """~/Library/LaunchAgents/<label>.plist."""

    def __init__(
        self, command: Sequence[str], agents_dir: Path | None = None, label: str = MAC_LABEL
    ):
        super().__init__(command)
        agents_dir = agents_dir or Path.home() / "Library" / "LaunchAgents"
        self.label = label
        self.path = agents_dir / f"{label}.plist"

    @property
    def location(self) -> str:
        """The plist file."""
        return str(self.path)

    def render(self) -> dict[str, object]:
        """The launch agent's properties."""
        return {
            "Label": self.label,
            "ProgramArguments": self.command,
            "RunAtLoad": True,
            "ProcessType": "Interactive",
            "LimitLoadToSessionType": "Aqua",
        }

    def _read(self) -> dict[str, object] | None:
        # plistlib (and the XML parser it loads) only where a plist is read or written:
        # 0.24 MiB of RSS that an agent on Windows or Linux never needs
        import plistlib

        try:
            with self.path.open("rb") as fh:
                data = plistlib.load(fh)
        except FileNotFoundError:
            return None
        except (plistlib.InvalidFileException, ValueError) as err:
            raise OSError(f"{self.path}: not a valid plist ({err})") from err
        return data if isinstance(data, dict) else None

    def _write(self, data: dict[str, object]) -> None:
        import plistlib

        write_atomic(self.path, plistlib.dumps(data))

    def is_registered(self) -> bool:
        """True if the plist exists."""
        return self.path.is_file()

    def is_enabled(self) -> bool:
        """The plist exists and launchd's Disabled key is not set."""
        data = self._read()
        return data is not None and not data.get("Disabled", False)

    def enable(self) -> None:
        """Write the plist; launchd loads it at the next login."""
        self._write(self.render())
        logger.info("start at login enabled: %s", self.path)

    def disable(self) -> None:
        """Remove the plist."""
        self.path.unlink(missing_ok=True)
        logger.info("start at login disabled: removed %s", self.path)

    def registered_program(self) -> str | None:
        """ProgramArguments[0] of the plist."""
        data = self._read()
        args = data.get("ProgramArguments") if data else None
        return str(args[0]) if isinstance(args, list) and args else None

    def _repoint(self) -> None:
        """Replace ProgramArguments, keeping the other keys (Disabled)."""
        data = self._read() or self.render()
        data["ProgramArguments"] = self.command
        self._write(data)


# --- Windows (registry) ------------------------------------------------------------------


class Registry(Protocol):
    """The few HKEY_CURRENT_USER operations autostart needs; tests pass a fake."""

    def get(self, key: str, name: str) -> str | bytes | None:
        """A value's data, or None if the key or value is missing."""

    def set_string(self, key: str, name: str, value: str) -> None:
        """Create or replace a REG_SZ value, creating the key if needed."""

    def delete(self, key: str, name: str) -> None:
        """Remove a value; no error if it is missing."""


class WindowsRegistry:
    """HKEY_CURRENT_USER through winreg (Windows only)."""

    def get(self, key: str, name: str) -> str | bytes | None:
        """A value's data, or None if the key or value is missing."""
        if sys.platform == "win32":
            import winreg

            try:
                with winreg.OpenKey(winreg.HKEY_CURRENT_USER, key) as handle:
                    data, _ = winreg.QueryValueEx(handle, name)
            except FileNotFoundError:
                return None
            return data if isinstance(data, str | bytes) else None
        raise OSError("the Windows registry exists only on Windows")

    def set_string(self, key: str, name: str, value: str) -> None:
        """Create or replace a REG_SZ value."""
        if sys.platform == "win32":
            import winreg

            with winreg.CreateKeyEx(winreg.HKEY_CURRENT_USER, key, 0, winreg.KEY_SET_VALUE) as h:
                winreg.SetValueEx(h, name, 0, winreg.REG_SZ, value)
            return
        raise OSError("the Windows registry exists only on Windows")

    def delete(self, key: str, name: str) -> None:
        """Remove a value if it is there."""
        if sys.platform == "win32":
            import winreg

            try:
                with winreg.OpenKey(winreg.HKEY_CURRENT_USER, key, 0, winreg.KEY_SET_VALUE) as h:
                    winreg.DeleteValue(h, name)
            except FileNotFoundError:
                pass
            return
        raise OSError("the Windows registry exists only on Windows")


def windows_command_line(command: Sequence[str]) -> str:
    """The Run value: the program always in quotes (spaces in Program Files), then its args."""
    program, *args = command
    return " ".join([f'"{program}"', *(subprocess.list2cmdline([arg]) for arg in args)])


class WindowsAutostart(Autostart):
    """HKCU\\...\\Run value, aware of Task Manager's StartupApproved switch."""

    def __init__(
        self, command: Sequence[str], registry: Registry | None = None, name: str = ENTRY_NAME
    ):
        super().__init__(command)
        self.registry: Registry = registry or WindowsRegistry()
        self.name = name

    @property
    def location(self) -> str:
        """The registry value."""
        return f"HKCU\\{RUN_KEY}\\{self.name}"

    @property
    def command_line(self) -> str:
        """What the Run value holds."""
        return windows_command_line(self.command)

    def _switched_off(self) -> bool:
        # Task Manager writes 12 bytes; an odd first byte (03, 07) means the user disabled it
        data = self.registry.get(APPROVED_KEY, self.name)
        return isinstance(data, bytes) and len(data) > 0 and data[0] & 1 == 1

    def is_registered(self) -> bool:
        """True if the Run value exists."""
        return bool(self.registry.get(RUN_KEY, self.name))

    def is_enabled(self) -> bool:
        """The Run value exists and Task Manager has not switched it off."""
        return self.is_registered() and not self._switched_off()

    def enable(self) -> None:
        """Write the Run value and clear a Task Manager "disabled" mark."""
        self.registry.set_string(RUN_KEY, self.name, self.command_line)
        if self._switched_off():
            # absent means approved; Task Manager writes it again when the user toggles
            self.registry.delete(APPROVED_KEY, self.name)
        logger.info("start at login enabled: %s", self.location)

    def disable(self) -> None:
        """Remove the Run value and its StartupApproved mark."""
        self.registry.delete(RUN_KEY, self.name)
        self.registry.delete(APPROVED_KEY, self.name)
        logger.info("start at login disabled: removed %s", self.location)

    def registered_program(self) -> str | None:
        """The program of the Run value: the quoted first part, else up to the first space."""
        value = self.registry.get(RUN_KEY, self.name)
        if not isinstance(value, str) or not value.strip():
            return None
        value = value.strip()
        if value.startswith('"'):
            return value[1:].split('"', 1)[0]
        return value.split(" ", 1)[0]

    def _repoint(self) -> None:
        """Rewrite the Run value; StartupApproved stays as the user set it."""
        self.registry.set_string(RUN_KEY, self.name, self.command_line)


def create_autostart(command: Sequence[str], platform: str = sys.platform) -> Autostart:
    """The implementation for this OS, at its real location."""
    if platform == "win32":
        return WindowsAutostart(command)
    if platform == "darwin":
        return MacAutostart(command)
    return LinuxAutostart(command)
