"""Housekeeping keeps the tables bounded (both engines) and runs on its schedule."""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field

import pytest

from bridge.core.config import ConfigError
from bridge.core.housekeeping import DAY_MS, HOUR_MS, Housekeeping, Retention
from bridge.core.ids import NetworkID
from bridge.portal import InboxItem, Store
from bridge.portal.pruning import Pruned, Pruner
from tests.store_fixtures import StoreTarget

LOG = logging.getLogger("test.housekeeping")
XMPP, TEAMS, CRYPTO = NetworkID("xmpp"), NetworkID("teams"), NetworkID("crypto")
MARKERS = {"xmpp": ("sid:", "sid>:"), "teams": ("edited:",)}
START = 1_800_000_000_000


@dataclass
class Clock:
    now: int = START

    def __call__(self) -> int:
        return self.now


async def count(store: Store, query: str) -> int:
    return int(await store.database.fetchval(query))


async def counts(store: Store) -> dict[str, int]:
    return {
        "transactions": await count(store, "SELECT COUNT(*) FROM as_transaction"),
        "xmpp markers": await count(store, "SELECT COUNT(*) FROM kv WHERE network='xmpp'"),
        "teams markers": await count(
            store, "SELECT COUNT(*) FROM kv WHERE network='teams' AND key LIKE 'edited:%'"
        ),
        "dead letters": await count(store, "SELECT COUNT(*) FROM dead_letter"),
    }


async def write_day(store: Store, clock: Clock, first: int, per_day: int) -> None:
    """``per_day`` messages spread over the day after ``clock.now``, as the bridge leaves them:
    a finished transaction, two XMPP stanza-id markers, every 10th a Teams edit marker, every
    100th a dead letter. The day's last message goes through the store's own calls (which
    stamp the rows with the clock); the others are inserted in bulk, stamped the same way."""
    step = DAY_MS // per_day
    txns, markers, dead = [], [], []
    for n in range(first, first + per_day - 1):
        clock.now += step
        txns.append((f"txn{n}", clock.now))
        markers += [("xmpp", f"sid:room@muc:{n}", f"m{n}", clock.now)]
        markers += [("xmpp", f"sid>:room@muc:m{n}", str(n), clock.now)]
        if n % 10 == 0:
            markers.append(("teams", f"edited:19:chat:{n}", "2026-01-01T00:00Z", clock.now))
        if n % 100 == 0:
            dead.append(("pdu", f"$e{n}", "!room:hub", "{}", "M_FORBIDDEN", 1, clock.now))
    db = store.database
    await db.executemany("INSERT INTO as_transaction (txn_id, received_at) VALUES ($1, $2)", txns)
    await db.executemany(
        "INSERT INTO kv (network, key, value, updated_at) VALUES ($1, $2, $3, $4)", markers
    )
    if dead:
        await db.executemany(
            "INSERT INTO dead_letter (kind, event_id, room_id, payload, error, attempts,"
            " parked_at) VALUES ($1, $2, $3, $4, $5, $6, $7)",
            dead,
        )
    n = first + per_day - 1
    clock.now += step
    item = InboxItem("pdu", f"$e{n}", "!room:hub", {"type": "m.room.message"})
    (row,) = await store.store_transaction(f"txn{n}", [item]) or []
    await store.finish_inbox(row.id)
    await store.kv_set(XMPP, f"sid:room@muc:{n}", f"m{n}")
    await store.kv_set(XMPP, f"sid>:room@muc:m{n}", str(n))


async def test_row_counts_stay_bounded_over_10000_messages(store_target: StoreTarget) -> None:
    """48 messages a day for 209 days (10,032 messages); housekeeping runs once a day with
    the default retention. Every table stays within its retention plus one day's worth."""
    clock = Clock()
    store = await store_target.open(clock=clock)
    try:
        daily = Retention(interval_minutes=24 * 60)
        keeper = Housekeeping(Pruner(store.database, clock=clock), daily, MARKERS, log=LOG)
        # State, not markers: kept however old.
        await store.kv_set(TEAMS, "client_state", "secret")
        await store.kv_set(TEAMS, "chat:19:abc", "tenant")
        await store.kv_set(CRYPTO, "recovery_key", "sealed")
        (stuck,) = (
            await store.store_transaction(
                "stuck", [InboxItem("pdu", "$stuck", "!room:hub", {"type": "m.room.message"})]
            )
            or []
        )
        per_day, days = 48, 209
        peak: dict[str, int] = {}
        for day in range(days):
            await write_day(store, clock, day * per_day, per_day)
            for name, value in (await counts(store)).items():  # the most, just before a run
                peak[name] = max(peak.get(name, 0), value)
            await keeper.run_once()
        assert days * per_day >= 10_000

        # Retention plus one day (between two runs), plus the row exactly at the cutoff.
        assert peak["transactions"] <= 2 * per_day + 1
        assert peak["xmpp markers"] <= 2 * (91 * per_day + 1)
        assert peak["teams markers"] <= 91 * per_day // 10 + 1
        assert peak["dead letters"] <= 31 * per_day // 100 + 1
        final = await counts(store)
        # Nothing younger than its retention went: the last 90 days of markers are all there.
        assert final["xmpp markers"] >= 2 * 90 * per_day
        assert final["teams markers"] >= 90 * per_day // 10
        assert final["transactions"] >= per_day - 1
        assert final["dead letters"] >= 30 * per_day // 100
        assert await store.kv_get(TEAMS, "client_state") == "secret"
        assert await store.kv_get(TEAMS, "chat:19:abc") == "tenant"
        assert await store.kv_get(CRYPTO, "recovery_key") == "sealed"
        assert [r.id for r in await store.pending_inbox()] == [stuck.id]  # pending: kept
    finally:
        await store.close()


