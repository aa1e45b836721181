"""The dashboard's defences: Host allow-list, same-origin + CSRF for changes, the unlock secret.

Local dashboards are attacked through DNS rebinding (a foreign Host), cross-site requests
(a foreign Origin, a form or text/plain POST) and cross-site websocket hijacking. Reading
the status needs nothing; changing anything needs a session that only the per-start
secret (or the dashboard password) opens, plus a CSRF token in a header.
"""

from __future__ import annotations

import asyncio
import hmac
import ipaddress
import logging
import secrets
import socket
from collections import OrderedDict

from aiohttp import web
from aiohttp.typedefs import Handler, Middleware

from pulse_common.hosts import is_loopback
from pulse_common.http import json_error

logger = logging.getLogger(__name__)

CSRF_HEADER = "X-CSRF-Token"
TOKEN_PARAM = "token"
LOGIN_PATH = "/api/login"
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
MAX_SESSIONS = 64
LOCKED_TEXT = (
    "the dashboard is read-only: open the link the agent printed when it started "
    "(it ends in ?token=…) or use Open dashboard in the tray menu"
)


def _split_host(host: str) -> tuple[str, str]:
    """Split "name:port" or "[v6]:port" into its name and port text."""
    if host.startswith("["):
        name, _, rest = host[1:].partition("]")
        return name, rest.removeprefix(":")
    name, _, port = host.rpartition(":")
    return (name, port) if name else (host, "")


def is_allowed_host(host: str, port: int, bind_host: str) -> bool:
    """True if a Host header names this dashboard, so a rebound DNS name cannot reach it.

    On loopback only 127.0.0.1, localhost and [::1] with the port pass. When bound to a
    network address (which needs a password), IP literals and this machine's own names
    pass too: a rebinding attack needs a name the attacker controls.
    """
    host = host.lower()
    loopback = {f"127.0.0.1:{port}", f"localhost:{port}", f"[::1]:{port}"}
    if port == 80:
        loopback |= {"127.0.0.1", "localhost", "[::1]"}
    if host in loopback:
        return True
    if is_loopback(bind_host):
        return False
    name, port_text = _split_host(host)
    if port_text != str(port):
        return False
    try:
        ipaddress.ip_address(name)
        return True
    except ValueError:
        own = socket.gethostname().lower()
        return name in {bind_host.lower(), own, f"{own}.local"}


def local_port(request: web.Request) -> int:
    """The port the request arrived on (the test server's and the real one alike)."""
    sockname = request.transport.get_extra_info("sockname") if request.transport else None
    if isinstance(sockname, tuple) and len(sockname) >= 2:
        return int(sockname[1])
    return 0


def is_same_origin(request: web.Request, origin: str) -> bool:
    """True if Origin is this dashboard's own http origin."""
    return origin.lower() == f"http://{request.host}".lower()


class Auth:
    """The per-start unlock secret, the sessions it opened, and their CSRF tokens."""

    def __init__(self, bind_host: str, password: str = "", failure_delay_s: float = 1.0):
        self.secret = secrets.token_urlsafe(32)
        self.bind_host = bind_host
        self.password = password
        self.failure_delay_s = failure_delay_s
        # session id -> its CSRF token; the oldest are forgotten past MAX_SESSIONS
        self._sessions: OrderedDict[str, str] = OrderedDict()
        self._refusals_logged: set[str] = set()

    def check_secret(self, candidate: str) -> bool:
        """True if `candidate` is this run's unlock secret."""
        return hmac.compare_digest(candidate.encode(), self.secret.encode())

    def check_password(self, candidate: str) -> bool:
        """True if a dashboard password is set and `candidate` is it."""
        return bool(self.password) and hmac.compare_digest(
            candidate.encode(), self.password.encode()
        )

    def open_session(self) -> str:
        """Start a session; return its id for the cookie."""
        sid = secrets.token_urlsafe(32)
        self._sessions[sid] = secrets.token_urlsafe(32)
        while len(self._sessions) > MAX_SESSIONS:
            self._sessions.popitem(last=False)
        return sid

    def close_session(self, sid: str | None) -> None:
        """Forget a session."""
        if sid:
            self._sessions.pop(sid, None)

    def csrf_for(self, sid: str | None) -> str | None:
        """The CSRF token of a live session, or None."""
        return self._sessions.get(sid) if sid else None

    def note_refusal(self, kind: str, detail: str) -> None:
        """Log the first refusal of each kind as a warning; repeats only at debug level."""
        if kind in self._refusals_logged:
            logger.debug("dashboard refused %s: %s", kind, detail)
            return
        self._refusals_logged.add(kind)
        logger.warning("dashboard refused %s: %s (further ones logged at debug)", kind, detail)


