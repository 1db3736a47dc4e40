"""Review of Teams membership following Matrix (064f518), against the Graph emulator as in
tests/teams/test_matrix_members.py. Anna's Teams login is Adele's account, Bert's is Alex's."""

from __future__ import annotations

from unittest.mock import AsyncMock

import pytest

from bridge.core import NotSupported
from bridge.teams.matrix_members import membership_changed
from tests.teams.test_matrix_members import BERT, _change, _logged_in, _members
from tests.teams.test_members import _group
from tests.teams_emulator.conftest import Emulator, emulator  # noqa: F401 (fixture)


async def test_a_leaver_whose_clients_have_no_keys_is_told_they_are_still_in_teams(
    emulator: Emulator,  # noqa: F811
) -> None:
    """Bert uses a client without encryption (no device with keys, like a deactivated
    account). He leaves the room; Alex (his Teams account) stays in the Teams chat and keeps
    reading it there. That may be right for a deactivation, but Bert must be told, or he
    believes he left."""
    net = _logged_in(emulator)
    net.ctx.matrix_has_devices = AsyncMock(return_value=False)
    chat = await _group(emulator, "adele", "alex", "megan")
    with pytest.raises(NotSupported) as kept:
        await membership_changed(net, _change(chat, BERT, "leave"))
    assert "still a member there" in kept.value.user_message
    assert emulator.user("alex")["id"] in _members(emulator, chat)