async def test_a_marker_written_again_is_young_again(store: Store) -> None:
    clock = Clock()
    store._clock = clock  # the store stamps kv rows with this clock
    pruner = Pruner(store.database, clock=clock)
    await store.kv_set(XMPP, "sid:a", "1")
    await store.kv_set(XMPP, "sid:b", "1")
    await store.kv_set(XMPP, "sid_c", "1")  # "_" is no wildcard: not a marker
    clock.now += 80 * DAY_MS
    await store.kv_set(XMPP, "sid:a", "2")
    clock.now += 20 * DAY_MS
    assert await pruner.kv_markers("xmpp", ["sid:"], 90 * DAY_MS) == 1
    assert await store.kv_get(XMPP, "sid:a") == "2"
    assert await store.kv_get(XMPP, "sid:b") is None
    assert await store.kv_get(XMPP, "sid_c") == "1"
    with pytest.raises(ValueError, match="every key"):
        await pruner.kv_markers("xmpp", [""], DAY_MS)


async def test_zero_keeps_rows_for_ever_and_batches_finish(store: Store) -> None:
    clock = Clock()
    store._clock = clock
    for n in range(25):
        assert await store.store_transaction(f"t{n}", []) == []
        await store.kv_set(XMPP, f"sid:{n}", "x")
    clock.now += 1000 * DAY_MS
    keep = Retention(transaction_hours=0, marker_days=0, dead_letter_days=0)
    keeper = Housekeeping(Pruner(store.database, clock=clock, batch=7), keep, MARKERS, log=LOG)
    assert (await keeper.run_once()).total == 0
    keeper.retention = Retention()
    pruned = await keeper.run_once()  # 25 rows each, in batches of 7
    assert (pruned.transactions, pruned.markers, pruned.dead_letters) == (25, 25, 0)


@dataclass
class FakePruner:
    """Records when (virtual seconds) each kind of pruning ran; fails when told."""

    now: list[float]
    runs: list[float] = field(default_factory=list)
    fail_at: set[int] = field(default_factory=set)

    async def transactions(self, older_than_ms: int) -> int:
        self.runs.append(self.now[0])
        if len(self.runs) in self.fail_at:
            raise ConnectionError("database away")
        assert older_than_ms == 24 * HOUR_MS
        return 1

    async def kv_markers(self, network: str, prefixes: object, older_than_ms: int) -> int:
        assert older_than_ms == 90 * DAY_MS and network in MARKERS
        return 2

    async def dead_letters(self, older_than_ms: int) -> int:
        assert older_than_ms == 30 * DAY_MS
        return 0

    async def audit(self, older_than_ms: int) -> int:
        assert older_than_ms == 365 * DAY_MS
        return 3


async def test_schedule_first_run_after_a_minute_then_every_interval_despite_failures() -> None:
    now = [0.0]
    gate = asyncio.Event()
    sleeps: list[float] = []

    async def fake_sleep(seconds: float) -> None:
        sleeps.append(seconds)
        now[0] += seconds
        if len(sleeps) > 5:
            gate.set()
            await asyncio.Event().wait()  # parked here until stop() cancels
        await asyncio.sleep(0)

    pruner = FakePruner(now, fail_at={2})
    keeper = Housekeeping(
        pruner,  # type: ignore[arg-type]
        Retention(interval_minutes=30),
        MARKERS,
        log=LOG,
        sleep=fake_sleep,
    )
    keeper.start()
    await asyncio.wait_for(gate.wait(), 5)
    await keeper.stop()
    # At 60 s, then every 30 minutes; the second run failed and the third still came.
    assert pruner.runs == [60.0, 1860.0, 3660.0, 5460.0, 7260.0]
    assert sleeps == [60.0] + [1800.0] * 5
    await keeper.stop()  # twice is harmless


async def test_one_run_prunes_each_table_and_every_network() -> None:
    pruner = FakePruner([0.0])
    keeper = Housekeeping(pruner, Retention(), MARKERS, log=LOG)  # type: ignore[arg-type]
    assert await keeper.run_once() == Pruned(transactions=1, markers=4, dead_letters=0, audit=3)


def test_retention_defaults_and_bad_values() -> None:
    assert Retention.from_section({}) == Retention(24, 90, 30, 60)
    assert Retention.from_section({"marker_days": 0, "transaction_hours": 1.5}) == Retention(
        1.5, 0, 30, 60
    )
    with pytest.raises(ConfigError) as err:
        Retention.from_section({"dead_letter_days": -1, "interval_minutes": 0, "marker_days": "x"})
    text = str(err.value)
    assert "bridge.retention.dead_letter_days" in text
    assert "bridge.retention.interval_minutes" in text
    assert "bridge.retention.marker_days" in text
