"""Every error answer is JSON (wire.ErrorBody); unexpected exceptions become a logged 500."""

from __future__ import annotations

import logging

from aiohttp import hdrs, web
from aiohttp.typedefs import Handler

from pulse_common.http import json_error

logger = logging.getLogger(__name__)

# headers of an HTTPException worth keeping, e.g. Allow on a 405
KEPT_HEADERS = (hdrs.ALLOW, hdrs.WWW_AUTHENTICATE, hdrs.RETRY_AFTER)


@web.middleware
async def error_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Turn HTTP errors into JSON bodies, and any other exception into a logged 500."""
    try:
        return await handler(request)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        headers = {str(k): exc.headers[k] for k in KEPT_HEADERS if k in exc.headers}
        return json_error(exc.status, exc.reason, headers)
    except ConnectionResetError:
        # the client hung up mid-request (a retry will come): nothing was stored, no one
        # is left to read an answer, and it is not an error of ours (aiohttp would log a
        # re-raised one with a traceback)
        logger.info("client hung up during %s %s", request.method, request.path)
        return json_error(400, "connection reset by the client")
    except Exception:
        logger.exception("unexpected error in %s %s", request.method, request.path)
        return json_error(500, "internal server error; see the collector's log")
