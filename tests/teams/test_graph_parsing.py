"""The bridge's replacement for msgraph-sdk's ``Entity.get_field_deserializers`` parses Graph
objects exactly as the SDK's own method does, without its thousands of imports."""

from __future__ import annotations

import json

import pytest
from kiota_serialization_json.json_parse_node_factory import JsonParseNodeFactory
from kiota_serialization_json.json_serialization_writer_factory import (
    JsonSerializationWriterFactory,
)
from msgraph.generated.models.chat import Chat
from msgraph.generated.models.chat_message import ChatMessage
from msgraph.generated.models.entity import Entity

from bridge.teams.protocol.graph import SDK_ENTITY_FIELD_DESERIALIZERS, skip_entity_imports

MESSAGE = {
    "@odata.type": "#microsoft.graph.chatMessage",
    "id": "1700000000000",
    "replyToId": None,
    "etag": "1700000000000",
    "messageType": "message",
    "createdDateTime": "2026-11-25T10:00:00.123Z",
    "lastModifiedDateTime": "2026-11-25T10:00:00.123Z",
    "lastEditedDateTime": None,
    "deletedDateTime": None,
    "subject": None,
    "chatId": "19:abc@thread.v2",
    "importance": "normal",
    "locale": "en-us",
    "webUrl": None,
    "from": {
        "application": None,
        "device": None,
        "user": {
            "@odata.type": "#microsoft.graph.teamworkUserIdentity",
            "id": "8b081ef6-4792-4def-b2c9-c363a1bf41d5",
            "displayName": "Alex Wilber",
            "userIdentityType": "aadUser",
            "tenantId": "dcd219dd-bc68-4b9b-bf0b-4a33a796be35",
        },
    },
    "body": {"contentType": "html", "content": '<p>Hello <at id="0">Adele</at></p>'},
    "attachments": [],
    "mentions": [
        {
            "id": 0,
            "mentionText": "Adele",
            "mentioned": {"user": {"id": "aad-adele", "displayName": "Adele Vance"}},
        }
    ],
    "reactions": [
        {
            "reactionType": "like",
            "createdDateTime": "2026-11-25T10:01:00Z",
            "user": {"user": {"id": "aad-adele", "displayName": None}},
        }
    ],
    "futureProperty": {"kept": "in additional_data"},
}


def _parse(payload: dict[str, object], model: type) -> object:
    node = JsonParseNodeFactory().get_root_parse_node(
        "application/json", json.dumps(payload).encode()
    )
    return node.get_object_value(model)


def _json(parsed: object) -> object:
    """What the parsed model holds, written back as JSON (models hold their own store objects,
    so they never compare equal)."""
    writer = JsonSerializationWriterFactory().get_serialization_writer("application/json")
    writer.write_object_value(None, parsed)  # type: ignore[arg-type]
    return json.loads(writer.get_serialized_content())


def test_the_installed_sdk_gets_the_replacement() -> None:
    assert skip_entity_imports()
    assert Entity.get_field_deserializers is not SDK_ENTITY_FIELD_DESERIALIZERS


@pytest.mark.parametrize(
    ("payload", "model"),
    [
        (MESSAGE, ChatMessage),
        ({"id": "19:abc@thread.v2", "topic": "Budget", "chatType": "group"}, Chat),
    ],
)
def test_parsing_is_unchanged(
    monkeypatch: pytest.MonkeyPatch, payload: dict[str, object], model: type
) -> None:
    skip_entity_imports()
    ours = _parse(payload, model)
    monkeypatch.setattr(Entity, "get_field_deserializers", SDK_ENTITY_FIELD_DESERIALIZERS)
    sdks = _parse(payload, model)
    assert _json(ours) == _json(sdks)
    assert _json(ours) != {}
    assert getattr(ours, "id") == payload["id"]  # noqa: B009
    if model is ChatMessage:
        assert ours.odata_type == "#microsoft.graph.chatMessage"  # type: ignore[attr-defined]
        assert ours.from_.user.display_name == "Alex Wilber"  # type: ignore[attr-defined]
        assert ours.additional_data["futureProperty"] == {"kept": "in additional_data"}  # type: ignore[attr-defined]


def test_an_sdk_whose_entity_changed_keeps_its_own_method(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(Entity, "get_field_deserializers", SDK_ENTITY_FIELD_DESERIALIZERS)
    monkeypatch.setattr(
        "bridge.teams.protocol.graph.ENTITY_FIELDS", ("backing_store", "additional_data", "id")
    )
    assert not skip_entity_imports()
    assert Entity.get_field_deserializers is SDK_ENTITY_FIELD_DESERIALIZERS


def test_an_sdk_method_that_parses_more_keeps_its_own(monkeypatch: pytest.MonkeyPatch) -> None:
    def richer(self: Entity) -> dict[str, object]:
        return {
            "id": lambda n: setattr(self, "id", n.get_str_value()),
            "@odata.type": lambda n: setattr(self, "odata_type", n.get_str_value()),
            "@odata.etag": lambda n: setattr(self, "etag", n.get_str_value()),
        }

    monkeypatch.setattr(Entity, "get_field_deserializers", richer)
    assert not skip_entity_imports()
    assert Entity.get_field_deserializers is richer
