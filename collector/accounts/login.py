"""Signing in and out: the login form, and the same as JSON under /api/v1/session.

Both answer a wrong user name and a wrong password alike, and a rate-limited attempt with
429 and Retry-After before any password is checked.
"""

from __future__ import annotations

import re
from typing import Any

import aiohttp_jinja2
import msgspec
from aiohttp import hdrs, web

from collector.accounts.identity import access_of
from collector.accounts.service import ACCOUNTS, Limited, LoginResult, SignedIn
from collector.accounts.store import SESSION_TTL
from collector.ui.context import page_context
from pulse_common.http import json_error, json_response

SESSION_COOKIE = "pulse_session"
FORM_TYPES = frozenset({"application/x-www-form-urlencoded", "multipart/form-data"})
WRONG = "Wrong user name or password"
# a `next` that leaves the site would turn the login form into an open redirect
LOCAL_PATH = re.compile(r"/(?![/\\])[^\x00-\x1f\x7f]*")


class Credentials(msgspec.Struct, forbid_unknown_fields=True):
    """The body of POST /api/v1/session."""

    username: str
    password: str


def local_next(value: object) -> str:
    """`value` if it is a path on this site, else "/"."""
    if isinstance(value, str) and LOCAL_PATH.fullmatch(value):
        return value
    return "/"


def set_session_cookie(request: web.Request, response: web.StreamResponse, token: str) -> None:
    """The session cookie: script-proof, not sent by other sites' requests, HTTPS-only on HTTPS."""
    response.set_cookie(
        SESSION_COOKIE,
        token,
        max_age=int(SESSION_TTL.total_seconds()),
        path="/",
        httponly=True,
        samesite="Lax",
        secure=request.secure,
    )


def _address(request: web.Request) -> str:
    return request.remote or "unknown"


def _limited_text(result: Limited) -> str:
    minutes = -(-result.retry_after_s // 60)
    return f"Too many failed sign-ins; try again in {minutes} min"


def _form_page(request: web.Request, status: int, **context: Any) -> web.Response:
    values = {"error": "", "next": "/", "username": "", **context}
    response = aiohttp_jinja2.render_template(
        "login.html", request, page_context(request, "login", **values), status=status
    )
    return response


async def login_page(request: web.Request) -> web.Response:
    """The sign-in form; `next` is where a successful sign-in goes."""
    return _form_page(request, 200, next=local_next(request.query.get("next")))


async def _sign_in(request: web.Request, name: str, password: str) -> LoginResult:
    return await request.app[ACCOUNTS].login(name, password, _address(request))


async def login_form(request: web.Request) -> web.Response:
    """Check the form; on success set the cookie and go to `next`."""
    if request.content_type not in FORM_TYPES:
        found = request.headers.get(hdrs.CONTENT_TYPE, "none")
        return json_error(415, f"expected a form (application/x-www-form-urlencoded), got {found}")
    try:
        form = await request.post()
    except ValueError as err:  # a multipart body without its boundary, say
        return json_error(400, f"the form cannot be read: {err}")
    name, password = form.get("username", ""), form.get("password", "")
    target = local_next(form.get("next"))
    name = name if isinstance(name, str) else ""
    result = await _sign_in(request, name, password if isinstance(password, str) else "")
    if isinstance(result, SignedIn):
        response = web.Response(status=303, headers={hdrs.LOCATION: target})
        set_session_cookie(request, response, result.session.token)
        return response
    if isinstance(result, Limited):
        response = _form_page(request, 429, error=_limited_text(result), next=target, username=name)
        response.headers[hdrs.RETRY_AFTER] = str(result.retry_after_s)
        return response
    return _form_page(request, 401, error=WRONG, next=target, username=name)


async def _end_session(request: web.Request, response: web.StreamResponse) -> None:
    token = request.cookies.get(SESSION_COOKIE)
    if token:
        await request.app[ACCOUNTS].end_session(token)
    response.del_cookie(SESSION_COOKIE, path="/")


async def logout(request: web.Request) -> web.Response:
    """End the session and go back to the form."""
    response = web.Response(status=303, headers={hdrs.LOCATION: "/login"})
    await _end_session(request, response)
    return response


async def get_session(request: web.Request) -> web.Response:
    """Who is signed in, the CSRF token to send on changes, and whether the server is open."""
    access = access_of(request)
    return json_response({"user": access.user, "csrf": access.csrf, "open_mode": access.open_mode})


async def post_session(request: web.Request) -> web.Response:
    """Sign in with JSON; the session cookie comes with the answer."""
    # JSON only: another site's page cannot send it without a CORS preflight, so it cannot
    # sign a visitor's browser in to the attacker's account
    if request.content_type != "application/json":
        found = request.headers.get(hdrs.CONTENT_TYPE, "none")
        return json_error(415, f"expected Content-Type application/json, got {found}")
    try:
        body = msgspec.json.decode(await request.read(), type=Credentials)
    except msgspec.DecodeError as err:
        return json_error(400, f'expected {{"username": str, "password": str}}: {err}')
    result = await _sign_in(request, body.username, body.password)
    if isinstance(result, SignedIn):
        response = json_response({"user": result.user, "csrf": result.session.csrf})
        set_session_cookie(request, response, result.session.token)
        return response
    if isinstance(result, Limited):
        headers = {str(hdrs.RETRY_AFTER): str(result.retry_after_s)}
        return json_error(429, _limited_text(result), headers)
    return json_error(401, WRONG)


async def delete_session(request: web.Request) -> web.Response:
    """Sign out."""
    response = web.Response(status=204)
    await _end_session(request, response)
    return response


def add_login_routes(app: web.Application) -> None:
    """The form at /login, /logout, and /api/v1/session for scripts."""
    app.router.add_get("/login", login_page)
    app.router.add_post("/login", login_form)
    app.router.add_post("/logout", logout)
    app.router.add_get("/api/v1/session", get_session)
    app.router.add_post("/api/v1/session", post_session)
    app.router.add_delete("/api/v1/session", delete_session)
