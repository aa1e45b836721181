"""Which config file the agent uses when none is given, and why that one."""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

import platformdirs

from agent.config import APP_NAME, CONFIG_NAME, Config, save_config


def find_config(explicit: Path | None) -> tuple[Path, str]:
    """The config path to use and why; the default one is created on first run."""
    if explicit is not None:
        return explicit.expanduser().resolve(), "given with --config"
    path, why = default_config_path()
    if ensure_config(path):
        why += ", created with defaults"
    return path, why


def _is_writable(folder: Path) -> bool:
    try:
        with tempfile.TemporaryFile(dir=folder):
            return True
    except OSError:
        return False


def default_config_path(cwd: Path | None = None) -> tuple[Path, str]:
    """Find config.json when --config is not given, and say why that one.

    Frozen: beside the executable if that folder is writable. From source: the
    current directory if it has one. Otherwise the per-user config folder.
    """
    if getattr(sys, "frozen", False):
        beside = Path(sys.executable).resolve().parent
        if _is_writable(beside):
            return beside / CONFIG_NAME, "beside the executable"
    else:
        here = (cwd or Path.cwd()) / CONFIG_NAME
        if here.is_file():
            return here, "in the current directory"
    user = Path(platformdirs.user_config_dir(APP_NAME, appauthor=False))
    return user / CONFIG_NAME, "in the per-user config folder"


def ensure_config(path: Path) -> bool:
    """Create the file with defaults if it does not exist; never touch an existing one."""
    if path.exists():
        return False
    save_config(path, Config())
    return True
