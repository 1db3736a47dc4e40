"""``pontis email record``: an admin reads a mail record on the command line, both engines.
Bad keys and missing records get one clear line; an altered record is refused; an existing output
file is kept; every call is in the audit log. ``main`` runs in a worker thread (its own event
loop, as on the command line) while the test's store is open, as the running bridge's would be.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from bridge.core.cli import main
from bridge.email.connector import EmailConnector
from bridge.email.records import DIRECTION_IN, DIRECTION_OUT, Records
from bridge.email.store import EmailStore
from bridge.portal.store import Store
from tests.test_cli_dead_letters import out_and_err

pytestmark = pytest.mark.usefixtures("no_pontis_env")
RAW = b"From: bob@example.org\r\nMessage-ID: <1@example.org>\r\n\r\nThe original.\r\n"
ROOM = "room.abcdefghijklmnop@mail.test"


async def pontis(config: str, *args: str) -> int:
    return await asyncio.to_thread(main, ["-c", config, *args], factories={"email": EmailConnector})


async def _records(store: Store) -> Records:
    email = EmailStore(store.database)
    await email.upgrade()
    return Records(email)


async def test_bad_keys_and_missing_records_are_one_clear_line(
    store: Store, cli_config: str, capsys: pytest.CaptureFixture[str]
) -> None:
    await _records(store)
    for key in ("nonsense", "'; DROP TABLE email_record; --", "a" * 63, "<none@example.org>",
                "0" * 64):  # fmt: skip
        assert await pontis(cli_config, "email", "record", key) == 1
        out, err = out_and_err(capsys)
        assert out == [] and len(err) == 1 and err[0].startswith("pontis email: ")
    assert await pontis(cli_config, "email", "unknown") == 2  # argparse's usage error
    capsys.readouterr()


async def test_an_admin_finds_a_mail_and_reads_it_byte_for_byte(
    store: Store, cli_config: str, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    records = await _records(store)
    digest = await records.keep(ROOM, "<1@example.org>", DIRECTION_IN, RAW)
    await records.keep(ROOM, "<1@example.org>", DIRECTION_OUT, RAW + b"copy")
    assert await pontis(cli_config, "email", "record", "<1@example.org>") == 0
    out, _ = out_and_err(capsys)
    assert len(out) == 2 and {line.split()[1] for line in out} == {"in", "out"}
    assert any(line.startswith(digest) for line in out)
    target = tmp_path / "mail.eml"
    assert await pontis(cli_config, "email", "record", digest, "-o", str(target)) == 0
    assert target.read_bytes() == RAW
    capsys.readouterr()
    assert await pontis(cli_config, "email", "record", digest, "-o", str(target)) == 1  # kept
    assert "cannot write" in out_and_err(capsys)[1][0] and target.read_bytes() == RAW
    await store.database.execute("UPDATE email_record SET data=$1", b"not zlib at all")
    assert await pontis(cli_config, "email", "record", digest) == 1
    assert "altered" in out_and_err(capsys)[1][0]
    rows = await store.database.fetch("SELECT action, target, outcome FROM audit ORDER BY id")
    assert [(r["action"], r["outcome"]) for r in rows][-1] == ("email record", "failed")
    assert ("email record", f"{digest} -o {target}", "ok") in {
        (r["action"], r["target"], r["outcome"]) for r in rows
    }


async def test_a_connector_without_commands_says_so(
    cli_config: str, capsys: pytest.CaptureFixture[str]
) -> None:
    factories: dict[str, Any] = {"xmpp": object}
    code = await asyncio.to_thread(main, ["-c", cli_config, "xmpp", "x"], factories=factories)
    assert code == 1
    assert "has no commands of its own" in capsys.readouterr().err
