"""Which presences and self-ping answers make the bridge rejoin a MUC, and how fast (issue #14)."""

from __future__ import annotations

import logging
from typing import Any
from xml.etree import ElementTree as ET

import pytest
from slixmpp import Presence

from bridge.core.config import ConfigError
from bridge.xmpp.config import XmppConfig
from bridge.xmpp.muc import MucTracker
from bridge.xmpp.muc_presence import Loss, MucKeeper, loss_of, ping_verdict, rejoin_delay

LISTENER = "bridge@matrix.example.org/pontis"
ROOM = "team@muc.example.org"
NS = 'xmlns="jabber:component:accept"'
MUC_USER = "http://jabber.org/protocol/muc#user"


class FakeContext:
    log = logging.getLogger("test")

    def __init__(self) -> None:
        self.tasks: list[str] = []

    def background(self, coro: Any, *, name: str) -> Any:
        coro.close()  # only what was started matters here
        self.tasks.append(name)
        return _DoneTask()


class _DoneTask:
    def add_done_callback(self, _: Any) -> None:
        pass


def presence(sender: str, kind: str = "unavailable", codes: tuple[str, ...] = (), extra: str = "",
             to: str = LISTENER) -> Presence:  # fmt: skip
    statuses = "".join(f'<status code="{c}"/>' for c in codes)
    attrs = f' type="{kind}"' if kind != "available" else ""
    xml = (f'<presence {NS} from="{sender}" to="{to}"{attrs}><x xmlns="{MUC_USER}">'
           f'<item role="none"/>{statuses}{extra}</x></presence>')  # fmt: skip
    return Presence(xml=ET.fromstring(xml))


@pytest.fixture
def keeper() -> tuple[MucKeeper, FakeContext, MucTracker]:
    ctx, mucs = FakeContext(), MucTracker()
    mucs.room(ROOM).nicks[LISTENER] = "Matrix bridge"

    async def join(_: str) -> None:
        return None

    return MucKeeper(ctx, None, mucs, LISTENER, join, 5), ctx, mucs  # type: ignore[arg-type]


def test_a_forged_kick_from_a_stranger_changes_nothing(keeper: Any) -> None:
    keeper_, ctx, mucs = keeper
    keeper_.on_presence(presence("mallory@evil.example/Matrix bridge", codes=("307", "110")))
    keeper_.on_presence(presence("mallory@evil.example", codes=("307", "110")))
    assert ctx.tasks == [] and mucs.room(ROOM).nicks[LISTENER] == "Matrix bridge"


def test_another_occupant_kicked_or_a_puppet_kicked_changes_nothing(keeper: Any) -> None:
    keeper_, ctx, mucs = keeper
    keeper_.on_presence(presence(f"{ROOM}/Xena", codes=("307",)))
    puppet = "alice\\3ahub.example@matrix.example.org/pontis"
    keeper_.on_presence(presence(f"{ROOM}/Matrix bridge", codes=("307", "110"), to=puppet))
    keeper_.on_presence(presence(f"{ROOM}/Matrix bridge", kind="available", codes=("110",)))
    assert ctx.tasks == [] and mucs.room(ROOM).nicks[LISTENER] == "Matrix bridge"


@pytest.mark.parametrize("code", ["307", "333", "332"])
def test_kick_or_server_trouble_starts_one_rejoin(keeper: Any, code: str) -> None:
    keeper_, ctx, mucs = keeper
    keeper_.on_presence(presence(f"{ROOM}/Matrix bridge", codes=(code, "110")))
    assert ctx.tasks == [f"rejoin {ROOM}"]
    assert LISTENER not in mucs.room(ROOM).nicks
    assert keeper_.rejoining(ROOM)
    keeper_.lost(ROOM, Loss("again", rejoin=True))  # a second loss in the same outage
    assert ctx.tasks == [f"rejoin {ROOM}"]


def test_ban_and_destroyed_room_notify_without_rejoining(keeper: Any) -> None:
    keeper_, ctx, mucs = keeper
    keeper_.on_presence(presence(f"{ROOM}/Matrix bridge", codes=("301", "110")))
    assert ctx.tasks == [f"notice {ROOM}"] and not keeper_.rejoining(ROOM)
    mucs.room(ROOM).nicks[LISTENER] = "Matrix bridge"
    keeper_.on_presence(
        presence(f"{ROOM}/Matrix bridge", extra="<destroy><reason>bye</reason></destroy>")
    )
    assert ctx.tasks == [f"notice {ROOM}", f"notice {ROOM}"] and not keeper_.rejoining(ROOM)


def test_status_code_decisions() -> None:
    assert loss_of("available", {"110"}, False) is None
    assert loss_of("unavailable", {"307", "110"}, False) == Loss("kicked by the room", True)
    assert loss_of("unavailable", {"333"}, False).rejoin  # type: ignore[union-attr]
    assert loss_of("unavailable", {"332"}, False).rejoin  # type: ignore[union-attr]
    assert loss_of("unavailable", set(), False).rejoin  # type: ignore[union-attr]
    assert not loss_of("unavailable", {"301", "307"}, False).rejoin  # type: ignore[union-attr]
    assert not loss_of("unavailable", {"307"}, True).rejoin  # type: ignore[union-attr]
    error = loss_of("error", set(), False, "not-acceptable")
    assert error is not None and error.rejoin and "not-acceptable" in error.reason


def test_self_ping_answers() -> None:
    assert ping_verdict(None) is True
    assert ping_verdict("service-unavailable") is True
    assert ping_verdict("feature-not-implemented") is True
    assert ping_verdict("not-acceptable") is False
    assert ping_verdict("timeout") is False
    assert ping_verdict("remote-server-not-found") is None


def test_backoff_doubles_from_two_seconds_up_to_five_minutes() -> None:
    assert [rejoin_delay(n) for n in range(9)] == [2, 4, 8, 16, 32, 64, 128, 256, 300]
    assert rejoin_delay(10_000) == 300 and rejoin_delay(-1) == 2


def _section(**extra: Any) -> dict[str, Any]:
    return {"component": {"jid": "m.example.org", "host": "127.0.0.1", "port": 5347, "secret": "s"},
            "rooms_domain": "", "upload_service": "", "muc_nick": "b", "history_on_join": 0,
            "max_file_mib": 1} | extra  # fmt: skip


def test_self_ping_interval_is_read_and_checked() -> None:
    assert XmppConfig.from_section(_section()).self_ping_minutes == 5
    assert XmppConfig.from_section(_section(self_ping_minutes=0)).self_ping_minutes == 0
    for bad in (-1, "soon", float("nan")):
        with pytest.raises(ConfigError, match=r"connectors\.xmpp\.self_ping_minutes"):
            XmppConfig.from_section(_section(self_ping_minutes=bad))
