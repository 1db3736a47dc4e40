"""``pontis email record <sha256|message-id> [-o FILE]``: an admin reads a mail record.

With a hash: the raw mail, byte for byte, to stdout or ``FILE`` (checked against its hash
first). With a Message-ID (``<id@domain>``): the records of that mail, one line each (hash,
direction, portal, when), since a mail sent as one copy per contact is several records. The core
audits every call (``pontis audit --action email``).
"""

from __future__ import annotations

import argparse
import asyncio
import re
import sys
from datetime import UTC, datetime
from pathlib import Path

from mautrix.util.async_db import Database

from bridge.email.records import Records
from bridge.email.store import EmailStore

_HASH = re.compile(r"[0-9a-fA-F]{64}")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="pontis email", description="email connector commands")
    sub = parser.add_subparsers(dest="command", required=True)
    record = sub.add_parser("record", help="a mail record, by SHA-256 or Message-ID")
    record.add_argument("key", help="the record's SHA-256, or a Message-ID <id@domain>")
    record.add_argument("-o", "--output", help="write the raw mail here (never overwritten)")
    return parser


def _write_new(path: Path, raw: bytes) -> None:
    with path.open("xb") as out:  # "x": an existing file (an earlier record?) is kept
        out.write(raw)


def _fail(line: str) -> int:
    print(f"pontis email: {line}", file=sys.stderr)
    return 1


async def run(args: list[str], database: Database) -> int:
    try:
        parsed = _parser().parse_args(args)
    except SystemExit as done:  # --help, or a usage error already printed
        return int(done.code or 0)
    store = EmailStore(database)
    await store.upgrade()
    records = Records(store)
    key = parsed.key.strip()
    if key.startswith("<") and key.endswith(">"):
        refs = await records.find(key)
        if not refs:
            return _fail(f"no record of {key} (never seen, or past connectors.email.records)")
        for ref in refs:
            when = datetime.fromtimestamp(ref.stored_at / 1000, UTC).isoformat(timespec="seconds")
            print(f"{ref.sha256} {ref.direction:3} {ref.portal} {when}")
        return 0
    if not _HASH.fullmatch(key):
        return _fail("give a record's SHA-256 (64 hex digits) or a Message-ID <id@domain>")
    try:
        raw = await records.raw(key)
    except ValueError as err:
        return _fail(str(err))
    if raw is None:
        return _fail(f"no record {key} (never kept, or past connectors.email.records.keep_days)")
    if parsed.output is None:
        sys.stdout.buffer.write(raw)
        sys.stdout.flush()
        return 0
    try:
        await asyncio.to_thread(_write_new, Path(parsed.output), raw)
    except OSError as err:
        return _fail(f"cannot write {parsed.output}: {err}")
    print(f"Wrote {len(raw)} bytes to {parsed.output}")
    return 0
