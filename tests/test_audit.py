"""The audit log (both engines): what is recorded, that no secret is, and that recording never
breaks the action it records, even with the database away or stuck."""

from __future__ import annotations

import logging
import time

import asyncpg
import pytest

from bridge.core import audit as audit_module
from bridge.core.audit import AuditLog
from bridge.core.federation import FederationPolicy
from bridge.core.housekeeping import DAY_MS, Housekeeping, Retention
from bridge.portal.audit import DETAIL_LIMIT, FIELD_LIMIT, AuditStore
from bridge.portal.models import BridgeUser
from bridge.portal.pruning import Pruner
from bridge.portal.store import Store
from tests.store_fixtures import StoreTarget
from tests.test_adopt import ALICE, Hub
from tests.test_dead_letter_commands import ADMIN, ADMIN_ROOM, USER, USER_ROOM, Room
from tests.test_dead_letters import matrix_letter
from tests.test_housekeeping import Clock

RULES = [{"network": "xmpp", "remote": ["friend.example"], "matrix": ["local"]}]
SECRETS = ("hunter2", "s3cr3t-value", "syt_YWxpY2U_abcdefghij", "eyJhbGciOi.payload.sig", "pw 9")


def rows_text(store_rows: list[object]) -> str:
    return "\n".join(repr(row) for row in store_rows)


async def all_rows(store: Store) -> list[tuple[object, ...]]:
    rows = await store.database.fetch(
        "SELECT at, actor, action, target, outcome, origin, detail FROM audit ORDER BY id"
    )
    return [tuple(row) for row in rows]


# --- what is stored -----------------------------------------------------------------------------


async def test_an_entry_is_a_row_and_one_log_line(
    store: Store, caplog: pytest.LogCaptureFixture
) -> None:
    before = int(time.time() * 1000)
    with caplog.at_level(logging.INFO, logger="pontis.audit"):
        entry = await AuditLog(store).record(
            actor=ADMIN, action="dead-letters.drop", target="7", outcome="ok",
            origin=f"management-room {ADMIN_ROOM}", detail="Dropped dead letter 7.",
        )  # fmt: skip
    assert entry is not None
    ((at, *fields),) = await all_rows(store)
    assert before <= at <= int(time.time() * 1000)
    assert fields == [ADMIN, "dead-letters.drop", "7", "ok", f"management-room {ADMIN_ROOM}",
                      "Dropped dead letter 7."]  # fmt: skip
    (line,) = [r for r in caplog.records if r.name == "pontis.audit"]
    assert line.levelno == logging.INFO
    assert line.getMessage() == (
        f"{ADMIN} dead-letters.drop 7: ok (from management-room {ADMIN_ROOM}): "
        "Dropped dead letter 7."
    )


@pytest.mark.parametrize(
    "detail",
    [
        "login with password=hunter2 and token: s3cr3t-value",
        'client_secret="pw 9", access_token=syt_YWxpY2U_abcdefghij',
        "Authorization: Bearer eyJhbGciOi.payload.sig",
        "got syt_YWxpY2U_abcdefghij back",
        '{"user": "bob", "password": "hunter2", "nested": [{"refresh_token": "s3cr3t-value"}]}',
        {"user": "bob", "password": "hunter2", "headers": {"Authorization": "pw 9"}},
        [{"api_key": "s3cr3t-value"}],
    ],
)
async def test_a_secret_in_a_detail_is_stored_and_logged_hidden(
    store: Store, caplog: pytest.LogCaptureFixture, detail: object
) -> None:
    with caplog.at_level(logging.INFO, logger="pontis.audit"):
        await AuditLog(store).record(actor=ADMIN, action="login", target="xmpp bob@x.test",
                                     outcome="ok", origin="cli", detail=detail)  # type: ignore[arg-type]  # fmt: skip
    stored = rows_text(await all_rows(store)) + "\n" + caplog.text
    assert "[hidden]" in stored
    for secret in SECRETS:
        assert secret not in stored
    assert "bob" in stored  # what is not secret stays readable


