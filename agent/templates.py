"""The dashboard's HTML templates, with jinja2 loaded at the first page asked for.

jinja2 costs about 2 MiB of RSS once imported, and most of an agent's life no page is open
(bench/hub_footprint.py): the environment is built when the first page is rendered, and
kept for the agent's life.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from aiohttp import web

if TYPE_CHECKING:
    import jinja2


class Templates:
    """jinja2 templates in `folder`, autoescaped, strict about undefined names."""

    def __init__(self, folder: Path) -> None:
        self._folder = folder
        self._env: jinja2.Environment | None = None

    @property
    def loaded(self) -> bool:
        """Whether a page was rendered, and jinja2 imported for it."""
        return self._env is not None

    def _environment(self) -> jinja2.Environment:
        if self._env is None:
            # imported here, at the first page: see the module's doc
            import jinja2

            self._env = jinja2.Environment(
                loader=jinja2.FileSystemLoader(self._folder),
                autoescape=True,
                undefined=jinja2.StrictUndefined,
            )
        return self._env

    def render(self, name: str, context: Mapping[str, Any]) -> str:
        """The template `name` rendered with `context`."""
        return self._environment().get_template(name).render(context)

    def response(self, name: str, context: Mapping[str, Any]) -> web.Response:
        """The rendered template as a text/html response."""
        return web.Response(text=self.render(name, context), content_type="text/html")
