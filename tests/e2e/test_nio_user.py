"""The encrypted test client itself: two nio users talk end-to-end encrypted on a real Synapse."""

from __future__ import annotations

from collections.abc import AsyncIterator

import nio
import pytest
import pytest_asyncio

from tests.e2e.nio_user import EncryptedUser
from tests.e2e.synapse import SynapseServer

pytestmark = pytest.mark.e2e


@pytest_asyncio.fixture(scope="module")
async def nio_users(
    tmp_path_factory: pytest.TempPathFactory,
) -> AsyncIterator[tuple[EncryptedUser, EncryptedUser]]:
    server = SynapseServer(
        "nio.test",
        tmp_path_factory.mktemp("nio-synapse"),
        [],
        extra_config={"encryption_enabled_by_default_for_room_type": "all"},
    )
    await server.start()
    users: list[EncryptedUser] = []
    try:
        for name in ("alice", "bob"):
            users.append(await EncryptedUser.register(server, name, displayname=name.title()))
        yield users[0], users[1]
    finally:
        for user in users:
            await user.close()
        await server.stop()


async def test_encrypted_dm_text_and_file(nio_users: tuple[EncryptedUser, EncryptedUser]) -> None:
    alice, bob = nio_users
    room_id = await alice.create_dm(bob.mxid)
    assert await alice.room_is_encrypted(room_id)
    assert await bob.wait_for_invite(inviter=alice.mxid) == room_id
    await bob.join(room_id)
    await alice.wait_for_member(room_id, bob.mxid)

    text_id = await alice.send_text(room_id, "secret hello")
    data = bytes(range(256)) * 40
    file_id = await alice.send_file(room_id, data, "report.bin", "application/octet-stream")

    text = await bob.wait_for_message(room_id, "secret hello")
    assert isinstance(text, nio.RoomMessageText)
    assert text.event_id == text_id and text.sender == alice.mxid
    assert bob.was_encrypted(text)
    file = await bob.wait_for_message(room_id, lambda e: e.event_id == file_id)
    assert isinstance(file, nio.RoomEncryptedFile) and bob.was_encrypted(file)
    assert file.body == "report.bin"
    assert await bob.download_decrypted(file) == data

    await bob.send_text(room_id, "secret reply", reply_to=text_id)
    reply = await alice.wait_for_message(room_id, "secret reply")
    assert alice.was_encrypted(reply) and reply.sender == bob.mxid
    assert not alice.undecryptable(room_id) and not bob.undecryptable(room_id)

    with pytest.raises(AssertionError, match="secret reply"):
        await alice.wait_for_message(room_id, "never sent", timeout=0.3)