def cookie_name(request: web.Request) -> str:
    """The session cookie's name; cookies ignore ports, so each port gets its own."""
    return f"pulse_session_{local_port(request)}"


def session_id(request: web.Request) -> str | None:
    """The session id from the request's cookie, if any."""
    return request.cookies.get(cookie_name(request))


def set_session_cookie(request: web.Request, response: web.StreamResponse, sid: str) -> None:
    """Hand the browser its session: HttpOnly, SameSite=Strict, for this session only."""
    response.set_cookie(
        cookie_name(request), sid, path="/", httponly=True, samesite="Strict", secure=False
    )


def _refuse(auth: Auth, kind: str, text: str, request: web.Request) -> web.Response:
    auth.note_refusal(kind, f"{request.method} {request.path} (Host {request.host!r})")
    return json_error(403, text)


def _change_problem(request: web.Request, auth: Auth) -> tuple[str, str] | None:
    """Why a state-changing request must be refused, or None if it may go ahead."""
    origin = request.headers.get("Origin")
    if origin is None or not is_same_origin(request, origin):
        return "cross-origin", f"cross-origin request refused (Origin {origin!r})"
    if request.content_type != "application/json":
        return "content-type", "changes need Content-Type: application/json"
    if request.path == LOGIN_PATH:
        return None
    csrf = auth.csrf_for(session_id(request))
    if csrf is None:
        return "locked", LOCKED_TEXT
    if not hmac.compare_digest(request.headers.get(CSRF_HEADER, "").encode(), csrf.encode()):
        return "csrf", f"missing or wrong {CSRF_HEADER} header"
    return None


def _unlock_redirect(request: web.Request, auth: Auth) -> web.HTTPSeeOther:
    """Swap ?token= for a session cookie and drop it from the address bar."""
    location = request.rel_url.without_query_params(TOKEN_PARAM)
    if auth.check_secret(request.query[TOKEN_PARAM]):
        redirect = web.HTTPSeeOther(location=str(location))
        set_session_cookie(request, redirect, auth.open_session())
        logger.info("dashboard unlocked with the start-up link")
        return redirect
    auth.note_refusal("secret", "an unlock link from another run")
    return web.HTTPSeeOther(location=str(location.update_query(unlock="failed")))


def create_guard(auth: Auth) -> Middleware:
    """The middleware: Host allow-list, then the unlock swap, then checks on changes."""

    @web.middleware
    async def guard(request: web.Request, handler: Handler) -> web.StreamResponse:
        if not is_allowed_host(request.host, local_port(request), auth.bind_host):
            return _refuse(auth, "host", "this Host is not allowed", request)
        if request.method in SAFE_METHODS:
            if TOKEN_PARAM in request.query and not request.path.startswith(("/api/", "/ws")):
                raise _unlock_redirect(request, auth)
            return await handler(request)
        problem = _change_problem(request, auth)
        if problem is not None:
            return _refuse(auth, problem[0], problem[1], request)
        return await handler(request)

    return guard


async def failed_login_delay(auth: Auth) -> None:
    """Slow down password guessing."""
    await asyncio.sleep(auth.failure_delay_s)
