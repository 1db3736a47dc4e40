"""Column types that differ between the two engines."""

from __future__ import annotations

from mautrix.util.async_db import Scheme


def serial_pk(scheme: Scheme) -> str:
    # AUTOINCREMENT keeps SQLite from reusing the id of a deleted last row, so ids only grow
    # (the inbox is read with "id > last seen").
    if scheme == Scheme.SQLITE:
        return "INTEGER PRIMARY KEY AUTOINCREMENT"
    return "BIGSERIAL PRIMARY KEY"