async def test_hostile_texts_are_stored_as_one_capped_line(store: Store) -> None:
    """A remote id chosen by a stranger: newlines (a forged second log line), NUL (PostgreSQL
    refuses it), a lone surrogate (neither engine encodes it), and a megabyte."""
    forged = "evil@x.test\n2026-01-01 00:00:00 UTC  @admin:hub.test  logout  ok\x00\udc80"
    log = AuditLog(store)
    entry = await log.record(actor=forged, action="federation.refused", target=forged * 1000,
                             outcome="refused", origin="xmpp direct message",
                             detail="x" * 1_000_000)  # fmt: skip
    assert entry is not None
    (row,) = await AuditStore(store.database).newest()
    assert "\n" not in row.line() and "\x00" not in row.line()
    assert row.actor.startswith("evil@x.test 2026-01-01") and "\\x00" in row.actor
    assert len(row.target) == FIELD_LIMIT and len(row.detail) == DETAIL_LIMIT
    with pytest.raises(ValueError, match="outcome"):
        await AuditStore(store.database).add(actor="a", action="b", target="", outcome="maybe",  # type: ignore[arg-type]
                                             origin="")  # fmt: skip


# --- recording never breaks the action ----------------------------------------------------------


async def test_a_closed_store_costs_a_warning_not_the_action(
    store_target: StoreTarget, caplog: pytest.LogCaptureFixture
) -> None:
    store = await store_target.open()
    await store.close()
    with caplog.at_level(logging.INFO, logger="pontis.audit"):
        entry = await AuditLog(store).record(actor=ADMIN, action="logout", target="xmpp a",
                                             outcome="ok", origin="cli")  # fmt: skip
    assert entry is None
    info, warning = [r for r in caplog.records if r.name == "pontis.audit"]
    assert info.levelno == logging.INFO  # the log still has it
    assert warning.levelno == logging.WARNING
    assert warning.getMessage().startswith(f"Audit entry not stored ({ADMIN} logout): ")


async def test_an_admin_command_works_while_its_audit_write_fails(store: Store) -> None:
    """The audit table is gone (a broken migration, a revoked grant): the drop still happens."""
    room = Room(store)
    await store.save_user(BridgeUser(mxid=ADMIN, management_room=ADMIN_ROOM))
    letter = await matrix_letter(store, "$dropped")
    await store.database.execute("DROP TABLE audit")
    assert await room.say(ADMIN_ROOM, ADMIN, f"drop {letter}") == f"Dropped dead letter {letter}."
    assert await store.dead_letters.count() == 0


async def test_a_stuck_database_is_waited_for_only_so_long(
    store_target: StoreTarget, caplog: pytest.LogCaptureFixture
) -> None:
    if store_target.engine != "postgres":
        pytest.skip("a lock another server session holds: PostgreSQL")
    store = await store_target.open()
    other = await asyncpg.connect(store_target.url, server_settings=store_target.db_args["server_settings"])  # fmt: skip
    try:
        async with other.transaction():
            await other.execute("LOCK TABLE audit IN ACCESS EXCLUSIVE MODE")
            began = time.monotonic()
            entry = await AuditLog(store, timeout=0.5).record(
                actor=ADMIN, action="dead-letters.retry", target="all", outcome="ok", origin="cli"
            )
            assert entry is None and time.monotonic() - began < 3
        assert "timed out" in caplog.text
        # The store is still usable afterwards.
        assert await AuditLog(store).record(actor=ADMIN, action="x", target="", outcome="ok",
                                            origin="cli") is not None  # fmt: skip
    finally:
        await other.close()
        await store.close()


# --- where entries come from --------------------------------------------------------------------


async def test_admin_commands_and_their_refusals_are_recorded(store: Store) -> None:
    await store.save_user(BridgeUser(mxid=ADMIN, management_room=ADMIN_ROOM))
    await store.save_user(BridgeUser(mxid=USER, management_room=USER_ROOM))
    room = Room(store)
    letter = await matrix_letter(store, "$one")
    await room.say(ADMIN_ROOM, ADMIN, "dead-letters")
    await room.say(ADMIN_ROOM, ADMIN, f"retry {letter}")
    await room.say(ADMIN_ROOM, ADMIN, "drop 999")
    await room.say(USER_ROOM, USER, "drop all")
    entries = await AuditStore(store.database).newest()
    assert [(e.actor, e.action, e.target, e.outcome, e.origin) for e in reversed(entries)] == [
        (ADMIN, "dead-letters.list", "", "ok", f"management-room {ADMIN_ROOM}"),
        (ADMIN, "dead-letters.retry", str(letter), "ok", f"management-room {ADMIN_ROOM}"),
        (ADMIN, "dead-letters.drop", "999", "failed", f"management-room {ADMIN_ROOM}"),
        (USER, "dead-letters.drop", "all", "refused", f"management-room {USER_ROOM}"),
    ]
    assert entries[2].detail == "1 retried"


