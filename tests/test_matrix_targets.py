"""An edit, reaction, reply or redaction acts only on a message of its own room, and an edit
or redaction only on its sender's own message (or, redacting, a moderator's choice).

Event ids are global: before, a Matrix user in one bridged room could name an event of
another room and the bridge edited or deleted that other chat's remote message, and any relay
user could edit another's relayed message (stored as the bot's). Real store, router and
Matrix event handler; the homeserver and the network record what they were asked."""

from __future__ import annotations

from typing import Any

from bridge.core.events import MatrixEdit, MatrixReaction, MatrixReactionRemove, MatrixRedaction
from bridge.core.ids import PortalKey, RemoteChatID, RemoteMessageID
from bridge.portal.models import Message, Portal
from bridge.portal.store import Store
from tests.test_permissions import ALICE, BOT, NET, OUTSIDER, Hub, MailClient

BOB = "@bob:hub.test"
OTHER_ROOM = "!other:hub.test"
OTHER_KEY = PortalKey(NET, RemoteChatID("other@bridge.test"))


class EditingClient(MailClient):
    def __init__(self) -> None:
        super().__init__()
        self.acted: list[tuple[str, str, str]] = []  # (what, sender, target remote id)

    async def handle_matrix_edit(self, edit: MatrixEdit) -> None:
        self.acted.append(("edit", edit.sender, edit.target.remote_id))

    async def handle_matrix_redaction(self, redaction: MatrixRedaction) -> None:
        self.acted.append(("redact", redaction.sender, redaction.target.remote_id))

    async def handle_matrix_reaction(self, reaction: MatrixReaction) -> None:
        self.acted.append(("react", reaction.sender, reaction.target.remote_id))

    async def handle_matrix_reaction_remove(self, removal: MatrixReactionRemove) -> None:
        self.acted.append(("unreact", removal.sender, removal.target.mxid))


async def _hub(store: Store) -> tuple[Hub, EditingClient]:
    hub = Hub(store, relay_enabled=True)
    client = EditingClient()
    hub.router.add_client(NET, client)  # type: ignore[arg-type]  # replaces the mail client
    await hub.portal(relay=True)
    senders: dict[str, str] = {}
    hub.matrix.levels = {"users": {ALICE: 100}, "redact": 50}
    real_send = hub.event

    async def event(sender: str, event_type: str, content: dict[str, Any], **extra: Any) -> str:
        await real_send(sender, event_type, content, **extra)
        event_id = f"$e{hub._ids}"
        senders[event_id] = sender
        return event_id

    async def event_sender(room_id: str, event_id: str) -> str | None:
        return senders.get(event_id)

    hub.event = event  # type: ignore[method-assign]
    hub.matrix.event_sender = event_sender  # type: ignore[attr-defined]
    return hub, client


def _text(body: str) -> dict[str, Any]:
    return {"msgtype": "m.text", "body": body}


def _edit(target: str) -> dict[str, Any]:
    return {**_text("* new"), "m.new_content": _text("new"),
            "m.relates_to": {"rel_type": "m.replace", "event_id": target}}  # fmt: skip


async def test_an_event_of_another_room_is_never_the_target(store: Store) -> None:
    hub, client = await _hub(store)
    await hub.portals.save_portal(Portal(NET, OTHER_KEY.remote_id, mxid=OTHER_ROOM))
    elsewhere = "$private"  # Alice's message in the other room, bridged to the other chat
    await store.add_message(Message(network=NET, portal_id=OTHER_KEY.remote_id, mxid=elsewhere,
                                    remote_id=RemoteMessageID("<private@bridge.test>"),
                                    room_id=OTHER_ROOM, sender_id=ALICE))  # fmt: skip

    # Alice herself, from the first room, naming her own event of the other room.
    await hub.event(ALICE, "m.room.message", _edit(elsewhere))
    await hub.event(ALICE, "m.reaction", {"m.relates_to": {
        "rel_type": "m.annotation", "event_id": elsewhere, "key": "👍"}})  # fmt: skip
    await hub.event(ALICE, "m.room.redaction", {}, redacts=elsewhere)
    reply = {**_text("re"), "m.relates_to": {"m.in_reply_to": {"event_id": elsewhere}}}
    await hub.event(ALICE, "m.room.message", reply)
    assert client.acted == []
    assert client.messages[-1].reply_to is None  # the reply names nothing of the other chat
    assert await store.get_message_by_mxid(elsewhere) is not None  # not deleted either


async def test_only_the_author_edits_and_only_author_or_moderator_redacts(store: Store) -> None:
    hub, client = await _hub(store)
    bobs = await hub.event(BOB, "m.room.message", _text("mine"))
    await hub.event(ALICE, "m.room.message", _edit(bobs))  # Alice is a moderator: still no edit
    await hub.event(BOB, "m.room.message", _edit(bobs))
    assert [(what, who) for what, who, _ in client.acted] == [("edit", BOB)]

    alices = await hub.event(ALICE, "m.room.message", _text("hers"))
    await hub.event(BOB, "m.room.redaction", {}, redacts=alices)  # not his, no power
    assert len(client.acted) == 1
    await hub.event(ALICE, "m.room.redaction", {}, redacts=bobs)  # a moderator may
    assert [(what, who) for what, who, _ in client.acted][-1] == ("redact", ALICE)


async def test_a_relay_user_cannot_edit_or_delete_another_relayed_message(store: Store) -> None:
    """Relayed messages are the bot's on the network; their author is read from the room."""
    hub, client = await _hub(store)
    stranger = "@mallory:elsewhere.test"
    theirs = await hub.event(OUTSIDER, "m.room.message", _text("relayed"))
    stored = await store.get_message_by_mxid(theirs)
    assert stored is not None and stored.sender_id == BOT
    await hub.event(stranger, "m.room.message", _edit(theirs))
    await hub.event(stranger, "m.room.redaction", {}, redacts=theirs)
    assert client.acted == []
    await hub.event(OUTSIDER, "m.room.message", _edit(theirs))
    await hub.event(OUTSIDER, "m.room.redaction", {}, redacts=theirs)
    assert [what for what, _, _ in client.acted] == ["edit", "redact"]


async def test_a_reaction_is_taken_back_only_by_its_sender_or_a_moderator(store: Store) -> None:
    hub, client = await _hub(store)
    message = await hub.event(ALICE, "m.room.message", _text("hi"))
    reaction = await hub.event(BOB, "m.reaction", {"m.relates_to": {
        "rel_type": "m.annotation", "event_id": message, "key": "👍"}})  # fmt: skip
    await hub.event("@carol:hub.test", "m.room.redaction", {}, redacts=reaction)
    assert [what for what, _, _ in client.acted] == ["react"]
    await hub.event(BOB, "m.room.redaction", {}, redacts=reaction)
    assert [what for what, _, _ in client.acted] == ["react", "unreact"]
