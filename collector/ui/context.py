"""What every page's template gets: the page's name, who is signed in, the CSRF token."""

from __future__ import annotations

from typing import Any

from aiohttp import web

from collector.accounts.identity import access_of


def page_context(request: web.Request, page: str, **extra: Any) -> dict[str, Any]:
    """The base template's context for `page`, plus the page's own keys."""
    access = access_of(request)
    return {
        "page": page,
        "user": access.user,
        "csrf": access.csrf,
        "open_mode": access.open_mode,
        **extra,
    }


def repeated_parameter(request: web.Request) -> str | None:
    """The first query parameter given more than once, which a page cannot read; else None."""
    return next((key for key in request.query if len(request.query.getall(key)) > 1), None)