async def test_the_bridge_command_is_recorded(store: Store) -> None:
    hub = Hub(store)
    await hub.bridging.bridge_command("!room:hub.test", ALICE, "reference", "one")
    (entry,) = await AuditStore(store.database).newest()
    assert (entry.actor, entry.action, entry.target, entry.outcome, entry.origin) == (
        ALICE, "bridge", "reference one", "ok", "room !room:hub.test",
    )  # fmt: skip


async def test_every_federation_refusal_is_noted_with_the_side_that_tried(store: Store) -> None:
    audit = AuditLog(store)
    policy = FederationPolicy(RULES, "hub.test", on_refusal=audit.note_refusal)
    assert policy.refusal("xmpp", "evil.example", ALICE, entry="xmpp direct message")
    assert policy.refusal("xmpp", "far.example", "@bob:elsewhere.test", entry="matrix invite")
    assert policy.refusal("xmpp", "friend.example", ALICE, entry="bridge command") is None
    await audit.flush()
    entries = await AuditStore(store.database).newest(action="federation")
    assert [(e.actor, e.target, e.outcome, e.origin) for e in reversed(entries)] == [
        ("xmpp:evil.example", f"xmpp:evil.example ↔ {ALICE}", "refused", "xmpp direct message"),
        ("@bob:elsewhere.test", "xmpp:far.example ↔ @bob:elsewhere.test", "refused",
         "matrix invite"),
    ]  # fmt: skip
    assert all(e.action == "federation.refused" for e in entries)


async def test_a_flood_of_refusals_keeps_a_bounded_number_of_writes(
    store: Store, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(audit_module, "MAX_BACKGROUND", 3)
    audit = AuditLog(store)
    policy = FederationPolicy(RULES, "hub.test", on_refusal=audit.note_refusal)
    for n in range(10):  # no await in between: nothing written yet
        policy.refusal("xmpp", f"spam{n}.example", ALICE, entry="xmpp direct message")
    await audit.flush()
    assert await AuditStore(store.database).count() == 3
    assert caplog.text.count("Audit log busy") == 7


# --- reading and pruning ------------------------------------------------------------------------


async def test_newest_first_with_filters(store: Store) -> None:
    clock = Clock()
    rows = AuditStore(store.database, clock)
    for actor, action in [(ADMIN, "dead-letters.retry"), (USER, "login"),
                          (ADMIN, "dead-letters.drop"), (ADMIN, "dead-letters-x"),
                          ("cli:root", "pending.park")]:  # fmt: skip
        clock.now += DAY_MS
        await rows.add(actor=actor, action=action, target="", outcome="ok", origin="cli")
    assert [e.action for e in await rows.newest(2)] == ["pending.park", "dead-letters-x"]
    assert [e.action for e in await rows.newest(actor=ADMIN, action="dead-letters")] == [
        "dead-letters.drop", "dead-letters.retry",
    ]  # fmt: skip
    assert [e.action for e in await rows.newest(since_ms=clock.now - DAY_MS)] == [
        "pending.park", "dead-letters-x",
    ]  # fmt: skip
    assert await rows.count(action="dead-letters.drop") == 1
    assert await rows.newest(actor="' OR 1=1 --") == []


async def test_housekeeping_prunes_entries_past_audit_days(store: Store) -> None:
    clock = Clock()
    rows = AuditStore(store.database, clock)
    for _ in range(5):
        await rows.add(actor=ADMIN, action="login", target="", outcome="ok", origin="cli")
    clock.now += 300 * DAY_MS
    await rows.add(actor=ADMIN, action="logout", target="", outcome="ok", origin="cli")
    clock.now += 70 * DAY_MS  # the first five are 370 days old, the last 70
    keeper = Housekeeping(Pruner(store.database, clock=clock, batch=2), Retention(), {},
                          log=logging.getLogger("test"))  # fmt: skip
    assert (await keeper.run_once()).audit == 5
    assert [e.action for e in await rows.newest()] == ["logout"]
    keeper.retention = Retention(audit_days=0)  # 0 keeps them for ever
    clock.now += 1000 * DAY_MS
    assert (await keeper.run_once()).audit == 0


def test_audit_days_default_and_bad_values() -> None:
    assert Retention.from_section({}).audit_days == 365
    assert Retention.from_section({"audit_days": 0}).audit_days == 0
    with pytest.raises(Exception, match=r"bridge\.retention\.audit_days"):
        Retention.from_section({"audit_days": "a year"})


async def test_note_needs_no_await_and_flush_waits(store: Store) -> None:
    audit = AuditLog(store)
    audit.note(actor="cli:root", action="pending.park", target="n1", outcome="ok", origin="cli")
    await audit.flush()
    assert [e.target for e in await AuditStore(store.database).newest()] == ["n1"]
