"""How far back a Teams catch-up looks (:mod:`bridge.teams.coverage`), on a real store (SQLite,
PostgreSQL). Times are seconds on a test clock; bounds are milliseconds."""

from __future__ import annotations

import logging

import pytest

from bridge.portal.store import NetworkStore, Store
from bridge.teams.coverage import MARGIN, MISSED_LOOKBACK_MS, Coverage
from bridge.teams.ids import NETWORK

LOG = logging.getLogger("test.teams.coverage")
CHAT = "19:chat@thread.v2"


class Clock:
    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


def ms(seconds: float) -> int:
    return int(seconds * 1000)


def coverage(store: Store, clock: Clock) -> Coverage:
    """One process of the bridge: its webhook goes live at once."""
    cov = Coverage(NetworkStore(store, NETWORK), LOG, clock)
    cov.live()
    return cov


async def test_a_chat_never_walked_is_walked_to_its_newest_known_message(
    store: Store, clock: Clock
) -> None:
    assert await coverage(store, clock).bound(CHAT, "t1") is None


async def test_a_walk_covers_what_was_written_before_it(store: Store, clock: Clock) -> None:
    cov = coverage(store, clock)
    walked_at = ms(clock.now)
    await cov.walked(CHAT, "t1", None, walked_at)
    clock.now += 3600  # the process died at once: nothing else is proven
    assert await coverage(store, clock).bound(CHAT, "t2") == walked_at - ms(MARGIN)


async def test_a_period_the_webhook_kept_everything_extends_the_walk(
    store: Store, clock: Clock
) -> None:
    cov = coverage(store, clock)
    clock.now += 5
    await cov.walked(CHAT, "t1", None, ms(clock.now))
    clock.now += 3600
    await cov.write()  # the bridge ran an hour; then it was killed
    written = ms(clock.now - MARGIN)
    clock.now += 600
    assert await coverage(store, clock).bound(CHAT, "t2") == written


async def test_an_ending_keeps_what_the_period_last_wrote_down_never_later(
    store: Store, clock: Clock
) -> None:
    """The loss may have begun before it was noticed (a store that hung, deliveries that never
    reached the webhook): an ending does not move the period's end forward."""
    cov = coverage(store, clock)
    clock.now += 5
    await cov.walked(CHAT, "t1", None, ms(clock.now))
    clock.now += 600
    await cov.write()
    written = ms(clock.now - MARGIN)
    clock.now += 1200  # nothing written meanwhile (the database was away)
    await cov.end("a webhook call could not be stored")
    cov.live()  # the webhook keeps notifications again
    clock.now += 1800
    await cov.write()  # the new period began after the chat's walk: it proves nothing for it
    clock.now += 60
    assert await coverage(store, clock).bound(CHAT, "t2") == written


async def test_graphs_missed_event_reaches_back_hours(store: Store, clock: Clock) -> None:
    """Graph says ``missed`` after retrying for hours: the period's end goes back that far."""
    cov = coverage(store, clock)
    clock.now += 5
    walked = ms(clock.now)
    await cov.walked(CHAT, "t1", None, walked)
    clock.now += 10 * 3600
    await cov.write()
    await cov.end("Graph's missed lifecycle event", MISSED_LOOKBACK_MS)
    assert await coverage(store, clock).bound(CHAT, "t2") == ms(clock.now) - MISSED_LOOKBACK_MS


async def test_no_period_claims_anything_before_it_is_live(store: Store, clock: Clock) -> None:
    """Until every subscription is in place (the connector calls ``live``) nothing is proven."""
    cov = Coverage(NetworkStore(store, NETWORK), LOG, clock)
    await cov.walked(CHAT, "t1", None, ms(clock.now))
    clock.now += 3600
    await cov.write()
    assert await Coverage(NetworkStore(store, NETWORK), LOG, clock).bound(CHAT, "t2") == ms(
        clock.now - 3600 - MARGIN
    )


async def test_a_catch_up_converted_again_after_a_crash_walks_as_far_as_the_first_time(
    store: Store, clock: Clock
) -> None:
    """Its own messages may be on Matrix by now; those it had not sent must still be found."""
    first = coverage(store, clock)
    await first.walked(CHAT, "t1", None, ms(clock.now))
    clock.now += 600
    second = coverage(store, clock)
    bound = await second.bound(CHAT, "t2")
    await second.walked(CHAT, "t2", bound, ms(clock.now))
    clock.now += 10  # killed while sending what it found; the input is converted again
    third = coverage(store, clock)
    assert await third.bound(CHAT, "t2") == bound
    assert await third.bound(CHAT, "t3") == ms(clock.now - 10 - MARGIN)


async def test_the_first_message_a_notification_bridged_bounds_the_chat_history(
    store: Store, clock: Clock
) -> None:
    cov = coverage(store, clock)
    clock.now += 5
    created = ms(clock.now - 2)  # written after the webhook went live
    await cov.first_bridged(CHAT, created)
    await cov.first_bridged(CHAT, created + 5000)  # a later one changes nothing
    clock.now += 600
    await cov.write()
    written = ms(clock.now - MARGIN)
    assert await coverage(store, clock).bound(CHAT, "t1") == written
    assert await coverage(store, clock).bound("19:other@thread.v2", "t1") is None


async def test_records_another_version_wrote_are_ignored(store: Store, clock: Clock) -> None:
    kv = NetworkStore(store, NETWORK)
    await kv.kv_set(f"catch-up:{CHAT}", '{"unexpected": 1}')
    await kv.kv_set("catch-up-periods", "not json")
    cov = coverage(store, clock)
    assert await cov.bound(CHAT, "t1") is None
    await cov.write()
    assert await cov.bound(CHAT, "t1") is None
