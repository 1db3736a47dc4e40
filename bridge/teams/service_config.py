"""``connectors.teams.service_chat``: whether Teams users may reach Matrix users from Teams
alone (:mod:`bridge.teams.service_chat`), how often, and whom they are told to ask.

Kept apart from :mod:`bridge.teams.config` so the feature's keys, defaults and checks live
in one place; ``TeamsConfig.problems`` adds :func:`problems`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

DEFAULT_CONTACT = "the administrators of this Matrix hub"
MAX_CONTACT = 200


@dataclass(frozen=True, slots=True)
class ServiceChatConfig:
    enabled: bool = False
    requests_per_hour: int = 10
    """Requests one Teams user may make in any hour; beyond it they get one refusal, then
    silence (each answer is a Graph call and a message in their Teams)."""
    contact: str = DEFAULT_CONTACT
    """Whom a refused Teams user should ask: a service desk, a mail address."""

    @classmethod
    def from_section(cls, section: dict[str, Any]) -> ServiceChatConfig:
        raw = section.get("service_chat")
        raw = raw if isinstance(raw, dict) else {}
        try:
            per_hour = int(raw.get("requests_per_hour", 10))
        except (TypeError, ValueError):
            per_hour = 0  # reported by problems()
        contact = " ".join(str(raw.get("contact") or "").split())[:MAX_CONTACT]
        return cls(
            enabled=raw.get("enabled") is True,
            requests_per_hour=per_hour,
            contact=contact or DEFAULT_CONTACT,
        )


def problems(section: dict[str, Any]) -> list[str]:
    """What is wrong in ``connectors.teams.service_chat``, one line per key."""
    where = "connectors.teams.service_chat"
    raw = section.get("service_chat")
    if raw is None:
        return []
    if not isinstance(raw, dict):
        return [f"{where}: expected a mapping with enabled, requests_per_hour, contact"]
    found = []
    if "enabled" in raw and not isinstance(raw["enabled"], bool):
        found.append(f"{where}.enabled: true or false")
    per_hour = raw.get("requests_per_hour", 10)
    if isinstance(per_hour, bool) or not isinstance(per_hour, int) or not 1 <= per_hour <= 1000:
        found.append(f"{where}.requests_per_hour: a whole number between 1 and 1000")
    contact = raw.get("contact")
    if contact is not None and (
        not isinstance(contact, str) or len(contact) > MAX_CONTACT or not contact.isprintable()
    ):
        found.append(f"{where}.contact: one line of at most {MAX_CONTACT} characters")
    tenants = section.get("tenants") or []
    if raw.get("enabled") is True and not any(
        isinstance(t, dict) and t.get("relay_username") for t in tenants
    ):
        found.append(
            f"{where}.enabled: needs a tenant with a relay account (relay_username): Teams"
            " users write to that account"
        )
    return found
