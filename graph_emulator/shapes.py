"""Records rendered as Graph JSON, property for property as Graph v1.0 returns them.

Property sets follow the OpenAPI description (``microsoft.graph.chatMessage`` etc.); values
follow what Graph actually sends (nulls rather than missing keys, ``@odata.type`` on derived
types so the SDK's discriminators pick the right class).
"""

from __future__ import annotations

import base64
from typing import Any

from .odata import iso, odata_key
from .state import Channel, Chat, EmulatorState, Message, Reaction, Subscription, Team, User

# Graph's "since forever" for visibleHistoryStartDateTime.
BEGINNING_OF_TIME = "0001-01-01T00:00:00Z"


def user_json(user: User) -> dict[str, Any]:
    """The default ``$select`` set of /users/{id}."""
    return {
        "businessPhones": [],
        "displayName": user.display_name,
        "givenName": user.given_name,
        "jobTitle": user.job_title,
        "mail": user.mail,
        "mobilePhone": None,
        "officeLocation": None,
        "preferredLanguage": None,
        "surname": user.surname,
        "userPrincipalName": user.user_principal_name,
        "id": user.id,
    }


def user_identity(state: EmulatorState, user_id: str, *, with_name: bool = True) -> dict[str, Any]:
    """``identitySet`` with a ``teamworkUserIdentity`` in ``user`` (Graph's shape for senders)."""
    user = state.users.get(user_id)
    return {
        "application": None,
        "device": None,
        "user": {
            "@odata.type": "#microsoft.graph.teamworkUserIdentity",
            "id": user_id,
            "displayName": user.display_name if (user and with_name) else None,
            "userIdentityType": "aadUser",
            "tenantId": user.tenant_id if user else None,
        },
    }


def chat_json(
    chat: Chat, viewer_id: str | None, web_origin: str = "https://teams.microsoft.com"
) -> dict[str, Any]:
    data: dict[str, Any] = {
        "id": chat.id,
        "topic": chat.topic,
        "createdDateTime": iso(chat.created),
        "lastUpdatedDateTime": iso(chat.last_updated or chat.created),
        "chatType": chat.chat_type,
        "webUrl": f"{web_origin}/l/chat/{chat.id}/0?tenantId={chat.tenant_id}",
        "tenantId": chat.tenant_id,
        "onlineMeetingInfo": None,
        "viewpoint": None,
    }
    if viewer_id is not None:
        # Only delegated callers get a viewpoint: it is per user.
        data["viewpoint"] = {"isHidden": False, "lastMessageReadDateTime": iso(chat.created)}
    return data


def member_id(conversation_id: str, user_id: str) -> str:
    """Graph's membership ids are opaque base64 strings naming conversation and user."""
    raw = f"1#{user_id}#{conversation_id}".encode()
    return base64.b64encode(raw).decode()


def member_json(
    state: EmulatorState, conversation_id: str, user_id: str, roles: list[str]
) -> dict[str, Any]:
    user = state.users.get(user_id)
    return {
        "@odata.type": "#microsoft.graph.aadUserConversationMember",
        "id": member_id(conversation_id, user_id),
        "roles": roles,
        "displayName": user.display_name if user else None,
        "visibleHistoryStartDateTime": BEGINNING_OF_TIME,
        "userId": user_id,
        "email": user.mail if user else None,
        "tenantId": user.tenant_id if user else None,
    }


def reaction_json(state: EmulatorState, reaction: Reaction) -> dict[str, Any]:
    return {
        "reactionType": reaction.reaction_type,
        "createdDateTime": iso(reaction.created),
        "user": user_identity(state, reaction.user_id, with_name=False),
    }


