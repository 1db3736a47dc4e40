"""A throw-away PostgreSQL database for one benchmark run."""

from __future__ import annotations

import contextlib
import secrets
from collections.abc import AsyncIterator

import asyncpg
from yarl import URL

DEFAULT_ADMIN_URL = "postgres://postgres@127.0.0.1:5432/test"


async def server_version(admin_url: str) -> str:
    conn = await asyncpg.connect(admin_url, timeout=5)
    try:
        return str(await conn.fetchval("SHOW server_version"))
    finally:
        await conn.close()


@contextlib.asynccontextmanager
async def temporary_database(admin_url: str) -> AsyncIterator[URL]:
    """Create ``pontis_bench_<random>`` next to ``admin_url``'s database; drop it afterwards."""
    name = f"pontis_bench_{secrets.token_hex(4)}"
    conn = await asyncpg.connect(admin_url, timeout=5)
    try:
        await conn.execute(f'CREATE DATABASE "{name}"')
        try:
            yield URL(admin_url).with_path(f"/{name}")
        finally:
            await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await conn.close()
