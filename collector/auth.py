"""Per-device bearer tokens: who may post readings for which device."""

from __future__ import annotations

import hmac


def bearer_token(header: str | None) -> str | None:
    """The token of an `Authorization: Bearer <token>` header, or None if there is none."""
    if not header:
        return None
    scheme, _, token = header.strip().partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token:
        return None
    return token


def is_authorized(tokens: dict[str, str], device_id: str, token: str) -> bool:
    """True if `token` is the one configured for `device_id`; constant-time comparison."""
    expected = tokens.get(device_id)
    # compare even for an unknown device, so the answer takes as long either way
    matches = hmac.compare_digest(
        (expected or "").encode("utf-8", "surrogateescape"),
        token.encode("utf-8", "surrogateescape"),
    )
    return matches and expected is not None
