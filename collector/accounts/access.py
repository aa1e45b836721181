"""The access rules every request passes through: public, read, change, and who may do which.

Public: GET /healthz, /login, POST /logout, /static/*, /api/v1/session, and POST
/api/v1/readings (device tokens, checked by its handler). Everything else is a read (GET,
HEAD, the live websocket included) or a change (any other method). A read needs a session,
a read token or open mode; a change needs a session with its CSRF token, or open mode from
the same origin. GET /api/v1/channels* holds secrets, so a read token does not read it.
"""

from __future__ import annotations

import hmac
import logging
from collections.abc import AsyncIterator, Callable
from typing import Literal
from urllib.parse import quote, urlsplit

from aiohttp import hdrs, web
from aiohttp.typedefs import Handler

from collector.accounts.exposure import exposure_error, is_loopback
from collector.accounts.identity import ACCESS, ANONYMOUS, Access, access_of
from collector.accounts.login import SESSION_COOKIE, add_login_routes, set_session_cookie
from collector.accounts.passwords import Passwords
from collector.accounts.service import ACCOUNTS, Accounts
from collector.accounts.store import AccountStore
from collector.auth import bearer_token
from collector.config import CollectorConfig
from collector.handlers import refuse
from collector.store import Clock

__all__ = [
    "ACCESS",
    "ANONYMOUS",
    "Access",
    "access_middleware",
    "access_of",
    "accounts_context",
    "add_account_routes",
]

logger = logging.getLogger(__name__)

Kind = Literal["public", "read", "secret_read", "change"]
CSRF_HEADER = "X-CSRF-Token"
PUBLIC = frozenset(
    {
        ("GET", "/healthz"),
        ("GET", "/login"),
        ("POST", "/login"),
        ("POST", "/logout"),
        ("POST", "/api/v1/readings"),
        ("GET", "/api/v1/session"),
        ("POST", "/api/v1/session"),
        ("DELETE", "/api/v1/session"),
    }
)
READS = frozenset({"GET", "HEAD"})
DEFAULT_PORTS = {"http": "80", "https": "443", "ws": "80", "wss": "443"}


def kind_of(method: str, path: str) -> Kind:
    """What a request is under the access rules."""
    as_get = "GET" if method == "HEAD" else method
    if (as_get, path) in PUBLIC or path.startswith("/static/"):
        return "public"
    if method not in READS:
        return "change"
    if path == "/api/v1/channels" or path.startswith("/api/v1/channels/"):
        return "secret_read"
    return "read"


def _authority(netloc: str, scheme: str) -> str:
    """host:port in lower case, the scheme's default port left out."""
    host, _, port = netloc.lower().rpartition(":")
    if not host or "]" in port:
        return netloc.lower()
    return host if port == DEFAULT_PORTS.get(scheme) else f"{host}:{port}"


def is_same_origin(request: web.Request) -> bool:
    """True without an Origin header, or when it names the host the request was sent to."""
    origin = request.headers.get(hdrs.ORIGIN)
    if origin is None:
        return True
    parts = urlsplit(origin)
    if not parts.netloc:
        return False  # "null": a sandboxed frame or a file
    return _authority(parts.netloc, parts.scheme) == _authority(request.host, request.scheme)


def is_page(path: str) -> bool:
    """True for an HTML page: not the JSON API, the health check or the metrics (a scraper
    needs a 401 it can report, not a redirect to a login form)."""
    return not path.startswith("/api/") and path not in ("/healthz", "/metrics")


def _login_redirect(request: web.Request) -> web.Response:
    target = quote(request.rel_url.path_qs, safe="/")
    return web.Response(status=303, headers={hdrs.LOCATION: f"/login?next={target}"})


def _has_csrf(request: web.Request, expected: str) -> bool:
    given = request.headers.get(CSRF_HEADER, "")
    given_bytes = given.encode("utf-8", "surrogatepass")
    return bool(expected) and hmac.compare_digest(given_bytes, expected.encode())


async def _identify(request: web.Request, accounts: Accounts) -> tuple[Access, bool]:
    """The request's Access, and whether its session's expiry moved (the cookie must too)."""
    open_mode = await accounts.is_open()
    cookie = request.cookies.get(SESSION_COOKIE)
    session = await accounts.session(cookie) if cookie else None
    if session is not None:
        return Access("session", session.user, session.csrf, open_mode), session.refreshed
    token = bearer_token(request.headers.get(hdrs.AUTHORIZATION))
    if token is not None and accounts.is_read_token(token):
        return Access("token", open_mode=open_mode), False
    if open_mode:
        return Access("open", open_mode=True), False
    return ANONYMOUS, False


def _verdict(request: web.Request, kind: Kind, access: Access) -> web.StreamResponse | None:
    """The refusal of a request, or None if it may pass."""
    if kind == "public":
        return None
    if access.via == "session":
        if kind == "change" and not _has_csrf(request, access.csrf):
            return refuse(request, 403, f"missing or wrong {CSRF_HEADER} header")
        return None
    if access.via == "token":
        if kind == "read":
            return None
        return refuse(request, 403, "a read token only reads; sign in to do this")
    if access.via == "open":
        # a page of another site must not drive, nor (over a websocket) read, an open server
        if not is_same_origin(request):
            return refuse(request, 403, "a request from another origin is refused")
        return None
    if bearer_token(request.headers.get(hdrs.AUTHORIZATION)) is not None:
        return refuse(request, 401, "the token is not a read token")
    if kind == "read" and is_page(request.path):
        return _login_redirect(request)
    return refuse(request, 401, "sign in, or send Authorization: Bearer <read token>")


@web.middleware
async def access_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Find out who asks, set request[ACCESS], and refuse what they may not do."""
    access, refreshed = await _identify(request, request.app[ACCOUNTS])
    request[ACCESS] = access
    kind = kind_of(request.method, request.path)
    if isinstance(request.match_info.http_exception, web.HTTPMethodNotAllowed):
        # no handler runs; the 405 and its Allow header tell only what the API document says
        kind = "public"
    refusal = _verdict(request, kind, access)
    if refusal is not None:
        return refusal
    response = await handler(request)
    if refreshed and not response.prepared and SESSION_COOKIE not in response.cookies:
        # the session's expiry moved in the database; the cookie's follows (unless the
        # handler set or deleted the cookie itself, as a logout does)
        set_session_cookie(request, response, request.cookies[SESSION_COOKIE])
    return response


def accounts_context(
    config: CollectorConfig, clock: Clock
) -> Callable[[web.Application], AsyncIterator[None]]:
    """A cleanup context: the account store opened; off loopback, a refusal to run open."""

    async def context(app: web.Application) -> AsyncIterator[None]:
        store = await AccountStore.open(db=config.db, database_url=config.database_url)
        try:
            loopback = is_loopback(config.host)
            if not loopback and not config.read_tokens and not await store.has_users():
                raise exposure_error(config.host)
            app[ACCOUNTS] = Accounts(
                store,
                Passwords(),
                read_tokens=list(config.read_tokens),
                is_loopback=loopback,
                clock=clock,
            )
            yield
        finally:
            await store.close()

    return context


def add_account_routes(app: web.Application) -> None:
    """Register the login and logout routes: the form, and the JSON session API."""
    add_login_routes(app)
