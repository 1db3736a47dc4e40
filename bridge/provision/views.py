"""How the provisioning API shows the bridge's rows: plain JSON objects, as the OpenAPI document
(``openapi.yaml``) describes them. No secrets: a login's metadata is never shown."""

from __future__ import annotations

import json
from typing import Any

from bridge.core.clients import LoadedClient
from bridge.core.connector import LoginFlow, NetworkConnector
from bridge.portal.dead_letters import Letter, hide_secrets
from bridge.portal.models import Login, Portal


def portal(p: Portal) -> dict[str, Any]:
    return {
        "network": p.network,
        "chat_id": p.remote_id,
        "receiver": p.receiver or None,
        "room_id": p.mxid,
        "name": p.name,
        "topic": p.topic,
        "is_direct": p.is_direct,
        "relay": p.relay_login is not None,
    }


def login(row: Login, loaded: LoadedClient | None) -> dict[str, Any]:
    return {
        "network": row.network,
        "login_id": row.login_id,
        "user_id": row.user_mxid,
        "remote_name": row.remote_name,
        "connected": bool(loaded and loaded.connected),
        "state": loaded.state_message if loaded is not None else "not loaded",
    }


def network(connector: NetworkConnector) -> dict[str, Any]:
    return {
        "id": connector.info.id,
        "display_name": connector.info.display_name,
        "login_flows": [login_flow(f) for f in connector.login_flows()],
    }


def login_flow(flow: LoginFlow) -> dict[str, Any]:
    return {"id": flow.id, "name": flow.name, "description": flow.description}


def letter(row: Letter, *, with_payload: bool = False) -> dict[str, Any]:
    shown: dict[str, Any] = {
        "id": row.id,
        "direction": "to_network" if row.to_network else "to_matrix",
        "network": row.network,
        "kind": row.kind,
        "event_id": row.event_id,
        "room_id": row.room_id,
        "chat_id": row.portal_id,
        "login_id": row.login_id,
        "error": row.error,
        "attempts": row.attempts,
        "parked_at": row.parked_at,
        "retryable": row.retryable,
    }
    if with_payload:
        try:
            shown["payload"] = hide_secrets(json.loads(row.payload or "null"))
        except (ValueError, RecursionError):
            shown["payload"] = row.payload
    return shown
