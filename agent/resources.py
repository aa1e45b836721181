"""Find bundled resources (templates, static files) from source and from the frozen .exe."""

from __future__ import annotations

import sys
from pathlib import Path


def resource_root() -> Path:
    """The folder holding web/: sys._MEIPASS when frozen, the repository otherwise."""
    bundle = getattr(sys, "_MEIPASS", None)
    if bundle is not None:
        return Path(bundle)
    return Path(__file__).resolve().parent.parent


def resource_path(*parts: str) -> Path:
    """A path inside the bundled resources, e.g. resource_path("web", "templates")."""
    return resource_root().joinpath(*parts)