def message_json(state: EmulatorState, message: Message) -> dict[str, Any]:
    conversation = message.conversation
    is_channel = isinstance(conversation, Channel)
    deleted = message.deleted is not None
    return {
        "id": message.id,
        "replyToId": message.reply_to_id,
        "etag": str(int(message.last_modified.timestamp() * 1000)),
        "messageType": message.message_type,
        "createdDateTime": iso(message.created),
        "lastModifiedDateTime": iso(message.last_modified),
        "lastEditedDateTime": iso(message.last_edited),
        "deletedDateTime": iso(message.deleted),
        "subject": message.subject,
        "summary": None,
        "chatId": None if is_channel else conversation.id,
        "importance": message.importance,
        "locale": "en-us",
        "webUrl": _message_web_url(message) if is_channel else None,
        "channelIdentity": (
            {"teamId": conversation.team_id, "channelId": conversation.id}
            if isinstance(conversation, Channel)
            else None
        ),
        "policyViolation": None,
        "eventDetail": message.event_detail,
        "from": user_identity(state, message.sender_id) if message.sender_id else None,
        "body": {
            "contentType": message.content_type,
            "content": "" if deleted else message.content,
        },
        "attachments": [] if deleted else list(message.attachments),
        "mentions": [] if deleted else list(message.mentions),
        "reactions": [reaction_json(state, r) for r in message.reactions],
        "messageHistory": list(message.history),
    }


def _message_web_url(message: Message) -> str:
    conversation = message.conversation
    assert isinstance(conversation, Channel)
    parent = message.reply_to_id or message.id
    return (
        f"https://teams.microsoft.com/l/message/{conversation.id}/{message.id}"
        f"?groupId={conversation.team_id}&tenantId={conversation.tenant_id}"
        f"&createdTime={message.id}&parentMessageId={parent}"
    )


def message_resource(message: Message) -> str:
    """The ``resource`` path Graph puts in change notifications for this message."""
    conversation = message.conversation
    if isinstance(conversation, Channel):
        base = f"teams({odata_key(conversation.team_id)})/channels({odata_key(conversation.id)})"
        if message.reply_to_id:
            return f"{base}/messages({odata_key(message.reply_to_id)})/replies({odata_key(message.id)})"
        return f"{base}/messages({odata_key(message.id)})"
    return f"chats({odata_key(conversation.id)})/messages({odata_key(message.id)})"


def team_json(team: Team) -> dict[str, Any]:
    return {
        "id": team.id,
        "createdDateTime": iso(team.created),
        "displayName": team.display_name,
        "description": team.description,
        "internalId": f"19:{team.id.replace('-', '')}@thread.tacv2",
        "classification": None,
        "specialization": "none",
        "visibility": "private",
        "webUrl": f"https://teams.microsoft.com/l/team/{team.id}/conversations?groupId={team.id}&tenantId={team.tenant_id}",
        "isArchived": False,
        "tenantId": team.tenant_id,
        "isMembershipLimitedToOwners": False,
        "memberSettings": None,
        "guestSettings": None,
        "messagingSettings": None,
        "funSettings": None,
        "discoverySettings": None,
        "summary": None,
    }


def channel_json(channel: Channel) -> dict[str, Any]:
    return {
        "id": channel.id,
        "createdDateTime": iso(channel.created),
        "displayName": channel.display_name,
        "description": channel.description,
        "isFavoriteByDefault": None,
        "email": "",
        "tenantId": channel.tenant_id,
        "webUrl": f"https://teams.microsoft.com/l/channel/{channel.id}/{channel.display_name}?groupId={channel.team_id}&tenantId={channel.tenant_id}",
        "membershipType": channel.membership_type,
        "isArchived": False,
    }


def subscription_json(sub: Subscription) -> dict[str, Any]:
    return {
        "id": sub.id,
        "resource": sub.resource,
        "applicationId": sub.application_id,
        "changeType": ",".join(sorted(sub.change_types, key=_CHANGE_ORDER.index)),
        "clientState": sub.client_state,
        "notificationUrl": sub.notification_url,
        "notificationQueryOptions": None,
        "lifecycleNotificationUrl": sub.lifecycle_url,
        "expirationDateTime": iso(sub.expires),
        "creatorId": sub.creator_id,
        "includeResourceData": sub.include_resource_data,
        "latestSupportedTlsVersion": sub.latest_tls,
        "encryptionCertificate": None,
        "encryptionCertificateId": None,
        "notificationUrlAppId": None,
    }


_CHANGE_ORDER = ["created", "updated", "deleted"]
