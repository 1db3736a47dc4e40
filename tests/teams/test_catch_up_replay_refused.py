"""Hostile: Graph refuses the list of changed messages during a catch-up. The messages written
meanwhile still arrive, and the changes are replayed by the next catch-up, because the chat's
record did not move past them (bridge.teams.chat_catch_up)."""

from __future__ import annotations

from typing import Any

import aiohttp
import pytest

from bridge.core import PermanentError
from bridge.portal.store import Store
from bridge.teams import replay
from tests.e2e.graph import GraphEmulator
from tests.teams.test_catch_up import graph  # noqa: F401 (fixture)
from tests.teams.test_catch_up_changes import _bridged_chat, _run


async def test_a_refused_replay_keeps_the_new_messages_and_is_tried_again(
    store: Store,
    graph: GraphEmulator,  # noqa: F811
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    chat = await _bridged_chat(store, graph)
    old = await graph.post_as("Alex", chat, "one")
    async with aiohttp.ClientSession() as http:
        assert await _run(store, graph, http) == ["one"]
        # Down: an edit, and a new message.
        await graph.edit_as("Alex", chat, old, "one, edited")
        await graph.post_as("Alex", chat, "written while down")

        async def refused(*args: Any, **kwargs: Any) -> Any:
            raise PermanentError("list the changed messages: Graph answered 400")

        monkeypatch.setattr(replay, "changed_since", refused)
        assert await _run(store, graph, http) == ["written while down"]
        monkeypatch.undo()
        assert await _run(store, graph, http) == ["edit: one, edited"]
        assert await _run(store, graph, http) == []
