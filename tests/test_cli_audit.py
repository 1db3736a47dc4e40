"""``pontis -c CONFIG audit``, and the command-line actions it records, both engines.

``main`` runs in a worker thread (its own event loop, as on the command line) while the test's
store is open, as the running bridge's would be.
"""

from __future__ import annotations

import asyncio
import re
from pathlib import Path

import pytest

from bridge.core.audit import AuditLog, cli_actor
from bridge.core.cli import main
from bridge.portal.audit import AuditStore
from bridge.portal.models import InboxItem
from bridge.portal.store import Store
from tests.cli_fixtures import CONFIG
from tests.store_fixtures import StoreTarget
from tests.test_cli_dead_letters import out_and_err
from tests.test_dead_letters import matrix_letter

pytestmark = pytest.mark.usefixtures("no_pontis_env")

ADMIN = "@admin:hub.test"
WHEN = r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d UTC"


@pytest.fixture
def config(cli_config: str) -> str:
    return cli_config


async def pontis(config: str, *args: str) -> int:
    return await asyncio.to_thread(main, ["-c", config, *args], factories={})


async def test_cli_actions_are_recorded_and_listed_newest_first(
    store: Store, config: str, capsys: pytest.CaptureFixture[str]
) -> None:
    await AuditLog(store).record(actor=ADMIN, action="login", target="xmpp a@x.test",
                                 outcome="ok", origin="room !dm:hub.test",
                                 detail="password=hunter2")  # fmt: skip
    letter = await matrix_letter(store, "$one")
    assert await pontis(config, "dead-letters", "retry", str(letter)) == 0
    assert await pontis(config, "dead-letters", "drop", "999") == 1
    (row,) = await store.store_transaction("t1", [InboxItem("pdu", "$w", "!r:hub", {})]) or []
    assert await pontis(config, "pending", "park", f"m{row.id}") == 0
    capsys.readouterr()

    assert await pontis(config, "audit") == 0
    out, _ = out_and_err(capsys)
    me = cli_actor()
    assert out[-1] == "4 audit entries"
    lines = [line.split("  ")[1:] for line in out[:-1]]
    assert lines == [
        [me, "pending.park", f"m{row.id}", "ok", "cli", f"dead letter {letter + 1}"],
        [me, "dead-letters.drop", "999", "failed", "cli", "no such dead letter"],
        [me, "dead-letters.retry", str(letter), "ok", "cli", "1 retried"],
        [ADMIN, "login", "xmpp a@x.test", "ok", "room !dm:hub.test", "password=[hidden]"],
    ]
    assert all(re.match(WHEN, line) for line in out[:-1])

    assert await pontis(config, "audit", "--limit", "1", "--action", "dead-letters") == 0
    out, _ = out_and_err(capsys)
    assert out[-1] == "2 audit entries (1 older not shown)" and "dead-letters.drop" in out[0]
    assert await pontis(config, "audit", "--actor", ADMIN, "--since", "2000-01-01") == 0
    out, _ = out_and_err(capsys)
    assert len(out) == 2 and out[-1] == "1 audit entry"
    assert await pontis(config, "audit", "--since", "2999-01-01T00:00:00+01:00") == 0
    assert out_and_err(capsys)[0] == ["0 audit entries"]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("--since", "yesterday"), "pontis: --since: 'yesterday' is not an ISO date or time, "
         "e.g. 2026-12-01 or 2026-12-01T08:30:00+01:00"),
        (("--since", "2026-13-40"), "pontis: --since: '2026-13-40' is not an ISO date or time, "
         "e.g. 2026-12-01 or 2026-12-01T08:30:00+01:00"),
        (("--limit", "0"), "pontis: --limit: give at least 1"),
    ],
)  # fmt: skip
async def test_bad_arguments_are_one_line_and_exit_1(
    store: Store, config: str, capsys: pytest.CaptureFixture[str], args: tuple[str, ...],
    message: str,
) -> None:  # fmt: skip
    await AuditLog(store).record(actor=ADMIN, action="x", target="", outcome="ok", origin="cli")
    assert await pontis(config, "audit", *args) == 1
    out, err = out_and_err(capsys)
    assert out == [] and err == [message]


async def test_generate_registration_is_recorded_once_the_database_exists(
    tmp_path: Path, store_target: StoreTarget, capsys: pytest.CaptureFixture[str]
) -> None:
    if store_target.engine != "sqlite":
        pytest.skip("whether the database exists yet: a SQLite file")
    missing = tmp_path / "not-yet.db"
    path = tmp_path / "config.yaml"
    path.write_text(CONFIG.format(database=f"sqlite:{missing}"))
    reg = tmp_path / "registration.yaml"
    assert await pontis(str(path), "generate-registration", "-r", str(reg)) == 0
    assert not missing.exists()  # not created just to record this
    await (await store_target.open()).close()  # the bridge ran once: the database exists
    path.write_text(CONFIG.format(database=store_target.url))
    assert await pontis(str(path), "generate-registration", "-r", str(reg)) == 0
    assert "Traceback" not in capsys.readouterr().err
    store = await store_target.open()
    try:
        (entry,) = await AuditStore(store.database).newest()
        assert (entry.actor, entry.action, entry.target, entry.outcome, entry.origin) == (
            cli_actor(), "generate-registration", str(reg), "ok", "cli",
        )  # fmt: skip
    finally:
        await store.close()


async def test_an_unreachable_database_is_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "config.yaml"
    path.write_text(CONFIG.format(database="postgres://nobody@127.0.0.1:1/none"))
    assert await pontis(str(path), "audit") == 1
    _, err = out_and_err(capsys)
    assert len(err) == 1 and err[0].startswith("pontis: database: cannot open 127.0.0.1:1/none")
