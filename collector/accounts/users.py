"""`create-user` and `delete-user`: the command line's way to set a password or remove a user.

They write to the same database the server reads (SQLite file or PostgreSQL), so a running
collector sees the change within a second, and a changed password signs its sessions out.
"""

from __future__ import annotations

import datetime as dt
import getpass
from typing import TextIO

from collector.accounts.passwords import Passwords, name_problem, password_problem
from collector.accounts.store import AccountStore
from collector.config import CollectorConfig


class UserInputError(ValueError):
    """The command's input cannot be used; the text says why (exit code 2)."""


def read_password(from_stdin: bool, stdin: TextIO) -> str:
    """The new password: one line of stdin, or asked twice on the terminal."""
    if from_stdin:
        line = stdin.readline()
        password = line.removesuffix("\n").removesuffix("\r")
    else:
        if not stdin.isatty():
            raise UserInputError("no terminal to ask for the password on: use --password-stdin")
        try:
            password = getpass.getpass("New password: ")
            again = getpass.getpass("Repeat it: ")
        except EOFError as err:
            raise UserInputError("no password given") from err
        if password != again:
            raise UserInputError("the two passwords differ; nothing changed")
    problem = password_problem(password)
    if problem is not None:
        raise UserInputError(f"{problem}; nothing changed")
    return password


def check_name(name: str) -> None:
    """Raise UserInputError unless `name` can be a user name."""
    problem = name_problem(name)
    if problem is not None:
        raise UserInputError(problem)


async def set_password(config: CollectorConfig, name: str, password: str) -> bool:
    """Create `name` with `password`, or change its password; True if created."""
    # hashed before the database opens: the store's connection is held for no longer than needed
    hashed = Passwords().hash_now(password)
    store = await AccountStore.open(db=config.db, database_url=config.database_url)
    try:
        return await store.set_password(name, hashed, dt.datetime.now(dt.UTC))
    finally:
        await store.close()


async def delete_user(config: CollectorConfig, name: str) -> bool:
    """Delete `name` and its sessions; False if there was no such user."""
    store = await AccountStore.open(db=config.db, database_url=config.database_url)
    try:
        return await store.delete_user(name)
    finally:
        await store.close()
