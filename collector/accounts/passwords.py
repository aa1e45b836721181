"""Password rules and argon2id hashes: what a password must be, and checking one in equal work."""

from __future__ import annotations

import asyncio
import re

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

MIN_LENGTH = 8
# argon2 hashes any length, but a megabyte "password" would only cost us time
MAX_LENGTH = 1024
NAME_MAX_LENGTH = 64
# printable, no spaces: a name is typed on a command line and shown in logs
NAME_PATTERN = re.compile(rf"[^\s\x00-\x1f\x7f]{{1,{NAME_MAX_LENGTH}}}")
# each argon2 call takes 64 MiB for ~0.1 s: a burst of logins must not take the server's memory
CONCURRENT_HASHES = 2


def name_problem(name: str) -> str | None:
    """Why `name` cannot be a user name, or None."""
    if NAME_PATTERN.fullmatch(name) is None:
        return f"a user name is 1 to {NAME_MAX_LENGTH} characters without spaces, got {name!r}"
    return None


def password_problem(password: str) -> str | None:
    """Why `password` cannot be set, or None; never echoes the password."""
    if len(password) < MIN_LENGTH:
        return f"the password must have at least {MIN_LENGTH} characters"
    if len(password) > MAX_LENGTH:
        return f"the password must have at most {MAX_LENGTH} characters"
    return None


def _encoded(text: str) -> bytes:
    # UTF-8, but a lone surrogate (bytes a terminal could not decode) is hashed, not raised
    return text.encode("utf-8", "surrogatepass")


class Passwords:
    """argon2id hashing off the event loop, at most CONCURRENT_HASHES at a time."""

    def __init__(self, hasher: PasswordHasher | None = None):
        self._hasher = hasher or PasswordHasher()
        self._slots = asyncio.Semaphore(CONCURRENT_HASHES)
        # verified when the user is unknown, so that the answer costs the same work
        self._decoy = self._hasher.hash("not a password of anyone")

    def hash_now(self, password: str) -> str:
        """The argon2id hash of `password`, on this thread (for the command line)."""
        return self._hasher.hash(_encoded(password))

    async def hash(self, password: str) -> str:
        """The argon2id hash of `password`, computed on a worker thread."""
        async with self._slots:
            return await asyncio.to_thread(self.hash_now, password)

    async def verify(self, stored: str | None, password: str) -> bool:
        """True if `password` matches `stored`; with no stored hash, the same work and False."""
        async with self._slots:
            return await asyncio.to_thread(self._verify, stored, password)

    def needs_rehash(self, stored: str) -> bool:
        """True if `stored` was made with weaker parameters than today's."""
        try:
            return self._hasher.check_needs_rehash(stored)
        except InvalidHashError:
            return True

    def _verify(self, stored: str | None, password: str) -> bool:
        try:
            matches = self._hasher.verify(stored or self._decoy, _encoded(password))
        except (VerificationError, InvalidHashError):
            return False
        return matches and stored is not None
