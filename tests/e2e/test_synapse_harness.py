"""The test harness itself: a real Synapse (no appservice) and two syncing test clients."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
import pytest_asyncio

from tests.e2e.matrix_client import MatrixUser
from tests.e2e.synapse import SynapseServer

pytestmark = pytest.mark.e2e


@pytest_asyncio.fixture(scope="module")
async def harness_synapse(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[SynapseServer]:
    server = SynapseServer("harness.test", tmp_path_factory.mktemp("harness-synapse"), [])
    await server.start()
    try:
        yield server
    finally:
        await server.stop()


async def test_two_users_talk(harness_synapse: SynapseServer) -> None:
    alice_id, alice_token = await harness_synapse.register_user("alice", displayname="Alice")
    bob_id, bob_token = await harness_synapse.register_user("bob", admin=True)
    assert alice_id == "@alice:harness.test"
    alice = MatrixUser(alice_id, alice_token, harness_synapse.base_url)
    bob = MatrixUser(bob_id, bob_token, harness_synapse.base_url)
    try:
        await alice.start_sync()
        await bob.start_sync()
        assert (await alice.get_profile(alice_id))["displayname"] == "Alice"

        room_id = await alice.create_room(invite=[bob_id], name="Harness")
        assert await bob.wait_for_invite(inviter=alice_id) == room_id
        assert await bob.join(room_id) == room_id
        assert set(await alice.joined_members(room_id)) == {alice_id, bob_id}
        assert (await bob.get_state(room_id, "m.room.name"))["name"] == "Harness"

        event_id = await bob.send_text(room_id, "hello alice", html="<b>hello</b> alice")
        event = await alice.wait_for(
            lambda e: e["type"] == "m.room.message" and e["content"].get("body") == "hello alice",
            room_id=room_id,
        )
        assert event["event_id"] == event_id
        assert event["sender"] == bob_id
        assert event["content"]["formatted_body"] == "<b>hello</b> alice"

        reply_id = await alice.send_text(room_id, "hi bob", reply_to=event_id)
        await alice.react(room_id, event_id, "👍")
        await alice.edit(room_id, reply_id, "hi bob!")
        reply = await bob.wait_for(lambda e: e.get("event_id") == reply_id)
        assert reply["content"]["m.relates_to"]["m.in_reply_to"]["event_id"] == event_id
        await bob.wait_for(
            lambda e: e["content"].get("m.relates_to", {}).get("rel_type") == "m.replace"
        )
        await bob.wait_for(lambda e: e["type"] == "m.reaction")

        await bob.typing(room_id, True)
        await alice.wait_for_ephemeral(
            lambda e: e["type"] == "m.typing" and bob_id in e["content"]["user_ids"],
            room_id=room_id,
        )
        await bob.read_receipt(room_id, reply_id)
        await alice.wait_for_ephemeral(
            lambda e: e["type"] == "m.receipt" and reply_id in e["content"], room_id=room_id
        )

        mxc = await bob.upload(b"\x89PNG fake", "image/png", "x.png")
        assert await alice.download(mxc) == b"\x89PNG fake"

        redaction_id = await bob.redact(room_id, event_id, reason="oops")
        await alice.wait_for(lambda e: e.get("event_id") == redaction_id)
        assert (await alice.get_event(room_id, event_id))["content"] == {}

        assert not alice.seen(lambda e: e["content"].get("body") == "never sent")
        with pytest.raises(AssertionError, match="hello alice"):
            await alice.wait_for(lambda e: False, timeout=0.5, room_id=room_id)
    finally:
        await alice.close()
        await bob.close()
