"""RecentIds: the ids of messages the bridge sent, remembered for a while."""

from __future__ import annotations

import pytest

from bridge.teams import network
from bridge.teams.network import RecentIds


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> Clock:
    clock = Clock()
    monkeypatch.setattr(network.time, "monotonic", clock)
    return clock


def test_an_id_is_known_until_its_time_is_up(clock: Clock) -> None:
    ids = RecentIds(ttl=10)
    ids.add("a")
    clock.now += 9
    assert "a" in ids
    clock.now += 1
    assert "a" not in ids
    assert "never" not in ids


def test_adding_again_starts_its_time_again_and_old_ids_are_forgotten(clock: Clock) -> None:
    ids = RecentIds(ttl=10)
    ids.add("a")
    ids.add("b")
    clock.now += 6
    ids.add("a")
    clock.now += 6  # b expired, a was renewed
    ids.add("c")
    assert "a" in ids and "c" in ids and "b" not in ids
    assert list(ids._ids) == ["a", "c"]  # b's entry is gone, not only expired
